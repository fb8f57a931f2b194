//! Client-side benchmarks, each side by side with its reference in one run:
//!
//! 1. decoding a 100k-MAC `monitor_cond` reply captured from the real
//!    ovsdb-server: our framer + schema-guided decoder vs
//!    `serde_json::from_slice::<Value>` on the same bytes;
//! 2. replica memory per row (counting allocator) beside the real server's
//!    RSS growth for the same rows;
//! 3. loading 100k `Ucast_Macs_Remote` rows into the real server: our
//!    pipelined client vs `ovsdb-client transact` batches.
//!
//! Run: `cargo bench -p ovsdb --bench client` (needs ovsdb-server).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use std::sync::Arc;

use ovsdb::client::{decode_monitor_reply_frame, Client, Replica, SessionOptions, Transaction};
use ovsdb::rpc::JsonFramer;
use ovsdb::schema::hardware_vtep;
use ovsdb::testing::RealSwitch;
use ovsdb::transport::{connect, Target};
use ovsdb::value::seed::{TableUpdates, UpdateFormat};
use ovsdb::{Atom, Datum};
use serde_json::{json, Value};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const ROWS: usize = 100_000;
const RUNS: usize = 7;
/// Rows per transaction: ovsdb-client takes the transaction as one argument,
/// which Linux caps at 128 KiB.
const BATCH: usize = 250;

fn trim() {
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe { libc::malloc_trim(0) };
}

/// CPU seconds of the calling thread: unlike wall time, not inflated when
/// other processes on this shared machine take the core mid-run.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
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

