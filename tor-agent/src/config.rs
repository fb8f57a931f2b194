//! The agent's TOML configuration: every key, its default, and the checks
//! `check-config` runs (see `tor-agent/examples/tor-agent.toml`).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ovsdb::transport::{Target, TlsFiles};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub agent: AgentSection,
    #[serde(default)]
    pub southbound: SouthboundSection,
    pub northbound: NorthboundSection,
    #[serde(default)]
    pub admin: AdminSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// This agent's name: its XMPP JID and the name of its `virtual-router`
    /// config object.
    pub name: String,
    /// The service node IP: `unknown-dst` locator on the switches and the
    /// replicator of the broadcast routes.
    pub tsn_ip: Ipv4Addr,
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
}

fn default_log_format() -> String {
    "text".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SouthboundSection {
    /// Passive target the switches dial (through the proxy): `pssl:PORT[:IP]`
    /// or `ptcp:PORT[:IP]`. Many switches share one listener.
    #[serde(default)]
    pub listen: Option<String>,
    /// Active targets instead: the agent dials each switch (`ssl:IP:PORT`, `tcp:…`).
    #[serde(default)]
    pub connect: Vec<String>,
    /// Certificate, key and CA for `pssl:`/`ssl:`.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// OVSDB echo after this much silence; 0 disables; 1..1999 is raised to 2000.
    #[serde(default = "default_keepalive")]
    pub keepalive_interval_ms: u64,
    /// Largest message accepted from a switch (a 100k-MAC dump is ~26 MB).
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Manage only these switches (Physical_Switch names); empty: every
    /// switch the config assigns to this agent.
    #[serde(default)]
    pub switches: Vec<String>,
    /// Require a switch's certificate common name to equal its name.
    #[serde(default)]
    pub require_cert_name: bool,
    /// Transactions in flight per switch.
    #[serde(default = "default_in_flight")]
    pub max_txn_in_flight: usize,
    /// Rows per transaction.
    #[serde(default = "default_batch")]
    pub batch_rows: usize,
    /// Rows found on a switch that nothing asks for are removed after this.
    #[serde(default = "default_stale_grace")]
    pub stale_grace_ms: u64,
    /// A logical switch to delete waits this long for the switch's own rows
    /// to go before the agent removes them.
    #[serde(default = "default_ls_wait")]
    pub ls_local_wait_ms: u64,
}

fn default_keepalive() -> u64 {
    10_000
}
fn default_max_message() -> usize {
    256 * 1024 * 1024
}
fn default_in_flight() -> usize {
    8
}
fn default_batch() -> usize {
    500
}
fn default_stale_grace() -> u64 {
    60_000
}
fn default_ls_wait() -> u64 {
    900_000
}

impl Default for SouthboundSection {
    fn default() -> Self {
        SouthboundSection {
            listen: Some("pssl:6640".into()),
            connect: Vec::new(),
            tls: None,
            keepalive_interval_ms: default_keepalive(),
            max_message_bytes: default_max_message(),
            switches: Vec::new(),
            require_cert_name: false,
            max_txn_in_flight: default_in_flight(),
            batch_rows: default_batch(),
            stale_grace_ms: default_stale_grace(),
            ls_local_wait_ms: default_ls_wait(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Name expected in the control node's certificate (default: its IP).
    #[serde(default)]
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NorthboundSection {
    /// One or two control nodes, `IP:PORT` (port 5269 when omitted).
    pub control_nodes: Vec<String>,
    /// XMPP hold time; keepalives every third of it.
    #[serde(default = "default_hold")]
    pub hold_time_s: u64,
    /// Enables XMPP TLS (starttls).
    #[serde(default)]
    pub tls: Option<XmppTls>,
    /// How long HA-stale shadow routes outlive the last live path when no
    /// agent holds the switch.
    #[serde(default = "default_ha_stale")]
    pub ha_stale_route_interval_ms: u64,
    /// Config is complete after this long without a config push.
    #[serde(default = "default_eoc")]
    pub end_of_config_quiet_ms: u64,
    /// Routes of a control node that came back are dropped after this if it
    /// sends no End-of-RIB.
    #[serde(default = "default_route_stale")]
    pub route_stale_timeout_ms: u64,
    /// Sub-cluster name sent in the stream header (`xmlns`).
    #[serde(default)]
    pub subcluster: String,
}

fn default_hold() -> u64 {
    90
}
fn default_ha_stale() -> u64 {
    300_000
}
fn default_eoc() -> u64 {
    15_000
}
fn default_route_stale() -> u64 {
    60_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// JSON-RPC admin API and `GET /metrics`.
    #[serde(default = "default_admin")]
    pub listen: SocketAddr,
    /// One line (`ready` / `drain` / `down`) per connection, for the proxy's
    /// agent check.
    #[serde(default = "default_readiness")]
    pub readiness_listen: Option<SocketAddr>,
    /// Bearer token file; required when `listen` is not loopback.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8085))
}
fn default_readiness() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 8086)))
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: default_admin(),
            readiness_listen: default_readiness(),
            token_file: None,
        }
    }
}

