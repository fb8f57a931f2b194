//! Loading 100k `Ucast_Macs_Remote` rows in batches of 1000 (one
//! `transact` per batch, each waiting for its reply, as a controller does),
//! into our server and into the real ovsdb-server 3.1, both over a unix
//! socket, in one run; plus our engine in-process and memory per row.
//!
//! Run: `cargo bench -p ovsdb --bench server` (needs Debian's
//! openvswitch-vtep). Environment: `ROWS` (default 100000), `BATCH` (1000).

use std::path::Path;
use std::time::{Duration, Instant};

use ovsdb::server::{Db, Server};
use ovsdb::testing::RealSwitch;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const LOCATORS: usize = 4;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mac(i: usize) -> String {
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        (i >> 32) & 0xff,
        (i >> 24) & 0xff,
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

/// The first batch: the logical switch, the locators and the first MACs.
fn first_batch(batch: usize) -> Vec<Value> {
    let mut ops = vec![
        json!({"op": "insert", "table": "Logical_Switch", "uuid-name": "ls",
        "row": {"name": "bench", "tunnel_key": 5000}}),
    ];
    for l in 0..LOCATORS {
        ops.push(json!({"op": "insert", "table": "Physical_Locator", "uuid-name": format!("pl{l}"),
            "row": {"encapsulation_type": "vxlan_over_ipv4", "dst_ip": format!("192.0.2.{}", l + 1)}}));
    }
    for i in 0..batch {
        ops.push(
            json!({"op": "insert", "table": "Ucast_Macs_Remote", "row": {
            "MAC": mac(i), "ipaddr": "", "logical_switch": ["named-uuid", "ls"],
            "locator": ["named-uuid", format!("pl{}", i % LOCATORS)]}}),
        );
    }
    ops
}

fn next_batch(start: usize, n: usize, ls: &str, pls: &[String]) -> Vec<Value> {
    (start..start + n)
        .map(|i| {
            json!({"op": "insert", "table": "Ucast_Macs_Remote", "row": {
                "MAC": mac(i), "ipaddr": "", "logical_switch": ["uuid", ls],
                "locator": ["uuid", pls[i % pls.len()]]}})
        })
        .collect()
}

fn uuids_of_first(result: &Value) -> (String, Vec<String>) {
    let u = |i: usize| result[i]["uuid"][1].as_str().expect("uuid").to_string();
    (u(0), (1..=LOCATORS).map(u).collect())
}

struct Conn {
    s: UnixStream,
    framer: ovsdb::rpc::JsonFramer,
    buf: bytes::BytesMut,
}

impl Conn {
    async fn open(path: &Path) -> Conn {
        Conn {
            s: UnixStream::connect(path).await.expect("connect"),
            framer: ovsdb::rpc::JsonFramer::new(1 << 30),
            buf: bytes::BytesMut::new(),
        }
    }

    async fn transact(&mut self, id: u64, ops: Vec<Value>) -> Value {
        let mut params = vec![json!("hardware_vtep")];
        params.extend(ops);
        let req =
            serde_json::to_vec(&json!({"id": id, "method": "transact", "params": params})).unwrap();
        self.s.write_all(&req).await.unwrap();
        loop {
            while let Some(frame) = self.framer.next_frame(&mut self.buf).unwrap() {
                let v: Value = serde_json::from_slice(&frame).unwrap();
                if v["id"] == json!(id) {
                    let r = v["result"].clone();
                    assert!(
                        r.as_array()
                            .is_some_and(|a| a.iter().all(|x| x.get("error").is_none())),
                        "transaction failed: {}",
                        &r.to_string()[..r.to_string().len().min(300)]
                    );
                    return r;
                }
            }
            let mut chunk = vec![0u8; 1 << 16];
            let n = self.s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn load_over_socket(path: &Path, rows: usize, batch: usize) -> Duration {
    let mut c = Conn::open(path).await;
    let start = Instant::now();
    let first = c.transact(1, first_batch(batch)).await;
    let (ls, pls) = uuids_of_first(&first);
    let mut done = batch;
    let mut id = 2;
    while done < rows {
        let n = batch.min(rows - done);
        c.transact(id, next_batch(done, n, &ls, &pls)).await;
        done += n;
        id += 1;
    }
    start.elapsed()
}

fn load_in_process(db: &Db, rows: usize, batch: usize) -> Duration {
    let start = Instant::now();
    let first = Value::Array(db.transact(&first_batch(batch)));
    let (ls, pls) = uuids_of_first(&first);
    let mut done = batch;
    while done < rows {
        let n = batch.min(rows - done);
        let r = db.transact(&next_batch(done, n, &ls, &pls));
        assert!(r.iter().all(|x| x.get("error").is_none()));
        done += n;
    }
    start.elapsed()
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let rows = env("ROWS", 100_000);
    let batch = env("BATCH", 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("Loading {rows} Ucast_Macs_Remote rows in batches of {batch} (+1 Logical_Switch, {LOCATORS} locators)\n");
    println!("| server | path | time (s) | rows/s | txn/s |");
    println!("|---|---|---:|---:|---:|");
    let report = |name: &str, path: &str, d: Duration| {
        let s = d.as_secs_f64();
        println!(
            "| {name} | {path} | {s:.2} | {:.0} | {:.1} |",
            rows as f64 / s,
            (rows as f64 / batch as f64) / s
        );
    };

    // Ours in-process (what the simulated switch uses), and memory per row,
    // first so that no freed memory of another run hides growth.
    let self_pid = std::process::id().to_string();
    let server = Server::hardware_vtep();
    let db = server.db("hardware_vtep").unwrap();
    let rss0 = rss_kib(&self_pid);
    let d = load_in_process(&db, rows, batch);
    report("ours", "in-process", d);
    let rss1 = rss_kib(&self_pid);
    let n = db.read(|d| d.table("Ucast_Macs_Remote").unwrap().len());
    assert_eq!(n, rows);
    db.read(|d| d.check_integrity()).unwrap();

    drop(db);
    drop(server);

    // Real ovsdb-server (file-backed standalone database, as on a switch).
    let real =
        RealSwitch::start(false, None).expect("real ovsdb-server (install openvswitch-vtep)");
    let real_sock = real.unix_target.trim_start_matches("unix:").to_string();
    let real_pid = real.pid().map(|p| p.to_string()).unwrap_or_default();
    let real_rss0 = rss_kib(&real_pid);
    let d = rt.block_on(load_over_socket(Path::new(&real_sock), rows, batch));
    report("ovsdb-server 3.1", "unix socket", d);
    let real_rss1 = rss_kib(&real_pid);
    drop(real);

    // Ours over a unix socket, in this process.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ours.sock");
    let server = Server::hardware_vtep();
    let listener = rt
        .block_on(server.listen(&format!("punix:{}", sock.display()).parse().unwrap(), None))
        .unwrap();
    let d = rt.block_on(load_over_socket(&sock, rows, batch));
    report("ours", "unix socket", d);
    drop(listener);
    drop(server);

    println!();
    println!("| server | RSS growth for {rows} rows | per row |");
    println!("|---|---:|---:|");
    println!(
        "| ovsdb-server 3.1 | {:.1} MiB | {:.0} B |",
        (real_rss1.saturating_sub(real_rss0)) as f64 / 1024.0,
        (real_rss1.saturating_sub(real_rss0) * 1024) as f64 / rows as f64
    );
    println!(
        "| ours (in-process) | {:.1} MiB | {:.0} B |",
        (rss1.saturating_sub(rss0)) as f64 / 1024.0,
        (rss1.saturating_sub(rss0) * 1024) as f64 / rows as f64
    );
}
