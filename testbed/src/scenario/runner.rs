//! Runs a scenario: starts the topology, waits for the first convergence, then applies the
//! steps; every step that converges closes a *window* (the faults since the last
//! convergence), which is measured and checked: the monitor's events give detection,
//! reconnect, audit and re-export times, the observer's route history gives withdrawals and
//! the HA-stale continuity verdict, and the full invariant check gives convergence.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::info;

use crate::control_node::Fabric;
use crate::switch::Mac;

use super::bed::{self, Bed, BedError};
use super::clock::unix_ms;
use super::invariants::{self, CheckInput, CnRoute, Kind, Verdict, Violation};
use super::layout::{self, FIRST_VLAN};
use super::link::LinkState;
use super::monitor::{self, Monitor, Sample};
use super::observer::{ObservedKey, RouteState};
use super::procs::{Launcher, Memory, NodeState};
use super::report::{ScenarioReport, SetupReport};
use super::spec::{Action, AgentRef, Churn, ConfigChange, LinkSide, Scenario, Step, Timing};
use super::svg::{Marker, Point};
use super::timeline::{self, CoreBusy, Event, EventKind, ProcessMemory, WindowFacts, WindowReport};

pub struct RunOptions {
    pub launcher: Launcher,
    /// Print progress lines on stderr.
    pub progress: bool,
    /// Keep the run directory (configs, certificates, agent and proxy logs).
    pub keep_dir: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Setup(#[from] BedError),
}

struct Progress {
    on: bool,
    t0: Instant,
}

impl Progress {
    fn say(&self, msg: impl AsRef<str>) {
        if self.on {
            eprintln!(
                "[{:>7.1}s] {}",
                self.t0.elapsed().as_secs_f64(),
                msg.as_ref()
            );
        }
        info!("{}", msg.as_ref());
    }
}

/// Per-switch state of MAC churn: fresh MACs learnt, population hosts used up.
#[derive(Default)]
struct ChurnState {
    learnt: u64,
    used: u32,
}

/// An open window: faults applied since the last convergence.
struct Open {
    start_ms: u64,
    steps: Vec<String>,
    labels: Vec<String>,
    continuity: bool,
    max_dual_active_ms: u64,
    churned: HashSet<String>,
    /// Per control node: MAC key state when the window opened, and the event index.
    present: Vec<HashMap<u32, RouteState>>,
    from_event: Vec<usize>,
    errors: Vec<Violation>,
    /// Until when the state must be watched before a convergence counts (the longest
    /// time any of the window's faults can take to show, from when it was applied).
    hold_until: Instant,
    /// Memory of the agents and the proxy when the window opened.
    memory_start: Vec<(String, Option<Memory>)>,
    /// Each agent's core-loop busy time by kind of work when the window opened.
    core_start: Vec<BusySample>,
}

/// One agent's core-loop busy time since its process started, by kind of work.
struct BusySample {
    name: String,
    /// Which process: a restarted agent's counters begin again at zero.
    pid: Option<u32>,
    busy_ms: BTreeMap<String, u64>,
}

/// Every reachable agent's core-loop busy time since it started, by kind of work.
async fn core_busy_now(bed: &Bed) -> Vec<BusySample> {
    let mut out = Vec::new();
    for a in &bed.agents {
        if let Some(st) = monitor::agent_status(&a.client, Duration::from_secs(2)).await {
            out.push(BusySample {
                name: a.plan.name.clone(),
                pid: a.node.pid(),
                busy_ms: st.core_busy_ms,
            });
        }
    }
    out
}

/// What each agent's core loop did in the window: the counters' growth, or all of the end
/// value for a process that started in the window.
fn core_busy_in_window(start: &[BusySample], end: Vec<BusySample>) -> Vec<CoreBusy> {
    end.into_iter()
        .map(|e| {
            let before = start.iter().find(|b| b.name == e.name && b.pid == e.pid);
            let by_work: BTreeMap<String, u64> = e
                .busy_ms
                .into_iter()
                .map(|(work, ms)| {
                    let from = before.and_then(|b| b.busy_ms.get(&work)).copied();
                    let grown = ms.saturating_sub(from.unwrap_or(0));
                    (work, grown)
                })
                .filter(|(_, ms)| *ms > 0)
                .collect();
            CoreBusy {
                name: e.name,
                total_ms: by_work.values().sum(),
                by_work,
            }
        })
        .collect()
}

/// Memory of every agent and the proxy, by name.
fn memory_now(bed: &Bed) -> Vec<(String, Option<Memory>)> {
    bed.agents
        .iter()
        .map(|a| (a.plan.name.clone(), a.node.memory()))
        .chain(std::iter::once((
            "tor-proxy".to_string(),
            bed.proxy.node.memory(),
        )))
        .collect()
}

/// How long after a fault the runner keeps watching before it accepts a convergence: a
/// fault whose effect is delayed (a silent partition is seen only when a health check, an
/// echo or the XMPP hold time runs out; a resumed agent still believes it holds its old
/// switches until it reads its sockets) must not pass because the invariants still hold
/// in the moment right after it. The reported convergence time is the start of the
/// stretch over which every check passed, so the hold adds to the run time, not to the
/// figures.
pub fn observe_for(action: &Action, t: &Timing) -> Duration {
    let ms = Duration::from_millis;
    // The proxy marks a backend down after `fall` failed checks, each at most one
    // interval apart plus its timeout.
    let proxy_down = ms(t.proxy_interval_ms
        + u64::from(t.proxy_fall)
            * (t.proxy_fast_interval_ms.max(t.proxy_interval_ms) + t.proxy_timeout_ms));
    let proxy_up = ms(u64::from(t.proxy_rise) * (t.proxy_interval_ms + t.proxy_timeout_ms));
    // Echo after `keepalive` of silence, answered within another (OVSDB sessions of the
    // agent and of the switches alike).
    let agent_echo = ms(2 * t.agent_keepalive_ms.max(2000));
    let switch_probe = ms(2 * t.switch_inactivity_probe_ms);
    let hold_time = Duration::from_secs(t.hold_time_s);
    let margin = ms(1000);
    let base = match action {
        Action::Wait(_) | Action::Converge => Duration::ZERO,
        Action::AgentCrash(_) | Action::AgentHang(_) => proxy_down,
        Action::AgentResume(_) | Action::AgentRestart(_) => agent_echo.max(proxy_up),
        Action::Partition(l, _) | Action::Heal(l) => match l.side {
            LinkSide::South => proxy_down.max(agent_echo).max(switch_probe),
            LinkSide::North => (hold_time + proxy_down).max(proxy_up),
        },
        Action::ControlNodeRestart { down, .. } => *down + proxy_up,
        Action::ProxyCrash | Action::ProxyRestart => proxy_up,
        Action::SwitchRestart { down, .. } => *down,
        Action::MacChurn(_) | Action::Config(_) => Duration::ZERO,
    };
    base + margin
}

pub async fn run(scenario: Scenario, opts: RunOptions) -> Result<ScenarioReport, RunError> {
    let p = Progress {
        on: opts.progress,
        t0: Instant::now(),
    };
    let t = scenario.timing.clone();
    p.say(format!(
        "scenario {}: starting {} switches, {} agents, 1 proxy, {} control node(s)",
        scenario.name,
        scenario.topology.switches + scenario.topology.real_switches,
        scenario.topology.agents,
        scenario.topology.control_nodes
    ));
    let mut bed = Bed::start(scenario.clone(), opts.launcher).await?;
    p.say(format!(
        "topology up (run directory {})",
        bed.dir().display()
    ));
    let sample = Duration::from_millis(t.sample_ms);
    let monitor = Monitor::start(
        bed.observer_rt.handle(),
        bed.agents
            .iter()
            .map(|a| (a.plan.name.clone(), a.client.clone()))
            .collect(),
        bed.proxy.client.clone(),
        bed.sims.clone(),
        bed.observers.clone(),
        sample,
    );
    let mut report = ScenarioReport::new(&scenario);
    if opts.keep_dir {
        report.run_dir = Some(bed.dir().display().to_string());
    }
    let setup_start = unix_ms();
    let setup = converge(
        &bed,
        &monitor,
        Duration::from_secs(t.setup_timeout_s),
        sample,
        Duration::from_secs(1),
    )
    .await;
    report.setup = SetupReport {
        converged_ms: setup.at_ms.map(|c| c.saturating_sub(setup_start)),
        violations: setup.verdict.violations.clone(),
        notes: setup.verdict.notes.clone(),
    };
    if setup.at_ms.is_none() {
        p.say(format!(
            "setup did not converge in {} s: {}",
            t.setup_timeout_s,
            first_lines(&setup.verdict.violations)
        ));
        report.finish();
        finish(bed, opts.keep_dir).await;
        return Ok(report);
    }
    p.say(format!(
        "initial convergence after {} ms",
        report.setup.converged_ms.unwrap_or(0)
    ));
    let mut churn: BTreeMap<String, ChurnState> = BTreeMap::new();
    let mut stop = false;
    'rounds: for round in 0..scenario.repeat {
        let mut open: Option<Open> = None;
        for step in &scenario.steps {
            let core_start = match open {
                None => core_busy_now(&bed).await,
                Some(_) => Vec::new(),
            };
            let o = open.get_or_insert_with(|| {
                // Let the monitor see the settled state before the fault.
                let start_ms = unix_ms();
                monitor.open(start_ms);
                Open {
                    start_ms,
                    steps: Vec::new(),
                    labels: Vec::new(),
                    continuity: true,
                    max_dual_active_ms: 0,
                    churned: HashSet::new(),
                    present: bed.observers.iter().map(mac_states).collect(),
                    from_event: bed.observers.iter().map(|o| o.counts().events).collect(),
                    errors: Vec::new(),
                    hold_until: Instant::now(),
                    memory_start: memory_now(&bed),
                    core_start,
                }
            });
            o.hold_until = o
                .hold_until
                .max(Instant::now() + observe_for(&step.action, &t));
            o.continuity &= step.continuity;
            o.max_dual_active_ms = o
                .max_dual_active_ms
                .max(step.max_dual_active.as_millis() as u64);
            o.labels.push(step.label.clone());
            let at = unix_ms();
            match apply(&mut bed, &monitor, step, &mut churn).await {
                Ok(applied) => {
                    p.say(format!(
                        "round {} step {}: {} {} {}",
                        round + 1,
                        step.index,
                        step.action.name(),
                        applied.subject,
                        applied.detail
                    ));
                    monitor.note(Event::new(
                        at,
                        EventKind::Fault,
                        &applied.subject,
                        format!("{} {}", step.action.name(), applied.detail),
                    ));
                    o.steps
                        .push(format!("{} {}", step.action.name(), applied.subject));
                    o.churned.extend(applied.churned);
                }
                Err(e) => {
                    p.say(format!("step {} failed: {e}", step.index));
                    o.errors.push(Violation {
                        kind: Kind::Agent,
                        subject: format!("step {}", step.index),
                        message: format!("{} could not be applied: {e}", step.action.name()),
                    });
                    stop = true;
                }
            }
            if step.converge || stop {
                let Some(o) = open.take() else { continue };
                let w = close_window(
                    &bed,
                    &monitor,
                    o,
                    step,
                    round,
                    report.windows.len() + 1,
                    sample,
                )
                .await;
                p.say(format!(
                    "window {} ({}): {} — detection {}, reconnect {}, audit {}, converged {}",
                    w.window,
                    w.label,
                    if w.passed { "PASS" } else { "FAIL" },
                    ms(w.detection_ms),
                    ms(w.reconnect_last_ms),
                    w.audit_max_ms.map_or("-".into(), |v| format!("{v} ms")),
                    ms(w.converged_ms)
                ));
                if !w.passed {
                    p.say(format!("  {}", first_lines(&w.violations)));
                }
                for c in w.core_busy.iter().filter(|c| c.total_ms >= 100) {
                    p.say(format!("  {}", c.summary()));
                }
                let failed = !w.passed;
                report.windows.push(w);
                if stop || (failed && w_is_unrecoverable(&report)) {
                    break 'rounds;
                }
            }
        }
    }
    report.finish();
    finish(bed, opts.keep_dir).await;
    Ok(report)
}

