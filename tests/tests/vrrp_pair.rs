//! The VRRP pair proof (issue 6): two `tor-proxy` nodes, each with real
//! keepalived running the shipped sample configuration, doing VRRP over
//! veths in network namespaces, in front of two `tor-agent` processes and
//! the control node. Four simulated switches and one real `ovsdb-server`
//! switch dial the VIP over TLS, passed through to the agents (topology:
//! `e2e::netns::pair`).
//!
//! The master proxy is SIGKILLed (its keepalived lives on). Proven:
//! - keepalived's track script (`tor-proxy check`) fails, the master gives
//!   up the VIP and the backup takes it: the VIP ends on the second node's
//!   `eth0` alone, while the first node's keepalived still runs;
//! - every switch comes back through the second proxy (its agent sees the
//!   session arrive from that proxy's address) to the agent that held it
//!   before, and that agent's takeover converges (`unknown-dst` to its
//!   service node, MACs exported at live preference);
//! - that is the synced affinity at work, not luck: the placement is
//!   lopsided on purpose (four switches on agent-1, one on agent-2, made
//!   with `drain` on the first proxy only), which least-connections on the
//!   second proxy would never reproduce (it would split them 3/2);
//! - no churn: the other agent never completed a takeover of any of them,
//!   the second proxy accepted exactly one connection per switch and none
//!   of them ended;
//! - the control node never lost a MAC route during the failover.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::init_logs;
use e2e::netns::pair::{Deadline, PairLab, PairOptions, AGENTS, PROXIES, PROXY_IPS, TSN};
use e2e::netns::{comm, list_namespaces};
use tokio::time::Instant;

/// One lab at a time: both tests time VRRP and health checks on a small
/// machine, and their namespaces would share nothing but the CPU.
static ONE_LAB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_master_proxy_moves_the_vip_and_switches_return_to_their_agents() {
    let _one = ONE_LAB.lock().await;
    init_logs();
    let mut lab = PairLab::start(PairOptions {
        sim_switches: 4,
        real_switch: true,
        macs: 3,
        max_backoff: None,
    })
    .await;
    assert_eq!(lab.vip_holders(), [0], "the first node is master");

    // agent-1: sw1, sw2, sw3 and the real switch; agent-2: sw4.
    let expected: BTreeMap<String, usize> = lab
        .switches
        .iter()
        .map(|s| (s.name.clone(), usize::from(s.name == "sw4")))
        .collect();
    for agent in [0, 1] {
        let other = 1 - agent;
        lab.proxy_admin(0, "drain", AGENTS[other]).await;
        let group: BTreeMap<String, usize> = expected
            .iter()
            .filter(|(_, &a)| a == agent)
            .map(|(n, &a)| (n.clone(), a))
            .collect();
        for k in 0..lab.switches.len() {
            if group.contains_key(&lab.switches[k].name) {
                lab.start_switch(k).await;
            }
        }
        lab.wait_settled(
            &format!("{group:?} settled through {}", PROXIES[0]),
            &group,
            0,
        )
        .await;
        lab.proxy_admin(0, "enable", AGENTS[other]).await;
    }
    lab.learn_real_macs().await;
    let d = Deadline::new("switches programmed and every MAC route live at the control node");
    while !(lab.unknown_dst_on(&expected) && lab.routes_on(&expected)) {
        d.tick(Duration::from_millis(100), || {
            let dst: Vec<_> = lab
                .switches
                .iter()
                .map(|s| (s.name.clone(), s.unknown_dst()))
                .collect();
            format!("unknown-dst: {dst:?}\n{}", lab.logs())
        })
        .await;
    }
    let before = lab
        .wait_settled("every switch settled through the first proxy", &expected, 0)
        .await;

    // The backup learnt every placement from the master, and serves nothing yet.
    let backup = lab
        .wait_proxy("every placement synced from the master", 1, |s| {
            s.affinity_entries == expected.len()
        })
        .await;
    assert!(backup.sessions.is_empty(), "{:?}", backup.sessions);
    assert_eq!(backup.listeners[0].accepted, 0);

    let t0 = Instant::now();
    lab.kill_proxy(0);

    let mut vip_moved = None;
    let mut back: BTreeMap<String, Duration> = BTreeMap::new();
    let mut lost: Vec<(Duration, Vec<String>)> = Vec::new();
    let mut last_snapshot = None;
    let d = Deadline::new(format!(
        "the VIP on {} and every switch back on its agent",
        PROXIES[1]
    ));
    loop {
        let missing = lab.missing_routes();
        if !missing.is_empty() {
            lost.push((t0.elapsed(), missing));
        }
        let vip = lab.vip_holders();
        if vip == [1] && vip_moved.is_none() {
            vip_moved = Some(t0.elapsed());
        }
        if let Ok(s) = lab.snapshot().await {
            for (n, &a) in &expected {
                // Fail at once on churn rather than at the deadline.
                assert_eq!(
                    s.takeovers(1 - a, n),
                    before.takeovers(1 - a, n),
                    "{n} was taken over by {}, not its previous agent {}:\n{}",
                    AGENTS[1 - a],
                    AGENTS[a],
                    s.summary(expected.keys())
                );
                if s.settled_on(n, a, 1) {
                    back.entry(n.clone()).or_insert_with(|| t0.elapsed());
                }
            }
            last_snapshot = Some(s);
        }
        let all_back = last_snapshot
            .as_ref()
            .is_some_and(|s| expected.iter().all(|(n, &a)| s.settled_on(n, a, 1)));
        if vip == [1] && all_back && lab.unknown_dst_on(&expected) && lab.routes_on(&expected) {
            break;
        }
        d.tick(Duration::from_millis(50), || {
            format!(
                "VIP on {vip:?}\n{}\n{}",
                last_snapshot
                    .as_ref()
                    .map(|s| s.summary(expected.keys()))
                    .unwrap_or_default(),
                lab.logs()
            )
        })
        .await;
    }
    let converged = t0.elapsed();
    let after = last_snapshot.expect("a snapshot");
    eprintln!(
        "master proxy killed: VIP on {} after {:?}; switches back {:?}; all converged after {converged:?}",
        PROXIES[1], vip_moved, back
    );

    assert!(
        lost.is_empty(),
        "MAC routes vanished from the control node during the failover: {lost:?}"
    );
    assert!(
        lab.keepalived[0].as_mut().is_some_and(|k| k.is_running()),
        "the first node's keepalived must still run: its track script, not its death, gave up the VIP"
    );
    assert_eq!(lab.vip_holders(), [1]);
    assert_eq!(
        lab.keepalived_state(0).as_deref(),
        Some("FAULT"),
        "the failing track script put the first node in FAULT"
    );
    assert_eq!(lab.keepalived_state(1).as_deref(), Some("MASTER"));

    for (n, &a) in &expected {
        let other = 1 - a;
        assert_eq!(
            after.via(a, n),
            Some(PROXY_IPS[1]),
            "{n}: its session comes through {}",
            PROXIES[1]
        );
        assert_eq!(
            after.takeovers(a, n),
            before.takeovers(a, n) + 1,
            "{n}: exactly one new takeover on {}, its previous agent",
            AGENTS[a]
        );
        assert_eq!(
            after.takeovers(other, n),
            before.takeovers(other, n),
            "{n}: {} never took it over",
            AGENTS[other]
        );
        let sw = lab.switches.iter().find(|s| &s.name == n).unwrap();
        assert_eq!(sw.unknown_dst(), [TSN[a]], "{n}: unknown-dst");
    }

    let show = lab.proxy_show(1).await.expect("second proxy's show");
    assert_eq!(
        show.listeners[0].accepted,
        expected.len() as u64,
        "one connection per switch, no retry or move: {:?}",
        show.sessions
    );
    assert!(
        show.terminations.is_empty(),
        "no session through {} ended: {:?}",
        PROXIES[1],
        show.terminations
    );
    for s in &lab.switches {
        let session = show
            .sessions
            .iter()
            .find(|v| v.switch == s.ip.to_string())
            .unwrap_or_else(|| panic!("{}: no session on {}", s.name, PROXIES[1]));
        assert_eq!(session.backend, AGENTS[expected[&s.name]], "{}", s.name);
    }
}

