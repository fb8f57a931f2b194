//! Manager connections, as ovsdb-server's `--remote=db:DB,TABLE,COLUMN`:
//! the targets are read from a column (strings, or references to rows with
//! `target`, `max_backoff` and `inactivity_probe`, like hardware_vtep's
//! `Global.managers` → `Manager`), followed at runtime; active targets are
//! dialled with OVS's reconnect backoff, passive ones listened on; the
//! connection state is written back to `is_connected` and `status`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

use super::{Db, DbData, ListenerHandle, OvsdbError, Server, SessionOptions};
use crate::transport::{connect, Target, TlsFiles};
use crate::value::{AtomicType, Uuid};

/// OVS's `RECONNECT_DEFAULT_PROBE_INTERVAL`.
pub const DEFAULT_PROBE: Duration = Duration::from_secs(5);
/// OVS's default `max_backoff`.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(8);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to find manager targets, and how to reach them.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub db: String,
    pub table: String,
    pub column: String,
    /// Certificate, key and CA for `ssl:`/`pssl:` targets.
    pub tls: Option<TlsFiles>,
    /// First reconnect delay (OVS: 1 s).
    pub min_backoff: Duration,
    /// How often `status` is refreshed while connected (`sec_since_connect`);
    /// zero writes only on state changes.
    pub status_interval: Duration,
}

impl ManagerConfig {
    /// `db:hardware_vtep,Global,managers`, as a hardware VTEP runs it.
    pub fn hardware_vtep() -> ManagerConfig {
        ManagerConfig {
            db: "hardware_vtep".into(),
            table: "Global".into(),
            column: "managers".into(),
            tls: None,
            min_backoff: Duration::from_secs(1),
            status_interval: Duration::from_secs(5),
        }
    }

    pub fn with_tls(mut self, tls: TlsFiles) -> ManagerConfig {
        self.tls = Some(tls);
        self
    }
}

/// Reconnect timing as OVS's `reconnect.c`: the first attempt at once,
/// then 1, 2, 4, 8 s… up to `max`; after a connection that stayed up at
/// least as long as the current backoff, the next attempt comes after the
/// minimum again.
#[derive(Clone, Debug)]
pub struct Reconnect {
    min: Duration,
    max: Duration,
    backoff: Duration,
    state: FsmState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsmState {
    Backoff { until: Instant },
    Connecting,
    Active { since: Instant },
}

impl Reconnect {
    pub fn new(min: Duration, max: Duration, now: Instant) -> Reconnect {
        Reconnect {
            min,
            max: max.max(min),
            backoff: Duration::ZERO,
            state: FsmState::Backoff { until: now },
        }
    }

    pub fn set_max(&mut self, max: Duration) {
        self.max = max.max(self.min);
    }

    pub fn state(&self) -> FsmState {
        self.state
    }

    /// OVS's state name for `status:state`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            FsmState::Backoff { .. } => "BACKOFF",
            FsmState::Connecting => "CONNECTING",
            FsmState::Active { .. } => "ACTIVE",
        }
    }

    /// When the next connection attempt is due (in backoff only).
    pub fn next_attempt(&self) -> Option<Instant> {
        match self.state {
            FsmState::Backoff { until } => Some(until),
            _ => None,
        }
    }

    pub fn connecting(&mut self) {
        self.state = FsmState::Connecting;
    }

    pub fn connected(&mut self, now: Instant) {
        self.state = FsmState::Active { since: now };
    }

    fn bump(&mut self) {
        self.backoff = if self.backoff < self.min {
            self.min
        } else if self.backoff < self.max / 2 {
            self.backoff * 2
        } else {
            self.max
        };
    }

    /// A connection attempt failed; returns the delay before the next.
    pub fn connect_failed(&mut self, now: Instant) -> Duration {
        self.bump();
        self.state = FsmState::Backoff {
            until: now + self.backoff,
        };
        self.backoff
    }

    /// An established connection ended; `last_activity` is when the peer
    /// last sent anything. Returns the delay before the next attempt.
    pub fn disconnected(&mut self, now: Instant, last_activity: Instant) -> Duration {
        match self.state {
            FsmState::Active { since }
                if last_activity.saturating_duration_since(since) >= self.backoff =>
            {
                self.backoff = self.min;
            }
            _ => self.bump(),
        }
        self.state = FsmState::Backoff {
            until: now + self.backoff,
        };
        self.backoff
    }
}

/// One target found in the column.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteSpec {
    pub target: String,
    /// The referenced row status is written to, if the column holds references.
    pub row: Option<Uuid>,
    pub max_backoff: Option<Duration>,
    /// `Some(ZERO)` disables probing.
    pub probe: Option<Duration>,
}