/// A window that did not converge leaves the next fault without a known starting point.
fn w_is_unrecoverable(r: &ScenarioReport) -> bool {
    r.windows.last().is_some_and(|w| w.converged_ms.is_none())
}

async fn finish(bed: Bed, keep: bool) {
    bed.shutdown(keep).await;
}

fn ms(v: Option<i64>) -> String {
    v.map_or("-".into(), |v| format!("{v} ms"))
}

fn first_lines(v: &[Violation]) -> String {
    let mut s: Vec<String> = v.iter().take(4).map(|x| x.to_string()).collect();
    if v.len() > 4 {
        s.push(format!("… and {} more", v.len() - 4));
    }
    s.join("; ")
}

/// Observer state of every MAC key present now.
fn mac_states(o: &super::observer::Observer) -> HashMap<u32, RouteState> {
    o.table()
        .into_iter()
        .filter(|(_, k, s)| !k.is_broadcast() && *s != RouteState::Absent)
        .map(|(id, _, s)| (id, s))
        .collect()
}

struct Applied {
    subject: String,
    detail: String,
    churned: Vec<String>,
}

fn applied(subject: impl Into<String>, detail: impl Into<String>) -> Applied {
    Applied {
        subject: subject.into(),
        detail: detail.into(),
        churned: Vec::new(),
    }
}

