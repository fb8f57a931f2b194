//! The switch's forwarding database and the `hardware_vtep` rows it implies.
//! Pure logic: no I/O, time passed in as a `Duration` since the switch
//! started, so every rule is unit-tested with a virtual clock.
//!
//! A *host* is a MAC the switch has seen on a (port, VLAN). Its
//! `Ucast_Macs_Local` row exists while that (port, VLAN) is bound to a
//! logical switch by the manager (`Physical_Port.vlan_bindings`). Binding,
//! rebinding and unbinding add, move and remove rows without forgetting the
//! host, as a hardware switch relearns a host that keeps talking.
//!
//! - The *population* (`--macs N`): host `i` has MAC `base + i`. With the
//!   default [`Placement::Spread`] it sits on the `(i mod B)`-th of the `B`
//!   bound (port, VLAN) pairs, taken in the switch's port order and then by
//!   VLAN, and is placed again whenever the bindings change: the layout
//!   depends on the current bindings alone (a test can predict it) and
//!   nothing is learnt before the first binding. A manager that binds a
//!   switch's (port, VLAN)s over several transactions therefore sees
//!   population hosts move between logical switches until the last binding
//!   lands; [`Placement::PerPort`] plugs host `i` into port `i mod P`
//!   instead, so only a change of that port's own VLANs moves it (the TF
//!   agent writes all VLANs of a port in one transaction).
//! - `learn`/`move_to` put a host on a fixed (port, VLAN).
//! - A host is forgotten (its row deleted, not relearnt until learnt again)
//!   when it is unlearnt or aged, when the manager writes a
//!   `Ucast_Macs_Remote` for its MAC in the logical switch of its local row
//!   (the host moved behind another VTEP), or when someone else deletes its
//!   row (a flushed FDB entry).
//! - Every bound logical switch gets one `unknown-dst` `Mcast_Macs_Local`.
//!   When a logical switch loses its last binding, every local row that
//!   refers to it is deleted, ours and anyone's, as ovs-vtep does with
//!   `vtep-ctl clear-local-macs`, so that the manager can delete it.
//!
//! The FDB is keyed by MAC: a MAC is in one place on the switch at a time
//! (the same MAC in two VLANs is not modelled).
//!
//! The driver asks for a [`Plan`] (the row changes that bring the database to
//! what the FDB implies), runs it as transactions, and reports the outcome
//! with [`Fdb::applied`] or [`Fdb::failed`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ovsdb::Uuid;

use super::mac::Mac;

/// Index of a port in the switch's port order.
pub type PortId = u16;
/// Index of a logical switch in the FDB's small table of known ones.
type LsId = u16;

/// The largest VLAN id `vlan_bindings` accepts.
pub const MAX_VLAN: u16 = 4095;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Population host `i`, placed by the current bindings.
    Spread(u32),
    At {
        port: PortId,
        vlan: u16,
    },
    /// Forgotten; the entry goes once its row is deleted.
    Gone,
}

#[derive(Clone, Copy, Debug)]
struct LocalRow {
    uuid: Uuid,
    ls: LsId,
}

/// 40 bytes: the scale runs keep a million of these.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Milliseconds since the switch started.
    last_seen: u64,
    place: Place,
    /// The `Ucast_Macs_Local` row in the database.
    row: Option<LocalRow>,
}

impl Entry {
    const ABSENT: Entry = Entry {
        last_seen: 0,
        place: Place::Gone,
        row: None,
    };

    fn is_absent(&self) -> bool {
        self.place == Place::Gone && self.row.is_none()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mcast {
    /// Needed (if bound) and not written yet.
    Absent,
    Present(Uuid),
    /// Deleted by someone else while bound: not written again until the
    /// logical switch is unbound and bound again.
    Flushed,
}

#[derive(Clone, Debug)]
struct LsSlot {
    uuid: Uuid,
    bound: bool,
    /// Lost its last binding: its local rows are to be deleted.
    clear: bool,
    /// Our `Ucast_Macs_Local` rows referring to it.
    rows: u32,
    mcast: Mcast,
}

impl LsSlot {
    fn is_free(&self) -> bool {
        !self.bound && !self.clear && self.rows == 0 && !matches!(self.mcast, Mcast::Present(_))
    }
}

#[derive(Clone, Debug)]
struct Port {
    name: Box<str>,
    /// In the database now (a deleted port keeps its id for its hosts).
    present: bool,
    /// (VLAN, logical switch), sorted by VLAN.
    bindings: Vec<(u16, LsId)>,
}

impl Port {
    fn binding(&self, vlan: u16) -> Option<LsId> {
        self.bindings
            .binary_search_by_key(&vlan, |b| b.0)
            .ok()
            .and_then(|i| self.bindings.get(i))
            .map(|b| b.1)
    }
}

/// One `Physical_Port` as read from the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortView {
    pub name: String,
    /// VLAN → logical switch UUID.
    pub bindings: Vec<(u16, Uuid)>,
}

/// Where population hosts sit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Host `i` on the `(i mod B)`-th of the `B` bound (port, VLAN)s: all
    /// hosts are learnt once anything is bound, and re-placed when the
    /// bindings change.
    #[default]
    Spread,
    /// Host `i` is plugged into port `i mod P` (of the switch's `P` ports
    /// at start) and sits on the `(i div P mod V)`-th of that port's `V`
    /// bound VLANs: hosts of unbound ports are not learnt, and only a
    /// change of a port's own VLANs moves its hosts.
    PerPort,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Placement::Spread => "spread",
            Placement::PerPort => "per-port",
        })
    }
}