/// The targets the column names now.
pub fn read_remotes(data: &DbData, cfg: &ManagerConfig) -> Vec<RemoteSpec> {
    let Some(table) = data.table(&cfg.table) else {
        return Vec::new();
    };
    let Some(col) = table.schema.column_index(&cfg.column) else {
        return Vec::new();
    };
    let ty = &table.schema.columns[col].ty;
    let ref_table = ty.key.ref_table.as_deref().and_then(|n| data.table(n));
    let mut out: Vec<RemoteSpec> = Vec::new();
    let ms = |v: Option<i64>| {
        v.and_then(|m| u64::try_from(m).ok())
            .map(Duration::from_millis)
    };
    for (_, row) in table.iter() {
        let Some(d) = row.get(col) else { continue };
        for atom in d.keys() {
            let spec = match (ty.key.atomic, ref_table) {
                (AtomicType::String, _) => atom.as_str().map(|t| RemoteSpec {
                    target: t.to_string(),
                    row: None,
                    max_backoff: None,
                    probe: None,
                }),
                (AtomicType::Uuid, Some(rt)) => atom.as_uuid().and_then(|u| {
                    let r = rt.get(&u)?;
                    let get = |name: &str| rt.schema.column_index(name).and_then(|i| r.get(i));
                    Some(RemoteSpec {
                        target: get("target")?.as_str()?.to_string(),
                        row: Some(u),
                        max_backoff: ms(get("max_backoff").and_then(|d| d.as_integer())),
                        probe: ms(get("inactivity_probe").and_then(|d| d.as_integer())),
                    })
                }),
                _ => None,
            };
            if let Some(s) = spec {
                if !out.iter().any(|o| o.target == s.target) {
                    out.push(s);
                }
            }
        }
    }
    out
}

/// Aborts the task when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Running {
    /// The task is aborted when the entry is dropped.
    Dialer(watch::Sender<RemoteSpec>, #[allow(dead_code)] Task),
    /// Stops listening when dropped.
    Listener(#[allow(dead_code)] Option<ListenerHandle>),
}

/// Stops following the column (and every manager connection) when dropped.
pub struct ManagerHandle {
    _task: Task,
}

pub(crate) fn start(server: Server, cfg: ManagerConfig) -> Result<ManagerHandle, OvsdbError> {
    let db = server.db(&cfg.db).ok_or_else(|| {
        OvsdbError::new("unknown database", format!("no database named {}", cfg.db))
    })?;
    let ok = db.read(|d| {
        d.table(&cfg.table)
            .is_some_and(|t| t.schema.column_index(&cfg.column).is_some())
    });
    if !ok {
        return Err(OvsdbError::new(
            "unknown column",
            format!("no column {}.{} in {}", cfg.table, cfg.column, cfg.db),
        ));
    }
    let span = tracing::info_span!("managers", source = %format!("db:{},{},{}", cfg.db, cfg.table, cfg.column));
    let task = tokio::spawn(supervise(server, db, cfg).instrument(span));
    Ok(ManagerHandle { _task: Task(task) })
}

async fn supervise(server: Server, db: Db, cfg: ManagerConfig) {
    let mut sub = db.subscribe();
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        let specs = db.read(|d| read_remotes(d, &cfg));
        running.retain(|target, _| specs.iter().any(|s| &s.target == target));
        for spec in specs {
            match running.get_mut(&spec.target) {
                Some(Running::Dialer(tx, _)) => {
                    if *tx.borrow() != spec {
                        let _ = tx.send(spec);
                    }
                }
                Some(Running::Listener(..)) => {}
                None => {
                    let target: Target = match spec.target.parse() {
                        Ok(t) => t,
                        Err(e) => {
                            warn!("ignoring manager target: {e}");
                            continue;
                        }
                    };
                    let entry = if target.is_passive() {
                        let h = match server.listen(&target, cfg.tls.as_ref()).await {
                            Ok(h) => Some(h),
                            Err(e) => {
                                warn!("cannot listen on {}: {e}", spec.target);
                                None
                            }
                        };
                        Running::Listener(h)
                    } else {
                        let (tx, rx) = watch::channel(spec.clone());
                        let span = tracing::info_span!("manager", target = %spec.target);
                        let task = tokio::spawn(
                            dial(server.clone(), db.clone(), target, rx, cfg.clone())
                                .instrument(span),
                        );
                        Running::Dialer(tx, Task(task))
                    };
                    running.insert(spec.target.clone(), entry);
                }
            }
        }
        // Wait for the next commit; coalesce a burst of them.
        if sub.recv().await.is_none() {
            return;
        }
        while sub.try_recv().is_some() {}
    }
}

/// What is written to `Manager.status`.
struct Status {
    last_connected: Option<Instant>,
    last_disconnected: Option<Instant>,
    last_error: Option<String>,
}

impl Status {
    fn write(&self, db: &Db, row: Option<Uuid>, fsm: &Reconnect, now: Instant) {
        let Some(row) = row else { return };
        let mut pairs = vec![json!(["state", fsm.state_name()])];
        let connected = matches!(fsm.state(), FsmState::Active { .. });
        if let (true, Some(t)) = (connected, self.last_connected) {
            pairs.push(json!([
                "sec_since_connect",
                now.saturating_duration_since(t).as_secs().to_string()
            ]));
        }
        if let (false, Some(t)) = (connected, self.last_disconnected) {
            pairs.push(json!([
                "sec_since_disconnect",
                now.saturating_duration_since(t).as_secs().to_string()
            ]));
        }
        if let Some(e) = &self.last_error {
            pairs.push(json!(["last_error", e]));
        }
        let op = json!({
            "op": "update",
            "table": "Manager",
            "where": [["_uuid", "==", ["uuid", row.to_string()]]],
            "row": {"is_connected": connected, "status": ["map", pairs]},
        });
        let result = db.transact(&[op]);
        if let Some(e) = result.first().and_then(|r| r.get("error")) {
            warn!("cannot write manager status: {e}");
        }
    }
}