fn resolve(bed: &Bed, monitor: &Monitor, r: &AgentRef) -> Result<String, String> {
    match r {
        AgentRef::Named(n) => Ok(n.clone()),
        AgentRef::Previous => bed
            .last_agent
            .clone()
            .ok_or_else(|| "\"previous\": no agent fault happened before".to_string()),
        AgentRef::Busiest => {
            let s = monitor.last().unwrap_or_default();
            let mut best: Option<(usize, String)> = None;
            for (name, held) in s.held() {
                let n = held.unwrap_or(0);
                if best.as_ref().is_none_or(|(b, _)| n > *b) {
                    best = Some((n, name));
                }
            }
            best.map(|(_, n)| n)
                .or_else(|| bed.agents.first().map(|a| a.plan.name.clone()))
                .ok_or_else(|| "no agents".to_string())
        }
    }
}

async fn apply(
    bed: &mut Bed,
    monitor: &Monitor,
    step: &Step,
    churn: &mut BTreeMap<String, ChurnState>,
) -> Result<Applied, String> {
    match &step.action {
        Action::AgentCrash(r)
        | Action::AgentHang(r)
        | Action::AgentResume(r)
        | Action::AgentRestart(r) => {
            let name = resolve(bed, monitor, r)?;
            bed.last_agent = Some(name.clone());
            let a = bed.agent(&name).ok_or_else(|| format!("no agent {name}"))?;
            let pid = a.node.pid().unwrap_or(0);
            let detail = match &step.action {
                Action::AgentCrash(_) => {
                    a.node.kill();
                    format!("SIGKILL (pid {pid})")
                }
                Action::AgentHang(_) => {
                    if !a.node.hang() {
                        return Err(format!("{name} is not running"));
                    }
                    format!("SIGSTOP (pid {pid})")
                }
                Action::AgentResume(_) => {
                    if a.node.state != NodeState::Hung {
                        return Err(format!("{name} is not hung"));
                    }
                    a.node.resume();
                    format!("SIGCONT (pid {pid})")
                }
                _ => {
                    if a.node.state != NodeState::Down {
                        a.node.terminate(Duration::from_secs(3));
                    }
                    a.node.start().map_err(|e| e.to_string())?;
                    format!("started again (pid {})", a.node.pid().unwrap_or(0))
                }
            };
            Ok(applied(name, detail))
        }
        Action::Partition(l, _) | Action::Heal(l) => {
            let name = resolve(bed, monitor, &l.agent)?;
            bed.last_agent = Some(name.clone());
            let a = bed.agent(&name).ok_or_else(|| format!("no agent {name}"))?;
            let link = match l.side {
                LinkSide::South => &a.south,
                LinkSide::North => &a.north,
            };
            let state = match &step.action {
                Action::Partition(_, mode) => LinkState::Cut(*mode),
                _ => LinkState::Up,
            };
            link.set(state);
            Ok(applied(
                link.name.clone(),
                match state {
                    LinkState::Up => "healed".to_string(),
                    LinkState::Cut(m) => format!(
                        "cut ({})",
                        serde_json::to_string(&m)
                            .unwrap_or_default()
                            .trim_matches('"')
                    ),
                },
            ))
        }
        Action::ControlNodeRestart { index, down } => {
            bed.restart_control_node(*index as usize, *down).await?;
            Ok(applied(
                format!("control node {index}"),
                format!("restarted (down {} ms)", down.as_millis()),
            ))
        }
        Action::ProxyCrash => {
            let pid = bed.proxy.node.pid().unwrap_or(0);
            bed.proxy.node.kill();
            Ok(applied("tor-proxy", format!("SIGKILL (pid {pid})")))
        }
        Action::ProxyRestart => {
            bed::restart_proxy(&mut bed.proxy).await?;
            Ok(applied(
                "tor-proxy",
                format!("started again (pid {})", bed.proxy.node.pid().unwrap_or(0)),
            ))
        }
        Action::SwitchRestart { switch, down } => {
            bed.restart_switch(switch, *down).await?;
            Ok(applied(
                switch.clone(),
                format!(
                    "restarted with an empty database (down {} ms)",
                    down.as_millis()
                ),
            ))
        }
        Action::MacChurn(c) => {
            let macs = mac_churn(bed, c, churn).await?;
            let n = macs.len();
            let mut a = applied(
                "switches",
                format!(
                    "{n} MACs changed (learn {}, unlearn {}, move {}, age {} per switch)",
                    c.learn, c.unlearn, c.moves, c.age
                ),
            );
            a.churned = macs;
            Ok(a)
        }
        Action::Config(change) => {
            let mut f = bed.fabric.clone();
            let what = config_change(&mut f, change)?;
            bed.set_fabric(f)?;
            Ok(applied("fabric", what))
        }
        Action::Wait(d) => {
            tokio::time::sleep(*d).await;
            Ok(applied("", format!("{} ms", d.as_millis())))
        }
        Action::Converge => Ok(applied("", "")),
    }
}

