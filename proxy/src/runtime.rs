//! The proxy's shared state: backends, sessions, affinity, counters, settings, and the one
//! place where backend state changes are applied (so "marked down" always closes sessions).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use rustls::ClientConfig;
use serde::Serialize;
use tracing::{info, warn};

use crate::affinity::peer::PeerStats;
use crate::affinity::AffinityTable;
use crate::backend::{unix_ms, AdminState, Backend, BackendState, Pool};
use crate::config::{
    AffinityConfig, CheckKind, Config, ConfigError, HealthConfig, KeepaliveConfig, ListenerMode,
    Timeouts,
};
use crate::session::{KillReason, Sessions, Termination, TerminationCounts};

/// Data-path settings that a reload may change.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeouts: Timeouts,
    pub keepalive: KeepaliveConfig,
    pub health: HealthConfig,
    pub affinity: AffinityConfig,
    pub buffer_size: usize,
    pub backend_tls: Option<Arc<ClientConfig>>,
    pub backend_tls_server_name: Option<String>,
}

impl Settings {
    pub fn from_config(c: &Config) -> Result<Settings, ConfigError> {
        let backend_tls = match &c.backend_tls {
            Some(t) => Some(
                crate::tls::client_config(&t.ca, t.cert.as_deref(), t.key.as_deref())
                    .map_err(|e| ConfigError::Invalid(format!("backend_tls: {e}")))?,
            ),
            None => None,
        };
        Ok(Settings {
            timeouts: c.timeouts.clone(),
            keepalive: c.keepalive.clone(),
            health: c.health.clone(),
            affinity: c.affinity.clone(),
            buffer_size: c.global.buffer_size,
            backend_tls,
            backend_tls_server_name: c.backend_tls.as_ref().and_then(|t| t.server_name.clone()),
        })
    }
}

