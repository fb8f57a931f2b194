//! What happened in one fault window, as data: the events the monitor saw (each with a UNIX
//! time in ms), the control node's route changes the observer recorded, and what follows
//! from them — detection, reconnect, audit, re-export and convergence times, route
//! withdrawals and re-additions, and the HA-stale continuity verdict. Pure; the text and
//! JSON forms of the report are built from [`WindowReport`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::invariants::{Kind, Violation};
use super::observer::{RouteEvent, RouteState};
use super::svg::Point;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A step was applied (the fault itself).
    Fault,
    /// The proxy marked a backend down / up (its own timestamp).
    ProxyDown,
    ProxyUp,
    /// A switch's manager connection dropped (simulated switches, polled).
    SessionLost,
    /// A switch's new session is held by an agent (agent's session age).
    Reconnected,
    /// An agent that held a switch no longer does.
    Released,
    /// An agent finished a takeover (agent's own timestamp; detail: its duration).
    TakeoverDone,
    /// The new holder exports every local MAC of the switch at live preference (polled).
    RoutesLive,
    /// An agent's control-node session went down / up (polled).
    CnDown,
    CnUp,
    /// An agent stopped / started answering its admin API.
    Unreachable,
    Reachable,
    /// Two agents reported one switch active; detail: for how long.
    DualActive,
    /// Every invariant holds again.
    Converged,
}

impl EventKind {
    fn label(self) -> &'static str {
        match self {
            EventKind::Fault => "fault",
            EventKind::ProxyDown => "proxy: backend down",
            EventKind::ProxyUp => "proxy: backend up",
            EventKind::SessionLost => "switch session lost",
            EventKind::Reconnected => "reconnected",
            EventKind::Released => "released",
            EventKind::TakeoverDone => "audit done",
            EventKind::RoutesLive => "routes live",
            EventKind::CnDown => "control node lost",
            EventKind::CnUp => "control node back",
            EventKind::Unreachable => "agent unreachable",
            EventKind::Reachable => "agent answers",
            EventKind::DualActive => "dual active",
            EventKind::Converged => "converged",
        }
    }

    /// Per-switch kinds are shown as first/last with a count.
    fn per_switch(self) -> bool {
        matches!(
            self,
            EventKind::SessionLost
                | EventKind::Reconnected
                | EventKind::Released
                | EventKind::TakeoverDone
                | EventKind::RoutesLive
                | EventKind::DualActive
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub at_ms: u64,
    pub kind: EventKind,
    /// The switch, agent or backend.
    pub subject: String,
    pub detail: String,
    /// A duration the event carries (takeover, dual-active), in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_ms: Option<u64>,
}

impl Event {
    pub fn new(at_ms: u64, kind: EventKind, subject: &str, detail: impl Into<String>) -> Event {
        Event {
            at_ms,
            kind,
            subject: subject.to_string(),
            detail: detail.into(),
            value_ms: None,
        }
    }

    pub fn with_value(mut self, ms: u64) -> Event {
        self.value_ms = Some(ms);
        self
    }
}

/// Route changes of one control node during a window (MAC routes; broadcast apart).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteStats {
    /// MAC routes withdrawn (gone from the control node), and added back afterwards.
    pub withdrawn: usize,
    pub readded: usize,
    /// Selected path fell to HA-stale preference / rose back to live.
    pub to_stale: usize,
    pub to_live: usize,
    /// Routes added that were not there before (new MACs), and broadcast-route changes.
    pub added: usize,
    pub broadcast_changes: usize,
    /// When the last MAC route became live again (ms from the window start).
    pub last_live_ms: Option<i64>,
}

/// A MAC route that was absent from a control node during a window although its MAC stayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub key: u32,
    /// First absence, ms from the window start.
    pub from_ms: i64,
    /// Total time absent.
    pub absent_ms: u64,
}

