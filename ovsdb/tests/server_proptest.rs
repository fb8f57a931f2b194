//! Random transactions never panic the engine, leave every invariant intact
//! (reference counts equal a recount, no dangling strong reference, no
//! unreferenced non-root row, indexes consistent), and are atomic: a
//! transaction whose result holds an error changes nothing.

use std::collections::BTreeMap;

use ovsdb::server::{Db, Server};
use ovsdb::value::Uuid;
use proptest::prelude::*;
use serde_json::{json, Value};

#[derive(Clone, Debug)]
enum Ref {
    /// The n-th existing row of the table (modulo), if any.
    Existing(usize),
    /// A named-uuid, inserted by this transaction or not.
    Named(u8),
    /// A UUID that exists nowhere.
    Random,
}

#[derive(Clone, Debug)]
enum OpSpec {
    InsertLs {
        name: u8,
        key: i64,
    },
    InsertMac {
        mac: u8,
        ls: Ref,
        pl: Option<u8>,
        existing_pl: usize,
    },
    InsertOrphanLocator {
        ip: u8,
    },
    InsertSwitch {
        name: u8,
        ports: u8,
        ls: Ref,
        vlan: i64,
    },
    DeleteMac {
        mac: u8,
    },
    DeleteLs {
        name: u8,
    },
    DeleteGlobal,
    ClearSwitches,
    RenameLs {
        from: u8,
        to: u8,
    },
    Bind {
        vlan: i64,
        ls: Ref,
        insert: bool,
    },
    Abort,
    Select,
}

fn any_ref() -> impl Strategy<Value = Ref> {
    prop_oneof![
        4 => (0usize..8).prop_map(Ref::Existing),
        2 => (0u8..3).prop_map(Ref::Named),
        1 => Just(Ref::Random),
    ]
}

fn any_op() -> impl Strategy<Value = OpSpec> {
    prop_oneof![
        3 => (0u8..6, prop_oneof![0i64..10, Just(5000)]).prop_map(|(name, key)| OpSpec::InsertLs { name, key }),
        4 => (0u8..12, any_ref(), proptest::option::of(0u8..4), 0usize..4)
            .prop_map(|(mac, ls, pl, existing_pl)| OpSpec::InsertMac { mac, ls, pl, existing_pl }),
        1 => (0u8..4).prop_map(|ip| OpSpec::InsertOrphanLocator { ip }),
        2 => (0u8..3, 0u8..3, any_ref(), prop_oneof![0i64..4, Just(4096)])
            .prop_map(|(name, ports, ls, vlan)| OpSpec::InsertSwitch { name, ports, ls, vlan }),
        3 => (0u8..12).prop_map(|mac| OpSpec::DeleteMac { mac }),
        2 => (0u8..6).prop_map(|name| OpSpec::DeleteLs { name }),
        1 => Just(OpSpec::DeleteGlobal),
        1 => Just(OpSpec::ClearSwitches),
        1 => (0u8..6, 0u8..6).prop_map(|(from, to)| OpSpec::RenameLs { from, to }),
        2 => (0i64..4, any_ref(), any::<bool>()).prop_map(|(vlan, ls, insert)| OpSpec::Bind { vlan, ls, insert }),
        1 => Just(OpSpec::Abort),
        1 => Just(OpSpec::Select),
    ]
}

fn uuids(db: &Db, table: &str) -> Vec<Uuid> {
    db.read(|d| {
        let mut v: Vec<Uuid> = d.table(table).unwrap().iter().map(|(u, _)| *u).collect();
        v.sort();
        v
    })
}

fn resolve(db: &Db, r: &Ref, table: &str) -> Value {
    match r {
        Ref::Existing(i) => {
            let all = uuids(db, table);
            if all.is_empty() {
                json!(["uuid", Uuid::new_v4().to_string()])
            } else {
                json!(["uuid", all[i % all.len()].to_string()])
            }
        }
        Ref::Named(n) => json!(["named-uuid", format!("ls{n}")]),
        Ref::Random => json!(["uuid", Uuid::new_v4().to_string()]),
    }
}