fn ip(prefix: u8, n: usize) -> String {
    format!(
        "{prefix}.{}.{}.{}",
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let ticks: f64 =
                after.get(11)?.parse::<f64>().ok()? + after.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Inserts `n` MACs into `table` with our client, `batch` rows per
/// transaction, transactions pipelined. Returns rows/s.
async fn load(client: &Client, table: &str, n: usize, batch: usize, offset: usize) -> f64 {
    let mut txn = Transaction::new("hardware_vtep");
    txn.insert(
        "Logical_Switch",
        vec![
            ("name".into(), Datum::scalar(format!("ls{offset}"))),
            ("tunnel_key".into(), Datum::scalar(offset as i64 + 1)),
        ],
    );
    let out = client.transact(&txn).await.unwrap();
    assert!(out.is_success(), "{out:?}");
    let ls = Atom::Uuid(*out.named_uuids.values().next().unwrap());
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for b in 0..n.div_ceil(batch) {
        let client = client.clone();
        let ls = ls.clone();
        let table = table.to_string();
        set.spawn(async move {
            let mut txn = Transaction::new("hardware_vtep");
            let (_, loc) = txn.insert(
                "Physical_Locator",
                vec![
                    ("dst_ip".into(), Datum::scalar(ip(10, offset + b))),
                    (
                        "encapsulation_type".into(),
                        Datum::scalar("vxlan_over_ipv4"),
                    ),
                ],
            );
            for i in b * batch..((b + 1) * batch).min(n) {
                txn.insert(
                    &table,
                    vec![
                        ("MAC".into(), Datum::scalar(mac(offset + i))),
                        ("logical_switch".into(), Datum::scalar(ls.clone())),
                        ("locator".into(), Datum::scalar(loc.clone())),
                    ],
                );
            }
            let out = client.transact(&txn).await.unwrap();
            assert!(out.is_success(), "{out:?}");
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The same load through `ovsdb-client transact`, one process per batch.
fn load_with_ovsdb_client(target: &str, n: usize, batch: usize, offset: usize) -> f64 {
    let ls_txn = json!(["hardware_vtep", {"op": "insert", "table": "Logical_Switch",
        "row": {"name": format!("ls{offset}"), "tunnel_key": offset + 1}}]);
    let out = std::process::Command::new("ovsdb-client")
        .args(["transact", target, &ls_txn.to_string()])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ls = v[0]["uuid"][1].as_str().unwrap().to_string();
    let start = Instant::now();
    for b in 0..n.div_ceil(batch) {
        let mut ops = vec![
            json!("hardware_vtep"),
            json!({"op": "insert", "table": "Physical_Locator", "uuid-name": "loc",
                "row": {"dst_ip": ip(11, offset + b), "encapsulation_type": "vxlan_over_ipv4"}}),
        ];
        for i in b * batch..((b + 1) * batch).min(n) {
            ops.push(json!({"op": "insert", "table": "Ucast_Macs_Remote",
                "row": {"MAC": mac(offset + i), "logical_switch": ["uuid", ls], "locator": ["named-uuid", "loc"]}}));
        }
        let out = std::process::Command::new("ovsdb-client")
            .args(["transact", target, &Value::Array(ops).to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.contains("\"error\""),
            "{text}"
        );
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Captures the raw bytes of a `monitor_cond` reply.
fn capture_dump(unix: &str) -> Vec<u8> {
    let path = unix.trim_start_matches("unix:");
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    let req = json!({"id": 1, "method": "monitor_cond", "params": ["hardware_vtep", null,
        {"Ucast_Macs_Local": [{}], "Physical_Locator": [{}], "Logical_Switch": [{}]}]});
    s.write_all(req.to_string().as_bytes()).unwrap();
    let mut framer = JsonFramer::new(1 << 30);
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(f) = framer.next_frame(&mut buf).unwrap() {
            return f.to_vec();
        }
    }
}

/// Frames and decodes `buf`: the bytes as a session's read buffer holds
/// them (the reads themselves are not timed, as they are not for `Value`).
fn decode_ours(mut buf: BytesMut, schema: &Arc<ovsdb::DatabaseSchema>) -> TableUpdates {
    let mut framer = JsonFramer::new(1 << 30);
    let frame = framer.next_frame(&mut buf).unwrap().unwrap();
    decode_monitor_reply_frame(&frame, schema, UpdateFormat::V2).unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let schema = hardware_vtep();
    // Profiling aid: PROFILE_DUMP=file (written by SAVE_DUMP) decodes only that, 20 times.
    if let Some(path) = std::env::var_os("PROFILE_DUMP") {
        let dump = std::fs::read(path).unwrap();
        let (mut framing, mut whole, mut value) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..20 {
            trim();
            let t = thread_cpu();
            let v = black_box(serde_json::from_slice::<Value>(&dump).unwrap());
            value.push(thread_cpu() - t);
            drop(v);
            trim();
            let mut buf = BytesMut::from(&dump[..]);
            let t = thread_cpu();
            drop(black_box(JsonFramer::new(1 << 30).next_frame(&mut buf)));
            framing.push(thread_cpu() - t);
            let buf = BytesMut::from(&dump[..]);
            let t = thread_cpu();
            let updates = black_box(decode_ours(buf, &schema));
            whole.push(thread_cpu() - t);
            drop(updates);
        }
        let (whole, value) = (median(whole), median(value));
        println!(
            "framing {:.1} ms, framing + decode {:.1} ms, serde_json::Value {:.1} ms: {:.2}x (medians of 20)",
            median(framing) * 1e3,
            whole * 1e3,
            value * 1e3,
            value / whole
        );
        return;
    }
    println!("# ovsdb client benchmarks ({ROWS} rows, median of {RUNS} runs)\n");

    // --- loading rows into the real server --------------------------------
    let sw = RealSwitch::start(true, None).unwrap();
    let target: Target = sw.net_target.clone().unwrap().parse().unwrap();
    let (client, _events) = Client::start(
        connect(&target, None).await.unwrap(),
        SessionOptions {
            max_in_flight: 8,
            ..SessionOptions::default()
        },
    );
    let pid = sw.pid().unwrap();
    let rss_before = rss_kib(pid);
    let (cpu0, t0) = (cpu_secs(pid), Instant::now());
    let ours = load(&client, "Ucast_Macs_Local", ROWS, BATCH, 0).await;
    let ours_busy = (cpu_secs(pid) - cpu0) / t0.elapsed().as_secs_f64();
    let rss_after = rss_kib(pid);
    let (cpu0, t0) = (cpu_secs(pid), Instant::now());
    let theirs = load_with_ovsdb_client(sw.net_target.as_deref().unwrap(), ROWS, BATCH, 1 << 20);
    let theirs_busy = (cpu_secs(pid) - cpu0) / t0.elapsed().as_secs_f64();
    println!(
        "## Loading {ROWS} rows into the real ovsdb-server 3.1 ({BATCH} rows per transaction)\n"
    );
    println!("| client | rows/s | ratio | ovsdb-server CPU busy |\n|---|---|---|---|");
    println!(
        "| ours (pipelined, 8 in flight) | {ours:.0} | {:.2}x | {:.0}% |",
        ours / theirs,
        ours_busy * 100.0
    );
    println!(
        "| ovsdb-client transact (one process per batch) | {theirs:.0} | 1.00x | {:.0}% |\n",
        theirs_busy * 100.0
    );
    let real_per_row = (rss_after.saturating_sub(rss_before) * 1024) as f64 / ROWS as f64;

    // --- decoding the captured dump -----------------------------------------
    let dump = capture_dump(&sw.unix_target);
    if let Some(path) = std::env::var_os("SAVE_DUMP") {
        std::fs::write(path, &dump).unwrap();
    }
    let mb = dump.len() as f64 / 1e6;
    let mut ours_t = Vec::new();
    let mut value_t = Vec::new();
    let mut rows = 0;
    let mut ratios = Vec::new();
    for _ in 0..RUNS {
        // Each decoder starts from a trimmed heap: otherwise one's freed
        // garbage (a 100k-entry Value tree) slows the other's allocations.
        // Times are the decoding thread's CPU time (the block is synchronous,
        // so the task stays on its thread).
        trim();
        let t = thread_cpu();
        let v: Value = serde_json::from_slice(&dump).unwrap();
        let value = thread_cpu() - t;
        drop(v);
        trim();
        let buf = BytesMut::from(&dump[..]);
        let t = thread_cpu();
        let updates = decode_ours(buf, &schema);
        let ours = thread_cpu() - t;
        rows = updates.row_count();
        drop(updates);
        value_t.push(value);
        ours_t.push(ours);
        ratios.push(value / ours);
    }
    let (o, v) = (median(ours_t), median(value_t));
    let ratio = median(ratios.clone());
    println!(
        "## Decoding a {rows}-row monitor_cond reply captured from the real server ({mb:.1} MB)\n"
    );
    println!("| decoder | MB/s (thread CPU) | ratio |\n|---|---|---|");
    println!(
        "| ours (framer + schema-guided typed decode) | {:.0} | {ratio:.2}x |",
        mb / o,
    );
    println!(
        "| serde_json::from_slice::<Value> | {:.0} | 1.00x |\n",
        mb / v
    );
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!("Ratio per run (the median above): [{}]\n", shown.join(", "));

    // --- replica memory per row ---------------------------------------------
    let before = LIVE.load(Ordering::Relaxed);
    let updates = decode_ours(BytesMut::from(&dump[..]), &schema);
    let mut replica = Replica::new(schema.clone());
    drop(replica.apply(updates).unwrap());
    let after = LIVE.load(Ordering::Relaxed);
    let n = replica.row_count();
    let per_row = (after - before) as f64 / n as f64;
    println!("## Memory per row ({n} rows)\n");
    println!("| holder | bytes/row |\n|---|---|");
    println!("| our replica (live heap, counting allocator) | {per_row:.0} |");
    println!("| real ovsdb-server (RSS growth while loading) | {real_per_row:.0} |\n");
    drop(replica);
    client.close();
    tokio::time::sleep(Duration::from_millis(100)).await;
}
