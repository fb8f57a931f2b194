//! The agent's replica of one switch's database, with the indexes the
//! reconcile engine and the exports need. Plain data, fed with the decoded
//! monitor updates of the session, in order.

use crate::hash::{HashMap, HashSet};
use std::collections::BTreeMap;
use std::sync::Arc;

use ovsdb::client::{ChangeKind, Replica, ReplicaError, TableReplica};
use ovsdb::value::seed::TableUpdates;
use ovsdb::vtep::{
    LogicalSwitch, McastMacsLocal, McastMacsRemote, PhysicalLocator, PhysicalLocatorSet,
    PhysicalPort, PhysicalSwitch, UcastMacsLocal, UcastMacsRemote, VXLAN_OVER_IPV4,
};
use ovsdb::{DatabaseSchema, Row, Uuid};

use crate::mac::Mac;
use crate::reconcile::plan::{ls_name, vn_of_ls_name};

/// The tables the agent monitors (every column).
pub const MONITORED: &[&str] = &[
    "Global",
    "Physical_Switch",
    "Physical_Port",
    "Logical_Switch",
    "Ucast_Macs_Local",
    "Ucast_Macs_Remote",
    "Mcast_Macs_Local",
    "Mcast_Macs_Remote",
    "Physical_Locator",
    "Physical_Locator_Set",
];

/// A MAC row (local or remote) as indexed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MacRow {
    pub uuid: Uuid,
    pub ls: Uuid,
    pub mac: Mac,
    pub locator: Uuid,
}

/// What an update changed, for the caller to mark work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touched {
    LogicalSwitch { uuid: Uuid },
    Port,
    PhysicalSwitch,
    LocalMac { ls: Uuid, mac: Mac, present: bool },
    RemoteMac { ls: Uuid, mac: Mac },
    McastRemote { ls: Uuid },
    McastLocal { ls: Uuid },
    Locator,
}

/// One switch's database as the agent sees it.
#[derive(Clone, Debug)]
pub struct SwitchDb {
    replica: Replica,
    ls_by_name: HashMap<String, Uuid>,
    /// The logical switch of each virtual network (named `ls_name(vn)`):
    /// per-MAC lookups need it without building the name.
    ls_by_vn: HashMap<Uuid, Uuid>,
    locator_ip: HashMap<Uuid, String>,
    locator_by_ip: HashMap<String, Uuid>,
    ucast_remote: HashMap<(Uuid, Mac), Vec<Uuid>>,
    remote_rows: HashMap<Uuid, MacRow>,
    ucast_local: HashMap<(Uuid, Mac), Vec<Uuid>>,
    local_rows: HashMap<Uuid, MacRow>,
    /// MACs of rows whose MAC column is not a MAC address (counted, ignored).
    pub malformed_macs: usize,
    mcast_remote: HashMap<Uuid, Vec<Uuid>>,
    mcast_local_by_ls: HashMap<Uuid, HashSet<Uuid>>,
    /// Physical_Switch name → (row, first tunnel IP), read on every route
    /// change, so kept ready.
    switches: HashMap<String, (Uuid, Option<String>)>,
}

