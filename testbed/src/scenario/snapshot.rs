//! A switch database as the invariant checks read it: logical switches, port VLAN bindings,
//! local and remote unicast MACs and remote multicast rows, with references resolved to
//! names and IPs. Built from a simulated switch's in-process database, or from the JSON
//! reply of a `select` on every table (a real `ovsdb-server`). Pure.

use std::collections::{BTreeMap, HashMap};

use ovsdb::server::DbData;
use ovsdb::vtep::{
    LogicalSwitch, McastMacsRemote, PhysicalLocator, PhysicalLocatorSet, PhysicalPort,
    UcastMacsLocal, UcastMacsRemote, DATABASE,
};
use ovsdb::Uuid;
use serde_json::{json, Value};

/// One unicast MAC row: logical switch name, MAC (lower case) and locator IP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacRow {
    pub ls: String,
    pub mac: String,
    pub ip: String,
}

/// One `Mcast_Macs_Remote` row: logical switch name, MAC and the locator set's IPs (sorted).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct McastRow {
    pub ls: String,
    pub mac: String,
    pub ips: Vec<String>,
}

/// Shown for a reference to a row that does not exist.
pub const DANGLING: &str = "<dangling>";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwitchSnapshot {
    pub name: String,
    /// Logical switch name → `tunnel_key`.
    pub logical_switches: BTreeMap<String, Option<i64>>,
    /// Names held by more than one logical switch row.
    pub duplicate_ls: Vec<String>,
    /// Port name → VLAN → logical switch name.
    pub ports: BTreeMap<String, BTreeMap<i64, String>>,
    pub local: Vec<MacRow>,
    pub remote: Vec<MacRow>,
    pub mcast_remote: Vec<McastRow>,
}

/// Resolves uuids to names and IPs while rows are read.
#[derive(Default)]
struct Refs {
    ls: HashMap<Uuid, String>,
    locators: HashMap<Uuid, String>,
    sets: HashMap<Uuid, Vec<Uuid>>,
}

impl Refs {
    fn ls(&self, u: &Uuid) -> String {
        self.ls.get(u).cloned().unwrap_or_else(|| DANGLING.into())
    }
    fn ip(&self, u: &Uuid) -> String {
        self.locators
            .get(u)
            .cloned()
            .unwrap_or_else(|| DANGLING.into())
    }
    fn set_ips(&self, u: &Uuid) -> Vec<String> {
        let mut ips: Vec<String> = self
            .sets
            .get(u)
            .map(|v| v.iter().map(|l| self.ip(l)).collect())
            .unwrap_or_else(|| vec![DANGLING.into()]);
        ips.sort();
        ips
    }
}

fn add_ls(snap: &mut SwitchSnapshot, refs: &mut Refs, uuid: Uuid, name: String, key: Option<i64>) {
    if snap.logical_switches.insert(name.clone(), key).is_some() {
        snap.duplicate_ls.push(name.clone());
    }
    refs.ls.insert(uuid, name);
}

impl SwitchSnapshot {
    /// Reads a simulated switch's database (in-process, no serialization).
    pub fn from_db(name: &str, d: &DbData) -> SwitchSnapshot {
        let mut snap = SwitchSnapshot {
            name: name.to_string(),
            ..SwitchSnapshot::default()
        };
        let mut refs = Refs::default();
        macro_rules! rows {
            ($ty:ty) => {{
                let mut out = Vec::new();
                if let Some(t) = d.table(<$ty>::TABLE) {
                    for (u, r) in t.iter() {
                        if let Ok(v) = <$ty>::from_row(&t.schema, *u, &r.row) {
                            out.push(v);
                        }
                    }
                }
                out
            }};
        }
        for ls in rows!(LogicalSwitch) {
            add_ls(&mut snap, &mut refs, ls.uuid, ls.name, ls.tunnel_key);
        }
        for l in rows!(PhysicalLocator) {
            refs.locators.insert(l.uuid, l.dst_ip);
        }
        for s in rows!(PhysicalLocatorSet) {
            refs.sets.insert(s.uuid, s.locators.into_iter().collect());
        }
        for p in rows!(PhysicalPort) {
            let b = p
                .vlan_bindings
                .iter()
                .map(|(v, ls)| (*v, refs.ls(ls)))
                .collect();
            snap.ports.insert(p.name, b);
        }
        for r in rows!(UcastMacsLocal) {
            snap.local.push(MacRow {
                ls: refs.ls(&r.logical_switch),
                mac: r.mac.to_ascii_lowercase(),
                ip: refs.ip(&r.locator),
            });
        }
        for r in rows!(UcastMacsRemote) {
            snap.remote.push(MacRow {
                ls: refs.ls(&r.logical_switch),
                mac: r.mac.to_ascii_lowercase(),
                ip: refs.ip(&r.locator),
            });
        }
        for r in rows!(McastMacsRemote) {
            snap.mcast_remote.push(McastRow {
                ls: refs.ls(&r.logical_switch),
                mac: r.mac.to_ascii_lowercase(),
                ips: refs.set_ips(&r.locator_set),
            });
        }
        snap.sort();
        snap
    }

