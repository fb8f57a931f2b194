//! One client connection: the JSON-RPC methods of ovsdb-server, as a
//! session state machine (`SessionCore`, no I/O) and the async driver that
//! feeds it frames, commits and timers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tracing::{debug, info, Instrument};

use super::db::{Commit, MAX_SESSION_BACKLOG};
use super::error::OvsdbError;
use super::locks::SessionId;
use super::monitor::{self, Monitor, MonitorVersion, Monitors, ZERO_TXN_ID};
use super::txn::TxnContext;
use super::ServerShared;
use crate::rpc::{self, InactivityProbe, JsonFramer, Message, ProbeAction};
use crate::transport::Stream;
use crate::value::is_valid_id;

/// What a session receives besides the peer's messages.
pub(crate) enum SessionEvent {
    Commit(Arc<Commit>),
    /// A message to send as is (`locked`/`stolen` notifications).
    Notify(Bytes),
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("received bad JSON-RPC message: {0}")]
    BadMessage(String),
    #[error("update backlog exceeded {MAX_SESSION_BACKLOG} commits (peer not reading)")]
    Backlog,
}

struct Trigger {
    id: Box<RawValue>,
    db: usize,
    params: Value,
    created: Instant,
    timeout_ms: Option<i64>,
}

impl Trigger {
    fn deadline(&self) -> Option<Instant> {
        self.timeout_ms
            .map(|ms| self.created + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }
}

/// The protocol state of one connection.
pub struct SessionCore {
    shared: Arc<ServerShared>,
    id: SessionId,
    events: mpsc::UnboundedReceiver<SessionEvent>,
    backlog: Arc<AtomicUsize>,
    monitors: Monitors,
    triggers: Vec<Trigger>,
    lock_names: Vec<String>,
}

fn reply(id: &RawValue, result: &Value) -> Bytes {
    rpc::response(id, result)
}

fn error_reply(id: &RawValue, e: &OvsdbError) -> Bytes {
    rpc::error_response(id, &e.to_json())
}

impl SessionCore {
    pub(crate) fn new(shared: Arc<ServerShared>) -> SessionCore {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut s) = shared.sessions.lock() {
            s.insert(id, tx.clone());
        }
        for db in &shared.dbs {
            db.subscribe_session(tx.clone(), backlog.clone());
        }
        SessionCore {
            shared,
            id,
            events: rx,
            backlog,
            monitors: Monitors::default(),
            triggers: Vec::new(),
            lock_names: Vec::new(),
        }
    }

    pub(crate) async fn recv_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// The earliest trigger timeout, if any.
    pub fn next_timer(&self) -> Option<Instant> {
        self.triggers.iter().filter_map(Trigger::deadline).min()
    }

    /// Handles one received frame; `out` gets the messages to send, in order.
    pub fn handle_frame(
        &mut self,
        frame: &[u8],
        now: Instant,
        out: &mut Vec<Bytes>,
    ) -> Result<(), SessionError> {
        let msg = Message::parse(frame).map_err(|e| match e {
            rpc::MessageError::BadMessage(m) => SessionError::BadMessage(m),
        })?;
        self.drain(now, out)?;
        match msg {
            Message::Request { id, method, params } => {
                let params = parse_params(params)?;
                self.handle_request(id, &method, params, now, out);
            }
            Message::Notification { method, params } => {
                let params = parse_params(params)?;
                if method == "cancel" {
                    // ovsdb-server 3.1 drops the cancelled request without a
                    // reply (RFC 7047 says it should answer "canceled").
                    if let Some(target) = params.as_array().and_then(|a| a.first()) {
                        self.triggers.retain(|t| {
                            serde_json::from_str::<Value>(t.id.get()).ok().as_ref() != Some(target)
                        });
                    }
                }
            }
            Message::Response { .. } => {}
        }
        Ok(())
    }

    /// Handles an event from `recv_event`, then everything else queued.
    pub(crate) fn handle_event(
        &mut self,
        ev: SessionEvent,
        now: Instant,
        out: &mut Vec<Bytes>,
    ) -> Result<(), SessionError> {
        let mut changed = Vec::new();
        self.one_event(ev, out, &mut changed)?;
        changed.extend(self.flush_events(out)?);
        self.run_triggers(changed, now, out)
    }

    /// Retries triggers whose timeout has passed.
    pub fn poll_timers(&mut self, now: Instant, out: &mut Vec<Bytes>) -> Result<(), SessionError> {
        let due: Vec<usize> = self
            .triggers
            .iter()
            .filter(|t| t.deadline().is_some_and(|d| d <= now))
            .map(|t| t.db)
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        self.run_triggers(due, now, out)
    }

