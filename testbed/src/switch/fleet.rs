//! Many simulated switches in one process, found by name.

use std::collections::HashMap;

use super::{DriverStats, SimSwitch, SimSwitchHandle, SwitchError, SwitchSpec};

/// Switches started together; they share the caller's runtime.
#[derive(Clone, Default)]
pub struct SwitchFleet {
    switches: Vec<SimSwitchHandle>,
    by_name: HashMap<String, usize>,
}

/// Sums over a fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FleetStats {
    pub switches: usize,
    pub hosts: usize,
    pub local_rows: usize,
    pub bound_logical_switches: usize,
    pub transactions: u64,
    pub failed_transactions: u64,
    pub moved_away: u64,
}

impl SwitchFleet {
    /// Starts every switch; on the first failure the ones already started
    /// are shut down and the error is returned. Names must be unique.
    pub async fn start(
        specs: impl IntoIterator<Item = SwitchSpec>,
    ) -> Result<SwitchFleet, SwitchError> {
        let mut fleet = SwitchFleet::default();
        for spec in specs {
            if fleet.by_name.contains_key(&spec.name) {
                let name = spec.name.clone();
                fleet.shutdown().await;
                return Err(SwitchError::Config(format!(
                    "switch name {name} appears twice"
                )));
            }
            match SimSwitch::start(spec).await {
                Ok(h) => fleet.push(h),
                Err(e) => {
                    fleet.shutdown().await;
                    return Err(e);
                }
            }
        }
        Ok(fleet)
    }

    /// Adds a switch started elsewhere (replacing one of the same name).
    pub fn push(&mut self, h: SimSwitchHandle) {
        match self.by_name.get(h.name()) {
            Some(&i) => {
                if let Some(slot) = self.switches.get_mut(i) {
                    *slot = h;
                }
            }
            None => {
                self.by_name
                    .insert(h.name().to_string(), self.switches.len());
                self.switches.push(h);
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&SimSwitchHandle> {
        self.by_name.get(name).and_then(|&i| self.switches.get(i))
    }

    /// The switch by name, or an error naming it.
    pub fn switch(&self, name: &str) -> Result<&SimSwitchHandle, SwitchError> {
        self.get(name)
            .ok_or_else(|| SwitchError::UnknownSwitch(name.to_string()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &SimSwitchHandle> {
        self.switches.iter()
    }

    pub fn len(&self) -> usize {
        self.switches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.switches.is_empty()
    }

    /// Waits until every switch has reacted to every commit so far.
    pub async fn sync(&self) -> Result<(), SwitchError> {
        for s in &self.switches {
            s.sync().await?;
        }
        Ok(())
    }

    pub async fn stats(&self) -> Result<FleetStats, SwitchError> {
        let mut out = FleetStats {
            switches: self.switches.len(),
            ..FleetStats::default()
        };
        for s in &self.switches {
            let DriverStats {
                fdb,
                transactions,
                failed_transactions,
                moved_away,
                ..
            } = s.stats().await?;
            out.hosts += fdb.hosts;
            out.local_rows += fdb.local_rows;
            out.bound_logical_switches += fdb.bound_logical_switches;
            out.transactions += transactions;
            out.failed_transactions += failed_transactions;
            out.moved_away += moved_away;
        }
        Ok(out)
    }

    /// Shuts every switch down.
    pub async fn shutdown(&self) {
        for s in &self.switches {
            s.shutdown().await;
        }
    }
}
