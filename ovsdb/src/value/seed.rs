//! Typed, allocation-lean deserialization of the hot path: table updates
//! (monitor replies and `update`/`update2` notifications) straight from the
//! wire bytes into `Datum`s, guided by the schema, with no intermediate
//! `serde_json::Value`. A 100k-row dump is tens of megabytes; building a
//! `Value` tree for it first costs several times the parse itself.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{parse_uuid, Atom, AtomicType, Datum, Uuid};
use crate::schema::{ColumnType, DatabaseSchema, TableSchema};

/// Column values of one row as (column position, value) pairs.
pub type Columns = Vec<(usize, Datum)>;

/// One row's change, normalized across `update` (v1) and `update2`.
#[derive(Clone, Debug, PartialEq)]
pub enum RowChange {
    /// A new row (v2 `initial`/`insert`, v1 `new` without `old`). Columns
    /// left out hold their default values.
    Insert(Columns),
    /// v2 `modify`: per-column diffs (see `Datum::apply_diff`).
    Modify(Columns),
    /// v1 `old` + `new`: the new values of every monitored column.
    Replace(Columns),
    Delete,
}

/// The changes of one table.
#[derive(Clone, Debug)]
pub struct TableChanges {
    pub table: Arc<TableSchema>,
    pub rows: Vec<(Uuid, RowChange)>,
}

/// A whole `<table-updates>` or `<table-updates2>` object.
#[derive(Clone, Debug, Default)]
pub struct TableUpdates {
    pub tables: Vec<TableChanges>,
}

impl TableUpdates {
    pub fn row_count(&self) -> usize {
        self.tables.iter().map(|t| t.rows.len()).sum()
    }
}

/// Which notification format the updates come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateFormat {
    /// `monitor` / `update`: `{"old":…,"new":…}`.
    V1,
    /// `monitor_cond` / `update2` (and `update3`'s payload).
    V2,
}

/// Seed for a `<table-updates>` object of a known schema. Tables and columns
/// the schema does not know are skipped, so a peer with a newer schema minor
/// version still works.
pub struct TableUpdatesSeed<'a> {
    pub schema: &'a DatabaseSchema,
    pub format: UpdateFormat,
}

impl<'de> DeserializeSeed<'de> for TableUpdatesSeed<'_> {
    type Value = TableUpdates;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TableUpdates, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TableUpdatesSeed<'_> {
    type Value = TableUpdates;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a <table-updates> object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TableUpdates, A::Error> {
        let mut out = TableUpdates::default();
        while let Some(table) = map.next_key_seed(TableKeySeed(self.schema))? {
            match table {
                Some(t) => {
                    let rows = map.next_value_seed(TableRowsSeed {
                        table: &t,
                        format: self.format,
                    })?;
                    out.tables.push(TableChanges { table: t, rows });
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

struct TableKeySeed<'a>(&'a DatabaseSchema);

impl<'de> DeserializeSeed<'de> for TableKeySeed<'_> {
    type Value = Option<Arc<TableSchema>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for TableKeySeed<'_> {
    type Value = Option<Arc<TableSchema>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.table(v).cloned())
    }
}

struct TableRowsSeed<'a> {
    table: &'a TableSchema,
    format: UpdateFormat,
}

impl<'de> DeserializeSeed<'de> for TableRowsSeed<'_> {
    type Value = Vec<(Uuid, RowChange)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TableRowsSeed<'_> {
    type Value = Vec<(Uuid, RowChange)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of row updates keyed by uuid")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut rows = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(uuid) = map.next_key_seed(UuidStrSeed)? {
            let change = map.next_value_seed(RowUpdateSeed {
                table: self.table,
                format: self.format,
            })?;
            rows.push((uuid, change));
        }
        Ok(rows)
    }
}

/// A uuid written as a plain string (row keys of table updates).
pub struct UuidStrSeed;

impl<'de> DeserializeSeed<'de> for UuidStrSeed {
    type Value = Uuid;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Uuid, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for UuidStrSeed {
    type Value = Uuid;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a uuid string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Uuid, E> {
        parse_uuid(v).map_err(E::custom)
    }
}

struct RowUpdateSeed<'a> {
    table: &'a TableSchema,
    format: UpdateFormat,
}

