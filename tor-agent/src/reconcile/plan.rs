//! The reconcile engine: desired state (config + routes) against one
//! switch's database, as batches of transactions. Pure logic, time passed in.
//!
//! Small objects (logical switches, port VLAN bindings, the `unknown-dst`
//! multicast row) are reconciled together in one transaction, first. Remote
//! MACs are reconciled per (virtual network, MAC) key, driven by a dirty set,
//! in batches, with a cap on transactions in flight. Rows found on the switch
//! that nothing asks for are stale: they stay for a grace interval (the
//! config or routes may still be arriving), then go in batches. Rows this
//! session programmed and that are no longer wanted go at once. A
//! `Physical_Locator` is only ever created in the transaction that first
//! references it, and never twice concurrently (the index would reject it).

use crate::hash::{HashMap, HashSet};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ovsdb::client::{Condition, Transaction};
use ovsdb::vtep::{PhysicalSwitch, DATABASE, UNKNOWN_DST, VXLAN_OVER_IPV4};
use ovsdb::{Atom, Datum, Uuid};

use super::switch_db::SwitchDb;
use crate::ifmap::DeviceConfig;
use crate::mac::Mac;
use crate::northbound::routes::{next_hop_addresses, RouteStore};

/// Logical_Switch names are the VN uuid with this prefix: switches such as
/// QFX reject names that are all digits.
pub const LS_PREFIX: &str = "Contrail-";

pub fn ls_name(vn: &Uuid) -> String {
    format!("{LS_PREFIX}{vn}")
}

/// The VN uuid a Logical_Switch name stands for.
pub fn vn_of_ls_name(name: &str) -> Option<Uuid> {
    name.strip_prefix(LS_PREFIX).and_then(|u| u.parse().ok())
}

#[derive(Clone, Debug)]
pub struct PlanSettings {
    /// The service node IP: the `unknown-dst` locator.
    pub tsn_ip: String,
    /// Rows written per transaction.
    pub batch_rows: usize,
    /// Transactions in flight per switch.
    pub max_in_flight: usize,
    /// How long rows found on the switch but wanted by nothing are kept.
    pub stale_grace: Duration,
    /// How long a logical switch to delete waits for the switch to remove
    /// its own rows pointing at it, before the agent removes them.
    pub ls_local_wait: Duration,
    /// Pause after a failed transaction before retrying its keys.
    pub retry_delay: Duration,
}

impl Default for PlanSettings {
    fn default() -> Self {
        PlanSettings {
            tsn_ip: String::new(),
            batch_rows: 500,
            max_in_flight: 8,
            stale_grace: Duration::from_secs(60),
            ls_local_wait: Duration::from_secs(900),
            retry_delay: Duration::from_secs(1),
        }
    }
}

pub type TxnId = u64;

/// What a planned transaction does, for logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnSummary {
    pub inserts: usize,
    pub updates: usize,
    pub deletes: usize,
    pub stale_deletes: usize,
    pub small: bool,
}

#[derive(Clone, Debug)]
pub struct PlannedTxn {
    pub id: TxnId,
    pub txn: Transaction,
    pub summary: TxnSummary,
}

type Key = (Uuid, Mac);

/// What the planner reads: the switch, its config, the routes.
pub struct PlanInput<'a> {
    pub db: &'a SwitchDb,
    pub device: &'a DeviceConfig,
    pub physical_switch: &'a PhysicalSwitch,
    pub routes: &'a RouteStore,
    /// The switch's own tunnel IPs: routes pointing there are its own MACs.
    pub own_vteps: &'a HashSet<String>,
    /// The sequence number this agent exports a local MAC with, if it does.
    pub local_seq: &'a dyn Fn(&Uuid, &Mac) -> Option<u32>,
}

#[derive(Default)]
struct InFlight {
    keys: Vec<Key>,
    small: bool,
    locators: Vec<String>,
}