/// A control node address with the default port.
pub fn parse_cn(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 5269))
        .map_err(|_| format!("{s} is not IP[:PORT]"))
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let cfg: AgentConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values and files; `check-config` prints the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.agent.name.is_empty() {
            return Err(invalid("agent.name", "must not be empty"));
        }
        if let Some(p) = tf_xmpp::stanza::agent_name_problem(&self.agent.name) {
            return Err(invalid("agent.name", p));
        }
        if !matches!(self.agent.log_format.as_str(), "text" | "json") {
            return Err(invalid("agent.log_format", "must be \"text\" or \"json\""));
        }
        let sb = &self.southbound;
        let targets = self.southbound_targets()?;
        if targets.is_empty() {
            return Err(invalid("southbound", "set listen or connect"));
        }
        if sb.listen.is_some() && !sb.connect.is_empty() {
            return Err(invalid("southbound", "set listen or connect, not both"));
        }
        for t in &targets {
            if t.uses_tls() {
                let Some(files) = &sb.tls else {
                    return Err(invalid(
                        "southbound.tls",
                        format!("{t} needs cert, key and ca"),
                    ));
                };
                files
                    .server_config()
                    .map_err(|e| invalid("southbound.tls", e.to_string()))?;
            }
        }
        if sb.max_txn_in_flight == 0 || sb.batch_rows == 0 {
            return Err(invalid(
                "southbound",
                "max_txn_in_flight and batch_rows must be at least 1",
            ));
        }
        if sb.max_message_bytes < 64 * 1024 {
            return Err(invalid(
                "southbound.max_message_bytes",
                "must be at least 65536",
            ));
        }
        let nb = &self.northbound;
        if nb.control_nodes.is_empty() || nb.control_nodes.len() > 2 {
            return Err(invalid(
                "northbound.control_nodes",
                "one or two control nodes",
            ));
        }
        for cn in &nb.control_nodes {
            parse_cn(cn).map_err(|e| invalid("northbound.control_nodes", e))?;
        }
        if nb.hold_time_s < 3 {
            return Err(invalid("northbound.hold_time_s", "must be at least 3"));
        }
        if let Some(t) = &nb.tls {
            let files = TlsFiles {
                cert: t.cert.clone(),
                key: t.key.clone(),
                ca: t.ca.clone(),
            };
            files
                .client_config()
                .map_err(|e| invalid("northbound.tls", e.to_string()))?;
        }
        if nb.ha_stale_route_interval_ms < 1000 {
            return Err(invalid(
                "northbound.ha_stale_route_interval_ms",
                "must be at least 1000",
            ));
        }
        let admin = &self.admin;
        if !admin.listen.ip().is_loopback() && admin.token_file.is_none() {
            return Err(invalid(
                "admin.listen",
                format!("{} is not loopback: set admin.token_file", admin.listen),
            ));
        }
        if let Some(t) = &admin.token_file {
            read_token(t).map_err(|e| invalid("admin.token_file", e))?;
        }
        Ok(())
    }

    pub fn southbound_targets(&self) -> Result<Vec<Target>, ConfigError> {
        let mut out = Vec::new();
        if let Some(l) = &self.southbound.listen {
            let t: Target = l.parse().map_err(|e: ovsdb::transport::TargetError| {
                invalid("southbound.listen", e.to_string())
            })?;
            if !t.is_passive() {
                return Err(invalid(
                    "southbound.listen",
                    format!("{l} is not a passive target (ptcp:, pssl:)"),
                ));
            }
            out.push(t);
        }
        for c in &self.southbound.connect {
            let t: Target = c.parse().map_err(|e: ovsdb::transport::TargetError| {
                invalid("southbound.connect", e.to_string())
            })?;
            if t.is_passive() {
                return Err(invalid(
                    "southbound.connect",
                    format!("{c} is not an active target (tcp:, ssl:)"),
                ));
            }
            out.push(t);
        }
        Ok(out)
    }

    /// The keepalive interval with TF's floor (2 s) applied; zero disables.
    pub fn keepalive(&self) -> Duration {
        match self.southbound.keepalive_interval_ms {
            0 => Duration::ZERO,
            ms => Duration::from_millis(ms.max(2000)),
        }
    }

    pub fn core_settings(&self) -> crate::core::CoreSettings {
        let sb = &self.southbound;
        let nb = &self.northbound;
        crate::core::CoreSettings {
            agent_name: self.agent.name.clone(),
            tsn_ip: self.agent.tsn_ip.to_string(),
            plan: crate::reconcile::PlanSettings {
                tsn_ip: self.agent.tsn_ip.to_string(),
                batch_rows: sb.batch_rows,
                max_in_flight: sb.max_txn_in_flight,
                stale_grace: Duration::from_millis(sb.stale_grace_ms),
                ls_local_wait: Duration::from_millis(sb.ls_local_wait_ms),
                retry_delay: Duration::from_secs(1),
            },
            ha_stale_interval: Duration::from_millis(nb.ha_stale_route_interval_ms),
            end_of_config_quiet: Duration::from_millis(nb.end_of_config_quiet_ms),
            route_stale_timeout: Duration::from_millis(nb.route_stale_timeout_ms),
            control_nodes: nb.control_nodes.len(),
            switch_filter: if sb.switches.is_empty() {
                None
            } else {
                Some(sb.switches.iter().cloned().collect::<BTreeSet<_>>())
            },
            require_cert_name: sb.require_cert_name,
        }
    }
}

