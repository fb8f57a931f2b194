//! VRRP proxy failover time (issue 6): from the moment the master proxy
//! dies until every switch has converged again, with N switches, on the
//! lab of `e2e::netns::pair` (two proxy nodes with real keepalived running
//! the shipped sample, two agent processes, the control node, simulated
//! switches plus one real `ovsdb-server`, all dialing the VIP over TLS).
//!
//! Two failures, each run several times (alternating which node is master):
//! - `proxy killed`: the master's `tor-proxy` is SIGKILLed, its keepalived
//!   lives on; the track script fails `fall` times, the node enters FAULT
//!   and sends a priority-0 advert, the backup takes over after its skew.
//!   The switches see their sessions close at once and redial.
//! - `node lost`: the master's proxy and keepalived are SIGKILLed and its
//!   link goes down at once (a power cut): the backup takes over after the
//!   VRRP master-down interval (3 × advert_int + skew); the switches see
//!   nothing until their own inactivity probe or a reset from the new master.
//!
//! Converged = every switch's session is back, through the new master, on
//! the agent that held it before (checked: a switch moved is an error),
//! that agent's takeover has converged (switch programmed, MACs exported),
//! and the control node has every MAC route at live preference from it.
//!
//! Run as root, with the release binaries built first:
//! `cargo build --release --workspace --bins && cargo bench -p e2e --bench vrrp_failover`
//! Environment: `VRRP_BENCH_SWITCHES` (default `20,100`: simulated switches,
//! one real switch is added), `VRRP_BENCH_RUNS` (default 5 per failure),
//! `VRRP_BENCH_MAX_BACKOFF_MS` (default `default`: the switches' OVS
//! redial backoff; e.g. `default,1000` adds a lab whose switches redial
//! every second at most), `VRRP_BENCH_SESSION_AGE_S` (default 12: every
//! switch's session is at least this old before a kill, see
//! [`wait_session_age`]; 0 runs the failovers back to back).

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::netns::pair::{
    keepalived_value, Deadline, PairLab, PairOptions, Snapshot, PRIORITIES, PROXIES,
};
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Failure {
    ProxyKilled,
    NodeLost,
}

impl Failure {
    fn label(self) -> &'static str {
        match self {
            Failure::ProxyKilled => "proxy killed",
            Failure::NodeLost => "node lost",
        }
    }
}