fn config_change(f: &mut Fabric, c: &ConfigChange) -> Result<String, String> {
    match c {
        ConfigChange::Vni { vn, vni } => {
            f.set_vni(vn, *vni).map_err(|e| e.to_string())?;
            Ok(format!("VNI of {vn} set to {vni}"))
        }
        ConfigChange::AddBinding {
            switch,
            port,
            vlan,
            vn,
            vni,
        } => {
            let mut made = String::new();
            let fq = match f.find_vn(vn) {
                Ok(v) => v.fq_name(),
                Err(_) => {
                    let Some(vni) = vni else {
                        return Err(format!(
                            "network {vn:?} does not exist; give `vni` to create it"
                        ));
                    };
                    let id = layout::next_network_id(f);
                    let new = layout::new_vn(vn, id, *vni);
                    let fq = new.fq_name();
                    f.add_virtual_network(new).map_err(|e| e.to_string())?;
                    made = format!(" (new network, VNI {vni})");
                    fq
                }
            };
            f.add_binding(crate::control_node::Binding {
                physical_router: switch.clone(),
                interface: port.clone(),
                vlan: *vlan,
                virtual_network: fq.clone(),
                mac_addresses: Vec::new(),
                name: None,
            })
            .map_err(|e| e.to_string())?;
            Ok(format!("{switch} {port} VLAN {vlan} bound to {fq}{made}"))
        }
        ConfigChange::RemoveBinding { switch, port, vlan } => {
            f.remove_binding(switch, port, *vlan)
                .map_err(|e| e.to_string())?;
            Ok(format!("{switch} {port} VLAN {vlan} unbound"))
        }
    }
}

