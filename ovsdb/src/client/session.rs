//! One client session over one connection: the async driver and the
//! `Client` handle.
//!
//! The driver reads and writes concurrently, answers the peer's `echo` at
//! once, sends its own inactivity probe, matches replies to requests by id
//! (in any order), and keeps the replica: updates are applied in arrival
//! order, so when a `transact` reply is handed to its caller the replica
//! already holds the transaction's own changes (ovsdb-server sends the
//! updates first).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::{debug, info, warn, Instrument};

use super::decode::{
    decode, decode_monitor_reply, Context, MonitorReplyKind, Payload, UpdateTarget,
};
use super::monitor::{MonitorSpec, Requests};
use super::replica::{Replica, RowEvent};
use super::transact::{TransactOutcome, Transaction};
use crate::rpc::{self, InactivityProbe, JsonFramer, ProbeAction};
use crate::schema::DatabaseSchema;
use crate::transport::{Peer, Stream};
use crate::value::seed::UpdateFormat;

/// Tunables of one session.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Shown in logs (for example the switch's name or address).
    pub name: String,
    /// Send an `echo` after this long with nothing received, and close
    /// after as long again. Zero disables probing.
    pub probe_interval: Duration,
    /// Largest message accepted from the peer.
    pub max_message: usize,
    /// Transactions in flight at once; more wait for a slot.
    pub max_in_flight: usize,
    /// Keep a replica in the session and report row events (`Update`). When
    /// false, decoded updates are handed over as they are (`Updates`) for
    /// an owner that keeps its own replica, so rows are not held twice.
    pub keep_replica: bool,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            name: String::new(),
            probe_interval: Duration::from_secs(5),
            max_message: rpc::DEFAULT_MAX_MESSAGE,
            max_in_flight: 64,
            keep_replica: true,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("session closed: {0}")]
    Closed(String),
    #[error("{method} failed: {error}")]
    Rpc { method: String, error: Value },
    #[error("bad reply to {method}: {reason}")]
    BadReply { method: String, reason: String },
    #[error("unknown database {0}")]
    UnknownDatabase(String),
}

/// Something the peer sent that the owner of the session acts on.
#[derive(Debug)]
pub enum SessionEvent {
    /// Rows changed in the replica of `database` (initial rows of a new
    /// monitor arrive as inserts).
    Update {
        database: String,
        events: Vec<RowEvent>,
    },
    /// Decoded updates, not applied (sessions without `keep_replica`). They
    /// arrive in order, and before the reply of the transaction that caused
    /// them is handed to its caller.
    Updates {
        database: String,
        updates: crate::value::seed::TableUpdates,
    },
    Locked(String),
    Stolen(String),
    MonitorCanceled(Value),
    /// The session is over; no more events follow.
    Closed {
        reason: String,
    },
}

/// Result of starting a monitor.
#[derive(Clone, Debug)]
pub struct MonitorStarted {
    pub id: Value,
    /// `monitor_cond_since` only: whether the server could resume from the
    /// given transaction id (a standalone database never can).
    pub found: bool,
    pub initial_rows: usize,
}

enum Pending {
    Reply {
        method: String,
        tx: oneshot::Sender<Result<Bytes, ClientError>>,
    },
    Monitor {
        method: String,
        database: String,
        format: UpdateFormat,
        since: bool,
        tx: oneshot::Sender<Result<MonitorStarted, ClientError>>,
        id: Value,
    },
}

struct MonitorInfo {
    database: String,
    format: UpdateFormat,
}

struct Shared {
    name: String,
    keep_replica: bool,
    peer: Peer,
    out: mpsc::UnboundedSender<Bytes>,
    pending: Mutex<HashMap<u64, Pending>>,
    monitors: Mutex<HashMap<String, MonitorInfo>>,
    schemas: RwLock<HashMap<String, Arc<DatabaseSchema>>>,
    replicas: RwLock<HashMap<String, Replica>>,
    next_id: AtomicU64,
    in_flight: Semaphore,
    closed: watch::Sender<Option<String>>,
    close_now: tokio::sync::Notify,
}

