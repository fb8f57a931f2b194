//! Route-reflection throughput of the simulated control node.
//!
//! One agent publishes R EVPN MAC routes (publish + collection pairs, as fast as its session
//! takes them) into one VRF; N agents (the publisher included) are subscribed. We measure the
//! time from the first publish until every agent has received all R items, then the same for
//! R withdrawals (retracts). Everything runs in one process on loopback TCP, so agents and the
//! control node share the machine's cores.
//!
//! Run: `cargo bench -p testbed --bench control_node_routes` (env: BENCH_ROUTES, BENCH_AGENTS
//! as a comma list, e.g. `BENCH_ROUTES=20000 BENCH_AGENTS=1,8`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testbed::control_node::{start, ControlNodeConfig, Fabric};
use tf_xmpp::enet::EnetEntry;
use tf_xmpp::io::{client_open, ClientOptions};
use tf_xmpp::route::{encode_route_publish, encode_vrf_subscribe, CnMessage};
use tf_xmpp::session::{spawn_session, Incoming, SessionConfig, SessionHandle};
use tf_xmpp::{RouteDecoding, RouteStanza};

const VRF: &str = "default-domain:bench:blue:blue";

fn fabric(agents: usize) -> Fabric {
    let mut t = String::from(
        "[[virtual_network]]\nname = \"blue\"\nproject = \"bench\"\nnetwork_id = 5001\n",
    );
    for i in 0..agents {
        t.push_str(&format!("[[virtual_router]]\nname = \"agent-{i}\"\n"));
    }
    Fabric::from_toml(&t).expect("bench fabric")
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
    // Fields after the command: state is index 0, utime 11, stime 12 (clock ticks, 100 Hz).
    (ticks(11) + ticks(12)) / 100.0
}

struct Agent {
    tx: SessionHandle,
}

async fn agent(
    addr: std::net::SocketAddr,
    name: String,
    items: Arc<AtomicUsize>,
    retracts: Arc<AtomicUsize>,
) -> Agent {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).ok();
    let (stream, _) = client_open(tcp, &ClientOptions::new(name.clone()))
        .await
        .expect("open");
    // Decoding like the agent does: route messages straight to values (tf_xmpp::fast).
    let config = SessionConfig {
        route_decoding: RouteDecoding::CnMessages,
        ..SessionConfig::agent()
    };
    let (tx, mut rx, _task) = spawn_session(stream, config);
    tx.send(encode_vrf_subscribe(&name, VRF, 5001, 1))
        .expect("subscribe");
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            match ev {
                Incoming::Route(RouteStanza::Cn(CnMessage::RouteUpdate { items: i, .. })) => {
                    items.fetch_add(i.len(), Ordering::Relaxed);
                }
                Incoming::Route(RouteStanza::Cn(CnMessage::RouteRetract { routes, .. })) => {
                    retracts.fetch_add(routes.len(), Ordering::Relaxed);
                }
                Incoming::Route(_) => {}
                Incoming::Stanza(el) => {
                    if let Some(items_el) = el.child("event").and_then(|e| e.child("items")) {
                        items.fetch_add(items_el.children_named("item").count(), Ordering::Relaxed);
                        retracts.fetch_add(
                            items_el.children_named("retract").count(),
                            Ordering::Relaxed,
                        );
                    }
                }
                Incoming::Keepalive => {}
                Incoming::Closed(r) => {
                    eprintln!("bench agent closed: {r}");
                    return;
                }
            }
        }
    });
    Agent { tx }
}

async fn wait_for(counter: &AtomicUsize, want: usize, limit: Duration) -> bool {
    let t = Instant::now();
    while counter.load(Ordering::Relaxed) < want {
        if t.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

async fn run(n_agents: usize, routes: usize) {
    let cn = start(ControlNodeConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        fabric(n_agents),
    ))
    .await
    .expect("start control node");
    let items = Arc::new(AtomicUsize::new(0));
    let retracts = Arc::new(AtomicUsize::new(0));
    let mut agents = Vec::new();
    for i in 0..n_agents {
        agents.push(
            agent(
                cn.local_addr(),
                format!("agent-{i}"),
                items.clone(),
                retracts.clone(),
            )
            .await,
        );
    }
    let subscribed = Instant::now();
    while cn.counters().vrf_subscribes < n_agents as u64 {
        assert!(
            subscribed.elapsed() < Duration::from_secs(30),
            "agents did not subscribe"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let entries: Vec<EnetEntry> = (0..routes)
        .map(|i| {
            EnetEntry::tor_mac(
                5001,
                &format!(
                    "02:00:{:02x}:{:02x}:{:02x}:01",
                    i >> 16 & 0xff,
                    i >> 8 & 0xff,
                    i & 0xff
                ),
                "192.0.2.21",
                1,
            )
        })
        .collect();
    let publisher = &agents[0].tx;
    for (phase, associate, counter) in [("add", true, &items), ("withdraw", false, &retracts)] {
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        for (i, e) in entries.iter().enumerate() {
            publisher
                .send_wait(encode_route_publish("agent-0", VRF, e, associate, i as u64))
                .await
                .expect("publish");
        }
        let ok = wait_for(counter, routes * n_agents, Duration::from_secs(300)).await;
        let dt = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        assert!(
            ok,
            "{phase}: only {} of {} reflected",
            counter.load(Ordering::Relaxed),
            routes * n_agents
        );
        println!(
            "| {n_agents:>6} | {phase:<8} | {routes:>7} | {dt:>8.3} | {:>10.0} | {:>12.0} | {cpu:>7.2} |",
            routes as f64 / dt,
            (routes * n_agents) as f64 / dt,
        );
    }
    cn.shutdown();
}

fn main() {
    let routes: usize = std::env::var("BENCH_ROUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let agent_counts: Vec<usize> = std::env::var("BENCH_AGENTS")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|x| x.trim().parse().ok())
                .filter(|&n| n > 0)
                .collect()
        })
        .unwrap_or_else(|| vec![1, 4, 16]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| agents | phase    |  routes | seconds  |   routes/s | items sent/s | cpu s   |");
    println!("|-------:|----------|--------:|---------:|-----------:|-------------:|--------:|");
    for n in agent_counts {
        rt.block_on(run(n, routes));
    }
}
