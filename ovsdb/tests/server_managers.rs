//! Manager dial-out: our server follows `Global.managers`, dials the
//! `Manager.target` found there (plain TCP and TLS with mutual
//! authentication), probes the connection, writes `is_connected`/`status`
//! back, and after a drop redials with OVS's backoff (1 s after a
//! long-lived session, then doubling, capped by `max_backoff`).
//!
//! Timer assertions only check lower bounds (a timer never fires early)
//! and generous upper bounds, so they cannot flake on a loaded machine.

mod server_common;

use std::time::{Duration, Instant};

use ovsdb::server::{Db, ManagerConfig, Server};
use ovsdb::testing::TestPki;
use ovsdb::transport::{Listener, Target, TlsFiles};
use serde_json::{json, Value};
use server_common::RawConn;

const ACCEPT_TIMEOUT: Duration = Duration::from_secs(15);

fn add_manager(db: &Db, target: &str, max_backoff: i64, probe: i64) -> String {
    let r = db.transact(&[
        json!({"op": "insert", "table": "Manager", "uuid-name": "m",
               "row": {"target": target, "max_backoff": max_backoff, "inactivity_probe": probe}}),
        json!({"op": "insert", "table": "Global", "row": {"managers": ["named-uuid", "m"]}}),
    ]);
    assert!(r.iter().all(|x| x.get("error").is_none()), "{r:?}");
    r[0]["uuid"][1].as_str().unwrap().to_string()
}

fn manager_state(db: &Db, uuid: &str) -> (Option<bool>, Value) {
    let u = ovsdb::value::parse_uuid(uuid).unwrap();
    let schema = db.schema();
    let t = schema.table("Manager").unwrap();
    match db.get("Manager", &u) {
        Some(r) => (
            r.get(t.column_index("is_connected").unwrap())
                .and_then(|d| d.as_bool()),
            r.get(t.column_index("status").unwrap()).unwrap().to_json(),
        ),
        None => (None, Value::Null),
    }
}

