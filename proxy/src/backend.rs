//! Backends at run time: settings, health/admin/readiness state, counters, and the pool that
//! hands out connection leases by least-connections.
//!
//! A [`Lease`] is taken under the pool's selection lock and released on drop, so a backend's
//! session count stays right whatever path a session ends by, and across reloads (a session
//! keeps its `Arc<Backend>` even after the backend is removed from the pool).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;

use crate::balance::{Candidate, LeastConn, Selector};
use crate::checks::readiness::{AgentAdmin, AgentHealth};
use crate::config::ResolvedBackend;
use crate::health::{HealthParams, HealthState, InitState, Phase};

/// Operator-set state, as HAProxy's `set server ... state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    Ready,
    /// Keeps its sessions and its checks, takes no new session.
    Drain,
    /// Takes no session, its sessions are closed, its checks stop.
    Maint,
}

/// Last result of a probe, for status and metrics.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ProbeRecord {
    pub ok: bool,
    pub detail: String,
    pub duration_ms: u64,
    pub at_unix_ms: u64,
}

/// Everything about a backend that changes under its lock.
#[derive(Debug)]
pub struct BackendState {
    pub health: HealthState,
    /// `false` when `health.check = "none"`: health is then always up.
    pub checks_enabled: bool,
    pub admin: AdminState,
    pub agent_admin: AgentAdmin,
    pub agent_health: AgentHealth,
    pub weight_percent: u32,
    pub last_check: Option<ProbeRecord>,
    pub last_readiness: Option<ProbeRecord>,
    pub last_change_unix_ms: u64,
}

impl BackendState {
    /// Able to carry sessions at all (not marked down): losing this closes the sessions.
    pub fn operational(&self) -> bool {
        (!self.checks_enabled || self.health.is_up())
            && self.agent_health == AgentHealth::Up
            && self.admin != AdminState::Maint
            && self.agent_admin != AgentAdmin::Maint
    }

    /// Takes new sessions (besides weight and connection limit).
    pub fn accepts_new(&self) -> bool {
        self.operational()
            && self.admin == AdminState::Ready
            && self.agent_admin == AgentAdmin::Ready
    }

    /// HAProxy-style label: UP, UP 1/3, DOWN, DOWN 1/2, DRAIN, MAINT.
    pub fn label(&self) -> String {
        if self.admin == AdminState::Maint || self.agent_admin == AgentAdmin::Maint {
            return "MAINT".into();
        }
        if self.agent_health == AgentHealth::Down {
            return "DOWN (agent)".into();
        }
        let p = self.health.params();
        let base = if !self.checks_enabled {
            "UP".to_string()
        } else {
            match self.health.phase() {
                Phase::Up => "UP".into(),
                Phase::GoingDown(n) => format!("UP {n}/{}", p.fall),
                Phase::Down => "DOWN".into(),
                Phase::GoingUp(n) => format!("DOWN {n}/{}", p.rise),
            }
        };
        if self.operational() && !self.accepts_new() {
            "DRAIN".into()
        } else {
            base
        }
    }
}

