//! The switch's side of its `hardware_vtep` database: seeding it as a real
//! switch's is, reading the manager's bindings, turning an FDB [`Plan`] into
//! one transaction, and picking out of each commit what the FDB must know.
//! Everything here runs in-process on the server's [`Db`].

use std::collections::BTreeSet;

use ovsdb::client::{Condition, Mutation, Mutator, RowValues, TransactOutcome, Transaction};
use ovsdb::server::{Commit, Db, DbData};
use ovsdb::vtep::{
    Global, LogicalSwitch, PhysicalLocator, PhysicalPort, PhysicalSwitch, DATABASE, UNKNOWN_DST,
    VXLAN_OVER_IPV4,
};
use ovsdb::{Atom, Datum, Uuid};
use serde_json::{json, Value};

use super::fdb::{Plan, PortView, MAX_VLAN};
use super::mac::Mac;
use super::spec::SwitchSpec;
use super::SwitchError;

/// Runs a transaction in-process; any operation or commit error is an error.
pub fn run(db: &Db, txn: &Transaction) -> Result<TransactOutcome, SwitchError> {
    let ops = txn
        .ops
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SwitchError::Transaction(format!("encoding: {e}")))?;
    let result = serde_json::Value::Array(db.transact(&ops));
    let outcome = TransactOutcome::from_json(txn, &result).map_err(SwitchError::Transaction)?;
    if let Some((op, e)) = outcome.error() {
        let at = op.map(|i| format!(" (operation {i})")).unwrap_or_default();
        return Err(SwitchError::Transaction(format!("{e}{at}")));
    }
    Ok(outcome)
}

fn uuid_set(atoms: impl IntoIterator<Item = Atom>) -> Datum {
    Datum::set(atoms)
}

/// Seeds a fresh database as a switch's: the `Global` row, its
/// `Physical_Switch` with the ports, and one `Manager` row per target.
/// Returns the `Physical_Switch` UUID.
pub fn seed(db: &Db, spec: &SwitchSpec) -> Result<Uuid, SwitchError> {
    let mut txn = Transaction::new(DATABASE);
    let mut ports = Vec::new();
    for name in &spec.ports {
        let (_, atom) = txn.insert(
            PhysicalPort::TABLE,
            vec![("name".into(), Datum::scalar(name.as_str()))],
        );
        ports.push(atom);
    }
    let mut managers = Vec::new();
    for target in &spec.managers {
        let mut row: RowValues = vec![("target".into(), Datum::scalar(target.to_string()))];
        if let Some(b) = spec.max_backoff {
            row.push((
                "max_backoff".into(),
                Datum::scalar(i64::try_from(b.as_millis()).unwrap_or(i64::MAX)),
            ));
        }
        if let Some(p) = spec.inactivity_probe {
            row.push((
                "inactivity_probe".into(),
                Datum::scalar(i64::try_from(p.as_millis()).unwrap_or(i64::MAX)),
            ));
        }
        let (_, atom) = txn.insert("Manager", row);
        managers.push(atom);
    }
    let (ps, ps_atom) = txn.insert(
        PhysicalSwitch::TABLE,
        vec![
            ("name".into(), Datum::scalar(spec.name.as_str())),
            (
                "description".into(),
                Datum::scalar(spec.description.as_str()),
            ),
            (
                "management_ips".into(),
                Datum::set([Atom::string(spec.management_ip.to_string())]),
            ),
            (
                "tunnel_ips".into(),
                Datum::set([Atom::string(spec.tunnel_ip.to_string())]),
            ),
            ("ports".into(), uuid_set(ports)),
        ],
    );
    txn.insert(
        Global::TABLE,
        vec![
            ("switches".into(), uuid_set([ps_atom])),
            ("managers".into(), uuid_set(managers)),
        ],
    );
    let outcome = run(db, &txn)?;
    outcome
        .uuid(ps)
        .ok_or_else(|| SwitchError::Transaction("seeding returned no Physical_Switch".into()))
}

/// The ports of switch `ps` and their bindings (none if the switch is gone).
pub fn read_ports(data: &DbData, ps: Uuid) -> Vec<PortView> {
    let (Some(pst), Some(ppt)) = (
        data.table(PhysicalSwitch::TABLE),
        data.table(PhysicalPort::TABLE),
    ) else {
        return Vec::new();
    };
    let Some(sw) = pst
        .get(&ps)
        .and_then(|r| PhysicalSwitch::from_row(&pst.schema, ps, &r.row).ok())
    else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(sw.ports.len());
    for pu in &sw.ports {
        let Some(port) = ppt
            .get(pu)
            .and_then(|r| PhysicalPort::from_row(&ppt.schema, *pu, &r.row).ok())
        else {
            continue;
        };
        let bindings = port
            .vlan_bindings
            .iter()
            .filter_map(|(vlan, ls)| {
                u16::try_from(*vlan)
                    .ok()
                    .filter(|v| *v <= MAX_VLAN)
                    .map(|v| (v, *ls))
            })
            .collect();
        out.push(PortView {
            name: port.name,
            bindings,
        });
    }
    out
}

