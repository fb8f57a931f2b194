//! Our server against the real tools: the embedded schema is the one the
//! real ovsdb-server serves, and `ovsdb-client` and `vtep-ctl` (whose IDL
//! starts by monitoring `_Server`) work against our server exactly as
//! against the real one.

mod server_common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ovsdb::schema::{hardware_vtep, DatabaseSchema};
use ovsdb::server::Server;
use ovsdb::testing::RealSwitch;
use serde_json::{json, Value};
use server_common::RawConn;

async fn our_tcp_server() -> (Server, ovsdb::server::ListenerHandle, String) {
    let server = Server::hardware_vtep();
    let l = server
        .listen(&"ptcp:0:127.0.0.1".parse().unwrap(), None)
        .await
        .unwrap();
    let port = match l.target() {
        ovsdb::transport::Target::PTcp(a) => a.port(),
        t => panic!("unexpected {t}"),
    };
    (server, l, format!("tcp:127.0.0.1:{port}"))
}

fn run(tool: &str, args: Vec<String>) -> Result<String, String> {
    let out = Command::new(tool)
        .args(&args)
        .output()
        .map_err(|e| format!("{tool}: {e} (install Debian's openvswitch-vtep)"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn tool(tool: &'static str, args: &[&str]) -> Result<String, String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || run(tool, args))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_schema_is_what_the_real_server_serves() {
    let real = RealSwitch::start(false, None).expect("real ovsdb-server");
    let sock = PathBuf::from(real.unix_target.trim_start_matches("unix:"));
    let mut conn = RawConn::connect(&sock).await;
    let reply = conn.request("get_schema", json!(["hardware_vtep"])).await;
    let real_schema = reply.last().unwrap()["result"].clone();
    assert_eq!(real_schema["version"], "1.7.0");
    assert_eq!(real_schema["cksum"], "353943336 11434");

    // Identical normalized JSON: tables, columns, types, constraints,
    // version and cksum.
    assert_eq!(hardware_vtep().to_json(), real_schema);
    assert_eq!(
        DatabaseSchema::from_json(&real_schema).unwrap(),
        *hardware_vtep()
    );
    let real_server_schema = conn.request("get_schema", json!(["_Server"])).await;
    let real_server_schema = real_server_schema.last().unwrap()["result"].clone();

    // And our server's get_schema returns the same JSON as the real one.
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.sock");
    let server = Server::hardware_vtep();
    let _l = server
        .listen(&format!("punix:{}", ours.display()).parse().unwrap(), None)
        .await
        .unwrap();
    let mut conn = RawConn::connect(&ours).await;
    let reply = conn.request("get_schema", json!(["hardware_vtep"])).await;
    assert_eq!(reply.last().unwrap()["result"], real_schema);
    let reply = conn.request("get_schema", json!(["_Server"])).await;
    assert_eq!(reply.last().unwrap()["result"], real_server_schema);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ovsdb_client_against_our_server() {
    let (server, _l, target) = our_tcp_server().await;
    let dbs = tool("ovsdb-client", &["list-dbs", &target]).await.unwrap();
    // ovsdb-client sorts the names it prints.
    assert_eq!(
        dbs.lines().collect::<Vec<_>>(),
        vec!["_Server", "hardware_vtep"]
    );
    let version = tool(
        "ovsdb-client",
        &["get-schema-version", &target, "hardware_vtep"],
    )
    .await
    .unwrap();
    assert_eq!(version.trim(), "1.7.0");
    let cksum = tool(
        "ovsdb-client",
        &["get-schema-cksum", &target, "hardware_vtep"],
    )
    .await
    .unwrap();
    assert_eq!(cksum.trim(), "353943336 11434");
    let schema: Value = serde_json::from_str(
        &tool("ovsdb-client", &["get-schema", &target, "hardware_vtep"])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        DatabaseSchema::from_json(&schema).unwrap(),
        *hardware_vtep()
    );

    let txn = r#"["hardware_vtep",{"op":"insert","table":"Logical_Switch","row":{"name":"from-client","tunnel_key":42}}]"#;
    let out = tool("ovsdb-client", &["transact", &target, txn])
        .await
        .unwrap();
    let result: Value = serde_json::from_str(&out).unwrap();
    assert!(result[0]["uuid"][1].is_string(), "{out}");
    let db = server.db("hardware_vtep").unwrap();
    let keys = db.read(|d| {
        let t = d.table("Logical_Switch").unwrap();
        let col = t.schema.column_index("tunnel_key").unwrap();
        t.iter()
            .map(|(_, r)| r.get(col).unwrap().as_integer())
            .collect::<Vec<_>>()
    });
    assert_eq!(keys, vec![Some(42)]);

    // `monitor` sees rows inserted after it started.
    let mut child = Command::new("ovsdb-client")
        .args([
            "monitor",
            &target,
            "hardware_vtep",
            "Logical_Switch",
            "name,tunnel_key",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ovsdb-client");
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let wait_for = |seen: &Vec<String>, s: &str| seen.iter().any(|l| l.contains(s));
    let deadline = Instant::now() + Duration::from_secs(20);
    // initial contents first
    while !wait_for(&seen, "from-client") {
        let line = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("monitor output")
            .expect("monitor running");
        seen.push(line);
    }
    let r = db.transact(&[json!({"op": "insert", "table": "Logical_Switch",
        "row": {"name": "inserted-later", "tunnel_key": 7}})]);
    assert!(r[0].get("uuid").is_some(), "{r:?}");
    while !wait_for(&seen, "inserted-later") {
        let line = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("update for the new row")
            .expect("monitor running");
        seen.push(line);
    }
    let line = seen.iter().find(|l| l.contains("inserted-later")).unwrap();
    assert!(line.contains("insert") && line.contains('7'), "{line}");
    let _ = child.kill();
    let _ = child.wait();
}

/// The same vtep-ctl session against the real server and ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vtep_ctl_against_our_server_matches_the_real_one() {
    let real = RealSwitch::start(false, None).expect("real ovsdb-server");
    let (_server, _l, target) = our_tcp_server().await;
    let commands: Vec<Vec<&str>> = vec![
        vec!["add-ps", "ps1"],
        vec!["set", "Physical_Switch", "ps1", "tunnel_ips=192.0.2.1"],
        vec!["add-port", "ps1", "p1"],
        vec!["add-ls", "ls1"],
        vec!["set", "Logical_Switch", "ls1", "tunnel_key=5000"],
        vec!["bind-ls", "ps1", "p1", "100", "ls1"],
        vec!["add-ucast-remote", "ls1", "00:11:22:33:44:55", "10.0.0.1"],
        vec!["add-ucast-remote", "ls1", "00:11:22:33:44:66", "10.0.0.1"],
        vec!["add-mcast-remote", "ls1", "unknown-dst", "10.0.0.9"],
        vec!["list-ps"],
        vec!["list-ports", "ps1"],
        vec!["list-ls"],
        vec!["list-bindings", "ps1", "p1"],
        vec!["list-remote-macs", "ls1"],
        vec!["get-replication-mode", "ls1"],
        vec!["del-ucast-remote", "ls1", "00:11:22:33:44:55"],
        vec!["list-remote-macs", "ls1"],
        vec!["--columns=dst_ip", "list", "Physical_Locator"],
        vec!["clear-remote-macs", "ls1"],
        vec!["list-remote-macs", "ls1"],
        vec!["--columns=dst_ip", "list", "Physical_Locator"],
        vec!["unbind-ls", "ps1", "p1", "100"],
        vec!["del-ls", "ls1"],
        vec!["list-ls"],
    ];
    for cmd in &commands {
        let mut real_args = vec![format!("--db={}", real.unix_target)];
        let mut our_args = vec![format!("--db={target}")];
        for a in cmd {
            real_args.push(a.to_string());
            our_args.push(a.to_string());
        }
        let real_out = tokio::task::spawn_blocking(move || run("vtep-ctl", real_args))
            .await
            .unwrap();
        let our_out = tokio::task::spawn_blocking(move || run("vtep-ctl", our_args))
            .await
            .unwrap();
        let real_out = real_out.unwrap_or_else(|e| panic!("real: {e}"));
        let our_out = our_out.unwrap_or_else(|e| panic!("ours: {e}"));
        // `list` prints records in UUID order, which differs between the
        // two databases: compare the records as a set.
        let records = |s: &str| {
            let mut r: Vec<String> = s.split("\n\n").map(|x| x.trim().to_string()).collect();
            r.sort();
            r
        };
        assert_eq!(
            records(&our_out),
            records(&real_out),
            "vtep-ctl {}",
            cmd.join(" ")
        );
    }
    // The results are really there, not just equal: check a few.
    let macs = run("vtep-ctl", vec![format!("--db={target}"), "list-ps".into()]).unwrap();
    assert_eq!(macs.trim(), "ps1");
}