/// Replays the observer's events of one window.
///
/// - `present_at_start`: MAC keys present when the window opened.
/// - `expected_at_end`: MAC keys the final check expects (MACs still local somewhere).
/// - `excluded`: keys whose MAC the scenario itself changed (churn) in this window.
/// - `is_broadcast`: whether a key is a broadcast route.
pub fn replay_routes(
    events: &[RouteEvent],
    start_ms: u64,
    end_ms: u64,
    present_at_start: &HashMap<u32, RouteState>,
    expected_at_end: &HashSet<u32>,
    excluded: &HashSet<u32>,
    is_broadcast: impl Fn(u32) -> bool,
) -> (RouteStats, Vec<Gap>) {
    let mut stats = RouteStats::default();
    let mut state: HashMap<u32, RouteState> = present_at_start.clone();
    let mut absent_since: HashMap<u32, u64> = HashMap::new();
    let mut gaps: BTreeMap<u32, Gap> = BTreeMap::new();
    let mut withdrawn_once: HashSet<u32> = HashSet::new();
    for e in events
        .iter()
        .filter(|e| e.at_ms >= start_ms && e.at_ms <= end_ms)
    {
        if is_broadcast(e.key) {
            stats.broadcast_changes += 1;
            continue;
        }
        let from = state.get(&e.key).copied().unwrap_or(RouteState::Absent);
        state.insert(e.key, e.to);
        match (from, e.to) {
            (RouteState::Absent, RouteState::Absent) => {}
            (_, RouteState::Absent) => {
                stats.withdrawn += 1;
                withdrawn_once.insert(e.key);
                absent_since.insert(e.key, e.at_ms);
            }
            (RouteState::Absent, to) => {
                if withdrawn_once.contains(&e.key) {
                    stats.readded += 1;
                } else {
                    stats.added += 1;
                }
                if to == RouteState::Live {
                    stats.last_live_ms = Some(e.at_ms as i64 - start_ms as i64);
                }
                if let Some(since) = absent_since.remove(&e.key) {
                    note_gap(&mut gaps, e.key, since, e.at_ms, start_ms);
                }
            }
            (RouteState::Live, RouteState::Stale) => stats.to_stale += 1,
            (RouteState::Stale, RouteState::Live) => {
                stats.to_live += 1;
                stats.last_live_ms = Some(e.at_ms as i64 - start_ms as i64);
            }
            _ => {}
        }
    }
    // Still absent at the end.
    for (key, since) in absent_since {
        note_gap(&mut gaps, key, since, end_ms, start_ms);
    }
    let lost = gaps
        .into_values()
        .filter(|g| {
            present_at_start
                .get(&g.key)
                .is_some_and(|s| *s != RouteState::Absent)
                && expected_at_end.contains(&g.key)
                && !excluded.contains(&g.key)
        })
        .collect();
    (stats, lost)
}

fn note_gap(gaps: &mut BTreeMap<u32, Gap>, key: u32, since: u64, until: u64, start: u64) {
    let g = gaps.entry(key).or_insert(Gap {
        key,
        from_ms: since as i64 - start as i64,
        absent_ms: 0,
    });
    g.absent_ms += until.saturating_sub(since);
}

/// One line of the readable timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub at_ms: i64,
    pub what: String,
    pub detail: String,
}

/// The measured outcome of one window (one fault, or several chained without convergence).
#[derive(Debug, Clone, Default, Serialize)]
pub struct WindowReport {
    pub window: usize,
    pub round: u32,
    pub label: String,
    /// The steps applied in this window, as "action target".
    pub faults: Vec<String>,
    pub start_unix_ms: u64,
    /// Switches that got a new session in this window.
    pub switches_reconnected: Vec<String>,
    /// First sign the fault was noticed (proxy, switch, agent or control node), ms.
    pub detection_ms: Option<i64>,
    pub detection_by: Option<String>,
    pub reconnect_first_ms: Option<i64>,
    pub reconnect_last_ms: Option<i64>,
    /// Takeover (audit) durations the agents reported for the reconnected switches.
    pub audit_median_ms: Option<u64>,
    pub audit_max_ms: Option<u64>,
    /// When the last of those takeovers finished, ms from the window start.
    pub audit_done_ms: Option<i64>,
    /// When the new holders exported every local MAC at live preference again.
    pub routes_live_ms: Option<i64>,
    pub converged_ms: Option<i64>,
    /// Per control node.
    pub routes: Vec<RouteStats>,
    pub dual_active_max_ms: u64,
    pub violations: Vec<Violation>,
    pub notes: Vec<String>,
    pub lines: Vec<Line>,
    pub events: Vec<Event>,
    /// Chart points (ms from the window start).
    pub series: Vec<Point>,
    /// Resident memory of the agents and the proxy when the window opened and closed.
    pub memory: Vec<ProcessMemory>,
    /// What each agent's core loop was busy with in the window (from its status counters).
    pub core_busy: Vec<CoreBusy>,
    pub passed: bool,
}