/// One backend (agent).
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    settings: RwLock<Arc<ResolvedBackend>>,
    state: Mutex<BackendState>,
    /// Sessions holding a lease (established or connecting).
    cur: AtomicU32,
    pub total: AtomicU64,
    pub connect_errors: AtomicU64,
    pub checks_failed: AtomicU64,
    pub checks_total: AtomicU64,
    pub readiness_failed: AtomicU64,
    pub went_down: AtomicU64,
    pub killed_sessions: AtomicU64,
    last_pick: AtomicU64,
    retired: AtomicBool,
    /// Wakes the check task: expedited check, maint/ready change, retirement.
    pub wake_check: Notify,
    pub wake_readiness: Notify,
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Backend {
    pub fn new(
        settings: ResolvedBackend,
        params: HealthParams,
        init: InitState,
        checks_enabled: bool,
    ) -> Backend {
        Backend {
            name: settings.name.clone(),
            settings: RwLock::new(Arc::new(settings)),
            state: Mutex::new(BackendState {
                health: HealthState::new(params, init),
                checks_enabled,
                admin: AdminState::Ready,
                agent_admin: AgentAdmin::Ready,
                agent_health: AgentHealth::Up,
                weight_percent: 100,
                last_check: None,
                last_readiness: None,
                last_change_unix_ms: unix_ms(),
            }),
            cur: AtomicU32::new(0),
            total: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            checks_total: AtomicU64::new(0),
            readiness_failed: AtomicU64::new(0),
            went_down: AtomicU64::new(0),
            killed_sessions: AtomicU64::new(0),
            last_pick: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            wake_check: Notify::new(),
            wake_readiness: Notify::new(),
        }
    }

    pub fn settings(&self) -> Arc<ResolvedBackend> {
        match self.settings.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_settings(&self, s: ResolvedBackend) {
        let s = Arc::new(s);
        match self.settings.write() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }

    /// The state lock (poison-tolerant: state stays meaningful after a panicked holder).
    pub fn state(&self) -> MutexGuard<'_, BackendState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn current(&self) -> u32 {
        self.cur.load(Ordering::Relaxed)
    }

    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.wake_check.notify_one();
        self.wake_readiness.notify_one();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Configured weight scaled by the readiness percentage.
    pub fn effective_weight(&self, st: &BackendState) -> u32 {
        let w = self.settings().weight;
        if w == 0 || st.weight_percent == 0 {
            return 0;
        }
        ((u64::from(w) * u64::from(st.weight_percent)) / 100).clamp(1, u64::from(u32::MAX)) as u32
    }

    fn candidate(&self) -> Candidate {
        let st = self.state();
        let max = self.settings().max_conn;
        let cur = self.current();
        Candidate {
            inflight: cur,
            weight: self.effective_weight(&st),
            last_pick: self.last_pick.load(Ordering::Relaxed),
            eligible: !self.is_retired() && st.accepts_new() && (max == 0 || cur < max),
        }
    }
}

/// A session's hold on a backend; releases the count on drop.
#[derive(Debug)]
pub struct Lease {
    backend: Arc<Backend>,
}

impl Lease {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.cur.fetch_sub(1, Ordering::Relaxed);
    }
}

/// All backends, replaced as a whole on reload.
#[derive(Debug)]
pub struct Pool {
    backends: RwLock<Arc<Vec<Arc<Backend>>>>,
    /// Serialises selection so counts and pick order are consistent; holds the pick sequence.
    select_lock: Mutex<u64>,
    origin: Instant,
}

impl Pool {
    pub fn new(backends: Vec<Arc<Backend>>) -> Pool {
        Pool {
            backends: RwLock::new(Arc::new(backends)),
            select_lock: Mutex::new(0),
            origin: Instant::now(),
        }
    }