/// A cheap, cloneable handle to a session.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.shared.name)
            .field("peer", &self.shared.peer)
            .finish()
    }
}

impl Client {
    /// Starts a session on a connected stream. Events go to the returned
    /// receiver; the session ends when the peer goes, when probing fails, on
    /// a protocol error, or when `close` is called.
    pub fn start(
        stream: Stream,
        options: SessionOptions,
    ) -> (Client, mpsc::UnboundedReceiver<SessionEvent>) {
        let peer = stream.peer();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (closed, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            name: options.name.clone(),
            keep_replica: options.keep_replica,
            peer: peer.clone(),
            out: out_tx,
            pending: Mutex::new(HashMap::new()),
            monitors: Mutex::new(HashMap::new()),
            schemas: RwLock::new(HashMap::new()),
            replicas: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            in_flight: Semaphore::new(options.max_in_flight.max(1)),
            closed,
            close_now: tokio::sync::Notify::new(),
        });
        let span = tracing::info_span!("ovsdb_session", name = %options.name, peer = %peer);
        let driver_shared = shared.clone();
        tokio::spawn(
            async move {
                let (r, w) = tokio::io::split(stream);
                let reason = tokio::select! {
                    reason = read_loop(r, &driver_shared, &ev_tx, &options) => reason,
                    reason = write_loop(w, out_rx) => reason,
                    _ = driver_shared.close_now.notified() => "closed locally".to_string(),
                };
                info!(%reason, "ovsdb session closed");
                finish(&driver_shared, &ev_tx, reason);
            }
            .instrument(span),
        );
        (Client { shared }, ev_rx)
    }

    pub fn peer(&self) -> &Peer {
        &self.shared.peer
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Ends the session; pending requests fail and `Closed` is delivered.
    pub fn close(&self) {
        self.shared.close_now.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }

    /// Waits for the session to end and returns why it ended.
    pub async fn closed(&self) -> String {
        let mut rx = self.shared.closed.subscribe();
        loop {
            if let Some(r) = rx.borrow().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return "session dropped".into();
            }
        }
    }

    fn check_open(&self) -> Result<(), ClientError> {
        match self.shared.closed.borrow().as_ref() {
            Some(r) => Err(ClientError::Closed(r.clone())),
            None => Ok(()),
        }
    }

    fn send_request<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
        make: impl FnOnce(Value) -> Pending,
    ) -> Result<(), ClientError> {
        self.check_open()?;
        let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let id = Value::from(n);
        let bytes = rpc::request(&id, method, params);
        lock(&self.shared.pending).insert(n, make(id));
        if self.shared.out.send(bytes).is_err() {
            lock(&self.shared.pending).remove(&n);
            return Err(ClientError::Closed("connection writer gone".into()));
        }
        Ok(())
    }

    /// Sends any request and returns the raw JSON text of its result.
    pub async fn call<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<Bytes, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.send_request(method, params, |_| Pending::Reply {
            method: method.to_string(),
            tx,
        })?;
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Closed(self.close_reason())),
        }
    }

    /// Like `call`, with the result parsed into a `serde_json::Value`.
    pub async fn call_value<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<Value, ClientError> {
        let raw = self.call(method, params).await?;
        serde_json::from_slice(&raw).map_err(|e| ClientError::BadReply {
            method: method.to_string(),
            reason: e.to_string(),
        })
    }

    fn close_reason(&self) -> String {
        self.shared
            .closed
            .borrow()
            .clone()
            .unwrap_or_else(|| "session ended".into())
    }

    pub async fn list_dbs(&self) -> Result<Vec<String>, ClientError> {
        let v = self.call_value("list_dbs", &[(); 0]).await?;
        serde_json::from_value(v).map_err(|e| ClientError::BadReply {
            method: "list_dbs".into(),
            reason: e.to_string(),
        })
    }

    /// Fetches and parses a schema, and remembers it for monitors and
    /// transactions on that database.
    pub async fn get_schema(&self, database: &str) -> Result<Arc<DatabaseSchema>, ClientError> {
        let v = self.call_value("get_schema", &[database]).await?;
        let schema =
            Arc::new(
                DatabaseSchema::from_json(&v).map_err(|e| ClientError::BadReply {
                    method: "get_schema".into(),
                    reason: e.to_string(),
                })?,
            );
        self.use_schema(schema.clone());
        Ok(schema)
    }

    /// Uses a known schema for a database (for example the embedded
    /// hardware_vtep schema, after checking the server's version).
    pub fn use_schema(&self, schema: Arc<DatabaseSchema>) {
        let name = schema.name.clone();
        let mut replicas = write(&self.shared.replicas);
        if !replicas.contains_key(&name) {
            replicas.insert(name.clone(), Replica::new(schema.clone()));
        }
        write(&self.shared.schemas).insert(name, schema);
    }

    pub async fn echo(&self) -> Result<(), ClientError> {
        self.call("echo", &["ping"]).await.map(|_| ())
    }

    pub async fn get_server_id(&self) -> Result<String, ClientError> {
        let v = self.call_value("get_server_id", &[(); 0]).await?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::BadReply {
                method: "get_server_id".into(),
                reason: format!("{v} is not a string"),
            })
    }

    /// Runs a transaction; at most `max_in_flight` run at once, so callers
    /// may pipeline many without flooding the server.
    pub async fn transact(&self, txn: &Transaction) -> Result<TransactOutcome, ClientError> {
        let _permit = self
            .shared
            .in_flight
            .acquire()
            .await
            .map_err(|_| ClientError::Closed(self.close_reason()))?;
        let raw = self.call("transact", &txn.params()).await?;
        let v: Value = serde_json::from_slice(&raw).map_err(|e| ClientError::BadReply {
            method: "transact".into(),
            reason: e.to_string(),
        })?;
        TransactOutcome::from_json(txn, &v).map_err(|reason| ClientError::BadReply {
            method: "transact".into(),
            reason,
        })
    }

    async fn start_monitor(
        &self,
        method: &str,
        database: &str,
        spec: &MonitorSpec,
        format: UpdateFormat,
        last_txn_id: Option<&str>,
    ) -> Result<MonitorStarted, ClientError> {
        if !read(&self.shared.schemas).contains_key(database) {
            return Err(ClientError::UnknownDatabase(database.to_string()));
        }
        let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let monitor_id = Value::String(format!("mon{n}"));
        let requests = Requests {
            spec,
            with_conditions: format == UpdateFormat::V2,
        };
        let (tx, rx) = oneshot::channel();
        let since = last_txn_id.is_some();
        let zero = "00000000-0000-0000-0000-000000000000";
        let result = match last_txn_id {
            Some(last) => {
                let last = if last.is_empty() { zero } else { last };
                self.send_request(method, &(database, &monitor_id, &requests, last), |_| {
                    Pending::Monitor {
                        method: method.to_string(),
                        database: database.to_string(),
                        format,
                        since,
                        tx,
                        id: monitor_id.clone(),
                    }
                })
            }
            None => self.send_request(method, &(database, &monitor_id, &requests), |_| {
                Pending::Monitor {
                    method: method.to_string(),
                    database: database.to_string(),
                    format,
                    since,
                    tx,
                    id: monitor_id.clone(),
                }
            }),
        };
        result?;
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Closed(self.close_reason())),
        }
    }

    /// `monitor` (RFC 7047): updates in the v1 `old`/`new` form.
    pub async fn monitor(
        &self,
        database: &str,
        spec: &MonitorSpec,
    ) -> Result<MonitorStarted, ClientError> {
        self.start_monitor("monitor", database, spec, UpdateFormat::V1, None)
            .await
    }

    /// `monitor_cond`: conditional monitoring with `update2` diffs.
    pub async fn monitor_cond(
        &self,
        database: &str,
        spec: &MonitorSpec,
    ) -> Result<MonitorStarted, ClientError> {
        self.start_monitor("monitor_cond", database, spec, UpdateFormat::V2, None)
            .await
    }

    /// `monitor_cond_since`; a standalone database answers `found=false`
    /// and sends everything.
    pub async fn monitor_cond_since(
        &self,
        database: &str,
        spec: &MonitorSpec,
        last_txn_id: &str,
    ) -> Result<MonitorStarted, ClientError> {
        self.start_monitor(
            "monitor_cond_since",
            database,
            spec,
            UpdateFormat::V2,
            Some(last_txn_id),
        )
        .await
    }

    pub async fn monitor_cancel(&self, id: &Value) -> Result<(), ClientError> {
        self.call("monitor_cancel", &[id]).await?;
        if let Some(s) = id.as_str() {
            lock(&self.shared.monitors).remove(s);
        }
        Ok(())
    }

    /// `lock`: true if granted now; otherwise `Locked` arrives later.
    pub async fn lock(&self, name: &str) -> Result<bool, ClientError> {
        let v = self.call_value("lock", &[name]).await?;
        Ok(v.get("locked").and_then(Value::as_bool).unwrap_or(false))
    }

    pub async fn steal(&self, name: &str) -> Result<bool, ClientError> {
        let v = self.call_value("steal", &[name]).await?;
        Ok(v.get("locked").and_then(Value::as_bool).unwrap_or(false))
    }

    pub async fn unlock(&self, name: &str) -> Result<(), ClientError> {
        self.call("unlock", &[name]).await.map(|_| ())
    }

    /// Reads the replica of a database under a short read lock.
    pub fn with_replica<R>(&self, database: &str, f: impl FnOnce(&Replica) -> R) -> Option<R> {
        read(&self.shared.replicas).get(database).map(f)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

fn finish(shared: &Shared, events: &mpsc::UnboundedSender<SessionEvent>, reason: String) {
    shared.closed.send_replace(Some(reason.clone()));
    let pending: Vec<Pending> = lock(&shared.pending).drain().map(|(_, p)| p).collect();
    for p in pending {
        match p {
            Pending::Reply { tx, .. } => {
                let _ = tx.send(Err(ClientError::Closed(reason.clone())));
            }
            Pending::Monitor { tx, .. } => {
                let _ = tx.send(Err(ClientError::Closed(reason.clone())));
            }
        }
    }
    shared.in_flight.close();
    let _ = events.send(SessionEvent::Closed { reason });
}

async fn write_loop(
    w: tokio::io::WriteHalf<Stream>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) -> String {
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    loop {
        let Some(msg) = rx.recv().await else {
            // Every sender is gone: nothing more will ever be sent, and the
            // reader decides when the session ends.
            return std::future::pending::<String>().await;
        };
        if let Err(e) = w.write_all(&msg).await {
            return format!("write error: {e}");
        }
        while let Ok(more) = rx.try_recv() {
            if let Err(e) = w.write_all(&more).await {
                return format!("write error: {e}");
            }
        }
        if let Err(e) = w.flush().await {
            return format!("write error: {e}");
        }
    }
}

const READ_CHUNK: usize = 64 * 1024;

async fn read_loop(
    mut r: tokio::io::ReadHalf<Stream>,
    shared: &Shared,
    events: &mpsc::UnboundedSender<SessionEvent>,
    options: &SessionOptions,
) -> String {
    let mut framer = JsonFramer::new(options.max_message);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut probe = InactivityProbe::new(options.probe_interval, Instant::now());
    loop {
        loop {
            match framer.next_frame(&mut buf) {
                Ok(Some(frame)) => {
                    if let Err(reason) = handle_frame(shared, events, frame) {
                        return reason;
                    }
                }
                Ok(None) => break,
                Err(e) => return format!("protocol error: {e}"),
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let wake = match probe.poll(Instant::now()) {
            ProbeAction::WaitUntil(t) => Some(t),
            ProbeAction::Disabled => None,
            ProbeAction::SendEcho => {
                debug!("peer idle, sending inactivity probe");
                let _ = shared
                    .out
                    .send(rpc::request(&Value::from("echo"), "echo", &[(); 0]));
                probe.on_echo_sent(Instant::now());
                continue;
            }
            ProbeAction::Close { silent_for } => {
                return format!(
                    "no response to inactivity probe after {:.1} seconds",
                    silent_for.as_secs_f64()
                )
            }
        };
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            n = r.read_buf(&mut buf) => match n {
                Ok(0) => {
                    return if framer.in_message() {
                        "connection closed by peer in the middle of a message".into()
                    } else {
                        "connection closed by peer".into()
                    }
                }
                Ok(_) => probe.on_receive(Instant::now()),
                Err(e) => return format!("read error: {e}"),
            },
            _ = sleep => {}
        }
    }
}

impl Context for Shared {
    fn monitor_reply(&self, id: &RawValue) -> Option<MonitorReplyKind> {
        let n: u64 = id.get().parse().ok()?;
        let (database, format, since) = match lock(&self.pending).get(&n)? {
            Pending::Monitor {
                database,
                format,
                since,
                ..
            } => (database.clone(), *format, *since),
            Pending::Reply { .. } => return None,
        };
        let schema = read(&self.schemas).get(&database)?.clone();
        Some(MonitorReplyKind {
            schema,
            format,
            since,
        })
    }

    fn update_target(&self, monitor_id: &Value) -> Option<UpdateTarget> {
        let (database, format) = {
            let monitors = lock(&self.monitors);
            let m = monitors.get(monitor_id.as_str()?)?;
            (m.database.clone(), m.format)
        };
        let schema = read(&self.schemas).get(&database)?.clone();
        Some(UpdateTarget {
            database,
            schema,
            format,
        })
    }
}

/// Handles one complete message. An error ends the session.
fn handle_frame(
    shared: &Shared,
    events: &mpsc::UnboundedSender<SessionEvent>,
    frame: Bytes,
) -> Result<(), String> {
    let msg = decode(&frame, shared)?;
    match (msg.method, msg.id) {
        (Some(method), Some(id)) => {
            if msg.result.is_some() || msg.error.is_some() {
                return Err(
                    "received bad JSON-RPC message: request has \"result\" or \"error\"".into(),
                );
            }
            let reply = if method == "echo" {
                match msg.params {
                    Some(Payload::Raw(p)) => rpc::response(id, p),
                    _ => rpc::response(id, &[(); 0]),
                }
            } else {
                debug!(%method, "peer sent an unexpected request");
                rpc::error_response(id, &Value::from("unknown method"))
            };
            let _ = shared.out.send(reply);
            Ok(())
        }
        (Some(method), None) => match (method.as_str(), msg.params) {
            (_, Some(Payload::Updates(Some((database, updates))))) => {
                apply(shared, events, &database, updates)
            }
            (_, Some(Payload::Updates(None))) => {
                warn!(%method, "update for an unknown monitor ignored");
                Ok(())
            }
            ("locked" | "stolen", Some(Payload::Raw(p))) => {
                let v: Vec<Value> =
                    serde_json::from_str(p.get()).map_err(|e| format!("bad {method}: {e}"))?;
                let name = v
                    .first()
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let _ = events.send(if method == "locked" {
                    SessionEvent::Locked(name)
                } else {
                    SessionEvent::Stolen(name)
                });
                Ok(())
            }
            ("monitor_canceled", Some(Payload::Raw(p))) => {
                let v: Vec<Value> =
                    serde_json::from_str(p.get()).map_err(|e| format!("bad {method}: {e}"))?;
                let id = v.into_iter().next().unwrap_or(Value::Null);
                if let Some(s) = id.as_str() {
                    lock(&shared.monitors).remove(s);
                }
                let _ = events.send(SessionEvent::MonitorCanceled(id));
                Ok(())
            }
            _ => {
                debug!(%method, "ignoring notification");
                Ok(())
            }
        },
        (None, Some(id)) => {
            if msg.params.is_some() {
                return Err("received bad JSON-RPC message: reply has \"params\"".into());
            }
            let Some(n) = id.get().parse::<u64>().ok() else {
                // Replies to our own probes carry the id "echo".
                return Ok(());
            };
            let Some(pending) = lock(&shared.pending).remove(&n) else {
                debug!(id = n, "reply to no pending request");
                return Ok(());
            };
            let error = msg.error.filter(|e| !e.is_null());
            match pending {
                Pending::Reply { method, tx } => {
                    let result = match (error, msg.result) {
                        (Some(error), _) => Err(ClientError::Rpc { method, error }),
                        (None, Some(Payload::Raw(raw))) => {
                            Ok(frame.slice_ref(raw.get().as_bytes()))
                        }
                        (None, _) => Err(ClientError::BadReply {
                            method,
                            reason: "reply has no result".into(),
                        }),
                    };
                    let _ = tx.send(result);
                    Ok(())
                }
                Pending::Monitor {
                    method,
                    database,
                    format,
                    since,
                    tx,
                    id,
                } => {
                    if let Some(error) = error {
                        let _ = tx.send(Err(ClientError::Rpc { method, error }));
                        return Ok(());
                    }
                    let (found, updates) = match msg.result {
                        Some(Payload::MonitorReply(found, u)) => (found, u),
                        Some(Payload::Raw(raw)) => {
                            let Some(schema) = read(&shared.schemas).get(&database).cloned() else {
                                let _ = tx.send(Err(ClientError::UnknownDatabase(database)));
                                return Ok(());
                            };
                            decode_monitor_reply(
                                raw,
                                &MonitorReplyKind {
                                    schema,
                                    format,
                                    since,
                                },
                            )
                            .map_err(|e| format!("bad {method} reply: {e}"))?
                        }
                        _ => return Err(format!("bad {method} reply: no result")),
                    };
                    let rows = updates.row_count();
                    if let Some(s) = id.as_str() {
                        lock(&shared.monitors).insert(
                            s.to_string(),
                            MonitorInfo {
                                database: database.clone(),
                                format,
                            },
                        );
                    }
                    apply(shared, events, &database, updates)?;
                    let _ = tx.send(Ok(MonitorStarted {
                        id,
                        found,
                        initial_rows: rows,
                    }));
                    Ok(())
                }
            }
        }
        (None, None) => Err("received bad JSON-RPC message: neither \"method\" nor \"id\"".into()),
    }
}

fn apply(
    shared: &Shared,
    events: &mpsc::UnboundedSender<SessionEvent>,
    database: &str,
    updates: crate::value::seed::TableUpdates,
) -> Result<(), String> {
    if !shared.keep_replica {
        if updates.row_count() > 0 {
            let _ = events.send(SessionEvent::Updates {
                database: database.to_string(),
                updates,
            });
        }
        return Ok(());
    }
    let evs = {
        let mut replicas = write(&shared.replicas);
        let Some(replica) = replicas.get_mut(database) else {
            return Ok(());
        };
        replica
            .apply(updates)
            .map_err(|e| format!("replica out of sync: {e}"))?
    };
    if !evs.is_empty() {
        let _ = events.send(SessionEvent::Update {
            database: database.to_string(),
            events: evs,
        });
    }
    Ok(())
}
