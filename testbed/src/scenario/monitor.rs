//! Watches the running topology while faults happen: one poller per agent (admin `status`)
//! and one for the proxy (`show`) keep their latest answer, and a sampler turns consecutive
//! samples into timeline events (proxy marked a backend down, a switch lost or got its
//! session, a takeover finished, two agents active…) and chart points. Times come from the
//! source when it has one (the proxy's `last_change_unix_ms`, an agent's session age and
//! time since its last takeover); otherwise they are the sample's time (± `sample_ms`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jsonrpsee::http_client::HttpClient;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tor_agent::admin::status::AgentStatus;

use super::clock::unix_ms;
use super::invariants::{AgentSwitchView, AgentView};
use super::observer::{ObservedCounts, Observer};
use super::svg::Point;
use super::timeline::{Event, EventKind};
use crate::switch::SimSwitchHandle;

/// An agent's latest answer (`None`: error or timeout, e.g. crashed or hung).
#[derive(Debug, Clone, Default)]
pub struct AgentPoll {
    pub at_ms: u64,
    pub status: Option<AgentStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendPoll {
    pub name: String,
    pub health_up: bool,
    pub last_change_unix_ms: u64,
    pub current: u32,
}

#[derive(Debug, Clone, Default)]
pub struct ProxyPoll {
    pub at_ms: u64,
    pub backends: Option<Vec<BackendPoll>>,
}

/// Simulated switches by name, shared with the bed (a restarted switch gets a new handle).
pub type SimSwitches = Arc<Mutex<BTreeMap<String, Option<SimSwitchHandle>>>>;

/// Observers per control node, shared with the bed.
pub type Observers = Arc<Vec<Observer>>;

pub fn agent_client(addr: SocketAddr) -> Result<HttpClient, String> {
    tor_agent::admin::client(addr, None)
}

pub fn proxy_client(addr: SocketAddr) -> Result<HttpClient, String> {
    tor_proxy::admin::client(addr, None)
}

/// Asks an agent for its status, within `timeout`.
pub async fn agent_status(c: &HttpClient, timeout: Duration) -> Option<AgentStatus> {
    match tokio::time::timeout(timeout, tor_agent::admin::api::AdminApiClient::status(c)).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    }
}