/// Learns, unlearns, moves and ages MACs on the switches at once; returns the MACs touched.
async fn mac_churn(
    bed: &mut Bed,
    c: &Churn,
    state: &mut BTreeMap<String, ChurnState>,
) -> Result<Vec<String>, String> {
    let names: Vec<String> = if c.switches.is_empty() {
        bed.layout
            .switches
            .iter()
            .filter(|s| !s.real)
            .map(|s| s.name.clone())
            .collect()
    } else {
        c.switches.clone()
    };
    let mut touched = Vec::new();
    let ports = bed
        .layout
        .switches
        .first()
        .map_or(1, |s| s.ports.len().max(1)) as u32;
    for name in names {
        let Some(plan) = bed.layout.switches.iter().find(|s| s.name == name).cloned() else {
            return Err(format!("no switch {name}"));
        };
        let st = state.entry(name.clone()).or_default();
        let fresh = |st: &mut ChurnState| {
            st.learnt += 1;
            plan.mac_base.checked_add(0x8000 + st.learnt)
        };
        let pop = |st: &mut ChurnState| -> Option<(u32, Mac)> {
            if st.used >= plan.macs {
                return None;
            }
            st.used += 1;
            let i = plan.macs - st.used;
            plan.mac(i).map(|m| (i, m))
        };
        if plan.real {
            let Some(real) = bed.reals.iter().find(|r| r.plan.name == name) else {
                continue;
            };
            let first_ls = bed
                .model
                .switches
                .get(&name)
                .and_then(|m| m.bindings.get("p0"))
                .and_then(|b| b.values().next().cloned())
                .unwrap_or_default();
            let mut dels = Vec::new();
            {
                let mut d = real.desired.lock().unwrap_or_else(|p| p.into_inner());
                for _ in 0..c.learn {
                    if let Some(m) = fresh(st) {
                        d.insert(m.to_string(), first_ls.clone());
                        touched.push(m.to_string());
                    }
                }
                for _ in 0..(c.unlearn + c.age + c.moves) {
                    if let Some((_, m)) = pop(st) {
                        if let Some(ls) = d.remove(&m.to_string()) {
                            dels.push((ls, m.to_string()));
                        }
                        touched.push(m.to_string());
                    }
                }
            }
            for (ls, mac) in dels {
                real.sw
                    .vtep_ctl(&["del-ucast-local", &ls, &mac])
                    .map_err(|e| format!("{name}: {e}"))?;
            }
            continue;
        }
        let Some(h) = bed.sim(&name) else {
            return Err(format!("{name} is not running"));
        };
        let err = |e: crate::switch::SwitchError| format!("{name}: {e}");
        for _ in 0..c.learn {
            if let Some(m) = fresh(st) {
                h.learn(m, "p0", FIRST_VLAN).await.map_err(err)?;
                touched.push(m.to_string());
            }
        }
        for _ in 0..c.unlearn {
            if let Some((_, m)) = pop(st) {
                h.unlearn(m).await.map_err(err)?;
                touched.push(m.to_string());
            }
        }
        for _ in 0..c.age {
            if let Some((_, m)) = pop(st) {
                h.age(Some(m)).await.map_err(err)?;
                touched.push(m.to_string());
            }
        }
        for _ in 0..c.moves {
            if let Some((i, m)) = pop(st) {
                // To the next port, in the network bound there.
                let j = (i % ports + 1) % ports;
                h.move_mac(m, &format!("p{j}"), FIRST_VLAN + j as u16)
                    .await
                    .map_err(err)?;
                touched.push(m.to_string());
            }
        }
    }
    Ok(touched)
}

struct Converged {
    at_ms: Option<u64>,
    /// The last moment before `at_ms` the state was seen unsettled (a sample, or the start
    /// of a failing full check): it converged between the two. Full checks are spaced by
    /// twice their cost, to leave the machine to the system under test.
    last_unsettled_ms: Option<u64>,
    /// The last failing full check before `at_ms`: when it started, what it found.
    last_failure: Option<(u64, String)>,
    /// What the last full check cost.
    check: Duration,
    verdict: Verdict,
}

