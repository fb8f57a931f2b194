//! Session robustness and the in-process API: bad peer input closes only
//! the offending session, messages over the size limit are refused, and a
//! write by a network client reaches in-process subscribers.

mod server_common;

use std::time::Duration;

use ovsdb::server::{Server, SessionOptions};
use serde_json::json;
use server_common::RawConn;

async fn serve(
    opts: SessionOptions,
) -> (
    Server,
    tempfile::TempDir,
    std::path::PathBuf,
    ovsdb::server::ListenerHandle,
) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let server = Server::hardware_vtep();
    let l = server
        .listen_with(
            &format!("punix:{}", sock.display()).parse().unwrap(),
            None,
            opts,
        )
        .await
        .unwrap();
    (server, dir, sock, l)
}

async fn closes_after(sock: &std::path::Path, bytes: &[u8]) {
    let mut c = RawConn::connect(sock).await;
    c.send_raw(bytes).await;
    let r = tokio::time::timeout(Duration::from_secs(10), c.recv())
        .await
        .unwrap();
    assert_eq!(
        r,
        None,
        "session should close after {:?}",
        String::from_utf8_lossy(bytes)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_only_that_session() {
    let opts = SessionOptions {
        probe: Duration::ZERO,
        max_message: 4096,
    };
    let (_server, _dir, sock, _l) = serve(opts).await;
    let mut healthy = RawConn::connect(&sock).await;
    closes_after(&sock, b"hello").await;
    closes_after(&sock, b"]").await;
    closes_after(
        &sock,
        br#"{"id":1,"method":"echo","params":{"not":"an array"}}"#,
    )
    .await;
    closes_after(&sock, br#"{"id":1,"method":"echo"}"#).await;
    closes_after(
        &sock,
        br#"{"id":1,"method":"echo","params":[],"jsonrpc":"2.0"}"#,
    )
    .await;
    let mut big = br#"{"id":1,"method":"echo","params":[""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 10_000));
    big.extend(br#""]}"#);
    closes_after(&sock, &big).await;

    // Unknown methods are an error reply, not a disconnection.
    let r = healthy.request("no_such_method", json!([])).await;
    assert_eq!(r.last().unwrap()["error"], json!("unknown method"));
    let r = healthy.request("echo", json!(["still here"])).await;
    assert_eq!(r.last().unwrap()["result"], json!(["still here"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_writes_reach_in_process_subscribers() {
    let (server, _dir, sock, _l) = serve(SessionOptions::default()).await;
    let db = server.db("hardware_vtep").unwrap();
    let mut sub = db.subscribe();
    let mut c = RawConn::connect(&sock).await;
    let r = c
        .request(
            "transact",
            json!(["hardware_vtep",
                {"op": "insert", "table": "Logical_Switch", "uuid-name": "ls", "row": {"name": "ls0"}},
                {"op": "insert", "table": "Physical_Locator", "uuid-name": "pl",
                 "row": {"encapsulation_type": "vxlan_over_ipv4", "dst_ip": "10.0.0.1"}},
                {"op": "insert", "table": "Ucast_Macs_Remote",
                 "row": {"MAC": "02:00:00:00:00:01", "logical_switch": ["named-uuid", "ls"], "locator": ["named-uuid", "pl"]}}]),
        )
        .await;
    let mac_uuid = r.last().unwrap()["result"][2]["uuid"][1]
        .as_str()
        .unwrap()
        .to_string();
    let commit = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .unwrap()
        .unwrap();
    let macs = commit
        .table("Ucast_Macs_Remote")
        .expect("MAC table changed");
    assert_eq!(macs.rows.len(), 1);
    assert_eq!(macs.rows[0].uuid.to_string(), mac_uuid);
    let col = macs.schema.column_index("MAC").unwrap();
    let new = macs.rows[0].new.as_ref().unwrap();
    assert_eq!(new.get(col).unwrap().as_str(), Some("02:00:00:00:00:01"));
    assert_eq!(commit.row_count(), 3);

    // An in-process delete is seen by the network client's monitor.
    c.request(
        "monitor_cond",
        json!(["hardware_vtep", "m", {"Ucast_Macs_Remote": [{"columns": ["MAC"]}]}]),
    )
    .await;
    let r = db.transact(&[json!({"op": "delete", "table": "Ucast_Macs_Remote", "where": []})]);
    assert_eq!(r[0]["count"], json!(1));
    let update = tokio::time::timeout(Duration::from_secs(10), c.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(update["method"], json!("update2"));
    assert_eq!(
        update["params"][1]["Ucast_Macs_Remote"][&mac_uuid],
        json!({"delete": null})
    );
    // The locator went with its last MAC.
    assert_eq!(db.read(|d| d.table("Physical_Locator").unwrap().len()), 0);
}