fn to_json(db: &Db, op: &OpSpec, out: &mut Vec<Value>) {
    match op {
        OpSpec::InsertLs { name, key } => out.push(json!({"op": "insert", "table": "Logical_Switch",
            "uuid-name": format!("ls{name}"), "row": {"name": format!("ls-{name}"), "tunnel_key": key}})),
        OpSpec::InsertMac { mac, ls, pl, existing_pl } => {
            let locator = match pl {
                Some(ip) => {
                    out.push(json!({"op": "insert", "table": "Physical_Locator", "uuid-name": format!("pl{}", out.len()),
                        "row": {"encapsulation_type": "vxlan_over_ipv4", "dst_ip": format!("10.0.0.{ip}")}}));
                    json!(["named-uuid", format!("pl{}", out.len() - 1)])
                }
                None => resolve(db, &Ref::Existing(*existing_pl), "Physical_Locator"),
            };
            out.push(json!({"op": "insert", "table": "Ucast_Macs_Remote", "row": {
                "MAC": format!("00:00:00:00:00:{mac:02x}"),
                "logical_switch": resolve(db, ls, "Logical_Switch"), "locator": locator}}));
        }
        OpSpec::InsertOrphanLocator { ip } => out.push(json!({"op": "insert", "table": "Physical_Locator",
            "row": {"encapsulation_type": "vxlan_over_ipv4", "dst_ip": format!("10.9.0.{ip}")}})),
        OpSpec::InsertSwitch { name, ports, ls, vlan } => {
            let mut port_refs = Vec::new();
            for p in 0..*ports {
                let n = format!("port{}_{p}", out.len());
                out.push(json!({"op": "insert", "table": "Physical_Port", "uuid-name": n,
                    "row": {"name": format!("p{p}"), "vlan_bindings": ["map", [[vlan, resolve(db, ls, "Logical_Switch")]]]}}));
                port_refs.push(json!(["named-uuid", n]));
            }
            let s = format!("ps{}", out.len());
            out.push(json!({"op": "insert", "table": "Physical_Switch", "uuid-name": s,
                "row": {"name": format!("sw{name}"), "ports": ["set", port_refs]}}));
            out.push(json!({"op": "insert", "table": "Global", "row": {"switches": ["named-uuid", s]}}));
        }
        OpSpec::DeleteMac { mac } => out.push(json!({"op": "delete", "table": "Ucast_Macs_Remote",
            "where": [["MAC", "==", format!("00:00:00:00:00:{mac:02x}")]]})),
        OpSpec::DeleteLs { name } => out.push(json!({"op": "delete", "table": "Logical_Switch",
            "where": [["name", "==", format!("ls-{name}")]]})),
        OpSpec::DeleteGlobal => out.push(json!({"op": "delete", "table": "Global", "where": []})),
        OpSpec::ClearSwitches => out.push(json!({"op": "update", "table": "Global", "where": [], "row": {"switches": ["set", []]}})),
        OpSpec::RenameLs { from, to } => out.push(json!({"op": "update", "table": "Logical_Switch",
            "where": [["name", "==", format!("ls-{from}")]], "row": {"name": format!("ls-{to}")}})),
        OpSpec::Bind { vlan, ls, insert } => out.push(json!({"op": "mutate", "table": "Physical_Port", "where": [],
            "mutations": [["vlan_bindings", if *insert { "insert" } else { "delete" },
                if *insert { json!(["map", [[vlan, resolve(db, ls, "Logical_Switch")]]]) } else { json!(["set", [vlan]]) }]]})),
        OpSpec::Abort => out.push(json!({"op": "abort"})),
        OpSpec::Select => out.push(json!({"op": "select", "table": "Physical_Locator", "where": []})),
    }
}

/// Every row's UUID and version, by table: equal iff nothing changed.
fn fingerprint(db: &Db) -> BTreeMap<String, Vec<(Uuid, Uuid)>> {
    db.read(|d| {
        d.tables()
            .iter()
            .map(|t| {
                let mut rows: Vec<(Uuid, Uuid)> = t.iter().map(|(u, r)| (*u, r.version)).collect();
                rows.sort();
                (t.schema.name.clone(), rows)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_transactions_keep_integrity(txns in prop::collection::vec(prop::collection::vec(any_op(), 1..5), 1..30)) {
        let server = Server::hardware_vtep();
        let db = server.db("hardware_vtep").unwrap();
        let mut committed = 0;
        for spec in &txns {
            let mut ops = Vec::new();
            for op in spec {
                to_json(&db, op, &mut ops);
            }
            let before = fingerprint(&db);
            let result = db.transact(&ops);
            let failed = result.iter().any(|r| r.get("error").is_some());
            prop_assert!(result.len() == ops.len() || (failed && result.len() == ops.len() + 1),
                "{} ops, {} results", ops.len(), result.len());
            if failed {
                prop_assert_eq!(&before, &fingerprint(&db), "failed transaction changed data: {:?}", result);
                // after the first error every result is null
                let first = result.iter().position(|r| r.get("error").is_some()).unwrap();
                prop_assert!(result[first + 1..].iter().all(Value::is_null));
            } else {
                committed += 1;
            }
            let check = db.read(|d| d.check_integrity());
            prop_assert!(check.is_ok(), "{:?} after {:?}", check, ops);
        }
        let _ = committed;
    }
}

#[test]
fn generated_transactions_do_commit_sometimes() {
    // Guards the property above against vacuity: a typical sequence must
    // commit rows and collect garbage, not only fail.
    let server = Server::hardware_vtep();
    let db = server.db("hardware_vtep").unwrap();
    let mut ops = Vec::new();
    to_json(&db, &OpSpec::InsertLs { name: 1, key: 1 }, &mut ops);
    to_json(
        &db,
        &OpSpec::InsertMac {
            mac: 1,
            ls: Ref::Named(1),
            pl: Some(1),
            existing_pl: 0,
        },
        &mut ops,
    );
    let r = db.transact(&ops);
    assert!(r.iter().all(|x| x.get("error").is_none()), "{r:?}");
    assert_eq!(uuids(&db, "Physical_Locator").len(), 1);
    let mut ops = Vec::new();
    to_json(&db, &OpSpec::DeleteMac { mac: 1 }, &mut ops);
    db.transact(&ops);
    assert_eq!(uuids(&db, "Physical_Locator").len(), 0);
    db.read(|d| d.check_integrity()).unwrap();
}