/// Cheap signs that a full check may pass: every switch held by exactly one answering agent
/// that is done with it, observers and switches connected.
fn looks_settled(bed: &Bed, s: &Sample) -> bool {
    for a in &bed.agents {
        let Some((_, p)) = s.agents.iter().find(|(n, _)| n == &a.plan.name) else {
            return false;
        };
        if a.node.state == NodeState::Running && p.status.is_none() {
            return false;
        }
    }
    let mut holders: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, p) in &s.agents {
        let Some(st) = &p.status else { continue };
        for w in &st.switches {
            if w.active {
                if w.state != "active" || w.txn_in_flight > 0 || w.stale_rows_waiting > 0 {
                    return false;
                }
                *holders.entry(w.name.as_str()).or_default() += 1;
            }
        }
    }
    bed.model
        .switches
        .keys()
        .all(|sw| holders.get(sw.as_str()) == Some(&1))
        && s.observed.iter().all(|o| o.connected)
        && s.connected.values().all(|c| *c)
        && bed.cns.iter().all(|c| c.handle.is_some())
}

async fn full_check(bed: &Bed) -> Verdict {
    let mut extra = Vec::new();
    let switches = match bed.snapshots().await {
        Ok(s) => s,
        Err(e) => {
            extra.push(Violation {
                kind: Kind::LogicalSwitch,
                subject: "switches".into(),
                message: format!("cannot read a switch database: {e}"),
            });
            Vec::new()
        }
    };
    let mut agents = Vec::new();
    for a in &bed.agents {
        let status = if a.node.state == NodeState::Running {
            let s = monitor::agent_status(&a.client, Duration::from_secs(3)).await;
            if s.is_none() {
                extra.push(Violation {
                    kind: Kind::Agent,
                    subject: a.plan.name.clone(),
                    message: "is running but does not answer its admin API".into(),
                });
            }
            s
        } else {
            None
        };
        agents.push(monitor::agent_view(
            &a.plan.name,
            &a.plan.tsn_ip.to_string(),
            status.as_ref(),
        ));
    }
    let mut cns = Vec::new();
    for (i, c) in bed.cns.iter().enumerate() {
        match &c.handle {
            Some(h) => cns.push(
                h.best_routes(None)
                    .into_iter()
                    .map(|r| CnRoute {
                        vrf: r.vrf,
                        tag: r.key.ethernet_tag,
                        mac: r.key.mac,
                        address: r.key.address,
                        next_hops: r.next_hops,
                        local_preference: r.local_preference,
                        agents: r.agents,
                        standby: r.standby,
                    })
                    .collect(),
            ),
            None => {
                extra.push(Violation {
                    kind: Kind::Route,
                    subject: format!("control node {i}"),
                    message: "is down".into(),
                });
                cns.push(Vec::new());
            }
        }
    }
    let mut v = invariants::check(&CheckInput {
        model: &bed.model,
        switches: &switches,
        agents: &agents,
        control_nodes: &cns,
    });
    v.violations.splice(0..0, extra);
    v
}

/// Waits until every invariant holds (a full check passes) and keeps holding until `hold`
/// has passed since the call, or `limit` runs out. The convergence time is the first check
/// of the last unbroken stretch of passing checks (and settled samples between them): a
/// fault that shows late resets the stretch.
async fn converge(
    bed: &Bed,
    monitor: &Monitor,
    limit: Duration,
    sample: Duration,
    hold: Duration,
) -> Converged {
    let start = Instant::now();
    let deadline = start + limit.max(hold + Duration::from_secs(5));
    let mut last_check: Option<Instant> = None;
    let mut cost = Duration::ZERO;
    let mut stretch: Option<u64> = None;
    // The last moment seen unsettled (a sample or a failing check): the state converged
    // after it.
    let mut unsettled_at: Option<u64> = None;
    // The last failing check: when, and what it found first.
    let mut last_failure: Option<(u64, String)> = None;
    loop {
        let now = Instant::now();
        let settled = monitor.last().is_some_and(|s| looks_settled(bed, &s));
        if !settled {
            stretch = None;
            unsettled_at = Some(unix_ms());
        }
        let since = last_check.map(|t| now.duration_since(t));
        let due = since.is_none_or(|d| d >= (cost * 2).max(Duration::from_millis(250)));
        let overdue = since.is_none_or(|d| d >= Duration::from_secs(3).max(cost * 4));
        let out_of_time = now >= deadline;
        if (settled && due) || overdue || out_of_time {
            let at = unix_ms();
            let t0 = Instant::now();
            let verdict = full_check(bed).await;
            cost = t0.elapsed();
            last_check = Some(Instant::now());
            if verdict.passed() {
                let from = *stretch.get_or_insert(at);
                if start.elapsed() >= hold || out_of_time {
                    return Converged {
                        at_ms: Some(from),
                        last_unsettled_ms: unsettled_at.filter(|f| *f < from),
                        last_failure: last_failure.filter(|(f, _)| *f < from),
                        check: cost,
                        verdict,
                    };
                }
            } else {
                unsettled_at = Some(at);
                last_failure = verdict.violations.first().map(|v| {
                    (
                        at,
                        format!("{} violation(s), first: {v}", verdict.violations.len()),
                    )
                });
                stretch = None;
                if out_of_time {
                    return Converged {
                        at_ms: None,
                        last_unsettled_ms: None,
                        last_failure: None,
                        check: cost,
                        verdict,
                    };
                }
            }
        }
        tokio::time::sleep(sample).await;
    }
}