impl<'de> DeserializeSeed<'de> for RowUpdateSeed<'_> {
    type Value = RowChange;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RowChange, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowUpdateSeed<'_> {
    type Value = RowChange;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a <row-update> object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RowChange, A::Error> {
        let mut old_seen = false;
        let mut new: Option<Columns> = None;
        let mut result: Option<RowChange> = None;
        while let Some(key) = map.next_key::<Word>()? {
            match (self.format, key) {
                (UpdateFormat::V2, Word::Initial | Word::Insert) => {
                    result = Some(RowChange::Insert(map.next_value_seed(RowSeed(self.table))?))
                }
                (UpdateFormat::V2, Word::Modify) => {
                    result = Some(RowChange::Modify(map.next_value_seed(RowSeed(self.table))?))
                }
                (UpdateFormat::V2, Word::Delete) => {
                    map.next_value::<IgnoredAny>()?;
                    result = Some(RowChange::Delete);
                }
                (UpdateFormat::V1, Word::Old) => {
                    map.next_value::<IgnoredAny>()?;
                    old_seen = true;
                }
                (UpdateFormat::V1, Word::New) => {
                    new = Some(map.next_value_seed(RowSeed(self.table))?)
                }
                (_, other) => {
                    return Err(de::Error::custom(format!(
                        "unexpected member \"{}\" in row update",
                        other.name()
                    )))
                }
            }
        }
        match self.format {
            UpdateFormat::V2 => {
                result.ok_or_else(|| de::Error::custom("row update2 has no operation"))
            }
            UpdateFormat::V1 => Ok(match (old_seen, new) {
                (false, Some(cols)) => RowChange::Insert(cols),
                (true, Some(cols)) => RowChange::Replace(cols),
                (true, None) => RowChange::Delete,
                (false, None) => {
                    return Err(de::Error::custom("row update has neither old nor new"))
                }
            }),
        }
    }
}

/// The words that appear as keys and tags in table updates, matched without
/// allocating (a 100k-row dump has several per row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Word {
    Initial,
    Insert,
    Modify,
    Delete,
    Old,
    New,
    Set,
    Map,
    Uuid,
    NamedUuid,
    Other,
}

impl Word {
    fn name(self) -> &'static str {
        match self {
            Word::Initial => "initial",
            Word::Insert => "insert",
            Word::Modify => "modify",
            Word::Delete => "delete",
            Word::Old => "old",
            Word::New => "new",
            Word::Set => "set",
            Word::Map => "map",
            Word::Uuid => "uuid",
            Word::NamedUuid => "named-uuid",
            Word::Other => "(unknown)",
        }
    }
}

impl<'de> de::Deserialize<'de> for Word {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Word, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Word;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a keyword")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Word, E> {
                Ok(match v {
                    "initial" => Word::Initial,
                    "insert" => Word::Insert,
                    "modify" => Word::Modify,
                    "delete" => Word::Delete,
                    "old" => Word::Old,
                    "new" => Word::New,
                    "set" => Word::Set,
                    "map" => Word::Map,
                    "uuid" => Word::Uuid,
                    "named-uuid" => Word::NamedUuid,
                    _ => Word::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// The second element of `["uuid", "…"]` or `["named-uuid", "…"]`, decoded
/// from the borrowed string without an intermediate allocation.
struct UuidAtomSeed(Word);

impl<'de> DeserializeSeed<'de> for UuidAtomSeed {
    type Value = Atom;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Atom, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for UuidAtomSeed {
    type Value = Atom;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a uuid string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Atom, E> {
        if self.0 == Word::Uuid {
            parse_uuid(v).map(Atom::Uuid).map_err(E::custom)
        } else {
            Ok(Atom::NamedUuid(v.into()))
        }
    }
}

/// Seed for a `<row>` object: column name → value, typed by the schema.
pub struct RowSeed<'a>(pub &'a TableSchema);

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Columns;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Columns, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Columns;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a <row> object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Columns, A::Error> {
        let mut cols = Vec::with_capacity(map.size_hint().unwrap_or(self.0.columns.len()));
        while let Some(idx) = map.next_key_seed(ColumnKeySeed(self.0))? {
            match idx.and_then(|i| self.0.columns.get(i).map(|c| (i, c))) {
                Some((i, col)) => cols.push((i, map.next_value_seed(DatumSeed(&col.ty))?)),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(cols)
    }
}

struct ColumnKeySeed<'a>(&'a TableSchema);

impl<'de> DeserializeSeed<'de> for ColumnKeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ColumnKeySeed<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a column name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.column_index(v))
    }
}

