//! An in-memory OVSDB server with ovsdb-server's semantics, for the
//! simulated switch and for tests.
//!
//! It serves any schema (plus the `_Server` database, as a standalone
//! ovsdb-server does) over `ptcp:`/`pssl:`/`punix:` listeners with any
//! number of sessions, dials out to manager targets found in a table column
//! (`--remote=db:DB,TABLE,COLUMN`), and offers the same engine in-process.
//!
//! Layout: [`storage`] (committed rows, reference counts, indexes),
//! [`txn`] (operations and commit checks), [`condition`] and [`mutation`],
//! [`monitor`] (update, update2, update3), [`locks`], [`session`] (one per
//! connection), [`manager`] (dial-out and status write-back).
//!
//! # In-process use
//!
//! ```
//! use ovsdb::server::Server;
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let server = Server::hardware_vtep();
//! let db = server.db("hardware_vtep").unwrap();
//! let mut changes = db.subscribe();
//!
//! // The same operations as `transact` on the wire (without the db name).
//! let result = db.transact(&[json!({
//!     "op": "insert", "table": "Logical_Switch",
//!     "row": {"name": "ls0", "tunnel_key": 5000}
//! })]);
//! assert!(result[0].get("uuid").is_some());
//!
//! // Every commit, whoever made it (a manager session or this process).
//! let commit = changes.recv().await.unwrap();
//! let ls = commit.table("Logical_Switch").unwrap();
//! let row = ls.rows[0].new.as_ref().unwrap();
//! let name = ls.schema.column_index("name").unwrap();
//! assert_eq!(row.get(name).unwrap().as_str(), Some("ls0"));
//!
//! // Reading committed rows.
//! let n = db.read(|data| data.table("Logical_Switch").unwrap().len());
//! assert_eq!(n, 1);
//! # }
//! ```
//!
//! Over the network: `server.listen(&"ptcp:6640:127.0.0.1".parse()?, None)`,
//! and `server.start_managers(ManagerConfig::hardware_vtep())` to dial the
//! targets in `Global.managers` as a switch does.

mod condition;
mod db;
pub mod error;
mod json;
pub mod locks;
pub mod manager;
pub mod monitor;
mod mutation;
mod parser;
pub mod session;
pub mod storage;
pub mod txn;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use db::{Commit, Db, RowUpdate, Subscription, TableChanges, MAX_SESSION_BACKLOG};
pub use error::OvsdbError;
pub use manager::{ManagerConfig, ManagerHandle};
pub use session::{SessionEnd, SessionOptions};
pub use storage::{DbData, RowData, TableData};

use crate::schema::{hardware_vtep, server_db, DatabaseSchema};
use crate::transport::{Listener, Stream, Target, TlsFiles, TransportError};
use crate::value::{Datum, Row, Uuid};
use locks::{LockTable, SessionId};
use session::SessionEvent;

pub(crate) struct ServerShared {
    /// Served databases in `list_dbs` order, `_Server` last.
    pub dbs: Vec<Db>,
    pub server_id: Uuid,
    pub locks: Mutex<LockTable>,
    pub sessions: Mutex<HashMap<SessionId, mpsc::UnboundedSender<SessionEvent>>>,
    pub next_session: AtomicU64,
}

/// An OVSDB server; cheap to clone (all clones serve the same databases).
#[derive(Clone)]
pub struct Server {
    shared: Arc<ServerShared>,
}

impl Server {
    /// A server for the given database schemas, all empty (as after
    /// `ovsdb-tool create`), plus `_Server`.
    pub fn new(schemas: impl IntoIterator<Item = Arc<DatabaseSchema>>) -> Server {
        let mut dbs: Vec<Db> = schemas.into_iter().map(Db::new).collect();
        let server = Db::new(server_db());
        let mut rows = Vec::new();
        for d in dbs.iter().chain(std::iter::once(&server)) {
            rows.push(database_row(&server, d));
        }
        server.seed("Database", rows);
        dbs.push(server);
        Server {
            shared: Arc::new(ServerShared {
                dbs,
                server_id: Uuid::new_v4(),
                locks: Mutex::new(LockTable::default()),
                sessions: Mutex::new(HashMap::new()),
                next_session: AtomicU64::new(1),
            }),
        }
    }