impl std::str::FromStr for Placement {
    type Err = String;
    fn from_str(s: &str) -> Result<Placement, String> {
        match s {
            "spread" => Ok(Placement::Spread),
            "per-port" => Ok(Placement::PerPort),
            other => Err(format!("placement {other}: expected spread or per-port")),
        }
    }
}

/// The hosts learnt as soon as bindings exist: `count` MACs from `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Population {
    pub base: Mac,
    pub count: u32,
    pub placement: Placement,
}

impl Population {
    pub const NONE: Population = Population {
        base: Mac::ZERO,
        count: 0,
        placement: Placement::Spread,
    };

    /// The MAC of population host `i`.
    pub fn mac(&self, i: u32) -> Option<Mac> {
        (i < self.count)
            .then(|| self.base.checked_add(u64::from(i)))
            .flatten()
    }

    fn index_of(&self, mac: Mac) -> Option<usize> {
        let off = mac.as_u64().checked_sub(self.base.as_u64())?;
        (off < u64::from(self.count)).then(|| usize::try_from(off).ok())?
    }

    /// Every address must be a learnable unicast MAC.
    pub fn validate(&self) -> Result<(), FdbError> {
        if self.count == 0 {
            return Ok(());
        }
        let last = self
            .base
            .checked_add(u64::from(self.count) - 1)
            .ok_or(FdbError::BadPopulation(self.base, self.count))?;
        if !self.base.is_learnable() || self.base.octets()[0] != last.octets()[0] {
            return Err(FdbError::BadPopulation(self.base, self.count));
        }
        Ok(())
    }
}

/// A MAC moving back and forth between two places.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlapSpec {
    pub mac: Mac,
    pub port: String,
    pub vlan: u16,
    /// Where it goes in between; `None`: it disappears (unlearnt).
    pub to: Option<(String, u16)>,
    /// Number of moves after the first placement.
    pub moves: u32,
    pub interval: Duration,
}

#[derive(Clone, Debug)]
struct Flap {
    mac: Mac,
    a: (PortId, u16),
    b: Option<(PortId, u16)>,
    remaining: u32,
    interval: u64,
    next_at: u64,
    at_a: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdbError {
    #[error("no port named \"{0}\" on this switch")]
    UnknownPort(String),
    #[error("VLAN {0} is out of range 0..=4095")]
    BadVlan(u32),
    #[error("{0} cannot be learnt (group or all-zero address)")]
    NotLearnable(Mac),
    #[error("{0} is not in the forwarding database")]
    UnknownMac(Mac),
    #[error("population of {1} MACs from {0} leaves the unicast range of its first octet")]
    BadPopulation(Mac, u32),
}

/// Row changes that bring the database to what the FDB implies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Logical switches that lost their last binding: delete every
    /// `Ucast_Macs_Local` and `Mcast_Macs_Local` row referring to them.
    pub clear: Vec<Uuid>,
    /// Our `Ucast_Macs_Local` rows to delete: (MAC, row).
    pub delete: Vec<(Mac, Uuid)>,
    /// `Ucast_Macs_Local` rows to insert: (MAC, logical switch).
    pub insert: Vec<(Mac, Uuid)>,
    /// Logical switches that need their `unknown-dst` `Mcast_Macs_Local`.
    pub mcast_insert: Vec<Uuid>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.clear.is_empty()
            && self.delete.is_empty()
            && self.insert.is_empty()
            && self.mcast_insert.is_empty()
    }

    pub fn len(&self) -> usize {
        self.clear.len() + self.delete.len() + self.insert.len() + self.mcast_insert.len()
    }

    /// Splits into plans of at most `max` changes, clears and multicast
    /// rows first. A MAC that moves between logical switches has its delete
    /// and insert in the same part (no moment with two local rows).
    pub fn split(self, max: usize) -> Vec<Plan> {
        let max = max.max(2);
        if self.len() <= max {
            return vec![self];
        }
        let mut parts = Vec::new();
        let mut cur = Plan {
            clear: self.clear,
            mcast_insert: self.mcast_insert,
            ..Plan::default()
        };
        let inserts: HashMap<Mac, Uuid> = self.insert.iter().copied().collect();
        let mut paired = HashSet::new();
        for (mac, row) in self.delete {
            if cur.len() + 2 > max {
                parts.push(std::mem::take(&mut cur));
            }
            cur.delete.push((mac, row));
            if let Some(ls) = inserts.get(&mac) {
                cur.insert.push((mac, *ls));
                paired.insert(mac);
            }
        }
        for (mac, ls) in self.insert {
            if paired.contains(&mac) {
                continue;
            }
            if cur.len() + 1 > max {
                parts.push(std::mem::take(&mut cur));
            }
            cur.insert.push((mac, ls));
        }
        if !cur.is_empty() {
            parts.push(cur);
        }
        parts
    }
}

