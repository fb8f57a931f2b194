//! Committed data of one database: rows by UUID, reference counts kept
//! incrementally, and unique indexes.
//!
//! Rows are `Row`s (values by column position) behind an `Arc`, so a
//! transaction copies only the rows it changes and a commit notification
//! shares row versions with monitors instead of copying them.

use std::collections::HashMap;
use std::sync::Arc;

use crate::schema::{DatabaseSchema, RefType, TableSchema};
use crate::value::{Atom, Datum, Row, Uuid};

/// A fresh random (version 4) UUID for a row or a `_version`.
///
/// Rows need unique ids, not secret ones: a per-thread xoshiro256** seeded
/// once from the OS saves the two `getrandom` calls per inserted row that
/// `Uuid::new_v4` costs (ovsdb-server likewise uses a seeded generator).
pub fn new_uuid() -> Uuid {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<[u64; 4]> = Cell::new({
            let a = Uuid::new_v4().as_u64_pair();
            let b = Uuid::new_v4().as_u64_pair();
            [a.0 | 1, a.1, b.0, b.1]
        });
    }
    STATE.with(|st| {
        let mut s = st.get();
        let mut next = || {
            let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
            let t = s[1] << 17;
            s[2] ^= s[0];
            s[3] ^= s[1];
            s[1] ^= s[2];
            s[0] ^= s[3];
            s[2] ^= t;
            s[3] = s[3].rotate_left(45);
            result
        };
        let (hi, lo) = (next(), next());
        st.set(s);
        uuid::Builder::from_random_bytes(((u128::from(hi) << 64) | u128::from(lo)).to_be_bytes())
            .into_uuid()
    })
}

/// One version of a row: its values and its `_version`.
#[derive(Clone, Debug, PartialEq)]
pub struct RowData {
    pub row: Row,
    pub version: Uuid,
}

impl RowData {
    pub fn get(&self, column: usize) -> Option<&Datum> {
        self.row.columns.get(column)
    }
}

/// A committed row with the number of strong references other rows hold
/// to it (self-references do not count, as in ovsdb-server).
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub data: Arc<RowData>,
    pub refs: u32,
}

/// A column that holds references, precomputed from the schema.
#[derive(Clone, Debug)]
pub(crate) struct RefColumn {
    pub column: usize,
    /// Target table of the key atoms, and whether the reference is strong.
    pub key: Option<(usize, bool)>,
    /// Same for map values.
    pub value: Option<(usize, bool)>,
}

impl RefColumn {
    /// Strong reference targets of one column value.
    pub fn strong_targets<'a>(&self, d: &'a Datum) -> impl Iterator<Item = (usize, Uuid)> + 'a {
        let key = self.key.filter(|(_, strong)| *strong).map(|(t, _)| t);
        let value = self.value.filter(|(_, strong)| *strong).map(|(t, _)| t);
        let (keys, values): (Vec<&Atom>, Vec<&Atom>) = match d {
            Datum::Set(a) => (a.iter().collect(), Vec::new()),
            Datum::Map(p) => (
                p.iter().map(|(k, _)| k).collect(),
                p.iter().map(|(_, v)| v).collect(),
            ),
        };
        let k = keys
            .into_iter()
            .filter_map(move |a| key.and_then(|t| a.as_uuid().map(|u| (t, u))));
        let v = values
            .into_iter()
            .filter_map(move |a| value.and_then(|t| a.as_uuid().map(|u| (t, u))));
        k.chain(v)
    }

    pub fn has_strong(&self) -> bool {
        matches!(self.key, Some((_, true))) || matches!(self.value, Some((_, true)))
    }

    pub fn has_weak(&self) -> bool {
        matches!(self.key, Some((_, false))) || matches!(self.value, Some((_, false)))
    }
}

/// The key of a unique index: the indexed columns' values.
pub(crate) type IndexKey = Box<[Datum]>;

pub(crate) fn index_key(index: &[usize], row: &Row) -> IndexKey {
    index
        .iter()
        .map(|&c| row.columns.get(c).cloned().unwrap_or_else(Datum::empty_set))
        .collect()
}

#[derive(Debug)]
pub struct TableData {
    pub schema: Arc<TableSchema>,
    pub(crate) rows: HashMap<Uuid, Stored>,
    pub(crate) indexes: Vec<HashMap<IndexKey, Uuid>>,
    pub(crate) ref_columns: Vec<RefColumn>,
}

impl TableData {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn get(&self, uuid: &Uuid) -> Option<&Arc<RowData>> {
        self.rows.get(uuid).map(|s| &s.data)
    }

    /// Number of strong references to a row (for tests and integrity checks).
    pub fn ref_count(&self, uuid: &Uuid) -> Option<u32> {
        self.rows.get(uuid).map(|s| s.refs)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Uuid, &Arc<RowData>)> {
        self.rows.iter().map(|(u, s)| (u, &s.data))
    }
}

