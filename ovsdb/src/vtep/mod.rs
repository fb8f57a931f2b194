//! Typed rows of the `hardware_vtep` tables the ToR agent and the simulated
//! switch use, so their code never handles raw JSON or column positions.
//!
//! Each struct reads from a replica or server `Row` (`from_row`) and writes
//! the column values of an insert or update (`to_values`). Reads are
//! tolerant: a column missing from the peer's schema reads as its default.

use std::collections::{BTreeMap, BTreeSet};

use crate::client::RowValues;
use crate::schema::TableSchema;
use crate::value::{Atom, Datum, Row, Uuid};

/// The database name of the VTEP schema.
pub const DATABASE: &str = "hardware_vtep";

/// The `MAC` of the multicast row that carries unknown-destination (BUM)
/// traffic to the service node.
pub const UNKNOWN_DST: &str = "unknown-dst";

/// The only encapsulation hardware_vtep 1.7.0 defines.
pub const VXLAN_OVER_IPV4: &str = "vxlan_over_ipv4";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table}.{column}: {reason}")]
pub struct VtepError {
    pub table: &'static str,
    pub column: &'static str,
    pub reason: String,
}

/// Conversion between a column value and a Rust field.
pub trait ColumnValue: Sized {
    fn from_datum(d: &Datum) -> Result<Self, String>;
    fn to_datum(&self) -> Datum;
    fn default_value() -> Self;
}

impl ColumnValue for String {
    fn from_datum(d: &Datum) -> Result<Self, String> {
        match d.as_scalar() {
            Some(Atom::String(s)) => Ok(s.to_string()),
            None if d.is_empty() => Ok(String::new()),
            _ => Err(format!("expected a string, got {}", d.to_json())),
        }
    }
    fn to_datum(&self) -> Datum {
        Datum::scalar(self.as_str())
    }
    fn default_value() -> Self {
        String::new()
    }
}

impl ColumnValue for i64 {
    fn from_datum(d: &Datum) -> Result<Self, String> {
        d.as_integer()
            .ok_or_else(|| format!("expected an integer, got {}", d.to_json()))
    }
    fn to_datum(&self) -> Datum {
        Datum::scalar(*self)
    }
    fn default_value() -> Self {
        0
    }
}

impl ColumnValue for bool {
    fn from_datum(d: &Datum) -> Result<Self, String> {
        d.as_bool()
            .ok_or_else(|| format!("expected a boolean, got {}", d.to_json()))
    }
    fn to_datum(&self) -> Datum {
        Datum::scalar(*self)
    }
    fn default_value() -> Self {
        false
    }
}

impl ColumnValue for Uuid {
    fn from_datum(d: &Datum) -> Result<Self, String> {
        d.as_uuid()
            .ok_or_else(|| format!("expected a uuid, got {}", d.to_json()))
    }
    fn to_datum(&self) -> Datum {
        Datum::scalar(*self)
    }
    fn default_value() -> Self {
        Uuid::nil()
    }
}

/// An optional (0..1) column.
impl<T: ColumnValue> ColumnValue for Option<T> {
    fn from_datum(d: &Datum) -> Result<Self, String> {
        if d.is_empty() {
            Ok(None)
        } else {
            T::from_datum(d).map(Some)
        }
    }
    fn to_datum(&self) -> Datum {
        match self {
            Some(v) => v.to_datum(),
            None => Datum::empty_set(),
        }
    }
    fn default_value() -> Self {
        None
    }
}

fn atom_to<T: ColumnValue>(a: &Atom) -> Result<T, String> {
    T::from_datum(&Datum::Set(smallvec::smallvec![a.clone()]))
}

/// A set column.
impl<T: ColumnValue + Ord> ColumnValue for BTreeSet<T> {
    fn from_datum(d: &Datum) -> Result<Self, String> {
        d.set_atoms().iter().map(atom_to).collect()
    }
    fn to_datum(&self) -> Datum {
        Datum::set(
            self.iter()
                .filter_map(|v| v.to_datum().as_scalar().cloned()),
        )
    }
    fn default_value() -> Self {
        BTreeSet::new()
    }
}