/// One host as listed by `macs()`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MacView {
    pub mac: Mac,
    /// Where the host is now; `None` for a population host while nothing is bound.
    pub port: Option<String>,
    pub vlan: Option<u16>,
    /// The logical switch of its local row, if it has one.
    pub logical_switch: Option<Uuid>,
    pub row: Option<Uuid>,
    /// A population host that has not been learnt or moved explicitly.
    pub population: bool,
    /// Milliseconds since the switch started.
    pub last_seen_ms: u64,
}

/// Counters for status output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FdbStats {
    pub hosts: usize,
    pub local_rows: usize,
    pub bound_logical_switches: usize,
    pub bound_port_vlans: usize,
    pub aging_ms: u64,
    pub flaps: usize,
    /// Bindings beyond what the FDB can track (65,535 logical switches).
    pub ignored_bindings: u64,
}

/// What `tick` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    pub aged: usize,
    pub flap_moves: usize,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The forwarding database of one switch.
#[derive(Debug)]
pub struct Fdb {
    population: Population,
    /// Population host `i` at index `i` (dense: no key to store).
    pop: Vec<Entry>,
    /// Hosts outside the population.
    extra: HashMap<Mac, Entry>,
    ports: Vec<Port>,
    lss: Vec<LsSlot>,
    /// Bound (port, VLAN, logical switch) in port order, then VLAN.
    spread: Vec<(PortId, u16, LsId)>,
    dirty_all: bool,
    dirty: HashSet<Mac>,
    /// Hosts made `Gone`, to drop once their rows are deleted.
    forgotten: Vec<Mac>,
    aging: Option<u64>,
    /// No learnt host expires before this (may be early, never late).
    next_expiry: Option<u64>,
    flaps: Vec<Flap>,
    ignored_bindings: u64,
    /// The switch's ports at start (per-port placement).
    initial_ports: u16,
}

impl Fdb {
    /// An FDB for a switch with these ports (in the switch's order).
    pub fn new(
        ports: &[String],
        population: Population,
        aging: Option<Duration>,
    ) -> Result<Fdb, FdbError> {
        population.validate()?;
        let pop = (0..population.count)
            .map(|i| Entry {
                last_seen: 0,
                place: Place::Spread(i),
                row: None,
            })
            .collect();
        let mut fdb = Fdb {
            population,
            pop,
            extra: HashMap::new(),
            ports: Vec::new(),
            lss: Vec::new(),
            spread: Vec::new(),
            dirty_all: false,
            dirty: HashSet::new(),
            forgotten: Vec::new(),
            aging: None,
            next_expiry: None,
            flaps: Vec::new(),
            ignored_bindings: 0,
            initial_ports: 0,
        };
        fdb.set_aging(aging);
        for name in ports {
            fdb.port_id_or_add(name);
        }
        fdb.initial_ports = u16::try_from(fdb.ports.len()).unwrap_or(u16::MAX);
        Ok(fdb)
    }

    pub fn population(&self) -> Population {
        self.population
    }

    fn entry(&self, mac: Mac) -> Option<&Entry> {
        match self.population.index_of(mac) {
            Some(i) => self.pop.get(i),
            None => self.extra.get(&mac),
        }
        .filter(|e| !e.is_absent())
    }

