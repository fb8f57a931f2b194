//! The agent's logic as one deterministic state machine (in the manner of
//! quinn-proto): the async runtime feeds it `Input`s with the current time
//! and executes the `Output`s it returns. No sockets, no clock of its own,
//! so every HA and reconcile scenario is a unit test with a virtual clock.
//!
//! A switch is *active* on this agent when this agent holds the switch's
//! OVSDB session and has config for it. There is no election: the proxy
//! decides which agent gets the session.

use crate::hash::{HashMap, HashSet};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovsdb::client::{TransactOutcome, Transaction};
use ovsdb::value::seed::TableUpdates;
use ovsdb::DatabaseSchema;
use tf_xmpp::config::ConfigSection;
use tf_xmpp::enet::EnetEntry;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::ha::exports::{ExportChange, ExportTable};
use crate::ha::{HaInput, SwitchHa};
use crate::ifmap::{DeviceConfig, IfmapStore};
use crate::mac::Mac;
use crate::northbound::routes::{next_hop_addresses, RouteDelta, RouteKey, RouteStore};
use crate::reconcile::{vn_of_ls_name, PlanInput, PlanSettings, Planner, SwitchDb, Touched, TxnId};

pub type SessionId = u64;

/// How long a switch's exports may wait for its first transaction (see
/// `Core::exports_wait`).
const EXPORTS_WAIT: Duration = Duration::from_millis(200);

#[derive(Clone, Debug)]
pub struct CoreSettings {
    pub agent_name: String,
    pub tsn_ip: String,
    pub plan: PlanSettings,
    /// How long an HA-stale shadow outlives the last live path.
    pub ha_stale_interval: Duration,
    /// No config for this long after a push means the push has ended
    /// (there is no end-of-config marker on the wire, XMPP.md §3.4).
    pub end_of_config_quiet: Duration,
    /// How long routes of a control node that came back are kept stale
    /// when it sends no End-of-RIB.
    pub route_stale_timeout: Duration,
    pub control_nodes: usize,
    /// Only manage these switches (by Physical_Switch name), if set.
    pub switch_filter: Option<BTreeSet<String>>,
    /// Require the switch's certificate common name to equal its name.
    pub require_cert_name: bool,
}

impl Default for CoreSettings {
    fn default() -> Self {
        CoreSettings {
            agent_name: "tor-agent".into(),
            tsn_ip: String::new(),
            plan: PlanSettings::default(),
            ha_stale_interval: Duration::from_secs(300),
            end_of_config_quiet: Duration::from_secs(15),
            route_stale_timeout: Duration::from_secs(60),
            control_nodes: 1,
            switch_filter: None,
            require_cert_name: false,
        }
    }
}

#[derive(Debug)]
pub enum Input {
    /// A switch connected (or we connected to it).
    SessionOpened {
        id: SessionId,
        peer: String,
        cert_name: Option<String>,
    },
    /// The switch's schema; the session's monitor starts next.
    SessionSchema {
        id: SessionId,
        schema: Arc<DatabaseSchema>,
    },
    /// Decoded monitor updates, in order.
    SessionUpdates {
        id: SessionId,
        updates: TableUpdates,
    },
    /// The initial monitor reply has been applied.
    MonitorReady {
        id: SessionId,
    },
    TxnDone {
        id: SessionId,
        txn: TxnId,
        result: Result<TransactOutcome, String>,
    },
    SessionClosed {
        id: SessionId,
        reason: String,
    },
    /// A control node session is established.
    CnUp {
        cn: usize,
    },
    CnDown {
        cn: usize,
        reason: String,
    },
    ConfigPush {
        cn: usize,
        sections: Vec<ConfigSection>,
    },
    Routes {
        cn: usize,
        vrf: String,
        entries: Vec<EnetEntry>,
    },
    Withdrawals {
        cn: usize,
        vrf: String,
        keys: Vec<RouteKey>,
    },
    EndOfRib {
        cn: usize,
    },
    /// Time passes.
    Tick,
}

#[derive(Debug, Clone)]
pub enum Output {
    Transact {
        session: SessionId,
        id: TxnId,
        txn: Transaction,
    },
    CloseSession {
        session: SessionId,
        reason: String,
    },
    /// Subscribe to config on this control node (once per session).
    SubscribeConfig {
        cn: usize,
    },
    /// `cn: None` means every control node that is up.
    Subscribe {
        cn: Option<usize>,
        vrf: String,
        instance_id: u32,
    },
    Unsubscribe {
        cn: Option<usize>,
        vrf: String,
    },
    Publish {
        cn: Option<usize>,
        vrf: String,
        entry: EnetEntry,
    },
    Withdraw {
        cn: Option<usize>,
        vrf: String,
        entry: EnetEntry,
    },
    EndOfRib {
        cn: usize,
    },
}

/// One takeover of a switch by this agent.
#[derive(Clone, Debug)]
pub struct Takeover {
    pub peer: String,
    pub started: Instant,
    pub identified: Instant,
    pub converged: Option<Instant>,
    pub initial_rows: usize,
    /// Write transactions completed (and their summed round trips) before it converged.
    pub txns: u64,
    pub txn_latency: Duration,
}

