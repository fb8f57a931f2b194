//! tor-proxy side by side with HAProxy (Debian's `haproxy`, TCP mode, equivalent config) in one
//! run on loopback: connection rate, memory per idle passthrough session, added latency
//! (p50/p99) on request/response traffic, and single-stream throughput.
//!
//! Run: `cargo bench -p tor-proxy --bench vs_haproxy` (env `BENCH_ROUNDS`, default 5;
//! `BENCH_ONLY=rate,latency,memory,throughput`; `HAPROXY`, default /usr/sbin/haproxy).
//! Every round starts fresh proxy processes. Rates alternate 0.5 s windows between the two
//! proxies; latency samples one round trip on each of direct / tor-proxy / haproxy in turn;
//! memory is measured on one proxy at a time; throughput alternates single transfers. So noise
//! from other work on the machine hits both proxies alike. Medians over rounds are printed with
//! ratios. Client load and backends run in this process, on the same cores as the proxies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const IDLE_SESSIONS: usize = 2000;
const LAT_ITERS: usize = 20_000;
const THROUGHPUT_BYTES: u64 = 1 << 30;
const RATE_SECS: u64 = 3;
const RATE_CONCURRENCY: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Ours,
    HaProxy,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Ours => "tor-proxy",
            Target::HaProxy => "haproxy",
        }
    }
}

struct Proxy {
    child: Child,
    addr: SocketAddr,
    _dir: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn raise_nofile() {
    let lim = libc::rlimit {
        rlim_cur: 65536,
        rlim_max: 65536,
    };
    // SAFETY: setrlimit with a valid struct; failure only leaves the old limit.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
            cur.rlim_cur = cur.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &cur);
        }
    }
}

fn start(target: Target, backend: SocketAddr, dir: &Path) -> Proxy {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = match target {
        Target::Ours => {
            let cfg = dir.join("tor-proxy.toml");
            std::fs::write(
                &cfg,
                format!(
                    r#"
[global]
log_format = "text"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "ovsdb"
bind = "{addr}"
[[backend]]
name = "a1"
address = "{backend}"
[health]
check = "tcp"
interval = "2s"
[timeouts]
connect = "2s"
idle = "1h"
"#
                ),
            )
            .unwrap();
            Command::new(env!("CARGO_BIN_EXE_tor-proxy"))
                .arg("--config")
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        }
        Target::HaProxy => {
            let cfg = dir.join("haproxy.cfg");
            std::fs::write(
                &cfg,
                format!(
                    r#"
global
    maxconn 9000
    log stdout format raw local0 info
defaults
    mode tcp
    log global
    option tcplog
    option tcpka
    # tor-proxy's default keepalive timing on both legs, as tor-proxy sets it.
    clitcpka-idle 10s
    clitcpka-intvl 5s
    clitcpka-cnt 3
    srvtcpka-idle 10s
    srvtcpka-intvl 5s
    srvtcpka-cnt 3
    timeout connect 2s
    timeout client 1h
    timeout server 1h
frontend ovsdb
    bind {addr}
    default_backend agents
backend agents
    balance leastconn
    server a1 {backend} check inter 2s
"#
                ),
            )
            .unwrap();
            let bin = std::env::var("HAPROXY").unwrap_or_else(|_| "/usr/sbin/haproxy".into());
            Command::new(bin)
                .args(["-db", "-f"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("haproxy not found: install Debian's haproxy")
        }
    };
    let t0 = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{} did not start",
            target.name()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    Proxy {
        child,
        addr,
        _dir: dir.to_path_buf(),
    }
}

/// CPU time (user + system) a process has used, in seconds (all its threads).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    f.iter().sum::<u64>() as f64 / hz
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ----- backends ------------------------------------------------------------------------------

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// One request byte, one response byte, then the server closes (a short session).
async fn short_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).await.is_ok() {
                    let _ = s.write_all(b"y").await;
                }
            });
        }
    });
    addr
}

/// Counts bytes until EOF, then answers the count.
async fn sink_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&total.to_be_bytes()).await;
            });
        }
    });
    addr
}

// ----- measurements --------------------------------------------------------------------------