    fn entry_mut(&mut self, mac: Mac) -> Option<&mut Entry> {
        match self.population.index_of(mac) {
            Some(i) => self.pop.get_mut(i),
            None => self.extra.get_mut(&mac),
        }
    }

    fn entry_or_insert(&mut self, mac: Mac) -> &mut Entry {
        match self.population.index_of(mac) {
            // index_of only returns indexes below count == pop.len().
            Some(i) if i < self.pop.len() => &mut self.pop[i],
            _ => self.extra.entry(mac).or_insert(Entry::ABSENT),
        }
    }

    fn each_entry(&self) -> impl Iterator<Item = (Mac, &Entry)> {
        let base = self.population.base;
        self.pop
            .iter()
            .enumerate()
            .filter_map(move |(i, e)| Some((base.checked_add(i as u64)?, e)))
            .chain(self.extra.iter().map(|(m, e)| (*m, e)))
            .filter(|(_, e)| !e.is_absent())
    }

    fn port_id(&self, name: &str) -> Result<PortId, FdbError> {
        self.ports
            .iter()
            .position(|p| p.present && &*p.name == name)
            .and_then(|i| PortId::try_from(i).ok())
            .ok_or_else(|| FdbError::UnknownPort(name.to_string()))
    }

    fn port_id_or_add(&mut self, name: &str) -> Option<PortId> {
        if let Some(i) = self.ports.iter().position(|p| &*p.name == name) {
            if let Some(p) = self.ports.get_mut(i) {
                p.present = true;
            }
            return PortId::try_from(i).ok();
        }
        let id = PortId::try_from(self.ports.len()).ok()?;
        self.ports.push(Port {
            name: name.into(),
            present: true,
            bindings: Vec::new(),
        });
        Some(id)
    }

    fn slot_of(&self, ls: &Uuid) -> Option<LsId> {
        self.lss
            .iter()
            .position(|s| s.uuid == *ls && !s.is_free())
            .and_then(|i| LsId::try_from(i).ok())
    }

    fn desired(&self, place: Place) -> Option<LsId> {
        match place {
            Place::Gone => None,
            Place::At { port, vlan } => self
                .ports
                .get(usize::from(port))
                .and_then(|p| p.binding(vlan)),
            Place::Spread(i) => self.population_slot(i).map(|s| s.2),
        }
    }

    /// Where population host `i` is now: (port, VLAN, logical switch).
    fn population_slot(&self, i: u32) -> Option<(PortId, u16, LsId)> {
        let i = i as usize;
        match self.population.placement {
            Placement::Spread => {
                let n = self.spread.len();
                (n > 0).then(|| self.spread.get(i % n).copied()).flatten()
            }
            Placement::PerPort => {
                let ports = usize::from(self.initial_ports).max(1);
                let pid = i % ports;
                let port = self.ports.get(pid)?;
                let n = port.bindings.len();
                let (vlan, ls) = (n > 0)
                    .then(|| port.bindings.get((i / ports) % n).copied())
                    .flatten()?;
                Some((PortId::try_from(pid).ok()?, vlan, ls))
            }
        }
    }

    /// Where a host is: (port, VLAN).
    fn location(&self, place: Place) -> Option<(PortId, u16)> {
        match place {
            Place::Gone => None,
            Place::At { port, vlan } => Some((port, vlan)),
            Place::Spread(i) => self.population_slot(i).map(|s| (s.0, s.1)),
        }
    }