/// The port's row UUID by name, among switch `ps`'s ports.
pub fn port_uuid(data: &DbData, ps: Uuid, name: &str) -> Option<Uuid> {
    let pst = data.table(PhysicalSwitch::TABLE)?;
    let ppt = data.table(PhysicalPort::TABLE)?;
    let sw = PhysicalSwitch::from_row(&pst.schema, ps, &pst.get(&ps)?.row).ok()?;
    sw.ports.iter().copied().find(|pu| {
        ppt.get(pu)
            .and_then(|r| PhysicalPort::from_row(&ppt.schema, *pu, &r.row).ok())
            .is_some_and(|p| p.name == name)
    })
}

/// The switch's own locator (VXLAN to its tunnel IP, no per-tunnel key),
/// if some row already uses it: locators are indexed and immutable, so it
/// is reused, never created twice.
pub fn find_locator(data: &DbData, tunnel_ip: &str) -> Option<Uuid> {
    let t = data.table(PhysicalLocator::TABLE)?;
    t.iter().find_map(|(u, r)| {
        let l = PhysicalLocator::from_row(&t.schema, *u, &r.row).ok()?;
        (l.encapsulation_type == VXLAN_OVER_IPV4 && l.dst_ip == tunnel_ip && l.tunnel_key.is_none())
            .then_some(*u)
    })
}

/// A logical switch's UUID by name.
pub fn logical_switch_by_name(data: &DbData, name: &str) -> Option<Uuid> {
    let t = data.table(LogicalSwitch::TABLE)?;
    t.iter().find_map(|(u, r)| {
        LogicalSwitch::from_row(&t.schema, *u, &r.row)
            .ok()
            .filter(|ls| ls.name == name)
            .map(|_| *u)
    })
}

/// A logical switch's name (for listings).
pub fn logical_switch_name(data: &DbData, ls: &Uuid) -> Option<String> {
    let t = data.table(LogicalSwitch::TABLE)?;
    LogicalSwitch::from_row(&t.schema, *ls, &t.get(ls)?.row)
        .ok()
        .map(|l| l.name)
}

/// A plan as the operations of one transaction, and where to find the
/// inserted rows' UUIDs. Built as JSON directly: this is the hot path of
/// learning a million MACs, and the typed builder's serialization cost a
/// quarter of it.
pub struct PlanTxn {
    pub ops: Vec<Value>,
    /// Positions of the `Ucast_Macs_Local` inserts, in the plan's order.
    pub ucast: Vec<usize>,
    /// Positions of the `Mcast_Macs_Local` inserts.
    pub mcast: Vec<usize>,
}

fn uuid_json(u: &Uuid) -> Value {
    json!(["uuid", u.to_string()])
}

impl PlanTxn {
    /// Runs it; the inserted rows' UUIDs in the plan's order.
    pub fn run(&self, db: &Db) -> Result<(Vec<Uuid>, Vec<Uuid>), SwitchError> {
        let results = run_json(db, &self.ops)?;
        let get = |at: &[usize]| -> Result<Vec<Uuid>, SwitchError> {
            at.iter()
                .map(|i| {
                    results
                        .get(*i)
                        .and_then(|r| r.get("uuid"))
                        .and_then(|u| u.get(1))
                        .and_then(Value::as_str)
                        .and_then(|s| ovsdb::value::parse_uuid(s).ok())
                        .ok_or_else(|| {
                            SwitchError::Transaction(format!("no UUID for operation {i}"))
                        })
                })
                .collect()
        };
        Ok((get(&self.ucast)?, get(&self.mcast)?))
    }
}

/// Runs raw operations in-process; any operation or commit error is an error.
pub fn run_json(db: &Db, ops: &[Value]) -> Result<Vec<Value>, SwitchError> {
    let results = db.transact(ops);
    let failed = results
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.get("error").map(|e| (i, r, e)));
    if let Some((i, r, e)) = failed {
        let error = e.as_str().map_or_else(|| e.to_string(), str::to_string);
        let details = r.get("details").and_then(Value::as_str).unwrap_or("");
        let at = if i < ops.len() {
            format!(" (operation {i})")
        } else {
            String::new()
        };
        return Err(SwitchError::Transaction(format!("{error}: {details}{at}")));
    }
    if results.len() < ops.len() {
        return Err(SwitchError::Transaction(format!(
            "{} results for {} operations",
            results.len(),
            ops.len()
        )));
    }
    Ok(results)
}