    fn sort(&mut self) {
        self.local.sort();
        self.remote.sort();
        self.mcast_remote.sort();
    }

    /// The `transact` params that select every table [`SwitchSnapshot::from_select`] reads.
    pub fn select_params() -> Value {
        let mut p = vec![json!(DATABASE)];
        for t in SELECTED {
            p.push(json!({"op": "select", "table": t, "where": []}));
        }
        Value::Array(p)
    }

    /// Reads the reply to [`SwitchSnapshot::select_params`] (RFC 7047 JSON).
    pub fn from_select(name: &str, reply: &Value) -> Result<SwitchSnapshot, String> {
        let results = reply
            .as_array()
            .ok_or_else(|| format!("select reply is not an array: {}", short(reply)))?;
        let mut tables: HashMap<&str, &Vec<Value>> = HashMap::new();
        for (t, r) in SELECTED.iter().zip(results) {
            if let Some(e) = r.get("error") {
                return Err(format!("select {t}: {e}"));
            }
            let rows = r
                .get("rows")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("select {t}: no rows in {}", short(r)))?;
            tables.insert(t, rows);
        }
        let get = |t: &str| tables.get(t).map(|v| v.as_slice()).unwrap_or(&[]);
        let mut snap = SwitchSnapshot {
            name: name.to_string(),
            ..SwitchSnapshot::default()
        };
        let mut refs = Refs::default();
        for r in get("Logical_Switch") {
            let key = match r.get("tunnel_key") {
                Some(Value::Number(n)) => n.as_i64(),
                _ => None,
            };
            add_ls(&mut snap, &mut refs, uuid_of(r)?, str_of(r, "name"), key);
        }
        for r in get("Physical_Locator") {
            refs.locators.insert(uuid_of(r)?, str_of(r, "dst_ip"));
        }
        for r in get("Physical_Locator_Set") {
            let set = r.get("locators").map(uuid_set).unwrap_or_default();
            refs.sets.insert(uuid_of(r)?, set);
        }
        for r in get("Physical_Port") {
            let mut b = BTreeMap::new();
            if let Some(Value::Array(m)) = r.get("vlan_bindings") {
                if m.first().and_then(Value::as_str) == Some("map") {
                    for pair in m.get(1).and_then(Value::as_array).into_iter().flatten() {
                        let vlan = pair.get(0).and_then(Value::as_i64);
                        let ls = pair.get(1).and_then(uuid_atom);
                        if let (Some(v), Some(ls)) = (vlan, ls) {
                            b.insert(v, refs.ls(&ls));
                        }
                    }
                }
            }
            snap.ports.insert(str_of(r, "name"), b);
        }
        for (table, out) in [
            ("Ucast_Macs_Local", &mut snap.local),
            ("Ucast_Macs_Remote", &mut snap.remote),
        ] {
            for r in get(table) {
                out.push(MacRow {
                    ls: ref_name(r, "logical_switch", |u| refs.ls(u)),
                    mac: str_of(r, "MAC").to_ascii_lowercase(),
                    ip: ref_name(r, "locator", |u| refs.ip(u)),
                });
            }
        }
        for r in get("Mcast_Macs_Remote") {
            snap.mcast_remote.push(McastRow {
                ls: ref_name(r, "logical_switch", |u| refs.ls(u)),
                mac: str_of(r, "MAC").to_ascii_lowercase(),
                ips: r
                    .get("locator_set")
                    .and_then(uuid_atom)
                    .map(|u| refs.set_ips(&u))
                    .unwrap_or_else(|| vec![DANGLING.into()]),
            });
        }
        snap.sort();
        Ok(snap)
    }

    /// Local rows of one logical switch.
    pub fn locals_in<'a>(&'a self, ls: &'a str) -> impl Iterator<Item = &'a MacRow> {
        self.local.iter().filter(move |r| r.ls == ls)
    }
}

