//! The agent's HA and reconcile behaviour, driven with a virtual clock and
//! no sockets: the switch is our in-process OVSDB engine (the same
//! transaction semantics as ovsdb-server: garbage collection, referential
//! integrity, indexes), the control node is this harness.

use crate::hash::HashMap;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ovsdb::client::{TransactOutcome, Transaction};
use ovsdb::schema::hardware_vtep;
use ovsdb::server::{Db, Subscription};
use ovsdb::value::seed::{RowChange, TableChanges, TableUpdates};
use ovsdb::vtep::{
    LogicalSwitch, McastMacsRemote, PhysicalLocator, PhysicalLocatorSet, PhysicalPort,
    UcastMacsRemote,
};
use ovsdb::{Datum, Uuid};
use serde_json::{json, Value};
use tf_xmpp::config::{ConfigItem, ConfigOp, ConfigSection, IfmapNode};
use tf_xmpp::enet::{preference, EnetEntry};

use super::*;
use crate::ifmap::tests::fabric;
use crate::northbound::routes::RouteKey;

const VRF: &str = "default-domain:proj:blue:blue";
const VTEP: &str = "10.0.0.11";
const TSN_A: &str = "198.51.100.1";
const TSN_B: &str = "198.51.100.2";

fn vn() -> Uuid {
    Uuid::from_u128(0xb1)
}

/// A switch: the in-process OVSDB engine seeded as `testbed switch` does.
struct FakeSwitch {
    db: Db,
    sub: Subscription,
}

impl FakeSwitch {
    fn new(name: &str, vtep: &str) -> FakeSwitch {
        let db = Db::new(hardware_vtep());
        let r = db.transact(&[
            json!({"op": "insert", "table": "Physical_Port", "row": {"name": "p1"}, "uuid-name": "p1"}),
            json!({"op": "insert", "table": "Physical_Port", "row": {"name": "p2"}, "uuid-name": "p2"}),
            json!({"op": "insert", "table": "Physical_Switch", "uuid-name": "ps",
                "row": {"name": name, "tunnel_ips": vtep, "management_ips": "192.0.2.1",
                        "ports": ["set", [["named-uuid", "p1"], ["named-uuid", "p2"]]]}}),
            json!({"op": "insert", "table": "Global", "row": {"switches": ["named-uuid", "ps"]}}),
        ]);
        assert!(r.iter().all(|x| x.get("error").is_none()), "{r:?}");
        let sub = db.subscribe();
        FakeSwitch { db, sub }
    }

    fn ops(&self, ops: Vec<Value>) {
        let r = self.db.transact(&ops);
        assert!(
            r.iter().all(|x| !x.is_null() && x.get("error").is_none()),
            "{r:?}"
        );
    }

    /// The logical switch an agent left for the VN (VNI 5001); its uuid.
    fn add_ls(&self) -> Uuid {
        self.ops(vec![json!({"op": "insert", "table": "Logical_Switch",
            "row": {"name": format!("Contrail-{}", vn()), "tunnel_key": 5001}})]);
        self.ls().uuid
    }

    /// The switch learns a MAC on its port (as the simulated switch does).
    fn learn(&self, ls: Uuid, mac: &str) {
        let loc = self.locator(VTEP);
        let loc = match loc {
            Some(u) => json!(["uuid", u.to_string()]),
            None => json!(["named-uuid", "loc"]),
        };
        let mut ops = Vec::new();
        if self.locator(VTEP).is_none() {
            ops.push(
                json!({"op": "insert", "table": "Physical_Locator", "uuid-name": "loc",
                "row": {"dst_ip": VTEP, "encapsulation_type": "vxlan_over_ipv4"}}),
            );
        }
        ops.push(json!({"op": "insert", "table": "Ucast_Macs_Local",
            "row": {"MAC": mac, "logical_switch": ["uuid", ls.to_string()], "locator": loc}}));
        self.ops(ops);
    }

    fn unlearn(&self, mac: &str) {
        self.ops(vec![
            json!({"op": "delete", "table": "Ucast_Macs_Local", "where": [["MAC", "==", mac]]}),
        ]);
    }

    fn rows<T>(
        &self,
        table: &str,
        read: impl Fn(&ovsdb::TableSchema, Uuid, &ovsdb::Row) -> Result<T, ovsdb::vtep::VtepError>,
    ) -> Vec<T> {
        self.db.read(|d| {
            let t = d.table(table).unwrap();
            t.iter()
                .map(|(u, r)| read(&t.schema, *u, &r.row).unwrap())
                .collect()
        })
    }