    /// Time on the health machines' clock.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn backends(&self) -> Arc<Vec<Arc<Backend>>> {
        match self.backends.read() {
            Ok(b) => b.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn replace(&self, backends: Vec<Arc<Backend>>) {
        let new = Arc::new(backends);
        match self.backends.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Backend>> {
        self.backends().iter().find(|b| b.name == name).cloned()
    }

    /// Leases a backend: `preferred` (affinity) when it takes new sessions, else the least
    /// loaded; never one in `excluded` (backends that already failed this session).
    pub fn select(&self, preferred: Option<&str>, excluded: &[Arc<Backend>]) -> Option<Lease> {
        let backends = self.backends();
        let mut seq = self.select_lock.lock().unwrap_or_else(|p| p.into_inner());
        let cands: Vec<Candidate> = backends.iter().map(|b| b.candidate()).collect();
        let excluded_idx: Vec<usize> = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| excluded.iter().any(|e| Arc::ptr_eq(e, b)))
            .map(|(i, _)| i)
            .collect();
        let sticky = preferred.and_then(|name| {
            backends.iter().position(|b| b.name == name).filter(|&i| {
                cands
                    .get(i)
                    .is_some_and(|c| c.eligible && c.weight > 0 && !excluded_idx.contains(&i))
            })
        });
        let idx = sticky.or_else(|| LeastConn.select(&cands, &excluded_idx))?;
        let backend = backends.get(idx)?.clone();
        *seq += 1;
        backend.last_pick.store(*seq, Ordering::Relaxed);
        backend.cur.fetch_add(1, Ordering::Relaxed);
        backend.total.fetch_add(1, Ordering::Relaxed);
        Some(Lease { backend })
    }

    /// Backends that take new sessions now.
    pub fn usable_count(&self) -> usize {
        self.backends()
            .iter()
            .filter(|b| {
                let c = b.candidate();
                c.eligible && c.weight > 0
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthParams;

    fn params() -> HealthParams {
        HealthParams {
            rise: 2,
            fall: 3,
            interval: Duration::from_secs(2),
            fast_interval: Duration::from_millis(500),
            down_interval: Duration::from_secs(2),
        }
    }

    fn backend(name: &str, weight: u32, max_conn: u32) -> Arc<Backend> {
        Arc::new(Backend::new(
            ResolvedBackend {
                name: name.into(),
                addr: "127.0.0.1:1".parse().unwrap(),
                weight,
                max_conn,
                readiness_port: None,
                check_port: None,
                tls_server_name: None,
            },
            params(),
            InitState::FullyUp,
            true,
        ))
    }

    #[test]
    fn leases_count_and_release() {
        let pool = Pool::new(vec![backend("a", 100, 0), backend("b", 100, 0)]);
        let l1 = pool.select(None, &[]).unwrap();
        let l2 = pool.select(None, &[]).unwrap();
        assert_ne!(l1.backend().name, l2.backend().name, "round-robin on ties");
        assert_eq!(pool.get("a").unwrap().current(), 1);
        drop(l1);
        drop(l2);
        assert_eq!(pool.get("a").unwrap().current(), 0);
        assert_eq!(pool.get("b").unwrap().current(), 0);
    }

    #[test]
    fn counts_survive_replacement() {
        let a = backend("a", 100, 0);
        let pool = Pool::new(vec![a.clone()]);
        let lease = pool.select(None, &[]).unwrap();
        pool.replace(vec![backend("b", 100, 0)]);
        assert_eq!(a.current(), 1);
        drop(lease);
        assert_eq!(a.current(), 0);
        assert_eq!(pool.select(None, &[]).unwrap().backend().name, "b");
    }

    #[test]
    fn affinity_preferred_only_when_it_takes_sessions() {
        let a = backend("a", 100, 0);
        let b = backend("b", 100, 0);
        let pool = Pool::new(vec![a.clone(), b.clone()]);
        let _hold = pool.select(Some("b"), &[]).unwrap();
        assert_eq!(b.current(), 1);
        let l = pool.select(Some("b"), &[]).unwrap();
        assert_eq!(l.backend().name, "b", "sticky even though b is busier");
        b.state().admin = AdminState::Drain;
        assert_eq!(pool.select(Some("b"), &[]).unwrap().backend().name, "a");
        assert_eq!(
            pool.select(Some("a"), std::slice::from_ref(&a))
                .map(|l| l.backend().name.clone()),
            None
        );
    }

    #[test]
    fn max_conn_and_states_gate_selection() {
        let a = backend("a", 100, 1);
        let pool = Pool::new(vec![a.clone()]);
        let l = pool.select(None, &[]).unwrap();
        assert!(pool.select(None, &[]).is_none(), "limit reached");
        drop(l);
        a.state().agent_admin = AgentAdmin::Drain;
        assert!(pool.select(None, &[]).is_none());
        a.state().agent_admin = AgentAdmin::Ready;
        a.state().weight_percent = 0;
        assert!(pool.select(None, &[]).is_none());
        a.state().weight_percent = 50;
        assert!(pool.select(None, &[]).is_some());
        a.state()
            .health
            .on_live_error(crate::health::OnError::MarkDown, Duration::ZERO);
        assert!(pool.select(None, &[]).is_none());
        assert_eq!(a.state().label(), "DOWN");
    }
}