async fn dial(
    server: Server,
    db: Db,
    mut target: Target,
    mut spec_rx: watch::Receiver<RemoteSpec>,
    cfg: ManagerConfig,
) {
    let mut spec = spec_rx.borrow().clone();
    let mut fsm = Reconnect::new(
        cfg.min_backoff,
        spec.max_backoff.unwrap_or(DEFAULT_MAX_BACKOFF),
        Instant::now(),
    );
    let mut status = Status {
        last_connected: None,
        last_disconnected: None,
        last_error: None,
    };
    loop {
        if let Some(until) = fsm.next_attempt() {
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                changed = spec_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    spec = spec_rx.borrow().clone();
                    if let Ok(t) = spec.target.parse() {
                        target = t;
                    }
                    fsm.set_max(spec.max_backoff.unwrap_or(DEFAULT_MAX_BACKOFF));
                    continue;
                }
            }
        }
        fsm.connecting();
        status.write(&db, spec.row, &fsm, Instant::now());
        let attempt =
            tokio::time::timeout(CONNECT_TIMEOUT, connect(&target, cfg.tls.as_ref())).await;
        let stream = match attempt {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let wait = fsm.connect_failed(Instant::now());
                info!(
                    "connection failed ({e}), retrying in {:.1} s",
                    wait.as_secs_f64()
                );
                status.last_error = Some(e.to_string());
                status.write(&db, spec.row, &fsm, Instant::now());
                continue;
            }
            Err(_) => {
                let wait = fsm.connect_failed(Instant::now());
                info!(
                    "connection timed out, retrying in {:.1} s",
                    wait.as_secs_f64()
                );
                status.last_error = Some("connection timed out".into());
                status.write(&db, spec.row, &fsm, Instant::now());
                continue;
            }
        };
        let now = Instant::now();
        fsm.connected(now);
        status.last_connected = Some(now);
        status.write(&db, spec.row, &fsm, now);
        info!("connected");
        let probe = match (&target, spec.probe) {
            (Target::Unix(_), _) => Duration::ZERO,
            (_, Some(p)) => p,
            (_, None) => DEFAULT_PROBE,
        };
        let opts = SessionOptions {
            probe,
            ..SessionOptions::default()
        };
        let session = server.serve(stream, opts, spec.target.clone());
        tokio::pin!(session);
        let end = loop {
            let refresh = async {
                if cfg.status_interval.is_zero() {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(cfg.status_interval).await
                }
            };
            tokio::select! {
                end = &mut session => break end,
                _ = refresh => status.write(&db, spec.row, &fsm, Instant::now()),
                changed = spec_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Options apply from the next connection, as in OVS.
                    spec = spec_rx.borrow().clone();
                    fsm.set_max(spec.max_backoff.unwrap_or(DEFAULT_MAX_BACKOFF));
                }
            }
        };
        let now = Instant::now();
        let wait = fsm.disconnected(now, end.last_activity);
        status.last_disconnected = Some(now);
        if end.error {
            status.last_error = Some(end.reason.clone());
        }
        info!(reason = %end.reason, "disconnected, reconnecting in {:.1} s", wait.as_secs_f64());
        status.write(&db, spec.row, &fsm, now);
    }
}

/// The JSON of a `Manager` row's status map, for tests and tools.
pub fn status_map(db: &Db, row: &Uuid) -> Option<Value> {
    let r = db.get("Manager", row)?;
    let schema = db.schema();
    let t = schema.table("Manager")?;
    r.get(t.column_index("status")?).map(|d| d.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps_and_resets_after_long_session() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut f = Reconnect::new(s, 8 * s, t0);
        assert_eq!(f.next_attempt(), Some(t0));
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            f.connecting();
            let w = f.connect_failed(now);
            waits.push(w.as_secs());
            now += w;
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 8, 8]);
        // a long-lived session: redial 1 s after the drop
        f.connecting();
        f.connected(now);
        let later = now + 60 * s;
        assert_eq!(f.disconnected(later, later).as_secs(), 1);
        // the next session closes at once: 2 s
        f.connecting();
        f.connected(later + s);
        assert_eq!(f.disconnected(later + s, later + s).as_secs(), 2);
        assert_eq!(f.state_name(), "BACKOFF");
    }

    #[test]
    fn max_backoff_below_default() {
        let t0 = Instant::now();
        let mut f = Reconnect::new(Duration::from_secs(1), Duration::from_millis(3000), t0);
        let w: Vec<u128> = (0..4).map(|_| f.connect_failed(t0).as_millis()).collect();
        assert_eq!(w, vec![1000, 2000, 3000, 3000]);
    }
}