    fn locator(&self, ip: &str) -> Option<Uuid> {
        self.rows("Physical_Locator", PhysicalLocator::from_row)
            .into_iter()
            .find(|l| l.dst_ip == ip)
            .map(|l| l.uuid)
    }

    fn locator_ip(&self, u: &Uuid) -> String {
        self.rows("Physical_Locator", PhysicalLocator::from_row)
            .into_iter()
            .find(|l| l.uuid == *u)
            .map(|l| l.dst_ip)
            .unwrap_or_default()
    }

    fn logical_switches(&self) -> Vec<LogicalSwitch> {
        self.rows("Logical_Switch", LogicalSwitch::from_row)
    }

    fn ls(&self) -> LogicalSwitch {
        let v = self.logical_switches();
        assert_eq!(v.len(), 1, "{v:?}");
        v[0].clone()
    }

    /// (MAC, locator IP) of every remote MAC row.
    fn remote_macs(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .rows("Ucast_Macs_Remote", UcastMacsRemote::from_row)
            .into_iter()
            .map(|m| (m.mac.clone(), self.locator_ip(&m.locator)))
            .collect();
        v.sort();
        v
    }

    /// Where `unknown-dst` points, per row.
    fn unknown_dst(&self) -> Vec<Vec<String>> {
        let sets = self.rows("Physical_Locator_Set", PhysicalLocatorSet::from_row);
        self.rows("Mcast_Macs_Remote", McastMacsRemote::from_row)
            .into_iter()
            .filter(|m| m.mac == "unknown-dst")
            .map(|m| {
                let set = sets.iter().find(|s| s.uuid == m.locator_set).unwrap();
                set.locators.iter().map(|l| self.locator_ip(l)).collect()
            })
            .collect()
    }

    fn port(&self, name: &str) -> PhysicalPort {
        self.rows("Physical_Port", PhysicalPort::from_row)
            .into_iter()
            .find(|p| p.name == name)
            .unwrap()
    }

    /// Everything in the database as an initial monitor dump.
    fn dump(&self) -> TableUpdates {
        self.db.read(|d| {
            let mut out = TableUpdates::default();
            for name in MONITORED {
                let t = d.table(name).unwrap();
                let rows = t
                    .iter()
                    .map(|(u, r)| {
                        (
                            *u,
                            RowChange::Insert(r.row.columns.iter().cloned().enumerate().collect()),
                        )
                    })
                    .collect();
                out.tables.push(TableChanges {
                    table: hardware_vtep().table(name).unwrap().clone(),
                    rows,
                });
            }
            out
        })
    }

    /// Committed changes since the last call, as monitor updates.
    fn updates(&mut self) -> Vec<TableUpdates> {
        let mut out = Vec::new();
        while let Some(c) = self.sub.try_recv() {
            let mut u = TableUpdates::default();
            for t in &c.tables {
                let rows = t
                    .rows
                    .iter()
                    .map(|r| {
                        let change = match (&r.old, &r.new) {
                            (_, None) => RowChange::Delete,
                            (None, Some(n)) => RowChange::Insert(
                                n.row.columns.iter().cloned().enumerate().collect(),
                            ),
                            (Some(_), Some(n)) => RowChange::Replace(
                                n.row.columns.iter().cloned().enumerate().collect(),
                            ),
                        };
                        (r.uuid, change)
                    })
                    .collect();
                u.tables.push(TableChanges {
                    table: t.schema.clone(),
                    rows,
                });
            }
            out.push(u);
        }
        out
    }
}

use crate::reconcile::MONITORED;

/// The agent core, a virtual clock, switches and one control node.
struct Harness {
    core: Core,
    now: Instant,
    switches: HashMap<SessionId, FakeSwitch>,
    /// What the control node has from this agent.
    cn: BTreeMap<(String, RouteKey), EnetEntry>,
    subscribed: Vec<String>,
    txns: Vec<Transaction>,
    closed: Vec<SessionId>,
    cn_is_up: bool,
}

impl Harness {
    fn new(agent: &str, tsn: &str) -> Harness {
        let settings = CoreSettings {
            agent_name: agent.into(),
            tsn_ip: tsn.into(),
            plan: PlanSettings {
                batch_rows: 3,
                max_in_flight: 2,
                stale_grace: Duration::from_secs(30),
                ..PlanSettings::default()
            },
            ha_stale_interval: Duration::from_secs(60),
            end_of_config_quiet: Duration::from_secs(5),
            ..CoreSettings::default()
        };
        Harness {
            core: Core::new(settings),
            now: Instant::now(),
            switches: HashMap::default(),
            cn: BTreeMap::new(),
            subscribed: Vec::new(),
            txns: Vec::new(),
            closed: Vec::new(),
            cn_is_up: false,
        }
    }