    fn drain(&mut self, now: Instant, out: &mut Vec<Bytes>) -> Result<(), SessionError> {
        let changed = self.flush_events(out)?;
        self.run_triggers(changed, now, out)
    }

    fn run_triggers(
        &mut self,
        mut changed: Vec<usize>,
        now: Instant,
        out: &mut Vec<Bytes>,
    ) -> Result<(), SessionError> {
        while !changed.is_empty() && !self.triggers.is_empty() {
            changed = self.retry_triggers(&changed, now, out)?;
        }
        Ok(())
    }

    fn one_event(
        &mut self,
        ev: SessionEvent,
        out: &mut Vec<Bytes>,
        changed: &mut Vec<usize>,
    ) -> Result<(), SessionError> {
        match ev {
            SessionEvent::Commit(c) => {
                if self.backlog.fetch_sub(1, Ordering::Relaxed) > MAX_SESSION_BACKLOG {
                    return Err(SessionError::Backlog);
                }
                for m in self.monitors.iter() {
                    if m.db.as_str() == &*c.db && c.seq > m.since_seq {
                        if let Some(text) = m.update(&c) {
                            out.push(Bytes::from(text));
                        }
                    }
                }
                if let Some(i) = self.shared.dbs.iter().position(|d| d.name() == &*c.db) {
                    if !changed.contains(&i) {
                        changed.push(i);
                    }
                }
            }
            SessionEvent::Notify(b) => out.push(b),
        }
        Ok(())
    }

    /// Sends monitor updates for every queued commit; returns the databases
    /// that changed.
    fn flush_events(&mut self, out: &mut Vec<Bytes>) -> Result<Vec<usize>, SessionError> {
        let mut changed = Vec::new();
        while let Ok(ev) = self.events.try_recv() {
            self.one_event(ev, out, &mut changed)?;
        }
        Ok(changed)
    }

    fn retry_triggers(
        &mut self,
        dbs: &[usize],
        now: Instant,
        out: &mut Vec<Bytes>,
    ) -> Result<Vec<usize>, SessionError> {
        let mut changed = Vec::new();
        let pending = std::mem::take(&mut self.triggers);
        for t in pending {
            let due = t.deadline().is_some_and(|d| d <= now);
            if !dbs.contains(&t.db) && !due {
                self.triggers.push(t);
                continue;
            }
            let elapsed = i64::try_from(now.saturating_duration_since(t.created).as_millis())
                .unwrap_or(i64::MAX);
            match self.execute(t.db, &t.params, elapsed) {
                (Some(results), _) => {
                    changed.extend(self.flush_events(out)?);
                    out.push(reply(&t.id, &Value::Array(results)));
                }
                (None, _) => self.triggers.push(t),
            }
        }
        Ok(changed)
    }

    fn execute(
        &self,
        db: usize,
        params: &Value,
        elapsed_ms: i64,
    ) -> (Option<Vec<Value>>, Option<i64>) {
        let Some(d) = self.shared.dbs.get(db) else {
            return (Some(Vec::new()), None);
        };
        let ops = params
            .as_array()
            .map(|a| &a[1.min(a.len())..])
            .unwrap_or_default();
        let shared = self.shared.clone();
        let sid = self.id;
        let owns = move |name: &str| {
            shared
                .locks
                .lock()
                .map(|l| l.is_owner(name, sid))
                .unwrap_or(false)
        };
        let ctx = TxnContext {
            elapsed_ms,
            owns_lock: &owns,
            triggers: true,
        };
        d.execute(ops, &ctx)
    }

    fn lookup_db(&self, method: &str, params: &Value) -> Result<usize, OvsdbError> {
        let Some(name) = params
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
        else {
            return Err(OvsdbError::syntax(
                Some(params),
                None,
                format!("{method} request params must begin with <db-name>"),
            ));
        };
        self.shared
            .dbs
            .iter()
            .position(|d| d.name() == name)
            .ok_or_else(|| {
                OvsdbError::syntax(
                    Some(params),
                    Some("unknown database"),
                    format!("{method} request specifies unknown database {name}"),
                )
            })
    }