    /// The ports and their bindings as the database has them now. Ports
    /// keep their ids by name; new names are appended.
    pub fn set_ports(&mut self, views: &[PortView]) {
        for p in &mut self.ports {
            p.present = false;
            p.bindings.clear();
        }
        let mut by_uuid: HashMap<Uuid, LsId> = HashMap::new();
        for (i, s) in self.lss.iter().enumerate() {
            if let Ok(id) = LsId::try_from(i) {
                by_uuid.insert(s.uuid, id);
            }
        }
        // Slots given to a binding in this call (not free for another).
        let mut used = vec![false; self.lss.len()];
        for v in views {
            let Some(pid) = self.port_id_or_add(&v.name) else {
                self.ignored_bindings += v.bindings.len() as u64;
                continue;
            };
            let mut bindings = Vec::with_capacity(v.bindings.len());
            for &(vlan, ls) in &v.bindings {
                if vlan > MAX_VLAN {
                    self.ignored_bindings += 1;
                    continue;
                }
                let id = match by_uuid.get(&ls) {
                    Some(&id) => id,
                    None => match self.alloc_slot(ls, &used) {
                        Some((id, old)) => {
                            if let Some(old) = old {
                                by_uuid.remove(&old);
                            }
                            by_uuid.insert(ls, id);
                            id
                        }
                        None => {
                            self.ignored_bindings += 1;
                            continue;
                        }
                    },
                };
                if used.len() <= usize::from(id) {
                    used.resize(usize::from(id) + 1, false);
                }
                used[usize::from(id)] = true;
                bindings.push((vlan, id));
            }
            bindings.sort_unstable();
            bindings.dedup_by_key(|b| b.0);
            if let Some(p) = self.ports.get_mut(usize::from(pid)) {
                p.bindings = bindings;
            }
        }
        let mut bound = vec![false; self.lss.len()];
        for p in &self.ports {
            for &(_, ls) in &p.bindings {
                if let Some(b) = bound.get_mut(usize::from(ls)) {
                    *b = true;
                }
            }
        }
        for (s, now_bound) in self.lss.iter_mut().zip(bound) {
            if s.bound && !now_bound {
                s.clear = true;
            } else if !s.bound && now_bound {
                // A new binding epoch: the unknown-dst row is due again.
                s.clear = false;
                if s.mcast == Mcast::Flushed {
                    s.mcast = Mcast::Absent;
                }
            }
            s.bound = now_bound;
        }
        self.spread = self
            .ports
            .iter()
            .enumerate()
            .filter_map(|(pid, p)| PortId::try_from(pid).ok().map(|pid| (pid, p)))
            .flat_map(|(pid, p)| p.bindings.iter().map(move |&(vlan, ls)| (pid, vlan, ls)))
            .collect();
        self.dirty_all = true;
    }

    /// A slot for a newly seen logical switch: a free one (returning the
    /// UUID it had) or a new one.
    fn alloc_slot(&mut self, ls: Uuid, used: &[bool]) -> Option<(LsId, Option<Uuid>)> {
        let fresh = LsSlot {
            uuid: ls,
            bound: false,
            clear: false,
            rows: 0,
            mcast: Mcast::Absent,
        };
        let free = self
            .lss
            .iter()
            .enumerate()
            .position(|(i, s)| s.is_free() && !used.get(i).copied().unwrap_or(false));
        if let Some(i) = free {
            let old = self.lss.get(i).map(|s| s.uuid);
            if let Some(s) = self.lss.get_mut(i) {
                *s = fresh;
            }
            return LsId::try_from(i).ok().map(|id| (id, old));
        }
        let id = LsId::try_from(self.lss.len()).ok()?;
        self.lss.push(fresh);
        Some((id, None))
    }

    fn check_place(&self, mac: Mac, port: &str, vlan: u16) -> Result<Place, FdbError> {
        if !mac.is_learnable() {
            return Err(FdbError::NotLearnable(mac));
        }
        if vlan > MAX_VLAN {
            return Err(FdbError::BadVlan(u32::from(vlan)));
        }
        let port = self.port_id(port)?;
        Ok(Place::At { port, vlan })
    }

    fn put(&mut self, mac: Mac, place: Place, now: u64) {
        let e = self.entry_or_insert(mac);
        e.last_seen = now;
        if e.place != place {
            e.place = place;
            self.dirty.insert(mac);
        }
    }

    fn forget(&mut self, mac: Mac) -> bool {
        let Some(e) = self.entry_mut(mac) else {
            return false;
        };
        if e.place == Place::Gone {
            return false;
        }
        e.place = Place::Gone;
        self.dirty.insert(mac);
        self.forgotten.push(mac);
        true
    }

    /// A frame from `mac` arrived on (port, VLAN): learn it there, or
    /// refresh it (a host seen elsewhere before has moved here).
    pub fn learn(
        &mut self,
        mac: Mac,
        port: &str,
        vlan: u16,
        now: Duration,
    ) -> Result<(), FdbError> {
        let place = self.check_place(mac, port, vlan)?;
        self.put(mac, place, ms(now));
        Ok(())
    }

    /// Like `learn`, for a host the FDB must already know.
    pub fn move_to(
        &mut self,
        mac: Mac,
        port: &str,
        vlan: u16,
        now: Duration,
    ) -> Result<(), FdbError> {
        let place = self.check_place(mac, port, vlan)?;
        if self.entry(mac).is_none_or(|e| e.place == Place::Gone) {
            return Err(FdbError::UnknownMac(mac));
        }
        self.put(mac, place, ms(now));
        Ok(())
    }

