//! Sessions: the registry the admin API and shutdowns act on, termination codes, and the one
//! log line per session in HAProxy's tcplog layout.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Notify;

use crate::backend::{unix_ms, Backend};

/// Why a session was closed from outside its own data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KillReason {
    /// The backend was marked down (health, readiness `down`, or maintenance).
    BackendDown = 1,
    /// An operator closed it (admin `shutdown-sessions`).
    Admin = 2,
    /// The proxy is stopping.
    Shutdown = 3,
    /// No byte either way for the idle timeout (found by the sweeper).
    Idle = 4,
    /// One side closed and the other did not finish within the fin timeout.
    FinTimeout = 5,
}

impl KillReason {
    fn from_u8(v: u8) -> Option<KillReason> {
        match v {
            1 => Some(KillReason::BackendDown),
            2 => Some(KillReason::Admin),
            3 => Some(KillReason::Shutdown),
            4 => Some(KillReason::Idle),
            5 => Some(KillReason::FinTimeout),
            _ => None,
        }
    }
}

/// HAProxy's two-letter termination state: cause, then session phase at close.
///
/// Causes: `-` normal, `C` client aborted or errored, `S` server aborted/refused/errored,
/// `c` client-side (or tunnel idle) timeout, `s` server-side timeout, `D` killed because the
/// backend was marked down, `K` killed by an operator or at shutdown, `P` proxy-side refusal
/// (no backend available), `R` resource exhausted, `I` internal error.
/// Phases: `R` before the session was set up (TLS handshake with the switch), `C` connecting
/// to a backend, `D` data transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Termination(pub char, pub char);

impl Termination {
    pub const NORMAL: Termination = Termination('-', '-');
    pub fn code(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        f.write_char(self.0)?;
        f.write_char(self.1)
    }
}

/// How many sessions ended with each termination code: one counter per code, so that the data
/// threads count without a lock.
#[derive(Debug)]
pub struct TerminationCounts {
    slots: [AtomicU64; CAUSES.len() * PHASES.len()],
    /// Codes outside the documented alphabet (none today).
    other: std::sync::Mutex<std::collections::BTreeMap<Termination, u64>>,
}

const CAUSES: &[u8] = b"-CScsDKPRI";
const PHASES: &[u8] = b"-RCD";

impl Default for TerminationCounts {
    fn default() -> Self {
        TerminationCounts {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
            other: Default::default(),
        }
    }
}

impl TerminationCounts {
    fn slot(t: Termination) -> Option<usize> {
        let cause = CAUSES.iter().position(|&c| char::from(c) == t.0)?;
        let phase = PHASES.iter().position(|&c| char::from(c) == t.1)?;
        Some(cause * PHASES.len() + phase)
    }

    pub fn count(&self, t: Termination) {
        match Self::slot(t).and_then(|i| self.slots.get(i)) {
            Some(n) => {
                n.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                let mut other = self.other.lock().unwrap_or_else(|p| p.into_inner());
                *other.entry(t).or_insert(0) += 1;
            }
        }
    }

    /// Every code seen so far, by its two letters.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for (i, n) in self.slots.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                let code = [CAUSES[i / PHASES.len()], PHASES[i % PHASES.len()]];
                out.insert(String::from_utf8_lossy(&code).into_owned(), n);
            }
        }
        let other = self.other.lock().unwrap_or_else(|p| p.into_inner());
        for (t, n) in other.iter() {
            *out.entry(t.code()).or_insert(0) += n;
        }
        out
    }
}

/// The shared, observable part of one session.
#[derive(Debug)]
pub struct SessionCtl {
    pub id: u64,
    pub listener: Arc<str>,
    pub client: SocketAddr,
    /// Switch identity for affinity: source IP, or certificate CN in terminate mode.
    pub switch: OnceLock<String>,
    pub backend: BackendSlot,
    pub started: Instant,
    pub started_unix_ms: u64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// Milliseconds since `started` of the last byte moved.
    pub last_activity_ms: AtomicU64,
    /// Milliseconds since `started` when one side closed its write half (0 = not yet).
    pub fin_since_ms: AtomicU64,
    /// Which side the session waits for after a half-close (1 = client, 2 = server).
    pub fin_waiting: AtomicU8,
    kill: Notify,
    kill_reason: AtomicU8,
}