/// Per-listener counters.
#[derive(Debug)]
pub struct ListenerInfo {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub mode: ListenerMode,
    pub accepted: AtomicU64,
    pub handshake_failures: AtomicU64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub updated: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub struct Runtime {
    pub node: String,
    pub pool: Pool,
    pub sessions: Sessions,
    pub affinity: AffinityTable,
    settings: RwLock<Arc<Settings>>,
    pub listeners: Mutex<Vec<Arc<ListenerInfo>>>,
    pub peers: Vec<Arc<PeerStats>>,
    pub terminations: TerminationCounts,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub started: Instant,
    pub stopping: AtomicBool,
    pub config_path: Option<PathBuf>,
    /// The configuration currently applied (reload diffs against it).
    pub config: Mutex<Config>,
    reload_lock: tokio::sync::Mutex<()>,
}

impl Runtime {
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Result<Arc<Runtime>, ConfigError> {
        let settings = Settings::from_config(&config)?;
        let backends = config
            .resolve_backends()?
            .into_iter()
            .map(|b| {
                Arc::new(Backend::new(
                    b,
                    config.health.params(),
                    config.health.init_state,
                    config.health.check != CheckKind::None,
                ))
            })
            .collect();
        let peers = config
            .peers
            .iter()
            .map(|p| Arc::new(PeerStats::new(p.name.clone(), p.addresses.clone())))
            .collect();
        Ok(Arc::new(Runtime {
            node: config.global.node_name.clone(),
            pool: Pool::new(backends),
            sessions: Sessions::default(),
            affinity: AffinityTable::new(
                config.global.node_name.clone(),
                config.affinity.max_entries,
            ),
            settings: RwLock::new(Arc::new(settings)),
            listeners: Mutex::new(Vec::new()),
            peers,
            terminations: TerminationCounts::default(),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            started: Instant::now(),
            stopping: AtomicBool::new(false),
            config_path,
            config: Mutex::new(config),
            reload_lock: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn settings(&self) -> Arc<Settings> {
        match self.settings.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn count_termination(&self, t: Termination) {
        self.terminations.count(t);
    }

    /// Applies `f` to a backend's state; if that took the backend out of service its sessions
    /// are closed at once with `reason` (HAProxy's `on-marked-down shutdown-sessions`).
    pub fn update_backend<R>(
        &self,
        b: &Arc<Backend>,
        why: &str,
        reason: KillReason,
        f: impl FnOnce(&mut BackendState) -> R,
    ) -> R {
        let (r, was, now, label) = {
            let mut st = b.state();
            let was = st.operational();
            let before = st.label();
            let r = f(&mut st);
            let now = st.operational();
            let label = st.label();
            if label != before {
                st.last_change_unix_ms = unix_ms();
                info!(backend = %b.name, from = %before, to = %label, why, "backend state changed");
            }
            (r, was, now, label)
        };
        if was && !now {
            b.went_down.fetch_add(1, Ordering::Relaxed);
            let n = self.sessions.kill_backend(b, reason);
            b.killed_sessions.fetch_add(n as u64, Ordering::Relaxed);
            warn!(backend = %b.name, state = %label, why, sessions_closed = n, "backend marked down");
        } else if !was && now {
            info!(backend = %b.name, state = %label, why, "backend marked up");
        }
        r
    }

    /// A switch's connect to `b` failed: HAProxy's `observe layer4` + `on-error`.
    pub fn on_connect_error(&self, b: &Arc<Backend>) {
        let policy = self.settings().health.on_error;
        let now = self.pool.now();
        self.update_backend(b, "live connect failed", KillReason::BackendDown, |st| {
            if st.checks_enabled {
                st.health.on_live_error(policy, now);
            }
        });
        b.wake_check.notify_one();
    }

    /// A session on `b` ended suspiciously (reset, or closed by the agent): check it now.
    pub fn suspect(&self, b: &Arc<Backend>) {
        let now = self.pool.now();
        b.state().health.expedite(now);
        b.wake_check.notify_one();
    }

    /// Operator admin-state change (drain / maint / enable).
    pub fn set_admin(&self, b: &Arc<Backend>, admin: AdminState) {
        self.update_backend(b, "admin command", KillReason::Admin, |st| st.admin = admin);
        b.wake_check.notify_one();
        b.wake_readiness.notify_one();
    }

    /// Re-reads the configuration file and applies it in place. Backends are matched by
    /// name: same address = updated in place (sessions and health kept); new address or new
    /// name = a fresh backend; a removed backend keeps its established sessions until they end.
    pub async fn reload(self: &Arc<Self>) -> Result<ReloadSummary, ConfigError> {
        let _guard = self.reload_lock.lock().await;
        let path = self
            .config_path
            .clone()
            .ok_or_else(|| ConfigError::Invalid("no configuration file to reload".into()))?;
        let new = tokio::task::spawn_blocking(move || -> Result<Config, ConfigError> {
            let c = Config::load(&path)?;
            c.check_files()?;
            Ok(c)
        })
        .await
        .map_err(|e| ConfigError::Invalid(format!("reload task failed: {e}")))??;
        self.apply(new)
    }

    fn apply(self: &Arc<Self>, new: Config) -> Result<ReloadSummary, ConfigError> {
        let settings = Settings::from_config(&new)?;
        let resolved = new.resolve_backends()?;
        let old_config = self
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut summary = ReloadSummary {
            added: vec![],
            removed: vec![],
            updated: vec![],
            warnings: vec![],
        };
        let current = self.pool.backends();
        let mut next = Vec::new();
        let mut fresh = Vec::new();
        for rb in resolved {
            match current.iter().find(|b| b.name == rb.name) {
                Some(b) if b.settings().addr == rb.addr => {
                    if *b.settings() != rb {
                        summary.updated.push(rb.name.clone());
                    }
                    b.set_settings(rb);
                    {
                        let mut st = b.state();
                        st.health.set_params(new.health.params());
                        st.checks_enabled = new.health.check != CheckKind::None;
                    }
                    b.wake_check.notify_one();
                    next.push(b.clone());
                }
                existing => {
                    if existing.is_some() {
                        summary.updated.push(format!("{} (new address)", rb.name));
                    } else {
                        summary.added.push(rb.name.clone());
                    }
                    let b = Arc::new(Backend::new(
                        rb,
                        new.health.params(),
                        new.health.init_state,
                        new.health.check != CheckKind::None,
                    ));
                    fresh.push(b.clone());
                    next.push(b);
                }
            }
        }
        for b in current.iter() {
            if !next.iter().any(|n| Arc::ptr_eq(n, b)) {
                if !summary.updated.iter().any(|u| u.starts_with(&b.name)) {
                    summary.removed.push(b.name.clone());
                }
                b.retire();
            }
        }
        if old_config
            .listeners
            .iter()
            .map(|l| (&l.name, l.bind, l.mode))
            .collect::<Vec<_>>()
            != new
                .listeners
                .iter()
                .map(|l| (&l.name, l.bind, l.mode))
                .collect::<Vec<_>>()
        {
            summary
                .warnings
                .push("listener changes are applied at the next restart".into());
        }
        if old_config.peers.len() != new.peers.len()
            || old_config
                .peers
                .iter()
                .zip(&new.peers)
                .any(|(a, b)| a.name != b.name || a.addresses != b.addresses)
            || old_config.peering.as_ref().map(|p| p.listen)
                != new.peering.as_ref().map(|p| p.listen)
        {
            summary
                .warnings
                .push("peer changes are applied at the next restart".into());
        }
        if old_config.keepalive.enabled != new.keepalive.enabled
            || old_config.keepalive.idle != new.keepalive.idle
            || old_config.keepalive.interval != new.keepalive.interval
            || old_config.keepalive.count != new.keepalive.count
        {
            summary.warnings.push(
                "keepalive changes apply to agent legs now and to switch legs at the next restart"
                    .into(),
            );
        }
        if old_config.admin.listen != new.admin.listen {
            summary
                .warnings
                .push("admin.listen changes are applied at the next restart".into());
        }
        match self.settings.write() {
            Ok(mut s) => *s = Arc::new(settings),
            Err(p) => *p.into_inner() = Arc::new(settings),
        }
        self.pool.replace(next);
        for b in fresh {
            crate::checks::spawn(self.clone(), b);
        }
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = new;
        info!(added = ?summary.added, removed = ?summary.removed, updated = ?summary.updated,
              warnings = ?summary.warnings, "configuration reloaded");
        Ok(summary)
    }
}