    fn input(&mut self, i: Input) {
        self.core.handle(i, self.now);
        self.run();
    }

    /// Executes outputs until nothing more comes.
    fn run(&mut self) {
        for _ in 0..1000 {
            let mut outs = self.core.flush(self.now);
            if outs.is_empty() {
                self.deliver_updates();
                outs = self.core.flush(self.now);
                if outs.is_empty() {
                    return;
                }
            }
            for o in outs {
                self.execute(o);
            }
        }
        panic!("agent never settled");
    }

    fn deliver_updates(&mut self) {
        let ids: Vec<SessionId> = self.switches.keys().copied().collect();
        for id in ids {
            let updates = self.switches.get_mut(&id).unwrap().updates();
            for u in updates {
                self.core
                    .handle(Input::SessionUpdates { id, updates: u }, self.now);
            }
        }
    }

    fn execute(&mut self, o: Output) {
        match o {
            Output::Transact { session, id, txn } => {
                self.txns.push(txn.clone());
                let Some(sw) = self.switches.get_mut(&session) else {
                    return;
                };
                let params = serde_json::to_value(txn.params()).unwrap();
                let ops: Vec<Value> = params.as_array().unwrap()[1..].to_vec();
                let result = sw.db.transact(&ops);
                // ovsdb-server sends the updates before the reply.
                for u in sw.updates() {
                    self.core.handle(
                        Input::SessionUpdates {
                            id: session,
                            updates: u,
                        },
                        self.now,
                    );
                }
                let outcome = TransactOutcome::from_json(&txn, &Value::Array(result))
                    .map_err(|e| e.to_string());
                self.core.handle(
                    Input::TxnDone {
                        id: session,
                        txn: id,
                        result: outcome,
                    },
                    self.now,
                );
            }
            Output::CloseSession { session, reason } => {
                self.closed.push(session);
                self.switches.remove(&session);
                self.core.handle(
                    Input::SessionClosed {
                        id: session,
                        reason,
                    },
                    self.now,
                );
            }
            Output::SubscribeConfig { .. } => {}
            Output::Subscribe { vrf, .. } => {
                assert!(
                    !self.subscribed.contains(&vrf),
                    "duplicate subscribe to {vrf}"
                );
                self.subscribed.push(vrf);
            }
            Output::Unsubscribe { vrf, .. } => {
                assert!(
                    self.subscribed.contains(&vrf),
                    "unsubscribe without subscribe"
                );
                assert!(
                    !self.cn.keys().any(|(v, _)| *v == vrf),
                    "unsubscribed {vrf} with routes still published"
                );
                self.subscribed.retain(|v| *v != vrf);
            }
            Output::Publish { vrf, entry, .. } => {
                assert!(
                    self.subscribed.contains(&vrf),
                    "publish before subscribe in {vrf}"
                );
                let key = RouteKey::from_entry(&entry).unwrap();
                self.cn.insert((vrf, key), entry);
            }
            Output::Withdraw { vrf, entry, .. } => {
                let key = RouteKey::from_entry(&entry).unwrap();
                assert!(
                    self.cn.remove(&(vrf, key)).is_some(),
                    "withdraw of an unpublished route"
                );
            }
            Output::EndOfRib { .. } => {}
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.input(Input::Tick);
    }

    fn cn_up(&mut self) {
        self.cn_is_up = true;
        self.subscribed.clear();
        self.input(Input::CnUp { cn: 0 });
    }

    fn config(&mut self, sections: Vec<ConfigSection>) {
        self.input(Input::ConfigPush { cn: 0, sections });
        // End of config is detected by quiet.
        self.advance(Duration::from_secs(6));
    }

    /// The control node reflects a route (its best path) to this agent.
    fn route(&mut self, mac: &str, nh: &str, pref: u32, seq: u32) {
        let mut e = EnetEntry::tor_mac(5001, mac, nh, seq);
        e.local_preference = pref;
        self.input(Input::Routes {
            cn: 0,
            vrf: VRF.into(),
            entries: vec![e],
        });
    }

    fn withdraw(&mut self, mac: &str) {
        let key = RouteKey {
            tag: 5001,
            mac: mac.parse().unwrap(),
            address: "0.0.0.0/32".into(),
        };
        self.input(Input::Withdrawals {
            cn: 0,
            vrf: VRF.into(),
            keys: vec![key],
        });
    }

    fn connect(&mut self, id: SessionId, sw: FakeSwitch) {
        self.open(id, sw);
        self.run();
    }

    /// The switch's session up to its initial dump, nothing run yet.
    fn open(&mut self, id: SessionId, sw: FakeSwitch) {
        let dump = sw.dump();
        self.switches.insert(id, sw);
        self.core.handle(
            Input::SessionOpened {
                id,
                peer: format!("127.0.0.1:{id}"),
                cert_name: None,
            },
            self.now,
        );
        self.core.handle(
            Input::SessionSchema {
                id,
                schema: hardware_vtep(),
            },
            self.now,
        );
        self.core
            .handle(Input::SessionUpdates { id, updates: dump }, self.now);
        self.core.handle(Input::MonitorReady { id }, self.now);
    }

    fn sw(&self, id: SessionId) -> &FakeSwitch {
        &self.switches[&id]
    }

    fn learn(&mut self, id: SessionId, mac: &str) {
        let ls = self.sw(id).ls().uuid;
        self.sw(id).learn(ls, mac);
        self.run();
    }

    /// What the control node has for a MAC from us: (preference, sequence, next hop).
    fn exported(&self, mac: &str) -> Option<(u32, u32, String)> {
        let key = RouteKey {
            tag: 5001,
            mac: mac.parse().unwrap(),
            address: "0.0.0.0/32".into(),
        };
        self.cn.get(&(VRF.to_string(), key)).map(|e| {
            (
                e.local_preference,
                e.effective_sequence(),
                e.next_hops[0].address.clone(),
            )
        })
    }

    fn broadcast_exported(&self) -> bool {
        self.cn.keys().any(|(_, k)| k.mac.is_broadcast())
    }

    /// Mirrors what the control node reflects back: our own exports.
    fn reflect_own(&mut self) {
        let entries: Vec<EnetEntry> = self
            .cn
            .iter()
            .filter(|(_, e)| !e.nlri.mac.eq_ignore_ascii_case("ff:ff:ff:ff:ff:ff"))
            .map(|(_, e)| e.clone())
            .collect();
        self.input(Input::Routes {
            cn: 0,
            vrf: VRF.into(),
            entries,
        });
    }
}

fn configured(agent: &str, tsn: &str) -> Harness {
    let mut h = Harness::new(agent, tsn);
    h.cn_up();
    h.config(fabric(agent, vn(), "configured"));
    assert_eq!(h.core.readiness(), "ready");
    h
}

#[test]
fn takeover_programs_an_empty_switch_and_exports_its_macs() {
    let mut h = configured("a1", TSN_A);
    assert_eq!(h.subscribed, vec![VRF.to_string()]);
    h.route("02:00:00:00:00:aa", "10.0.0.99", 100, 1);
    h.route("02:00:00:00:00:bb", "10.0.0.98", 100, 1);
    h.connect(1, FakeSwitch::new("sw1", VTEP));
    let sw = h.sw(1);
    let ls = sw.ls();
    assert_eq!(ls.name, format!("Contrail-{}", vn()));
    assert_eq!(ls.tunnel_key, Some(5001));
    assert_eq!(sw.port("p1").vlan_bindings.get(&100), Some(&ls.uuid));
    assert_eq!(sw.unknown_dst(), vec![vec![TSN_A.to_string()]]);
    assert_eq!(
        sw.remote_macs(),
        vec![
            ("02:00:00:00:00:aa".into(), "10.0.0.99".into()),
            ("02:00:00:00:00:bb".into(), "10.0.0.98".into())
        ]
    );
    let st = h.core.switch("sw1").unwrap();
    assert!(st.last_takeover.as_ref().unwrap().converged.is_some());
    assert!(h.broadcast_exported());
    // The switch learns a MAC: exported at 100 with sequence 1.
    h.learn(1, "02:00:00:00:00:01");
    assert_eq!(
        h.exported("02:00:00:00:00:01"),
        Some((100, 1, VTEP.to_string()))
    );
    // It ages out: withdrawn.
    h.sw(1).unlearn("02:00:00:00:00:01");
    h.run();
    assert_eq!(h.exported("02:00:00:00:00:01"), None);
    // A remote route withdrawn: the row goes at once (this session made it).
    h.withdraw("02:00:00:00:00:aa");
    assert_eq!(
        h.sw(1).remote_macs(),
        vec![("02:00:00:00:00:bb".into(), "10.0.0.98".into())]
    );
}

#[test]
fn takeover_from_the_other_agents_state_fixes_unknown_dst_and_keeps_the_rest() {
    // Agent A programs the switch.
    let mut a = configured("a1", TSN_A);
    a.route("02:00:00:00:00:aa", "10.0.0.99", 100, 1);
    a.connect(1, FakeSwitch::new("sw1", VTEP));
    let ls = a.sw(1).ls().uuid;
    a.sw(1).learn(ls, "02:00:00:00:00:01");
    a.run();
    // A stale remote MAC nobody advertises any more.
    a.sw(1).ops(vec![
        json!({"op": "insert", "table": "Physical_Locator", "uuid-name": "l",
            "row": {"dst_ip": "10.0.0.77", "encapsulation_type": "vxlan_over_ipv4"}}),
        json!({"op": "insert", "table": "Ucast_Macs_Remote",
            "row": {"MAC": "02:00:00:00:00:77", "logical_switch": ["uuid", ls.to_string()], "locator": ["named-uuid", "l"]}}),
    ]);
    let sw = a.switches.remove(&1).unwrap();

    // Agent B (another service node) gets the switch's session.
    let mut b = configured("a1", TSN_B);
    b.route("02:00:00:00:00:aa", "10.0.0.99", 100, 1);
    b.txns.clear();
    b.connect(7, sw);
    let sw = b.sw(7);
    assert_eq!(
        sw.ls().uuid,
        ls,
        "the logical switch is kept, not recreated"
    );
    assert_eq!(
        sw.unknown_dst(),
        vec![vec![TSN_B.to_string()]],
        "unknown-dst moved to our service node"
    );
    let remote = sw.remote_macs();
    assert!(remote.contains(&("02:00:00:00:00:aa".into(), "10.0.0.99".into())));
    assert!(
        remote.contains(&("02:00:00:00:00:77".into(), "10.0.0.77".into())),
        "stale row kept during grace"
    );
    // Nothing rewrote the matching remote MAC.
    let wrote_aa = b.txns.iter().any(|t| {
        serde_json::to_string(&t.params())
            .unwrap()
            .contains("02:00:00:00:00:aa")
    });
    assert!(!wrote_aa, "a matching row must not be rewritten");
    assert_eq!(
        b.exported("02:00:00:00:00:01"),
        Some((100, 1, VTEP.to_string()))
    );
    // After the grace interval the stale row goes.
    b.advance(Duration::from_secs(31));
    assert_eq!(
        b.sw(7).remote_macs(),
        vec![("02:00:00:00:00:aa".into(), "10.0.0.99".into())]
    );
}

#[test]
fn vni_change_updates_the_switch_and_reexports() {
    let mut h = configured("a1", TSN_A);
    h.connect(1, FakeSwitch::new("sw1", VTEP));
    h.learn(1, "02:00:00:00:00:01");
    assert!(h.exported("02:00:00:00:00:01").is_some());
    // The VN's VXLAN id changes to 5002.
    let mut sections = fabric("a1", vn(), "configured");
    for item in &mut sections[0].items {
        if let ConfigItem::Node(n) = item {
            if n.type_name == "virtual-network" {
                let mut props = tf_xmpp::Element::new("virtual-network-properties");
                props = props.leaf("vxlan-network-identifier", 5002);
                n.properties
                    .retain(|p| p.name != "virtual-network-properties");
                n.properties.push(props);
            }
        }
    }
    h.config(sections);
    assert_eq!(h.sw(1).ls().tunnel_key, Some(5002));
    assert_eq!(h.exported("02:00:00:00:00:01"), None, "old key withdrawn");
    let new_key = RouteKey {
        tag: 5002,
        mac: "02:00:00:00:00:01".parse().unwrap(),
        address: "0.0.0.0/32".into(),
    };
    assert!(
        h.cn.contains_key(&(VRF.to_string(), new_key)),
        "new key published"
    );
}

#[test]
fn vtep_ip_change_moves_the_next_hop_of_exports() {
    let mut h = configured("a1", TSN_A);
    h.connect(1, FakeSwitch::new("sw1", VTEP));
    h.learn(1, "02:00:00:00:00:01");
    // The switch's tunnel IP changes (and its local MACs' locator with it).
    let sw = h.sw(1);
    sw.ops(vec![
        json!({"op": "update", "table": "Physical_Switch", "where": [], "row": {"tunnel_ips": "10.0.0.12"}}),
        json!({"op": "insert", "table": "Physical_Locator", "uuid-name": "l2",
            "row": {"dst_ip": "10.0.0.12", "encapsulation_type": "vxlan_over_ipv4"}}),
        json!({"op": "update", "table": "Ucast_Macs_Local", "where": [], "row": {"locator": ["named-uuid", "l2"]}}),
    ]);
    h.run();
    assert_eq!(h.exported("02:00:00:00:00:01").unwrap().2, "10.0.0.12");
    assert!(h
        .cn
        .keys()
        .any(|(_, k)| k.mac.is_broadcast() && k.address == "10.0.0.12/32"));
}

#[test]
fn mac_move_in_both_directions() {
    let mut h = configured("a1", TSN_A);
    h.route("02:00:00:00:00:01", "10.0.0.99", 100, 3);
    h.connect(1, FakeSwitch::new("sw1", VTEP));
    assert_eq!(h.sw(1).remote_macs().len(), 1);
    // The MAC moves here: the switch learns it; we outbid the old location.
    h.learn(1, "02:00:00:00:00:01");
    assert_eq!(
        h.exported("02:00:00:00:00:01"),
        Some((100, 4, VTEP.to_string()))
    );
    // The control node now reflects our route as the best path.
    h.reflect_own();
    assert!(
        h.sw(1).remote_macs().is_empty(),
        "remote row for a MAC now local is removed"
    );
    // It moves away again, with a higher sequence: programmed as remote so
    // the switch sees the move.
    h.route("02:00:00:00:00:01", "10.0.0.98", 100, 5);
    assert_eq!(
        h.sw(1).remote_macs(),
        vec![("02:00:00:00:00:01".into(), "10.0.0.98".into())]
    );
}

#[test]
fn config_removal_cleans_the_switch_and_withdraws() {
    let mut h = configured("a1", TSN_A);
    h.route("02:00:00:00:00:aa", "10.0.0.99", 100, 1);
    h.connect(1, FakeSwitch::new("sw1", VTEP));
    assert!(!h.cn.is_empty());
    // The VMI-VN link goes: the VN is no longer on the switch.
    let del: Vec<ConfigItem> = fabric("a1", vn(), "configured")[0]
        .items
        .iter()
        .filter(|i| matches!(i, ConfigItem::Link(l) if l.metadata == "virtual-machine-interface-virtual-network"))
        .cloned()
        .collect();
    h.config(vec![ConfigSection {
        op: ConfigOp::Delete,
        items: del,
    }]);
    let sw = h.sw(1);
    assert!(sw.logical_switches().is_empty(), "logical switch deleted");
    assert!(sw.remote_macs().is_empty());
    assert!(sw.port("p1").vlan_bindings.is_empty());
    assert!(sw.unknown_dst().is_empty());
    assert!(h.cn.is_empty(), "everything withdrawn");
    assert!(
        h.subscribed.is_empty(),
        "VRF unsubscribed after its routes went"
    );
}

#[test]
fn control_node_loss_and_return() {
    let mut h = configured("a1", TSN_A);
    h.route("02:00:00:00:00:aa", "10.0.0.99", 100, 1);
    h.route("02:00:00:00:00:bb", "10.0.0.98", 100, 1);
    h.connect(1, FakeSwitch::new("sw1", VTEP));
    h.learn(1, "02:00:00:00:00:01");
    h.input(Input::CnDown {
        cn: 0,
        reason: "hold timer expired".into(),
    });
    h.cn_is_up = false;
    assert_eq!(h.core.readiness(), "drain");
    assert_eq!(
        h.sw(1).remote_macs().len(),
        2,
        "stale routes keep the switch forwarding"
    );
    // It comes back: re-subscribes, re-publishes, re-advertises only aa.
    h.cn.clear();
    h.cn_up();
    assert_eq!(h.subscribed, vec![VRF.to_string()]);
    assert_eq!(
        h.exported("02:00:00:00:00:01"),
        Some((100, 1, VTEP.to_string()))
    );
    h.route("02:00:00:00:00:aa", "10.0.0.99", 100, 1);
    h.config(fabric("a1", vn(), "configured"));
    h.input(Input::EndOfRib { cn: 0 });
    assert_eq!(
        h.sw(1).remote_macs(),
        vec![("02:00:00:00:00:aa".into(), "10.0.0.99".into())]
    );
    assert_eq!(
        h.sw(1).ls().tunnel_key,
        Some(5001),
        "config survived the reconnect"
    );
}

#[test]
fn session_flap_during_audit() {
    let mut h = configured("a1", TSN_A);
    for i in 0..20 {
        h.route(&format!("02:00:00:00:01:{i:02x}"), "10.0.0.99", 100, 1);
    }
    let sw = FakeSwitch::new("sw1", VTEP);
    let dump = sw.dump();
    h.switches.insert(1, sw);
    h.core.handle(
        Input::SessionOpened {
            id: 1,
            peer: "p".into(),
            cert_name: None,
        },
        h.now,
    );
    h.core.handle(
        Input::SessionSchema {
            id: 1,
            schema: hardware_vtep(),
        },
        h.now,
    );
    h.core.handle(
        Input::SessionUpdates {
            id: 1,
            updates: dump,
        },
        h.now,
    );
    h.core.handle(Input::MonitorReady { id: 1 }, h.now);
    // The audit's first transactions go out, then the session drops.
    let outs = h.core.flush(h.now);
    assert!(outs.iter().any(|o| matches!(o, Output::Transact { .. })));
    let sw = h.switches.remove(&1).unwrap();
    // Transactions are lost with the session; the rest is delivered.
    for o in outs {
        if !matches!(o, Output::Transact { .. }) {
            h.execute(o);
        }
    }
    h.input(Input::SessionClosed {
        id: 1,
        reason: "connection reset".into(),
    });
    assert!(!h.core.is_active("sw1"));
    // Late replies of the dead session are ignored.
    h.input(Input::TxnDone {
        id: 1,
        txn: 1,
        result: Err("closed".into()),
    });
    // The switch comes back on a new session: full audit from its state.
    h.connect(2, sw);
    assert_eq!(h.sw(2).remote_macs().len(), 20);
    assert!(h
        .core
        .switch("sw1")
        .unwrap()
        .last_takeover
        .as_ref()
        .unwrap()
        .converged
        .is_some());
}

#[test]
fn standby_shadows_at_ha_stale_and_withdraws_after_the_interval() {
    // This agent does not hold sw1; the active agent's routes reach it.
    let mut h = configured("a1", TSN_B);
    h.route("02:00:00:00:00:01", VTEP, 100, 1);
    assert_eq!(
        h.exported("02:00:00:00:00:01"),
        Some((preference::HA_STALE, 0, VTEP.to_string()))
    );
    assert!(
        h.broadcast_exported(),
        "backup keeps a broadcast route toward its service node"
    );
    // The active agent dies: only HA-stale paths are left (ours).
    h.route("02:00:00:00:00:01", VTEP, preference::HA_STALE, 0);
    h.advance(Duration::from_secs(30));
    assert!(
        h.exported("02:00:00:00:00:01").is_some(),
        "kept through the interval"
    );
    h.advance(Duration::from_secs(31));
    assert_eq!(
        h.exported("02:00:00:00:00:01"),
        None,
        "withdrawn after the interval"
    );
    assert!(!h.broadcast_exported());
}

#[test]
fn a_live_path_coming_back_stops_the_shadow_timer() {
    let mut h = configured("a1", TSN_B);
    let mac = "02:00:00:00:00:01";
    h.route(mac, VTEP, 100, 1);
    // The active agent dies; a new one takes the switch over 40 s later (the harness's
    // HA-stale interval is 60 s).
    h.route(mac, VTEP, preference::HA_STALE, 0);
    h.advance(Duration::from_secs(40));
    h.route(mac, VTEP, 100, 2);
    h.advance(Duration::from_secs(70));
    assert_eq!(
        h.exported(mac),
        Some((preference::HA_STALE, 0, VTEP.to_string())),
        "the shadow stays while a live path exists"
    );
    // It dies too: a fresh interval starts.
    h.route(mac, VTEP, preference::HA_STALE, 0);
    h.advance(Duration::from_secs(59));
    assert!(h.exported(mac).is_some());
    h.advance(Duration::from_secs(2));
    assert_eq!(h.exported(mac), None);
}

#[test]
fn takeover_by_the_standby_turns_shadows_live() {
    let mut h = configured("a1", TSN_B);
    h.route("02:00:00:00:00:01", VTEP, 100, 1);
    h.route("02:00:00:00:00:02", VTEP, 100, 1);
    let sw = FakeSwitch::new("sw1", VTEP);
    // The other agent left the switch programmed with its LS; the switch
    // still has MAC 01 but 02 aged out meanwhile.
    let ls = sw.add_ls();
    sw.learn(ls, "02:00:00:00:00:01");
    // Old agent gone: only shadows left.
    h.route("02:00:00:00:00:01", VTEP, preference::HA_STALE, 0);
    h.route("02:00:00:00:00:02", VTEP, preference::HA_STALE, 0);
    h.connect(1, sw);
    assert_eq!(
        h.exported("02:00:00:00:00:01"),
        Some((100, 1, VTEP.to_string()))
    );
    assert_eq!(
        h.exported("02:00:00:00:00:02"),
        None,
        "a MAC the switch no longer has is dropped at once"
    );
    // Losing the session again: live routes drop to HA-stale, not to nothing.
    let id = 1;
    h.switches.remove(&id);
    h.input(Input::SessionClosed {
        id,
        reason: "keepalive".into(),
    });
    assert_eq!(
        h.exported("02:00:00:00:00:01"),
        Some((preference::HA_STALE, 0, VTEP.to_string()))
    );
}

#[test]
fn a_second_session_for_the_same_switch_replaces_the_first() {
    let mut h = configured("a1", TSN_A);
    h.connect(1, FakeSwitch::new("sw1", VTEP));
    let sw2 = FakeSwitch::new("sw1", VTEP);
    h.connect(2, sw2);
    assert_eq!(h.closed, vec![1]);
    assert!(h.core.is_active("sw1"));
}

#[test]
fn a_switch_without_config_is_held_but_not_written() {
    let mut h = configured("a1", TSN_A);
    h.connect(1, FakeSwitch::new("other-switch", VTEP));
    assert!(h.txns.is_empty());
    let st = h.core.status(h.now);
    assert_eq!(st.sessions.len(), 1);
    assert!(st.sessions[0].switch.is_none());
}

/// Inserts into `table` among a transaction's operations.
fn inserts_into(txn: &Transaction, table: &str) -> usize {
    let params = serde_json::to_value(txn.params()).unwrap();
    params
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| op["op"] == "insert" && op["table"] == table)
        .count()
}