/// The MAC keys the final state expects at the control node (MACs local on one switch).
fn expected_keys(
    bed: &Bed,
    ids: &HashMap<ObservedKey, u32>,
    snaps: &[super::snapshot::SwitchSnapshot],
) -> HashSet<u32> {
    let mut out = HashSet::new();
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for s in snaps {
        for r in &s.local {
            *seen.entry((r.ls.as_str(), r.mac.as_str())).or_default() += 1;
        }
    }
    for ((ls, mac), n) in seen {
        if n != 1 {
            continue;
        }
        let Some(vn) = bed.model.vns.get(ls) else {
            continue;
        };
        let k = ObservedKey {
            vrf: vn.vrf.clone(),
            tag: vn.vni,
            mac: mac.to_string(),
            address: tf_xmpp_mac_address(),
        };
        if let Some(id) = ids.get(&k) {
            out.insert(*id);
        }
    }
    out
}

fn tf_xmpp_mac_address() -> String {
    "0.0.0.0/32".to_string()
}

async fn close_window(
    bed: &Bed,
    monitor: &Monitor,
    mut o: Open,
    step: &Step,
    round: u32,
    index: usize,
    sample: Duration,
) -> WindowReport {
    let c = if o.errors.is_empty() {
        let hold = o.hold_until.saturating_duration_since(Instant::now());
        converge(bed, monitor, step.timeout, sample, hold).await
    } else {
        Converged {
            at_ms: None,
            last_unsettled_ms: None,
            last_failure: None,
            check: Duration::ZERO,
            verdict: Verdict::default(),
        }
    };
    let mut notes = c.verdict.notes.clone();
    if let Some(at) = c.at_ms {
        let rel = |t: u64| t.saturating_sub(o.start_ms);
        notes.push(match c.last_unsettled_ms {
            Some(f) => format!(
                "converged between +{} ms (last seen unsettled) and +{} ms; a full check took {} ms",
                rel(f),
                rel(at),
                c.check.as_millis()
            ),
            None => format!("a full check took {} ms", c.check.as_millis()),
        });
        if let Some((f, what)) = &c.last_failure {
            notes.push(format!(
                "the last failing check (+{} ms) found {what}",
                rel(*f)
            ));
        }
        monitor.note(Event::new(
            at,
            EventKind::Converged,
            "all",
            "every invariant holds",
        ));
    }
    // Let the monitor record the settled state in the chart.
    tokio::time::sleep(sample * 2).await;
    let trace = monitor.close();
    let end_ms = c.at_ms.unwrap_or_else(unix_ms);
    let snaps = bed.snapshots().await.unwrap_or_default();
    let mut routes = Vec::new();
    let mut violations = o.errors.clone();
    violations.extend(c.verdict.violations.clone());
    for (i, obs) in bed.observers.iter().enumerate() {
        let table = obs.table();
        let ids: HashMap<ObservedKey, u32> =
            table.iter().map(|(id, k, _)| (k.clone(), *id)).collect();
        let broadcast: HashSet<u32> = table
            .iter()
            .filter(|(_, k, _)| k.is_broadcast())
            .map(|(id, _, _)| *id)
            .collect();
        let excluded: HashSet<u32> = table
            .iter()
            .filter(|(_, k, _)| o.churned.contains(&k.mac))
            .map(|(id, _, _)| *id)
            .collect();
        let expected = expected_keys(bed, &ids, &snaps);
        let events = obs.events_since(o.from_event.get(i).copied().unwrap_or(0));
        let present = o.present.get(i).cloned().unwrap_or_default();
        let (stats, gaps) = timeline::replay_routes(
            &events,
            o.start_ms,
            end_ms,
            &present,
            &expected,
            &excluded,
            |k| broadcast.contains(&k),
        );
        if o.continuity && !gaps.is_empty() {
            let longest = gaps.iter().map(|g| g.absent_ms).max().unwrap_or(0);
            let examples: Vec<String> = gaps
                .iter()
                .take(3)
                .filter_map(|g| {
                    let k = table.get(g.key as usize)?;
                    Some(format!(
                        "{}/{} absent {} ms from {:+} ms",
                        k.1.tag, k.1.mac, g.absent_ms, g.from_ms
                    ))
                })
                .collect();
            violations.push(Violation {
                kind: Kind::Continuity,
                subject: format!("control node {i}"),
                message: format!(
                    "HA-stale continuity broken: {} MAC routes were absent during the switchover \
                     although their MACs stayed (longest {longest} ms), e.g. {}",
                    gaps.len(),
                    examples.join(", ")
                ),
            });
        }
        routes.push(stats);
    }
    o.churned.clear();
    let mut w = timeline::build_window(
        WindowFacts {
            window: index,
            round,
            label: o.labels.join(" + "),
            faults: o.steps,
            start_ms: o.start_ms,
            converged_ms: c.at_ms,
            routes,
            violations,
            notes,
            max_dual_active_ms: o.max_dual_active_ms,
        },
        trace.events,
    );
    w.series = trace.points;
    w.core_busy = core_busy_in_window(&o.core_start, core_busy_now(bed).await);
    w.memory = memory_now(bed)
        .into_iter()
        .map(|(name, end)| {
            let start = o
                .memory_start
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, m)| *m);
            ProcessMemory {
                name,
                rss_start_kb: start.map(|m| m.rss_kb),
                rss_end_kb: end.map(|m| m.rss_kb),
                peak_kb: end.map(|m| m.hwm_kb),
            }
        })
        .collect();
    w
}