/// A map column.
impl<K: ColumnValue + Ord, V: ColumnValue> ColumnValue for BTreeMap<K, V> {
    fn from_datum(d: &Datum) -> Result<Self, String> {
        d.map_pairs()
            .iter()
            .map(|(k, v)| Ok((atom_to(k)?, atom_to(v)?)))
            .collect()
    }
    fn to_datum(&self) -> Datum {
        Datum::map(self.iter().filter_map(|(k, v)| {
            Some((
                k.to_datum().as_scalar()?.clone(),
                v.to_datum().as_scalar()?.clone(),
            ))
        }))
    }
    fn default_value() -> Self {
        BTreeMap::new()
    }
}

macro_rules! vtep_tables {
    ($(
        $(#[$meta:meta])*
        $name:ident in $table:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty => $col:literal ),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name {
            pub uuid: Uuid,
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $name {
            pub const TABLE: &'static str = $table;

            /// Reads a row of this table.
            pub fn from_row(table: &TableSchema, uuid: Uuid, row: &Row) -> Result<Self, VtepError> {
                Ok($name {
                    uuid,
                    $( $field: match table.column_index($col).and_then(|i| row.get(i)) {
                        Some(d) => <$ty as ColumnValue>::from_datum(d).map_err(|reason| VtepError {
                            table: $table,
                            column: $col,
                            reason,
                        })?,
                        None => <$ty as ColumnValue>::default_value(),
                    }, )*
                })
            }

            /// Every column's value, for an insert (the uuid is not a column).
            pub fn to_values(&self) -> RowValues {
                vec![ $( ($col.to_string(), self.$field.to_datum()), )* ]
            }
        }
    )*};
}

vtep_tables! {
    /// The one row of the database.
    Global in "Global" {
        managers: BTreeSet<Uuid> => "managers",
        switches: BTreeSet<Uuid> => "switches",
        other_config: BTreeMap<String, String> => "other_config",
    }

    /// A manager target the switch dials (or listens on).
    Manager in "Manager" {
        target: String => "target",
        max_backoff: Option<i64> => "max_backoff",
        inactivity_probe: Option<i64> => "inactivity_probe",
        is_connected: bool => "is_connected",
        status: BTreeMap<String, String> => "status",
        other_config: BTreeMap<String, String> => "other_config",
    }

    /// The switch itself, written by the switch.
    PhysicalSwitch in "Physical_Switch" {
        name: String => "name",
        description: String => "description",
        management_ips: BTreeSet<String> => "management_ips",
        tunnel_ips: BTreeSet<String> => "tunnel_ips",
        ports: BTreeSet<Uuid> => "ports",
        tunnels: BTreeSet<Uuid> => "tunnels",
        switch_fault_status: BTreeSet<String> => "switch_fault_status",
    }

    /// A port of the switch; the manager writes its `vlan_bindings`.
    PhysicalPort in "Physical_Port" {
        name: String => "name",
        description: String => "description",
        /// VLAN → Logical_Switch.
        vlan_bindings: BTreeMap<i64, Uuid> => "vlan_bindings",
        port_fault_status: BTreeSet<String> => "port_fault_status",
    }

    /// A virtual network on the switch, written by the manager.
    LogicalSwitch in "Logical_Switch" {
        name: String => "name",
        description: String => "description",
        /// The VNI.
        tunnel_key: Option<i64> => "tunnel_key",
        replication_mode: Option<String> => "replication_mode",
    }

    /// A MAC the switch learnt on one of its ports.
    UcastMacsLocal in "Ucast_Macs_Local" {
        mac: String => "MAC",
        logical_switch: Uuid => "logical_switch",
        locator: Uuid => "locator",
        ipaddr: String => "ipaddr",
    }

    /// A MAC behind a remote VTEP, written by the manager.
    UcastMacsRemote in "Ucast_Macs_Remote" {
        mac: String => "MAC",
        logical_switch: Uuid => "logical_switch",
        locator: Uuid => "locator",
        ipaddr: String => "ipaddr",
    }

    /// Local multicast/BUM reachability (for example `unknown-dst`).
    McastMacsLocal in "Mcast_Macs_Local" {
        mac: String => "MAC",
        logical_switch: Uuid => "logical_switch",
        locator_set: Uuid => "locator_set",
        ipaddr: String => "ipaddr",
    }

    /// Where the switch sends BUM traffic: `unknown-dst` to the service node.
    McastMacsRemote in "Mcast_Macs_Remote" {
        mac: String => "MAC",
        logical_switch: Uuid => "logical_switch",
        locator_set: Uuid => "locator_set",
        ipaddr: String => "ipaddr",
    }

    /// A tunnel endpoint. Immutable and indexed on (encapsulation, dst_ip,
    /// tunnel_key): reuse an existing one, never update it.
    PhysicalLocator in "Physical_Locator" {
        encapsulation_type: String => "encapsulation_type",
        dst_ip: String => "dst_ip",
        tunnel_key: Option<i64> => "tunnel_key",
    }

    /// A set of locators (immutable).
    PhysicalLocatorSet in "Physical_Locator_Set" {
        locators: BTreeSet<Uuid> => "locators",
    }
}

impl PhysicalLocator {
    /// A new VXLAN-over-IPv4 locator toward `dst_ip`.
    pub fn vxlan(dst_ip: &str) -> PhysicalLocator {
        PhysicalLocator {
            uuid: Uuid::nil(),
            encapsulation_type: VXLAN_OVER_IPV4.to_string(),
            dst_ip: dst_ip.to_string(),
            tunnel_key: None,
        }
    }
}

/// Reads every row of a table of a replica into typed rows, skipping (and
/// reporting) rows that do not decode.
pub fn read_all<T>(
    table: Option<&crate::client::TableReplica>,
    read: impl Fn(&TableSchema, Uuid, &Row) -> Result<T, VtepError>,
) -> (Vec<T>, Vec<VtepError>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    if let Some(t) = table {
        for (u, row) in t.iter() {
            match read(&t.schema, *u, row) {
                Ok(v) => ok.push(v),
                Err(e) => bad.push(e),
            }
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::hardware_vtep;

    #[test]
    fn round_trips_through_rows() {
        let s = hardware_vtep();
        let t = s.table(PhysicalPort::TABLE).unwrap();
        let ls = Uuid::new_v4();
        let port = PhysicalPort {
            uuid: Uuid::new_v4(),
            name: "xe-0/0/1".into(),
            description: String::new(),
            vlan_bindings: [(100, ls), (0, ls)].into_iter().collect(),
            port_fault_status: BTreeSet::new(),
        };
        let mut row = Row::with_defaults(t);
        for (col, d) in port.to_values() {
            row.columns[t.column_index(&col).unwrap()] = d;
        }
        assert_eq!(PhysicalPort::from_row(t, port.uuid, &row).unwrap(), port);

        let lt = s.table(LogicalSwitch::TABLE).unwrap();
        let empty = Row::with_defaults(lt);
        let ls_row = LogicalSwitch::from_row(lt, ls, &empty).unwrap();
        assert_eq!(ls_row.tunnel_key, None);
        assert_eq!(ls_row.name, "");
    }

    #[test]
    fn wrong_types_are_errors_not_panics() {
        let s = hardware_vtep();
        let t = s.table(LogicalSwitch::TABLE).unwrap();
        let mut row = Row::with_defaults(t);
        row.columns[t.column_index("tunnel_key").unwrap()] = Datum::scalar("x");
        let e = LogicalSwitch::from_row(t, Uuid::nil(), &row).unwrap_err();
        assert_eq!(e.column, "tunnel_key");
    }
}