    fn handle_request(
        &mut self,
        id: &RawValue,
        method: &str,
        params: Value,
        now: Instant,
        out: &mut Vec<Bytes>,
    ) {
        let result: Result<Value, OvsdbError> = match method {
            "transact" => match self.lookup_db(method, &params) {
                Ok(db) => {
                    match self.execute(db, &params, 0) {
                        (Some(results), _) => {
                            // Updates caused by this transaction go first.
                            if let Err(e) = self.drain(now, out) {
                                debug!("while flushing updates: {e}");
                            }
                            out.push(reply(id, &Value::Array(results)));
                        }
                        (None, timeout_ms) => self.triggers.push(Trigger {
                            id: id.to_owned(),
                            db,
                            params,
                            created: now,
                            timeout_ms,
                        }),
                    }
                    return;
                }
                Err(e) => Err(e),
            },
            "monitor" => self.monitor(method, &params, MonitorVersion::V1),
            "monitor_cond" => self.monitor(method, &params, MonitorVersion::V2),
            "monitor_cond_since" => self.monitor(method, &params, MonitorVersion::V3),
            "monitor_cond_change" => match self.monitor_cond_change(&params) {
                Ok(update) => {
                    if let Some(u) = update {
                        out.push(Bytes::from(u));
                    }
                    Ok(json!({}))
                }
                Err(e) => Err(e),
            },
            "monitor_cancel" => {
                let r = match params.as_array().map(Vec::as_slice) {
                    Some([mid]) => match self.monitors.find(mid) {
                        Some(i) => {
                            self.monitors.remove(i);
                            Ok(json!({}))
                        }
                        None => Err("unknown monitor"),
                    },
                    _ => Err("invalid parameters"),
                };
                out.push(match r {
                    Ok(v) => reply(id, &v),
                    Err(s) => rpc::error_response(id, &Value::String(s.into())),
                });
                return;
            }
            "lock" | "steal" => self.lock(method, &params, method == "steal"),
            "unlock" => self.unlock(&params),
            "echo" => Ok(params),
            "list_dbs" => Ok(Value::Array(
                self.shared
                    .dbs
                    .iter()
                    .map(|d| Value::String(d.name().to_string()))
                    .collect(),
            )),
            "get_schema" => self
                .lookup_db(method, &params)
                .map(|db| self.shared.dbs[db].schema().to_json()),
            "get_server_id" => Ok(Value::String(self.shared.server_id.to_string())),
            "set_db_change_aware" => match params.as_array().map(Vec::as_slice) {
                Some([Value::Bool(_)]) => Ok(json!({})),
                _ => Err(OvsdbError::syntax(
                    Some(&params),
                    None,
                    "set_db_change_aware: true or false parameter expected",
                )),
            },
            _ => {
                out.push(rpc::error_response(
                    id,
                    &Value::String("unknown method".into()),
                ));
                return;
            }
        };
        out.push(match result {
            Ok(v) => reply(id, &v),
            Err(e) => error_reply(id, &e),
        });
    }

    fn monitor(
        &mut self,
        method: &str,
        params: &Value,
        version: MonitorVersion,
    ) -> Result<Value, OvsdbError> {
        let db = self.lookup_db(method, params)?;
        let p = params.as_array().map(Vec::as_slice).unwrap_or_default();
        let expected = if version == MonitorVersion::V3 { 4 } else { 3 };
        if p.len() != expected {
            return Err(OvsdbError::syntax(Some(params), None, "invalid parameters"));
        }
        let (mid, requests) = (&p[1], &p[2]);
        if !requests.is_object() {
            return Err(OvsdbError::syntax(
                Some(requests),
                None,
                "monitor-requests must be object",
            ));
        }
        if self.monitors.find(mid).is_some() {
            return Err(OvsdbError::syntax(Some(mid), None, "duplicate monitor ID"));
        }
        let d = &self.shared.dbs[db];
        let st = d.lock();
        let tables = monitor::parse_requests(&st.data, requests, version)?;
        let m = Monitor {
            id: mid.clone(),
            db: d.name().to_string(),
            version,
            tables,
            since_seq: st.seq,
        };
        let initial = m.initial(&st.data);
        drop(st);
        self.monitors.add(m);
        Ok(match version {
            MonitorVersion::V3 => json!([false, ZERO_TXN_ID, initial]),
            _ => initial,
        })
    }

