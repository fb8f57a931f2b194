//! TOML configuration: parsing, defaults and validation.
//!
//! Every key, with its default, is documented in `proxy/examples/tor-proxy.toml`. Validation is
//! strict (unknown keys are errors) so that a typo never silently falls back to a default.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::health::{HealthParams, InitState, OnError};

/// A configuration problem, with enough context to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub global: Global,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub keepalive: KeepaliveConfig,
    #[serde(default)]
    pub backend_tls: Option<BackendTlsConfig>,
    #[serde(default)]
    pub affinity: AffinityConfig,
    #[serde(default)]
    pub peering: Option<PeeringConfig>,
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Global {
    /// This proxy's name: identifies it to peers and in logs.
    #[serde(default = "default_node_name")]
    pub node_name: String,
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Size of a copy buffer, borrowed only while a session moves data.
    #[serde(default = "default_buffer_size")]
    pub buffer_size: usize,
    /// Maximum concurrent sessions over all listeners (0 = unlimited).
    #[serde(default)]
    pub max_sessions: u32,
    /// Data-path threads, each with its own event loop accepting from every listener, as
    /// HAProxy's nbthread (0 = one per CPU).
    #[serde(default)]
    pub threads: usize,
    /// On SIGTERM, how long established sessions may finish before they are closed.
    #[serde(default, deserialize_with = "de_duration")]
    pub shutdown_grace: Duration,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            node_name: default_node_name(),
            log_format: LogFormat::Text,
            log_level: default_log_level(),
            buffer_size: default_buffer_size(),
            max_sessions: 0,
            threads: 0,
            shutdown_grace: Duration::ZERO,
        }
    }
}

fn default_node_name() -> String {
    "tor-proxy".into()
}
fn default_log_level() -> String {
    "info".into()
}
fn default_buffer_size() -> usize {
    16 * 1024
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMode {
    /// Bytes flow untouched: TLS runs end to end between switch and agent.
    #[default]
    Passthrough,
    /// The proxy terminates the switch's TLS (verifying its certificate) and re-encrypts.
    Terminate,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    #[serde(default)]
    pub mode: ListenerMode,
    /// Terminate mode: the certificate chain and key the proxy presents to switches.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Terminate mode: CA bundle that switch certificates must chain to (verify required).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    /// `IP:PORT` or `HOST:PORT` (resolved when the configuration is loaded).
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Maximum concurrent sessions on this backend (0 = unlimited).
    #[serde(default)]
    pub max_conn: u32,
    /// Port of the agent's readiness line (plain TCP); none = no readiness check.
    pub readiness_port: Option<u16>,
    /// Port for the health check (default: the address's port).
    pub check_port: Option<u16>,
    /// Name checked in the agent's certificate (TLS checks and terminate mode);
    /// default: `backend_tls.server_name`, else the backend's IP address.
    pub tls_server_name: Option<String>,
}

fn default_weight() -> u32 {
    100
}

/// Maximum backend weight, as in HAProxy's 0..=256 scaled by 100 for readiness percentages.
pub const MAX_WEIGHT: u32 = 25_600;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "default_connect", deserialize_with = "de_duration")]
    pub connect: Duration,
    /// Extra connection attempts after the first one fails (each redispatched).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// A session with no byte in either direction for this long is closed (0 = never).
    #[serde(default = "default_idle", deserialize_with = "de_duration")]
    pub idle: Duration,
    /// After one side has closed its write half, how long the other may keep sending.
    #[serde(default = "default_fin", deserialize_with = "de_duration")]
    pub fin: Duration,
    /// Terminate mode: TLS handshake with the switch.
    #[serde(default = "default_handshake", deserialize_with = "de_duration")]
    pub handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: default_connect(),
            retries: default_retries(),
            idle: default_idle(),
            fin: default_fin(),
            handshake: default_handshake(),
        }
    }
}
fn default_connect() -> Duration {
    Duration::from_secs(2)
}
fn default_retries() -> u32 {
    3
}
fn default_idle() -> Duration {
    Duration::from_secs(3600)
}
fn default_fin() -> Duration {
    Duration::from_secs(30)
}
fn default_handshake() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connect. Cannot see a hung (SIGSTOPped) agent: its kernel still accepts.
    Tcp,
    /// A full TLS handshake with the agent: sees a hung agent.
    #[default]
    Tls,
    /// No active check: the backend is always considered up (live errors still count).
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default)]
    pub check: CheckKind,
    #[serde(default = "default_interval", deserialize_with = "de_duration")]
    pub interval: Duration,
    #[serde(default = "default_fast_interval", deserialize_with = "de_duration")]
    pub fast_interval: Duration,
    /// Interval while fully down (default: `interval`).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub down_interval: Option<Duration>,
    #[serde(default = "default_check_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_fall")]
    pub fall: u32,
    #[serde(default)]
    pub init_state: InitState,
    /// What a failed live connect does to the backend's health.
    #[serde(default)]
    pub on_error: OnError,
    /// Readiness check interval (default: `interval`).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub readiness_interval: Option<Duration>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            check: CheckKind::default(),
            interval: default_interval(),
            fast_interval: default_fast_interval(),
            down_interval: None,
            timeout: default_check_timeout(),
            rise: default_rise(),
            fall: default_fall(),
            init_state: InitState::default(),
            on_error: OnError::default(),
            readiness_interval: None,
        }
    }
}