    /// Forgets a host at once (its row is deleted), as when it ages out.
    pub fn unlearn(&mut self, mac: Mac) -> Result<(), FdbError> {
        if self.forget(mac) {
            Ok(())
        } else {
            Err(FdbError::UnknownMac(mac))
        }
    }

    /// Ages out every learnt host now (`clear mac-address-table dynamic`);
    /// hosts waiting for a binding stay. Returns how many went.
    pub fn age_all(&mut self) -> usize {
        let learnt: Vec<Mac> = self
            .each_entry()
            .filter(|(_, e)| e.row.is_some() && e.place != Place::Gone)
            .map(|(m, _)| m)
            .collect();
        learnt.into_iter().filter(|m| self.forget(*m)).count()
    }

    /// `None` or zero disables aging.
    pub fn set_aging(&mut self, aging: Option<Duration>) {
        self.aging = aging.map(ms).filter(|a| *a > 0);
        self.next_expiry = self.compute_next_expiry();
    }

    pub fn aging(&self) -> Option<Duration> {
        self.aging.map(Duration::from_millis)
    }

    fn compute_next_expiry(&self) -> Option<u64> {
        let aging = self.aging?;
        self.each_entry()
            .filter(|(_, e)| e.row.is_some() && e.place != Place::Gone)
            .map(|(_, e)| e.last_seen.saturating_add(aging))
            .min()
    }

    /// Moves `mac` between two places `moves` times, `interval` apart,
    /// starting at the first place now. Replaces a flap of the same MAC.
    pub fn flap(&mut self, spec: &FlapSpec, now: Duration) -> Result<(), FdbError> {
        let a = match self.check_place(spec.mac, &spec.port, spec.vlan)? {
            Place::At { port, vlan } => (port, vlan),
            _ => return Err(FdbError::UnknownPort(spec.port.clone())),
        };
        let b = match &spec.to {
            Some((port, vlan)) => match self.check_place(spec.mac, port, *vlan)? {
                Place::At { port, vlan } => Some((port, vlan)),
                _ => return Err(FdbError::UnknownPort(port.clone())),
            },
            None => None,
        };
        let now = ms(now);
        self.flaps.retain(|f| f.mac != spec.mac);
        self.put(
            spec.mac,
            Place::At {
                port: a.0,
                vlan: a.1,
            },
            now,
        );
        if spec.moves > 0 {
            let interval = ms(spec.interval).max(1);
            self.flaps.push(Flap {
                mac: spec.mac,
                a,
                b,
                remaining: spec.moves,
                interval,
                next_at: now.saturating_add(interval),
                at_a: true,
            });
        }
        Ok(())
    }

