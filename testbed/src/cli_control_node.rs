//! `testbed control-node` and `testbed control-node-status`.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use testbed::control_node::{admin, start, ControlNodeConfig, Fabric};

#[derive(Args)]
pub struct ControlNodeArgs {
    /// Fabric description (TOML; see testbed/examples/fabric.toml). `--config` is an alias.
    #[arg(long, alias = "config")]
    fabric: PathBuf,
    /// XMPP listen address.
    #[arg(long, default_value = "0.0.0.0:5269")]
    listen: SocketAddr,
    /// Hostname sent as `from` in our stream header.
    #[arg(long, default_value = "testbed-control-node")]
    hostname: String,
    /// Admin API (JSON-RPC 2.0 over HTTP) listen address, e.g. 127.0.0.1:8083. Off when absent.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Hold time in seconds (keepalives every hold/3).
    #[arg(long, default_value_t = 90)]
    hold_time: u64,
    /// Seconds a session must be quiet before we send EndOfRib.
    #[arg(long, default_value_t = 6.0)]
    eor_quiet: f64,
    /// Largest stanza accepted from an agent, in bytes.
    #[arg(long, default_value_t = tf_xmpp::framer::DEFAULT_MAX_STANZA)]
    max_stanza: usize,
    /// Connections served at once; more are closed at accept.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Refuse agents whose stream header xmlns (sub-cluster) differs from this.
    #[arg(long)]
    subcluster: Option<String>,
    /// TLS certificate (PEM); with --tls-key enables STARTTLS (required).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that agents' client certificates must chain to (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Validate the fabric and options, print a summary and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    /// The control node's admin address.
    #[arg(long)]
    admin: String,
    /// Only this VRF.
    #[arg(long)]
    vrf: Option<String>,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

pub async fn run(a: ControlNodeArgs) -> Result<(), String> {
    let fabric = Fabric::load(&a.fabric).map_err(|e| e.to_string())?;
    if a.hold_time < 3 {
        return Err("--hold-time must be at least 3 seconds".into());
    }
    if !(a.eor_quiet.is_finite() && a.eor_quiet >= 0.0) {
        return Err("--eor-quiet must be a non-negative number of seconds".into());
    }
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => {
            let ca = a.tls_ca.as_ref().map(read).transpose()?;
            Some(
                tf_xmpp::tls::server_config(&read(c)?, &read(k)?, ca.as_deref())
                    .map_err(|e| e.to_string())?,
            )
        }
        _ => None,
    };
    if let Some(admin) = a.admin {
        if !admin.ip().is_loopback() {
            return Err(format!(
                "--admin {admin}: the admin API has no authentication, so it may only listen on loopback"
            ));
        }
    }
    if a.check_config {
        println!(
            "fabric ok: {} virtual routers, {} virtual networks, {} physical routers, {} bindings; vxlan mode {}",
            fabric.virtual_routers.len(),
            fabric.virtual_networks.len(),
            fabric.physical_routers.len(),
            fabric.bindings.len(),
            fabric.global.vxlan_mode.as_str()
        );
        return Ok(());
    }
    let mut cfg = ControlNodeConfig::new(a.listen, fabric);
    cfg.hostname = a.hostname;
    cfg.fabric_path = Some(a.fabric);
    cfg.hold_time = Duration::from_secs(a.hold_time);
    cfg.core.eor_quiet = Duration::from_secs_f64(a.eor_quiet);
    cfg.max_stanza = a.max_stanza;
    cfg.max_connections = a.max_connections;
    cfg.subcluster = a.subcluster;
    cfg.tls = tls;
    let cn = start(cfg)
        .await
        .map_err(|e| format!("listening on {}: {e}", a.listen))?;
    let _admin = match a.admin {
        Some(addr) => {
            let (bound, handle) = admin::serve(addr, cn.clone())
                .await
                .map_err(|e| format!("admin on {addr}: {e}"))?;
            tracing::info!(%bound, "admin API listening");
            Some(handle)
        }
        None => None,
    };
    wait_for_signal().await;
    tracing::info!("shutting down");
    cn.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub async fn status(a: StatusArgs) -> Result<(), String> {
    let status = admin::call(&a.admin, "cn_status", Default::default()).await?;
    let mut p = jsonrpsee::core::params::ObjectParams::new();
    if let Some(v) = &a.vrf {
        p.insert("vrf", v).map_err(|e| e.to_string())?;
    }
    let routes = admin::call(&a.admin, "cn_routes", p).await?;
    print!("{}", admin::render_status(&status, &routes));
    Ok(())
}
