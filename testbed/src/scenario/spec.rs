//! The scenario file (TOML): a topology, timing knobs, and steps (faults, waits, checks).
//! Parsing is strict (unknown keys are errors) and validation turns the raw steps into typed
//! [`Action`]s with messages that name the step and the field. Pure: no I/O beyond reading
//! the file. See `testbed/scenarios/*.toml` for examples and the field reference in
//! [`crate::scenario`].

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bounds that keep a typo from asking for a machine's worth of resources.
pub const MAX_SWITCHES: u32 = 5000;
pub const MAX_REAL_SWITCHES: u32 = 16;
pub const MAX_MACS_PER_SWITCH: u32 = 60_000;
pub const MAX_AGENTS: u32 = 8;
pub const MAX_REPEAT: u32 = 100;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("scenario TOML: {0}")]
    Toml(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("step {index} ({action}): {reason}")]
    Step {
        index: usize,
        action: String,
        reason: String,
    },
}

fn invalid(field: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// A scenario as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub topology: Topology,
    #[serde(default)]
    pub timing: Timing,
    /// The steps run this many times in a row on the same topology (for medians).
    #[serde(default = "one")]
    pub repeat: u32,
    #[serde(default, rename = "step")]
    pub steps: Vec<RawStep>,
}

fn one() -> u32 {
    1
}

/// What runs: switches, agents, proxies, control nodes, and how MACs and networks are laid out.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Topology {
    /// Simulated switches (in the runner's process, dialing the proxy like a real switch).
    pub switches: u32,
    /// Real `ovsdb-server` switches (Debian's openvswitch-vtep), configured with `vtep-ctl`.
    pub real_switches: u32,
    /// Local MACs per switch, spread over its virtual networks.
    pub macs_per_switch: u32,
    /// Virtual networks per group of switches; each is bound on its own port of every switch
    /// of the group (VLAN 100 + n).
    pub vns_per_group: u32,
    /// Switches per group (0: one group of every switch). Each group has its own networks,
    /// so a switch's remote MACs come from its group only.
    pub group_size: u32,
    /// ToR agents (child processes), all serving every switch.
    pub agents: u32,
    /// tor-proxy instances (child processes). One is supported: a proxy pair needs the VIP
    /// that `tests/tests/vrrp_pair.rs` covers with keepalived.
    pub proxies: u32,
    /// Simulated control nodes (in the runner's process), one or two.
    pub control_nodes: u32,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            switches: 4,
            real_switches: 0,
            macs_per_switch: 100,
            vns_per_group: 2,
            group_size: 0,
            agents: 2,
            proxies: 1,
            control_nodes: 1,
        }
    }
}

/// Timing knobs of the agents, the proxy and the runner.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// Agent: OVSDB echo after this much silence (the agent raises values below 2000).
    pub agent_keepalive_ms: u64,
    /// Agent: HA-stale shadow routes outlive the last live path by this much.
    pub ha_stale_ms: u64,
    /// Agent: rows found at takeover that nothing wants are removed after this.
    pub stale_grace_ms: u64,
    /// Agent and control node: XMPP hold time.
    pub hold_time_s: u64,
    /// Agent: config is complete after this long without a push.
    pub end_of_config_quiet_ms: u64,
    /// Agent: rows per transaction and transactions in flight per switch.
    pub batch_rows: u32,
    pub max_txn_in_flight: u32,
    /// Proxy health check: "tls" (sees a hung agent) or "tcp".
    pub proxy_check: String,
    pub proxy_interval_ms: u64,
    pub proxy_fast_interval_ms: u64,
    pub proxy_timeout_ms: u64,
    pub proxy_rise: u32,
    pub proxy_fall: u32,
    pub proxy_connect_timeout_ms: u64,
    /// Proxy data-path threads (0: one per CPU).
    pub proxy_threads: u32,
    /// Switches: `Manager.max_backoff` and `Manager.inactivity_probe`.
    pub switch_max_backoff_ms: u64,
    pub switch_inactivity_probe_ms: u64,
    /// Runner: how often agents, proxy and switches are polled during a fault window.
    pub sample_ms: u64,
    /// Runner: default time allowed to converge after a step.
    pub settle_timeout_s: u64,
    /// Runner: time allowed for the first convergence (initial programming).
    pub setup_timeout_s: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            agent_keepalive_ms: 2000,
            ha_stale_ms: 30_000,
            stale_grace_ms: 2000,
            hold_time_s: 9,
            end_of_config_quiet_ms: 500,
            batch_rows: 500,
            max_txn_in_flight: 8,
            proxy_check: "tls".into(),
            proxy_interval_ms: 500,
            proxy_fast_interval_ms: 200,
            proxy_timeout_ms: 300,
            proxy_rise: 2,
            proxy_fall: 2,
            proxy_connect_timeout_ms: 1000,
            proxy_threads: 1,
            switch_max_backoff_ms: 8000,
            switch_inactivity_probe_ms: 5000,
            sample_ms: 50,
            settle_timeout_s: 60,
            setup_timeout_s: 120,
        }
    }
}