/// Builds the transaction for a plan. New rows refer to the switch's
/// locator: `locator` if it exists, else one created in this transaction
/// (a non-root row must be inserted with the row that refers to it).
pub fn plan_txn(plan: &Plan, locator: Option<Uuid>, tunnel_ip: &str) -> PlanTxn {
    let mut ops =
        Vec::with_capacity(plan.len() + 2 * plan.clear.len() + plan.mcast_insert.len() + 1);
    for ls in &plan.clear {
        for table in ["Ucast_Macs_Local", "Mcast_Macs_Local"] {
            ops.push(json!({"op": "delete", "table": table,
                "where": [["logical_switch", "==", uuid_json(ls)]]}));
        }
    }
    for (_, row) in &plan.delete {
        ops.push(json!({"op": "delete", "table": "Ucast_Macs_Local",
            "where": [["_uuid", "==", uuid_json(row)]]}));
    }
    let mut ucast = Vec::with_capacity(plan.insert.len());
    let mut mcast = Vec::with_capacity(plan.mcast_insert.len());
    if !plan.insert.is_empty() || !plan.mcast_insert.is_empty() {
        let loc = match locator {
            Some(u) => uuid_json(&u),
            None => {
                ops.push(json!({"op": "insert", "table": PhysicalLocator::TABLE,
                    "uuid-name": "locator",
                    "row": {"encapsulation_type": VXLAN_OVER_IPV4, "dst_ip": tunnel_ip}}));
                json!(["named-uuid", "locator"])
            }
        };
        for (mac, ls) in &plan.insert {
            ucast.push(ops.len());
            ops.push(json!({"op": "insert", "table": "Ucast_Macs_Local",
                "row": {"MAC": mac.to_string(), "logical_switch": uuid_json(ls),
                        "locator": loc}}));
        }
        for (i, ls) in plan.mcast_insert.iter().enumerate() {
            let set = format!("set{i}");
            ops.push(json!({"op": "insert", "table": "Physical_Locator_Set",
                "uuid-name": set, "row": {"locators": loc}}));
            mcast.push(ops.len());
            ops.push(json!({"op": "insert", "table": "Mcast_Macs_Local",
                "row": {"MAC": UNKNOWN_DST, "logical_switch": uuid_json(ls),
                        "locator_set": ["named-uuid", set]}}));
        }
    }
    PlanTxn { ops, ucast, mcast }
}

/// Binds (port, VLAN) to the logical switch `ls_name` as a manager does,
/// creating the logical switch (with `tunnel_key` = `vni`) if needed.
/// Returns the logical switch's UUID.
pub fn bind(
    db: &Db,
    ps: Uuid,
    port: &str,
    vlan: u16,
    ls_name: &str,
    vni: Option<i64>,
) -> Result<Uuid, SwitchError> {
    if vlan > MAX_VLAN {
        return Err(SwitchError::Fdb(super::fdb::FdbError::BadVlan(u32::from(
            vlan,
        ))));
    }
    let (port_row, existing) =
        db.read(|d| (port_uuid(d, ps, port), logical_switch_by_name(d, ls_name)));
    let port_row =
        port_row.ok_or_else(|| SwitchError::Fdb(super::fdb::FdbError::UnknownPort(port.into())))?;
    let mut txn = Transaction::new(DATABASE);
    let (ls_atom, handle) = match existing {
        Some(u) => (Atom::Uuid(u), None),
        None => {
            let mut row: RowValues = vec![("name".into(), Datum::scalar(ls_name))];
            if let Some(k) = vni {
                row.push(("tunnel_key".into(), Datum::scalar(k)));
            }
            let (h, a) = txn.insert(LogicalSwitch::TABLE, row);
            (a, Some(h))
        }
    };
    txn.mutate(
        PhysicalPort::TABLE,
        vec![Condition::uuid(port_row)],
        vec![
            Mutation::new(
                "vlan_bindings",
                Mutator::Delete,
                Datum::set([Atom::Integer(i64::from(vlan))]),
            ),
            Mutation::new(
                "vlan_bindings",
                Mutator::Insert,
                Datum::map([(Atom::Integer(i64::from(vlan)), ls_atom)]),
            ),
        ],
    );
    let outcome = run(db, &txn)?;
    match (existing, handle) {
        (Some(u), _) => Ok(u),
        (None, Some(h)) => outcome
            .uuid(h)
            .ok_or_else(|| SwitchError::Transaction("no UUID for the logical switch".into())),
        (None, None) => Err(SwitchError::Transaction("no logical switch".into())),
    }
}

