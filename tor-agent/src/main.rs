//! `tor-agent`: run the agent, check a config file, or show a running
//! agent's status.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tor_agent::admin::api::AdminApiClient;
use tor_agent::config::{read_token, AgentConfig};

/// A takeover allocates and frees millions of small strings and maps at once (routes,
/// rows, exports): glibc's malloc spent a third of the agent's CPU there
/// (`malloc_consolidate`, `_int_free`). With mimalloc a 10x10k crash converged in 8.2 / 8.6 s
/// against 9.8 / 11.2 s, with a lower peak (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tor-agent",
    version,
    about = "OVSDB ToR agent with TF-compatible XMPP and HA takeover"
)]
struct Cli {
    /// The TOML configuration (see examples/tor-agent.toml).
    #[arg(
        long,
        short,
        global = true,
        default_value = "/etc/tor-agent/tor-agent.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Validate the configuration and exit non-zero with the first problem.
    CheckConfig,
    /// Print the running agent's switches, sessions and control nodes.
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match AgentConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tor-agent: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tor_agent::runtime::build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tor-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            println!("{}: configuration is valid", cli.config.display());
            ExitCode::SUCCESS
        }
        Command::Status { json } => rt.block_on(async {
            let token = match &cfg.admin.token_file {
                Some(p) => match read_token(p) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        eprintln!("tor-agent: {e}");
                        return ExitCode::FAILURE;
                    }
                },
                None => None,
            };
            let client = match tor_agent::admin::client(cfg.admin.listen, token.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tor-agent: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match client.status().await {
                Ok(s) if json => {
                    println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(s) => {
                    print!("{}", s.render());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tor-agent: no answer from {}: {e}", cfg.admin.listen);
                    ExitCode::FAILURE
                }
            }
        }),
        Command::Run => tor_agent::runtime::run_blocking(cfg, &rt),
    }
}