#[test]
fn a_transaction_that_creates_locators_carries_one_mac_per_new_locator() {
    let mut h = configured("a1", TSN_A);
    for i in 0..6 {
        let vtep = if i % 2 == 0 { "10.0.0.98" } else { "10.0.0.99" };
        h.route(&format!("02:00:00:00:00:{i:02x}"), vtep, 100, 1);
    }
    h.connect(1, FakeSwitch::new("sw1", VTEP));
    // Everything else toward the new VTEPs waits for the locators, so the
    // transaction creating them stays small and commits fast.
    let first = h
        .txns
        .iter()
        .find(|t| inserts_into(t, "Ucast_Macs_Remote") > 0)
        .unwrap();
    assert_eq!(inserts_into(first, "Physical_Locator"), 2);
    assert_eq!(inserts_into(first, "Ucast_Macs_Remote"), 2);
    assert_eq!(h.sw(1).remote_macs().len(), 6);
    assert!(h.sw(1).locator("10.0.0.98").is_some());
    assert!(h.sw(1).locator("10.0.0.99").is_some());
    let locators: usize = h
        .txns
        .iter()
        .map(|t| inserts_into(t, "Physical_Locator"))
        .sum();
    assert_eq!(
        locators, 3,
        "two remote VTEPs and the service node, once each"
    );
}

