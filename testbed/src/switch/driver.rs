//! The async side of one switch: a single task that owns the FDB, follows
//! the database's commits (the manager's bindings and remote MACs, and
//! deletions of the switch's rows), runs the aging and flap timers, serves
//! commands from handles, and writes what the FDB implies. No thread of its
//! own: a thousand switches are a thousand tasks on the shared runtime.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ovsdb::server::{Db, Subscription};
use ovsdb::Uuid;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::fdb::{Fdb, FdbStats, FlapSpec, MacView, Plan};
use super::mac::Mac;
use super::vtep_db::{self, CommitEvents};
use super::SwitchError;

/// Rows per transaction: a big population is learnt in several commits,
/// as a switch's agent writes in batches, so no single update is huge and
/// no switch holds a worker thread for long.
pub const MAX_CHANGES_PER_TXN: usize = 500;

/// Transactions of all switches in the process that may run at once.
///
/// A thousand switches learning a thousand MACs each is tens of seconds of
/// CPU. If every switch's task were runnable at once, a session's task
/// (answering an echo, sending an update) would wait behind all of them
/// and its peer's inactivity probe would fire. With at most this many
/// writers runnable, sessions get the cores every few milliseconds and the
/// burst takes as long as it must.
fn write_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Semaphore::new(cores.max(1))
    })
}
/// Plans tried in a row before waiting for `RETRY_AFTER` (a transaction
/// can fail when the manager changes rows it refers to at the same time).
const MAX_ATTEMPTS: usize = 4;
const RETRY_AFTER: Duration = Duration::from_secs(1);

type Reply<T> = oneshot::Sender<Result<T, SwitchError>>;

pub(crate) enum Command {
    Learn {
        mac: Mac,
        port: String,
        vlan: u16,
        /// `move`: the MAC must be known already.
        must_exist: bool,
        reply: Reply<MacView>,
    },
    Unlearn {
        mac: Mac,
        reply: Reply<()>,
    },
    /// Age out one MAC or (None) every learnt one.
    Age {
        mac: Option<Mac>,
        reply: Reply<usize>,
    },
    SetAging {
        aging: Option<Duration>,
        reply: Reply<()>,
    },
    Flap {
        spec: FlapSpec,
        reply: Reply<()>,
    },
    Macs {
        reply: Reply<Vec<MacView>>,
    },
    Stats {
        reply: Reply<DriverStats>,
    },
    /// Answers once every commit so far is absorbed and written back.
    Sync {
        reply: Reply<()>,
    },
    Shutdown,
}

/// Counters of one switch's driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DriverStats {
    pub fdb: FdbStats,
    /// Transactions the switch committed.
    pub transactions: u64,
    pub failed_transactions: u64,
    /// Local MACs withdrawn because the manager wrote them as remote.
    pub moved_away: u64,
    /// Local rows of ours that someone else deleted.
    pub flushed: u64,
    /// MAC columns written by peers that are not MACs (ignored).
    pub bad_macs: u64,
}

pub(crate) struct Driver {
    pub name: Arc<str>,
    pub db: Db,
    pub ps: Uuid,
    pub tunnel_ip: String,
    pub fdb: Fdb,
    pub sub: Subscription,
    pub start: Instant,
    pub retry_at: Option<Instant>,
    pub stats: DriverStats,
}

