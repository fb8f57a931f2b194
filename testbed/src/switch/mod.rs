//! Simulated hardware-VTEP ToR switches.
//!
//! Each switch is our OVSDB server ([`ovsdb::server`]) with the
//! `hardware_vtep` 1.7.0 schema, seeded as a real switch's database is (one
//! `Global` row, its `Physical_Switch` with name, description, management
//! and tunnel IPs, and `Physical_Port`s), served on passive targets
//! (`ptcp:`/`pssl:`/`punix:`) and dialling the targets in `Global.managers`
//! (`tcp:`/`ssl:`, with OVS's 1, 2, 4, 8 s backoff capped by `max_backoff`,
//! inactivity probes and `is_connected`/`status` write-back), as
//! `ovsdb-server --remote=db:hardware_vtep,Global,managers` does on a switch.
//!
//! It learns MACs like a VTEP switch (rules in [`fdb`]): `Ucast_Macs_Local`
//! rows for hosts on (port, VLAN)s the manager bound to logical switches,
//! all pointing at the switch's own locator (VXLAN to its tunnel IP), one
//! `unknown-dst` `Mcast_Macs_Local` per bound logical switch, local rows
//! cleared when a logical switch loses its last binding, and a local MAC
//! withdrawn when the manager writes it as a `Ucast_Macs_Remote` in the same
//! logical switch (a MAC move). Hosts can be learnt, moved, aged and flapped
//! while a scenario runs, in-process through [`SimSwitchHandle`] or from
//! outside through the admin API ([`admin`], `testbed switch --admin`).
//!
//! Many switches share one runtime: per switch there is one task for the
//! FDB, one per listener and the manager tasks, and the FDB keeps about 40
//! bytes per MAC ([`SwitchFleet`] starts them by the thousand).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use testbed::switch::{Mac, SimSwitch, SwitchSpec};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let spec = SwitchSpec::new("tor1")
//!     .ports(["p0", "p1"])
//!     .tunnel_ip("192.0.2.11".parse()?)
//!     .listen("ptcp:0:127.0.0.1".parse()?) // vtep-ctl --db=tcp:… works against it
//!     .macs(10)
//!     .mac_base("02:00:00:00:01:00".parse()?);
//! let sw = SimSwitch::start(spec).await?;
//! let listening = sw.listen_targets()[0].clone(); // the real port
//!
//! // Nothing is learnt until a manager binds a port; here we bind like one.
//! let ls = sw.bind_for_test("p0", 100, "ls-blue", 5001).await?;
//! let macs = sw.macs().await?;
//! assert_eq!(macs.len(), 10);
//! assert!(macs.iter().all(|m| m.logical_switch == Some(ls)));
//! assert_eq!(macs[0].mac, sw.population_mac(0).unwrap());
//!
//! // A scenario moves, learns and forgets hosts.
//! let mac: Mac = "02:aa:00:00:00:01".parse()?;
//! sw.learn(mac, "p0", 100).await?;
//! sw.bind_for_test("p1", 200, "ls-red", 5002).await?;
//! let moved = sw.move_mac(mac, "p1", 200).await?;
//! assert_ne!(moved.logical_switch, Some(ls));
//! sw.unlearn(mac).await?;
//! sw.set_aging(Some(Duration::from_secs(300))).await?;
//!
//! // The database is the switch's: read it, or watch its commits.
//! let rows = sw.db().read(|d| d.table("Ucast_Macs_Local").map_or(0, |t| t.len()));
//! assert_eq!(rows, 10);
//! sw.shutdown().await;
//! # let _ = listening;
//! # Ok(()) }
//! ```

pub mod admin;
mod driver;
pub mod fdb;
mod fleet;
mod mac;
pub mod spec;
pub mod vtep_db;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovsdb::server::{Db, ManagerConfig, ManagerHandle, Server, SessionOptions};
use ovsdb::transport::{Listener, Target, TransportError};
use ovsdb::vtep::Manager;
use ovsdb::Uuid;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn, Instrument};

pub use driver::{DriverStats, MAX_CHANGES_PER_TXN};
pub use fdb::{FdbError, FlapSpec, MacView, Placement, Population};
pub use fleet::{FleetStats, SwitchFleet};
pub use mac::{Mac, MacError};
pub use spec::{SwitchFile, SwitchSpec};

use driver::{Command, Driver};

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("switch {switch}: {reason}")]
    Spec { switch: String, reason: String },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Fdb(#[from] FdbError),
    #[error("{0} was forgotten before the command completed (moved away or deleted)")]
    Forgotten(Mac),
    #[error("transaction failed: {0}")]
    Transaction(String),
    #[error("switch {switch}: listening on {target}: {source}")]
    Listen {
        switch: String,
        target: String,
        #[source]
        source: TransportError,
    },
    #[error("switch {switch}: managers: {reason}")]
    Managers { switch: String, reason: String },
    #[error("switch {0} is stopped")]
    Stopped(String),
    #[error("no switch named {0}")]
    UnknownSwitch(String),
}