    /// A server of the embedded `hardware_vtep` 1.7.0 schema.
    pub fn hardware_vtep() -> Server {
        Server::new([hardware_vtep()])
    }

    pub fn db(&self, name: &str) -> Option<Db> {
        self.shared.dbs.iter().find(|d| d.name() == name).cloned()
    }

    /// Names as `list_dbs` returns them.
    pub fn databases(&self) -> Vec<String> {
        self.shared
            .dbs
            .iter()
            .map(|d| d.name().to_string())
            .collect()
    }

    /// The id `get_server_id` returns (new per server).
    pub fn server_id(&self) -> Uuid {
        self.shared.server_id
    }

    /// Listens on a passive target (`ptcp:`, `pssl:`, `punix:`); every
    /// accepted connection is its own session. Unix sockets get no
    /// inactivity probe, as in ovsdb-server.
    pub async fn listen(
        &self,
        target: &Target,
        tls: Option<&TlsFiles>,
    ) -> Result<ListenerHandle, TransportError> {
        let mut opts = SessionOptions::default();
        if matches!(target, Target::PUnix(_)) {
            opts.probe = std::time::Duration::ZERO;
        }
        self.listen_with(target, tls, opts).await
    }

    pub async fn listen_with(
        &self,
        target: &Target,
        tls: Option<&TlsFiles>,
        opts: SessionOptions,
    ) -> Result<ListenerHandle, TransportError> {
        let listener = Listener::bind(target, tls).await?;
        let bound = listener.target().clone();
        let server = self.clone();
        let span = tracing::info_span!("listener", target = %bound);
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                info!("listening");
                loop {
                    let accepted = match listener.accept().await {
                        Ok(a) => a,
                        Err(e) => {
                            warn!("accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let server = server.clone();
                    let opts = opts.clone();
                    tokio::spawn(async move {
                        let peer = accepted.peer.to_string();
                        match accepted.finish().await {
                            Ok(stream) => {
                                server.serve(stream, opts, peer).await;
                            }
                            Err(e) => warn!(%peer, "handshake failed: {e}"),
                        }
                    });
                }
            },
            span,
        ));
        Ok(ListenerHandle {
            target: bound,
            task,
        })
    }

    /// Runs one session over an already connected stream until it ends.
    pub async fn serve(&self, stream: Stream, opts: SessionOptions, peer: String) -> SessionEnd {
        session::run(self.shared.clone(), stream, opts, peer).await
    }

    /// Dials (and listens on) the targets found in a table column, like
    /// ovsdb-server's `--remote=db:DB,TABLE,COLUMN`, following changes.
    pub fn start_managers(&self, config: ManagerConfig) -> Result<ManagerHandle, OvsdbError> {
        manager::start(self.clone(), config)
    }
}

/// A running listener; dropping it stops accepting (sessions keep running).
pub struct ListenerHandle {
    target: Target,
    task: JoinHandle<()>,
}

impl ListenerHandle {
    /// The bound target (with the real port when port 0 was asked for).
    pub fn target(&self) -> &Target {
        &self.target
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `_Server.Database` row describing `db`, as a standalone server has it.
fn database_row(server: &Db, db: &Db) -> Row {
    let schema = server.schema();
    let table = schema.table("Database");
    let mut row = table.map(|t| Row::with_defaults(t)).unwrap_or(Row {
        columns: Box::new([]),
    });
    if let Some(t) = table {
        let mut set = |name: &str, d: Datum| {
            if let Some(slot) = t.column_index(name).and_then(|i| row.columns.get_mut(i)) {
                *slot = d;
            }
        };
        set("name", Datum::scalar(db.name()));
        set("model", Datum::scalar("standalone"));
        set("connected", Datum::scalar(true));
        set("leader", Datum::scalar(true));
        set(
            "schema",
            Datum::scalar(error::canonical_string(&db.schema().to_json())),
        );
    }
    row
}