/// An agent's core-loop busy time over a window, in ms, by kind of work.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CoreBusy {
    pub name: String,
    pub total_ms: u64,
    pub by_work: BTreeMap<String, u64>,
}

impl CoreBusy {
    /// "agent-b core busy 4123 ms: exports 1290, routes 910, ...", largest first.
    pub fn summary(&self) -> String {
        let mut parts: Vec<(&String, &u64)> = self.by_work.iter().collect();
        parts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let parts: Vec<String> = parts.iter().map(|(w, ms)| format!("{w} {ms}")).collect();
        format!(
            "{} core busy {} ms: {}",
            self.name,
            self.total_ms,
            parts.join(", ")
        )
    }
}

/// A child process's memory over a window, in KiB (`None`: not running then).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProcessMemory {
    pub name: String,
    pub rss_start_kb: Option<u64>,
    pub rss_end_kb: Option<u64>,
    /// VmHWM at the window's end: the peak since the process (re)started.
    pub peak_kb: Option<u64>,
}

/// Inputs to [`build_window`] besides the events.
pub struct WindowFacts {
    pub window: usize,
    pub round: u32,
    pub label: String,
    pub faults: Vec<String>,
    pub start_ms: u64,
    pub converged_ms: Option<u64>,
    pub routes: Vec<RouteStats>,
    pub violations: Vec<Violation>,
    pub notes: Vec<String>,
    pub max_dual_active_ms: u64,
}