impl SwitchDb {
    pub fn new(schema: Arc<DatabaseSchema>) -> SwitchDb {
        SwitchDb {
            replica: Replica::new(schema),
            ls_by_name: HashMap::default(),
            ls_by_vn: HashMap::default(),
            locator_ip: HashMap::default(),
            locator_by_ip: HashMap::default(),
            ucast_remote: HashMap::default(),
            remote_rows: HashMap::default(),
            ucast_local: HashMap::default(),
            local_rows: HashMap::default(),
            malformed_macs: 0,
            mcast_remote: HashMap::default(),
            mcast_local_by_ls: HashMap::default(),
            switches: HashMap::default(),
        }
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    pub fn table(&self, name: &str) -> Option<&TableReplica> {
        self.replica.table(name)
    }

    pub fn row_count(&self) -> usize {
        self.replica.row_count()
    }

    /// Applies decoded updates and reports what they touched.
    pub fn apply(&mut self, updates: TableUpdates) -> Result<Vec<Touched>, ReplicaError> {
        let events = self.replica.apply(updates)?;
        let mut touched = Vec::with_capacity(events.len());
        for ev in events {
            let table = ev.table.name.as_str();
            let new = self.replica.row(table, &ev.uuid).cloned();
            let new = if ev.kind == ChangeKind::Delete {
                None
            } else {
                new
            };
            self.index(table, ev.uuid, ev.old.as_ref(), new.as_ref(), &mut touched);
        }
        Ok(touched)
    }

    fn index(
        &mut self,
        table: &str,
        uuid: Uuid,
        old: Option<&Row>,
        new: Option<&Row>,
        out: &mut Vec<Touched>,
    ) {
        let Some(schema) = self.replica.table(table).map(|t| t.schema.clone()) else {
            return;
        };
        match table {
            "Logical_Switch" => {
                if let Some(o) = old.and_then(|r| LogicalSwitch::from_row(&schema, uuid, r).ok()) {
                    if self.ls_by_name.get(&o.name) == Some(&uuid) {
                        self.ls_by_name.remove(&o.name);
                        if let Some(vn) = canonical_vn(&o.name) {
                            self.ls_by_vn.remove(&vn);
                        }
                    }
                }
                if let Some(n) = new.and_then(|r| LogicalSwitch::from_row(&schema, uuid, r).ok()) {
                    if let Some(vn) = canonical_vn(&n.name) {
                        self.ls_by_vn.insert(vn, uuid);
                    }
                    self.ls_by_name.insert(n.name, uuid);
                }
                out.push(Touched::LogicalSwitch { uuid });
            }
            "Physical_Locator" => {
                if let Some(o) = old.and_then(|r| PhysicalLocator::from_row(&schema, uuid, r).ok())
                {
                    if self.locator_by_ip.get(&o.dst_ip) == Some(&uuid) {
                        self.locator_by_ip.remove(&o.dst_ip);
                    }
                    self.locator_ip.remove(&uuid);
                }
                if let Some(n) = new.and_then(|r| PhysicalLocator::from_row(&schema, uuid, r).ok())
                {
                    if n.encapsulation_type == VXLAN_OVER_IPV4 && n.tunnel_key.is_none() {
                        self.locator_by_ip.insert(n.dst_ip.clone(), uuid);
                    }
                    self.locator_ip.insert(uuid, n.dst_ip);
                }
                out.push(Touched::Locator);
            }
            "Ucast_Macs_Remote" | "Ucast_Macs_Local" => {
                let local = table == "Ucast_Macs_Local";
                let read = |r: &Row| -> Option<MacRow> {
                    let (ls, mac, locator) = if local {
                        let m = UcastMacsLocal::from_row(&schema, uuid, r).ok()?;
                        (m.logical_switch, m.mac, m.locator)
                    } else {
                        let m = UcastMacsRemote::from_row(&schema, uuid, r).ok()?;
                        (m.logical_switch, m.mac, m.locator)
                    };
                    Some(MacRow {
                        uuid,
                        ls,
                        mac: mac.parse().ok()?,
                        locator,
                    })
                };
                let (index, rows) = if local {
                    (&mut self.ucast_local, &mut self.local_rows)
                } else {
                    (&mut self.ucast_remote, &mut self.remote_rows)
                };
                if let Some(o) = rows.remove(&uuid) {
                    if let Some(v) = index.get_mut(&(o.ls, o.mac)) {
                        v.retain(|u| *u != uuid);
                        if v.is_empty() {
                            index.remove(&(o.ls, o.mac));
                        }
                    }
                    out.push(if local {
                        Touched::LocalMac {
                            ls: o.ls,
                            mac: o.mac,
                            present: false,
                        }
                    } else {
                        Touched::RemoteMac {
                            ls: o.ls,
                            mac: o.mac,
                        }
                    });
                }
                match new.map(read) {
                    Some(Some(n)) => {
                        index.entry((n.ls, n.mac)).or_default().push(uuid);
                        out.push(if local {
                            Touched::LocalMac {
                                ls: n.ls,
                                mac: n.mac,
                                present: true,
                            }
                        } else {
                            Touched::RemoteMac {
                                ls: n.ls,
                                mac: n.mac,
                            }
                        });
                        rows.insert(uuid, n);
                    }
                    Some(None) => self.malformed_macs += 1,
                    None => {}
                }
            }
            "Mcast_Macs_Remote" => {
                if let Some(o) = old.and_then(|r| McastMacsRemote::from_row(&schema, uuid, r).ok())
                {
                    if let Some(v) = self.mcast_remote.get_mut(&o.logical_switch) {
                        v.retain(|u| *u != uuid);
                        if v.is_empty() {
                            self.mcast_remote.remove(&o.logical_switch);
                        }
                    }
                    out.push(Touched::McastRemote {
                        ls: o.logical_switch,
                    });
                }
                if let Some(n) = new.and_then(|r| McastMacsRemote::from_row(&schema, uuid, r).ok())
                {
                    self.mcast_remote
                        .entry(n.logical_switch)
                        .or_default()
                        .push(uuid);
                    out.push(Touched::McastRemote {
                        ls: n.logical_switch,
                    });
                }
            }
            "Mcast_Macs_Local" => {
                if let Some(o) = old.and_then(|r| McastMacsLocal::from_row(&schema, uuid, r).ok()) {
                    if let Some(v) = self.mcast_local_by_ls.get_mut(&o.logical_switch) {
                        v.remove(&uuid);
                        if v.is_empty() {
                            self.mcast_local_by_ls.remove(&o.logical_switch);
                        }
                    }
                    out.push(Touched::McastLocal {
                        ls: o.logical_switch,
                    });
                }
                if let Some(n) = new.and_then(|r| McastMacsLocal::from_row(&schema, uuid, r).ok()) {
                    self.mcast_local_by_ls
                        .entry(n.logical_switch)
                        .or_default()
                        .insert(uuid);
                    out.push(Touched::McastLocal {
                        ls: n.logical_switch,
                    });
                }
            }
            "Physical_Port" => out.push(Touched::Port),
            "Physical_Switch" => {
                if let Some(o) = old.and_then(|r| PhysicalSwitch::from_row(&schema, uuid, r).ok()) {
                    if self.switches.get(&o.name).is_some_and(|(u, _)| *u == uuid) {
                        self.switches.remove(&o.name);
                    }
                }
                if let Some(n) = new.and_then(|r| PhysicalSwitch::from_row(&schema, uuid, r).ok()) {
                    let ip = n.tunnel_ips.iter().next().cloned();
                    self.switches.insert(n.name, (uuid, ip));
                }
                out.push(Touched::PhysicalSwitch)
            }
            _ => {}
        }
    }

    // ----- queries ---------------------------------------------------------

    /// Physical_Switch rows by name.
    pub fn physical_switches(&self) -> Vec<PhysicalSwitch> {
        self.typed("Physical_Switch", PhysicalSwitch::from_row)
    }

    pub fn physical_switch(&self, name: &str) -> Option<PhysicalSwitch> {
        let (uuid, _) = self.switches.get(name)?;
        let t = self.replica.table("Physical_Switch")?;
        PhysicalSwitch::from_row(&t.schema, *uuid, t.get(uuid)?).ok()
    }

    /// The first tunnel IP of a Physical_Switch (its VTEP), from the index.
    pub fn tunnel_ip(&self, name: &str) -> Option<&str> {
        self.switches.get(name).and_then(|(_, ip)| ip.as_deref())
    }

    fn typed<T>(
        &self,
        table: &str,
        read: impl Fn(&ovsdb::TableSchema, Uuid, &Row) -> Result<T, ovsdb::vtep::VtepError>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        if let Some(t) = self.replica.table(table) {
            for (u, r) in t.iter() {
                if let Ok(v) = read(&t.schema, *u, r) {
                    out.push(v);
                }
            }
        }
        out
    }

    pub fn logical_switch(&self, uuid: &Uuid) -> Option<LogicalSwitch> {
        let t = self.replica.table("Logical_Switch")?;
        LogicalSwitch::from_row(&t.schema, *uuid, t.get(uuid)?).ok()
    }

    pub fn logical_switches(&self) -> Vec<LogicalSwitch> {
        self.typed("Logical_Switch", LogicalSwitch::from_row)
    }

    pub fn ls_by_name(&self, name: &str) -> Option<Uuid> {
        self.ls_by_name.get(name).copied()
    }

    /// The logical switch named `ls_name(vn)`, without building the name.
    pub fn ls_of_vn(&self, vn: &Uuid) -> Option<Uuid> {
        self.ls_by_vn.get(vn).copied()
    }

    /// Ports of one physical switch, by name.
    pub fn ports_of(&self, ps: &PhysicalSwitch) -> BTreeMap<String, PhysicalPort> {
        let Some(t) = self.replica.table("Physical_Port") else {
            return BTreeMap::new();
        };
        ps.ports
            .iter()
            .filter_map(|u| PhysicalPort::from_row(&t.schema, *u, t.get(u)?).ok())
            .map(|p| (p.name.clone(), p))
            .collect()
    }

    pub fn locator_ip(&self, uuid: &Uuid) -> Option<&str> {
        self.locator_ip.get(uuid).map(String::as_str)
    }

    /// The VXLAN locator toward `ip`, if the switch has one.
    pub fn locator_for(&self, ip: &str) -> Option<Uuid> {
        self.locator_by_ip.get(ip).copied()
    }

    pub fn locator_set(&self, uuid: &Uuid) -> Option<PhysicalLocatorSet> {
        let t = self.replica.table("Physical_Locator_Set")?;
        PhysicalLocatorSet::from_row(&t.schema, *uuid, t.get(uuid)?).ok()
    }

    /// A locator set holding exactly the locator toward `ip`, if one exists.
    pub fn locator_set_for(&self, ip: &str) -> Option<Uuid> {
        let loc = self.locator_for(ip)?;
        let t = self.replica.table("Physical_Locator_Set")?;
        t.iter()
            .filter_map(|(u, r)| PhysicalLocatorSet::from_row(&t.schema, *u, r).ok())
            .find(|s| s.locators.len() == 1 && s.locators.contains(&loc))
            .map(|s| s.uuid)
    }

    /// Remote MAC rows for (LS, MAC).
    pub fn remote_rows(&self, ls: &Uuid, mac: &Mac) -> Vec<&MacRow> {
        self.ucast_remote
            .get(&(*ls, *mac))
            .map(|v| v.iter().filter_map(|u| self.remote_rows.get(u)).collect())
            .unwrap_or_default()
    }

    pub fn all_remote_rows(&self) -> impl Iterator<Item = &MacRow> {
        self.remote_rows.values()
    }

    pub fn remote_count(&self) -> usize {
        self.remote_rows.len()
    }

    pub fn local_rows(&self, ls: &Uuid, mac: &Mac) -> Vec<&MacRow> {
        self.ucast_local
            .get(&(*ls, *mac))
            .map(|v| v.iter().filter_map(|u| self.local_rows.get(u)).collect())
            .unwrap_or_default()
    }

    /// The first local row of a MAC, without collecting them all.
    pub fn first_local(&self, ls: &Uuid, mac: &Mac) -> Option<&MacRow> {
        self.ucast_local
            .get(&(*ls, *mac))
            .and_then(|v| v.iter().find_map(|u| self.local_rows.get(u)))
    }

    pub fn has_local(&self, ls: &Uuid, mac: &Mac) -> bool {
        self.ucast_local.contains_key(&(*ls, *mac))
    }

    pub fn all_local_rows(&self) -> impl Iterator<Item = &MacRow> {
        self.local_rows.values()
    }

    pub fn local_count(&self) -> usize {
        self.local_rows.len()
    }

    /// Local MACs of one logical switch.
    pub fn locals_of(&self, ls: &Uuid) -> impl Iterator<Item = &MacRow> + '_ {
        let ls = *ls;
        self.local_rows.values().filter(move |r| r.ls == ls)
    }

