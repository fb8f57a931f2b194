//! The real agent and proxy, run as child processes of the scenario runner and the demo
//! (`testbed run-agent --config F`, `testbed run-proxy --config F`, hidden subcommands), so
//! that faults are real signals: SIGKILL for a crash, SIGSTOP/SIGCONT for a hang. Each does
//! exactly what the `tor-agent` and `tor-proxy` binaries do when they run: the same
//! configuration loading, runtime, logging and shutdown on SIGTERM.
//!
//! Test binaries that cannot name the `testbed` executable run these from a libtest helper
//! test instead ([`main_from_env`], see `super::procs::Launcher::LibtestHelper`).

use std::path::Path;
use std::process::ExitCode;

/// Environment variables of a libtest helper child: the role and the config file.
pub const ROLE_ENV: &str = "TESTBED_NODE_ROLE";
pub const CONFIG_ENV: &str = "TESTBED_NODE_CONFIG";

/// `tor-agent --config F` (run).
pub fn run_agent(config: &Path) -> ExitCode {
    tor_agent::runtime::run_from_file(config)
}

/// `tor-proxy --config F` (run).
pub fn run_proxy(config: &Path) -> ExitCode {
    tor_proxy::server::run_from_file(config)
}

/// In a libtest helper test: runs the node named by the environment and returns its exit
/// code, or `None` when the environment names none (the helper was run as a plain test).
pub fn main_from_env() -> Option<ExitCode> {
    let role = std::env::var(ROLE_ENV).ok()?;
    let config = std::env::var_os(CONFIG_ENV)?;
    let config = Path::new(&config);
    Some(match role.as_str() {
        "agent" => run_agent(config),
        "proxy" => run_proxy(config),
        other => {
            eprintln!("{ROLE_ENV}={other}: expected agent or proxy");
            ExitCode::from(2)
        }
    })
}