/// Removes the binding of (port, VLAN), as `vtep-ctl unbind-ls` does.
pub fn unbind(db: &Db, ps: Uuid, port: &str, vlan: u16) -> Result<(), SwitchError> {
    let port_row = db
        .read(|d| port_uuid(d, ps, port))
        .ok_or_else(|| SwitchError::Fdb(super::fdb::FdbError::UnknownPort(port.into())))?;
    let mut txn = Transaction::new(DATABASE);
    txn.mutate(
        PhysicalPort::TABLE,
        vec![Condition::uuid(port_row)],
        vec![Mutation::new(
            "vlan_bindings",
            Mutator::Delete,
            Datum::set([Atom::Integer(i64::from(vlan))]),
        )],
    );
    run(db, &txn).map(|_| ())
}

/// What the FDB must learn from commits (its own and everyone else's).
#[derive(Debug, Default)]
pub struct CommitEvents {
    /// Ports or their bindings may have changed.
    pub ports_changed: bool,
    /// Deleted `Ucast_Macs_Local` rows: (MAC, row).
    pub local_deleted: Vec<(Mac, Uuid)>,
    /// Deleted `Mcast_Macs_Local` rows: (logical switch, row).
    pub mcast_deleted: Vec<(Uuid, Uuid)>,
    /// `Ucast_Macs_Remote` rows written (new, or MAC or logical switch
    /// changed): (logical switch, MAC).
    pub remote_written: Vec<(Uuid, Mac)>,
    /// Rows whose MAC column is not a MAC (ignored).
    pub bad_macs: usize,
}

impl CommitEvents {
    pub fn is_empty(&self) -> bool {
        !self.ports_changed
            && self.local_deleted.is_empty()
            && self.mcast_deleted.is_empty()
            && self.remote_written.is_empty()
    }

    /// Adds what one commit says.
    pub fn scan(&mut self, commit: &Commit) {
        for t in &commit.tables {
            let col = |name: &str| t.schema.column_index(name);
            match t.schema.name.as_str() {
                "Physical_Port" | "Physical_Switch" => self.ports_changed = true,
                "Ucast_Macs_Local" => {
                    let Some(mc) = col("MAC") else { continue };
                    for r in &t.rows {
                        if let (Some(old), None) = (&r.old, &r.new) {
                            match old.get(mc).and_then(Datum::as_str).map(str::parse::<Mac>) {
                                Some(Ok(mac)) => self.local_deleted.push((mac, r.uuid)),
                                _ => self.bad_macs += 1,
                            }
                        }
                    }
                }
                "Mcast_Macs_Local" => {
                    let Some(lc) = col("logical_switch") else {
                        continue;
                    };
                    for r in &t.rows {
                        if let (Some(old), None) = (&r.old, &r.new) {
                            if let Some(ls) = old.get(lc).and_then(Datum::as_uuid) {
                                self.mcast_deleted.push((ls, r.uuid));
                            }
                        }
                    }
                }
                "Ucast_Macs_Remote" => {
                    let (Some(mc), Some(lc)) = (col("MAC"), col("logical_switch")) else {
                        continue;
                    };
                    for r in &t.rows {
                        let Some(new) = &r.new else { continue };
                        let key = |row: &ovsdb::server::RowData| {
                            (
                                row.get(mc).and_then(Datum::as_str).map(str::to_string),
                                row.get(lc).and_then(Datum::as_uuid),
                            )
                        };
                        let (mac, ls) = key(new);
                        if r.old.as_ref().is_some_and(|o| key(o) == (mac.clone(), ls)) {
                            continue;
                        }
                        match (mac.as_deref().map(str::parse::<Mac>), ls) {
                            (Some(Ok(mac)), Some(ls)) => self.remote_written.push((ls, mac)),
                            _ => self.bad_macs += 1,
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The `Global` row's switches (for tests and status).
pub fn switches(data: &DbData) -> BTreeSet<Uuid> {
    data.table(Global::TABLE)
        .and_then(|t| {
            t.iter()
                .next()
                .and_then(|(u, r)| Global::from_row(&t.schema, *u, &r.row).ok())
        })
        .map(|g| g.switches)
        .unwrap_or_default()
}

/// Counts the rows of each table named, in one read.
pub fn row_counts<const N: usize>(db: &Db, tables: [&str; N]) -> [usize; N] {
    db.read(|d| tables.map(|t| d.table(t).map_or(0, |t| t.len())))
}
