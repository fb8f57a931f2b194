//! The admin API (JSON-RPC 2.0 over HTTP, jsonrpsee): what operators and `tor-proxy status`
//! call. Methods mirror HAProxy's runtime API verbs.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use jsonrpsee::core::{async_trait, RpcResult};
use jsonrpsee::proc_macros::rpc;
use jsonrpsee::types::ErrorObjectOwned;
use serde::{Deserialize, Serialize};

use crate::affinity::peer::PeerView;
use crate::backend::{AdminState, Backend, ProbeRecord};
use crate::runtime::{ReloadSummary, Runtime};
use crate::session::{KillReason, SessionView};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendView {
    pub name: String,
    pub address: String,
    /// HAProxy-style summary: UP, UP 1/3, DOWN, DOWN 1/2, DRAIN, MAINT, DOWN (agent).
    pub state: String,
    pub health_up: bool,
    pub admin: AdminState,
    /// The agent's readiness word (ready/drain/maint) and health (up/down).
    pub readiness: String,
    pub weight: u32,
    pub effective_weight: u32,
    pub current: u32,
    pub total: u64,
    pub max_conn: u32,
    pub connect_errors: u64,
    pub checks_total: u64,
    pub checks_failed: u64,
    pub readiness_failed: u64,
    pub went_down: u64,
    pub killed_sessions: u64,
    pub last_check: Option<ProbeRecord>,
    pub last_readiness: Option<ProbeRecord>,
    pub last_change_unix_ms: u64,
    /// Takes new sessions right now.
    pub usable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerView {
    pub name: String,
    pub addr: String,
    pub mode: String,
    pub accepted: u64,
    pub handshake_failures: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Show {
    pub node: String,
    pub uptime_ms: u64,
    pub stopping: bool,
    pub listeners: Vec<ListenerView>,
    pub backends: Vec<BackendView>,
    pub sessions: Vec<SessionView>,
    pub peers: Vec<PeerView>,
    pub affinity_entries: usize,
    pub terminations: BTreeMap<String, u64>,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// What keepalived's track script asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub serving: bool,
    pub listeners: usize,
    pub usable_backends: usize,
    pub reason: String,
}

pub fn backend_view(b: &Arc<Backend>) -> BackendView {
    let settings = b.settings();
    let st = b.state();
    let max = settings.max_conn;
    let cur = b.current();
    let eff = b.effective_weight(&st);
    BackendView {
        name: b.name.clone(),
        address: settings.addr.to_string(),
        state: st.label(),
        health_up: !st.checks_enabled || st.health.is_up(),
        admin: st.admin,
        readiness: format!(
            "{}/{}",
            serde_json::to_value(st.agent_admin)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            serde_json::to_value(st.agent_health)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
        weight: settings.weight,
        effective_weight: eff,
        current: cur,
        total: b.total.load(Ordering::Relaxed),
        max_conn: max,
        connect_errors: b.connect_errors.load(Ordering::Relaxed),
        checks_total: b.checks_total.load(Ordering::Relaxed),
        checks_failed: b.checks_failed.load(Ordering::Relaxed),
        readiness_failed: b.readiness_failed.load(Ordering::Relaxed),
        went_down: b.went_down.load(Ordering::Relaxed),
        killed_sessions: b.killed_sessions.load(Ordering::Relaxed),
        last_check: st.last_check.clone(),
        last_readiness: st.last_readiness.clone(),
        last_change_unix_ms: st.last_change_unix_ms,
        usable: !b.is_retired() && st.accepts_new() && eff > 0 && (max == 0 || cur < max),
    }
}

pub fn show(rt: &Runtime) -> Show {
    let listeners = rt
        .listeners
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|l| ListenerView {
            name: l.name.to_string(),
            addr: l.addr.to_string(),
            mode: format!("{:?}", l.mode).to_lowercase(),
            accepted: l.accepted.load(Ordering::Relaxed),
            handshake_failures: l.handshake_failures.load(Ordering::Relaxed),
        })
        .collect();
    Show {
        node: rt.node.clone(),
        uptime_ms: rt.started.elapsed().as_millis() as u64,
        stopping: rt.stopping.load(Ordering::Relaxed),
        listeners,
        backends: rt.pool.backends().iter().map(backend_view).collect(),
        sessions: rt.sessions.views(),
        peers: rt.peers.iter().map(|p| p.view()).collect(),
        affinity_entries: rt.affinity.len(),
        terminations: rt.terminations.snapshot(),
        bytes_up: rt.bytes_up.load(Ordering::Relaxed),
        bytes_down: rt.bytes_down.load(Ordering::Relaxed),
    }
}

pub fn health(rt: &Runtime) -> Health {
    let listeners = rt.listeners.lock().unwrap_or_else(|p| p.into_inner()).len();
    let usable = rt.pool.usable_count();
    let stopping = rt.stopping.load(Ordering::Relaxed);
    let reason = if stopping {
        "stopping".to_string()
    } else if listeners == 0 {
        "no listener bound".to_string()
    } else if usable == 0 {
        "no healthy backend".to_string()
    } else {
        format!("{usable} usable backend(s)")
    };
    Health {
        serving: !stopping && listeners > 0 && usable > 0,
        listeners,
        usable_backends: usable,
        reason,
    }
}

#[rpc(server, client)]
pub trait AdminApi {
    /// Everything: listeners, backends, sessions, peers, counters.
    #[method(name = "show")]
    async fn show(&self) -> RpcResult<Show>;
    /// Serving with at least one usable backend (keepalived's question).
    #[method(name = "health")]
    async fn health(&self) -> RpcResult<Health>;
    /// No new sessions; established ones stay; checks go on.
    #[method(name = "drain")]
    async fn drain(&self, backend: String) -> RpcResult<BackendView>;
    /// No sessions at all: established ones are closed (`K`); checks stop.
    #[method(name = "maint")]
    async fn maint(&self, backend: String) -> RpcResult<BackendView>;
    /// Back to ready.
    #[method(name = "enable")]
    async fn enable(&self, backend: String) -> RpcResult<BackendView>;
    /// Closes every session on the backend (`K`); returns how many.
    #[method(name = "shutdown-sessions")]
    async fn shutdown_sessions(&self, backend: String) -> RpcResult<usize>;
    /// Re-reads the configuration file and applies it in place.
    #[method(name = "reload")]
    async fn reload(&self) -> RpcResult<ReloadSummary>;
}

pub struct AdminImpl {
    pub rt: Arc<Runtime>,
}

fn unknown(name: &str) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(-32001, format!("unknown backend {name:?}"), None::<()>)
}

impl AdminImpl {
    fn backend(&self, name: &str) -> Result<Arc<Backend>, ErrorObjectOwned> {
        self.rt.pool.get(name).ok_or_else(|| unknown(name))
    }

    fn set(&self, name: &str, admin: AdminState) -> RpcResult<BackendView> {
        let b = self.backend(name)?;
        tracing::info!(backend = %name, ?admin, "admin state set by operator");
        self.rt.set_admin(&b, admin);
        Ok(backend_view(&b))
    }
}

#[async_trait]
impl AdminApiServer for AdminImpl {
    async fn show(&self) -> RpcResult<Show> {
        Ok(show(&self.rt))
    }
    async fn health(&self) -> RpcResult<Health> {
        Ok(health(&self.rt))
    }
    async fn drain(&self, backend: String) -> RpcResult<BackendView> {
        self.set(&backend, AdminState::Drain)
    }
    async fn maint(&self, backend: String) -> RpcResult<BackendView> {
        self.set(&backend, AdminState::Maint)
    }
    async fn enable(&self, backend: String) -> RpcResult<BackendView> {
        self.set(&backend, AdminState::Ready)
    }
    async fn shutdown_sessions(&self, backend: String) -> RpcResult<usize> {
        let b = self.backend(&backend)?;
        let n = self.rt.sessions.kill_backend(&b, KillReason::Admin);
        b.killed_sessions.fetch_add(n as u64, Ordering::Relaxed);
        tracing::warn!(backend = %backend, sessions = n, "sessions shut down by operator");
        Ok(n)
    }
    async fn reload(&self) -> RpcResult<ReloadSummary> {
        self.rt
            .reload()
            .await
            .map_err(|e| ErrorObjectOwned::owned(-32002, e.to_string(), None::<()>))
    }
}