/// A test that fails with the lab up (keepalived master and backup, both
/// proxies, both agents, a simulated and a real `ovsdb-server` switch
/// connected) leaves nothing behind: the unwinding drops the lab, which
/// stops every process and deletes every namespace it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_failing_with_the_lab_up_leaves_no_namespace_or_process() {
    let _one = ONE_LAB.lock().await;
    init_logs();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let failing = tokio::spawn(async move {
        let mut lab = PairLab::start(PairOptions {
            sim_switches: 1,
            real_switch: true,
            macs: 1,
            max_backoff: None,
        })
        .await;
        lab.keep_files_on_panic = false;
        for k in 0..lab.switches.len() {
            lab.start_switch(k).await;
        }
        // Wait until both switches are held (by whichever agent).
        let d = Deadline::new("both switches held through the first proxy");
        loop {
            if let Ok(s) = lab.snapshot().await {
                if lab.switches.iter().all(|sw| s.holders(&sw.name).len() == 1) {
                    break;
                }
            }
            d.tick(Duration::from_millis(100), || lab.logs()).await;
        }
        let procs: Vec<(u32, String)> = lab.pids().into_iter().map(|p| (p, comm(p))).collect();
        let _ = tx.send((lab.namespaces(), procs));
        panic!("deliberate failure with the lab up");
    });
    let err = failing.await.expect_err("the lab task panics");
    assert!(err.is_panic(), "{err}");
    let (namespaces, procs) = rx.await.expect("the lab came up before failing");

    let names: Vec<&str> = procs.iter().map(|(_, n)| n.as_str()).collect();
    for needed in ["keepalived", "tor-proxy", "tor-agent", "ovsdb-server"] {
        assert!(
            names.contains(&needed),
            "{needed} was running in the lab: {names:?}"
        );
    }
    assert!(
        names.iter().filter(|n| **n == "keepalived").count() >= 4,
        "two keepalived with their VRRP child each: {names:?}"
    );
    let left: Vec<String> = list_namespaces()
        .into_iter()
        .filter(|n| namespaces.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let alive: Vec<&(u32, String)> = procs
        .iter()
        .filter(|(p, _)| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    assert!(
        alive.is_empty(),
        "processes left behind (or unreaped): {alive:?}"
    );
}