impl Takeover {
    pub fn duration(&self) -> Option<Duration> {
        self.converged
            .map(|c| c.saturating_duration_since(self.started))
    }
}

struct Session {
    peer: String,
    cert_name: Option<String>,
    opened: Instant,
    db: Option<SwitchDb>,
    monitor_ready: bool,
    switch: Option<String>,
    planner: Planner,
    txn_started: HashMap<TxnId, Instant>,
}

/// Per configured switch.
pub struct SwitchState {
    pub ha: SwitchHa,
    pub session: Option<SessionId>,
    pub takeovers: u64,
    pub current: Option<Takeover>,
    pub last_takeover: Option<Takeover>,
    pub last_release: Option<(Instant, String)>,
}

struct CnState {
    up: bool,
    eor_sent: bool,
    since: Option<Instant>,
    stale_deadline: Option<Instant>,
    config_subscribed: bool,
}

/// Counters for metrics.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub sessions_opened: u64,
    pub sessions_closed: u64,
    pub takeovers: u64,
    pub takeover_durations: Vec<Duration>,
    pub txns_ok: u64,
    pub txns_failed: u64,
    pub txn_latency_total: Duration,
    pub routes_published: u64,
    pub routes_withdrawn: u64,
    pub config_pushes: u64,
    pub config_swept: u64,
}

pub struct Core {
    settings: CoreSettings,
    ifmap: IfmapStore,
    derived_generation: u64,
    devices: BTreeMap<String, DeviceConfig>,
    vrf_index: HashMap<String, Vec<(String, Uuid)>>,
    wanted_vrfs: BTreeMap<String, u32>,
    unsubscribe_pending: BTreeSet<String>,
    routes: RouteStore,
    switches: BTreeMap<String, SwitchState>,
    sessions: BTreeMap<SessionId, Session>,
    exports: ExportTable,
    cns: Vec<CnState>,
    config_cn: Option<usize>,
    last_config_at: Option<Instant>,
    config_sweep_pending: bool,
    config_complete: bool,
    /// A full config has been received at least once (re-syncs after a
    /// control node change do not make the agent unready: its config is
    /// stale-marked, not gone).
    config_ever_complete: bool,
    ha_dirty: BTreeSet<String>,
    outputs: Vec<Output>,
    pub counters: Counters,
}

impl Core {
    pub fn new(settings: CoreSettings) -> Core {
        let n = settings.control_nodes.max(1);
        Core {
            routes: RouteStore::new(n),
            cns: (0..n)
                .map(|_| CnState {
                    up: false,
                    eor_sent: false,
                    since: None,
                    stale_deadline: None,
                    config_subscribed: false,
                })
                .collect(),
            settings,
            ifmap: IfmapStore::default(),
            derived_generation: 0,
            devices: BTreeMap::new(),
            vrf_index: HashMap::default(),
            wanted_vrfs: BTreeMap::new(),
            unsubscribe_pending: BTreeSet::new(),
            switches: BTreeMap::new(),
            sessions: BTreeMap::new(),
            exports: ExportTable::default(),
            config_cn: None,
            last_config_at: None,
            config_sweep_pending: false,
            config_complete: false,
            config_ever_complete: false,
            ha_dirty: BTreeSet::new(),
            outputs: Vec::new(),
            counters: Counters::default(),
        }
    }

    pub fn settings(&self) -> &CoreSettings {
        &self.settings
    }

    // ------------------------------------------------------------------
    // inputs

