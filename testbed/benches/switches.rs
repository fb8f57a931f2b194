//! Scale of the simulated switches: N switches with M MACs each in one
//! process (defaults 1,000 × 1,000), each with its own OVSDB server and
//! `ptcp:` listener, on the shared runtime.
//!
//! Phases, each with wall time, process CPU time (user + system) and RSS growth:
//! 1. build: start the switches (seeded database, listener, manager follower, FDB task);
//! 2. learn: bind two (port, VLAN)s per switch to two logical switches through the
//!    database, as a manager would, and wait until every switch has written its M
//!    `Ucast_Macs_Local` rows (plus an `unknown-dst` per logical switch); checked by
//!    counting the rows in every database;
//! 3. churn: on every switch move one MAC to the other logical switch and learn one new
//!    MAC (the in-process API a scenario uses), one switch after another;
//! 4. idle for 20 s: what probes and status write-back cost (peers answer echo).
//!
//! Reference, in the same run: the real `ovsdb-server` 3.1 (as a switch runs it, one
//! process per switch) loaded with the same M rows per switch, measured on a sample of
//! real servers (`BENCH_REFERENCE`, default 10; 0 skips) and scaled to N.
//!
//! Run: `cargo bench -p testbed --bench switches` (env BENCH_SWITCHES, BENCH_MACS,
//! BENCH_REFERENCE). Results: testbed/BENCHMARKS-switch.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ovsdb::testing::RealSwitch;
use testbed::switch::{vtep_db, Mac, SwitchFleet, SwitchSpec};

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Process CPU time (user + system) from /proc, in seconds.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident set size of a process in MiB.
fn rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

struct Phase {
    name: &'static str,
    wall: f64,
    cpu: f64,
    rss_growth: f64,
}

struct Meter {
    t: Instant,
    cpu: f64,
    rss: f64,
}

impl Meter {
    fn start() -> Meter {
        Meter {
            t: Instant::now(),
            cpu: cpu_seconds(),
            rss: rss_mib("self"),
        }
    }
    fn stop(self, name: &'static str) -> Phase {
        Phase {
            name,
            wall: self.t.elapsed().as_secs_f64(),
            cpu: cpu_seconds() - self.cpu,
            rss_growth: rss_mib("self") - self.rss,
        }
    }
}

/// One real ovsdb-server loaded with `macs` local MACs in one logical
/// switch; returns its RSS in MiB (idle, loaded).
fn reference_server(macs: u32, index: u32) -> Result<(f64, f64), String> {
    let sw = RealSwitch::start(false, None)?;
    let pid = sw.pid().ok_or("no pid")?.to_string();
    // Settle: the server's own startup allocations.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let idle = rss_mib(&pid);
    // In several transactions: one command-line argument is limited to 128 KiB.
    let first = serde_json::json!(["hardware_vtep",
        {"op": "insert", "table": "Logical_Switch", "uuid-name": "ls",
         "row": {"name": "ls0", "tunnel_key": 5000}},
        {"op": "insert", "table": "Physical_Locator", "uuid-name": "loc",
         "row": {"encapsulation_type": "vxlan_over_ipv4", "dst_ip": "10.128.0.1"}},
        {"op": "insert", "table": "Mcast_Macs_Local",
         "row": {"MAC": "unknown-dst", "logical_switch": ["named-uuid", "ls"],
                 "locator_set": ["named-uuid", "set"]}},
        {"op": "insert", "table": "Physical_Locator_Set", "uuid-name": "set",
         "row": {"locators": ["named-uuid", "loc"]}}]);
    let out = RealSwitch::ovsdb_client(&["transact", &sw.unix_target, &first.to_string()])?;
    let res: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let ls = res[0]["uuid"][1]
        .as_str()
        .ok_or("no logical switch uuid")?
        .to_string();
    let loc = res[1]["uuid"][1]
        .as_str()
        .ok_or("no locator uuid")?
        .to_string();
    let mut i = 0;
    while i < macs {
        let mut ops = vec![serde_json::json!("hardware_vtep")];
        for j in i..(i + 250).min(macs) {
            let mac = Mac::from_u64(0x0200_0000_0000 + (u64::from(index) << 16) + u64::from(j))
                .ok_or("MAC out of range")?;
            ops.push(
                serde_json::json!({"op": "insert", "table": "Ucast_Macs_Local",
                "row": {"MAC": mac.to_string(), "logical_switch": ["uuid", ls],
                        "locator": ["uuid", loc]}}),
            );
        }
        i = (i + 250).min(macs);
        let out = RealSwitch::ovsdb_client(&[
            "transact",
            &sw.unix_target,
            &serde_json::Value::Array(ops).to_string(),
        ])?;
        if out.contains("\"error\"") {
            return Err(format!(
                "reference load failed: {}",
                &out[..out.len().min(300)]
            ));
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    Ok((idle, rss_mib(&pid)))
}

/// Counts what the monitoring peers received (echo probes aside).
static RECEIVED: AtomicU64 = AtomicU64::new(0);
static SESSIONS: AtomicU64 = AtomicU64::new(0);
static ECHOES: AtomicU64 = AtomicU64::new(0);

const MONITOR: &[u8] =
    br#"{"id":1,"method":"monitor","params":["hardware_vtep",null,{"Ucast_Macs_Local":{},"Mcast_Macs_Local":{},"Physical_Port":{}}]}"#;

/// A manager-side peer: optionally monitors, answers the switch's echo
/// probes (as a manager must, or the switch drops the session), and
/// discards everything else.
async fn peer(mut s: tokio::net::TcpStream, monitor: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const ECHO: &str = r#""method":"echo""#;
    const REPLY: &[u8] = br#"{"id":"echo","result":[],"error":null}"#;
    SESSIONS.fetch_add(1, Ordering::Relaxed);
    if monitor && s.write_all(MONITOR).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    // The end of the previous read, in case a request straddles two reads.
    let mut carry = String::new();
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
        carry.push_str(&String::from_utf8_lossy(&buf[..n]));
        let echoes = carry.matches(ECHO).count();
        // Only updates count as traffic: probes never stop.
        let probe_bytes = echoes * br#"{"id":"echo","method":"echo","params":[]}"#.len();
        RECEIVED.fetch_add(n.saturating_sub(probe_bytes) as u64, Ordering::Relaxed);
        for _ in 0..echoes {
            if s.write_all(REPLY).await.is_err() {
                return;
            }
            ECHOES.fetch_add(1, Ordering::Relaxed);
        }
        // Keep a tail shorter than the pattern, so nothing counts twice.
        let keep = carry.len().saturating_sub(ECHO.len() - 1);
        let cut = (keep..carry.len())
            .find(|i| carry.is_char_boundary(*i))
            .unwrap_or(carry.len());
        carry.drain(..cut);
    }
}

/// Waits until the peers have received nothing new for `quiet`; returns
/// when the last bytes arrived (within 10 ms).
async fn quiesce(quiet: std::time::Duration) -> Instant {
    let mut last = RECEIVED.load(Ordering::Relaxed);
    let mut changed = Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let now = RECEIVED.load(Ordering::Relaxed);
        if now != last {
            last = now;
            changed = Instant::now();
        } else if changed.elapsed() >= quiet {
            return changed;
        }
    }
}

