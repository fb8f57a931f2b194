//! Our client against the real ovsdb-server 3.1: schema, transactions,
//! monitors (update and update2), echo in both directions, pipelining, TLS,
//! and the real server dialling our passive listener (vtep-ctl set-manager).

use std::sync::Arc;
use std::time::Duration;

use ovsdb::client::{
    ChangeKind, Client, Condition, MonitorSpec, SessionEvent, SessionOptions, TableMonitor,
    Transaction,
};
use ovsdb::schema::hardware_vtep;
use ovsdb::testing::{RealSwitch, RealTls, TestPki};
use ovsdb::transport::{connect, Listener, Target, TlsFiles};
use ovsdb::{Atom, Datum};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;

const DB: &str = "hardware_vtep";
const T: Duration = Duration::from_secs(20);

async fn session(
    target: &str,
    tls: Option<&TlsFiles>,
) -> (Client, UnboundedReceiver<SessionEvent>) {
    let target: Target = target.parse().unwrap();
    let stream = timeout(T, connect(&target, tls)).await.unwrap().unwrap();
    Client::start(
        stream,
        SessionOptions {
            name: "test".into(),
            ..SessionOptions::default()
        },
    )
}

fn insert_mac(txn: &mut Transaction, ls: Atom, mac: &str, ip: &str) {
    let (_, loc) = txn.insert(
        "Physical_Locator",
        vec![
            ("dst_ip".into(), Datum::scalar(ip)),
            (
                "encapsulation_type".into(),
                Datum::scalar("vxlan_over_ipv4"),
            ),
        ],
    );
    txn.insert(
        "Ucast_Macs_Remote",
        vec![
            ("MAC".into(), Datum::scalar(mac)),
            ("logical_switch".into(), Datum::scalar(ls)),
            ("locator".into(), Datum::scalar(loc)),
        ],
    );
}