/// Reads a bearer token file: first line, trimmed, at least 16 characters.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < 16 {
        return Err(format!(
            "{}: token must be at least 16 characters",
            path.display()
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, String> {
        let c: AgentConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    const MIN: &str = r#"
        [agent]
        name = "tor-agent-1"
        tsn_ip = "192.0.2.10"
        [southbound]
        listen = "ptcp:6640:127.0.0.1"
        [northbound]
        control_nodes = ["127.0.0.1:5269"]
    "#;

    #[test]
    fn minimal_config_and_defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.keepalive(), Duration::from_secs(10));
        assert_eq!(c.admin.listen.port(), 8085);
        assert_eq!(
            c.core_settings().ha_stale_interval,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn precise_errors() {
        let bad = |from: &str, to: &str, want: &str| {
            let e = parse(&MIN.replace(from, to)).unwrap_err();
            assert!(e.contains(want), "{e} should mention {want}");
        };
        bad(
            "name = \"tor-agent-1\"",
            "name = \"my-config-agent\"",
            "agent.name",
        );
        bad("tsn_ip = \"192.0.2.10\"", "tsn_ip = \"nope\"", "tsn_ip");
        bad(
            "ptcp:6640:127.0.0.1",
            "tcp:127.0.0.1:6640",
            "southbound.listen",
        );
        bad("ptcp:6640:127.0.0.1", "pssl:6640", "southbound.tls");
        bad("[\"127.0.0.1:5269\"]", "[]", "control_nodes");
        bad(
            "[\"127.0.0.1:5269\"]",
            "[\"a\", \"b\", \"c\"]",
            "control_nodes",
        );
        bad("[northbound]", "[northbound]\nbogus = 1", "bogus");
        let e = parse(&format!("{MIN}\n[admin]\nlisten = \"0.0.0.0:8085\"\n")).unwrap_err();
        assert!(e.contains("token_file"), "{e}");
    }
}
