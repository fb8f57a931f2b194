//! `testbed`: a small dispatcher; each subcommand lives in its own module.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// The same allocator as the `tor-agent` binary, since agents run from this binary in
/// scenarios (`run-agent`); the simulated switches and control node gain the same.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli_control_node;
mod cli_switch;
mod demo;

#[derive(Parser)]
#[command(
    name = "testbed",
    about = "Simulated switches and control node, scenarios and the demo"
)]
struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the simulated Tungsten Fabric control node (XMPP server).
    ControlNode(cli_control_node::ControlNodeArgs),
    /// Print a running control node's agents, routes and counters.
    ControlNodeStatus(cli_control_node::StatusArgs),
    /// Run simulated hardware-VTEP switches (OVSDB hardware_vtep, MAC learning).
    Switch(cli_switch::SwitchArgs),
    /// Learn, move, age or list MACs of a running `testbed switch` (admin API).
    SwitchCtl(cli_switch::CtlArgs),
    /// Run a whole topology on loopback, kill the busiest agent, print the failover timeline.
    Demo(demo::DemoArgs),
    /// Run a scenario file: topology, faults, invariant checks and failover timings.
    Scenario(demo::ScenarioArgs),
    /// The real tor-agent, as a child of the scenario runner.
    #[command(hide = true)]
    RunAgent(demo::NodeArgs),
    /// The real tor-proxy, as a child of the scenario runner.
    #[command(hide = true)]
    RunProxy(demo::NodeArgs),
}

fn init_logging(format: &str, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Agents and proxies run exactly as their own binaries do (runtime, logging, signals).
    match &cli.command {
        Command::RunAgent(a) => return testbed::scenario::child::run_agent(&a.config),
        Command::RunProxy(a) => return testbed::scenario::child::run_proxy(&a.config),
        _ => {}
    }
    // The demo and scenarios print their own progress; component logs only when asked.
    let quiet = matches!(cli.command, Command::Demo(_) | Command::Scenario(_));
    init_logging(&cli.log_format, if quiet { "warn" } else { "info" });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::ControlNode(a) => cli_control_node::run(a).await,
            Command::ControlNodeStatus(a) => cli_control_node::status(a).await,
            Command::Switch(a) => cli_switch::run(a).await,
            Command::SwitchCtl(a) => cli_switch::ctl(a).await,
            Command::Demo(a) => demo::demo(a).await,
            Command::Scenario(a) => demo::scenario(a).await,
            Command::RunAgent(_) | Command::RunProxy(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