/// The backend a session is on. Replaceable: an agent that accepts and then drops the session
/// before its first byte (a process dying with its listener still open) gets the session
/// redispatched to another backend.
#[derive(Debug, Default)]
pub struct BackendSlot(Mutex<Option<Arc<Backend>>>);

impl BackendSlot {
    pub fn get(&self) -> Option<Arc<Backend>> {
        self.lock().clone()
    }

    pub fn set(&self, b: Arc<Backend>) {
        *self.lock() = Some(b);
    }

    pub fn clear(&self) {
        *self.lock() = None;
    }

    pub fn is(&self, b: &Arc<Backend>) -> bool {
        self.lock().as_ref().is_some_and(|x| Arc::ptr_eq(x, b))
    }

    pub fn is_set(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Backend>>> {
        // Nothing can panic while the lock is held: a poisoned slot is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SessionCtl {
    pub fn kill(&self, reason: KillReason) {
        // First reason wins; the notify permit is kept if the session is not waiting yet.
        let _ =
            self.kill_reason
                .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
        self.kill.notify_one();
    }

    pub fn kill_reason(&self) -> Option<KillReason> {
        KillReason::from_u8(self.kill_reason.load(Ordering::Acquire))
    }

    pub async fn killed(&self) -> KillReason {
        loop {
            if let Some(r) = self.kill_reason() {
                return r;
            }
            self.kill.notified().await;
        }
    }

    pub fn touch(&self) {
        self.last_activity_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Summary row for status tables.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SessionView {
    pub id: u64,
    pub listener: String,
    pub client: String,
    pub switch: String,
    pub backend: String,
    pub age_ms: u64,
    pub idle_ms: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// All live sessions. Sharded by id: every data thread opens and closes sessions here, and
/// one mutex taken three times per short session was the proxy's busiest shared line.
#[derive(Debug, Default)]
pub struct Sessions {
    shards: [Mutex<HashMap<u64, Arc<SessionCtl>>>; SHARDS],
    live: AtomicUsize,
    next_id: AtomicU64,
}

const SHARDS: usize = 16;

impl Sessions {
    pub fn open(&self, listener: Arc<str>, client: SocketAddr) -> Arc<SessionCtl> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let ctl = Arc::new(SessionCtl {
            id,
            listener,
            client,
            switch: OnceLock::new(),
            backend: BackendSlot::default(),
            started: Instant::now(),
            started_unix_ms: unix_ms(),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            last_activity_ms: AtomicU64::new(0),
            fin_since_ms: AtomicU64::new(0),
            fin_waiting: AtomicU8::new(0),
            kill: Notify::new(),
            kill_reason: AtomicU8::new(0),
        });
        self.shard(id).insert(id, ctl.clone());
        self.live.fetch_add(1, Ordering::Relaxed);
        ctl
    }

    pub fn close(&self, id: u64) {
        if self.shard(id).remove(&id).is_some() {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn shard(&self, id: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<SessionCtl>>> {
        let shard = &self.shards[id as usize % SHARDS];
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sessions open now (a snapshot).
    fn all(&self) -> Vec<Arc<SessionCtl>> {
        let mut all = Vec::with_capacity(self.len());
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            all.extend(shard.values().cloned());
        }
        all
    }

    pub fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Kills every session on `backend`; returns how many.
    pub fn kill_backend(&self, backend: &Arc<Backend>, reason: KillReason) -> usize {
        let victims: Vec<Arc<SessionCtl>> = self
            .all()
            .into_iter()
            .filter(|s| s.backend.is(backend))
            .collect();
        for s in &victims {
            s.kill(reason);
        }
        victims.len()
    }

    pub fn kill_all(&self, reason: KillReason) -> usize {
        let all = self.all();
        for s in &all {
            s.kill(reason);
        }
        all.len()
    }

    /// (switch, backend) of every established session, to keep their affinity fresh.
    pub fn live_placements(&self) -> Vec<(String, String)> {
        self.all()
            .iter()
            .filter_map(|s| Some((s.switch.get()?.clone(), s.backend.get()?.name.clone())))
            .collect()
    }

    /// Closes sessions idle for `idle` or half-closed for longer than `fin` (zero = never).
    /// One sweep over all sessions replaces a timer per session: an idle session holds no
    /// timer, and a short one never registers one. Returns how many were closed.
    pub fn sweep(&self, idle: std::time::Duration, fin: std::time::Duration) -> usize {
        let idle_ms = idle.as_millis() as u64;
        let fin_ms = fin.as_millis() as u64;
        let mut victims = Vec::new();
        for s in self.all() {
            if !s.backend.is_set() || s.kill_reason().is_some() {
                continue;
            }
            let now = s.started.elapsed().as_millis() as u64;
            let fin_since = s.fin_since_ms.load(Ordering::Relaxed);
            if fin_ms > 0 && fin_since > 0 && now.saturating_sub(fin_since) >= fin_ms {
                victims.push((s.clone(), KillReason::FinTimeout));
            } else if idle_ms > 0
                && now.saturating_sub(s.last_activity_ms.load(Ordering::Relaxed)) >= idle_ms
            {
                victims.push((s.clone(), KillReason::Idle));
            }
        }
        for (s, reason) in &victims {
            s.kill(*reason);
        }
        victims.len()
    }

    pub fn views(&self) -> Vec<SessionView> {
        let mut v: Vec<SessionView> = self
            .all()
            .iter()
            .map(|s| {
                let age = s.started.elapsed().as_millis() as u64;
                SessionView {
                    id: s.id,
                    listener: s.listener.to_string(),
                    client: s.client.to_string(),
                    switch: s.switch.get().cloned().unwrap_or_default(),
                    backend: s
                        .backend
                        .get()
                        .map(|b| b.name.clone())
                        .unwrap_or_else(|| "-".into()),
                    age_ms: age,
                    idle_ms: age.saturating_sub(s.last_activity_ms.load(Ordering::Relaxed)),
                    bytes_up: s.bytes_up.load(Ordering::Relaxed),
                    bytes_down: s.bytes_down.load(Ordering::Relaxed),
                }
            })
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }
}

/// Everything the tcplog line needs once a session is over. Borrowed: the line is written
/// once per session, on the data path, so it allocates nothing.
#[derive(Debug, Clone)]
pub struct SessionRecord<'a> {
    pub client: SocketAddr,
    pub accept_unix_ms: u64,
    pub listener: &'a str,
    pub backend: Option<&'a str>,
    /// Time to set the session up before connecting (TLS handshake with the switch), ms.
    pub tw_ms: u64,
    /// Time to connect to the backend, ms (-1 if never connected).
    pub tc_ms: i64,
    pub tt_ms: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub termination: Termination,
    pub active_conns: usize,
    pub backend_conns: u32,
    pub retries: u32,
    pub switch: &'a str,
}

impl SessionRecord<'_> {
    /// `%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq`, with `%B` the
    /// bytes sent to the switch; bytes from the switch and its identity follow.
    pub fn tcplog(&self) -> Tcplog<'_> {
        Tcplog(self)
    }
}

/// The tcplog line of a [`SessionRecord`], formatted where it is written.
pub struct Tcplog<'a>(&'a SessionRecord<'a>);

impl fmt::Display for Tcplog<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(
            f,
            "{} [{}] {} agents/{} {}/{}/{} {} {} {}/{}/{}/{}/{} 0/0 up={} switch={}",
            r.client,
            HaproxyDate(r.accept_unix_ms),
            r.listener,
            r.backend.unwrap_or("<NOSRV>"),
            r.tw_ms,
            r.tc_ms,
            r.tt_ms,
            r.bytes_down,
            r.termination,
            r.active_conns,
            r.active_conns,
            r.active_conns,
            r.backend_conns,
            r.retries,
            r.bytes_up,
            r.switch,
        )
    }
}

/// (year, month 1-12, day 1-31) of a day counted from 1970-01-01 (Howard Hinnant's
/// civil-from-days).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `06/Feb/2009:12:12:51.443` in UTC, from milliseconds since the epoch.
pub struct HaproxyDate(pub u64);

impl fmt::Display for HaproxyDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let unix_ms = self.0;
        let secs = unix_ms / 1000;
        let rem = secs % 86400;
        let (year, month, day) = civil_from_days((secs / 86400) as i64);
        let month_name = MONTHS
            .get((month - 1).clamp(0, 11) as usize)
            .copied()
            .unwrap_or("Jan");
        write!(
            f,
            "{:02}/{}/{}:{:02}:{:02}:{:02}.{:03}",
            day,
            month_name,
            year,
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60,
            unix_ms % 1000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_counts_by_code() {
        let c = TerminationCounts::default();
        for t in [
            Termination::NORMAL,
            Termination('S', 'C'),
            Termination('S', 'C'),
            Termination('I', 'C'),
            Termination('x', 'y'),
        ] {
            c.count(t);
        }
        let snap = c.snapshot();
        assert_eq!(snap.get("--"), Some(&1));
        assert_eq!(snap.get("SC"), Some(&2));
        assert_eq!(snap.get("IC"), Some(&1));
        assert_eq!(snap.get("xy"), Some(&1));
        assert_eq!(snap.len(), 4);
    }

    #[test]
    fn date_matches_haproxy_layout() {
        // 2009-02-06T12:12:51.443Z, the example of HAProxy's configuration manual.
        assert_eq!(
            HaproxyDate(1_233_922_371_443).to_string(),
            "06/Feb/2009:12:12:51.443"
        );
        assert_eq!(HaproxyDate(0).to_string(), "01/Jan/1970:00:00:00.000");
        assert_eq!(
            HaproxyDate(951_782_400_000).to_string(),
            "29/Feb/2000:00:00:00.000"
        );
    }

    #[test]
    fn tcplog_fields() {
        let r = SessionRecord {
            client: "10.0.1.2:33313".parse().unwrap(),
            accept_unix_ms: 1_233_922_371_443,
            listener: "fnt",
            backend: Some("srv1"),
            tw_ms: 0,
            tc_ms: 0,
            tt_ms: 5007,
            bytes_up: 17,
            bytes_down: 212,
            termination: Termination('D', 'D'),
            active_conns: 3,
            backend_conns: 1,
            retries: 0,
            switch: "10.0.1.2",
        };
        assert_eq!(
            r.tcplog().to_string(),
            "10.0.1.2:33313 [06/Feb/2009:12:12:51.443] fnt agents/srv1 0/0/5007 212 DD 3/3/3/1/0 0/0 up=17 switch=10.0.1.2"
        );
    }

    fn backend() -> Arc<Backend> {
        Arc::new(Backend::new(
            crate::config::ResolvedBackend {
                name: "a".into(),
                addr: "127.0.0.1:1".parse().unwrap(),
                weight: 1,
                max_conn: 0,
                readiness_port: None,
                check_port: None,
                tls_server_name: None,
            },
            crate::health::HealthParams {
                rise: 1,
                fall: 1,
                interval: std::time::Duration::from_secs(1),
                fast_interval: std::time::Duration::from_secs(1),
                down_interval: std::time::Duration::from_secs(1),
            },
            crate::health::InitState::Up,
            true,
        ))
    }

    #[test]
    fn sweep_closes_idle_and_half_closed_sessions_only() {
        use std::time::Duration;
        let s = Sessions::default();
        let b = backend();
        let idle = s.open("l".into(), "127.0.0.1:1".parse().unwrap());
        let half = s.open("l".into(), "127.0.0.1:2".parse().unwrap());
        let busy = s.open("l".into(), "127.0.0.1:3".parse().unwrap());
        let connecting = s.open("l".into(), "127.0.0.1:4".parse().unwrap());
        for c in [&idle, &half, &busy] {
            c.backend.set(b.clone());
        }
        std::thread::sleep(Duration::from_millis(30));
        busy.touch();
        half.touch();
        half.fin_since_ms.store(1, Ordering::Relaxed);
        assert_eq!(
            s.sweep(Duration::from_millis(20), Duration::from_millis(10)),
            2
        );
        assert_eq!(idle.kill_reason(), Some(KillReason::Idle));
        assert_eq!(half.kill_reason(), Some(KillReason::FinTimeout));
        assert_eq!(busy.kill_reason(), None);
        assert_eq!(
            connecting.kill_reason(),
            None,
            "connect has its own timeout"
        );
        assert_eq!(s.sweep(Duration::ZERO, Duration::ZERO), 0, "zero disables");
    }

    #[tokio::test]
    async fn kill_is_not_lost_before_waiting() {
        let s = Sessions::default();
        let ctl = s.open("l".into(), "127.0.0.1:1".parse().unwrap());
        assert_eq!(s.kill_all(KillReason::Admin), 1);
        assert_eq!(ctl.killed().await, KillReason::Admin);
        ctl.kill(KillReason::BackendDown);
        assert_eq!(
            ctl.kill_reason(),
            Some(KillReason::Admin),
            "first reason wins"
        );
    }
}
