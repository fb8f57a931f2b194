//! The agent's status as operators read it: the admin API's payload and
//! the `status` tables.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SwitchStatus {
    pub name: String,
    /// `active`, `auditing` (takeover in progress) or `standby`.
    pub state: String,
    /// This agent holds the switch's session (its mastership).
    pub active: bool,
    pub peer: Option<String>,
    pub session_age_s: Option<f64>,
    pub macs_local: usize,
    pub macs_remote: usize,
    /// Routes this switch contributes (live, shadows and broadcast).
    pub routes_exported: usize,
    /// Of those, published at live preference.
    pub routes_live: usize,
    pub txn_in_flight: usize,
    pub stale_rows_waiting: usize,
    pub missing_ports: Vec<String>,
    pub takeovers: u64,
    pub last_takeover_ms: Option<u64>,
    pub last_takeover_ago_s: Option<f64>,
    pub last_release: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionStatus {
    pub id: u64,
    pub peer: String,
    pub switch: Option<String>,
    pub cert_name: Option<String>,
    pub age_s: f64,
    pub rows: usize,
    pub monitor_ready: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CnStatus {
    pub index: usize,
    pub up: bool,
    pub for_config: bool,
    pub since_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AgentStatus {
    pub agent: String,
    pub readiness: String,
    pub config_complete: bool,
    pub devices: usize,
    pub vrfs: usize,
    pub routes_received: usize,
    pub routes_published: usize,
    pub switches: Vec<SwitchStatus>,
    pub sessions: Vec<SessionStatus>,
    pub control_nodes: Vec<CnStatus>,
    /// Milliseconds the core loop has been busy since the agent started, by kind of work
    /// (`admin::load::Work` labels); filled in by the loop's driver.
    #[serde(default)]
    pub core_busy_ms: std::collections::BTreeMap<String, u64>,
}

fn age(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

/// Renders rows as an aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(
        &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        &mut out,
    );
    line(
        &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
        &mut out,
    );
    for r in rows {
        line(r, &mut out);
    }
    out
}

impl AgentStatus {
    /// The `status` subcommand's output.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "agent {}  readiness {}  config {}  switches {}  vrfs {}  routes received {}  published {}\n",
            self.agent,
            self.readiness,
            if self.config_complete { "complete" } else { "incomplete" },
            self.devices,
            self.vrfs,
            self.routes_received,
            self.routes_published
        );
        let rows: Vec<Vec<String>> = self
            .switches
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.state.clone(),
                    s.peer.clone().unwrap_or_else(|| "-".into()),
                    age(s.session_age_s),
                    s.macs_local.to_string(),
                    s.macs_remote.to_string(),
                    format!("{}/{}", s.routes_live, s.routes_exported),
                    s.txn_in_flight.to_string(),
                    s.stale_rows_waiting.to_string(),
                    s.takeovers.to_string(),
                    s.last_takeover_ms
                        .map(|m| format!("{m}ms"))
                        .unwrap_or_else(|| "-".into()),
                    s.last_release.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "SWITCH",
                "STATE",
                "PEER",
                "AGE",
                "LOCAL",
                "REMOTE",
                "ROUTES(live/all)",
                "TXN",
                "STALE",
                "TAKEOVERS",
                "LAST TAKEOVER",
                "LAST RELEASE",
            ],
            &rows,
        ));
        let unbound: Vec<Vec<String>> = self
            .sessions
            .iter()
            .filter(|s| s.switch.is_none())
            .map(|s| {
                vec![
                    s.id.to_string(),
                    s.peer.clone(),
                    s.cert_name.clone().unwrap_or_else(|| "-".into()),
                    age(Some(s.age_s)),
                    s.rows.to_string(),
                    if s.monitor_ready {
                        "no config for this switch"
                    } else {
                        "loading"
                    }
                    .into(),
                ]
            })
            .collect();
        if !unbound.is_empty() {
            out.push_str("\nsessions without a managed switch:\n");
            out.push_str(&table(
                &["ID", "PEER", "CERT", "AGE", "ROWS", "WHY"],
                &unbound,
            ));
        }
        let cns: Vec<Vec<String>> = self
            .control_nodes
            .iter()
            .map(|c| {
                vec![
                    c.index.to_string(),
                    if c.up { "up" } else { "down" }.into(),
                    if c.for_config { "yes" } else { "no" }.into(),
                    age(c.since_s),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["CONTROL NODE", "STATE", "CONFIG", "FOR"], &cns));
        out
    }
}