/// All tables of one database, by position in `schema.tables` (name order).
#[derive(Debug)]
pub struct DbData {
    pub schema: Arc<DatabaseSchema>,
    pub(crate) tables: Vec<TableData>,
    by_name: HashMap<String, usize>,
    /// Tables whose rows are referenced weakly, by referring (table, column).
    pub(crate) weak_referrers: Vec<Vec<(usize, usize)>>,
}

impl DbData {
    pub fn new(schema: Arc<DatabaseSchema>) -> DbData {
        let by_name: HashMap<String, usize> = schema
            .tables
            .keys()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let mut weak_referrers = vec![Vec::new(); schema.tables.len()];
        let tables = schema
            .tables
            .values()
            .enumerate()
            .map(|(ti, t)| {
                let mut ref_columns = Vec::new();
                for (ci, c) in t.columns.iter().enumerate() {
                    let target = |b: &crate::schema::BaseType| {
                        b.ref_table.as_ref().and_then(|rt| {
                            by_name.get(rt).map(|&i| (i, b.ref_type == RefType::Strong))
                        })
                    };
                    let key = target(&c.ty.key);
                    let value = c.ty.value.as_ref().and_then(target);
                    if key.is_some() || value.is_some() {
                        for (target, strong) in key.iter().chain(value.iter()) {
                            if !strong {
                                if let Some(v) = weak_referrers.get_mut(*target) {
                                    v.push((ti, ci));
                                }
                            }
                        }
                        ref_columns.push(RefColumn {
                            column: ci,
                            key,
                            value,
                        });
                    }
                }
                TableData {
                    schema: t.clone(),
                    rows: HashMap::new(),
                    indexes: vec![HashMap::new(); t.indexes.len()],
                    ref_columns,
                }
            })
            .collect();
        DbData {
            schema,
            tables,
            by_name,
            weak_referrers,
        }
    }

    pub fn table_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn table(&self, name: &str) -> Option<&TableData> {
        self.table_index(name).and_then(|i| self.tables.get(i))
    }

    pub fn table_at(&self, i: usize) -> Option<&TableData> {
        self.tables.get(i)
    }

    pub fn tables(&self) -> &[TableData] {
        &self.tables
    }

    /// Checks every invariant the engine maintains incrementally: reference
    /// counts equal a recount, no strong reference dangles, every non-root
    /// row is referenced, and indexes match the rows. Returns a description
    /// of the first violation. Costs a full scan: for tests.
    pub fn check_integrity(&self) -> Result<(), String> {
        let mut counts: Vec<HashMap<Uuid, u32>> = vec![HashMap::new(); self.tables.len()];
        for (ti, t) in self.tables.iter().enumerate() {
            for (uuid, s) in &t.rows {
                for rc in &t.ref_columns {
                    let Some(d) = s.data.get(rc.column) else {
                        continue;
                    };
                    for (target, tu) in rc.strong_targets(d) {
                        if tu == *uuid && target == ti {
                            continue;
                        }
                        let exists = self
                            .tables
                            .get(target)
                            .is_some_and(|tt| tt.rows.contains_key(&tu));
                        if !exists {
                            return Err(format!(
                                "{}.{} row {uuid} references missing row {tu}",
                                t.schema.name, t.schema.columns[rc.column].name
                            ));
                        }
                        *counts[target].entry(tu).or_default() += 1;
                    }
                }
            }
        }
        for (ti, t) in self.tables.iter().enumerate() {
            for (uuid, s) in &t.rows {
                let expected = counts[ti].get(uuid).copied().unwrap_or(0);
                if s.refs != expected {
                    return Err(format!(
                        "{} row {uuid}: stored ref count {} but {expected} references",
                        t.schema.name, s.refs
                    ));
                }
                if !t.schema.is_root && expected == 0 {
                    return Err(format!(
                        "non-root {} row {uuid} is unreferenced",
                        t.schema.name
                    ));
                }
                if s.data.row.columns.len() != t.schema.columns.len() {
                    return Err(format!("{} row {uuid} has wrong arity", t.schema.name));
                }
            }
            for (ii, index) in t.schema.indexes.iter().enumerate() {
                if t.indexes[ii].len() != t.rows.len() {
                    return Err(format!(
                        "{} index {ii} has {} entries for {} rows",
                        t.schema.name,
                        t.indexes[ii].len(),
                        t.rows.len()
                    ));
                }
                for (uuid, s) in &t.rows {
                    if t.indexes[ii].get(&index_key(index, &s.data.row)) != Some(uuid) {
                        return Err(format!("{} index {ii} misses row {uuid}", t.schema.name));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_uuids_are_distinct_version_4() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let u = new_uuid();
            assert_eq!(u.get_version_num(), 4);
            assert!(seen.insert(u));
        }
        let other = std::thread::spawn(new_uuid).join().unwrap();
        assert!(!seen.contains(&other));
    }
}