async fn next_update(events: &mut UnboundedReceiver<SessionEvent>) -> Vec<ovsdb::client::RowEvent> {
    loop {
        match timeout(T, events.recv()).await.unwrap().unwrap() {
            SessionEvent::Update { events, .. } => return events,
            SessionEvent::Closed { reason } => panic!("closed: {reason}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn schema_transact_monitor_against_real_server() {
    let sw = RealSwitch::start(true, None).unwrap();
    let (c, mut events) = session(sw.net_target.as_deref().unwrap(), None).await;
    assert_eq!(
        c.list_dbs().await.unwrap(),
        vec!["hardware_vtep", "_Server"]
    );
    let schema = c.get_schema(DB).await.unwrap();
    assert_eq!(
        *schema,
        *hardware_vtep(),
        "served schema equals the embedded one"
    );
    c.echo().await.unwrap();
    assert_eq!(c.get_server_id().await.unwrap().len(), 36);

    let started = c
        .monitor_cond(
            DB,
            &MonitorSpec::new()
                .table("Logical_Switch", TableMonitor::all())
                .table("Ucast_Macs_Remote", TableMonitor::all())
                .table("Physical_Locator", TableMonitor::all()),
        )
        .await
        .unwrap();
    assert_eq!(started.initial_rows, 0);

    let mut txn = Transaction::new(DB);
    let (ls_h, ls) = txn.insert(
        "Logical_Switch",
        vec![
            ("name".into(), Datum::scalar("Contrail-ls1")),
            ("tunnel_key".into(), Datum::scalar(5000)),
        ],
    );
    insert_mac(&mut txn, ls, "02:00:00:00:00:01", "10.0.0.1");
    let out = c.transact(&txn).await.unwrap();
    assert!(out.is_success(), "{out:?}");
    let ls_uuid = out.uuid(ls_h).unwrap();
    // The server sends the update before the reply: the replica has it now.
    let n = c
        .with_replica(DB, |r| r.table("Ucast_Macs_Remote").unwrap().len())
        .unwrap();
    assert_eq!(n, 1);
    let ev = next_update(&mut events).await;
    assert_eq!(ev.len(), 3);
    assert!(ev.iter().all(|e| e.kind == ChangeKind::Insert));

    // An operation error is surfaced exactly, with nulls after it.
    let mut bad = Transaction::new(DB);
    bad.update(
        "Physical_Locator",
        vec![],
        vec![("dst_ip".into(), Datum::scalar("1.1.1.1"))],
    );
    bad.comment("never runs");
    let out = c.transact(&bad).await.unwrap();
    let (idx, e) = out.error().unwrap();
    assert_eq!(idx, Some(0));
    assert_eq!(e.error, "constraint violation");
    assert_eq!(out.results[1], None);

    // A commit-time error comes as the extra trailing element.
    let mut bad = Transaction::new(DB);
    bad.delete("Logical_Switch", vec![Condition::uuid(ls_uuid)]);
    let out = c.transact(&bad).await.unwrap();
    let (idx, e) = out.error().unwrap();
    assert_eq!(idx, None);
    assert_eq!(e.error, "referential integrity violation");

    // Deleting the MAC garbage-collects its locator: two deletes arrive.
    let mut del = Transaction::new(DB);
    del.delete("Ucast_Macs_Remote", vec![]);
    assert!(c.transact(&del).await.unwrap().is_success());
    let ev = next_update(&mut events).await;
    assert_eq!(
        ev.iter().filter(|e| e.kind == ChangeKind::Delete).count(),
        2
    );
    assert!(ev.iter().any(|e| e.table.name == "Physical_Locator"));
}

#[tokio::test]
async fn monitor_v1_and_pipelined_load() {
    let sw = RealSwitch::start(true, None).unwrap();
    let (c, mut events) = session(sw.net_target.as_deref().unwrap(), None).await;
    c.get_schema(DB).await.unwrap();
    let mut txn = Transaction::new(DB);
    txn.insert(
        "Logical_Switch",
        vec![
            ("name".into(), Datum::scalar("ls")),
            ("tunnel_key".into(), Datum::scalar(7)),
        ],
    );
    let out = c.transact(&txn).await.unwrap();
    let ls = Atom::Uuid(out.named_uuids.values().next().copied().unwrap());
    c.monitor(
        DB,
        &MonitorSpec::new()
            .table("Ucast_Macs_Remote", TableMonitor::all())
            .table("Logical_Switch", TableMonitor::all()),
    )
    .await
    .unwrap();
    let initial = next_update(&mut events).await;
    assert_eq!(initial.len(), 1);

    // 200 transactions of 10 MACs each, all in flight at once (capped).
    let c = Arc::new(c);
    let mut tasks = Vec::new();
    for t in 0..200 {
        let c = c.clone();
        let ls = ls.clone();
        tasks.push(tokio::spawn(async move {
            // One locator per transaction, shared by its MACs: a second
            // row with the same (encapsulation, dst_ip) breaks the index.
            let mut txn = Transaction::new(DB);
            let (_, loc) = txn.insert(
                "Physical_Locator",
                vec![
                    (
                        "dst_ip".into(),
                        Datum::scalar(format!("10.1.{}.{}", t / 256, t % 256)),
                    ),
                    (
                        "encapsulation_type".into(),
                        Datum::scalar("vxlan_over_ipv4"),
                    ),
                ],
            );
            for i in 0..10 {
                txn.insert(
                    "Ucast_Macs_Remote",
                    vec![
                        (
                            "MAC".into(),
                            Datum::scalar(format!("02:00:00:00:{:02x}:{:02x}", t, i)),
                        ),
                        ("logical_switch".into(), Datum::scalar(ls.clone())),
                        ("locator".into(), Datum::scalar(loc.clone())),
                    ],
                );
            }
            let out = c.transact(&txn).await.unwrap();
            assert!(out.is_success(), "{out:?}");
            true
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    let n = c
        .with_replica(DB, |r| r.table("Ucast_Macs_Remote").unwrap().len())
        .unwrap();
    assert_eq!(n, 2000);

    // v1 modify: tunnel_key change arrives as a Modify with the old row.
    let mut upd = Transaction::new(DB);
    upd.update(
        "Logical_Switch",
        vec![],
        vec![("tunnel_key".into(), Datum::scalar(8))],
    );
    assert!(c.transact(&upd).await.unwrap().is_success());
    loop {
        let ev = next_update(&mut events).await;
        if let Some(e) = ev.iter().find(|e| e.table.name == "Logical_Switch") {
            assert_eq!(e.kind, ChangeKind::Modify);
            let col = e.table.column_index("tunnel_key").unwrap();
            assert_eq!(e.old.as_ref().unwrap().columns[col], Datum::scalar(7));
            break;
        }
    }
}

#[tokio::test]
async fn real_server_dials_our_passive_tls_listener() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(pki_dir.path()).unwrap();
    let (sw_cert, sw_key) = pki.issue("sw1").unwrap();
    let (ag_cert, ag_key) = pki.issue("agent").unwrap();
    let real_tls = RealTls {
        key: sw_key,
        cert: sw_cert,
        ca: pki.ca_path(),
    };
    let sw = RealSwitch::start(false, Some(&real_tls)).unwrap();
    sw.vtep_ctl(&["add-ps", "sw1"]).unwrap();
    let files = TlsFiles {
        cert: ag_cert,
        key: ag_key,
        ca: pki.ca_path(),
    };
    let listener = Listener::bind(&"pssl:0:127.0.0.1".parse().unwrap(), Some(&files))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    sw.vtep_ctl(&[
        "--inactivity-probe=1000",
        "set-manager",
        &format!("ssl:127.0.0.1:{port}"),
    ])
    .unwrap();
    let accepted = timeout(T, listener.accept()).await.unwrap().unwrap();
    let stream = accepted.finish().await.unwrap();
    assert_eq!(stream.peer_common_name().as_deref(), Some("sw1"));
    let (c, mut events) = Client::start(stream, SessionOptions::default());
    c.get_schema(DB).await.unwrap();
    c.monitor_cond_since(
        DB,
        &MonitorSpec::new().table("Physical_Switch", TableMonitor::all()),
        "",
    )
    .await
    .map(|m| assert!(!m.found, "a standalone db never finds the txn id"))
    .unwrap();
    let ev = next_update(&mut events).await;
    assert_eq!(ev.len(), 1);
    // The server probes after 1 s idle; we answer, so the session survives.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(!c.is_closed());
    // And we can write the switch's database over the session it opened.
    let mut txn = Transaction::new(DB);
    txn.insert(
        "Logical_Switch",
        vec![("name".into(), Datum::scalar("Contrail-x"))],
    );
    assert!(c.transact(&txn).await.unwrap().is_success());
    let out = sw.vtep_ctl(&["list-ls"]).unwrap();
    assert!(out.contains("Contrail-x"), "{out}");
}

#[tokio::test]
async fn our_client_over_tls_and_probe_closes_on_a_hung_server() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(pki_dir.path()).unwrap();
    let (sw_cert, sw_key) = pki.issue("sw1").unwrap();
    let (cl_cert, cl_key) = pki.issue("client").unwrap();
    let sw = RealSwitch::start(
        true,
        Some(&RealTls {
            key: sw_key,
            cert: sw_cert,
            ca: pki.ca_path(),
        }),
    )
    .unwrap();
    let files = TlsFiles {
        cert: cl_cert,
        key: cl_key,
        ca: pki.ca_path(),
    };
    let target: Target = sw.net_target.clone().unwrap().parse().unwrap();
    let stream = connect(&target, Some(&files)).await.unwrap();
    let (c, _events) = Client::start(
        stream,
        SessionOptions {
            probe_interval: Duration::from_millis(500),
            ..SessionOptions::default()
        },
    );
    assert_eq!(c.list_dbs().await.unwrap().len(), 2);
    // Freeze the server: our probe gets no answer and the session closes.
    let pid = sw.pid().unwrap() as i32;
    // SAFETY: kill(2) on our own child process has no memory effects.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let reason = timeout(T, c.closed()).await.unwrap();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(reason.contains("inactivity probe"), "{reason}");
}