/// Seed for one column value of a known type.
pub struct DatumSeed<'a>(pub &'a ColumnType);

impl<'de> DeserializeSeed<'de> for DatumSeed<'_> {
    type Value = Datum;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Datum, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DatumSeed<'_> {
    type Value = Datum;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an OVSDB <value>")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Datum, E> {
        AtomSeed(self.0.key.atomic).visit_str(v).map(single)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Datum, E> {
        AtomSeed(self.0.key.atomic).visit_i64(v).map(single)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Datum, E> {
        AtomSeed(self.0.key.atomic).visit_u64(v).map(single)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Datum, E> {
        AtomSeed(self.0.key.atomic).visit_f64(v).map(single)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Datum, E> {
        AtomSeed(self.0.key.atomic).visit_bool(v).map(single)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Datum, A::Error> {
        let tag: Word = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("empty array is not an OVSDB value"))?;
        let datum = match tag {
            Word::Set => {
                let atoms = seq
                    .next_element_seed(AtomsSeed(self.0.key.atomic))?
                    .ok_or_else(|| de::Error::custom("[\"set\"] needs its elements"))?;
                let n = atoms.len();
                let d = Datum::set(atoms);
                if d.len() != n {
                    return Err(de::Error::custom("set contains duplicate value"));
                }
                d
            }
            Word::Map => {
                let vt = self
                    .0
                    .value
                    .as_ref()
                    .ok_or_else(|| de::Error::custom("map value for a non-map column"))?;
                let pairs = seq
                    .next_element_seed(PairsSeed(self.0.key.atomic, vt.atomic))?
                    .ok_or_else(|| de::Error::custom("[\"map\"] needs its pairs"))?;
                let n = pairs.len();
                let d = Datum::map(pairs);
                if d.len() != n {
                    return Err(de::Error::custom("map contains duplicate key"));
                }
                d
            }
            Word::Uuid | Word::NamedUuid => {
                if self.0.key.atomic != AtomicType::Uuid {
                    return Err(de::Error::custom(format!(
                        "uuid value for a {} column",
                        self.0.key.atomic
                    )));
                }
                single(
                    seq.next_element_seed(UuidAtomSeed(tag))?
                        .ok_or_else(|| de::Error::custom("uuid needs its string"))?,
                )
            }
            _ => return Err(de::Error::custom("unknown value tag")),
        };
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("trailing elements in an OVSDB value"));
        }
        if self.0.value.is_some() && !datum.is_map() && !datum.is_empty() {
            return Err(de::Error::custom("set value for a map column"));
        }
        Ok(datum)
    }
}

fn single(a: Atom) -> Datum {
    Datum::Set(smallvec::smallvec![a])
}

/// Seed for one atom of a known type.
pub struct AtomSeed(pub AtomicType);