/// One step as written; [`Scenario::from_file`] checks it and makes a [`Step`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    #[serde(rename = "do")]
    pub action: String,
    pub label: Option<String>,
    pub agent: Option<String>,
    pub link: Option<String>,
    pub mode: Option<String>,
    pub proxy: Option<String>,
    pub switch: Option<String>,
    pub switches: Option<Vec<String>>,
    pub control_node: Option<u32>,
    pub down_ms: Option<u64>,
    pub ms: Option<u64>,
    pub learn: Option<u32>,
    pub unlearn: Option<u32>,
    #[serde(rename = "move")]
    pub moves: Option<u32>,
    pub age: Option<u32>,
    pub change: Option<String>,
    pub vn: Option<String>,
    pub vni: Option<u32>,
    pub port: Option<String>,
    pub vlan: Option<u16>,
    /// Wait for convergence after this step (default: true, except `wait`).
    pub converge: Option<bool>,
    pub timeout_s: Option<u64>,
    /// Require HA-stale continuity in this step's window.
    pub continuity: Option<bool>,
    /// Longest time two agents may both report a switch active in this window.
    pub max_dual_active_ms: Option<u64>,
}

/// Which agent a step acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentRef {
    Named(String),
    /// The agent holding the most switches when the step runs (ties: the first by name).
    Busiest,
    /// The agent the latest agent fault acted on (to restart or resume it).
    Previous,
}

/// The two fault-injecting links of each agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkSide {
    /// Proxy → agent: OVSDB sessions, health checks, readiness.
    South,
    /// Agent → control node(s).
    North,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRef {
    pub agent: AgentRef,
    pub side: LinkSide,
}

/// How a link is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CutMode {
    /// Stop forwarding both ways, keep the sockets (a silent partition).
    Blackhole,
    /// Reset every connection and refuse new ones.
    Reset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// A virtual network's VNI changes.
    Vni { vn: String, vni: u32 },
    /// A VLAN of a port is bound to a network, created with `vni` when it does not exist.
    AddBinding {
        switch: String,
        port: String,
        vlan: u16,
        vn: String,
        vni: Option<u32>,
    },
    RemoveBinding {
        switch: String,
        port: String,
        vlan: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    AgentCrash(AgentRef),
    AgentHang(AgentRef),
    AgentResume(AgentRef),
    AgentRestart(AgentRef),
    Partition(LinkRef, CutMode),
    Heal(LinkRef),
    ControlNodeRestart { index: u32, down: Duration },
    ProxyCrash,
    ProxyRestart,
    SwitchRestart { switch: String, down: Duration },
    MacChurn(Churn),
    Config(ConfigChange),
    Wait(Duration),
    Converge,
}

/// MAC changes per switch, made at once (while a failover runs, when the step before does
/// not converge).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Churn {
    /// Switches to churn; empty: every simulated switch.
    pub switches: Vec<String>,
    pub learn: u32,
    pub unlearn: u32,
    pub moves: u32,
    pub age: u32,
}