fn median(v: &mut [u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

pub fn build_window(facts: WindowFacts, mut events: Vec<Event>) -> WindowReport {
    events.sort_by_key(|e| (e.at_ms, e.kind));
    let start = facts.start_ms;
    let rel = |t: u64| t as i64 - start as i64;
    let after: Vec<&Event> = events
        .iter()
        .filter(|e| e.at_ms >= start && e.kind != EventKind::Fault)
        .collect();
    let detection = after.iter().find(|e| {
        matches!(
            e.kind,
            EventKind::ProxyDown
                | EventKind::SessionLost
                | EventKind::Released
                | EventKind::CnDown
                | EventKind::Unreachable
        )
    });
    let reconnects: Vec<&&Event> = after
        .iter()
        .filter(|e| e.kind == EventKind::Reconnected)
        .collect();
    let reconnected: BTreeSet<&str> = reconnects.iter().map(|e| e.subject.as_str()).collect();
    let takeovers: Vec<&&Event> = after
        .iter()
        .filter(|e| e.kind == EventKind::TakeoverDone && reconnected.contains(e.subject.as_str()))
        .collect();
    let mut audit: Vec<u64> = takeovers.iter().filter_map(|e| e.value_ms).collect();
    let live: Vec<&&Event> = after
        .iter()
        .filter(|e| e.kind == EventKind::RoutesLive)
        .collect();
    let dual_max = events
        .iter()
        .filter(|e| e.kind == EventKind::DualActive)
        .filter_map(|e| e.value_ms)
        .max()
        .unwrap_or(0);
    let mut violations = facts.violations;
    for e in events.iter().filter(|e| {
        e.kind == EventKind::DualActive && e.value_ms.unwrap_or(0) > facts.max_dual_active_ms
    }) {
        violations.push(Violation {
            kind: Kind::DualActive,
            subject: e.subject.clone(),
            message: format!(
                "{} for {} ms from {:+} ms (allowed {} ms in this step)",
                e.detail,
                e.value_ms.unwrap_or(0),
                rel(e.at_ms),
                facts.max_dual_active_ms
            ),
        });
    }
    if facts.converged_ms.is_none() && violations.is_empty() {
        violations.push(Violation {
            kind: Kind::NotSettled,
            subject: "scenario".into(),
            message: "did not converge".into(),
        });
    }
    let mut report = WindowReport {
        window: facts.window,
        round: facts.round,
        label: facts.label,
        faults: facts.faults,
        start_unix_ms: start,
        switches_reconnected: reconnected.iter().map(|s| s.to_string()).collect(),
        detection_ms: detection.map(|e| rel(e.at_ms)),
        detection_by: detection.map(|e| format!("{} ({})", e.kind.label(), e.subject)),
        reconnect_first_ms: reconnects.first().map(|e| rel(e.at_ms)),
        reconnect_last_ms: reconnects.iter().map(|e| rel(e.at_ms)).max(),
        audit_median_ms: median(&mut audit),
        audit_max_ms: audit.iter().copied().max(),
        audit_done_ms: takeovers.iter().map(|e| rel(e.at_ms)).max(),
        routes_live_ms: live.iter().map(|e| rel(e.at_ms)).max(),
        converged_ms: facts.converged_ms.map(rel),
        routes: facts.routes,
        dual_active_max_ms: dual_max,
        passed: violations.is_empty(),
        violations,
        notes: facts.notes,
        lines: Vec::new(),
        events: Vec::new(),
        series: Vec::new(),
        memory: Vec::new(),
        core_busy: Vec::new(),
    };
    report.lines = lines(&events, start, facts.converged_ms);
    report.events = events;
    report
}

/// The readable timeline: one line per event, per-switch events folded into first/last.
fn lines(events: &[Event], start: u64, converged: Option<u64>) -> Vec<Line> {
    let rel = |t: u64| t as i64 - start as i64;
    let mut out = Vec::new();
    let mut groups: BTreeMap<EventKind, Vec<&Event>> = BTreeMap::new();
    for e in events {
        if e.kind.per_switch() {
            groups.entry(e.kind).or_default().push(e);
        } else {
            let detail = if e.detail.is_empty() {
                e.subject.clone()
            } else {
                format!("{} {}", e.subject, e.detail)
            };
            out.push(Line {
                at_ms: rel(e.at_ms),
                what: e.kind.label().into(),
                detail,
            });
        }
    }
    for (kind, es) in groups {
        let n: BTreeSet<&str> = es.iter().map(|e| e.subject.as_str()).collect();
        let show = |e: &Event| {
            let v = e.value_ms.map(|v| format!(", {v} ms")).unwrap_or_default();
            if e.detail.is_empty() {
                format!("{}{v}", e.subject)
            } else {
                format!("{} {}{v}", e.subject, e.detail)
            }
        };
        let (Some(first), Some(last)) = (es.first(), es.last()) else {
            continue;
        };
        if es.len() == 1 {
            out.push(Line {
                at_ms: rel(first.at_ms),
                what: kind.label().into(),
                detail: show(first),
            });
        } else {
            out.push(Line {
                at_ms: rel(first.at_ms),
                what: format!("{} (first of {})", kind.label(), n.len()),
                detail: show(first),
            });
            out.push(Line {
                at_ms: rel(last.at_ms),
                what: format!("{} (last)", kind.label()),
                detail: show(last),
            });
        }
    }
    if let Some(c) = converged {
        if !events.iter().any(|e| e.kind == EventKind::Converged) {
            out.push(Line {
                at_ms: rel(c),
                what: EventKind::Converged.label().into(),
                detail: "every invariant holds".into(),
            });
        }
    }
    out.sort_by_key(|l| l.at_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at: u64, key: u32, to: RouteState) -> RouteEvent {
        RouteEvent { at_ms: at, key, to }
    }

    #[test]
    fn replay_counts_and_finds_gaps() {
        use RouteState::*;
        // Keys 1..=3 live at the start; 9 is a broadcast route.
        let start: HashMap<u32, RouteState> = [(1, Live), (2, Live), (3, Live)].into();
        let events = vec![
            ev(1000, 1, Stale), // crash: falls back to the shadow
            ev(1000, 9, Absent),
            ev(1100, 2, Absent), // lost for 400 ms
            ev(1500, 2, Stale),
            ev(1600, 1, Live),
            ev(1700, 2, Live),
            ev(1800, 3, Absent), // churned away on purpose
            ev(1900, 4, Live),   // a new MAC
            ev(2500, 5, Live),   // after the window
        ];
        let expected: HashSet<u32> = [1, 2, 4].into();
        let excluded: HashSet<u32> = [3].into();
        let (s, gaps) = replay_routes(&events, 1000, 2000, &start, &expected, &excluded, |k| {
            k == 9
        });
        assert_eq!(
            s,
            RouteStats {
                withdrawn: 2,
                readded: 1,
                to_stale: 1,
                to_live: 2,
                added: 1,
                broadcast_changes: 1,
                last_live_ms: Some(900),
            }
        );
        assert_eq!(
            gaps,
            vec![Gap {
                key: 2,
                from_ms: 100,
                absent_ms: 400
            }]
        );
        // A key still absent at the end counts until the end.
        let (_, gaps) = replay_routes(
            &events[..3],
            1000,
            2000,
            &start,
            &expected,
            &excluded,
            |_| false,
        );
        assert_eq!(gaps[0].absent_ms, 900);
    }

    fn facts(converged: Option<u64>) -> WindowFacts {
        WindowFacts {
            window: 1,
            round: 0,
            label: "crash".into(),
            faults: vec!["agent_crash agent-a".into()],
            start_ms: 10_000,
            converged_ms: converged,
            routes: vec![],
            violations: vec![],
            notes: vec![],
            max_dual_active_ms: 0,
        }
    }

    #[test]
    fn window_metrics_come_from_the_events() {
        let events = vec![
            Event::new(10_000, EventKind::Fault, "agent-a", "SIGKILL"),
            Event::new(10_004, EventKind::SessionLost, "sw01", ""),
            Event::new(10_020, EventKind::ProxyDown, "agent-a", ""),
            Event::new(10_006, EventKind::SessionLost, "sw02", ""),
            Event::new(11_010, EventKind::Reconnected, "sw01", "on agent-b"),
            Event::new(11_030, EventKind::Reconnected, "sw02", "on agent-b"),
            Event::new(11_200, EventKind::TakeoverDone, "sw01", "agent-b").with_value(190),
            Event::new(11_300, EventKind::TakeoverDone, "sw02", "agent-b").with_value(270),
            // A takeover of a switch that did not reconnect in this window is not counted.
            Event::new(11_400, EventKind::TakeoverDone, "sw09", "agent-b").with_value(5000),
            Event::new(11_350, EventKind::RoutesLive, "sw02", "agent-b"),
        ];
        let r = build_window(facts(Some(11_500)), events);
        assert!(r.passed);
        assert_eq!(r.detection_ms, Some(4));
        assert_eq!(
            r.detection_by.as_deref(),
            Some("switch session lost (sw01)")
        );
        assert_eq!(
            (r.reconnect_first_ms, r.reconnect_last_ms),
            (Some(1010), Some(1030))
        );
        assert_eq!((r.audit_median_ms, r.audit_max_ms), (Some(270), Some(270)));
        assert_eq!(r.audit_done_ms, Some(1300));
        assert_eq!(r.routes_live_ms, Some(1350));
        assert_eq!(r.converged_ms, Some(1500));
        assert_eq!(r.switches_reconnected, vec!["sw01", "sw02"]);
        let whats: Vec<&str> = r.lines.iter().map(|l| l.what.as_str()).collect();
        assert_eq!(whats[0], "fault");
        assert!(whats.contains(&"reconnected (first of 2)"));
        assert!(whats.contains(&"reconnected (last)"));
        assert_eq!(*whats.last().unwrap(), "converged");
    }

    #[test]
    fn dual_active_beyond_the_allowance_and_no_convergence_fail() {
        let events = vec![
            Event::new(10_000, EventKind::Fault, "agent-a", "SIGSTOP"),
            Event::new(10_100, EventKind::DualActive, "sw03", "agent-a and agent-b").with_value(40),
        ];
        let mut f = facts(Some(12_000));
        f.max_dual_active_ms = 50;
        assert!(build_window(f, events.clone()).passed);
        let r = build_window(facts(Some(12_000)), events.clone());
        assert!(!r.passed);
        assert_eq!(
            r.violations[0].to_string(),
            "sw03: agent-a and agent-b for 40 ms from +100 ms (allowed 0 ms in this step)"
        );
        let r = build_window(facts(None), vec![]);
        assert!(!r.passed);
        assert_eq!(r.violations[0].message, "did not converge");
    }
}
