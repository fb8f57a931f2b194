//! The in-process API as the scenario runner uses it: a fleet sharing one
//! runtime, aging and flapping in real time (observed through the
//! database's commit stream, as a manager's monitor sees them), and a
//! shutdown that closes every session.

mod switch_common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use ovsdb::Datum;
use switch_common::{ptcp0, wait_for};
use testbed::switch::{FlapSpec, Mac, SimSwitch, SwitchError, SwitchFleet, SwitchSpec};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_learns_distinct_macs_per_switch() {
    let (n, m) = (40u32, 25u32);
    let fleet =
        SwitchFleet::start((0..n).map(|i| SwitchSpec::numbered("leaf", i).listen(ptcp0()).macs(m)))
            .await
            .unwrap();
    assert_eq!(fleet.len(), n as usize);
    assert!(fleet.get("leaf7").is_some());
    for sw in fleet.iter() {
        sw.bind_for_test("p0", 10, "blue", 5001).await.unwrap();
    }
    let stats = fleet.stats().await.unwrap();
    assert_eq!(stats.local_rows, (n * m) as usize);
    assert_eq!(stats.bound_logical_switches, n as usize);
    let mut all = HashSet::new();
    let mut tunnel_ips = HashSet::new();
    for sw in fleet.iter() {
        let macs = sw.macs().await.unwrap();
        assert_eq!(macs.len(), m as usize);
        for v in &macs {
            assert!(v.row.is_some());
            assert!(all.insert(v.mac), "{} learnt twice in the fleet", v.mac);
        }
        assert!(tunnel_ips.insert(sw.spec().tunnel_ip));
        sw.db().read(|d| d.check_integrity()).unwrap();
    }
    fleet.shutdown().await;
}

/// The `Ucast_Macs_Local` logical switch of `mac` after each commit that touched it.
async fn history(
    sub: &mut ovsdb::server::Subscription,
    mac: Mac,
    until: impl Fn(&[Option<ovsdb::Uuid>]) -> bool,
) -> Vec<Option<ovsdb::Uuid>> {
    let mut rows: BTreeMap<ovsdb::Uuid, ovsdb::Uuid> = BTreeMap::new();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + switch_common::DEADLINE;
    while !until(&seen) {
        let c = tokio::time::timeout_at(deadline, sub.recv())
            .await
            .expect("commits")
            .expect("database");
        let Some(t) = c.table("Ucast_Macs_Local") else {
            continue;
        };
        let mc = t.schema.column_index("MAC").unwrap();
        let lc = t.schema.column_index("logical_switch").unwrap();
        let mut touched = false;
        for r in &t.rows {
            let row = r.new.as_ref().or(r.old.as_ref()).unwrap();
            if row.get(mc).and_then(Datum::as_str) != Some(&mac.to_string()) {
                continue;
            }
            touched = true;
            match &r.new {
                Some(new) => {
                    rows.insert(r.uuid, new.get(lc).and_then(Datum::as_uuid).unwrap());
                }
                None => {
                    rows.remove(&r.uuid);
                }
            }
        }
        if touched {
            assert!(rows.len() <= 1, "two local rows for {mac} at once");
            seen.push(rows.values().next().copied());
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_and_aging_in_real_time() {
    let sw = SimSwitch::start(SwitchSpec::new("flappy")).await.unwrap();
    let blue = sw.bind_for_test("p0", 10, "blue", 1).await.unwrap();
    let red = sw.bind_for_test("p1", 20, "red", 2).await.unwrap();
    let mac: Mac = "02:f1:00:00:00:01".parse().unwrap();
    let mut sub = sw.db().subscribe();
    sw.flap(FlapSpec {
        mac,
        port: "p0".into(),
        vlan: 10,
        to: Some(("p1".into(), 20)),
        moves: 4,
        interval: Duration::from_millis(50),
    })
    .await
    .unwrap();
    let seen = history(&mut sub, mac, |s| s.len() >= 5).await;
    assert_eq!(
        seen,
        vec![Some(blue), Some(red), Some(blue), Some(red), Some(blue)]
    );

    // Aging: a learnt host goes by itself; one that keeps talking stays.
    let quiet: Mac = "02:f1:00:00:00:02".parse().unwrap();
    sw.learn(quiet, "p0", 10).await.unwrap();
    sw.set_aging(Some(Duration::from_millis(300)))
        .await
        .unwrap();
    let talker: Mac = "02:f1:00:00:00:03".parse().unwrap();
    let mut kept_alive = 0;
    wait_for("the quiet hosts to age out", || {
        let sw = sw.clone();
        kept_alive += 1;
        async move {
            sw.learn(talker, "p1", 20).await.unwrap();
            let macs = sw.macs().await.unwrap();
            (!macs.iter().any(|v| v.mac == quiet || v.mac == mac)).then_some(())
        }
    })
    .await;
    assert!(kept_alive > 1);
    let macs = sw.macs().await.unwrap();
    assert_eq!(macs.len(), 1);
    assert_eq!(macs[0].mac, talker);
    assert_eq!(macs[0].logical_switch, Some(red));
    sw.db().read(|d| d.check_integrity()).unwrap();
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_and_refuses_commands() {
    let sw = SimSwitch::start(SwitchSpec::new("short-lived").listen(ptcp0()))
        .await
        .unwrap();
    let addr = match sw.listen_targets().first() {
        Some(ovsdb::transport::Target::PTcp(a)) => *a,
        other => panic!("unexpected {other:?}"),
    };
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let other = sw.clone();
    sw.shutdown().await;
    // The accepted session is closed: the peer reads end-of-stream.
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(switch_common::DEADLINE, conn.read(&mut buf))
        .await
        .expect("session closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // Nobody listens any more.
    wait_for("the listener to close", || async move {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(matches!(
        other
            .learn("02:00:00:00:00:01".parse().unwrap(), "p0", 1)
            .await,
        Err(SwitchError::Stopped(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_sessions_probe_at_the_configured_interval() {
    let sw = SimSwitch::start(
        SwitchSpec::new("prober")
            .listen(ptcp0())
            .listen_probe(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let addr = match sw.listen_targets().first() {
        Some(ovsdb::transport::Target::PTcp(a)) => *a,
        other => panic!("unexpected {other:?}"),
    };
    // A peer that never answers: probed, then dropped.
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(switch_common::DEADLINE, conn.read_to_end(&mut got))
        .await
        .expect("the switch closes a silent session")
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains(r#""method":"echo""#), "{text}");
    sw.shutdown().await;
}