    pub fn mcast_remote_rows(&self, ls: &Uuid) -> Vec<McastMacsRemote> {
        let Some(t) = self.replica.table("Mcast_Macs_Remote") else {
            return Vec::new();
        };
        self.mcast_remote
            .get(ls)
            .map(|v| {
                v.iter()
                    .filter_map(|u| McastMacsRemote::from_row(&t.schema, *u, t.get(u)?).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn all_mcast_remote(&self) -> Vec<McastMacsRemote> {
        self.typed("Mcast_Macs_Remote", McastMacsRemote::from_row)
    }

    /// Whether rows the switch owns still point at this logical switch
    /// (it cannot be deleted until they go).
    pub fn ls_has_local_refs(&self, ls: &Uuid) -> bool {
        self.mcast_local_by_ls.contains_key(ls) || self.local_rows.values().any(|r| r.ls == *ls)
    }

    pub fn local_ref_rows(&self, ls: &Uuid) -> (Vec<Uuid>, Vec<Uuid>) {
        let ucast = self
            .local_rows
            .values()
            .filter(|r| r.ls == *ls)
            .map(|r| r.uuid)
            .collect();
        let mcast = self
            .mcast_local_by_ls
            .get(ls)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        (ucast, mcast)
    }

    /// Remote MAC rows of one logical switch.
    pub fn remote_rows_of(&self, ls: &Uuid) -> Vec<&MacRow> {
        self.remote_rows.values().filter(|r| r.ls == *ls).collect()
    }
}

/// The VN a logical switch name stands for, when the name is exactly the
/// one `ls_name` gives it (the form every lookup by name uses).
fn canonical_vn(name: &str) -> Option<Uuid> {
    vn_of_ls_name(name).filter(|vn| ls_name(vn) == name)
}