/// Starts simulated switches.
pub struct SimSwitch;

impl SimSwitch {
    /// Seeds the database, binds the listeners, starts following
    /// `Global.managers` and learning. Must run inside a tokio runtime.
    pub async fn start(spec: SwitchSpec) -> Result<SimSwitchHandle, SwitchError> {
        spec.validate()?;
        let server = Server::hardware_vtep();
        let db = server
            .db(ovsdb::vtep::DATABASE)
            .ok_or_else(|| SwitchError::Transaction("no hardware_vtep database".into()))?;
        let ps = vtep_db::seed(&db, &spec)?;
        let fdb = fdb::Fdb::new(&spec.ports, spec.population, spec.aging)?;
        let span = tracing::info_span!("switch", name = %spec.name);

        let mut listeners = Vec::new();
        let mut bound = Vec::new();
        for target in &spec.listen {
            let l = Listener::bind(target, spec.tls.as_ref())
                .await
                .map_err(|source| SwitchError::Listen {
                    switch: spec.name.clone(),
                    target: target.to_string(),
                    source,
                })?;
            bound.push(l.target().clone());
            let mut opts = SessionOptions::default();
            if let Some(p) = spec.listen_probe {
                opts.probe = p;
            }
            if matches!(target, Target::PUnix(_)) {
                opts.probe = Duration::ZERO;
            }
            let task = tokio::spawn(accept_loop(server.clone(), l, opts).instrument(span.clone()));
            listeners.push(task);
        }
        let mut config = ManagerConfig::hardware_vtep();
        if let Some(tls) = &spec.tls {
            config = config.with_tls(tls.clone());
        }
        let managers = {
            let _guard = span.enter();
            server
                .start_managers(config)
                .map_err(|e| SwitchError::Managers {
                    switch: spec.name.clone(),
                    reason: e.to_string(),
                })?
        };

        let name: Arc<str> = Arc::from(spec.name.as_str());
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = Driver {
            name: name.clone(),
            db: db.clone(),
            ps,
            tunnel_ip: spec.tunnel_ip.to_string(),
            fdb,
            sub: db.subscribe(),
            start: tokio::time::Instant::now(),
            retry_at: None,
            stats: DriverStats::default(),
        };
        let task = tokio::spawn(driver::run(driver, rx).instrument(span.clone()));
        span.in_scope(|| {
            info!(
                listen = ?bound.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                managers = ?spec.managers.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "switch started"
            )
        });
        Ok(SimSwitchHandle {
            inner: Arc::new(Inner {
                name,
                spec,
                server,
                db,
                ps,
                listen: bound,
                cmds: tx,
                tasks: Mutex::new(Some(Tasks {
                    driver: Some(task),
                    listeners,
                    _managers: managers,
                })),
            }),
        })
    }
}