/// The reconcile state of one switch session.
pub struct Planner {
    settings: PlanSettings,
    next_id: TxnId,
    small_dirty: bool,
    small_pending: bool,
    dirty: HashSet<Key>,
    full_pass: bool,
    in_flight: HashMap<TxnId, InFlight>,
    pending_keys: HashSet<Key>,
    creating_locators: HashMap<String, TxnId>,
    blocked_on_txn: HashMap<TxnId, Vec<Key>>,
    blocked_on_ls: HashMap<Uuid, Vec<Key>>,
    /// Keys this session has wanted: if they stop being wanted, their rows go at once.
    programmed: HashSet<Key>,
    /// Logical switch names and bindings this session has wanted.
    programmed_ls: HashSet<String>,
    programmed_bindings: HashSet<(String, u16)>,
    /// First time a row was seen unwanted.
    stale_rows: HashMap<Uuid, Instant>,
    /// The key of each stale remote-MAC row, to revisit it when due.
    stale_keys: HashMap<Uuid, Key>,
    stale_bindings: HashMap<(String, u16), Instant>,
    /// Logical switches waiting for the switch to drop its own references.
    ls_waiting_since: HashMap<Uuid, Instant>,
    retry_at: Option<Instant>,
    wake_at: Option<Instant>,
    pub failures: u64,
    pub txns_sent: u64,
    pub rows_written: u64,
    /// Config names ports the switch does not have.
    pub missing_ports: Vec<String>,
}

impl Planner {
    pub fn new(settings: PlanSettings) -> Planner {
        Planner {
            settings,
            next_id: 1,
            small_dirty: true,
            small_pending: false,
            dirty: HashSet::default(),
            full_pass: true,
            in_flight: HashMap::default(),
            pending_keys: HashSet::default(),
            creating_locators: HashMap::default(),
            blocked_on_txn: HashMap::default(),
            blocked_on_ls: HashMap::default(),
            programmed: HashSet::default(),
            programmed_ls: HashSet::default(),
            programmed_bindings: HashSet::default(),
            stale_rows: HashMap::default(),
            stale_keys: HashMap::default(),
            stale_bindings: HashMap::default(),
            ls_waiting_since: HashMap::default(),
            retry_at: None,
            wake_at: None,
            failures: 0,
            txns_sent: 0,
            rows_written: 0,
            missing_ports: Vec::new(),
        }
    }

    pub fn settings(&self) -> &PlanSettings {
        &self.settings
    }

    /// Everything may have changed (config, VTEP IP): check it all.
    pub fn mark_all(&mut self) {
        self.small_dirty = true;
        self.full_pass = true;
    }

    /// Logical switches, bindings or the multicast row may need work.
    pub fn mark_small(&mut self) {
        self.small_dirty = true;
    }

    pub fn mark_mac(&mut self, vn: Uuid, mac: Mac) {
        self.dirty.insert((vn, mac));
    }

    /// A remote-MAC row changed: recheck it, unless the change is our own
    /// transaction in flight (its updates arrive before its reply).
    pub fn mark_mac_external(&mut self, vn: Uuid, mac: Mac) {
        if !self.pending_keys.contains(&(vn, mac)) {
            self.dirty.insert((vn, mac));
        }
    }

    /// A logical switch appeared or changed: keys waiting for it can go.
    pub fn ls_changed(&mut self, vn: Uuid) {
        self.small_dirty = true;
        if let Some(keys) = self.blocked_on_ls.remove(&vn) {
            self.dirty.extend(keys);
        }
    }

    /// Whether `plan` could do anything now: something is marked and a
    /// transaction slot is free (or a retry or grace timer is due).
    pub fn has_work(&self, now: Instant) -> bool {
        if self.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        let marked = self.small_dirty || self.full_pass || !self.dirty.is_empty();
        (marked && self.in_flight.len() < self.settings.max_in_flight) || self.retry_at.is_some()
    }

    /// Nothing left to write (stale rows may still be waiting for their grace).
    pub fn is_converged(&self) -> bool {
        !self.small_dirty
            && !self.small_pending
            && !self.full_pass
            && self.dirty.is_empty()
            && self.in_flight.is_empty()
            && self.blocked_on_txn.is_empty()
            && self.blocked_on_ls.is_empty()
    }

