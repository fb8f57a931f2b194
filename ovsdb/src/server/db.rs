//! One served database: committed data behind a mutex, the transaction
//! entry points, and fan-out of committed changes to sessions and
//! in-process subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::mpsc;

use super::session::SessionEvent;
use super::storage::{index_key, DbData, RowData, Stored};
use super::txn::{self, Changeset, Executed, TxnContext};
use crate::schema::{DatabaseSchema, TableSchema};
use crate::value::Uuid;

/// A session whose queue of unsent commits grows past this is closed: a
/// peer that does not read must not make the server buffer without bound.
pub const MAX_SESSION_BACKLOG: usize = 100_000;

/// One row's change in a commit.
#[derive(Clone, Debug)]
pub struct RowUpdate {
    pub uuid: Uuid,
    /// The row before the transaction; `None` for an insert.
    pub old: Option<Arc<RowData>>,
    /// The row after the transaction; `None` for a delete.
    pub new: Option<Arc<RowData>>,
}

/// The changed rows of one table.
#[derive(Clone, Debug)]
pub struct TableChanges {
    /// Position of the table in the schema (name order).
    pub index: usize,
    pub schema: Arc<TableSchema>,
    pub rows: Vec<RowUpdate>,
}

/// A committed transaction, shared by every subscriber.
#[derive(Debug)]
pub struct Commit {
    pub db: Arc<str>,
    /// Increases by one per commit of this database.
    pub seq: u64,
    pub tables: Vec<TableChanges>,
    /// Encoded table updates, shared among monitors with the same spec.
    pub(crate) cache: Mutex<HashMap<String, Option<Arc<str>>>>,
}

impl Commit {
    pub fn table(&self, name: &str) -> Option<&TableChanges> {
        self.tables.iter().find(|t| t.schema.name == name)
    }

    pub fn row_count(&self) -> usize {
        self.tables.iter().map(|t| t.rows.len()).sum()
    }
}

pub(crate) enum Sink {
    Session {
        tx: mpsc::UnboundedSender<SessionEvent>,
        backlog: Arc<AtomicUsize>,
    },
    Plain(mpsc::UnboundedSender<Arc<Commit>>),
}

impl Sink {
    /// Delivers a commit; false when the receiver is gone or overloaded.
    fn send(&self, commit: &Arc<Commit>) -> bool {
        match self {
            Sink::Session { tx, backlog } => {
                if backlog.fetch_add(1, Ordering::Relaxed) >= MAX_SESSION_BACKLOG {
                    // Dropping the sender makes the session see its
                    // subscription end and close with a logged reason.
                    return false;
                }
                tx.send(SessionEvent::Commit(commit.clone())).is_ok()
            }
            Sink::Plain(tx) => tx.send(commit.clone()).is_ok(),
        }
    }
}

pub(crate) struct DbState {
    pub data: DbData,
    pub seq: u64,
    sinks: Vec<Sink>,
}

struct DbShared {
    name: Arc<str>,
    state: Mutex<DbState>,
}

/// A handle to one in-memory database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    shared: Arc<DbShared>,
}

/// Committed changes of one database, in commit order.
pub struct Subscription {
    rx: mpsc::UnboundedReceiver<Arc<Commit>>,
}

impl Subscription {
    /// The next commit; `None` once the database is gone.
    pub async fn recv(&mut self) -> Option<Arc<Commit>> {
        self.rx.recv().await
    }

    /// A commit already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Commit>> {
        self.rx.try_recv().ok()
    }
}