#[test]
fn at_takeover_a_learnt_mac_outbids_the_remote_route_for_it() {
    let mut h = configured("a1", TSN_A);
    // Another switch advertised the MAC (it moved there, sequence 5); this
    // switch has learnt it since. Switch transactions are planned before the
    // HA logic fixes the local sequence: the local MAC must still win.
    h.route("02:00:00:00:00:01", "10.0.0.99", 100, 5);
    let sw = FakeSwitch::new("sw1", VTEP);
    let ls = sw.add_ls();
    sw.learn(ls, "02:00:00:00:00:01");
    h.connect(1, sw);
    assert!(
        h.txns
            .iter()
            .all(|t| inserts_into(t, "Ucast_Macs_Remote") == 0),
        "the remote MAC was never written, not even for a moment"
    );
    assert_eq!(h.sw(1).remote_macs(), vec![]);
    assert_eq!(
        h.exported("02:00:00:00:00:01"),
        Some((100, 6, VTEP.to_string()))
    );
}

#[test]
fn exports_wait_briefly_for_the_transaction_creating_locators() {
    let mut h = configured("a1", TSN_A);
    h.route("02:00:00:00:00:aa", "10.0.0.99", 100, 1);
    let sw = FakeSwitch::new("sw1", VTEP);
    let ls = sw.add_ls();
    sw.learn(ls, "02:00:00:00:00:01");
    h.open(1, sw);
    let live = |out: &[Output]| {
        out.iter().any(|o| {
            matches!(o, Output::Publish { entry, .. }
                if entry.nlri.mac == "02:00:00:00:00:01" && entry.local_preference == 100)
        })
    };
    // The locator transaction goes out; the exports wait for its answer...
    let out = h.core.flush(h.now);
    assert!(out.iter().any(|o| matches!(o, Output::Transact { .. })));
    assert!(!live(&out));
    let wake = h.core.next_wake().unwrap();
    assert!(wake <= h.now + Duration::from_millis(200), "{wake:?}");
    // ... but not for long: the switch's MACs are exported even if it never comes.
    h.now += Duration::from_millis(200);
    let out = h.core.flush(h.now);
    assert!(live(&out));
}

#[allow(dead_code)]
fn unused(_: IfmapNode, _: Datum) {}