    fn monitor_cond_change(&mut self, params: &Value) -> Result<Option<String>, OvsdbError> {
        let p = params.as_array().map(Vec::as_slice).unwrap_or_default();
        if p.len() != 3 {
            return Err(OvsdbError::syntax(Some(params), None, "invalid parameters"));
        }
        let i = self
            .monitors
            .find(&p[0])
            .ok_or_else(|| OvsdbError::syntax(Some(&p[0]), None, "unknown monitor session"))?;
        let changing_id = self.monitors.get_mut(i).is_some_and(|m| m.id != p[1]);
        if changing_id && self.monitors.find(&p[1]).is_some() {
            return Err(OvsdbError::syntax(
                Some(&p[1]),
                None,
                "duplicate monitor ID",
            ));
        }
        let reqs = p[2].as_object().ok_or_else(|| {
            OvsdbError::syntax(None, None, "monitor-cond-change-requests must be object")
        })?;
        let Some(m) = self.monitors.get_mut(i) else {
            return Err(OvsdbError::syntax(
                Some(&p[0]),
                None,
                "unknown monitor session",
            ));
        };
        let Some(d) = self.shared.dbs.iter().find(|d| d.name() == m.db) else {
            return Err(OvsdbError::syntax(
                Some(&p[0]),
                None,
                "unknown monitor session",
            ));
        };
        let st = d.lock();
        let mut changes = Vec::new();
        for (name, v) in reqs {
            let t = st
                .data
                .table_index(name)
                .ok_or_else(|| OvsdbError::syntax(None, None, format!("no table named {name}")))?;
            if !m.tables.iter().any(|mt| mt.table == t) {
                return Err(OvsdbError::syntax(
                    None,
                    None,
                    format!("no table named {name} in monitor session"),
                ));
            }
            let items = v.as_array().ok_or_else(|| {
                OvsdbError::syntax(
                    None,
                    None,
                    format!("table {name} no monitor-cond-change JSON array"),
                )
            })?;
            let ts = st.data.tables()[t].schema.clone();
            for item in items {
                let mut parser = super::parser::Parser::new(item, format!("table {name}"));
                let where_ = parser.member("where", super::parser::ARRAY | super::parser::OPTIONAL);
                let columns =
                    parser.member("columns", super::parser::ARRAY | super::parser::OPTIONAL);
                if let Some(e) = parser.finish() {
                    return Err(e);
                }
                if columns.is_some() {
                    return Err(OvsdbError::syntax(
                        Some(item),
                        None,
                        "changing columns not supported",
                    ));
                }
                if let Some(w) = where_ {
                    let cond = super::condition::Condition::parse(&ts, w, None)?;
                    changes.push((t, cond, w.clone()));
                }
            }
        }
        if changing_id {
            m.id = p[1].clone();
        }
        Ok(m.change_conditions(&st.data, changes))
    }

    fn lock_name<'p>(method: &str, params: &'p Value) -> Result<&'p str, OvsdbError> {
        match params.as_array().map(Vec::as_slice) {
            Some([Value::String(s)]) if is_valid_id(s) => Ok(s),
            _ => Err(OvsdbError::syntax(
                Some(params),
                None,
                format!("{method} request params must be <id>"),
            )),
        }
    }

    fn notify(&self, session: SessionId, method: &str, lock: &str) {
        let msg = rpc::notification(method, &[lock]);
        if let Ok(s) = self.shared.sessions.lock() {
            if let Some(tx) = s.get(&session) {
                let _ = tx.send(SessionEvent::Notify(msg));
            }
        }
    }

    fn lock(&mut self, method: &str, params: &Value, steal: bool) -> Result<Value, OvsdbError> {
        let name = Self::lock_name(method, params)?;
        let res = {
            let mut locks = self
                .shared
                .locks
                .lock()
                .map_err(|_| OvsdbError::new("internal error", "lock table poisoned"))?;
            if locks.has_waiter(name, self.id) {
                return Err(OvsdbError::syntax(
                    Some(params),
                    None,
                    format!("must issue \"unlock\" before new \"{method}\""),
                ));
            }
            locks.lock(name, self.id, steal)
        };
        self.lock_names.push(name.to_string());
        if let Some(v) = res.victim {
            self.notify(v, "stolen", name);
        }
        Ok(json!({ "locked": res.owner }))
    }

    fn unlock(&mut self, params: &Value) -> Result<Value, OvsdbError> {
        let name = Self::lock_name("unlock", params)?;
        let new_owner = {
            let mut locks = self
                .shared
                .locks
                .lock()
                .map_err(|_| OvsdbError::new("internal error", "lock table poisoned"))?;
            if !locks.has_waiter(name, self.id) {
                return Err(OvsdbError::syntax(
                    Some(params),
                    None,
                    "unlock: \"unlock\" without \"lock\" or \"steal\"",
                ));
            }
            locks.unlock(name, self.id)
        };
        self.lock_names.retain(|n| n != name);
        if let Some(o) = new_owner {
            self.notify(o, "locked", name);
        }
        Ok(json!({}))
    }
}

