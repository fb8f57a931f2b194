//! The scenario report: machine-readable (JSON) and as text an operator reads — per window
//! the timeline in milliseconds from the fault, the measured times, route churn at the
//! control node, violations, and PASS/FAIL; then medians per fault kind.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::invariants::Violation;
use super::spec::{Scenario, Timing, Topology};
use super::timeline::WindowReport;

#[derive(Debug, Clone, Default, Serialize)]
pub struct SetupReport {
    /// Time from the switches' start to the first convergence.
    pub converged_ms: Option<u64>,
    pub violations: Vec<Violation>,
    pub notes: Vec<String>,
}

/// Medians over the windows of one kind (e.g. every `agent_crash`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct KindSummary {
    pub faults: String,
    pub windows: usize,
    pub passed: usize,
    pub switches_moved_median: Option<u64>,
    pub detection_median_ms: Option<i64>,
    pub reconnect_last_median_ms: Option<i64>,
    pub audit_max_median_ms: Option<i64>,
    pub routes_live_median_ms: Option<i64>,
    pub converged_median_ms: Option<i64>,
    pub converged_max_ms: Option<i64>,
    pub withdrawn_total: usize,
    /// The highest VmHWM (peak resident set) of any agent at the end of these windows, KiB.
    pub agent_peak_max_kb: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub description: String,
    pub topology: Topology,
    pub timing: Timing,
    pub repeat: u32,
    pub run_dir: Option<String>,
    pub setup: SetupReport,
    pub windows: Vec<WindowReport>,
    pub summary: Vec<KindSummary>,
    /// Windows the steps make (converging steps x repeat).
    pub windows_planned: usize,
    pub passed: bool,
    pub failures: Vec<String>,
}

fn median<T: Copy + Ord>(mut v: Vec<T>) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// The kind of a window: its steps' actions without targets (`agent_crash`, …).
fn kind_of(w: &WindowReport) -> String {
    w.faults
        .iter()
        .map(|f| f.split(' ').next().unwrap_or(f))
        .collect::<Vec<_>>()
        .join("+")
}

pub fn summarize(windows: &[WindowReport]) -> Vec<KindSummary> {
    let mut by: BTreeMap<String, Vec<&WindowReport>> = BTreeMap::new();
    for w in windows {
        by.entry(kind_of(w)).or_default().push(w);
    }
    by.into_iter()
        .map(|(k, ws)| KindSummary {
            faults: k,
            windows: ws.len(),
            passed: ws.iter().filter(|w| w.passed).count(),
            switches_moved_median: median(
                ws.iter()
                    .map(|w| w.switches_reconnected.len() as u64)
                    .collect(),
            ),
            detection_median_ms: median(ws.iter().filter_map(|w| w.detection_ms).collect()),
            reconnect_last_median_ms: median(
                ws.iter().filter_map(|w| w.reconnect_last_ms).collect(),
            ),
            audit_max_median_ms: median(
                ws.iter()
                    .filter_map(|w| w.audit_max_ms.map(|v| v as i64))
                    .collect(),
            ),
            routes_live_median_ms: median(ws.iter().filter_map(|w| w.routes_live_ms).collect()),
            converged_median_ms: median(ws.iter().filter_map(|w| w.converged_ms).collect()),
            converged_max_ms: ws.iter().filter_map(|w| w.converged_ms).max(),
            withdrawn_total: ws
                .iter()
                .flat_map(|w| w.routes.iter().map(|r| r.withdrawn))
                .sum(),
            agent_peak_max_kb: ws
                .iter()
                .flat_map(|w| w.memory.iter())
                .filter(|m| m.name.starts_with("agent-"))
                .filter_map(|m| m.peak_kb)
                .max(),
        })
        .collect()
}