/// One failover, every time from the kill.
struct Run {
    from: usize,
    vip: Duration,
    /// Per switch: its new session opened at its agent.
    back: Vec<Duration>,
    /// Per switch: its agent's takeover converged.
    converged: Vec<Duration>,
    /// The control node had every MAC route live from the right agent (polled).
    routes: Duration,
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn min_max(v: &[Duration]) -> String {
    let min = v.iter().min().copied().unwrap_or_default();
    let max = v.iter().max().copied().unwrap_or_default();
    format!("{}–{}", secs(min), secs(max))
}

/// Every switch held by exactly one agent through `proxy`, converged.
async fn wait_placed(lab: &PairLab, proxy: usize) -> BTreeMap<String, usize> {
    let d = Deadline::new("every switch placed on one agent");
    loop {
        if let Ok(s) = lab.snapshot().await {
            let placed: BTreeMap<String, usize> = lab
                .switches
                .iter()
                .filter_map(|sw| {
                    let h = s.holders(&sw.name);
                    (h.len() == 1 && s.settled_on(&sw.name, h[0], proxy))
                        .then(|| (sw.name.clone(), h[0]))
                })
                .collect();
            if placed.len() == lab.switches.len() {
                return placed;
            }
        }
        d.tick(Duration::from_millis(200), || lab.logs()).await;
    }
}

/// When each switch's session opened and its takeover converged, relative
/// to `t0`, from the agents' own ages (precise beyond the polling period).
fn instants(
    s: &Snapshot,
    placement: &BTreeMap<String, usize>,
    t0: Instant,
) -> (Vec<Duration>, Vec<Duration>) {
    let since = |age: Option<f64>| {
        let at = s.at - Duration::from_secs_f64(age.unwrap_or(0.0).max(0.0));
        at.saturating_duration_since(t0)
    };
    placement
        .iter()
        .filter_map(|(n, &a)| s.switch(a, n))
        .map(|sw| (since(sw.session_age_s), since(sw.last_takeover_ago_s)))
        .unzip()
}

/// Waits until every switch's session is at least `age` old. A switch
/// running OVS's reconnect logic resets its redial backoff to 1 s only when
/// the session it loses carried traffic at least `backoff` after it opened
/// (the agent's answers to the switch's 5 s inactivity probe do): failovers
/// back to back would otherwise measure a backoff grown by the previous one
/// (2, 4, 8 s), which a switch whose session has lived a while never has.
async fn wait_session_age(lab: &PairLab, placement: &BTreeMap<String, usize>, age: Duration) {
    let d = Deadline::new(format!("every session {age:?} old"));
    loop {
        if let Ok(s) = lab.snapshot().await {
            let youngest = placement
                .iter()
                .filter_map(|(n, &a)| s.switch(a, n).and_then(|sw| sw.session_age_s))
                .fold(f64::INFINITY, f64::min);
            if youngest.is_finite() && youngest >= age.as_secs_f64() {
                return;
            }
        }
        d.tick(Duration::from_millis(250), || lab.logs()).await;
    }
}

async fn failover(
    lab: &mut PairLab,
    failure: Failure,
    placement: &BTreeMap<String, usize>,
    session_age: Duration,
) -> Run {
    let holders = lab.vip_holders();
    assert_eq!(
        holders.len(),
        1,
        "one master before the failure: {holders:?}"
    );
    let (master, backup) = (holders[0], 1 - holders[0]);
    let total = lab.switches.len();
    lab.wait_keepalived_state(backup, "BACKUP").await;
    lab.wait_proxy("ready to take over", backup, |s| {
        s.affinity_entries == total
            && s.backends.iter().filter(|b| b.usable).count() == 2
            && s.peers.iter().all(|p| p.state == "up" && p.incoming)
    })
    .await;
    wait_session_age(lab, placement, session_age).await;
    let before = lab.snapshot().await.expect("snapshot");

    let t0 = Instant::now();
    match failure {
        Failure::ProxyKilled => lab.kill_proxy(master),
        Failure::NodeLost => lab.kill_node(master),
    }
    let mut vip = None;
    let mut routes = None;
    let d = Deadline::new(format!(
        "{}: every switch back on its agent through {}",
        failure.label(),
        PROXIES[backup]
    ));
    let done = loop {
        if vip.is_none() && lab.vip_holders() == [backup] {
            vip = Some(t0.elapsed());
        }
        let snap = lab.snapshot().await.ok();
        if let Some(s) = &snap {
            for (n, &a) in placement {
                assert_eq!(
                    s.takeovers(1 - a, n),
                    before.takeovers(1 - a, n),
                    "{n} moved to the other agent:\n{}",
                    s.summary([n])
                );
            }
            let back = placement.iter().all(|(n, &a)| s.settled_on(n, a, backup));
            // The MACs never leave the control node (HA-stale shadows); live
            // preference from the right agent counts, once the switches are back.
            if back && routes.is_none() && lab.routes_on(placement) {
                routes = Some(t0.elapsed());
            }
            if back && vip.is_some() && routes.is_some() && lab.unknown_dst_on(placement) {
                break s.clone();
            }
        }
        d.tick(Duration::from_millis(50), || {
            format!(
                "VIP on {:?}\n{}\n{}",
                lab.vip_holders(),
                snap.map(|s| s.summary(placement.keys()))
                    .unwrap_or_default(),
                lab.logs()
            )
        })
        .await;
    };
    let (back, converged) = instants(&done, placement, t0);
    for (n, &a) in placement {
        assert_eq!(
            done.takeovers(a, n),
            before.takeovers(a, n) + 1,
            "{n}: one takeover on its agent"
        );
    }
    let run = Run {
        from: master,
        vip: vip.unwrap_or_default(),
        back,
        converged,
        routes: routes.unwrap_or_default(),
    };

    // Bring the failed node back as the backup for the next run.
    match failure {
        Failure::ProxyKilled => lab.start_proxy(master),
        Failure::NodeLost => lab.restore_node(master).await,
    }
    lab.wait_keepalived_state(master, "BACKUP").await;
    run
}

struct Row {
    failure: Failure,
    switches: usize,
    max_backoff: Option<Duration>,
    runs: Vec<Run>,
}

async fn bench(
    sim: usize,
    runs: usize,
    max_backoff: Option<Duration>,
    session_age: Duration,
) -> Vec<Row> {
    let mut lab = PairLab::start(PairOptions {
        sim_switches: sim,
        real_switch: true,
        macs: 4,
        max_backoff,
    })
    .await;
    let t = std::time::Instant::now();
    for k in 0..lab.switches.len() {
        lab.start_switch(k).await;
    }
    let placement = wait_placed(&lab, 0).await;
    lab.learn_real_macs().await;
    let d = Deadline::new("every switch programmed and every MAC route live");
    while !(lab.unknown_dst_on(&placement) && lab.routes_on(&placement)) {
        d.tick(Duration::from_millis(200), || lab.logs()).await;
    }
    let per_agent = |a: usize| placement.values().filter(|&&x| x == a).count();
    eprintln!(
        "{} switches up in {:.1}s: {} on agent-1, {} on agent-2",
        lab.switches.len(),
        t.elapsed().as_secs_f64(),
        per_agent(0),
        per_agent(1)
    );
    let mut rows = Vec::new();
    for failure in [Failure::ProxyKilled, Failure::NodeLost] {
        let mut row = Row {
            failure,
            switches: lab.switches.len(),
            max_backoff,
            runs: Vec::new(),
        };
        for i in 0..runs {
            let r = failover(&mut lab, failure, &placement, session_age).await;
            eprintln!(
                "{} switches, max_backoff {}: {} #{i} ({} killed): VIP {}s, sessions back {}s, takeovers converged {}s, routes {}s",
                lab.switches.len(),
                backoff_label(max_backoff),
                failure.label(),
                PROXIES[r.from],
                secs(r.vip),
                min_max(&r.back),
                min_max(&r.converged),
                secs(r.routes)
            );
            row.runs.push(r);
        }
        rows.push(row);
    }
    rows
}

fn settings() -> String {
    let conf = e2e::netns::pair::KEEPALIVED_SAMPLE;
    let get = |k: &str| keepalived_value(conf, k).unwrap_or_else(|| "-".into());
    let advert: f64 = get("advert_int").parse().unwrap_or(1.0);
    let interval: f64 = get("interval").parse().unwrap_or(1.0);
    let fall: f64 = get("fall").parse().unwrap_or(1.0);
    let skew = |p: u32| (256.0 - f64::from(p)) / 256.0 * advert;
    let mut out = format!(
        "keepalived (proxy/deploy/keepalived.conf): VRRP version {}, advert_int {}, nopreempt, \
         priorities {} / {}; track script `tor-proxy check` interval {}, fall {}, rise {}, timeout {}\n",
        keepalived_value(conf, "vrrp_version").unwrap_or_else(|| "2".into()),
        get("advert_int"),
        PRIORITIES[0],
        PRIORITIES[1],
        get("interval"),
        get("fall"),
        get("rise"),
        get("timeout"),
    );
    for i in 0..2 {
        let taker = PRIORITIES[1 - i];
        out.push_str(&format!(
            "bound when {} fails ({} takes over, skew {:.2}s): proxy killed {:.2}s \
             (fall x interval + skew), node lost {:.2}s (3 x advert_int + skew)\n",
            PROXIES[i],
            PROXIES[1 - i],
            skew(taker),
            fall * interval + skew(taker),
            3.0 * advert + skew(taker),
        ));
    }
    out
}

fn backoff_label(b: Option<Duration>) -> String {
    b.map_or_else(
        || "OVS default (1, 2, 4, 8 s)".into(),
        |b| format!("{} ms", b.as_millis()),
    )
}

fn main() {
    let sizes: Vec<usize> = std::env::var("VRRP_BENCH_SWITCHES")
        .unwrap_or_else(|_| "20,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = std::env::var("VRRP_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // `Manager.max_backoff` of the switches, in ms; `default` leaves OVS's.
    let backoffs: Vec<Option<Duration>> = std::env::var("VRRP_BENCH_MAX_BACKOFF_MS")
        .unwrap_or_else(|_| "default".into())
        .split(',')
        .map(|s| s.trim().parse().ok().map(Duration::from_millis))
        .collect();
    let session_age = Duration::from_secs(
        std::env::var("VRRP_BENCH_SESSION_AGE_S")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(12),
    );
    let mut rows = Vec::new();
    for &b in &backoffs {
        for &n in &sizes {
            rows.extend(rt.block_on(bench(n, runs, b, session_age)));
        }
    }
    println!("\n{}", settings());
    println!(
        "every session at least {}s old before each kill (VRRP_BENCH_SESSION_AGE_S)\n",
        session_age.as_secs()
    );
    println!(
        "| failure | switches | switch max_backoff | runs | VIP moved | first switch back | median switch back | last switch back | all takeovers converged | control node complete |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        let pick = |f: &dyn Fn(&Run) -> Duration| {
            let v: Vec<Duration> = row.runs.iter().map(f).collect();
            format!("{} ({})", secs(median(v.clone())), min_max(&v))
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.failure.label(),
            row.switches,
            backoff_label(row.max_backoff),
            row.runs.len(),
            pick(&|r| r.vip),
            pick(&|r| r.back.iter().min().copied().unwrap_or_default()),
            pick(&|r| median(r.back.clone())),
            pick(&|r| r.back.iter().max().copied().unwrap_or_default()),
            pick(&|r| r.converged.iter().max().copied().unwrap_or_default()),
            pick(&|r| r.routes),
        );
    }
    println!("\nseconds from the kill: median of the runs (min–max)");
}