impl Driver {
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }

    fn refresh_ports(&mut self) {
        let views = self.db.read(|d| vtep_db::read_ports(d, self.ps));
        self.fdb.set_ports(&views);
        let s = self.fdb.stats();
        debug!(
            logical_switches = s.bound_logical_switches,
            port_vlans = s.bound_port_vlans,
            "bindings changed"
        );
    }

    /// Takes in every queued commit.
    fn absorb(&mut self, mut ev: CommitEvents) {
        while let Some(c) = self.sub.try_recv() {
            ev.scan(&c);
        }
        self.stats.bad_macs += ev.bad_macs as u64;
        if ev.is_empty() {
            return;
        }
        if ev.ports_changed {
            self.refresh_ports();
        }
        for (mac, row) in ev.local_deleted {
            if self.fdb.local_row_deleted(mac, row) {
                self.stats.flushed += 1;
                info!(%mac, "local MAC row deleted by someone else: forgotten");
            }
        }
        for (ls, row) in ev.mcast_deleted {
            if self.fdb.mcast_row_deleted(ls, row) {
                info!(logical_switch = %ls, "unknown-dst row deleted by someone else");
            }
        }
        for (ls, mac) in ev.remote_written {
            if self.fdb.remote_written(ls, mac) {
                self.stats.moved_away += 1;
                info!(%mac, logical_switch = %ls, "MAC now remote: local row withdrawn");
            }
        }
    }

    /// Writes what the FDB implies, retrying a failed plan with fresh data.
    async fn reconcile(&mut self) {
        for _ in 0..MAX_ATTEMPTS {
            self.absorb(CommitEvents::default());
            if !self.fdb.has_work() {
                self.retry_at = None;
                return;
            }
            let plan = self.fdb.plan();
            if plan.is_empty() {
                self.retry_at = None;
                return;
            }
            if let Err(e) = self.execute(plan).await {
                self.stats.failed_transactions += 1;
                warn!("transaction failed, planning again: {e}");
                self.fdb.failed();
            }
        }
        if self.fdb.has_work() {
            self.retry_at = Some(Instant::now() + RETRY_AFTER);
        }
    }

    async fn execute(&mut self, plan: Plan) -> Result<(), SwitchError> {
        for part in plan.split(MAX_CHANGES_PER_TXN) {
            {
                // The semaphore is never closed; a failure would only mean
                // writing without a slot.
                let _slot = write_slots().acquire().await.ok();
                self.execute_part(part)?;
            }
            // Let sessions (and other switches) run between big commits: a
            // thousand switches learning at once must not starve the
            // sessions' probes and updates. The transaction's JSON is freed
            // by now, so a thousand yielded switches hold none of it.
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    fn execute_part(&mut self, part: Plan) -> Result<(), SwitchError> {
        let locator = self.db.read(|d| vtep_db::find_locator(d, &self.tunnel_ip));
        let (ucast, mcast) = vtep_db::plan_txn(&part, locator, &self.tunnel_ip).run(&self.db)?;
        self.stats.transactions += 1;
        debug!(
            cleared = part.clear.len(),
            deleted = part.delete.len(),
            inserted = ucast.len(),
            unknown_dst = mcast.len(),
            "local rows written"
        );
        self.fdb.applied(&part, &ucast, &mcast, self.now());
        Ok(())
    }

    /// Runs a command; the reply goes out after the database is written.
    /// Returns false to stop.
    async fn handle(&mut self, cmd: Command) -> bool {
        self.absorb(CommitEvents::default());
        let now = self.now();
        match cmd {
            Command::Learn {
                mac,
                port,
                vlan,
                must_exist,
                reply,
            } => {
                let r = if must_exist {
                    self.fdb.move_to(mac, &port, vlan, now)
                } else {
                    self.fdb.learn(mac, &port, vlan, now)
                };
                self.reconcile().await;
                let r = r
                    .map_err(SwitchError::from)
                    .and_then(|()| self.fdb.mac(mac).ok_or(SwitchError::Forgotten(mac)));
                let _ = reply.send(r);
            }
            Command::Unlearn { mac, reply } => {
                let r = self.fdb.unlearn(mac).map_err(SwitchError::from);
                self.reconcile().await;
                let _ = reply.send(r);
            }
            Command::Age { mac, reply } => {
                let r = match mac {
                    Some(m) => self.fdb.unlearn(m).map(|()| 1).map_err(SwitchError::from),
                    None => Ok(self.fdb.age_all()),
                };
                self.reconcile().await;
                let _ = reply.send(r);
            }
            Command::SetAging { aging, reply } => {
                self.fdb.set_aging(aging);
                self.fdb.tick(now);
                self.reconcile().await;
                let _ = reply.send(Ok(()));
            }
            Command::Flap { spec, reply } => {
                let r = self.fdb.flap(&spec, now).map_err(SwitchError::from);
                self.reconcile().await;
                let _ = reply.send(r);
            }
            Command::Macs { reply } => {
                self.reconcile().await;
                let _ = reply.send(Ok(self.fdb.macs()));
            }
            Command::Stats { reply } => {
                let mut s = self.stats;
                s.fdb = self.fdb.stats();
                let _ = reply.send(Ok(s));
            }
            Command::Sync { reply } => {
                self.reconcile().await;
                let _ = reply.send(Ok(()));
            }
            Command::Shutdown => return false,
        }
        true
    }
}

/// The switch's task; ends on `Shutdown`, when every handle is gone, or
/// when the database is.
pub(crate) async fn run(mut d: Driver, mut cmds: mpsc::UnboundedReceiver<Command>) {
    d.refresh_ports();
    d.reconcile().await;
    loop {
        let wake = match (d.fdb.next_wakeup().map(|t| d.start + t), d.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            commit = d.sub.recv() => {
                let Some(c) = commit else { break };
                let mut ev = CommitEvents::default();
                ev.scan(&c);
                d.absorb(ev);
            }
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { break };
                if !d.handle(cmd).await {
                    break;
                }
            }
            _ = async {
                match wake {
                    Some(w) => tokio::time::sleep_until(w).await,
                    None => std::future::pending().await,
                }
            } => {
                d.retry_at = None;
                let t = d.fdb.tick(d.now());
                if t.aged > 0 {
                    info!(aged = t.aged, "MACs aged out");
                }
            }
        }
        d.reconcile().await;
    }
    info!(name = %d.name, "switch stopped");
}
