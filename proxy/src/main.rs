//! `tor-proxy`: run the proxy, check its configuration, or ask a running one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tor_proxy::admin::api::AdminApiClient;
use tor_proxy::config::Config;

const DEFAULT_CONFIG: &str = "/etc/tor-proxy/tor-proxy.toml";

#[derive(Parser)]
#[command(
    name = "tor-proxy",
    version,
    about = "Least-connections TCP/TLS active-standby proxy for ToR agents"
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Args)]
struct Target {
    /// Admin API address (default: from the configuration file).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Bearer token file (default: admin.token_file from the configuration file).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the configuration and the files it names; exit non-zero with the reason.
    CheckConfig,
    /// Print listeners, backends, sessions and peers of the running proxy.
    Status {
        #[command(flatten)]
        target: Target,
        /// Raw JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// For keepalived's track_script: exit 0 only when serving with a healthy backend.
    Check {
        #[command(flatten)]
        target: Target,
    },
    /// Operator commands: drain, maint, enable, shutdown-sessions BACKEND; reload.
    Admin {
        #[command(flatten)]
        target: Target,
        /// drain | maint | enable | shutdown-sessions | reload
        verb: String,
        backend: Option<String>,
    },
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

fn load(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| e.to_string())
}

fn client(cli: &Cli, t: &Target) -> Result<jsonrpsee::http_client::HttpClient, String> {
    let cfg = match (&t.admin, &cli.config) {
        (Some(_), None) => None,
        _ => Some(load(&config_path(cli))?),
    };
    let addr = t
        .admin
        .or(cfg.as_ref().map(|c| c.admin.listen))
        .ok_or("no admin address")?;
    if cfg.as_ref().is_some_and(|c| c.admin.tls_enabled()) && t.admin.is_none() {
        return Err("the admin API uses TLS; this client speaks plain HTTP (use a token on loopback, or curl with a client certificate)".into());
    }
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::new(
            if addr.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            addr.port(),
        )
    } else {
        addr
    };
    let token_file = t
        .token_file
        .clone()
        .or(cfg.as_ref().and_then(|c| c.admin.token_file.clone()));
    let token = match token_file {
        Some(f) => Some(tor_proxy::admin::read_token(&f)?),
        None => None,
    };
    tor_proxy::admin::client(addr, token.as_deref())
}

/// The control-plane runtime (checks, admin API, peers); sessions run on the data threads.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        None | Some(Command::Run) => run(&cli),
        Some(Command::CheckConfig) => check_config(&cli),
        Some(Command::Status { target, json }) => status(&cli, target, *json),
        Some(Command::Check { target }) => check(&cli, target),
        Some(Command::Admin {
            target,
            verb,
            backend,
        }) => admin(&cli, target, verb, backend.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tor-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode, String> {
    Ok(tor_proxy::server::run_from_file(&config_path(cli)))
}

fn check_config(cli: &Cli) -> Result<ExitCode, String> {
    let path = config_path(cli);
    let config = load(&path)?;
    config
        .check_files()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for w in config.warnings() {
        println!("warning: {w}");
    }
    println!(
        "{}: ok ({} listener(s), {} backend(s), {} peer(s); admin API on {})",
        path.display(),
        config.listeners.len(),
        config.backends.len(),
        config.peers.len(),
        config.admin.listen
    );
    Ok(ExitCode::SUCCESS)
}

fn status(cli: &Cli, t: &Target, json: bool) -> Result<ExitCode, String> {
    let c = client(cli, t)?;
    let show = runtime()?
        .block_on(c.show())
        .map_err(|e| format!("admin API: {e}"))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&show).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", tor_proxy::admin::status::render(&show));
    }
    Ok(ExitCode::SUCCESS)
}

fn check(cli: &Cli, t: &Target) -> Result<ExitCode, String> {
    let c = client(cli, t)?;
    let h = runtime()?
        .block_on(c.health())
        .map_err(|e| format!("not serving: admin API unreachable: {e}"))?;
    println!("{}", h.reason);
    Ok(if h.serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn admin(cli: &Cli, t: &Target, verb: &str, backend: Option<&str>) -> Result<ExitCode, String> {
    let c = client(cli, t)?;
    let rt = runtime()?;
    let need = || {
        backend
            .map(str::to_string)
            .ok_or(format!("{verb} needs a backend name"))
    };
    let out = match verb {
        "drain" => {
            serde_json::to_string_pretty(&rt.block_on(c.drain(need()?)).map_err(|e| e.to_string())?)
        }
        "maint" => {
            serde_json::to_string_pretty(&rt.block_on(c.maint(need()?)).map_err(|e| e.to_string())?)
        }
        "enable" => serde_json::to_string_pretty(
            &rt.block_on(c.enable(need()?)).map_err(|e| e.to_string())?,
        ),
        "shutdown-sessions" => serde_json::to_string_pretty(
            &rt.block_on(c.shutdown_sessions(need()?))
                .map_err(|e| e.to_string())?,
        ),
        "reload" => {
            serde_json::to_string_pretty(&rt.block_on(c.reload()).map_err(|e| e.to_string())?)
        }
        other => {
            return Err(format!(
                "unknown admin verb {other:?} (drain, maint, enable, shutdown-sessions, reload)"
            ))
        }
    }
    .map_err(|e| e.to_string())?;
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}
