//! Prometheus text exposition of the agent's state and counters.

use std::fmt::Write;
use std::time::{Duration, Instant};

use super::load::{CoreLoad, Work};
use crate::core::Core;

/// What the core loop's driver knows about the loop itself.
pub struct CoreView<'a> {
    pub load: &'a CoreLoad,
    /// Events waiting in the core's queue.
    pub queued: usize,
}

/// Buckets of the takeover duration histogram, in seconds.
const BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(core: &Core, view: &CoreView<'_>, now: Instant, started: Instant) -> String {
    let st = core.status(now);
    let c = &core.counters;
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    metric(
        "tor_agent_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
        &[(
            String::new(),
            now.saturating_duration_since(started).as_secs_f64(),
        )],
    );
    metric(
        "tor_agent_ready",
        "gauge",
        "1 when the agent takes new switches (a control node is up and config is complete).",
        &[(
            String::new(),
            if st.readiness == "ready" { 1.0 } else { 0.0 },
        )],
    );
    metric(
        "tor_agent_switch_active",
        "gauge",
        "1 when this agent holds the switch's session (mastership); alarm when the sum over agents is not 1.",
        &st.switches
            .iter()
            .map(|s| (format!("{{switch=\"{}\"}}", esc(&s.name)), if s.active { 1.0 } else { 0.0 }))
            .collect::<Vec<_>>(),
    );
    metric(
        "tor_agent_switch_macs",
        "gauge",
        "MAC rows in the switch's database.",
        &st.switches
            .iter()
            .flat_map(|s| {
                [
                    (
                        format!("{{switch=\"{}\",table=\"local\"}}", esc(&s.name)),
                        s.macs_local as f64,
                    ),
                    (
                        format!("{{switch=\"{}\",table=\"remote\"}}", esc(&s.name)),
                        s.macs_remote as f64,
                    ),
                ]
            })
            .collect::<Vec<_>>(),
    );
    metric(
        "tor_agent_switch_routes_exported",
        "gauge",
        "Routes the switch contributes (live, HA-stale shadows and broadcast).",
        &st.switches
            .iter()
            .map(|s| {
                (
                    format!("{{switch=\"{}\"}}", esc(&s.name)),
                    s.routes_exported as f64,
                )
            })
            .collect::<Vec<_>>(),
    );
    metric(
        "tor_agent_sessions",
        "gauge",
        "Open switch sessions.",
        &[(String::new(), st.sessions.len() as f64)],
    );
    metric(
        "tor_agent_sessions_opened_total",
        "counter",
        "Switch sessions opened.",
        &[(String::new(), c.sessions_opened as f64)],
    );
    metric(
        "tor_agent_sessions_closed_total",
        "counter",
        "Switch sessions closed.",
        &[(String::new(), c.sessions_closed as f64)],
    );
    metric(
        "tor_agent_takeovers_total",
        "counter",
        "Takeovers completed (switch programmed and local MACs exported).",
        &[(String::new(), c.takeovers as f64)],
    );
    let mut hist = Vec::new();
    for b in BUCKETS {
        let n = c
            .takeover_durations
            .iter()
            .filter(|d| d.as_secs_f64() <= *b)
            .count();
        hist.push((format!("_bucket{{le=\"{b}\"}}"), n as f64));
    }
    hist.push((
        "_bucket{le=\"+Inf\"}".into(),
        c.takeover_durations.len() as f64,
    ));
    hist.push((
        "_sum".into(),
        c.takeover_durations.iter().sum::<Duration>().as_secs_f64(),
    ));
    hist.push(("_count".into(), c.takeover_durations.len() as f64));
    let _ = writeln!(
        o,
        "# HELP tor_agent_takeover_duration_seconds From switch session arrival to converged.\n# TYPE tor_agent_takeover_duration_seconds histogram"
    );
    for (suffix, v) in hist {
        let _ = writeln!(o, "tor_agent_takeover_duration_seconds{suffix} {v}");
    }
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    metric(
        "tor_agent_transactions_total",
        "counter",
        "OVSDB transactions sent to switches, by result.",
        &[
            ("{result=\"ok\"}".into(), c.txns_ok as f64),
            ("{result=\"failed\"}".into(), c.txns_failed as f64),
        ],
    );
    metric(
        "tor_agent_routes_received",
        "gauge",
        "Routes held from the control nodes.",
        &[(String::new(), st.routes_received as f64)],
    );
    metric(
        "tor_agent_routes_published",
        "gauge",
        "Routes this agent publishes.",
        &[(String::new(), st.routes_published as f64)],
    );
    metric(
        "tor_agent_route_updates_total",
        "counter",
        "Route publishes and withdrawals sent.",
        &[
            ("{kind=\"publish\"}".into(), c.routes_published as f64),
            ("{kind=\"withdraw\"}".into(), c.routes_withdrawn as f64),
        ],
    );
    metric(
        "tor_agent_control_node_up",
        "gauge",
        "1 while the XMPP session to the control node is established.",
        &st.control_nodes
            .iter()
            .map(|n| {
                (
                    format!("{{index=\"{}\"}}", n.index),
                    if n.up { 1.0 } else { 0.0 },
                )
            })
            .collect::<Vec<_>>(),
    );
    metric(
        "tor_agent_config_pushes_total",
        "counter",
        "Config pushes received.",
        &[(String::new(), c.config_pushes as f64)],
    );
    let by_work = |f: &dyn Fn(Work) -> f64| {
        Work::ALL
            .iter()
            .map(|w| (format!("{{work=\"{}\"}}", w.label()), f(*w)))
            .collect::<Vec<_>>()
    };
    metric(
        "tor_agent_core_busy_seconds_total",
        "counter",
        "Time the core loop (one thread, all switches and routes) spent, by kind of work; the rate of the sum is its utilisation.",
        &by_work(&|w| view.load.busy(w).as_secs_f64()),
    );
    metric(
        "tor_agent_core_work_total",
        "counter",
        "Inputs and flushes the core loop handled, by kind of work.",
        &by_work(&|w| view.load.count(w) as f64),
    );
    metric(
        "tor_agent_core_queued_events",
        "gauge",
        "Events waiting for the core loop when the metrics were taken (a backlog means it is saturated).",
        &[(String::new(), view.queued as f64)],
    );
    o
}
