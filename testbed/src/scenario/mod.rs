//! The scenario runner: a whole deployment on loopback (simulated or real switches, the
//! proxy, two agents, control nodes), faults injected while it runs, the invariants
//! checked after every fault, and the failover timeline measured.
//!
//! `testbed scenario FILE.toml [--json OUT] [--svg OUT]` runs a file; `testbed demo` runs
//! the built-in one (`testbed/scenarios/demo.toml`). Files live in `testbed/scenarios/`.
//!
//! # File format
//!
//! ```toml
//! name = "agent-crash"             # required
//! description = "…"                # optional
//! repeat = 1                       # run the steps this many times (medians in the summary)
//!
//! [topology]                       # every key optional; defaults shown
//! switches = 4                     # simulated switches (in the runner's process)
//! real_switches = 0                # real ovsdb-server switches (needs openvswitch-vtep)
//! macs_per_switch = 100            # local MACs per switch, spread over its networks
//! vns_per_group = 2                # networks per group; network j on port p{j}, VLAN 100+j
//! group_size = 0                   # switches per group (0: one group); remote MACs stay in a group
//! agents = 2                       # tor-agent child processes, all serving every switch
//! proxies = 1                      # tor-proxy child processes (one; the pair is vrrp_pair.rs)
//! control_nodes = 1                # 1 or 2 simulated control nodes
//!
//! [timing]                         # every key optional; defaults shown
//! agent_keepalive_ms = 2000        # agent OVSDB echo (the agent raises <2000 to 2000)
//! ha_stale_ms = 30000              # agent HA-stale route interval
//! stale_grace_ms = 2000            # agent: unwanted rows found at takeover go after this
//! hold_time_s = 9                  # XMPP hold time (agents and control nodes)
//! end_of_config_quiet_ms = 500
//! batch_rows = 500                 # agent rows per transaction
//! max_txn_in_flight = 8            # agent transactions in flight per switch
//! proxy_check = "tls"              # "tls" sees a hung agent; "tcp" does not
//! proxy_interval_ms = 500          # proxy health check interval / fast interval / timeout
//! proxy_fast_interval_ms = 200
//! proxy_timeout_ms = 300
//! proxy_rise = 2
//! proxy_fall = 2
//! proxy_connect_timeout_ms = 1000
//! proxy_threads = 1
//! switch_max_backoff_ms = 8000     # Manager.max_backoff (OVS default)
//! switch_inactivity_probe_ms = 5000
//! sample_ms = 50                   # runner: polling of agents, proxy and switches
//! settle_timeout_s = 60            # runner: default limit to converge after a step
//! setup_timeout_s = 120            # runner: limit for the first convergence
//!
//! [[step]]                         # one or more, run in order
//! do = "agent_crash"               # see below
//! agent = "busiest"                # a name (agent-a, agent-b, …), "busiest" or "previous"
//! converge = true                  # wait for convergence and close the window (default
//!                                  # true except for `wait`); false chains the next step
//!                                  # into the same window (e.g. churn during a failover)
//! timeout_s = 60                   # convergence limit for this step
//! continuity = true                # require HA-stale continuity in this window (default
//!                                  # true, false for control node and switch restarts)
//! max_dual_active_ms = 0           # tolerated time two agents report one switch active
//! label = "…"                      # name in the report
//! ```
//!
//! Steps (`do`): `agent_crash` (SIGKILL), `agent_hang` (SIGSTOP), `agent_resume` (SIGCONT),
//! `agent_restart` (start again) — each with `agent`; `partition` with `link =
//! "<agent>.south"` (proxy ↔ agent: switch sessions, checks, readiness) or `"<agent>.north"`
//! (agent ↔ control nodes) and `mode = "blackhole"` (default: nothing forwarded, sockets
//! kept) or `"reset"`; `heal` with `link`; `control_node_restart` (`control_node`,
//! `down_ms`); `proxy_crash`; `proxy_restart`; `switch_restart` (`switch`, `down_ms`; the
//! switch comes back with an empty database); `mac_churn` (`learn`, `unlearn`, `move`, `age`
//! MACs per switch, `switches` = names or all simulated); `config_change` with `change =
//! "vni"` (`vn`, `vni`), `"add_binding"` (`switch`, `port`, `vlan`, `vn`, and `vni` to
//! create the network) or `"remove_binding"` (`switch`, `port`, `vlan`); `wait` (`ms`);
//! `converge`.
//!
//! # What is checked and measured
//!
//! After every window the invariants of [`invariants`] must hold (exactly one active agent
//! per switch, each switch database equal to the desired state, the control node's routes
//! equal to the switches' local MACs), and — where continuity is required — no MAC route
//! whose MAC stayed may have been absent from the control node at any moment
//! ([`observer`] records every change the control node makes). Per window the report gives
//! detection, reconnect, audit (takeover as the agent reports it), routes-live and
//! convergence times from the fault, routes withdrawn and re-added, the agents' and the
//! proxy's memory (VmRSS at the window's start and end, VmHWM peak), and the timeline.
//!
//! A window is not accepted as converged the moment the invariants hold: a fault whose
//! effect shows late (a silent partition, a resumed agent) would pass untested. The runner
//! keeps checking for the fault's detection bound plus 1 s ([`runner::observe_for`]) and
//! reports as the convergence time the start of the last unbroken stretch of passing checks.

pub mod bed;
pub mod child;
pub mod clock;
pub mod invariants;
pub mod layout;
pub mod link;
pub mod monitor;
pub mod observer;
pub mod procs;
pub mod report;
pub mod runner;
pub mod side;
pub mod snapshot;
pub mod spec;
pub mod svg;
pub mod timeline;

pub use procs::Launcher;
pub use report::ScenarioReport;
pub use runner::{run, RunError, RunOptions};
pub use spec::{Scenario, SpecError};

/// Writes the report's JSON and SVG where asked.
pub fn write_outputs(
    report: &ScenarioReport,
    json: Option<&std::path::Path>,
    svg: Option<&std::path::Path>,
) -> Result<(), String> {
    if let Some(p) = json {
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if let Some(p) = svg {
        let (points, markers) = runner::chart_data(report);
        let agents: Vec<String> = (0..report.topology.agents).map(spec::agent_name).collect();
        let title = format!(
            "{} — {}",
            report.scenario,
            if report.passed { "PASS" } else { "FAIL" }
        );
        let text = svg::render(&svg::Chart {
            title: &title,
            agents: &agents,
            control_nodes: report.topology.control_nodes as usize,
            points: &points,
            markers: &markers,
        });
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}