/// Short sessions completed per second during `window`.
async fn conn_rate(addr: SocketAddr, window: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + window;
    let mut tasks = Vec::new();
    for _ in 0..RATE_CONCURRENCY {
        let (done, errors) = (done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline {
                let r: std::io::Result<()> = async {
                    let mut s = tokio::net::TcpStream::connect(addr).await?;
                    s.write_all(b"x").await?;
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).await?;
                    let mut rest = [0u8; 8];
                    while s.read(&mut rest).await? != 0 {}
                    Ok(())
                }
                .await;
                match r {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let e = errors.load(Ordering::Relaxed);
    if e > 0 {
        eprintln!("  ({e} failed sessions)");
    }
    done.load(Ordering::Relaxed) as f64 / window.as_secs_f64()
}

/// Round-trip times (µs) of 64-byte request/response on each address, sampled interleaved
/// (one round trip on each in turn, rotating the order) so that machine noise hits all alike.
fn latency_interleaved(addrs: &[SocketAddr]) -> Vec<Vec<f64>> {
    let mut conns: Vec<TcpStream> = addrs
        .iter()
        .map(|a| {
            let s = TcpStream::connect(a).unwrap();
            s.set_nodelay(true).unwrap();
            s
        })
        .collect();
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    let mut samples = vec![Vec::with_capacity(LAT_ITERS); addrs.len()];
    for i in 0..LAT_ITERS + 1000 {
        for k in 0..conns.len() {
            let j = (i + k) % conns.len();
            let t0 = Instant::now();
            conns[j].write_all(&msg).unwrap();
            conns[j].read_exact(&mut back).unwrap();
            if i >= 1000 {
                samples[j].push(t0.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    for v in samples.iter_mut() {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    samples
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

/// Gbit/s of one stream of THROUGHPUT_BYTES.
fn throughput(addr: SocketAddr) -> f64 {
    let mut s = TcpStream::connect(addr).unwrap();
    let chunk = vec![1u8; 64 * 1024];
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < THROUGHPUT_BYTES {
        s.write_all(&chunk).unwrap();
        sent += chunk.len() as u64;
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut count = [0u8; 8];
    s.read_exact(&mut count).unwrap();
    assert_eq!(u64::from_be_bytes(count), sent, "bytes lost");
    sent as f64 * 8.0 / t0.elapsed().as_secs_f64() / 1e9
}

/// Bytes of proxy RSS per idle passthrough session (each moved data once, then idles).
async fn idle_memory(addr: SocketAddr, pid: u32) -> f64 {
    async fn open(addr: SocketAddr) -> tokio::net::TcpStream {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"hello, agent!\n").await.unwrap();
        let mut b = [0u8; 14];
        s.read_exact(&mut b).await.unwrap();
        s
    }
    // Warm up pools and allocator arenas with a first batch, then measure a second one.
    let warm: Vec<_> = futures_join(addr, 200, open).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let held = futures_join(addr, IDLE_SESSIONS, open).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = rss_kib(pid);
    drop(held);
    (after.saturating_sub(before) * 1024) as f64 / IDLE_SESSIONS as f64
}

async fn futures_join<F, Fut>(addr: SocketAddr, n: usize, f: F) -> Vec<tokio::net::TcpStream>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = tokio::net::TcpStream> + Send + 'static,
{
    let mut out = Vec::with_capacity(n);
    // In batches of 100 so that neither listen backlog overflows.
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let handles: Vec<_> = chunk.iter().map(|_| tokio::spawn(f(addr))).collect();
        for h in handles {
            out.push(h.await.unwrap());
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if !v.len().is_multiple_of(2) {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn main() {
    // `cargo bench` passes `--bench`; ignore libtest-style arguments.
    raise_nofile();
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (echo, short, sink) = rt.block_on(async {
        (
            echo_server().await,
            short_server().await,
            sink_server().await,
        )
    });
    let order = |round: usize| {
        if round.is_multiple_of(2) {
            [Target::Ours, Target::HaProxy]
        } else {
            [Target::HaProxy, Target::Ours]
        }
    };
    let haproxy_version =
        Command::new(std::env::var("HAPROXY").unwrap_or_else(|_| "/usr/sbin/haproxy".into()))
            .arg("-v")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default();
    println!(
        "tor-proxy vs {haproxy_version}; {rounds} rounds, medians; loopback, {} CPUs",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    let mut rate = [Vec::new(), Vec::new()];
    let mut cpu_per_session = [Vec::new(), Vec::new()];
    // The benchmark's own CPU (clients and backend) per session through each proxy: a proxy
    // can cost its neighbours too (packets, wake-ups).
    let mut client_cpu_per_session = [Vec::new(), Vec::new()];
    let mut mem = [Vec::new(), Vec::new()];
    let mut p50 = [Vec::new(), Vec::new(), Vec::new()];
    let mut p99 = [Vec::new(), Vec::new(), Vec::new()];
    let mut gbps = [Vec::new(), Vec::new(), Vec::new()];
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let want = |m: &str| only.is_empty() || only.split(',').any(|o| o == m);
    let both = [Target::Ours, Target::HaProxy];
    for round in 0..rounds {
        if want("rate") {
            // Both proxies up; short windows alternate between them.
            let p: Vec<Proxy> = both.iter().map(|&t| start(t, short, dir.path())).collect();
            let mut total = [0.0f64; 2];
            let mut own_cpu = [0.0f64; 2];
            let cpu0 = [cpu_secs(p[0].child.id()), cpu_secs(p[1].child.id())];
            let window = Duration::from_millis(500);
            let windows = (RATE_SECS * 2) as usize;
            for w in 0..windows {
                for k in 0..2 {
                    let i = (w + k + round) % 2;
                    let own0 = cpu_secs(std::process::id());
                    total[i] += rt.block_on(conn_rate(p[i].addr, window)) / windows as f64;
                    own_cpu[i] += cpu_secs(std::process::id()) - own0;
                }
            }
            for i in 0..2 {
                let sessions = total[i] * (windows as f64) * window.as_secs_f64();
                cpu_per_session[i].push((cpu_secs(p[i].child.id()) - cpu0[i]) * 1e6 / sessions);
                client_cpu_per_session[i].push(own_cpu[i] * 1e6 / sessions);
            }
            rate[0].push(total[0]);
            rate[1].push(total[1]);
        }
        if want("latency") {
            let p: Vec<Proxy> = both.iter().map(|&t| start(t, echo, dir.path())).collect();
            let s = latency_interleaved(&[p[0].addr, p[1].addr, echo]);
            for i in 0..3 {
                p50[i].push(pct(&s[i], 0.50));
                p99[i].push(pct(&s[i], 0.99));
            }
        }
        if want("memory") {
            for target in order(round) {
                let p = start(target, echo, dir.path());
                mem[target as usize].push(rt.block_on(idle_memory(p.addr, p.child.id())));
            }
        }
        if want("throughput") {
            let p: Vec<Proxy> = both.iter().map(|&t| start(t, sink, dir.path())).collect();
            gbps[2].push(throughput(sink));
            for target in order(round) {
                gbps[target as usize].push(throughput(p[target as usize].addr));
            }
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }
    let m = |v: &Vec<f64>| median(v.clone());
    let (d50, d99) = (m(&p50[2]), m(&p99[2]));
    println!();
    println!("| metric | tor-proxy | haproxy | ratio (tor-proxy / haproxy) | target |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, ours: f64, hap: f64, unit: &str, target: &str| {
        println!(
            "| {name} | {ours:.1} {unit} | {hap:.1} {unit} | {:.2} | {target} |",
            ours / hap
        );
    };
    row(
        "connection rate (short sessions/s)",
        m(&rate[0]),
        m(&rate[1]),
        "/s",
        ">= 1.00",
    );
    row(
        "memory per idle passthrough session",
        m(&mem[0]),
        m(&mem[1]),
        "B",
        "<= 1.00",
    );
    // Added latency: each proxy's percentile minus the direct path's, per round.
    let added = |p: &[Vec<f64>; 3], i: usize| -> Vec<f64> {
        p[i].iter().zip(&p[2]).map(|(x, d)| x - d).collect()
    };
    row(
        "added latency p50 (64 B request/response)",
        m(&added(&p50, 0)),
        m(&added(&p50, 1)),
        "us",
        "<= 1.00",
    );
    row(
        "added latency p99",
        m(&added(&p99, 0)),
        m(&added(&p99, 1)),
        "us",
        "<= 1.00",
    );
    row(
        "throughput, one stream",
        m(&gbps[0]),
        m(&gbps[1]),
        "Gbit/s",
        ">= 0.80",
    );
    println!();
    println!(
        "direct (no proxy): RTT p50 {d50:.1} us, p99 {d99:.1} us, one stream {:.1} Gbit/s",
        m(&gbps[2])
    );
    println!("raw per round: rate {:?} / {:?}", rate[0], rate[1]);
    println!(
        "raw per round: CPU us/session {:?} / {:?}",
        cpu_per_session[0], cpu_per_session[1]
    );
    println!(
        "raw per round: clients + backend CPU us/session {:?} / {:?}",
        client_cpu_per_session[0], client_cpu_per_session[1]
    );
    println!("raw per round: mem B/session {:?} / {:?}", mem[0], mem[1]);
    println!(
        "raw per round: RTT p50 us {:?} / {:?} (direct {:?})",
        p50[0], p50[1], p50[2]
    );
    println!(
        "raw per round: RTT p99 us {:?} / {:?} (direct {:?})",
        p99[0], p99[1], p99[2]
    );
    println!(
        "raw per round: Gbit/s {:?} / {:?} (direct {:?})",
        gbps[0], gbps[1], gbps[2]
    );
}