impl Drop for SessionCore {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.sessions.lock() {
            s.remove(&self.id);
        }
        let handed = match self.shared.locks.lock() {
            Ok(mut l) => l.release_all(&self.lock_names, self.id),
            Err(_) => Vec::new(),
        };
        for (name, owner) in handed {
            self.notify(owner, "locked", &name);
        }
    }
}

fn parse_params(params: Option<&RawValue>) -> Result<Value, SessionError> {
    let raw = params.ok_or_else(|| SessionError::BadMessage("request lacks \"params\"".into()))?;
    let v: Value =
        serde_json::from_str(raw.get()).map_err(|e| SessionError::BadMessage(e.to_string()))?;
    if !v.is_array() {
        return Err(SessionError::BadMessage(
            "\"params\" must be JSON array".into(),
        ));
    }
    Ok(v)
}

/// Per-connection settings.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Inactivity probe interval; zero disables probing (unix sockets).
    pub probe: Duration,
    /// Largest message accepted from the peer.
    pub max_message: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            probe: Duration::from_secs(5),
            max_message: rpc::DEFAULT_MAX_MESSAGE,
        }
    }
}

/// How a session ended.
#[derive(Clone, Debug)]
pub struct SessionEnd {
    pub reason: String,
    /// When the peer last sent anything.
    pub last_activity: Instant,
    /// Whether the end was an error (not a clean close by the peer).
    pub error: bool,
}

const ECHO_PROBE: &[u8] = br#"{"id":"echo","method":"echo","params":[]}"#;

/// Runs one session over a connected stream until it ends.
pub(crate) async fn run(
    shared: Arc<ServerShared>,
    stream: Stream,
    opts: SessionOptions,
    peer: String,
) -> SessionEnd {
    let span = tracing::info_span!("session", peer = %peer);
    async move {
        let start = Instant::now();
        let mut core = SessionCore::new(shared);
        let (rd, wr) = tokio::io::split(stream);
        let mut wr = BufWriter::with_capacity(64 * 1024, wr);
        let mut reader = FramedRead::new(rd, JsonFramer::new(opts.max_message));
        let mut probe = InactivityProbe::new(opts.probe, start);
        let mut out: Vec<Bytes> = Vec::new();
        info!("session started");
        let end = loop {
            let now = Instant::now();
            let probe_deadline = match probe.poll(now) {
                ProbeAction::SendEcho => {
                    out.push(Bytes::from_static(ECHO_PROBE));
                    probe.on_echo_sent(now);
                    match probe.poll(now) {
                        ProbeAction::WaitUntil(t) => Some(t),
                        _ => None,
                    }
                }
                ProbeAction::Close { silent_for } => {
                    break (
                        format!(
                            "no response to inactivity probe after {:.1} seconds, disconnecting",
                            silent_for.as_secs_f64()
                        ),
                        true,
                    );
                }
                ProbeAction::WaitUntil(t) => Some(t),
                ProbeAction::Disabled => None,
            };
            if !out.is_empty() {
                let mut failed = None;
                for b in out.drain(..) {
                    if let Err(e) = wr.write_all(&b).await {
                        failed = Some(e);
                        break;
                    }
                }
                if failed.is_none() {
                    if let Err(e) = wr.flush().await {
                        failed = Some(e);
                    }
                }
                if let Some(e) = failed {
                    break (format!("send error: {e}"), true);
                }
            }
            let deadline = [probe_deadline, core.next_timer()]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                ev = core.recv_event() => {
                    let Some(ev) = ev else { break ("database subscription ended".into(), true) };
                    if let Err(e) = core.handle_event(ev, Instant::now(), &mut out) {
                        break (e.to_string(), true);
                    }
                }
                frame = reader.next() => match frame {
                    Some(Ok(f)) => {
                        let now = Instant::now();
                        probe.on_receive(now);
                        if let Err(e) = core.handle_frame(&f, now, &mut out) {
                            break (e.to_string(), true);
                        }
                    }
                    Some(Err(e)) => break (e.to_string(), true),
                    None => break ("connection closed by peer".into(), false),
                },
                _ = sleep => {
                    if let Err(e) = core.poll_timers(Instant::now(), &mut out) {
                        break (e.to_string(), true);
                    }
                }
            }
        };
        // Best effort: whatever was produced before the end.
        for b in out.drain(..) {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
        let (reason, error) = end;
        if error {
            info!(%reason, "session closed");
        } else {
            debug!(%reason, "session closed");
        }
        SessionEnd {
            reason,
            last_activity: probe.last_received(),
            error,
        }
    }
    .instrument(span)
    .await
}