impl Action {
    /// The step's name as written in the file.
    pub fn name(&self) -> &'static str {
        match self {
            Action::AgentCrash(_) => "agent_crash",
            Action::AgentHang(_) => "agent_hang",
            Action::AgentResume(_) => "agent_resume",
            Action::AgentRestart(_) => "agent_restart",
            Action::Partition(..) => "partition",
            Action::Heal(_) => "heal",
            Action::ControlNodeRestart { .. } => "control_node_restart",
            Action::ProxyCrash => "proxy_crash",
            Action::ProxyRestart => "proxy_restart",
            Action::SwitchRestart { .. } => "switch_restart",
            Action::MacChurn(_) => "mac_churn",
            Action::Config(_) => "config_change",
            Action::Wait(_) => "wait",
            Action::Converge => "converge",
        }
    }

    /// Whether HA-stale continuity is expected by default: every route stays at the control
    /// node unless the fault takes the control node's routes (its restart) or the switch's
    /// MACs themselves (its restart, which relearns from an empty database).
    fn continuity_default(&self) -> bool {
        !matches!(
            self,
            Action::ControlNodeRestart { .. } | Action::SwitchRestart { .. }
        )
    }
}

/// A checked step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based position in the file.
    pub index: usize,
    pub label: String,
    pub action: Action,
    pub converge: bool,
    pub timeout: Duration,
    pub continuity: bool,
    pub max_dual_active: Duration,
}

/// A checked scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub topology: Topology,
    pub timing: Timing,
    pub repeat: u32,
    pub steps: Vec<Step>,
}

/// Agent names: `agent-a`, `agent-b`, …
pub fn agent_name(i: u32) -> String {
    let letter = char::from(b'a' + (i % 26) as u8);
    format!("agent-{letter}")
}

/// Simulated switch names: `sw01`, `sw02`, … (zero-padded to the fleet's width).
pub fn switch_name(i: u32, count: u32) -> String {
    let width = count.max(1).to_string().len().max(2);
    format!("sw{:0width$}", i + 1)
}