fn main() {
    let n = env("BENCH_SWITCHES", 1000);
    let m = env("BENCH_MACS", 1000);
    let sample = env("BENCH_REFERENCE", 10);
    let dial_out = std::env::var("BENCH_MODE").is_ok_and(|v| v == "manager");
    let monitor = env("BENCH_MONITOR", 0) == 1;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The manager side runs on its own thread, as an agent in another
    // process would: starved peers would trip the switches' probes.
    let peers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("peers")
        .enable_all()
        .build()
        .expect("peer runtime");
    let peer_rt = peers.handle().clone();
    let base_rss = rss_mib("self");
    let mut phases = Vec::new();
    let quiet = std::time::Duration::from_millis(500);
    let rows = rt.block_on(async {
        // The manager the switches dial in manager mode.
        let manager_addr = peer_rt
            .spawn(async move {
                let manager = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("manager listener");
                let addr = manager.local_addr().expect("manager address");
                if dial_out {
                    tokio::spawn(async move {
                        while let Ok((s, _)) = manager.accept().await {
                            tokio::spawn(peer(s, monitor));
                        }
                    });
                }
                addr
            })
            .await
            .expect("manager task");
        let meter = Meter::start();
        let started = Instant::now();
        let listen: ovsdb::transport::Target = "ptcp:0:127.0.0.1".parse().expect("target");
        let target: ovsdb::transport::Target =
            format!("tcp:{manager_addr}").parse().expect("target");
        let specs = (0..n).map(|i| {
            let s = SwitchSpec::numbered("bench-sw", i)
                .ports(["p0", "p1"])
                .macs(m);
            if dial_out {
                s.manager(target.clone())
            } else {
                s.listen(listen.clone())
            }
        });
        let fleet = SwitchFleet::start(specs).await.expect("switches start");
        if dial_out {
            while SESSIONS.load(Ordering::Relaxed) < u64::from(n) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        } else if monitor {
            for sw in fleet.iter() {
                let Some(ovsdb::transport::Target::PTcp(addr)) = sw.listen_targets().first() else {
                    panic!("no ptcp listener");
                };
                let addr = *addr;
                peer_rt.spawn(async move {
                    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
                    peer(s, true).await
                });
            }
            while SESSIONS.load(Ordering::Relaxed) < u64::from(n) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        let end = if monitor {
            quiesce(quiet).await
        } else {
            Instant::now()
        };
        let mut build = meter.stop("build (and connect)");
        build.wall = end.duration_since(started).as_secs_f64();
        phases.push(build);

        let meter = Meter::start();
        let started = Instant::now();
        let received = RECEIVED.load(Ordering::Relaxed);
        for sw in fleet.iter() {
            vtep_db::bind(sw.db(), sw.physical_switch(), "p0", 100, "ls-a", Some(5001))
                .expect("bind p0");
            vtep_db::bind(sw.db(), sw.physical_switch(), "p1", 200, "ls-b", Some(5002))
                .expect("bind p1");
        }
        fleet.sync().await.expect("sync");
        let end = if monitor {
            quiesce(quiet).await
        } else {
            Instant::now()
        };
        let mut learn = meter.stop("learn");
        learn.wall = end.duration_since(started).as_secs_f64();
        phases.push(learn);
        let sent = RECEIVED.load(Ordering::Relaxed) - received;

        let mut rows = 0usize;
        let mut mcast = 0usize;
        for sw in fleet.iter() {
            let [u, mc] = vtep_db::row_counts(sw.db(), ["Ucast_Macs_Local", "Mcast_Macs_Local"]);
            rows += u;
            mcast += mc;
        }
        assert_eq!(rows, n as usize * m as usize, "every MAC learnt");
        assert_eq!(mcast, 2 * n as usize, "one unknown-dst per logical switch");
        if monitor {
            println!(
                "monitoring peers received {:.1} MiB of updates while learning",
                sent as f64 / 1048576.0
            );
            assert!(
                sent as usize > rows * 50,
                "updates for every row reached the peers"
            );
        }

        let meter = Meter::start();
        for (i, sw) in fleet.iter().enumerate() {
            if m > 0 {
                let first = sw.population_mac(0).expect("population");
                sw.move_mac(first, "p1", 200).await.expect("move");
            }
            let extra = Mac::from_u64(0x0600_0000_0000 + i as u64).expect("mac");
            sw.learn(extra, "p0", 100).await.expect("learn");
        }
        phases.push(meter.stop("churn (1 move + 1 learn per switch)"));

        // Idle: inactivity probes (5 s) on every session and, with managers,
        // the status write-back every 5 s.
        let echoes = ECHOES.load(Ordering::Relaxed);
        let meter = Meter::start();
        tokio::time::sleep(std::time::Duration::from_secs(20)).await;
        phases.push(meter.stop("idle for 20 s"));
        let connected = SESSIONS.load(Ordering::Relaxed);
        println!(
            "sessions: {connected}, echo probes answered while idle: {}",
            ECHOES.load(Ordering::Relaxed) - echoes
        );
        let stats = fleet.stats().await.expect("stats");
        assert_eq!(stats.local_rows, rows + n as usize);
        fleet.shutdown().await;
        rows
    });
    println!(
        "mode: {}, {}",
        if dial_out {
            "each switch dials the manager (tcp:, one session each)"
        } else {
            "each switch listens on its own ptcp: port"
        },
        if monitor {
            "a peer monitors Ucast_Macs_Local, Mcast_Macs_Local and Physical_Port on every switch"
        } else {
            "no monitoring peer"
        }
    );
    let total_rss = rss_mib("self") - base_rss;

    println!("## {n} switches × {m} MACs in one process ({rows} Ucast_Macs_Local rows)\n");
    println!("| phase | wall (s) | CPU (s) | RSS growth (MiB) |");
    println!("|---|---:|---:|---:|");
    for p in &phases {
        println!(
            "| {} | {:.2} | {:.2} | {:.1} |",
            p.name, p.wall, p.cpu, p.rss_growth
        );
    }
    let build = phases.first().map(|p| p.rss_growth).unwrap_or(f64::NAN);
    let learn = phases.get(1).map(|p| p.rss_growth).unwrap_or(f64::NAN);
    println!(
        "\nper switch before learning: {:.1} KiB; per learnt MAC: {:.0} B; process RSS at the end (after shutdown): +{:.1} MiB",
        build * 1024.0 / f64::from(n.max(1)),
        learn * 1024.0 * 1024.0 / (f64::from(n.max(1)) * f64::from(m.max(1))),
        total_rss
    );

    if sample > 0 {
        let mut idle = 0.0;
        let mut loaded = 0.0;
        for i in 0..sample {
            match reference_server(m, i) {
                Ok((a, b)) => {
                    idle += a;
                    loaded += b;
                }
                Err(e) => {
                    eprintln!("reference: {e}");
                    std::process::exit(1);
                }
            }
        }
        let k = f64::from(sample);
        println!(
            "\nReference: real ovsdb-server 3.1, one process per switch, sample of {sample}: \
             {:.1} MiB RSS idle, {:.1} MiB with {m} local MACs; × {n} switches ≈ {:.0} MiB",
            idle / k,
            loaded / k,
            loaded / k * f64::from(n)
        );
    }
}
