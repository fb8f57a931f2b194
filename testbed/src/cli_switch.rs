//! `testbed switch` (run simulated switches) and `testbed switch-ctl`
//! (drive them through the admin API).

use clap::{Args, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use testbed::switch::{
    admin, spec::parse_target, Mac, Placement, SwitchFile, SwitchFleet, SwitchSpec,
};

#[derive(Args)]
pub struct SwitchArgs {
    /// Switches from a TOML file (see testbed/examples/switch.toml) instead of the flags below.
    #[arg(long, conflicts_with_all = [
        "name", "description", "tunnel_ip", "management_ip", "ports", "listen", "manager",
        "max_backoff", "inactivity_probe", "listen_inactivity_probe", "cert", "key", "ca",
        "macs", "mac_base",
        "placement", "aging",
    ])]
    config: Option<PathBuf>,
    /// Physical_Switch name.
    #[arg(long, required_unless_present = "config")]
    name: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// Tunnel (VTEP) IP: Physical_Switch.tunnel_ips and the local MACs' locator.
    #[arg(long, default_value = "127.0.0.1")]
    tunnel_ip: IpAddr,
    /// Management IP (default: the tunnel IP).
    #[arg(long)]
    management_ip: Option<IpAddr>,
    /// Port names, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "p0,p1")]
    ports: Vec<String>,
    /// Serve OVSDB here (ptcp:PORT[:IP], pssl:PORT[:IP], punix:PATH); repeatable.
    #[arg(long)]
    listen: Vec<String>,
    /// Dial this manager (tcp:IP:PORT or ssl:IP:PORT), written to Global.managers; repeatable.
    #[arg(long)]
    manager: Vec<String>,
    /// Manager.max_backoff in milliseconds (at least 1000; OVS default 8000).
    #[arg(long)]
    max_backoff: Option<u64>,
    /// Manager.inactivity_probe in milliseconds (0 disables; OVS default 5000).
    #[arg(long)]
    inactivity_probe: Option<u64>,
    /// Inactivity probe of sessions on --listen targets, in milliseconds (0 disables; default 5000).
    #[arg(long)]
    listen_inactivity_probe: Option<u64>,
    /// Certificate (PEM) for ssl:/pssl: targets.
    #[arg(long, requires_all = ["key", "ca"])]
    cert: Option<PathBuf>,
    #[arg(long, requires_all = ["cert", "ca"])]
    key: Option<PathBuf>,
    /// CA certificate (PEM) the peer's certificate must chain to.
    #[arg(long, requires_all = ["cert", "key"])]
    ca: Option<PathBuf>,
    /// Learn this many MACs once the manager binds ports.
    #[arg(long, default_value_t = 0)]
    macs: u32,
    /// First MAC of the population (default derived from the name).
    #[arg(long)]
    mac_base: Option<Mac>,
    /// Where population hosts sit: spread (over every bound port/VLAN) or per-port.
    #[arg(long, default_value = "spread")]
    placement: Placement,
    /// MAC aging time in seconds (0: never age).
    #[arg(long, default_value_t = 0.0)]
    aging: f64,
    /// Admin API (JSON-RPC 2.0 over HTTP) on this loopback address, e.g. 127.0.0.1:0.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Validate the options or file, print a summary and exit.
    #[arg(long)]
    check_config: bool,
}

impl SwitchArgs {
    fn specs(&self) -> Result<(Vec<SwitchSpec>, Option<SocketAddr>), String> {
        if let Some(path) = &self.config {
            let file = SwitchFile::load(path).map_err(|e| e.to_string())?;
            let specs = file.specs().map_err(|e| e.to_string())?;
            if specs.is_empty() {
                return Err(format!("{}: no [[switch]] entries", path.display()));
            }
            return Ok((specs, self.admin.or(file.admin)));
        }
        let name = self.name.clone().ok_or("--name is required")?;
        let mut s = SwitchSpec::new(name.clone())
            .ports(self.ports.iter().map(|p| p.trim().to_string()))
            .tunnel_ip(self.tunnel_ip)
            .management_ip(self.management_ip.unwrap_or(self.tunnel_ip))
            .macs(self.macs)
            .placement(self.placement);
        if let Some(d) = &self.description {
            s.description = d.clone();
        }
        if let Some(b) = self.mac_base {
            s = s.mac_base(b);
        }
        for t in &self.listen {
            s = s.listen(parse_target(&name, "--listen", t).map_err(|e| e.to_string())?);
        }
        for t in &self.manager {
            s = s.manager(parse_target(&name, "--manager", t).map_err(|e| e.to_string())?);
        }
        s.max_backoff = self.max_backoff.map(Duration::from_millis);
        s.inactivity_probe = self.inactivity_probe.map(Duration::from_millis);
        s.listen_probe = self.listen_inactivity_probe.map(Duration::from_millis);
        if let (Some(cert), Some(key), Some(ca)) = (&self.cert, &self.key, &self.ca) {
            s = s.tls(ovsdb::transport::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            });
        }
        if !(self.aging.is_finite() && self.aging >= 0.0) {
            return Err("--aging must be a non-negative number of seconds".into());
        }
        s = s.aging(Some(Duration::from_secs_f64(self.aging)));
        s.validate().map_err(|e| e.to_string())?;
        Ok((vec![s], self.admin))
    }
}