impl HealthConfig {
    pub fn params(&self) -> HealthParams {
        HealthParams {
            rise: self.rise,
            fall: self.fall,
            interval: self.interval,
            fast_interval: self.fast_interval,
            down_interval: self.down_interval.unwrap_or(self.interval),
        }
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_fast_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_ka_idle", deserialize_with = "de_duration")]
    pub idle: Duration,
    #[serde(default = "default_ka_interval", deserialize_with = "de_duration")]
    pub interval: Duration,
    #[serde(default = "default_ka_count")]
    pub count: u32,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            enabled: true,
            idle: default_ka_idle(),
            interval: default_ka_interval(),
            count: default_ka_count(),
        }
    }
}
fn default_true() -> bool {
    true
}
fn default_ka_idle() -> Duration {
    Duration::from_secs(10)
}
fn default_ka_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_ka_count() -> u32 {
    3
}

/// TLS towards the agents: TLS health checks and re-encryption in terminate mode.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsConfig {
    /// CA bundle the agents' certificates must chain to.
    pub ca: PathBuf,
    /// Client certificate and key the proxy presents to agents (agents require mTLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Name checked in the agents' certificates (default: each backend's IP).
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffinityConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// An entry not refreshed for this long is forgotten (entries with live sessions are refreshed).
    #[serde(default = "default_affinity_expire", deserialize_with = "de_duration")]
    pub expire: Duration,
    #[serde(default = "default_affinity_max")]
    pub max_entries: usize,
}

impl Default for AffinityConfig {
    fn default() -> Self {
        AffinityConfig {
            enabled: true,
            expire: default_affinity_expire(),
            max_entries: default_affinity_max(),
        }
    }
}
fn default_affinity_expire() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_affinity_max() -> usize {
    100_000
}

/// This proxy's side of the peer link (affinity sync), always mutual TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeeringConfig {
    /// Where peers connect to us.
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// CA that peers' certificates must chain to (both directions).
    pub tls_ca: PathBuf,
    #[serde(default = "default_reconnect", deserialize_with = "de_duration")]
    pub reconnect: Duration,
}
fn default_reconnect() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's `global.node_name`.
    pub name: String,
    /// One or more addresses of the peer, tried in turn.
    pub addresses: Vec<SocketAddr>,
    /// Name checked in the peer's certificate (default: the address's IP).
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// File holding a bearer token; required (or TLS with client certificates) off loopback.
    pub token_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            token_file: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9190))
}

impl AdminConfig {
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some()
    }
}