async fn wait_connected(db: &Db, uuid: &str, want: bool) -> Value {
    let deadline = Instant::now() + ACCEPT_TIMEOUT;
    loop {
        let (c, status) = manager_state(db, uuid);
        if c == Some(want) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "is_connected never became {want}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn accept(l: &Listener) -> (RawConn, Instant, Option<String>) {
    let a = tokio::time::timeout(ACCEPT_TIMEOUT, l.accept())
        .await
        .expect("the server dials the manager")
        .unwrap();
    let t = Instant::now();
    let stream = a.finish().await.unwrap();
    let cn = stream.peer_common_name();
    (RawConn::new(Box::new(stream)), t, cn)
}

/// The manager side: the dialled connection serves OVSDB requests.
async fn check_serves(conn: &mut RawConn) {
    let r = conn.request("list_dbs", json!([])).await;
    assert_eq!(
        r.last().unwrap()["result"],
        json!(["hardware_vtep", "_Server"])
    );
    let r = conn
        .request(
            "transact",
            json!(["hardware_vtep", {"op": "insert", "table": "Logical_Switch", "row": {"name": "from-manager"}}]),
        )
        .await;
    assert!(r.last().unwrap()["result"][0]["uuid"].is_array(), "{r:?}");
}

async fn dial_out_and_backoff(tls: Option<(TlsFiles, TlsFiles)>) {
    let (server_tls, manager_tls) = match tls {
        Some((s, m)) => (Some(s), Some(m)),
        None => (None, None),
    };
    let passive: Target = if manager_tls.is_some() {
        "pssl:0:127.0.0.1".parse().unwrap()
    } else {
        "ptcp:0:127.0.0.1".parse().unwrap()
    };
    let listener = Listener::bind(&passive, manager_tls.as_ref())
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let scheme = if manager_tls.is_some() { "ssl" } else { "tcp" };
    let target = format!("{scheme}:127.0.0.1:{port}");

    let server = Server::hardware_vtep();
    let db = server.db("hardware_vtep").unwrap();
    let mut cfg = ManagerConfig::hardware_vtep();
    cfg.status_interval = Duration::from_millis(200);
    if let Some(t) = server_tls {
        cfg = cfg.with_tls(t);
    }
    let _managers = server.start_managers(cfg).unwrap();
    // The column changes at runtime: the manager appears after start.
    let mrow = add_manager(&db, &target, 2000, 1000);

    let (mut conn, _t0, cn) = accept(&listener).await;
    if manager_tls.is_some() {
        assert_eq!(
            cn.as_deref(),
            Some("switch"),
            "the switch presents its certificate"
        );
    }
    check_serves(&mut conn).await;
    let status = wait_connected(&db, &mrow, true).await;
    assert!(status.to_string().contains("ACTIVE"), "{status}");
    let n = db.read(|d| d.table("Logical_Switch").unwrap().len());
    assert_eq!(n, 1);

    // inactivity_probe = 1000 ms: an idle manager gets the server's echo.
    let probe = tokio::time::timeout(Duration::from_secs(10), conn.recv())
        .await
        .expect("echo probe")
        .expect("connection open");
    assert_eq!(probe, json!({"id": "echo", "method": "echo", "params": []}));
    conn.send(&json!({"id": "echo", "result": [], "error": null}))
        .await;

    // Drop a session that lived long: redial after 1 s.
    drop(conn);
    let dropped = Instant::now();
    let (conn, t1, _) = accept(&listener).await;
    let gap1 = t1 - dropped;
    // Close at once (no activity): backoff doubles to 2 s (= max_backoff).
    drop(conn);
    let dropped2 = Instant::now();
    let (conn, t2, _) = accept(&listener).await;
    let gap2 = t2 - dropped2;
    drop(conn);
    let dropped3 = Instant::now();
    let (mut conn, t3, _) = accept(&listener).await;
    let gap3 = t3 - dropped3;
    assert!(
        gap1 >= Duration::from_millis(950) && gap1 < Duration::from_secs(6),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(1950) && gap2 < Duration::from_secs(7),
        "{gap2:?}"
    );
    assert!(
        gap3 >= Duration::from_millis(1950) && gap3 < Duration::from_secs(7),
        "capped: {gap3:?}"
    );
    check_serves(&mut conn).await;
    wait_connected(&db, &mrow, true).await;

    // Removing the manager from the column closes its connection.
    let r = db.transact(&[
        json!({"op": "update", "table": "Global", "where": [], "row": {"managers": ["set", []]}}),
    ]);
    assert!(r[0].get("error").is_none(), "{r:?}");
    let eof = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match conn.recv().await {
                None => break,
                Some(m) if m.get("method") == Some(&json!("echo")) => {
                    conn.send(&json!({"id": "echo", "result": [], "error": null}))
                        .await;
                }
                Some(_) => {}
            }
        }
    })
    .await;
    assert!(
        eof.is_ok(),
        "connection closed after the manager was removed"
    );
    // The Manager row itself was garbage collected with its last reference.
    assert_eq!(manager_state(&db, &mrow).0, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_tcp_manager_and_reconnects_with_backoff() {
    dial_out_and_backoff(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_ssl_manager_with_mutual_auth_and_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path()).unwrap();
    let (scert, skey) = pki.issue("switch").unwrap();
    let (mcert, mkey) = pki.issue("manager").unwrap();
    let switch = TlsFiles {
        cert: scert,
        key: skey,
        ca: pki.ca_path(),
    };
    let manager = TlsFiles {
        cert: mcert,
        key: mkey,
        ca: pki.ca_path(),
    };
    dial_out_and_backoff(Some((switch, manager))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_manager_is_reported_in_backoff() {
    let server = Server::hardware_vtep();
    let db = server.db("hardware_vtep").unwrap();
    let _m = server
        .start_managers(ManagerConfig::hardware_vtep())
        .unwrap();
    // A port nobody listens on.
    let port = ovsdb::testing::free_port().unwrap();
    let mrow = add_manager(&db, &format!("tcp:127.0.0.1:{port}"), 1000, 0);
    let deadline = Instant::now() + ACCEPT_TIMEOUT;
    loop {
        let (connected, status) = manager_state(&db, &mrow);
        let s = status.to_string();
        if s.contains("BACKOFF") && s.contains("last_error") {
            assert_eq!(connected, Some(false));
            break;
        }
        assert!(Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