fn mib(kb: Option<u64>) -> String {
    kb.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn opt(v: Option<i64>) -> String {
    v.map_or("-".into(), |v| format!("{v}"))
}

impl ScenarioReport {
    pub fn new(s: &Scenario) -> ScenarioReport {
        ScenarioReport {
            scenario: s.name.clone(),
            description: s.description.clone(),
            topology: s.topology.clone(),
            timing: s.timing.clone(),
            repeat: s.repeat,
            run_dir: None,
            setup: SetupReport::default(),
            windows: Vec::new(),
            summary: Vec::new(),
            windows_planned: s.steps.iter().filter(|x| x.converge).count() * s.repeat as usize,
            passed: false,
            failures: Vec::new(),
        }
    }

    /// Computes the summary and the verdict.
    pub fn finish(&mut self) {
        self.summary = summarize(&self.windows);
        self.failures.clear();
        if self.setup.converged_ms.is_none() {
            self.failures.push(format!(
                "setup: the topology never converged: {}",
                self.setup
                    .violations
                    .iter()
                    .take(5)
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        for w in &self.windows {
            for v in &w.violations {
                self.failures
                    .push(format!("window {} ({}): {v}", w.window, w.label));
            }
        }
        let expected = self.expected_windows();
        if self.setup.converged_ms.is_some() && self.windows.len() < expected {
            self.failures.push(format!(
                "only {} of {expected} windows ran",
                self.windows.len()
            ));
        }
        self.passed = self.failures.is_empty();
    }

    fn expected_windows(&self) -> usize {
        self.windows_planned
    }

    pub fn render_text(&self) -> String {
        let mut o = String::new();
        let t = &self.topology;
        let _ = writeln!(o, "scenario: {}", self.scenario);
        if !self.description.is_empty() {
            let _ = writeln!(o, "  {}", self.description.trim());
        }
        let _ = writeln!(
            o,
            "topology: {} simulated + {} real switches x {} MACs, {} networks per group, {} agents, 1 proxy, {} control node(s)",
            t.switches, t.real_switches, t.macs_per_switch, t.vns_per_group, t.agents, t.control_nodes
        );
        let tm = &self.timing;
        let _ = writeln!(
            o,
            "timing: agent keepalive {} ms, HA-stale {} ms, stale grace {} ms; proxy {} check every {} ms (fast {} ms, timeout {} ms, fall {}, rise {}); switch max backoff {} ms; sampling {} ms",
            tm.agent_keepalive_ms,
            tm.ha_stale_ms,
            tm.stale_grace_ms,
            tm.proxy_check,
            tm.proxy_interval_ms,
            tm.proxy_fast_interval_ms,
            tm.proxy_timeout_ms,
            tm.proxy_fall,
            tm.proxy_rise,
            tm.switch_max_backoff_ms,
            tm.sample_ms
        );
        match self.setup.converged_ms {
            Some(ms) => {
                let _ = writeln!(o, "setup: converged {ms} ms after the switches started");
            }
            None => {
                let _ = writeln!(o, "setup: did NOT converge");
                for v in &self.setup.violations {
                    let _ = writeln!(o, "  ! {v}");
                }
            }
        }
        for n in &self.setup.notes {
            let _ = writeln!(o, "  note: {n}");
        }
        for w in &self.windows {
            let _ = writeln!(
                o,
                "\nwindow {} (round {}): {} — {}",
                w.window,
                w.round + 1,
                w.label,
                if w.passed { "PASS" } else { "FAIL" }
            );
            for l in &w.lines {
                let _ = writeln!(o, "  {:>+8} ms  {:<32} {}", l.at_ms, l.what, l.detail);
            }
            let _ = writeln!(
                o,
                "  measured: detection {} ms{}, reconnect {}..{} ms ({} switches), audit median {} / max {} ms (done at {} ms), routes live at {} ms, converged at {} ms",
                opt(w.detection_ms),
                w.detection_by
                    .as_deref()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default(),
                opt(w.reconnect_first_ms),
                opt(w.reconnect_last_ms),
                w.switches_reconnected.len(),
                w.audit_median_ms.map_or("-".into(), |v| v.to_string()),
                w.audit_max_ms.map_or("-".into(), |v| v.to_string()),
                opt(w.audit_done_ms),
                opt(w.routes_live_ms),
                opt(w.converged_ms)
            );
            for (i, r) in w.routes.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "  control node {i}: {} MAC routes withdrawn, {} re-added, {} fell to HA-stale, {} back to live, {} new, {} broadcast changes",
                    r.withdrawn, r.readded, r.to_stale, r.to_live, r.added, r.broadcast_changes
                );
            }
            let mem: Vec<String> = w
                .memory
                .iter()
                .filter(|m| m.rss_end_kb.is_some() || m.rss_start_kb.is_some())
                .map(|m| {
                    format!(
                        "{} {} -> {} (peak {})",
                        m.name,
                        mib(m.rss_start_kb),
                        mib(m.rss_end_kb),
                        mib(m.peak_kb)
                    )
                })
                .collect();
            if !mem.is_empty() {
                let _ = writeln!(o, "  memory (RSS at start -> end, MiB): {}", mem.join(", "));
            }
            if w.dual_active_max_ms > 0 {
                let _ = writeln!(
                    o,
                    "  dual active: longest {} ms (sampled)",
                    w.dual_active_max_ms
                );
            }
            for n in &w.notes {
                let _ = writeln!(o, "  note: {n}");
            }
            for v in &w.violations {
                let _ = writeln!(o, "  ! {v}");
            }
        }
        if !self.summary.is_empty() {
            let _ = writeln!(
                o,
                "\nsummary (medians over windows of the same kind, ms from the fault):"
            );
            let _ = writeln!(
                o,
                "  {:<28} {:>4} {:>5} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>14}",
                "fault",
                "runs",
                "pass",
                "moved",
                "detect",
                "reconnect",
                "audit",
                "live",
                "converged",
                "max conv",
                "agent peak MiB"
            );
            for s in &self.summary {
                let _ = writeln!(
                    o,
                    "  {:<28} {:>4} {:>5} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>14}",
                    s.faults,
                    s.windows,
                    s.passed,
                    s.switches_moved_median
                        .map_or("-".into(), |v| v.to_string()),
                    opt(s.detection_median_ms),
                    opt(s.reconnect_last_median_ms),
                    opt(s.audit_max_median_ms),
                    opt(s.routes_live_median_ms),
                    opt(s.converged_median_ms),
                    opt(s.converged_max_ms),
                    mib(s.agent_peak_max_kb)
                );
            }
        }
        let _ = writeln!(
            o,
            "\nconvergence check: {}",
            if self.passed { "PASS" } else { "FAIL" }
        );
        for f in &self.failures {
            let _ = writeln!(o, "  ! {f}");
        }
        if let Some(d) = &self.run_dir {
            let _ = writeln!(o, "run directory (configs, logs): {d}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::timeline::{build_window, Event, EventKind, WindowFacts};

    fn window(i: usize, fault: &str, detect: u64, converged: u64) -> WindowReport {
        build_window(
            WindowFacts {
                window: i,
                round: 0,
                label: fault.into(),
                faults: vec![format!("{fault} agent-a")],
                start_ms: 1000,
                converged_ms: Some(1000 + converged),
                routes: vec![],
                violations: vec![],
                notes: vec![],
                max_dual_active_ms: 0,
            },
            vec![
                Event::new(1000, EventKind::Fault, "agent-a", fault),
                Event::new(1000 + detect, EventKind::ProxyDown, "agent-a", ""),
            ],
        )
    }

    #[test]
    fn summary_takes_medians_per_kind_and_text_shows_the_verdict() {
        let s = Scenario::from_toml("name = \"t\"\n[[step]]\ndo = \"converge\"").unwrap();
        let mut r = ScenarioReport::new(&s);
        r.setup.converged_ms = Some(900);
        r.windows = vec![
            window(1, "agent_crash", 10, 1500),
            window(2, "agent_restart", 0, 700),
            window(3, "agent_crash", 30, 1900),
            window(4, "agent_crash", 20, 1700),
        ];
        r.windows_planned = 4;
        r.finish();
        assert!(r.passed, "{:?}", r.failures);
        let crash = r
            .summary
            .iter()
            .find(|k| k.faults == "agent_crash")
            .unwrap();
        assert_eq!(crash.windows, 3);
        assert_eq!(crash.detection_median_ms, Some(20));
        assert_eq!(crash.converged_median_ms, Some(1700));
        assert_eq!(crash.converged_max_ms, Some(1900));
        let text = r.render_text();
        assert!(
            text.contains("window 3 (round 1): agent_crash — PASS"),
            "{text}"
        );
        assert!(text.contains("convergence check: PASS"));
        // A missing window or a violation fails the run.
        r.windows_planned = 5;
        r.finish();
        assert!(!r.passed);
        assert!(r.failures[0].contains("only 4 of 5 windows ran"));
        r.windows_planned = 4;
        r.windows[1].violations.push(Violation {
            kind: crate::scenario::invariants::Kind::DualActive,
            subject: "sw01".into(),
            message: "2 agents".into(),
        });
        r.finish();
        assert!(!r.passed);
        assert!(r
            .render_text()
            .contains("! window 2 (agent_restart): sw01: 2 agents"));
    }
}