    /// When `tick` has something to do next (aging or a flap).
    pub fn next_wakeup(&self) -> Option<Duration> {
        let flap = self.flaps.iter().map(|f| f.next_at).min();
        match (self.next_expiry, flap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(Duration::from_millis)
    }

    /// Ages out hosts not seen for the aging time and makes due flap moves
    /// (one move per flap per tick, so each is visible in the database).
    pub fn tick(&mut self, now: Duration) -> Tick {
        let now = ms(now);
        let mut out = Tick::default();
        if let (Some(aging), Some(next)) = (self.aging, self.next_expiry) {
            if next <= now {
                let expired: Vec<Mac> = self
                    .each_entry()
                    .filter(|(_, e)| {
                        e.row.is_some()
                            && e.place != Place::Gone
                            && e.last_seen.saturating_add(aging) <= now
                    })
                    .map(|(m, _)| m)
                    .collect();
                out.aged = expired.into_iter().filter(|m| self.forget(*m)).count();
                self.next_expiry = self.compute_next_expiry();
            }
        }
        let mut flaps = std::mem::take(&mut self.flaps);
        for f in &mut flaps {
            if f.next_at > now || f.remaining == 0 {
                continue;
            }
            let target = if f.at_a { f.b } else { Some(f.a) };
            match target {
                Some((port, vlan)) => self.put(f.mac, Place::At { port, vlan }, now),
                None => {
                    self.forget(f.mac);
                }
            }
            f.at_a = !f.at_a;
            f.remaining -= 1;
            f.next_at = now.saturating_add(f.interval);
            out.flap_moves += 1;
        }
        flaps.retain(|f| f.remaining > 0);
        self.flaps = flaps;
        out
    }

    /// The manager wrote a `Ucast_Macs_Remote` for `mac` in `ls`: if that is
    /// where the host's local row is, the host has moved away.
    pub fn remote_written(&mut self, ls: Uuid, mac: Mac) -> bool {
        let Some(id) = self.slot_of(&ls) else {
            return false;
        };
        let here = self
            .entry(mac)
            .is_some_and(|e| e.place != Place::Gone && e.row.is_some_and(|r| r.ls == id));
        here && self.forget(mac)
    }

    /// Someone else deleted `row`, a `Ucast_Macs_Local` row for `mac`; if it
    /// was ours, the host is forgotten (a flushed FDB entry).
    pub fn local_row_deleted(&mut self, mac: Mac, row: Uuid) -> bool {
        let Some(e) = self.entry_mut(mac) else {
            return false;
        };
        let Some(r) = e.row.filter(|r| r.uuid == row) else {
            return false;
        };
        e.row = None;
        e.place = Place::Gone;
        if let Some(s) = self.lss.get_mut(usize::from(r.ls)) {
            s.rows = s.rows.saturating_sub(1);
        }
        self.dirty.remove(&mac);
        self.forgotten.push(mac);
        self.drop_forgotten();
        true
    }

    /// Someone else deleted a `Mcast_Macs_Local` row of `ls`.
    pub fn mcast_row_deleted(&mut self, ls: Uuid, row: Uuid) -> bool {
        match self
            .slot_of(&ls)
            .and_then(|id| self.lss.get_mut(usize::from(id)))
        {
            Some(s) if s.mcast == Mcast::Present(row) => {
                s.mcast = Mcast::Flushed;
                true
            }
            _ => false,
        }
    }

    /// The changes due now. Call `applied` or `failed` before anything else.
    pub fn plan(&mut self) -> Plan {
        let mut plan = Plan::default();
        let clearing: Vec<bool> = self.lss.iter().map(|s| s.clear).collect();
        plan.clear = self
            .lss
            .iter()
            .filter(|s| s.clear)
            .map(|s| s.uuid)
            .collect();
        let mut diff = |mac: Mac, e: &Entry| {
            let want = self.desired(e.place);
            if e.row.map(|r| r.ls) == want {
                return;
            }
            if let Some(r) = e.row {
                if !clearing.get(usize::from(r.ls)).copied().unwrap_or(false) {
                    plan.delete.push((mac, r.uuid));
                }
            }
            if let Some(ls) = want.and_then(|id| self.lss.get(usize::from(id))) {
                plan.insert.push((mac, ls.uuid));
            }
        };
        if self.dirty_all {
            for (mac, e) in self.each_entry() {
                diff(mac, e);
            }
        } else {
            for &mac in &self.dirty {
                let e = match self.population.index_of(mac) {
                    Some(i) => self.pop.get(i),
                    None => self.extra.get(&mac),
                };
                if let Some(e) = e {
                    diff(mac, e);
                }
            }
        }
        plan.mcast_insert = self
            .lss
            .iter()
            .filter(|s| s.bound && s.mcast == Mcast::Absent)
            .map(|s| s.uuid)
            .collect();
        self.dirty_all = false;
        self.dirty.clear();
        plan
    }

    /// A plan (or part of one) committed; `ucast` and `mcast` are the UUIDs
    /// of the inserted rows, in the plan's order.
    pub fn applied(&mut self, plan: &Plan, ucast: &[Uuid], mcast: &[Uuid], now: Duration) {
        let now = ms(now);
        for ls in &plan.clear {
            let Some(id) = self.lss.iter().position(|s| s.uuid == *ls && s.clear) else {
                continue;
            };
            let Ok(lid) = LsId::try_from(id) else {
                continue;
            };
            if self.lss.get(id).is_some_and(|s| s.rows > 0) {
                let base = self.population.base;
                for (i, e) in self.pop.iter_mut().enumerate() {
                    if e.row.is_some_and(|r| r.ls == lid) {
                        e.row = None;
                        if let Some(m) = base.checked_add(i as u64) {
                            // Its desired row (if any) is elsewhere now.
                            self.dirty.insert(m);
                        }
                    }
                }
                for (m, e) in self.extra.iter_mut() {
                    if e.row.is_some_and(|r| r.ls == lid) {
                        e.row = None;
                        self.dirty.insert(*m);
                    }
                }
            }
            if let Some(s) = self.lss.get_mut(id) {
                s.rows = 0;
                s.clear = false;
                s.mcast = Mcast::Absent;
            }
        }
        for (mac, row) in &plan.delete {
            let Some(e) = self.entry_mut(*mac) else {
                continue;
            };
            if let Some(r) = e.row.filter(|r| r.uuid == *row) {
                e.row = None;
                if let Some(s) = self.lss.get_mut(usize::from(r.ls)) {
                    s.rows = s.rows.saturating_sub(1);
                }
            }
        }
        for ((mac, ls), uuid) in plan.insert.iter().zip(ucast) {
            let Some(id) = self.slot_of(ls) else { continue };
            let Some(e) = self.entry_mut(*mac) else {
                continue;
            };
            e.row = Some(LocalRow {
                uuid: *uuid,
                ls: id,
            });
            e.last_seen = now;
            if let Some(s) = self.lss.get_mut(usize::from(id)) {
                s.rows += 1;
            }
            if let Some(aging) = self.aging {
                let at = now.saturating_add(aging);
                self.next_expiry = Some(self.next_expiry.map_or(at, |n| n.min(at)));
            }
        }
        for (ls, uuid) in plan.mcast_insert.iter().zip(mcast) {
            if let Some(s) = self
                .slot_of(ls)
                .and_then(|id| self.lss.get_mut(usize::from(id)))
            {
                if s.bound {
                    s.mcast = Mcast::Present(*uuid);
                }
            }
        }
        // Inserts made by a part of a plan mark nothing dirty; a clear can
        // leave hosts whose rows must be inserted elsewhere.
        self.drop_forgotten();
    }

    /// The transaction failed: plan everything again next time.
    pub fn failed(&mut self) {
        self.dirty_all = true;
    }

    fn drop_forgotten(&mut self) {
        let mut keep = Vec::new();
        for mac in std::mem::take(&mut self.forgotten) {
            let Some(e) = self.entry_mut(mac) else {
                continue;
            };
            if e.place != Place::Gone {
                continue;
            }
            if e.row.is_some() {
                keep.push(mac);
                continue;
            }
            // Absent population entries stay as placeholders.
            self.extra.remove(&mac);
        }
        self.forgotten = keep;
    }

    /// Whether a plan now would change anything (cheap check first).
    pub fn has_work(&self) -> bool {
        self.dirty_all
            || !self.dirty.is_empty()
            || self
                .lss
                .iter()
                .any(|s| s.clear || (s.bound && s.mcast == Mcast::Absent))
    }

    /// The known hosts, by MAC.
    pub fn macs(&self) -> Vec<MacView> {
        let mut out: Vec<MacView> = self
            .each_entry()
            .filter(|(_, e)| e.place != Place::Gone)
            .map(|(mac, e)| {
                let loc = self.location(e.place);
                MacView {
                    mac,
                    port: loc.and_then(|(p, _)| {
                        self.ports.get(usize::from(p)).map(|p| p.name.to_string())
                    }),
                    vlan: loc.map(|(_, v)| v),
                    logical_switch: e
                        .row
                        .and_then(|r| self.lss.get(usize::from(r.ls)).map(|s| s.uuid)),
                    row: e.row.map(|r| r.uuid),
                    population: matches!(e.place, Place::Spread(_)),
                    last_seen_ms: e.last_seen,
                }
            })
            .collect();
        out.sort_by_key(|v| v.mac);
        out
    }

    /// One host, if known.
    pub fn mac(&self, mac: Mac) -> Option<MacView> {
        let e = self.entry(mac).filter(|e| e.place != Place::Gone)?;
        let loc = self.location(e.place);
        Some(MacView {
            mac,
            port: loc.and_then(|(p, _)| self.ports.get(usize::from(p)).map(|p| p.name.to_string())),
            vlan: loc.map(|(_, v)| v),
            logical_switch: e
                .row
                .and_then(|r| self.lss.get(usize::from(r.ls)).map(|s| s.uuid)),
            row: e.row.map(|r| r.uuid),
            population: matches!(e.place, Place::Spread(_)),
            last_seen_ms: e.last_seen,
        })
    }

    pub fn stats(&self) -> FdbStats {
        FdbStats {
            hosts: self
                .each_entry()
                .filter(|(_, e)| e.place != Place::Gone)
                .count(),
            local_rows: self.lss.iter().map(|s| s.rows as usize).sum(),
            bound_logical_switches: self.lss.iter().filter(|s| s.bound).count(),
            bound_port_vlans: self.spread.len(),
            aging_ms: self.aging.unwrap_or(0),
            flaps: self.flaps.len(),
            ignored_bindings: self.ignored_bindings,
        }
    }

    /// The port names in the switch's order (deleted ones included).
    pub fn port_names(&self) -> impl Iterator<Item = &str> {
        self.ports.iter().map(|p| &*p.name)
    }
}

#[cfg(test)]
#[path = "fdb_tests.rs"]
mod tests;
