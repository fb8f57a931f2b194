//! Where the core loop's time goes, by kind of work.
//!
//! The core is one thread that does every switch's and every route's work, so during a
//! takeover its busy time is the agent's limit. The driver (`runtime`) times each input and
//! each flush and records it here; the core itself stays free of clocks. Exposed as
//! `tor_agent_core_busy_seconds_total{work=...}` and `tor_agent_core_work_total{work=...}`:
//! the rate of the first, summed over `work`, is the loop's utilisation (1.0 = saturated).

use std::time::Duration;

use crate::core::Input;

/// A kind of work in the core loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Switch sessions opening, closing, schema, monitor ready.
    SwitchSessions,
    /// Monitor updates from switches (the initial dumps of a takeover are most of it).
    MonitorUpdates,
    /// Transaction results from switches.
    TxnResults,
    /// Route updates and withdrawals from control nodes.
    Routes,
    /// Config pushes and the control nodes' sessions coming and going.
    ControlNodes,
    /// Timers (shadow expiry, retries, housekeeping).
    Ticks,
    /// Planning the switches' transactions (the audits).
    Audits,
    /// Computing and sending the routes this agent publishes.
    Exports,
    /// Status and metrics requests.
    Admin,
}

impl Work {
    pub const ALL: [Work; 9] = [
        Work::SwitchSessions,
        Work::MonitorUpdates,
        Work::TxnResults,
        Work::Routes,
        Work::ControlNodes,
        Work::Ticks,
        Work::Audits,
        Work::Exports,
        Work::Admin,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Work::SwitchSessions => "switch_sessions",
            Work::MonitorUpdates => "monitor_updates",
            Work::TxnResults => "txn_results",
            Work::Routes => "routes",
            Work::ControlNodes => "control_nodes",
            Work::Ticks => "ticks",
            Work::Audits => "audits",
            Work::Exports => "exports",
            Work::Admin => "admin",
        }
    }

    pub fn of(input: &Input) -> Work {
        match input {
            Input::SessionOpened { .. }
            | Input::SessionSchema { .. }
            | Input::MonitorReady { .. }
            | Input::SessionClosed { .. } => Work::SwitchSessions,
            Input::SessionUpdates { .. } => Work::MonitorUpdates,
            Input::TxnDone { .. } => Work::TxnResults,
            Input::Routes { .. } | Input::Withdrawals { .. } | Input::EndOfRib { .. } => {
                Work::Routes
            }
            Input::CnUp { .. } | Input::CnDown { .. } | Input::ConfigPush { .. } => {
                Work::ControlNodes
            }
            Input::Tick => Work::Ticks,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Busy time and count per kind of work since the agent started.
#[derive(Debug, Default, Clone)]
pub struct CoreLoad {
    busy: [Duration; Work::ALL.len()],
    count: [u64; Work::ALL.len()],
}

impl CoreLoad {
    pub fn record(&mut self, work: Work, took: Duration) {
        let i = work.index();
        if let (Some(b), Some(c)) = (self.busy.get_mut(i), self.count.get_mut(i)) {
            *b += took;
            *c += 1;
        }
    }

    pub fn busy(&self, work: Work) -> Duration {
        self.busy.get(work.index()).copied().unwrap_or_default()
    }

    pub fn count(&self, work: Work) -> u64 {
        self.count.get(work.index()).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_slot_and_label() {
        let mut load = CoreLoad::default();
        for (i, w) in Work::ALL.iter().enumerate() {
            load.record(*w, Duration::from_millis(i as u64 + 1));
        }
        load.record(Work::Routes, Duration::from_millis(10));
        for (i, w) in Work::ALL.iter().enumerate() {
            let extra = if *w == Work::Routes { 10 } else { 0 };
            assert_eq!(load.busy(*w), Duration::from_millis(i as u64 + 1 + extra));
            assert_eq!(load.count(*w), if *w == Work::Routes { 2 } else { 1 });
        }
        let labels: std::collections::HashSet<_> = Work::ALL.iter().map(|w| w.label()).collect();
        assert_eq!(labels.len(), Work::ALL.len());
    }

    #[test]
    fn inputs_map_to_their_kind() {
        assert_eq!(Work::of(&Input::Tick), Work::Ticks);
        assert_eq!(Work::of(&Input::EndOfRib { cn: 0 }), Work::Routes);
        assert_eq!(Work::of(&Input::CnUp { cn: 1 }), Work::ControlNodes);
        assert_eq!(
            Work::of(&Input::MonitorReady { id: 7 }),
            Work::SwitchSessions
        );
    }
}