pub async fn proxy_backends(c: &HttpClient, timeout: Duration) -> Option<Vec<BackendPoll>> {
    match tokio::time::timeout(timeout, tor_proxy::admin::api::AdminApiClient::show(c)).await {
        Ok(Ok(show)) => Some(
            show.backends
                .into_iter()
                .map(|b| BackendPoll {
                    name: b.name,
                    health_up: b.health_up,
                    last_change_unix_ms: b.last_change_unix_ms,
                    current: b.current,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// The invariant checks' view of an agent's answer.
pub fn agent_view(name: &str, tsn_ip: &str, status: Option<&AgentStatus>) -> AgentView {
    match status {
        None => AgentView {
            name: name.to_string(),
            tsn_ip: tsn_ip.to_string(),
            reachable: false,
            ..AgentView::default()
        },
        Some(s) => AgentView {
            name: name.to_string(),
            tsn_ip: tsn_ip.to_string(),
            reachable: true,
            switches: s
                .switches
                .iter()
                .map(|w| {
                    (
                        w.name.clone(),
                        AgentSwitchView {
                            active: w.active,
                            state: w.state.clone(),
                            txn_in_flight: w.txn_in_flight,
                            stale_rows_waiting: w.stale_rows_waiting,
                        },
                    )
                })
                .collect(),
            cn_up: s.control_nodes.iter().map(|c| c.up).collect(),
        },
    }
}

/// One moment of the whole topology.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub at_ms: u64,
    pub agents: Vec<(String, AgentPoll)>,
    pub proxy: ProxyPoll,
    /// Simulated switch → manager connected.
    pub connected: BTreeMap<String, bool>,
    pub observed: Vec<ObservedCounts>,
}

impl Sample {
    /// Switches each reachable agent reports active.
    pub fn held(&self) -> Vec<(String, Option<usize>)> {
        self.agents
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    p.status
                        .as_ref()
                        .map(|s| s.switches.iter().filter(|w| w.active).count()),
                )
            })
            .collect()
    }
}

/// What a window accumulates.
#[derive(Default)]
struct WindowAcc {
    start_ms: u64,
    events: Vec<Event>,
    points: Vec<Point>,
    session_open: HashMap<(String, String), u64>,
    takeovers: HashMap<(String, String), u64>,
    pending_live: BTreeMap<String, String>,
    dual_since: BTreeMap<String, (u64, String)>,
}

#[derive(Default)]
struct Shared {
    last: Option<Sample>,
    window: Option<WindowAcc>,
}

/// The events and chart points of a closed window.
pub struct WindowTrace {
    pub events: Vec<Event>,
    pub points: Vec<Point>,
}

pub struct Monitor {
    shared: Arc<Mutex<Shared>>,
    tasks: JoinSet<()>,
    agents: Vec<watch::Receiver<AgentPoll>>,
}

/// A session opened more than this far from the one known is a new session.
const NEW_SESSION_SLACK_MS: u64 = 150;

impl Monitor {
    /// Starts the pollers and the sampler on `rt` (give it a runtime of its own: the
    /// times it records are only as good as its promptness).
    pub fn start(
        rt: &tokio::runtime::Handle,
        agents: Vec<(String, HttpClient)>,
        proxy: HttpClient,
        sims: SimSwitches,
        observers: Observers,
        sample: Duration,
    ) -> Monitor {
        let mut tasks = JoinSet::new();
        let timeout = (sample * 8).clamp(Duration::from_millis(800), Duration::from_secs(3));
        let mut agent_rx = Vec::new();
        let mut names = Vec::new();
        for (name, client) in agents {
            let (tx, rx) = watch::channel(AgentPoll::default());
            agent_rx.push(rx);
            names.push(name);
            tasks.spawn_on(
                async move {
                    loop {
                        let status = agent_status(&client, timeout).await;
                        let _ = tx.send(AgentPoll {
                            at_ms: unix_ms(),
                            status,
                        });
                        tokio::time::sleep(sample).await;
                    }
                },
                rt,
            );
        }
        let (ptx, prx) = watch::channel(ProxyPoll::default());
        tasks.spawn_on(
            async move {
                loop {
                    let backends = proxy_backends(&proxy, timeout).await;
                    let _ = ptx.send(ProxyPoll {
                        at_ms: unix_ms(),
                        backends,
                    });
                    tokio::time::sleep(sample).await;
                }
            },
            rt,
        );
        let shared = Arc::new(Mutex::new(Shared::default()));
        {
            let shared = shared.clone();
            let agent_rx = agent_rx.clone();
            tasks.spawn_on(
                async move {
                    let mut tick = tokio::time::interval(sample);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        let s = Sample {
                            at_ms: unix_ms(),
                            agents: names
                                .iter()
                                .cloned()
                                .zip(agent_rx.iter().map(|r| r.borrow().clone()))
                                .collect(),
                            proxy: prx.borrow().clone(),
                            connected: connected(&sims),
                            observed: observers.iter().map(|o| o.counts()).collect(),
                        };
                        let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
                        let prev = sh.last.take();
                        if let (Some(w), Some(prev)) = (sh.window.as_mut(), prev.as_ref()) {
                            observe(w, prev, &s);
                        }
                        sh.last = Some(s);
                    }
                },
                rt,
            );
        }
        Monitor {
            shared,
            tasks,
            agents: agent_rx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn last(&self) -> Option<Sample> {
        self.lock().last.clone()
    }

    /// Waits for a sample taken after now (so it reflects what just happened).
    pub async fn fresh(&self) -> Option<Sample> {
        let now = unix_ms();
        for _ in 0..200 {
            if let Some(s) = self.last() {
                if s.at_ms > now && s.agents.iter().all(|(_, p)| p.at_ms > now) {
                    return Some(s);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.last()
    }

    /// The latest poll of every agent.
    pub fn agent_polls(&self) -> Vec<AgentPoll> {
        self.agents.iter().map(|r| r.borrow().clone()).collect()
    }

    /// Opens a window at `start_ms`: what is true now is the baseline, changes are events.
    pub fn open(&self, start_ms: u64) {
        let mut sh = self.lock();
        let mut w = WindowAcc {
            start_ms,
            ..WindowAcc::default()
        };
        if let Some(s) = sh.last.as_ref() {
            for (name, p) in &s.agents {
                let Some(st) = p.status.as_ref() else {
                    continue;
                };
                for sw in &st.switches {
                    let key = (name.clone(), sw.name.clone());
                    w.takeovers.insert(key.clone(), sw.takeovers);
                    if let (true, Some(age)) = (sw.active, sw.session_age_s) {
                        w.session_open
                            .insert(key, p.at_ms.saturating_sub((age * 1000.0) as u64));
                    }
                }
            }
            w.points.push(point(s, start_ms));
        }
        sh.window = Some(w);
    }

    /// Adds an event (the runner's own: faults, convergence).
    pub fn note(&self, e: Event) {
        if let Some(w) = self.lock().window.as_mut() {
            w.events.push(e);
        }
    }

    pub fn close(&self) -> WindowTrace {
        let mut sh = self.lock();
        let now = unix_ms();
        let last = sh.last.clone();
        let Some(mut w) = sh.window.take() else {
            return WindowTrace {
                events: Vec::new(),
                points: Vec::new(),
            };
        };
        for (sw, (since, who)) in std::mem::take(&mut w.dual_since) {
            w.events.push(
                Event::new(since, EventKind::DualActive, &sw, who)
                    .with_value(now.saturating_sub(since)),
            );
        }
        if let Some(s) = last {
            w.points.push(point(&s, w.start_ms));
        }
        WindowTrace {
            events: w.events,
            points: w.points,
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

fn connected(sims: &SimSwitches) -> BTreeMap<String, bool> {
    let handles: Vec<(String, Option<SimSwitchHandle>)> = sims
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    handles
        .into_iter()
        .map(|(name, h)| {
            let up = h.is_some_and(|h| h.managers().iter().any(|m| m.is_connected));
            (name, up)
        })
        .collect()
}

fn point(s: &Sample, start_ms: u64) -> Point {
    Point {
        t_ms: s.at_ms as i64 - start_ms as i64,
        held: s.held().into_iter().map(|(_, h)| h).collect(),
        routes: s.observed.iter().map(|o| (o.present, o.live)).collect(),
    }
}

/// Turns the change from `prev` to `cur` into events.
fn observe(w: &mut WindowAcc, prev: &Sample, cur: &Sample) {
    w.points.push(point(cur, w.start_ms));
    // Proxy backends.
    if let (Some(pb), Some(cb)) = (&prev.proxy.backends, &cur.proxy.backends) {
        for b in cb {
            let Some(was) = pb.iter().find(|x| x.name == b.name) else {
                continue;
            };
            if was.health_up && !b.health_up {
                w.events.push(Event::new(
                    b.last_change_unix_ms,
                    EventKind::ProxyDown,
                    &b.name,
                    format!("(sessions left {})", b.current),
                ));
            } else if !was.health_up && b.health_up {
                w.events.push(Event::new(
                    b.last_change_unix_ms,
                    EventKind::ProxyUp,
                    &b.name,
                    "",
                ));
            }
        }
    }
    // Simulated switches' manager connections.
    for (sw, up) in &cur.connected {
        if prev.connected.get(sw) == Some(&true) && !up {
            w.events
                .push(Event::new(cur.at_ms, EventKind::SessionLost, sw, ""));
        }
    }
    // Agents.
    for ((name, p), (_, q)) in cur.agents.iter().zip(prev.agents.iter()) {
        match (&q.status, &p.status) {
            (Some(_), None) => w
                .events
                .push(Event::new(p.at_ms, EventKind::Unreachable, name, "")),
            (None, Some(_)) if q.at_ms > 0 => {
                w.events
                    .push(Event::new(p.at_ms, EventKind::Reachable, name, ""))
            }
            _ => {}
        }
        let Some(st) = &p.status else { continue };
        if let Some(old) = &q.status {
            for (i, (a, b)) in old.control_nodes.iter().zip(&st.control_nodes).enumerate() {
                if a.up && !b.up {
                    w.events.push(Event::new(
                        p.at_ms,
                        EventKind::CnDown,
                        name,
                        format!("control node {i}"),
                    ));
                } else if !a.up && b.up {
                    w.events.push(Event::new(
                        p.at_ms,
                        EventKind::CnUp,
                        name,
                        format!("control node {i}"),
                    ));
                }
            }
        }
        for sw in &st.switches {
            let key = (name.clone(), sw.name.clone());
            let was_active = q
                .status
                .as_ref()
                .and_then(|o| o.switches.iter().find(|x| x.name == sw.name))
                .is_some_and(|x| x.active);
            if sw.active {
                if let Some(age) = sw.session_age_s {
                    let open = p.at_ms.saturating_sub((age * 1000.0) as u64);
                    let known = w.session_open.get(&key).copied();
                    if known.is_none_or(|k| k.abs_diff(open) > NEW_SESSION_SLACK_MS) {
                        w.session_open.insert(key.clone(), open);
                        w.events.push(Event::new(
                            open,
                            EventKind::Reconnected,
                            &sw.name,
                            format!("on {name}"),
                        ));
                        w.pending_live.insert(sw.name.clone(), name.clone());
                    }
                }
            } else if was_active {
                w.events.push(Event::new(
                    p.at_ms,
                    EventKind::Released,
                    &sw.name,
                    format!(
                        "by {name}{}",
                        sw.last_release
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    ),
                ));
                w.session_open.remove(&key);
            }
            let known = w.takeovers.get(&key).copied().unwrap_or(0);
            if sw.takeovers > known {
                w.takeovers.insert(key.clone(), sw.takeovers);
                if let Some(ago) = sw.last_takeover_ago_s {
                    let mut e = Event::new(
                        p.at_ms.saturating_sub((ago * 1000.0) as u64),
                        EventKind::TakeoverDone,
                        &sw.name,
                        format!("by {name}"),
                    );
                    if let Some(ms) = sw.last_takeover_ms {
                        e = e.with_value(ms);
                    }
                    w.events.push(e);
                }
            }
            if sw.active
                && w.pending_live.get(&sw.name) == Some(name)
                && sw.state == "active"
                && sw.routes_live >= sw.macs_local
            {
                w.pending_live.remove(&sw.name);
                w.events.push(Event::new(
                    p.at_ms,
                    EventKind::RoutesLive,
                    &sw.name,
                    format!("{} MACs by {name}", sw.routes_live),
                ));
            }
        }
    }
    // Two agents reporting one switch active.
    let mut holders: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, p) in &cur.agents {
        if let Some(st) = &p.status {
            for sw in st.switches.iter().filter(|s| s.active) {
                holders
                    .entry(sw.name.as_str())
                    .or_default()
                    .push(name.as_str());
            }
        }
    }
    for (sw, who) in &holders {
        if who.len() > 1 && !w.dual_since.contains_key(*sw) {
            w.dual_since
                .insert(sw.to_string(), (cur.at_ms, who.join(" and ")));
        }
    }
    let ended: Vec<String> = w
        .dual_since
        .keys()
        .filter(|sw| holders.get(sw.as_str()).is_none_or(|v| v.len() < 2))
        .cloned()
        .collect();
    for sw in ended {
        if let Some((since, who)) = w.dual_since.remove(&sw) {
            w.events.push(
                Event::new(since, EventKind::DualActive, &sw, who)
                    .with_value(cur.at_ms.saturating_sub(since)),
            );
        }
    }
}