/// Every connection accepted is its own session, owned by this task:
/// aborting it (switch shutdown) closes them all.
async fn accept_loop(server: Server, listener: Listener, opts: SessionOptions) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    let server = server.clone();
                    let opts = opts.clone();
                    sessions.spawn(async move {
                        let peer = a.peer.to_string();
                        match a.finish().await {
                            Ok(stream) => {
                                let end = server.serve(stream, opts, peer.clone()).await;
                                info!(%peer, reason = %end.reason, "session ended");
                            }
                            Err(e) => warn!(%peer, "handshake failed: {e}"),
                        }
                    }.in_current_span());
                }
                Err(e) => {
                    warn!(target = %listener.target(), "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

struct Tasks {
    driver: Option<JoinHandle<()>>,
    listeners: Vec<JoinHandle<()>>,
    /// Stops following `Global.managers` (and closes their sessions) when dropped.
    _managers: ManagerHandle,
}

impl Tasks {
    fn stop_io(&mut self) {
        for l in &self.listeners {
            l.abort();
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.stop_io();
    }
}

struct Inner {
    name: Arc<str>,
    spec: SwitchSpec,
    server: Server,
    db: Db,
    ps: Uuid,
    listen: Vec<Target>,
    cmds: mpsc::UnboundedSender<Command>,
    tasks: Mutex<Option<Tasks>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.cmds.send(Command::Shutdown);
    }
}

/// One `Manager` row as the switch reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ManagerState {
    pub target: String,
    pub is_connected: bool,
    /// `status:state` (ACTIVE, BACKOFF, CONNECTING…).
    pub state: Option<String>,
    pub last_error: Option<String>,
}

/// A running simulated switch; cheap to clone. The switch stops on
/// [`shutdown`](SimSwitchHandle::shutdown) or when the last clone is dropped.
#[derive(Clone)]
pub struct SimSwitchHandle {
    inner: Arc<Inner>,
}

impl SimSwitchHandle {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn spec(&self) -> &SwitchSpec {
        &self.inner.spec
    }

    /// The OVSDB server (its `_Server` and `hardware_vtep` databases).
    pub fn server(&self) -> &Server {
        &self.inner.server
    }

    /// The `hardware_vtep` database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The `Physical_Switch` row.
    pub fn physical_switch(&self) -> Uuid {
        self.inner.ps
    }

    /// The listeners' bound targets (real ports when 0 was asked for).
    pub fn listen_targets(&self) -> &[Target] {
        &self.inner.listen
    }

    /// The address of population host `i` (`--macs`).
    pub fn population_mac(&self, i: u32) -> Option<Mac> {
        self.inner.spec.population.mac(i)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SwitchError>>) -> Command,
    ) -> Result<T, SwitchError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || SwitchError::Stopped(self.inner.name.to_string());
        self.inner.cmds.send(make(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// A frame from `mac` arrived on (port, VLAN). Returns the host once
    /// its row is written (no row while the (port, VLAN) is unbound).
    pub async fn learn(&self, mac: Mac, port: &str, vlan: u16) -> Result<MacView, SwitchError> {
        let port = port.to_string();
        self.ask(|reply| Command::Learn {
            mac,
            port,
            vlan,
            must_exist: false,
            reply,
        })
        .await
    }

    /// Moves a known host to another (port, VLAN).
    pub async fn move_mac(&self, mac: Mac, port: &str, vlan: u16) -> Result<MacView, SwitchError> {
        let port = port.to_string();
        self.ask(|reply| Command::Learn {
            mac,
            port,
            vlan,
            must_exist: true,
            reply,
        })
        .await
    }

    /// Forgets a host now; its row is deleted.
    pub async fn unlearn(&self, mac: Mac) -> Result<(), SwitchError> {
        self.ask(|reply| Command::Unlearn { mac, reply }).await
    }

    /// Ages out one MAC, or every learnt MAC with `None`; returns how many.
    pub async fn age(&self, mac: Option<Mac>) -> Result<usize, SwitchError> {
        self.ask(|reply| Command::Age { mac, reply }).await
    }

    /// Sets the aging time (`None` or zero: never age).
    pub async fn set_aging(&self, aging: Option<Duration>) -> Result<(), SwitchError> {
        self.ask(|reply| Command::SetAging { aging, reply }).await
    }

    /// Starts moving a MAC back and forth (see [`FlapSpec`]).
    pub async fn flap(&self, spec: FlapSpec) -> Result<(), SwitchError> {
        self.ask(|reply| Command::Flap { spec, reply }).await
    }

    /// Every known host, by MAC.
    pub async fn macs(&self) -> Result<Vec<MacView>, SwitchError> {
        self.ask(|reply| Command::Macs { reply }).await
    }

    pub async fn stats(&self) -> Result<DriverStats, SwitchError> {
        self.ask(|reply| Command::Stats { reply }).await
    }

    /// Returns once the switch has reacted to every commit made so far
    /// (for example a manager's binding).
    pub async fn sync(&self) -> Result<(), SwitchError> {
        self.ask(|reply| Command::Sync { reply }).await
    }

    /// Binds (port, VLAN) to logical switch `ls_name` (created with
    /// `tunnel_key` = `vni` if missing) as a manager would, and returns its
    /// UUID once the switch has learnt on it.
    pub async fn bind_for_test(
        &self,
        port: &str,
        vlan: u16,
        ls_name: &str,
        vni: i64,
    ) -> Result<Uuid, SwitchError> {
        let ls = vtep_db::bind(
            &self.inner.db,
            self.inner.ps,
            port,
            vlan,
            ls_name,
            Some(vni),
        )?;
        self.sync().await?;
        Ok(ls)
    }

    /// Removes the binding of (port, VLAN) as a manager would.
    pub async fn unbind_for_test(&self, port: &str, vlan: u16) -> Result<(), SwitchError> {
        vtep_db::unbind(&self.inner.db, self.inner.ps, port, vlan)?;
        self.sync().await
    }

    /// The `Manager` rows and their connection state.
    pub fn managers(&self) -> Vec<ManagerState> {
        self.inner.db.read(|d| {
            let Some(t) = d.table(Manager::TABLE) else {
                return Vec::new();
            };
            let mut out: Vec<ManagerState> = t
                .iter()
                .filter_map(|(u, r)| Manager::from_row(&t.schema, *u, &r.row).ok())
                .map(|m| ManagerState {
                    state: m.status.get("state").cloned(),
                    last_error: m.status.get("last_error").cloned(),
                    target: m.target,
                    is_connected: m.is_connected,
                })
                .collect();
            out.sort_by(|a, b| a.target.cmp(&b.target));
            out
        })
    }

    /// Stops listening and dialling (closing every session) and stops
    /// learning. Other clones then get [`SwitchError::Stopped`].
    pub async fn shutdown(&self) {
        let tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut tasks) = tasks else { return };
        tasks.stop_io();
        let _ = self.inner.cmds.send(Command::Shutdown);
        let driver = tasks.driver.take();
        drop(tasks);
        if let Some(d) = driver {
            let _ = d.await;
        }
    }
}