/// Chart data for a whole run: every window's points on one time axis (ms from the first
/// window's start), with faults, first detection and convergence marked.
pub fn chart_data(r: &ScenarioReport) -> (Vec<Point>, Vec<Marker>) {
    let Some(first) = r.windows.first() else {
        return (Vec::new(), Vec::new());
    };
    let origin = first.start_unix_ms;
    let mut points = Vec::new();
    let mut markers = Vec::new();
    for w in &r.windows {
        let shift = w.start_unix_ms as i64 - origin as i64;
        for p in &w.series {
            let mut p = p.clone();
            p.t_ms += shift;
            points.push(p);
        }
        for e in w.events.iter().filter(|e| e.kind == EventKind::Fault) {
            markers.push(Marker {
                t_ms: e.at_ms as i64 - origin as i64,
                label: e.detail.split(' ').next().unwrap_or("fault").to_string() + " " + &e.subject,
                kind: "fault".into(),
            });
        }
        if let Some(d) = w.detection_ms {
            markers.push(Marker {
                t_ms: shift + d,
                label: format!("detected +{d} ms"),
                kind: "detect".into(),
            });
        }
        if let Some(c) = w.converged_ms {
            markers.push(Marker {
                t_ms: shift + c,
                label: format!("converged +{c} ms"),
                kind: "converged".into(),
            });
        }
    }
    (points, markers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(w, ms)| (w.to_string(), *ms)).collect()
    }

    fn sample(name: &str, pid: u32, pairs: &[(&str, u64)]) -> BusySample {
        BusySample {
            name: name.into(),
            pid: Some(pid),
            busy_ms: busy(pairs),
        }
    }

    #[test]
    fn core_busy_is_the_growth_over_the_window() {
        let start = vec![
            sample("a", 10, &[("routes", 100), ("audits", 50)]),
            sample("b", 20, &[("routes", 900), ("exports", 300)]),
        ];
        let end = vec![
            // Grew: only the growth counts, kinds that did not grow are left out.
            sample("a", 10, &[("routes", 400), ("audits", 50), ("exports", 20)]),
            // Restarted in the window (a new process, its counters began again): all of
            // the end value.
            sample("b", 21, &[("routes", 70), ("exports", 5)]),
            // Not there at the start (started in the window).
            sample("c", 30, &[("ticks", 3)]),
        ];
        let w = core_busy_in_window(&start, end);
        assert_eq!(
            w,
            vec![
                CoreBusy {
                    name: "a".into(),
                    total_ms: 320,
                    by_work: busy(&[("routes", 300), ("exports", 20)]),
                },
                CoreBusy {
                    name: "b".into(),
                    total_ms: 75,
                    by_work: busy(&[("routes", 70), ("exports", 5)]),
                },
                CoreBusy {
                    name: "c".into(),
                    total_ms: 3,
                    by_work: busy(&[("ticks", 3)]),
                },
            ]
        );
        assert_eq!(w[0].summary(), "a core busy 320 ms: routes 300, exports 20");
        // A restarted agent that already did more than before is still counted whole.
        let again = core_busy_in_window(
            &[sample("d", 40, &[("routes", 10)])],
            vec![sample("d", 41, &[("routes", 500)])],
        );
        assert_eq!(again[0].total_ms, 500);
    }
}