impl Db {
    pub fn new(schema: Arc<DatabaseSchema>) -> Db {
        Db {
            shared: Arc::new(DbShared {
                name: Arc::from(schema.name.as_str()),
                state: Mutex::new(DbState {
                    data: DbData::new(schema),
                    seq: 0,
                    sinks: Vec::new(),
                }),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn schema(&self) -> Arc<DatabaseSchema> {
        self.lock().data.schema.clone()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, DbState> {
        // A panic while holding the lock would be a bug in this module; the
        // data is only changed by `apply`, which cannot leave it half done
        // through a peer's input, so keep serving.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs a transaction in-process, with the same engine and semantics as
    /// `transact` over the wire. `ops` are the operations (without the
    /// database name); the result is the reply's result array. A `wait` that
    /// is not satisfied fails at once (there is no session to block).
    pub fn transact(&self, ops: &[Value]) -> Vec<Value> {
        self.execute(ops, &TxnContext::immediate())
            .0
            .unwrap_or_default()
    }

    /// Executes under the lock; commits and notifies subscribers (before
    /// returning, so a session can flush its own updates before replying).
    /// `None` results mean the request is blocked on a `wait`.
    pub(crate) fn execute(
        &self,
        ops: &[Value],
        ctx: &TxnContext<'_>,
    ) -> (Option<Vec<Value>>, Option<i64>) {
        let mut st = self.lock();
        match txn::execute(&st.data, ops, ctx) {
            Executed::Done(results, Some(cs)) => {
                st.commit(&self.shared.name, cs);
                (Some(results), None)
            }
            Executed::Done(results, None) => (Some(results), None),
            Executed::Blocked { timeout_ms } => (None, timeout_ms),
        }
    }

    /// Inserts rows directly, bypassing the reserved-database rule (used
    /// to fill `_Server`). Rows that fail the commit checks are dropped.
    pub(crate) fn seed(&self, table: &str, rows: Vec<crate::value::Row>) {
        let mut st = self.lock();
        let Some(t) = st.data.table_index(table) else {
            return;
        };
        let cs = {
            let mut txn = txn::Txn::new(&st.data);
            for row in rows {
                txn.insert(t, super::storage::new_uuid(), row);
            }
            txn.precommit()
        };
        if let Ok(cs) = cs {
            st.commit(&self.shared.name, cs);
        }
    }

    /// Reads committed data consistently (the lock is held during `f`).
    pub fn read<R>(&self, f: impl FnOnce(&DbData) -> R) -> R {
        f(&self.lock().data)
    }

    /// A copy of one committed row.
    pub fn get(&self, table: &str, uuid: &Uuid) -> Option<Arc<RowData>> {
        self.read(|d| d.table(table).and_then(|t| t.get(uuid).cloned()))
    }

    /// Receives every commit from now on.
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().sinks.push(Sink::Plain(tx));
        Subscription { rx }
    }

    pub(crate) fn subscribe_session(
        &self,
        tx: mpsc::UnboundedSender<SessionEvent>,
        backlog: Arc<AtomicUsize>,
    ) {
        self.lock().sinks.push(Sink::Session { tx, backlog });
    }
}

impl DbState {
    pub(crate) fn commit(&mut self, db: &Arc<str>, cs: Changeset) {
        if cs.is_empty() {
            return;
        }
        let tables = self.data.apply(cs);
        if tables.is_empty() {
            return;
        }
        self.seq += 1;
        let commit = Arc::new(Commit {
            db: db.clone(),
            seq: self.seq,
            tables,
            cache: Mutex::new(HashMap::new()),
        });
        self.sinks.retain(|s| s.send(&commit));
    }
}

impl DbData {
    /// Applies a checked transaction; returns the visible changes by table.
    pub(crate) fn apply(&mut self, cs: Changeset) -> Vec<TableChanges> {
        let mut by_table: Vec<Option<TableChanges>> = vec![None; self.tables.len()];
        for (t, uuid, r) in cs.rows {
            let Some(table) = self.tables.get_mut(t) else {
                continue;
            };
            let changed = r.old.is_none()
                || r.new.is_none()
                || r.changed.as_ref().is_some_and(|c| c.iter().any(|b| *b));
            if let Some(old) = &r.old {
                if changed {
                    for (i, index) in table.schema.indexes.iter().enumerate() {
                        let key = index_key(index, &old.row);
                        if table.indexes[i].get(&key) == Some(&uuid) {
                            table.indexes[i].remove(&key);
                        }
                    }
                }
            }
            match &r.new {
                Some(new) => {
                    if changed {
                        for (i, index) in table.schema.indexes.iter().enumerate() {
                            table.indexes[i].insert(index_key(index, &new.row), uuid);
                        }
                    }
                    let refs = u32::try_from(r.n_refs.max(0)).unwrap_or(u32::MAX);
                    table.rows.insert(
                        uuid,
                        Stored {
                            data: new.clone(),
                            refs,
                        },
                    );
                }
                None => {
                    table.rows.remove(&uuid);
                }
            }
            if changed && (r.old.is_some() || r.new.is_some()) {
                let schema = table.schema.clone();
                by_table[t]
                    .get_or_insert_with(|| TableChanges {
                        index: t,
                        schema,
                        rows: Vec::new(),
                    })
                    .rows
                    .push(RowUpdate {
                        uuid,
                        old: r.old,
                        new: r.new,
                    });
            }
        }
        by_table.into_iter().flatten().collect()
    }
}
