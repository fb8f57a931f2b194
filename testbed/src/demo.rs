//! `testbed demo`, `testbed scenario FILE` and the hidden `run-agent` / `run-proxy`
//! subcommands the runner starts its child processes with.

use std::path::PathBuf;

use testbed::scenario::{self, Launcher, RunOptions, Scenario};

/// The demo: 6 switches, two agents behind the proxy, the busiest agent killed.
const DEMO: &str = include_str!("../scenarios/demo.toml");

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Also write the timeline as an SVG chart of routes and sessions over time.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Also write the full report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Keep the run directory (configs, certificates, agent and proxy logs).
    #[arg(long)]
    keep: bool,
}

#[derive(clap::Args)]
pub struct ScenarioArgs {
    /// The scenario file (see testbed/scenarios/).
    file: PathBuf,
    /// Write the report as JSON.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// Write an SVG chart of routes and sessions over time.
    #[arg(long, value_name = "OUT")]
    svg: Option<PathBuf>,
    /// Keep the run directory (configs, certificates, agent and proxy logs).
    #[arg(long)]
    keep: bool,
    /// Only validate the file.
    #[arg(long)]
    check: bool,
    /// No progress lines, only the report.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
pub struct NodeArgs {
    /// The agent's or proxy's TOML configuration.
    #[arg(long)]
    pub config: PathBuf,
}

async fn run(
    s: Scenario,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    keep: bool,
    quiet: bool,
) -> Result<(), String> {
    let launcher = Launcher::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let report = scenario::run(
        s,
        RunOptions {
            launcher,
            progress: !quiet,
            keep_dir: keep,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    print!("{}", report.render_text());
    scenario::write_outputs(&report, json.as_deref(), svg.as_deref())?;
    if let Some(p) = &svg {
        println!("chart: {}", p.display());
    }
    if report.passed {
        Ok(())
    } else {
        Err(format!("scenario {} FAILED", report.scenario))
    }
}

pub async fn demo(a: DemoArgs) -> Result<(), String> {
    let s = Scenario::from_toml(DEMO).map_err(|e| format!("built-in demo: {e}"))?;
    println!(
        "demo: {} simulated switches x {} MACs dial tor-proxy (TLS passthrough) in front of {} \
         tor-agents (child processes) and a simulated control node, all on loopback; \
         then the agent holding the most switches is killed with SIGKILL.\n",
        s.topology.switches, s.topology.macs_per_switch, s.topology.agents
    );
    run(s, a.json, a.svg, a.keep, false).await
}

pub async fn scenario(a: ScenarioArgs) -> Result<(), String> {
    let s = Scenario::load(&a.file).map_err(|e| e.to_string())?;
    if a.check {
        println!(
            "{}: valid ({} steps x {} rounds)",
            a.file.display(),
            s.steps.len(),
            s.repeat
        );
        return Ok(());
    }
    run(s, a.json, a.svg, a.keep, a.quiet).await
}