pub async fn run(a: SwitchArgs) -> Result<(), String> {
    let (specs, admin_addr) = a.specs()?;
    if let Some(addr) = admin_addr {
        if !addr.ip().is_loopback() {
            return Err(format!(
                "admin {addr}: the admin API has no authentication, so it may only listen on loopback"
            ));
        }
    }
    if a.check_config {
        for s in &specs {
            println!(
                "switch {}: tunnel {}, {} ports, listen [{}], managers [{}], {} MACs from {} ({})",
                s.name,
                s.tunnel_ip,
                s.ports.len(),
                s.listen
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                s.managers
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                s.population.count,
                s.population.base,
                s.population.placement
            );
        }
        println!("config ok: {} switches", specs.len());
        return Ok(());
    }
    let fleet = SwitchFleet::start(specs).await.map_err(|e| e.to_string())?;
    // Bound addresses on stdout, one per line, for whoever started us with port 0.
    for sw in fleet.iter() {
        for t in sw.listen_targets() {
            println!("switch {} listening on {t}", sw.name());
        }
    }
    let _admin = match admin_addr {
        Some(addr) => {
            let (bound, handle) = admin::serve(addr, fleet.clone()).await?;
            println!("admin listening on {bound}");
            Some(handle)
        }
        None => None,
    };
    wait_for_signal().await;
    tracing::info!("shutting down");
    fleet.shutdown().await;
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

#[derive(Args)]
pub struct CtlArgs {
    /// The admin address of a running `testbed switch`.
    #[arg(long)]
    admin: String,
    /// The switch, when the process runs several.
    #[arg(long)]
    switch: Option<String>,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
pub enum CtlCommand {
    /// Switches, listeners, managers and counters.
    Status,
    /// The switch's hosts.
    Macs,
    /// Learn MAC on PORT VLAN.
    Learn { mac: Mac, port: String, vlan: u16 },
    /// Move a known MAC to PORT VLAN.
    Move { mac: Mac, port: String, vlan: u16 },
    /// Forget a MAC now.
    Unlearn { mac: Mac },
    /// Age out one MAC, or every learnt MAC.
    Age { mac: Option<Mac> },
    /// Set the aging time in seconds (0: never).
    Aging { seconds: f64 },
    /// Move MAC between PORT VLAN and --to-port/--to-vlan (or away) MOVES times.
    Flap {
        mac: Mac,
        port: String,
        vlan: u16,
        #[arg(long, requires = "to_vlan")]
        to_port: Option<String>,
        #[arg(long, requires = "to_port")]
        to_vlan: Option<u16>,
        #[arg(long, default_value_t = 10)]
        moves: u32,
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
}

pub async fn ctl(a: CtlArgs) -> Result<(), String> {
    let mut p = jsonrpsee::core::params::ObjectParams::new();
    let mut put = |k: &str, v: serde_json::Value| p.insert(k, v).map_err(|e| e.to_string());
    if let Some(s) = &a.switch {
        put("switch", s.clone().into())?;
    }
    let method = match &a.command {
        CtlCommand::Status => "sw_switches",
        CtlCommand::Macs => "sw_macs",
        CtlCommand::Learn { mac, port, vlan } | CtlCommand::Move { mac, port, vlan } => {
            put("mac", mac.to_string().into())?;
            put("port", port.clone().into())?;
            put("vlan", (*vlan).into())?;
            if matches!(a.command, CtlCommand::Learn { .. }) {
                "sw_learn"
            } else {
                "sw_move"
            }
        }
        CtlCommand::Unlearn { mac } => {
            put("mac", mac.to_string().into())?;
            "sw_unlearn"
        }
        CtlCommand::Age { mac } => {
            if let Some(m) = mac {
                put("mac", m.to_string().into())?;
            }
            "sw_age"
        }
        CtlCommand::Aging { seconds } => {
            put("seconds", (*seconds).into())?;
            "sw_set_aging"
        }
        CtlCommand::Flap {
            mac,
            port,
            vlan,
            to_port,
            to_vlan,
            moves,
            interval_ms,
        } => {
            put("mac", mac.to_string().into())?;
            put("port", port.clone().into())?;
            put("vlan", (*vlan).into())?;
            if let (Some(tp), Some(tv)) = (to_port, to_vlan) {
                put("to_port", tp.clone().into())?;
                put("to_vlan", (*tv).into())?;
            }
            put("moves", (*moves).into())?;
            put("interval_ms", (*interval_ms).into())?;
            "sw_flap"
        }
    };
    if matches!(a.command, CtlCommand::Status) {
        // sw_switches covers every switch; --switch filters the table.
        p = jsonrpsee::core::params::ObjectParams::new();
    }
    let v = admin::call(&a.admin, method, p).await?;
    match a.command {
        CtlCommand::Status => {
            let v = match &a.switch {
                Some(name) => serde_json::Value::Array(
                    v.as_array()
                        .map(|all| {
                            all.iter()
                                .filter(|s| s["name"].as_str() == Some(name.as_str()))
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                None => v,
            };
            print!("{}", admin::render_switches(&v));
        }
        CtlCommand::Macs => print!("{}", admin::render_macs(&v)),
        _ => println!("{v}"),
    }
    Ok(())
}