impl<'de> DeserializeSeed<'de> for AtomSeed {
    type Value = Atom;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Atom, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AtomSeed {
    type Value = Atom;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an atom of type {}", self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Atom, E> {
        match self.0 {
            AtomicType::String => Ok(Atom::String(v.into())),
            t => Err(E::custom(format!("string for a {t} value"))),
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Atom, E> {
        match self.0 {
            AtomicType::Integer => Ok(Atom::Integer(v)),
            AtomicType::Real => Ok(Atom::Real(v as f64)),
            t => Err(E::custom(format!("number for a {t} value"))),
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Atom, E> {
        match self.0 {
            AtomicType::Integer => i64::try_from(v)
                .map(Atom::Integer)
                .map_err(|_| E::custom(format!("{v} is out of range for an integer"))),
            AtomicType::Real => Ok(Atom::Real(v as f64)),
            t => Err(E::custom(format!("number for a {t} value"))),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Atom, E> {
        match self.0 {
            AtomicType::Real => Ok(Atom::Real(v)),
            t => Err(E::custom(format!("real number for a {t} value"))),
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Atom, E> {
        match self.0 {
            AtomicType::Boolean => Ok(Atom::Boolean(v)),
            t => Err(E::custom(format!("boolean for a {t} value"))),
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Atom, A::Error> {
        let tag: Word = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("empty array is not an atom"))?;
        if !matches!(tag, Word::Uuid | Word::NamedUuid) {
            return Err(de::Error::custom("not an atom tag"));
        }
        if self.0 != AtomicType::Uuid {
            return Err(de::Error::custom(format!(
                "uuid value for a {} value",
                self.0
            )));
        }
        let atom = seq
            .next_element_seed(UuidAtomSeed(tag))?
            .ok_or_else(|| de::Error::custom("uuid needs its string"))?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("trailing elements in an atom"));
        }
        Ok(atom)
    }
}

struct AtomsSeed(AtomicType);

impl<'de> DeserializeSeed<'de> for AtomsSeed {
    type Value = Vec<Atom>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Atom>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for AtomsSeed {
    type Value = Vec<Atom>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of atoms")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Atom>, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(a) = seq.next_element_seed(AtomSeed(self.0))? {
            v.push(a);
        }
        Ok(v)
    }
}

struct PairsSeed(AtomicType, AtomicType);

impl<'de> DeserializeSeed<'de> for PairsSeed {
    type Value = Vec<(Atom, Atom)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PairsSeed {
    type Value = Vec<(Atom, Atom)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of [key, value] pairs")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(p) = seq.next_element_seed(PairSeed(self.0, self.1))? {
            v.push(p);
        }
        Ok(v)
    }
}

struct PairSeed(AtomicType, AtomicType);

impl<'de> DeserializeSeed<'de> for PairSeed {
    type Value = (Atom, Atom);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PairSeed {
    type Value = (Atom, Atom);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a [key, value] pair")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let k = seq
            .next_element_seed(AtomSeed(self.0))?
            .ok_or_else(|| de::Error::custom("map pair needs a key"))?;
        let v = seq
            .next_element_seed(AtomSeed(self.1))?
            .ok_or_else(|| de::Error::custom("map pair needs a value"))?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("map pair has more than two elements"));
        }
        Ok((k, v))
    }
}

/// Parses `<table-updates>` (v1) or `<table-updates2>` from JSON text.
pub fn parse_table_updates(
    json: &str,
    schema: &DatabaseSchema,
    format: UpdateFormat,
) -> Result<TableUpdates, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    let out = TableUpdatesSeed { schema, format }.deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::hardware_vtep;

    #[test]
    fn parses_update2_kinds() {
        let s = hardware_vtep();
        let text = r#"{"Logical_Switch":{
            "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55":{"initial":{"name":"ls1","tunnel_key":5000}},
            "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a56":{"modify":{"tunnel_key":["set",[5000,5001]]}},
            "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a57":{"delete":null}},
            "Unknown_Table":{"x":{"insert":{}}}}"#;
        let u = parse_table_updates(text, &s, UpdateFormat::V2).unwrap();
        assert_eq!(u.tables.len(), 1);
        let t = &u.tables[0];
        assert_eq!(t.table.name, "Logical_Switch");
        let name = t.table.column_index("name").unwrap();
        match &t.rows[0].1 {
            RowChange::Insert(cols) => {
                assert!(cols.contains(&(name, Datum::scalar("ls1"))));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.rows[1].1, RowChange::Modify(_)));
        assert_eq!(t.rows[2].1, RowChange::Delete);
    }

    #[test]
    fn parses_update_v1_kinds() {
        let s = hardware_vtep();
        let text = r#"{"Physical_Port":{
            "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55":{"new":{"name":"p1","vlan_bindings":["map",[[100,["uuid","3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a56"]]]]}},
            "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a57":{"old":{"name":"p0"},"new":{"name":"p2","vlan_bindings":["map",[]]}},
            "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a58":{"old":{"name":"p3"}}}}"#;
        let u = parse_table_updates(text, &s, UpdateFormat::V1).unwrap();
        let rows = &u.tables[0].rows;
        assert!(matches!(rows[0].1, RowChange::Insert(_)));
        assert!(matches!(rows[1].1, RowChange::Replace(_)));
        assert_eq!(rows[2].1, RowChange::Delete);
    }

    #[test]
    fn rejects_mistyped_values() {
        let s = hardware_vtep();
        for bad in [
            r#"{"Logical_Switch":{"3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55":{"insert":{"tunnel_key":"x"}}}}"#,
            r#"{"Logical_Switch":{"nonsense":{"insert":{}}}}"#,
            r#"{"Logical_Switch":{"3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55":{"bogus":{}}}}"#,
            r#"{"Physical_Port":{"3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55":{"insert":{"vlan_bindings":["map",[[1]]]}}}}"#,
        ] {
            assert!(
                parse_table_updates(bad, &s, UpdateFormat::V2).is_err(),
                "{bad}"
            );
        }
    }
}