const SELECTED: [&str; 7] = [
    "Logical_Switch",
    "Physical_Locator",
    "Physical_Locator_Set",
    "Physical_Port",
    "Ucast_Macs_Local",
    "Ucast_Macs_Remote",
    "Mcast_Macs_Remote",
];

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

fn uuid_atom(v: &Value) -> Option<Uuid> {
    let a = v.as_array()?;
    if a.first()?.as_str()? != "uuid" {
        return None;
    }
    a.get(1)?.as_str()?.parse().ok()
}

fn uuid_of(row: &Value) -> Result<Uuid, String> {
    row.get("_uuid")
        .and_then(uuid_atom)
        .ok_or_else(|| format!("row without _uuid: {}", short(row)))
}

fn uuid_set(v: &Value) -> Vec<Uuid> {
    if let Some(u) = uuid_atom(v) {
        return vec![u];
    }
    match v.as_array() {
        Some(a) if a.first().and_then(Value::as_str) == Some("set") => a
            .get(1)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(uuid_atom).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn str_of(row: &Value, col: &str) -> String {
    row.get(col)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn ref_name(row: &Value, col: &str, name: impl Fn(&Uuid) -> String) -> String {
    row.get(col)
        .and_then(uuid_atom)
        .map(|u| name(&u))
        .unwrap_or_else(|| DANGLING.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_select_reply_with_references_resolved() {
        let ls = "11111111-1111-4111-8111-111111111111";
        let loc_sw = "22222222-2222-4222-8222-222222222222";
        let loc_tsn = "33333333-3333-4333-8333-333333333333";
        let set = "44444444-4444-4444-8444-444444444444";
        let reply = json!([
            {"rows": [{"_uuid": ["uuid", ls], "name": "Contrail-x", "tunnel_key": 5001}]},
            {"rows": [
                {"_uuid": ["uuid", loc_sw], "dst_ip": "10.0.0.2"},
                {"_uuid": ["uuid", loc_tsn], "dst_ip": "192.0.2.10"}
            ]},
            {"rows": [{"_uuid": ["uuid", set], "locators": ["uuid", loc_tsn]}]},
            {"rows": [
                {"_uuid": ["uuid", "55555555-5555-4555-8555-555555555555"], "name": "p0",
                 "vlan_bindings": ["map", [[100, ["uuid", ls]]]]},
                {"_uuid": ["uuid", "66666666-6666-4666-8666-666666666666"], "name": "p1",
                 "vlan_bindings": ["map", []]}
            ]},
            {"rows": [{"_uuid": ["uuid", "77777777-7777-4777-8777-777777777777"],
                       "MAC": "02:AA:00:00:00:01", "logical_switch": ["uuid", ls],
                       "locator": ["uuid", loc_sw]}]},
            {"rows": [{"_uuid": ["uuid", "88888888-8888-4888-8888-888888888888"],
                       "MAC": "02:bb:00:00:00:01", "logical_switch": ["uuid", ls],
                       "locator": ["uuid", "99999999-9999-4999-8999-999999999999"]}]},
            {"rows": [{"_uuid": ["uuid", "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"],
                       "MAC": "unknown-dst", "logical_switch": ["uuid", ls],
                       "locator_set": ["uuid", set]}]}
        ]);
        let s = SwitchSnapshot::from_select("sw", &reply).unwrap();
        assert_eq!(s.logical_switches.get("Contrail-x"), Some(&Some(5001)));
        assert_eq!(
            s.ports["p0"].get(&100).map(String::as_str),
            Some("Contrail-x")
        );
        assert!(s.ports["p1"].is_empty());
        assert_eq!(
            s.local,
            vec![MacRow {
                ls: "Contrail-x".into(),
                mac: "02:aa:00:00:00:01".into(),
                ip: "10.0.0.2".into()
            }]
        );
        // A locator that does not exist reads as dangling, not as an error.
        assert_eq!(s.remote[0].ip, DANGLING);
        assert_eq!(
            s.mcast_remote,
            vec![McastRow {
                ls: "Contrail-x".into(),
                mac: "unknown-dst".into(),
                ips: vec!["192.0.2.10".into()]
            }]
        );
        assert!(SwitchSnapshot::from_select("sw", &json!({"x": 1})).is_err());
        let err = SwitchSnapshot::from_select("sw", &json!([{"error": "no table"}])).unwrap_err();
        assert!(err.contains("Logical_Switch"), "{err}");
    }
}