    /// A transaction creating locators is in flight (MACs toward new VTEPs
    /// wait for it).
    pub fn creating_locators(&self) -> bool {
        !self.creating_locators.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn stale_waiting(&self) -> usize {
        self.stale_rows.len() + self.stale_bindings.len()
    }

    /// When `plan` should run again even if nothing happens (a grace
    /// interval ends, a retry is due).
    pub fn wake_at(&self) -> Option<Instant> {
        match (self.wake_at, self.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A transaction ended. On failure its keys are retried after a pause.
    pub fn txn_done(&mut self, id: TxnId, ok: bool, now: Instant) {
        let Some(f) = self.in_flight.remove(&id) else {
            return;
        };
        for k in &f.keys {
            self.pending_keys.remove(k);
        }
        for ip in &f.locators {
            if self.creating_locators.get(ip) == Some(&id) {
                self.creating_locators.remove(ip);
            }
        }
        if f.small {
            self.small_pending = false;
        }
        if let Some(keys) = self.blocked_on_txn.remove(&id) {
            self.dirty.extend(keys);
        }
        if !ok {
            self.failures += 1;
            self.dirty.extend(f.keys);
            if f.small {
                self.small_dirty = true;
            }
            self.retry_at = Some(now + self.settings.retry_delay);
        }
    }

    fn take_id(&mut self) -> TxnId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Plans the next transactions, within the in-flight cap.
    pub fn plan(&mut self, input: &PlanInput<'_>, now: Instant) -> Vec<PlannedTxn> {
        if self.retry_at.is_some_and(|t| now < t) {
            return Vec::new();
        }
        self.retry_at = None;
        self.wake_at = None;
        let mut out = Vec::new();
        if self.small_dirty
            && !self.small_pending
            && self.in_flight.len() < self.settings.max_in_flight
        {
            self.small_dirty = false;
            if let Some(t) = self.plan_small(input, now) {
                out.push(t);
            }
        }
        if self.full_pass {
            self.full_pass = false;
            self.collect_all_keys(input);
        }
        while self.in_flight.len() < self.settings.max_in_flight && !self.dirty.is_empty() {
            match self.plan_macs(input, now) {
                Some(t) => out.push(t),
                None => break,
            }
        }
        out
    }

    fn collect_all_keys(&mut self, input: &PlanInput<'_>) {
        for (vn, cfg) in &input.device.vns {
            if let Some(vrf) = &cfg.vrf {
                for key in input.routes.keys(vrf) {
                    if !key.mac.is_broadcast() {
                        self.dirty.insert((*vn, key.mac));
                    }
                }
            }
        }
        let names: HashMap<Uuid, Uuid> = input
            .db
            .logical_switches()
            .into_iter()
            .filter_map(|ls| Some((ls.uuid, vn_of_ls_name(&ls.name)?)))
            .collect();
        for row in input.db.all_remote_rows() {
            if let Some(vn) = names.get(&row.ls) {
                if input.device.vns.contains_key(vn) {
                    self.dirty.insert((*vn, row.mac));
                }
            }
        }
        // A local MAC may hide a remote one (MAC move): check those too.
        for row in input.db.all_local_rows() {
            if let Some(vn) = names.get(&row.ls) {
                if input.device.vns.contains_key(vn) {
                    self.dirty.insert((*vn, row.mac));
                }
            }
        }
    }

    fn note_wake(&mut self, at: Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    /// Whether a stale row's grace has run out; notes when it will.
    fn stale_expired(&mut self, row: Uuid, now: Instant) -> bool {
        let since = *self.stale_rows.entry(row).or_insert(now);
        let due = since + self.settings.stale_grace;
        if now >= due {
            true
        } else {
            self.note_wake(due);
            false
        }
    }

    /// The locator toward `ip` for a transaction: an existing one, one this
    /// transaction already creates, or a new one. `None` when another
    /// transaction in flight is creating it (wait for that).
    fn locator(
        &mut self,
        input: &PlanInput<'_>,
        ip: &str,
        txn: &mut Transaction,
        created: &mut BTreeMap<String, Atom>,
        summary: &mut TxnSummary,
    ) -> Result<Atom, TxnId> {
        if let Some(u) = input.db.locator_for(ip) {
            return Ok(Atom::Uuid(u));
        }
        if let Some(a) = created.get(ip) {
            return Ok(a.clone());
        }
        if let Some(other) = self.creating_locators.get(ip) {
            return Err(*other);
        }
        let (_, atom) = txn.insert(
            "Physical_Locator",
            vec![
                ("encapsulation_type".into(), Datum::scalar(VXLAN_OVER_IPV4)),
                ("dst_ip".into(), Datum::scalar(ip)),
            ],
        );
        summary.inserts += 1;
        created.insert(ip.to_string(), atom.clone());
        Ok(atom)
    }

    fn register(
        &mut self,
        txn: Transaction,
        summary: TxnSummary,
        keys: Vec<Key>,
        small: bool,
        created: BTreeMap<String, Atom>,
    ) -> Option<PlannedTxn> {
        if txn.is_empty() {
            return None;
        }
        let id = self.take_id();
        for ip in created.keys() {
            self.creating_locators.insert(ip.clone(), id);
        }
        for k in &keys {
            self.pending_keys.insert(*k);
        }
        if small {
            self.small_pending = true;
        }
        self.txns_sent += 1;
        self.rows_written += (summary.inserts + summary.updates + summary.deletes) as u64;
        self.in_flight.insert(
            id,
            InFlight {
                keys,
                small,
                locators: created.into_keys().collect(),
            },
        );
        Some(PlannedTxn { id, txn, summary })
    }

    /// Logical switches, VLAN bindings and `unknown-dst` rows, in one
    /// transaction so new logical switches can be referenced by name.
    fn plan_small(&mut self, input: &PlanInput<'_>, now: Instant) -> Option<PlannedTxn> {
        let db = input.db;
        let mut txn = Transaction::new(DATABASE);
        let mut s = TxnSummary {
            small: true,
            ..TxnSummary::default()
        };
        let mut created = BTreeMap::new();
        // --- logical switches -------------------------------------------------
        let mut ls_atom: HashMap<Uuid, Atom> = HashMap::default();
        let existing = db.logical_switches();
        let wanted_names: HashMap<String, Uuid> = input
            .device
            .vns
            .keys()
            .map(|vn| (ls_name(vn), *vn))
            .collect();
        for (vn, cfg) in &input.device.vns {
            let name = ls_name(vn);
            self.programmed_ls.insert(name.clone());
            let vni = i64::from(cfg.vni);
            match db.ls_by_name(&name) {
                Some(u) => {
                    ls_atom.insert(*vn, Atom::Uuid(u));
                    let current = db.logical_switch(&u).and_then(|l| l.tunnel_key);
                    if current != Some(vni) {
                        txn.update(
                            "Logical_Switch",
                            vec![Condition::uuid(u)],
                            vec![("tunnel_key".into(), Datum::scalar(vni))],
                        );
                        s.updates += 1;
                    }
                }
                None => {
                    let (_, atom) = txn.insert(
                        "Logical_Switch",
                        vec![
                            ("name".into(), Datum::scalar(name.as_str())),
                            ("description".into(), Datum::scalar(cfg.fq_name.as_str())),
                            ("tunnel_key".into(), Datum::scalar(vni)),
                        ],
                    );
                    s.inserts += 1;
                    ls_atom.insert(*vn, atom);
                }
            }
        }
        // Logical switches nothing wants: free their VNI if a wanted one
        // needs it, delete them (with what hangs off them) when due.
        let wanted_vnis: HashSet<i64> = input
            .device
            .vns
            .values()
            .map(|v| i64::from(v.vni))
            .collect();
        let mut deleting: HashSet<Uuid> = HashSet::default();
        for ls in &existing {
            if wanted_names.contains_key(&ls.name) {
                continue;
            }
            let now_unwanted = self.programmed_ls.remove(&ls.name);
            let due = now_unwanted || self.stale_expired(ls.uuid, now);
            if due {
                if db.ls_has_local_refs(&ls.uuid) {
                    let since = *self.ls_waiting_since.entry(ls.uuid).or_insert(now);
                    if now < since + self.settings.ls_local_wait {
                        // The switch removes its own rows when the binding
                        // goes; unbind now, delete later.
                        self.note_wake(since + self.settings.ls_local_wait);
                        self.free_vni(ls, &wanted_vnis, &mut txn, &mut s);
                        deleting.insert(ls.uuid); // unbound below, not deleted yet
                        continue;
                    }
                    let (ucast, mcast) = db.local_ref_rows(&ls.uuid);
                    for u in ucast {
                        txn.delete("Ucast_Macs_Local", vec![Condition::uuid(u)]);
                        s.deletes += 1;
                    }
                    for u in mcast {
                        txn.delete("Mcast_Macs_Local", vec![Condition::uuid(u)]);
                        s.deletes += 1;
                    }
                }
                for r in db.remote_rows_of(&ls.uuid) {
                    txn.delete("Ucast_Macs_Remote", vec![Condition::uuid(r.uuid)]);
                    self.stale_rows.remove(&r.uuid);
                    self.stale_keys.remove(&r.uuid);
                    s.deletes += 1;
                }
                for m in db.mcast_remote_rows(&ls.uuid) {
                    txn.delete("Mcast_Macs_Remote", vec![Condition::uuid(m.uuid)]);
                    s.deletes += 1;
                }
                txn.delete("Logical_Switch", vec![Condition::uuid(ls.uuid)]);
                s.deletes += 1;
                if !now_unwanted {
                    s.stale_deletes += 1;
                }
                self.stale_rows.remove(&ls.uuid);
                self.ls_waiting_since.remove(&ls.uuid);
                deleting.insert(ls.uuid);
            } else {
                self.free_vni(ls, &wanted_vnis, &mut txn, &mut s);
            }
        }
        // --- port VLAN bindings -------------------------------------------------
        self.missing_ports.clear();
        let ports = db.ports_of(input.physical_switch);
        for name in input.device.bindings.keys() {
            if !ports.contains_key(name) {
                self.missing_ports.push(name.clone());
            }
        }
        for (name, port) in &ports {
            let mut desired: BTreeMap<i64, Atom> = BTreeMap::new();
            if let Some(b) = input.device.bindings.get(name) {
                for (vlan, vn) in b {
                    if let Some(a) = ls_atom.get(vn) {
                        desired.insert(i64::from(*vlan), a.clone());
                        self.programmed_bindings.insert((name.clone(), *vlan));
                        self.stale_bindings.remove(&(name.clone(), *vlan));
                    }
                }
            }
            // Bindings nobody asked for stay through the grace interval,
            // unless their logical switch is being removed.
            for (vlan, ls) in &port.vlan_bindings {
                let Ok(vlan16) = u16::try_from(*vlan) else {
                    continue;
                };
                if desired.contains_key(vlan) || deleting.contains(ls) {
                    continue;
                }
                let key = (name.clone(), vlan16);
                if self.programmed_bindings.remove(&key) {
                    continue;
                }
                let since = *self.stale_bindings.entry(key.clone()).or_insert(now);
                let due = since + self.settings.stale_grace;
                if now < due {
                    self.note_wake(due);
                    desired.insert(*vlan, Atom::Uuid(*ls));
                } else {
                    self.stale_bindings.remove(&key);
                    s.stale_deletes += 1;
                }
            }
            let actual: BTreeMap<i64, Atom> = port
                .vlan_bindings
                .iter()
                .map(|(k, v)| (*k, Atom::Uuid(*v)))
                .collect();
            if actual != desired {
                txn.update(
                    "Physical_Port",
                    vec![Condition::uuid(port.uuid)],
                    vec![(
                        "vlan_bindings".into(),
                        Datum::map(desired.into_iter().map(|(k, v)| (Atom::Integer(k), v))),
                    )],
                );
                s.updates += 1;
            }
        }
        // --- unknown-dst toward our service node ----------------------------------
        let tsn = self.settings.tsn_ip.clone();
        if !tsn.is_empty() {
            let tsn_loc = db.locator_for(&tsn);
            for vn in input.device.vns.keys() {
                let Some(ls) = ls_atom.get(vn).cloned() else {
                    continue;
                };
                let rows: Vec<_> = match &ls {
                    Atom::Uuid(u) => db
                        .mcast_remote_rows(u)
                        .into_iter()
                        .filter(|r| r.mac == UNKNOWN_DST)
                        .collect(),
                    _ => Vec::new(),
                };
                let good = |set: &Uuid| {
                    db.locator_set(set).is_some_and(|ls| {
                        tsn_loc.is_some_and(|l| ls.locators.len() == 1 && ls.locators.contains(&l))
                    })
                };
                if rows.len() == 1 && good(&rows[0].locator_set) {
                    continue;
                }
                let set_atom = match db.locator_set_for(&tsn) {
                    Some(u) => Atom::Uuid(u),
                    None => {
                        let loc = match self.locator(input, &tsn, &mut txn, &mut created, &mut s) {
                            Ok(a) => a,
                            Err(_) => {
                                // Another transaction creates it; come back.
                                self.small_dirty = true;
                                continue;
                            }
                        };
                        let (_, set) = txn.insert(
                            "Physical_Locator_Set",
                            vec![("locators".into(), Datum::set([loc]))],
                        );
                        s.inserts += 1;
                        set
                    }
                };
                match rows.split_first() {
                    None => {
                        txn.insert(
                            "Mcast_Macs_Remote",
                            vec![
                                ("MAC".into(), Datum::scalar(UNKNOWN_DST)),
                                ("logical_switch".into(), Datum::scalar(ls)),
                                ("locator_set".into(), Datum::scalar(set_atom)),
                            ],
                        );
                        s.inserts += 1;
                    }
                    Some((first, extra)) => {
                        if !good(&first.locator_set) {
                            txn.update(
                                "Mcast_Macs_Remote",
                                vec![Condition::uuid(first.uuid)],
                                vec![("locator_set".into(), Datum::scalar(set_atom))],
                            );
                            s.updates += 1;
                        }
                        for r in extra {
                            txn.delete("Mcast_Macs_Remote", vec![Condition::uuid(r.uuid)]);
                            s.deletes += 1;
                        }
                    }
                }
            }
        }
        self.register(txn, s, Vec::new(), true, created)
    }

    /// Clears the VNI of an unwanted logical switch when a wanted one needs it.
    fn free_vni(
        &mut self,
        ls: &ovsdb::vtep::LogicalSwitch,
        wanted: &HashSet<i64>,
        txn: &mut Transaction,
        s: &mut TxnSummary,
    ) {
        if let Some(v) = ls.tunnel_key {
            if wanted.contains(&v) {
                txn.update(
                    "Logical_Switch",
                    vec![Condition::uuid(ls.uuid)],
                    vec![("tunnel_key".into(), Datum::empty_set())],
                );
                s.updates += 1;
            }
        }
    }

    /// One batch of remote-MAC work from the dirty set.
    fn plan_macs(&mut self, input: &PlanInput<'_>, now: Instant) -> Option<PlannedTxn> {
        let db = input.db;
        let mut txn = Transaction::new(DATABASE);
        let mut s = TxnSummary::default();
        let mut created = BTreeMap::new();
        let mut keys = Vec::new();
        let mut deferred = Vec::new();
        let mut rows = 0;
        let candidates: Vec<Key> = self
            .dirty
            .iter()
            .filter(|k| !self.pending_keys.contains(k))
            .take(self.settings.batch_rows * 2)
            .copied()
            .collect();
        if candidates.is_empty() {
            return None;
        }
        for key in candidates {
            if rows >= self.settings.batch_rows {
                break;
            }
            self.dirty.remove(&key);
            let (vn, mac) = key;
            let Some(cfg) = input.device.vns.get(&vn) else {
                // The VN went: its logical switch and rows go with it.
                self.programmed.remove(&key);
                continue;
            };
            let Some(ls) = db.ls_of_vn(&vn) else {
                self.blocked_on_ls.entry(vn).or_default().push(key);
                continue;
            };
            let desired_ip: Option<String> = cfg.vrf.as_deref().and_then(|vrf| {
                let route = input.routes.mac_route(vrf, cfg.vni, &mac)?;
                let nh = next_hop_addresses(route);
                if nh.is_empty() || nh.iter().any(|a| input.own_vteps.contains(*a)) {
                    return None;
                }
                // A MAC this switch learnt wins unless the remote one moved
                // later (higher MAC-mobility sequence).
                // No sequence fixed yet: the HA logic will fix it at the
                // current best + 1 from these same routes, so the local MAC wins.
                if db.has_local(&ls, &mac) {
                    match (input.local_seq)(&vn, &mac) {
                        Some(ours) if route.effective_sequence() > ours => {}
                        _ => return None,
                    }
                }
                nh.first().map(|a| a.to_string())
            });
            let existing: Vec<(Uuid, Option<String>)> = db
                .remote_rows(&ls, &mac)
                .into_iter()
                .map(|r| (r.uuid, db.locator_ip(&r.locator).map(str::to_string)))
                .collect();
            match desired_ip {
                Some(ip) => {
                    self.programmed.insert(key);
                    for (u, _) in &existing {
                        self.stale_rows.remove(u);
                        self.stale_keys.remove(u);
                    }
                    if existing.len() == 1 && existing[0].1.as_deref() == Some(ip.as_str()) {
                        continue;
                    }
                    if created.contains_key(&ip) {
                        // Keep a transaction that creates locators small: everything
                        // else toward a new VTEP waits for it, so it should commit fast.
                        deferred.push(key);
                        continue;
                    }
                    let loc = match self.locator(input, &ip, &mut txn, &mut created, &mut s) {
                        Ok(a) => a,
                        Err(creator) => {
                            self.blocked_on_txn.entry(creator).or_default().push(key);
                            continue;
                        }
                    };
                    match existing.split_first() {
                        None => {
                            txn.insert(
                                "Ucast_Macs_Remote",
                                vec![
                                    ("MAC".into(), Datum::scalar(mac.to_string())),
                                    ("logical_switch".into(), Datum::scalar(ls)),
                                    ("locator".into(), Datum::scalar(loc)),
                                ],
                            );
                            s.inserts += 1;
                        }
                        Some(((first, first_ip), extra)) => {
                            if first_ip.as_deref() != Some(ip.as_str()) {
                                txn.update(
                                    "Ucast_Macs_Remote",
                                    vec![Condition::uuid(*first)],
                                    vec![("locator".into(), Datum::scalar(loc))],
                                );
                                s.updates += 1;
                            }
                            for (u, _) in extra {
                                txn.delete("Ucast_Macs_Remote", vec![Condition::uuid(*u)]);
                                s.deletes += 1;
                            }
                        }
                    }
                    rows += 1;
                    keys.push(key);
                }
                None => {
                    if existing.is_empty() {
                        self.programmed.remove(&key);
                        continue;
                    }
                    let now_unwanted = self.programmed.remove(&key);
                    let mut any = false;
                    for (u, _) in &existing {
                        if !now_unwanted {
                            self.stale_keys.insert(*u, key);
                        }
                        if now_unwanted || self.stale_expired(*u, now) {
                            txn.delete("Ucast_Macs_Remote", vec![Condition::uuid(*u)]);
                            self.stale_rows.remove(u);
                            self.stale_keys.remove(u);
                            s.deletes += 1;
                            if !now_unwanted {
                                s.stale_deletes += 1;
                            }
                            any = true;
                        }
                    }
                    if any {
                        rows += 1;
                        keys.push(key);
                    }
                }
            }
        }
        let planned = self.register(txn, s, keys, false, created);
        match &planned {
            Some(t) if !deferred.is_empty() => {
                self.blocked_on_txn
                    .entry(t.id)
                    .or_default()
                    .extend(deferred);
            }
            _ => self.dirty.extend(deferred),
        }
        planned
    }

    /// Work whose time has come: stale rows past their grace, logical
    /// switches done waiting, retries.
    pub fn expire(&mut self, now: Instant) {
        let due: Vec<Uuid> = self
            .stale_rows
            .iter()
            .filter(|(_, since)| now >= **since + self.settings.stale_grace)
            .map(|(u, _)| *u)
            .collect();
        for row in due {
            match self.stale_keys.get(&row) {
                Some(key) => {
                    self.dirty.insert(*key);
                }
                // Logical switches are checked with the small objects.
                None => self.small_dirty = true,
            }
        }
        let bindings_due = self
            .stale_bindings
            .values()
            .any(|since| now >= *since + self.settings.stale_grace);
        let ls_due = self
            .ls_waiting_since
            .values()
            .any(|since| now >= *since + self.settings.ls_local_wait);
        if bindings_due || ls_due {
            self.small_dirty = true;
        }
    }
}