/// Real switch names: `rsw1`, `rsw2`, …
pub fn real_switch_name(i: u32) -> String {
    format!("rsw{}", i + 1)
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Scenario::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Scenario, SpecError> {
        let file: ScenarioFile =
            toml::from_str(text).map_err(|e| SpecError::Toml(e.to_string()))?;
        Scenario::from_file(file)
    }

    /// Every agent name of the topology.
    pub fn agent_names(&self) -> Vec<String> {
        (0..self.topology.agents).map(agent_name).collect()
    }

    /// Every switch name, simulated then real.
    pub fn switch_names(&self) -> Vec<String> {
        let t = &self.topology;
        (0..t.switches)
            .map(|i| switch_name(i, t.switches))
            .chain((0..t.real_switches).map(real_switch_name))
            .collect()
    }

    pub fn from_file(f: ScenarioFile) -> Result<Scenario, SpecError> {
        if f.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        let t = &f.topology;
        if t.switches + t.real_switches == 0 {
            return Err(invalid(
                "topology",
                "at least one switch (switches or real_switches)",
            ));
        }
        if t.switches > MAX_SWITCHES {
            return Err(invalid(
                "topology.switches",
                format!("at most {MAX_SWITCHES}"),
            ));
        }
        if t.real_switches > MAX_REAL_SWITCHES {
            return Err(invalid(
                "topology.real_switches",
                format!("at most {MAX_REAL_SWITCHES} (each is an ovsdb-server process)"),
            ));
        }
        if t.macs_per_switch > MAX_MACS_PER_SWITCH {
            return Err(invalid(
                "topology.macs_per_switch",
                format!("at most {MAX_MACS_PER_SWITCH}"),
            ));
        }
        if t.vns_per_group == 0 || t.vns_per_group > 64 {
            return Err(invalid("topology.vns_per_group", "must be 1..=64"));
        }
        if t.agents == 0 || t.agents > MAX_AGENTS {
            return Err(invalid(
                "topology.agents",
                format!("must be 1..={MAX_AGENTS}"),
            ));
        }
        if t.proxies != 1 {
            return Err(invalid(
                "topology.proxies",
                "must be 1 (the proxy pair with its VIP is covered by tests/tests/vrrp_pair.rs)",
            ));
        }
        if t.control_nodes == 0 || t.control_nodes > 2 {
            return Err(invalid(
                "topology.control_nodes",
                "must be 1 or 2 (an agent talks to at most two)",
            ));
        }
        let groups = group_count(t);
        if u64::from(groups) * u64::from(t.vns_per_group) > 100_000 {
            return Err(invalid(
                "topology",
                "too many virtual networks (groups x vns_per_group > 100000)",
            ));
        }
        let tm = &f.timing;
        if !matches!(tm.proxy_check.as_str(), "tls" | "tcp") {
            return Err(invalid(
                "timing.proxy_check",
                format!(
                    "{:?}: expected \"tls\" or \"tcp\" (\"tcp\" cannot see a hung agent)",
                    tm.proxy_check
                ),
            ));
        }
        for (field, v) in [
            ("timing.proxy_interval_ms", tm.proxy_interval_ms),
            ("timing.proxy_fast_interval_ms", tm.proxy_fast_interval_ms),
            ("timing.proxy_timeout_ms", tm.proxy_timeout_ms),
            (
                "timing.proxy_connect_timeout_ms",
                tm.proxy_connect_timeout_ms,
            ),
            ("timing.sample_ms", tm.sample_ms),
            ("timing.settle_timeout_s", tm.settle_timeout_s),
            ("timing.setup_timeout_s", tm.setup_timeout_s),
            ("timing.batch_rows", u64::from(tm.batch_rows)),
            ("timing.max_txn_in_flight", u64::from(tm.max_txn_in_flight)),
            ("timing.proxy_rise", u64::from(tm.proxy_rise)),
            ("timing.proxy_fall", u64::from(tm.proxy_fall)),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        if tm.hold_time_s < 3 {
            return Err(invalid("timing.hold_time_s", "must be at least 3"));
        }
        if tm.ha_stale_ms < 1000 {
            return Err(invalid("timing.ha_stale_ms", "must be at least 1000"));
        }
        if tm.switch_max_backoff_ms < 1000 {
            return Err(invalid(
                "timing.switch_max_backoff_ms",
                "must be at least 1000 (Manager.max_backoff minimum)",
            ));
        }
        if f.repeat == 0 || f.repeat > MAX_REPEAT {
            return Err(invalid("repeat", format!("must be 1..={MAX_REPEAT}")));
        }
        if f.steps.is_empty() {
            return Err(invalid("step", "a scenario needs at least one [[step]]"));
        }
        let mut s = Scenario {
            name: f.name,
            description: f.description,
            topology: f.topology,
            timing: f.timing,
            repeat: f.repeat,
            steps: Vec::new(),
        };
        let mut steps = Vec::new();
        for (i, raw) in f.steps.into_iter().enumerate() {
            steps.push(s.check_step(i + 1, raw)?);
        }
        if let Some(last) = steps.last() {
            if !last.converge {
                return Err(SpecError::Step {
                    index: last.index,
                    action: last.action.name().into(),
                    reason: "the last step must converge (a fault is always followed by the \
                             invariant check)"
                        .into(),
                });
            }
        }
        s.steps = steps;
        Ok(s)
    }

    fn check_step(&self, index: usize, raw: RawStep) -> Result<Step, SpecError> {
        let name = raw.action.clone();
        let err = |reason: String| SpecError::Step {
            index,
            action: name.clone(),
            reason,
        };
        let agents = self.agent_names();
        let sim: Vec<String> = (0..self.topology.switches)
            .map(|i| switch_name(i, self.topology.switches))
            .collect();
        let all_switches = self.switch_names();
        let agent_ref = |v: &Option<String>| -> Result<AgentRef, SpecError> {
            match v.as_deref() {
                None => Err(err(
                    "needs `agent` (a name, \"busiest\" or \"previous\")".into()
                )),
                Some("busiest") => Ok(AgentRef::Busiest),
                Some("previous") => Ok(AgentRef::Previous),
                Some(n) if agents.iter().any(|a| a == n) => Ok(AgentRef::Named(n.to_string())),
                Some(n) => Err(err(format!(
                    "agent {n:?} is not one of {} (or \"busiest\", \"previous\")",
                    agents.join(", ")
                ))),
            }
        };
        let link_ref = |v: &Option<String>| -> Result<LinkRef, SpecError> {
            let Some(l) = v.as_deref() else {
                return Err(err(
                    "needs `link` (\"<agent>.south\" or \"<agent>.north\"; agent may be \"busiest\")"
                        .into(),
                ));
            };
            let Some((a, side)) = l.rsplit_once('.') else {
                return Err(err(format!(
                    "link {l:?} is not \"<agent>.south\" or \"<agent>.north\""
                )));
            };
            let side = match side {
                "south" => LinkSide::South,
                "north" => LinkSide::North,
                other => {
                    return Err(err(format!(
                        "link side {other:?} is not \"south\" (proxy to agent) or \"north\" (agent to control node)"
                    )))
                }
            };
            Ok(LinkRef {
                agent: agent_ref(&Some(a.to_string()))?,
                side,
            })
        };
        let ms = |v: Option<u64>| Duration::from_millis(v.unwrap_or(0));
        let action = match name.as_str() {
            "agent_crash" => Action::AgentCrash(agent_ref(&raw.agent)?),
            "agent_hang" => {
                if self.timing.proxy_check != "tls" {
                    return Err(err(
                        "a hung agent is only seen by the proxy's TLS check: set timing.proxy_check = \"tls\"".into(),
                    ));
                }
                Action::AgentHang(agent_ref(&raw.agent)?)
            }
            "agent_resume" => Action::AgentResume(agent_ref(&raw.agent)?),
            "agent_restart" => Action::AgentRestart(agent_ref(&raw.agent)?),
            "partition" => {
                let mode = match raw.mode.as_deref() {
                    None | Some("blackhole") => CutMode::Blackhole,
                    Some("reset") => CutMode::Reset,
                    Some(m) => {
                        return Err(err(format!("mode {m:?} is not \"blackhole\" or \"reset\"")))
                    }
                };
                Action::Partition(link_ref(&raw.link)?, mode)
            }
            "heal" => Action::Heal(link_ref(&raw.link)?),
            "control_node_restart" => {
                let index = raw.control_node.unwrap_or(0);
                if index >= self.topology.control_nodes {
                    return Err(err(format!(
                        "control_node {index} does not exist (0..{})",
                        self.topology.control_nodes
                    )));
                }
                Action::ControlNodeRestart {
                    index,
                    down: ms(raw.down_ms),
                }
            }
            "proxy_crash" => Action::ProxyCrash,
            "proxy_restart" => Action::ProxyRestart,
            "switch_restart" => {
                let Some(sw) = raw.switch.clone() else {
                    return Err(err("needs `switch`".into()));
                };
                if !sim.contains(&sw) {
                    return Err(err(format!(
                        "switch {sw:?} is not a simulated switch of this topology ({})",
                        preview(&sim)
                    )));
                }
                Action::SwitchRestart {
                    switch: sw,
                    down: ms(raw.down_ms),
                }
            }
            "mac_churn" => {
                let switches = raw.switches.clone().unwrap_or_default();
                for s in &switches {
                    if !all_switches.contains(s) {
                        return Err(err(format!(
                            "switch {s:?} is not in this topology ({})",
                            preview(&all_switches)
                        )));
                    }
                }
                let c = Churn {
                    switches,
                    learn: raw.learn.unwrap_or(0),
                    unlearn: raw.unlearn.unwrap_or(0),
                    moves: raw.moves.unwrap_or(0),
                    age: raw.age.unwrap_or(0),
                };
                if c.learn + c.unlearn + c.moves + c.age == 0 {
                    return Err(err(
                        "set at least one of learn, unlearn, move, age (MACs per switch)".into(),
                    ));
                }
                if c.unlearn + c.moves + c.age > self.topology.macs_per_switch {
                    return Err(err(format!(
                        "unlearn + move + age = {} exceeds macs_per_switch = {}",
                        c.unlearn + c.moves + c.age,
                        self.topology.macs_per_switch
                    )));
                }
                Action::MacChurn(c)
            }
            "config_change" => Action::Config(self.config_change(&raw, &all_switches, &err)?),
            "wait" => {
                let Some(v) = raw.ms else {
                    return Err(err("needs `ms`".into()));
                };
                Action::Wait(Duration::from_millis(v))
            }
            "converge" => Action::Converge,
            other => {
                return Err(err(format!(
                    "unknown action {other:?}; expected one of agent_crash, agent_hang, \
                     agent_resume, agent_restart, partition, heal, control_node_restart, \
                     proxy_crash, proxy_restart, switch_restart, mac_churn, config_change, \
                     wait, converge"
                )))
            }
        };
        let converge = raw.converge.unwrap_or(!matches!(action, Action::Wait(_)));
        if matches!(action, Action::Converge) && raw.converge == Some(false) {
            return Err(err("a converge step cannot set converge = false".into()));
        }
        Ok(Step {
            index,
            label: raw.label.unwrap_or_else(|| name.clone()),
            converge,
            timeout: Duration::from_secs(raw.timeout_s.unwrap_or(self.timing.settle_timeout_s)),
            continuity: raw
                .continuity
                .unwrap_or_else(|| action.continuity_default()),
            max_dual_active: Duration::from_millis(raw.max_dual_active_ms.unwrap_or(0)),
            action,
        })
    }

    fn config_change(
        &self,
        raw: &RawStep,
        switches: &[String],
        err: &dyn Fn(String) -> SpecError,
    ) -> Result<ConfigChange, SpecError> {
        let need = |v: &Option<String>, field: &str| {
            v.clone()
                .ok_or_else(|| err(format!("change {:?} needs `{field}`", raw.change)))
        };
        let switch_of = |v: &Option<String>| -> Result<String, SpecError> {
            let s = need(v, "switch")?;
            if switches.contains(&s) {
                Ok(s)
            } else {
                Err(err(format!(
                    "switch {s:?} is not in this topology ({})",
                    preview(switches)
                )))
            }
        };
        let port_of = |v: &Option<String>| -> Result<String, SpecError> {
            let p = need(v, "port")?;
            let ports = port_names(&self.topology);
            if ports.contains(&p) {
                Ok(p)
            } else {
                Err(err(format!(
                    "port {p:?} is not one of the switches' ports ({})",
                    ports.join(", ")
                )))
            }
        };
        match raw.change.as_deref() {
            Some("vni") => {
                let vni = raw
                    .vni
                    .ok_or_else(|| err("change \"vni\" needs `vni`".into()))?;
                Ok(ConfigChange::Vni {
                    vn: need(&raw.vn, "vn")?,
                    vni,
                })
            }
            Some("add_binding") => Ok(ConfigChange::AddBinding {
                switch: switch_of(&raw.switch)?,
                port: port_of(&raw.port)?,
                vlan: raw
                    .vlan
                    .ok_or_else(|| err("change \"add_binding\" needs `vlan`".into()))?,
                vn: need(&raw.vn, "vn")?,
                vni: raw.vni,
            }),
            Some("remove_binding") => Ok(ConfigChange::RemoveBinding {
                switch: switch_of(&raw.switch)?,
                port: port_of(&raw.port)?,
                vlan: raw
                    .vlan
                    .ok_or_else(|| err("change \"remove_binding\" needs `vlan`".into()))?,
            }),
            Some(other) => Err(err(format!(
                "change {other:?} is not \"vni\", \"add_binding\" or \"remove_binding\""
            ))),
            None => Err(err(
                "needs `change` (\"vni\", \"add_binding\" or \"remove_binding\")".into(),
            )),
        }
    }
}

/// Number of switch groups (each with its own virtual networks).
pub fn group_count(t: &Topology) -> u32 {
    let n = t.switches + t.real_switches;
    match t.group_size {
        0 => 1,
        g => n.div_ceil(g).max(1),
    }
}

/// The ports every switch has: one per virtual network of its group.
pub fn port_names(t: &Topology) -> Vec<String> {
    (0..t.vns_per_group).map(|j| format!("p{j}")).collect()
}

fn preview(names: &[String]) -> String {
    match names {
        [] => "none".into(),
        [a] => a.clone(),
        [a, .., z] => format!("{a} … {z}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
        name = "t"
        [[step]]
        do = "agent_crash"
        agent = "busiest"
    "#;

    fn parse(text: &str) -> Result<Scenario, String> {
        Scenario::from_toml(text).map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let s = parse(MIN).unwrap();
        assert_eq!(s.topology, Topology::default());
        assert_eq!(s.timing, Timing::default());
        assert_eq!(s.repeat, 1);
        let step = &s.steps[0];
        assert_eq!(step.index, 1);
        assert_eq!(step.action, Action::AgentCrash(AgentRef::Busiest));
        assert!(step.converge && step.continuity);
        assert_eq!(step.timeout, Duration::from_secs(60));
        assert_eq!(step.max_dual_active, Duration::ZERO);
        assert_eq!(s.agent_names(), vec!["agent-a", "agent-b"]);
        assert_eq!(s.switch_names(), vec!["sw01", "sw02", "sw03", "sw04"]);
    }

    #[test]
    fn every_action_parses() {
        let s = parse(
            r#"
            name = "all"
            repeat = 3
            [topology]
            switches = 12
            group_size = 5
            real_switches = 1
            control_nodes = 2
            [[step]]
            do = "agent_hang"
            agent = "agent-b"
            converge = false
            [[step]]
            do = "mac_churn"
            learn = 3
            move = 2
            switches = ["sw01", "rsw1"]
            converge = false
            [[step]]
            do = "config_change"
            change = "vni"
            vn = "g0-vn0"
            vni = 7001
            [[step]]
            do = "agent_resume"
            agent = "previous"
            max_dual_active_ms = 50
            [[step]]
            do = "partition"
            link = "busiest.north"
            mode = "reset"
            [[step]]
            do = "heal"
            link = "agent-a.south"
            [[step]]
            do = "control_node_restart"
            control_node = 1
            down_ms = 500
            [[step]]
            do = "switch_restart"
            switch = "sw12"
            [[step]]
            do = "wait"
            ms = 100
            [[step]]
            do = "config_change"
            change = "add_binding"
            switch = "sw03"
            port = "p1"
            vlan = 300
            vn = "extra"
            vni = 9000
            [[step]]
            do = "proxy_crash"
            converge = false
            [[step]]
            do = "proxy_restart"
            [[step]]
            do = "agent_restart"
            agent = "previous"
            [[step]]
            do = "converge"
            "#,
        )
        .unwrap();
        assert_eq!(group_count(&s.topology), 3);
        let a: Vec<&str> = s.steps.iter().map(|s| s.action.name()).collect();
        assert_eq!(
            a,
            vec![
                "agent_hang",
                "mac_churn",
                "config_change",
                "agent_resume",
                "partition",
                "heal",
                "control_node_restart",
                "switch_restart",
                "wait",
                "config_change",
                "proxy_crash",
                "proxy_restart",
                "agent_restart",
                "converge"
            ]
        );
        assert!(!s.steps[0].converge);
        assert_eq!(
            s.steps[4].action,
            Action::Partition(
                LinkRef {
                    agent: AgentRef::Busiest,
                    side: LinkSide::North
                },
                CutMode::Reset
            )
        );
        // Restarts of the control node or a switch do not promise continuity by default.
        assert!(!s.steps[6].continuity && !s.steps[7].continuity);
        assert!(s.steps[5].continuity);
        // `wait` does not converge by default.
        assert!(!s.steps[8].converge);
        assert_eq!(s.steps[3].max_dual_active, Duration::from_millis(50));
        assert_eq!(
            s.steps[1].action,
            Action::MacChurn(Churn {
                switches: vec!["sw01".into(), "rsw1".into()],
                learn: 3,
                unlearn: 0,
                moves: 2,
                age: 0
            })
        );
        assert_eq!(s.switch_names().len(), 13);
        assert_eq!(s.switch_names()[11], "sw12");
    }

    #[test]
    fn precise_errors() {
        let bad = |text: &str, want: &str| {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        };
        bad(
            "name = \"t\"\n[[step]]\ndo = \"agent_crash\"\nagent = \"agent-z\"",
            "step 1 (agent_crash): agent \"agent-z\" is not one of agent-a, agent-b",
        );
        bad(
            "name = \"t\"\n[[step]]\ndo = \"agent_crsh\"\nagent = \"busiest\"",
            "step 1 (agent_crsh): unknown action \"agent_crsh\"",
        );
        bad(
            "name = \"t\"\n[[step]]\ndo = \"agent_crash\"\nagnet = \"busiest\"",
            "unknown field `agnet`",
        );
        bad(
            "name = \"t\"\n[topology]\nswitchs = 3\n[[step]]\ndo = \"converge\"",
            "unknown field `switchs`",
        );
        bad(
            "name = \"t\"\n[[step]]\ndo = \"partition\"\nlink = \"agent-a.east\"",
            "link side \"east\"",
        );
        bad(
            "name = \"t\"\n[[step]]\ndo = \"partition\"\nlink = \"agent-a.south\"\nmode = \"drop\"",
            "mode \"drop\"",
        );
        bad(
            "name = \"t\"\n[[step]]\ndo = \"switch_restart\"\nswitch = \"sw99\"",
            "switch \"sw99\" is not a simulated switch of this topology (sw01 … sw04)",
        );
        bad(
            "name = \"t\"\n[[step]]\ndo = \"agent_crash\"\nagent = \"busiest\"\nconverge = false",
            "step 1 (agent_crash): the last step must converge",
        );
        bad(
            "name = \"t\"\n[[step]]\ndo = \"mac_churn\"",
            "set at least one of learn, unlearn, move, age",
        );
        bad(
            "name = \"t\"\n[topology]\nproxies = 2\n[[step]]\ndo = \"converge\"",
            "topology.proxies: must be 1",
        );
        bad(
            "name = \"t\"\n[timing]\nproxy_check = \"tcp\"\n[[step]]\ndo = \"agent_hang\"\nagent = \"busiest\"",
            "set timing.proxy_check = \"tls\"",
        );
        bad(
            "name = \"t\"\n[[step]]\ndo = \"config_change\"\nchange = \"add_binding\"\nswitch = \"sw01\"\nport = \"p7\"\nvlan = 5\nvn = \"x\"",
            "port \"p7\" is not one of the switches' ports (p0, p1)",
        );
        bad(
            "name = \"t\"\n[[step]]\ndo = \"control_node_restart\"\ncontrol_node = 1",
            "control_node 1 does not exist",
        );
        bad("name = \"t\"", "a scenario needs at least one [[step]]");
        bad(
            "name = \"t\"\n[timing]\nsample_ms = 0\n[[step]]\ndo = \"converge\"",
            "timing.sample_ms: must be greater than 0",
        );
        bad(
            "name = \"t\"\n[topology]\nswitches = 0\n[[step]]\ndo = \"converge\"",
            "at least one switch",
        );
    }

    #[test]
    fn names_are_padded_to_the_fleet() {
        assert_eq!(switch_name(0, 9), "sw01");
        assert_eq!(switch_name(41, 1000), "sw0042");
        assert_eq!(agent_name(1), "agent-b");
        assert_eq!(real_switch_name(0), "rsw1");
    }
}