/// Parses `"500ms"`, `"2s"`, `"5m"`, `"1h"`, `"1d"`, `"0"`, or an integer of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("duration {text:?} needs a unit (ms, s, m, h, d)"))?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("duration {text:?}: {num:?} is not a number"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => return Err(format!("duration {text:?}: unknown unit {other:?}")),
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1.0e9).contains(&secs) {
        return Err(format!("duration {text:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Text(String),
    Millis(u64),
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match RawDuration::deserialize(d)? {
        RawDuration::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
        RawDuration::Millis(ms) => Ok(Duration::from_millis(ms)),
    }
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

/// A backend with its address resolved: what the runtime uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub max_conn: u32,
    pub readiness_port: Option<u16>,
    pub check_port: Option<u16>,
    pub tls_server_name: Option<String>,
}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates text (paths are not opened here).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that does not need the network or the file system.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let g = &self.global;
        if g.node_name.is_empty() {
            return Err(invalid("global.node_name must not be empty"));
        }
        if !(1024..=1 << 20).contains(&g.buffer_size) {
            return Err(invalid(format!(
                "global.buffer_size = {} must be between 1024 and 1048576",
                g.buffer_size
            )));
        }
        if g.threads > 256 {
            return Err(invalid(format!(
                "global.threads = {} is above 256",
                g.threads
            )));
        }
        if self.listeners.is_empty() {
            return Err(invalid("at least one [[listener]] is required"));
        }
        let mut names = HashSet::new();
        for l in &self.listeners {
            if !names.insert(l.name.as_str()) {
                return Err(invalid(format!("listener name {:?} is used twice", l.name)));
            }
            match l.mode {
                ListenerMode::Passthrough => {
                    if l.tls_cert.is_some() || l.tls_key.is_some() || l.client_ca.is_some() {
                        return Err(invalid(format!(
                            "listener {:?}: tls_cert/tls_key/client_ca only apply to mode = \"terminate\"",
                            l.name
                        )));
                    }
                }
                ListenerMode::Terminate => {
                    if l.tls_cert.is_none() || l.tls_key.is_none() || l.client_ca.is_none() {
                        return Err(invalid(format!(
                            "listener {:?}: mode = \"terminate\" needs tls_cert, tls_key and client_ca",
                            l.name
                        )));
                    }
                    if self.backend_tls.is_none() {
                        return Err(invalid(format!(
                            "listener {:?}: mode = \"terminate\" re-encrypts to the agents and needs [backend_tls]",
                            l.name
                        )));
                    }
                }
            }
        }
        if self.backends.is_empty() {
            return Err(invalid("at least one [[backend]] is required"));
        }
        let mut names = HashSet::new();
        for b in &self.backends {
            if b.name.is_empty() || b.name.len() > 64 || b.name.contains(char::is_whitespace) {
                return Err(invalid(format!(
                    "backend name {:?} must be 1 to 64 characters without spaces",
                    b.name
                )));
            }
            if !names.insert(b.name.as_str()) {
                return Err(invalid(format!("backend name {:?} is used twice", b.name)));
            }
            if b.weight > MAX_WEIGHT {
                return Err(invalid(format!(
                    "backend {:?}: weight {} is above the maximum {MAX_WEIGHT}",
                    b.name, b.weight
                )));
            }
        }
        let h = &self.health;
        if h.rise == 0 || h.fall == 0 {
            return Err(invalid("health.rise and health.fall must be at least 1"));
        }
        if h.check == CheckKind::Tls && self.backend_tls.is_none() {
            return Err(invalid(
                "health.check = \"tls\" (the default) needs [backend_tls] with the agents' CA; \
                 set health.check = \"tcp\" for plain connect checks",
            ));
        }
        for (key, d) in [
            ("health.interval", h.interval),
            ("health.fast_interval", h.fast_interval),
            ("health.timeout", h.timeout),
            ("timeouts.connect", self.timeouts.connect),
            ("timeouts.handshake", self.timeouts.handshake),
        ] {
            if d < Duration::from_millis(10) {
                return Err(invalid(format!("{key} must be at least 10ms")));
            }
        }
        if let Some(t) = &self.backend_tls {
            if t.cert.is_some() != t.key.is_some() {
                return Err(invalid("backend_tls.cert and backend_tls.key go together"));
            }
        }
        if self.keepalive.enabled
            && (self.keepalive.idle < Duration::from_secs(1)
                || self.keepalive.interval < Duration::from_secs(1)
                || self.keepalive.count == 0)
        {
            return Err(invalid(
                "keepalive.idle and keepalive.interval must be at least 1s and keepalive.count at least 1",
            ));
        }
        if !self.peers.is_empty() && self.peering.is_none() {
            return Err(invalid(
                "[[peer]] entries need a [peering] section (listen and TLS files)",
            ));
        }
        for p in &self.peers {
            if p.name == g.node_name {
                return Err(invalid(format!(
                    "peer {:?} has this proxy's own global.node_name; each proxy needs its own name",
                    p.name
                )));
            }
            if p.addresses.is_empty() {
                return Err(invalid(format!(
                    "peer {:?} needs at least one address",
                    p.name
                )));
            }
        }
        let a = &self.admin;
        let tls_parts = [&a.tls_cert, &a.tls_key, &a.tls_client_ca]
            .iter()
            .filter(|p| p.is_some())
            .count();
        if tls_parts != 0 && tls_parts != 3 {
            return Err(invalid(
                "admin TLS needs all of admin.tls_cert, admin.tls_key and admin.tls_client_ca",
            ));
        }
        if !a.listen.ip().is_loopback() && a.token_file.is_none() && tls_parts == 0 {
            return Err(invalid(format!(
                "admin.listen = {} is not a loopback address: set admin.token_file (bearer token) \
                 or admin.tls_cert + admin.tls_key + admin.tls_client_ca (client certificates)",
                a.listen
            )));
        }
        Ok(())
    }

    /// Resolves backend addresses (DNS names are resolved once, here).
    pub fn resolve_backends(&self) -> Result<Vec<ResolvedBackend>, ConfigError> {
        self.backends
            .iter()
            .map(|b| {
                let addr = b
                    .address
                    .to_socket_addrs()
                    .map_err(|e| {
                        invalid(format!(
                            "backend {:?}: address {:?}: {e}",
                            b.name, b.address
                        ))
                    })?
                    .next()
                    .ok_or_else(|| {
                        invalid(format!(
                            "backend {:?}: address {:?} resolves to nothing",
                            b.name, b.address
                        ))
                    })?;
                Ok(ResolvedBackend {
                    name: b.name.clone(),
                    addr,
                    weight: b.weight,
                    max_conn: b.max_conn,
                    readiness_port: b.readiness_port,
                    check_port: b.check_port,
                    tls_server_name: b.tls_server_name.clone(),
                })
            })
            .collect()
    }

    /// Checks that every file the configuration names can be read and parsed.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        for l in &self.listeners {
            if l.mode == ListenerMode::Terminate {
                if let (Some(c), Some(k), Some(ca)) = (&l.tls_cert, &l.tls_key, &l.client_ca) {
                    crate::tls::server_config(c, k, Some(ca))
                        .map_err(|e| invalid(format!("listener {:?}: {e}", l.name)))?;
                }
            }
        }
        if let Some(t) = &self.backend_tls {
            crate::tls::client_config(&t.ca, t.cert.as_deref(), t.key.as_deref())
                .map_err(|e| invalid(format!("backend_tls: {e}")))?;
        }
        if let Some(p) = &self.peering {
            crate::tls::server_config(&p.tls_cert, &p.tls_key, Some(&p.tls_ca))
                .map_err(|e| invalid(format!("peering: {e}")))?;
            crate::tls::client_config(&p.tls_ca, Some(&p.tls_cert), Some(&p.tls_key))
                .map_err(|e| invalid(format!("peering: {e}")))?;
        }
        let a = &self.admin;
        if let Some(t) = &a.token_file {
            crate::admin::read_token(t).map_err(|e| invalid(format!("admin.token_file: {e}")))?;
        }
        if let (Some(c), Some(k), Some(ca)) = (&a.tls_cert, &a.tls_key, &a.tls_client_ca) {
            crate::tls::server_config(c, k, Some(ca))
                .map_err(|e| invalid(format!("admin TLS: {e}")))?;
        }
        self.resolve_backends()?;
        Ok(())
    }

    /// Warnings worth printing by `check-config` even though the file is valid.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.health.check == CheckKind::Tcp {
            w.push(
                "health.check = \"tcp\" cannot detect a hung agent (its kernel still accepts connections); \
                 prefer \"tls\""
                    .to_string(),
            );
        }
        if !self.admin.listen.ip().is_loopback() {
            w.push(format!(
                "admin API listens on non-loopback {} (protected by {})",
                self.admin.listen,
                if self.admin.tls_enabled() {
                    "TLS client certificates"
                } else {
                    "a bearer token"
                }
            ));
        }
        if self.health.timeout > self.health.interval {
            w.push("health.timeout is longer than health.interval".into());
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[listener]]
        name = "ovsdb"
        bind = "127.0.0.1:6640"
        [[backend]]
        name = "a1"
        address = "127.0.0.1:16640"
        [health]
        check = "tcp"
    "#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.timeouts.connect, Duration::from_secs(2));
        assert_eq!(c.health.rise, 2);
        assert_eq!(c.health.fall, 3);
        assert_eq!(c.health.interval, Duration::from_secs(2));
        assert_eq!(c.health.fast_interval, Duration::from_millis(500));
        assert_eq!(c.backends[0].weight, 100);
        assert_eq!(c.listeners[0].mode, ListenerMode::Passthrough);
        assert_eq!(c.admin.listen, "127.0.0.1:9190".parse().unwrap());
        let r = c.resolve_backends().unwrap();
        assert_eq!(r[0].addr, "127.0.0.1:16640".parse().unwrap());
    }

    #[test]
    fn the_documented_example_parses() {
        let c = Config::parse(include_str!("../examples/tor-proxy.toml")).unwrap();
        assert_eq!(c.backends.len(), 2);
        assert_eq!(c.health.check, CheckKind::Tls);
        assert_eq!(c.global.buffer_size, default_buffer_size());
        assert_eq!(c.affinity.expire, default_affinity_expire());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn errors_are_precise() {
        let e = Config::parse(&MINIMAL.replace("check = \"tcp\"", "")).unwrap_err();
        assert!(e.to_string().contains("backend_tls"), "{e}");
        let e =
            Config::parse(&format!("{MINIMAL}\n[admin]\nlisten = \"0.0.0.0:9190\"\n")).unwrap_err();
        assert!(e.to_string().contains("not a loopback"), "{e}");
        let e = Config::parse(&MINIMAL.replace("name = \"a1\"", "name = \"a1\"\nweigth = 3"))
            .unwrap_err();
        assert!(e.to_string().contains("weigth"), "{e}");
        let twice = format!("{MINIMAL}\n[[backend]]\nname = \"a1\"\naddress = \"127.0.0.1:1\"\n");
        let e = Config::parse(&twice).unwrap_err();
        assert!(e.to_string().contains("used twice"), "{e}");
        let e = Config::parse(&MINIMAL.replace(
            "bind = \"127.0.0.1:6640\"",
            "bind = \"127.0.0.1:6640\"\nmode = \"terminate\"",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("needs tls_cert"), "{e}");
    }

    #[test]
    fn admin_off_loopback_accepted_with_token() {
        let text = format!("{MINIMAL}\n[admin]\nlisten = \"0.0.0.0:9190\"\ntoken_file = \"/x\"\n");
        let c = Config::parse(&text).unwrap();
        assert!(c.warnings().iter().any(|w| w.contains("bearer token")));
    }
}