    pub fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::SessionOpened {
                id,
                peer,
                cert_name,
            } => {
                self.counters.sessions_opened += 1;
                info!(session = id, %peer, cert = cert_name.as_deref().unwrap_or("-"), "switch session opened");
                self.sessions.insert(
                    id,
                    Session {
                        peer,
                        cert_name,
                        opened: now,
                        db: None,
                        monitor_ready: false,
                        switch: None,
                        planner: Planner::new(self.plan_settings()),
                        txn_started: HashMap::default(),
                    },
                );
            }
            Input::SessionSchema { id, schema } => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.db = Some(SwitchDb::new(schema));
                }
            }
            Input::SessionUpdates { id, updates } => self.session_updates(id, updates, now),
            Input::MonitorReady { id } => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.monitor_ready = true;
                }
                self.try_identify(id, now);
            }
            Input::TxnDone { id, txn, result } => self.txn_done(id, txn, result, now),
            Input::SessionClosed { id, reason } => self.session_closed(id, &reason, now),
            Input::CnUp { cn } => self.cn_up(cn, now),
            Input::CnDown { cn, reason } => self.cn_down(cn, &reason, now),
            Input::ConfigPush { cn, sections } => {
                if self.config_cn == Some(cn) {
                    self.ifmap.apply_push(&sections);
                    self.last_config_at = Some(now);
                    self.counters.config_pushes += 1;
                } else {
                    warn!(
                        cn,
                        "config from a control node not chosen for config ignored"
                    );
                }
            }
            Input::Routes { cn, vrf, entries } => {
                for e in entries {
                    if let Some(((vrf, key), delta)) = self.routes.update(cn, &vrf, e) {
                        self.route_changed(&vrf, &key, delta, now);
                    }
                }
            }
            Input::Withdrawals { cn, vrf, keys } => {
                for k in keys {
                    if let Some(((vrf, key), delta)) = self.routes.withdraw(cn, &vrf, &k) {
                        self.route_changed(&vrf, &key, delta, now);
                    }
                }
            }
            Input::EndOfRib { cn } => {
                if let Some(c) = self.cns.get_mut(cn) {
                    c.stale_deadline = None;
                }
                for (vrf, key) in self.routes.sweep_stale(cn) {
                    self.route_changed(&vrf, &key, RouteDelta::Replaced, now);
                }
            }
            Input::Tick => self.tick(now),
        }
    }

    fn plan_settings(&self) -> PlanSettings {
        PlanSettings {
            tsn_ip: self.settings.tsn_ip.clone(),
            ..self.settings.plan.clone()
        }
    }

    fn session_updates(&mut self, id: SessionId, updates: TableUpdates, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(db) = s.db.as_mut() else { return };
        let touched = match db.apply(updates) {
            Ok(t) => t,
            Err(e) => {
                self.outputs.push(Output::CloseSession {
                    session: id,
                    reason: format!("replica out of sync: {e}"),
                });
                return;
            }
        };
        match s.switch.clone() {
            Some(name) => self.process_touched(id, &name, touched, now),
            None => {
                if s.monitor_ready && touched.contains(&Touched::PhysicalSwitch) {
                    self.try_identify(id, now);
                }
            }
        }
    }

    fn process_touched(&mut self, id: SessionId, name: &str, touched: Vec<Touched>, now: Instant) {
        let Some(device) = self.devices.get(name) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(sw) = self.switches.get_mut(name) else {
            return;
        };
        let Some(db) = session.db.as_ref() else {
            return;
        };
        let mut all = false;
        let mut ha_keys: Vec<(Uuid, Mac)> = Vec::new();
        let vn_of = |ls: &Uuid| db.logical_switch(ls).and_then(|l| vn_of_ls_name(&l.name));
        for t in touched {
            match t {
                Touched::LogicalSwitch { uuid } => {
                    if let Some(vn) = vn_of(&uuid) {
                        session.planner.ls_changed(vn);
                    }
                    session.planner.mark_small();
                    all = true;
                }
                Touched::Port | Touched::McastRemote { .. } | Touched::McastLocal { .. } => {
                    session.planner.mark_small()
                }
                Touched::PhysicalSwitch => {
                    session.planner.mark_all();
                    all = true;
                }
                Touched::LocalMac { ls, mac, .. } => {
                    if let Some(vn) = vn_of(&ls) {
                        session.planner.mark_mac(vn, mac);
                        ha_keys.push((vn, mac));
                    }
                }
                Touched::RemoteMac { ls, mac } => {
                    if let Some(vn) = vn_of(&ls) {
                        session.planner.mark_mac_external(vn, mac);
                    }
                }
                Touched::Locator => {}
            }
        }
        if all {
            self.ha_dirty.insert(name.to_string());
            return;
        }
        let input = HaInput {
            device,
            db: Some(db),
            routes: &self.routes,
            vtep: switch_vtep(device, Some(db)),
            tsn_ip: &self.settings.tsn_ip,
        };
        for (vn, mac) in ha_keys {
            sw.ha.update_mac(
                &input,
                &mut self.exports,
                &vn,
                mac,
                self.settings.ha_stale_interval,
                now,
            );
        }
    }

    /// Binds an identified session to its switch (a takeover starts).
    fn try_identify(&mut self, id: SessionId, now: Instant) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        if s.switch.is_some() || !s.monitor_ready {
            return;
        }
        let Some(db) = s.db.as_ref() else { return };
        let mut names: Vec<String> = db
            .physical_switches()
            .into_iter()
            .map(|p| p.name)
            .filter(|n| self.devices.contains_key(n))
            .filter(|n| {
                self.settings
                    .switch_filter
                    .as_ref()
                    .is_none_or(|f| f.contains(n))
            })
            .collect();
        names.sort();
        if self.settings.require_cert_name {
            names.retain(|n| s.cert_name.as_deref() == Some(n.as_str()));
        }
        let Some(name) = names.into_iter().next() else {
            return;
        };
        let initial_rows = db.row_count();
        let peer = s.peer.clone();
        let opened = s.opened;
        // One session per switch: a newer one replaces an older one (the
        // switch reconnected before we noticed the old one was gone).
        if let Some(old) = self.switches.get(&name).and_then(|w| w.session) {
            if old != id {
                self.outputs.push(Output::CloseSession {
                    session: old,
                    reason: "superseded by a new session from the switch".into(),
                });
                self.unbind(old, "superseded", now);
            }
        }
        let sw = self
            .switches
            .entry(name.clone())
            .or_insert_with(|| SwitchState {
                ha: SwitchHa::new(&name),
                session: None,
                takeovers: 0,
                current: None,
                last_takeover: None,
                last_release: None,
            });
        sw.session = Some(id);
        sw.current = Some(Takeover {
            peer: peer.clone(),
            started: opened,
            identified: now,
            converged: None,
            initial_rows,
            txns: 0,
            txn_latency: Duration::ZERO,
        });
        let settings = self.plan_settings();
        if let Some(s) = self.sessions.get_mut(&id) {
            s.switch = Some(name.clone());
            s.planner = Planner::new(settings);
        }
        info!(switch = %name, session = id, %peer, rows = initial_rows, "switch session identified: taking over");
        self.ha_dirty.insert(name);
    }

    fn unbind(&mut self, id: SessionId, why: &str, now: Instant) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(name) = s.switch.take() else { return };
        if let Some(sw) = self.switches.get_mut(&name) {
            if sw.session == Some(id) {
                sw.session = None;
                sw.current = None;
                sw.last_release = Some((now, why.to_string()));
            }
        }
        self.ha_dirty.insert(name);
    }

    fn session_closed(&mut self, id: SessionId, reason: &str, now: Instant) {
        self.counters.sessions_closed += 1;
        if let Some(s) = self.sessions.get(&id) {
            info!(session = id, peer = %s.peer, switch = s.switch.as_deref().unwrap_or("-"), %reason, "switch session closed: retracting its routes");
        }
        self.unbind(id, reason, now);
        self.sessions.remove(&id);
    }

    fn txn_done(
        &mut self,
        id: SessionId,
        txn: TxnId,
        result: Result<TransactOutcome, String>,
        now: Instant,
    ) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Some(t) = s.txn_started.remove(&txn) {
            let rtt = now.saturating_duration_since(t);
            self.counters.txn_latency_total += rtt;
            let takeover = s
                .switch
                .as_ref()
                .and_then(|name| self.switches.get_mut(name))
                .and_then(|sw| sw.current.as_mut())
                .filter(|t| t.converged.is_none());
            if let Some(t) = takeover {
                t.txns += 1;
                t.txn_latency += rtt;
            }
        }
        let ok = match &result {
            Ok(out) if out.is_success() => true,
            Ok(out) => {
                let detail = out
                    .error()
                    .map(|(i, e)| {
                        format!(
                            "{e} (operation {})",
                            i.map_or("commit".to_string(), |i| i.to_string())
                        )
                    })
                    .unwrap_or_default();
                warn!(session = id, switch = s.switch.as_deref().unwrap_or("-"), txn, error = %detail, "transaction failed; its rows will be retried");
                false
            }
            Err(e) => {
                warn!(session = id, txn, error = %e, "transaction not completed");
                false
            }
        };
        if ok {
            self.counters.txns_ok += 1;
        } else {
            self.counters.txns_failed += 1;
        }
        s.planner.txn_done(txn, ok, now);
    }

    fn cn_up(&mut self, cn: usize, now: Instant) {
        let Some(c) = self.cns.get_mut(cn) else {
            return;
        };
        c.up = true;
        c.eor_sent = false;
        c.since = Some(now);
        c.config_subscribed = false;
        // Its routes from before stay stale until its End-of-RIB.
        if self.routes.has_stale(cn) {
            c.stale_deadline = Some(now + self.settings.route_stale_timeout);
        }
        info!(cn, "control node up: subscribing and publishing");
        if self.config_cn.is_none() {
            self.choose_config_cn(cn, now);
        }
        for (vrf, id) in &self.wanted_vrfs {
            self.outputs.push(Output::Subscribe {
                cn: Some(cn),
                vrf: vrf.clone(),
                instance_id: *id,
            });
        }
        for ch in self.exports.all_published() {
            if let ExportChange::Publish { vrf, entry } = ch {
                self.outputs.push(Output::Publish {
                    cn: Some(cn),
                    vrf,
                    entry,
                });
            }
        }
    }

    fn choose_config_cn(&mut self, cn: usize, now: Instant) {
        self.config_cn = Some(cn);
        if let Some(c) = self.cns.get_mut(cn) {
            c.config_subscribed = true;
        }
        self.outputs.push(Output::SubscribeConfig { cn });
        // Config from a previous session is stale until sent again.
        if self.ifmap.node_count() > 0 {
            self.ifmap.mark_all_stale();
            self.config_sweep_pending = true;
        }
        self.config_complete = false;
        self.last_config_at = Some(now);
    }

    fn cn_down(&mut self, cn: usize, reason: &str, now: Instant) {
        let Some(c) = self.cns.get_mut(cn) else {
            return;
        };
        if !c.up {
            return;
        }
        c.up = false;
        c.since = Some(now);
        c.stale_deadline = None;
        warn!(cn, %reason, "control node down: keeping its routes as stale");
        self.routes.mark_stale(cn);
        if self.config_cn == Some(cn) {
            self.config_cn = None;
            if let Some(other) = (0..self.cns.len()).find(|i| self.cns[*i].up) {
                self.choose_config_cn(other, now);
            }
        }
    }

    /// A route changed: re-plans the MAC on the switches of its VRF and
    /// recomputes their HA contribution, skipping the readers the change
    /// cannot affect (see [`RouteDelta`]).
    fn route_changed(&mut self, vrf: &str, key: &RouteKey, delta: RouteDelta, now: Instant) {
        if delta == RouteDelta::NONE {
            return;
        }
        let Some(users) = self.vrf_index.get(vrf) else {
            return;
        };
        for (name, vn) in users {
            let (Some(device), Some(sw)) = (self.devices.get(name), self.switches.get_mut(name))
            else {
                continue;
            };
            let session = sw.session.and_then(|id| self.sessions.get_mut(&id));
            let db = session.as_ref().and_then(|s| s.db.as_ref());
            let vtep = switch_vtep(device, db);
            let (replan, rehash) = match delta {
                RouteDelta::Replaced => (true, true),
                RouteDelta::Attributes {
                    sequence,
                    preference,
                } => {
                    // Next hops unchanged. The planner reads only the sequence,
                    // and only for a MAC the switch also has locally and that
                    // the route does not point at the switch itself. The HA
                    // logic of a local MAC reads the route only to fix the
                    // MAC's sequence the first time; otherwise it shadows
                    // routes through the switch and reads only their preference.
                    let via_switch = vtep.as_deref().is_some_and(|v| {
                        self.routes
                            .get(vrf, key)
                            .is_some_and(|r| next_hop_addresses(r).contains(&v))
                    });
                    let local = db.is_some_and(|db| {
                        db.ls_of_vn(vn)
                            .is_some_and(|ls| db.has_local(&ls, &key.mac))
                    });
                    let replan = sequence && local && !via_switch;
                    let rehash = if local {
                        sw.ha.local_seq(vn, &key.mac).is_none()
                    } else {
                        preference && via_switch
                    };
                    (replan, rehash)
                }
            };
            if rehash {
                let input = HaInput {
                    device,
                    db,
                    routes: &self.routes,
                    vtep,
                    tsn_ip: &self.settings.tsn_ip,
                };
                sw.ha.update_mac(
                    &input,
                    &mut self.exports,
                    vn,
                    key.mac,
                    self.settings.ha_stale_interval,
                    now,
                );
            }
            if replan && !key.mac.is_broadcast() {
                if let Some(s) = session {
                    s.planner.mark_mac(*vn, key.mac);
                }
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        // End of a config push: sweep what was not sent again.
        if let Some(last) = self.last_config_at {
            if now >= last + self.settings.end_of_config_quiet
                && self.config_cn.is_some()
                && !self.config_complete
            {
                self.config_complete = true;
                self.config_ever_complete = true;
                if self.config_sweep_pending {
                    self.config_sweep_pending = false;
                    let n = self.ifmap.sweep_stale();
                    self.counters.config_swept += n as u64;
                    if n > 0 {
                        info!(removed = n, "stale config swept after end of config");
                    }
                }
            }
        }
        // Control nodes that came back without End-of-RIB.
        for cn in 0..self.cns.len() {
            if self.cns[cn].stale_deadline.is_some_and(|d| now >= d) {
                self.cns[cn].stale_deadline = None;
                for (vrf, key) in self.routes.sweep_stale(cn) {
                    self.route_changed(&vrf, &key, RouteDelta::Replaced, now);
                }
            }
        }
        for s in self.sessions.values_mut() {
            s.planner.expire(now);
        }
        let interval = self.settings.ha_stale_interval;
        let names: Vec<String> = self.switches.keys().cloned().collect();
        for name in names {
            let expired = match self.switches.get(&name) {
                Some(sw) => sw.ha.expired(now, interval),
                None => continue,
            };
            for key in expired {
                let Some(device) = self.devices.get(&name) else {
                    continue;
                };
                let Some(vn) = device
                    .vns
                    .iter()
                    .find(|(_, c)| {
                        c.vrf.as_deref() == Some(key.vrf.as_str()) && c.vni == key.key.tag
                    })
                    .map(|(u, _)| *u)
                else {
                    continue;
                };
                let Some(sw) = self.switches.get_mut(&name) else {
                    continue;
                };
                let db = sw
                    .session
                    .and_then(|id| self.sessions.get(&id))
                    .and_then(|s| s.db.as_ref());
                let input = HaInput {
                    device,
                    db,
                    routes: &self.routes,
                    vtep: switch_vtep(device, db),
                    tsn_ip: &self.settings.tsn_ip,
                };
                sw.ha
                    .update_mac(&input, &mut self.exports, &vn, key.key.mac, interval, now);
            }
        }
    }

    // ------------------------------------------------------------------
    // deferred work

    /// The switch transactions that are due, ahead of the rest of `flush`:
    /// the switches work on them while we compute exports.
    pub fn flush_transactions(&mut self, now: Instant) -> Vec<Output> {
        if self.ifmap.generation() != self.derived_generation {
            self.derived_generation = self.ifmap.generation();
            self.rederive(now);
        }
        self.plan_all(now);
        std::mem::take(&mut self.outputs)
    }

    /// Does the work the inputs since the last call made necessary and
    /// returns what to send: `flush_transactions`, then `flush_exports`.
    /// Call after a batch of inputs.
    pub fn flush(&mut self, now: Instant) -> Vec<Output> {
        let mut out = self.flush_transactions(now);
        out.append(&mut self.flush_exports(now));
        out
    }

    /// The rest of the work after `flush_transactions`: HA recomputation,
    /// convergence, publishes and withdrawals, End-of-RIB, unsubscribes.
    pub fn flush_exports(&mut self, now: Instant) -> Vec<Output> {
        let dirty: Vec<String> = std::mem::take(&mut self.ha_dirty).into_iter().collect();
        for name in dirty {
            if self.exports_waiting(&name, now) {
                self.ha_dirty.insert(name);
                continue;
            }
            self.recompute_switch(&name, now);
        }
        self.check_convergence(now);
        let any_up = self.cns.iter().any(|c| c.up);
        for ch in self.exports.take_changes() {
            if !any_up {
                continue;
            }
            match ch {
                ExportChange::Publish { vrf, entry } => {
                    self.counters.routes_published += 1;
                    self.outputs.push(Output::Publish {
                        cn: None,
                        vrf,
                        entry,
                    });
                }
                ExportChange::Withdraw { vrf, entry } => {
                    self.counters.routes_withdrawn += 1;
                    self.outputs.push(Output::Withdraw {
                        cn: None,
                        vrf,
                        entry,
                    });
                }
            }
        }
        // End-of-RIB once per session, when config is complete and the
        // initial exports have gone out.
        if self.config_complete && self.exports.is_settled() {
            for (i, c) in self.cns.iter_mut().enumerate() {
                if c.up && !c.eor_sent {
                    c.eor_sent = true;
                    self.outputs.push(Output::EndOfRib { cn: i });
                }
            }
        }
        let pending: Vec<String> = self.unsubscribe_pending.iter().cloned().collect();
        for vrf in pending {
            if self.wanted_vrfs.contains_key(&vrf) {
                self.unsubscribe_pending.remove(&vrf);
            } else if self.exports.published_in(&vrf) == 0 {
                self.unsubscribe_pending.remove(&vrf);
                if any_up {
                    self.outputs.push(Output::Unsubscribe { cn: None, vrf });
                }
            }
        }
        std::mem::take(&mut self.outputs)
    }

    fn rederive(&mut self, now: Instant) {
        let mut new = self.ifmap.derive(&self.settings.agent_name);
        if let Some(f) = &self.settings.switch_filter {
            new.retain(|n, _| f.contains(n));
        }
        let old = std::mem::take(&mut self.devices);
        for (name, dev) in &new {
            if old.get(name) != Some(dev) {
                for (vn, vni) in &dev.vni_conflicts {
                    warn!(switch = %name, vn = %vn, vni, "VNI already used by another virtual network on this switch: not programmed");
                }
                self.ha_dirty.insert(name.clone());
                self.switches
                    .entry(name.clone())
                    .or_insert_with(|| SwitchState {
                        ha: SwitchHa::new(name),
                        session: None,
                        takeovers: 0,
                        current: None,
                        last_takeover: None,
                        last_release: None,
                    });
            }
        }
        // Switches that left our config: stop managing them (the session
        // stays open; the proxy may move it).
        for name in old.keys() {
            if !new.contains_key(name) {
                if let Some(id) = self.switches.get(name).and_then(|s| s.session) {
                    self.unbind(id, "config removed", now);
                }
                if let Some(sw) = self.switches.get_mut(name) {
                    sw.ha.clear(&mut self.exports);
                }
                self.switches.remove(name);
            }
        }
        self.devices = new;
        for (name, dev) in &self.devices {
            if old.get(name) != Some(dev) {
                if let Some(id) = self.switches.get(name).and_then(|s| s.session) {
                    if let Some(s) = self.sessions.get_mut(&id) {
                        s.planner.mark_all();
                    }
                }
            }
        }
        self.vrf_index.clear();
        for (name, dev) in &self.devices {
            for (vn, cfg) in &dev.vns {
                if let Some(vrf) = &cfg.vrf {
                    self.vrf_index
                        .entry(vrf.clone())
                        .or_default()
                        .push((name.clone(), *vn));
                }
            }
        }
        let wanted = IfmapStore::vrfs(&self.devices);
        let any_up = self.cns.iter().any(|c| c.up);
        for (vrf, id) in &wanted {
            if !self.wanted_vrfs.contains_key(vrf) && any_up {
                self.outputs.push(Output::Subscribe {
                    cn: None,
                    vrf: vrf.clone(),
                    instance_id: *id,
                });
            }
        }
        for vrf in self.wanted_vrfs.keys() {
            if !wanted.contains_key(vrf) {
                self.unsubscribe_pending.insert(vrf.clone());
            }
        }
        self.wanted_vrfs = wanted;
        // Sessions waiting for config may be identifiable now.
        let waiting: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.switch.is_none() && s.monitor_ready)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.try_identify(id, now);
        }
    }

    /// Southbound first: a switch just taken over whose first transaction
    /// creates the locators the rest of its MACs need gets that answer
    /// before the core spends its time on the switch's exports (a takeover
    /// of 10k MACs: ~100 ms of the core loop, which would hold back the bulk
    /// of the switch's writes). Bounded by `EXPORTS_WAIT`; the control node
    /// keeps the MACs meanwhile through the HA-stale shadows.
    fn exports_waiting(&self, name: &str, now: Instant) -> bool {
        self.exports_wait_until(name)
            .is_some_and(|until| now < until)
    }

    /// When the wait of `exports_waiting` ends, if the switch has one.
    fn exports_wait_until(&self, name: &str) -> Option<Instant> {
        let sw = self.switches.get(name)?;
        let takeover = sw.current.as_ref().filter(|t| t.converged.is_none())?;
        let session = self.sessions.get(&sw.session?)?;
        session
            .planner
            .creating_locators()
            .then_some(takeover.identified + EXPORTS_WAIT)
    }

    fn recompute_switch(&mut self, name: &str, now: Instant) {
        let Some(device) = self.devices.get(name) else {
            return;
        };
        let Some(sw) = self.switches.get_mut(name) else {
            return;
        };
        let db = sw
            .session
            .and_then(|id| self.sessions.get(&id))
            .and_then(|s| s.db.as_ref());
        let input = HaInput {
            device,
            db,
            routes: &self.routes,
            vtep: switch_vtep(device, db),
            tsn_ip: &self.settings.tsn_ip,
        };
        sw.ha.recompute_all(
            &input,
            &mut self.exports,
            self.settings.ha_stale_interval,
            now,
        );
    }

    fn plan_all(&mut self, now: Instant) {
        for (id, s) in self.sessions.iter_mut() {
            let Some(name) = s.switch.as_ref() else {
                continue;
            };
            let (Some(device), Some(sw), Some(db)) = (
                self.devices.get(name),
                self.switches.get(name),
                s.db.as_ref(),
            ) else {
                continue;
            };
            let Some(ps) = db.physical_switch(name) else {
                continue;
            };
            let mut own: HashSet<String> = ps.tunnel_ips.iter().cloned().collect();
            if let Some(v) = device.vtep_ip {
                own.insert(v.to_string());
            }
            let ha = &sw.ha;
            let local_seq = |vn: &Uuid, mac: &Mac| ha.local_seq(vn, mac);
            let input = PlanInput {
                db,
                device,
                physical_switch: &ps,
                routes: &self.routes,
                own_vteps: &own,
                local_seq: &local_seq,
            };
            for t in s.planner.plan(&input, now) {
                let m = &t.summary;
                debug!(
                    switch = %name,
                    inserts = m.inserts,
                    updates = m.updates,
                    deletes = m.deletes,
                    stale_deletes = m.stale_deletes,
                    small = m.small,
                    "transaction planned"
                );
                s.txn_started.insert(t.id, now);
                self.outputs.push(Output::Transact {
                    session: *id,
                    id: t.id,
                    txn: t.txn,
                });
            }
        }
    }

    fn check_convergence(&mut self, now: Instant) {
        let exported =
            self.exports.is_settled() && (self.cns.iter().any(|c| c.up) || self.cns.is_empty());
        for sw in self.switches.values_mut() {
            let Some(id) = sw.session else { continue };
            let Some(s) = self.sessions.get(&id) else {
                continue;
            };
            let Some(t) = sw.current.as_mut() else {
                continue;
            };
            let exports_pending = self.ha_dirty.contains(&sw.ha.name);
            if t.converged.is_some() || !s.planner.is_converged() || !exported || exports_pending {
                continue;
            }
            t.converged = Some(now);
            sw.takeovers += 1;
            self.counters.takeovers += 1;
            let d = now.saturating_duration_since(t.started);
            self.counters.takeover_durations.push(d);
            info!(
                switch = %sw.ha.name,
                duration_ms = d.as_millis() as u64,
                rows = t.initial_rows,
                identify_ms = t.identified.saturating_duration_since(t.started).as_millis() as u64,
                txns = t.txns,
                txn_avg_ms = t.txn_latency.as_millis() as u64 / t.txns.max(1),
                "takeover converged: switch programmed and local MACs exported"
            );
            sw.last_takeover = Some(t.clone());
        }
    }

    /// When `Tick` should next come (timers of grace, shadows, config).
    pub fn next_wake(&self) -> Option<Instant> {
        let mut w: Option<Instant> = None;
        let mut put = |t: Option<Instant>| {
            if let Some(t) = t {
                w = Some(w.map_or(t, |x| x.min(t)));
            }
        };
        for s in self.sessions.values() {
            put(s.planner.wake_at());
        }
        for sw in self.switches.values() {
            put(sw.ha.wake_at());
        }
        for name in &self.ha_dirty {
            put(self.exports_wait_until(name));
        }
        if !self.config_complete {
            put(self
                .last_config_at
                .map(|t| t + self.settings.end_of_config_quiet));
        }
        for c in &self.cns {
            put(c.stale_deadline);
        }
        w
    }

    // ------------------------------------------------------------------
    // observation

    /// `ready` when a control node is up and a full config has arrived;
    /// `drain` otherwise (the proxy then sends this agent no new switches).
    pub fn readiness(&self) -> &'static str {
        if self.cns.iter().any(|c| c.up) && self.config_ever_complete {
            "ready"
        } else {
            "drain"
        }
    }

    pub fn devices(&self) -> &BTreeMap<String, DeviceConfig> {
        &self.devices
    }

    pub fn routes(&self) -> &RouteStore {
        &self.routes
    }

    pub fn exports(&self) -> &ExportTable {
        &self.exports
    }

    pub fn switch(&self, name: &str) -> Option<&SwitchState> {
        self.switches.get(name)
    }

    pub fn is_active(&self, name: &str) -> bool {
        self.switches.get(name).is_some_and(|s| s.session.is_some())
    }

    pub fn config_complete(&self) -> bool {
        self.config_complete
    }

    pub fn is_cn_up(&self, cn: usize) -> bool {
        self.cns.get(cn).is_some_and(|c| c.up)
    }

    pub fn config_cn(&self) -> Option<usize> {
        self.config_cn
    }

    /// A status snapshot for the admin API and `status`.
    pub fn status(&self, now: Instant) -> crate::admin::status::AgentStatus {
        use crate::admin::status::{AgentStatus, CnStatus, SessionStatus, SwitchStatus};
        let mut switches = Vec::new();
        for (name, sw) in &self.switches {
            let session = sw
                .session
                .and_then(|id| self.sessions.get(&id).map(|s| (id, s)));
            let (local, remote) = session
                .and_then(|(_, s)| s.db.as_ref())
                .map(|db| (db.local_count(), db.remote_count()))
                .unwrap_or((0, 0));
            let state = match (session, &sw.current) {
                (None, _) => "standby",
                (Some(_), Some(t)) if t.converged.is_none() => "auditing",
                (Some(_), _) => "active",
            };
            switches.push(SwitchStatus {
                name: name.clone(),
                state: state.to_string(),
                active: session.is_some(),
                peer: session.map(|(_, s)| s.peer.clone()),
                session_age_s: session
                    .map(|(_, s)| now.saturating_duration_since(s.opened).as_secs_f64()),
                macs_local: local,
                macs_remote: remote,
                routes_exported: sw.ha.contributed(),
                routes_live: sw.ha.live_routes(),
                txn_in_flight: session.map(|(_, s)| s.planner.in_flight()).unwrap_or(0),
                stale_rows_waiting: session.map(|(_, s)| s.planner.stale_waiting()).unwrap_or(0),
                missing_ports: session
                    .map(|(_, s)| s.planner.missing_ports.clone())
                    .unwrap_or_default(),
                takeovers: sw.takeovers,
                last_takeover_ms: sw
                    .last_takeover
                    .as_ref()
                    .and_then(|t| t.duration())
                    .map(|d| d.as_millis() as u64),
                last_takeover_ago_s: sw
                    .last_takeover
                    .as_ref()
                    .and_then(|t| t.converged)
                    .map(|c| now.saturating_duration_since(c).as_secs_f64()),
                last_release: sw.last_release.as_ref().map(|(t, why)| {
                    format!(
                        "{:.0}s ago: {why}",
                        now.saturating_duration_since(*t).as_secs_f64()
                    )
                }),
            });
        }
        let sessions = self
            .sessions
            .iter()
            .map(|(id, s)| SessionStatus {
                id: *id,
                peer: s.peer.clone(),
                switch: s.switch.clone(),
                cert_name: s.cert_name.clone(),
                age_s: now.saturating_duration_since(s.opened).as_secs_f64(),
                rows: s.db.as_ref().map(|d| d.row_count()).unwrap_or(0),
                monitor_ready: s.monitor_ready,
            })
            .collect();
        let control_nodes = self
            .cns
            .iter()
            .enumerate()
            .map(|(i, c)| CnStatus {
                index: i,
                up: c.up,
                for_config: self.config_cn == Some(i),
                since_s: c
                    .since
                    .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            })
            .collect();
        AgentStatus {
            agent: self.settings.agent_name.clone(),
            readiness: self.readiness().to_string(),
            config_complete: self.config_complete,
            devices: self.devices.len(),
            vrfs: self.wanted_vrfs.len(),
            routes_received: self.routes.len(),
            routes_published: self.exports.published_count(),
            switches,
            sessions,
            control_nodes,
            core_busy_ms: Default::default(),
        }
    }
}

/// The switch's VTEP IP: what the switch says when we hold it, else config.
fn switch_vtep(device: &DeviceConfig, db: Option<&SwitchDb>) -> Option<String> {
    db.and_then(|db| db.tunnel_ip(&device.name))
        .map(str::to_string)
        .or_else(|| device.vtep_ip.map(|v| v.to_string()))
}

#[cfg(test)]
mod tests;
