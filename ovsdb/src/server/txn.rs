//! The transaction engine: executes a `transact` request's operations
//! against a copy-on-write overlay of the committed data, then runs
//! ovsdb-server's commit checks in its order (`ovsdb_txn_precommit`):
//! reference counts and referential integrity, garbage collection of
//! unreferenced non-root rows, `maxRows`, weak references, unique indexes,
//! and new `_version`s.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::condition::{compare_datums, ColRef, Condition};
use super::error::OvsdbError;
use super::json::{datum_to_string, parse_datum, Symtab};
use super::mutation::parse_mutations;
use super::parser::{self, Parser};
use super::storage::{index_key, DbData, IndexKey, RowData};
use crate::schema::TableSchema;
use crate::value::{parse_uuid, Datum, Row, Uuid};

/// What the transaction needs from the session that runs it.
pub struct TxnContext<'a> {
    /// Milliseconds since the request first arrived (for `wait` timeouts).
    pub elapsed_ms: i64,
    /// Whether the session owns a lock (for `assert`).
    pub owns_lock: &'a dyn Fn(&str) -> bool,
    /// Whether an unsatisfied `wait` may block the request (a trigger)
    /// instead of failing.
    pub triggers: bool,
}

impl TxnContext<'_> {
    /// In-process callers: no locks, no triggers.
    pub fn immediate() -> TxnContext<'static> {
        TxnContext {
            elapsed_ms: 0,
            owns_lock: &|_| false,
            triggers: false,
        }
    }
}

/// The outcome of executing a request.
pub enum Executed {
    /// The reply's result array, and the changes to commit if it succeeded.
    Done(Vec<Value>, Option<Changeset>),
    /// A `wait` is not satisfied yet: retry when the database changes or
    /// when `timeout_ms` (since arrival) has passed.
    Blocked { timeout_ms: Option<i64> },
}

#[derive(Clone, Debug)]
pub(crate) struct TxnRow {
    pub old: Option<Arc<RowData>>,
    pub new: Option<Arc<RowData>>,
    pub n_refs: i64,
    /// Per column: changed by the transaction (set by `determine_changes`).
    pub changed: Option<Box<[bool]>>,
}

impl TxnRow {
    fn any_changed(&self) -> bool {
        self.changed.as_ref().is_some_and(|c| c.iter().any(|b| *b))
    }
}

/// A transaction that passed every check, ready to apply.
pub struct Changeset {
    pub(crate) rows: Vec<(usize, Uuid, TxnRow)>,
}

impl Changeset {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

pub(crate) struct Txn<'a> {
    db: &'a DbData,
    rows: Vec<HashMap<Uuid, TxnRow>>,
    /// Creation order of transaction rows, for deterministic processing.
    order: Vec<(usize, Uuid)>,
    /// Tables in the order the transaction first touched them.
    table_order: Vec<usize>,
    pub symtab: Symtab,
}

fn bug(what: &str) -> OvsdbError {
    OvsdbError::new("internal error", what.to_string())
}

impl<'a> Txn<'a> {
    pub fn new(db: &'a DbData) -> Txn<'a> {
        Txn {
            db,
            rows: vec![HashMap::new(); db.tables.len()],
            order: Vec::new(),
            table_order: Vec::new(),
            symtab: Symtab::default(),
        }
    }

    fn schema(&self, t: usize) -> &'a Arc<TableSchema> {
        &self.db.tables[t].schema
    }

    /// The row as this transaction sees it.
    pub fn current(&self, t: usize, uuid: &Uuid) -> Option<&Arc<RowData>> {
        match self.rows[t].get(uuid) {
            Some(r) => r.new.as_ref(),
            None => self.db.tables[t].rows.get(uuid).map(|s| &s.data),
        }
    }

    fn touch_table(&mut self, t: usize) {
        if !self.table_order.contains(&t) {
            self.table_order.push(t);
        }
    }

    fn add_txn_row(&mut self, t: usize, uuid: Uuid, row: TxnRow) {
        self.touch_table(t);
        self.rows[t].insert(uuid, row);
        self.order.push((t, uuid));
    }

    /// Pulls a committed row into the transaction (or finds it there).
    fn find_or_make(&mut self, t: usize, uuid: &Uuid) -> Option<&mut TxnRow> {
        if !self.rows[t].contains_key(uuid) {
            let stored = self.db.tables[t].rows.get(uuid)?;
            let row = TxnRow {
                old: Some(stored.data.clone()),
                new: Some(stored.data.clone()),
                n_refs: i64::from(stored.refs),
                changed: None,
            };
            self.add_txn_row(t, *uuid, row);
        }
        self.rows[t].get_mut(uuid)
    }

    /// Rows matching `cond`, as (uuid) in a stable order.
    pub fn query(&self, t: usize, cond: &Condition) -> Vec<Uuid> {
        if let Some(u) = cond.uuid_eq() {
            return match self.current(t, &u) {
                Some(r) if cond.matches_all(&u, r) => vec![u],
                _ => Vec::new(),
            };
        }
        let txn_rows = &self.rows[t];
        let mut out: Vec<Uuid> = self.db.tables[t]
            .rows
            .iter()
            .filter(|(u, _)| !txn_rows.contains_key(*u))
            .filter(|(u, s)| cond.matches_all(u, &s.data))
            .map(|(u, _)| *u)
            .collect();
        out.extend(
            txn_rows
                .iter()
                .filter_map(|(u, r)| r.new.as_ref().map(|n| (u, n)))
                .filter(|(u, n)| cond.matches_all(u, n))
                .map(|(u, _)| *u),
        );
        out.sort_unstable();
        out
    }

    fn may_create(&self, t: usize, uuid: &Uuid) -> bool {
        if self.current(t, uuid).is_some() {
            return false;
        }
        !matches!(self.rows[t].get(uuid), Some(r) if r.old.is_some())
    }

    pub fn insert(&mut self, t: usize, uuid: Uuid, row: Row) {
        let data = Arc::new(RowData {
            row,
            version: super::storage::new_uuid(),
        });
        self.add_txn_row(
            t,
            uuid,
            TxnRow {
                old: None,
                new: Some(data),
                n_refs: 0,
                changed: None,
            },
        );
    }

    /// The row's data for writing (copied on first write).
    pub fn modify(&mut self, t: usize, uuid: &Uuid) -> Option<&mut RowData> {
        let r = self.find_or_make(t, uuid)?;
        r.new.as_mut().map(Arc::make_mut)
    }

    pub fn delete(&mut self, t: usize, uuid: &Uuid) {
        let inserted_here = matches!(self.rows[t].get(uuid), Some(r) if r.old.is_none());
        if inserted_here {
            self.rows[t].remove(uuid);
        } else if let Some(r) = self.find_or_make(t, uuid) {
            r.new = None;
        }
    }

    /// Runs the commit checks. On success the changes are ready to apply.
    pub fn precommit(mut self) -> Result<Changeset, OvsdbError> {
        self.determine_changes();
        if self.rows.iter().all(HashMap::is_empty) {
            return Ok(Changeset { rows: Vec::new() });
        }
        self.update_ref_counts()?;
        self.check_ref_counts()?;
        self.collect_garbage()?;
        self.check_max_rows()?;
        self.assess_weak_refs()?;
        self.check_indexes()?;
        self.update_versions();
        let mut rows = Vec::with_capacity(self.order.len());
        let mut seen = HashSet::new();
        for (t, u) in std::mem::take(&mut self.order) {
            if !seen.insert((t, u)) {
                continue;
            }
            if let Some(r) = self.rows[t].remove(&u) {
                rows.push((t, u, r));
            }
        }
        Ok(Changeset { rows })
    }

    fn live_order(&self) -> Vec<(usize, Uuid)> {
        let mut seen = HashSet::new();
        self.order
            .iter()
            .filter(|(t, u)| self.rows[*t].contains_key(u) && seen.insert((*t, *u)))
            .copied()
            .collect()
    }

    fn determine_changes(&mut self) {
        for t in 0..self.rows.len() {
            let ncols = self.db.tables[t].schema.columns.len();
            self.rows[t].retain(|_, r| match (&r.old, &r.new) {
                (Some(old), Some(new)) => {
                    if Arc::ptr_eq(old, new) {
                        return false;
                    }
                    let changed: Box<[bool]> =
                        (0..ncols).map(|i| old.get(i) != new.get(i)).collect();
                    let any = changed.iter().any(|b| *b);
                    r.changed = Some(changed);
                    any
                }
                _ => {
                    r.changed = Some(vec![true; ncols].into_boxed_slice());
                    true
                }
            });
        }
    }

    fn adjust_refs(
        &mut self,
        t: usize,
        owner: &Uuid,
        column: usize,
        datum: &Datum,
        delta: i64,
    ) -> Result<(), OvsdbError> {
        let Some(rc) = self.db.tables[t]
            .ref_columns
            .iter()
            .find(|rc| rc.column == column)
        else {
            return Ok(());
        };
        let targets: Vec<(usize, Uuid)> = rc.strong_targets(datum).collect();
        for (target, tu) in targets {
            if tu == *owner {
                continue;
            }
            match self.find_or_make(target, &tu) {
                Some(r) => r.n_refs += delta,
                None if delta > 0 => {
                    let ts = self.schema(t);
                    return Err(OvsdbError::new(
                        "referential integrity violation",
                        format!(
                            "Table {} column {} row {owner} references nonexistent row {tu} in table {}.",
                            ts.name,
                            ts.columns[column].name,
                            self.schema(target).name
                        ),
                    ));
                }
                None => return Err(bug("error decreasing refcount")),
            }
        }
        Ok(())
    }

    fn update_ref_counts(&mut self) -> Result<(), OvsdbError> {
        for (t, u) in self.live_order() {
            let Some(r) = self.rows[t].get(&u) else {
                continue;
            };
            let (old, new, changed) = (r.old.clone(), r.new.clone(), r.changed.clone());
            let Some(changed) = changed else { continue };
            let ref_cols: Vec<usize> = self.db.tables[t]
                .ref_columns
                .iter()
                .filter(|rc| rc.has_strong())
                .map(|rc| rc.column)
                .collect();
            for c in ref_cols {
                if !changed.get(c).copied().unwrap_or(false) {
                    continue;
                }
                match (&old, &new) {
                    (Some(o), None) => {
                        if let Some(d) = o.get(c) {
                            self.adjust_refs(t, &u, c, d, -1)?;
                        }
                    }
                    (None, Some(n)) => {
                        if let Some(d) = n.get(c) {
                            self.adjust_refs(t, &u, c, d, 1)?;
                        }
                    }
                    (Some(o), Some(n)) => {
                        let (Some(od), Some(nd)) = (o.get(c), n.get(c)) else {
                            continue;
                        };
                        let (added, removed) = added_removed(od, nd);
                        self.adjust_refs(t, &u, c, &removed, -1)?;
                        self.adjust_refs(t, &u, c, &added, 1)?;
                    }
                    (None, None) => {}
                }
            }
        }
        Ok(())
    }

    fn check_ref_counts(&self) -> Result<(), OvsdbError> {
        for (t, u) in self.live_order() {
            if let Some(r) = self.rows[t].get(&u) {
                if r.new.is_none() && r.n_refs != 0 {
                    return Err(OvsdbError::new(
                        "referential integrity violation",
                        format!(
                            "cannot delete {} row {u} because of {} remaining reference(s)",
                            self.schema(t).name,
                            r.n_refs
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn collect_garbage(&mut self) -> Result<(), OvsdbError> {
        let mut i = 0;
        while i < self.order.len() {
            let (t, u) = self.order[i];
            i += 1;
            let garbage =
                matches!(self.rows[t].get(&u), Some(r) if r.new.is_some() && r.n_refs == 0);
            if garbage {
                self.delete_garbage(t, u)?;
            }
        }
        Ok(())
    }

    fn delete_garbage(&mut self, t: usize, u: Uuid) -> Result<(), OvsdbError> {
        let mut stack = vec![(t, u)];
        while let Some((t, u)) = stack.pop() {
            if self.schema(t).is_root {
                continue;
            }
            let Some(r) = self.rows[t].get_mut(&u) else {
                continue;
            };
            let Some(data) = r.new.take() else { continue };
            let ref_cols = self.db.tables[t].ref_columns.clone();
            for rc in ref_cols {
                let Some(d) = data.get(rc.column) else {
                    continue;
                };
                for (target, tu) in rc.strong_targets(d).collect::<Vec<_>>() {
                    if tu == u {
                        continue;
                    }
                    let r = self
                        .find_or_make(target, &tu)
                        .ok_or_else(|| bug("strong ref target missing"))?;
                    if r.new.is_none() {
                        continue;
                    }
                    r.n_refs -= 1;
                    if r.n_refs == 0 {
                        stack.push((target, tu));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_max_rows(&self) -> Result<(), OvsdbError> {
        for &t in &self.table_order {
            let ts = self.schema(t);
            let Some(max) = ts.max_rows else { continue };
            let mut n = self.db.tables[t].rows.len() as i64;
            for r in self.rows[t].values() {
                match (&r.old, &r.new) {
                    (None, Some(_)) => n += 1,
                    (Some(_), None) => n -= 1,
                    _ => {}
                }
            }
            if n > max as i64 {
                return Err(OvsdbError::constraint(format!(
                    "transaction causes \"{}\" table to contain {n} rows, greater than the schema-defined limit of {max} row(s)",
                    ts.name
                )));
            }
        }
        Ok(())
    }

    /// Removes weak references to rows that do not exist after the
    /// transaction (ovsdb-server's `assess_weak_refs`).
    fn assess_weak_refs(&mut self) -> Result<(), OvsdbError> {
        if self.db.weak_referrers.iter().all(Vec::is_empty) {
            return Ok(());
        }
        // Rows outside the transaction that refer weakly to deleted rows.
        let mut deleted: HashSet<(usize, Uuid)> = HashSet::new();
        for (t, u) in self.live_order() {
            if let Some(r) = self.rows[t].get(&u) {
                if r.old.is_some() && r.new.is_none() {
                    deleted.insert((t, u));
                }
            }
        }
        let mut to_check: Vec<(usize, Uuid)> = Vec::new();
        if !deleted.is_empty() {
            let referrers: HashSet<(usize, usize)> = deleted
                .iter()
                .flat_map(|(t, _)| self.db.weak_referrers[*t].iter().copied())
                .collect();
            for (rt, rcol) in referrers {
                let Some(rc) = self.db.tables[rt]
                    .ref_columns
                    .iter()
                    .find(|rc| rc.column == rcol)
                else {
                    continue;
                };
                for (u, s) in &self.db.tables[rt].rows {
                    if self.rows[rt].contains_key(u) {
                        continue;
                    }
                    if let Some(d) = s.data.get(rcol) {
                        if weak_targets(rc, d).any(|x| deleted.contains(&x)) {
                            to_check.push((rt, *u));
                        }
                    }
                }
            }
        }
        for (t, u) in &to_check {
            self.find_or_make(*t, u);
        }
        for (t, u) in self.live_order() {
            let weak_cols: Vec<_> = self.db.tables[t]
                .ref_columns
                .iter()
                .filter(|rc| rc.has_weak())
                .cloned()
                .collect();
            if weak_cols.is_empty() {
                continue;
            }
            let Some(new) = self.rows[t].get(&u).and_then(|r| r.new.clone()) else {
                continue;
            };
            for rc in weak_cols {
                let Some(d) = new.get(rc.column) else {
                    continue;
                };
                let kept = retain_existing(self, &rc, d);
                if kept.len() == d.len() {
                    continue;
                }
                let ts = self.schema(t);
                let col = &ts.columns[rc.column];
                let removed = d.len() - kept.len();
                let inserted = self.rows[t].get(&u).is_some_and(|r| r.old.is_none());
                if (kept.len() as u64) < col.ty.min {
                    return Err(OvsdbError::constraint(format!(
                        "Deletion of {removed} weak reference(s) to deleted (or never-existing) rows from column \"{}\" in \"{}\" row {u} {}caused this column to become empty, but constraints on this column disallow an empty column.",
                        col.name,
                        ts.name,
                        if inserted { "(inserted within this transaction) " } else { "" }
                    )));
                }
                if let Some(r) = self.rows[t].get_mut(&u) {
                    if let Some(n) = r.new.as_mut() {
                        if let Some(slot) = Arc::make_mut(n).row.columns.get_mut(rc.column) {
                            *slot = kept;
                        }
                    }
                    let ncols = ts.columns.len();
                    let changed = r
                        .changed
                        .get_or_insert_with(|| vec![false; ncols].into_boxed_slice());
                    if let Some(c) = changed.get_mut(rc.column) {
                        *c = true;
                    }
                }
            }
        }
        Ok(())
    }

    fn check_indexes(&self) -> Result<(), OvsdbError> {
        let mut temp: HashMap<(usize, usize), HashMap<IndexKey, Uuid>> = HashMap::new();
        for (t, u) in self.live_order() {
            let ts = self.schema(t);
            if ts.indexes.is_empty() {
                continue;
            }
            let Some(new) = self.rows[t].get(&u).and_then(|r| r.new.as_ref()) else {
                continue;
            };
            for (i, index) in ts.indexes.iter().enumerate() {
                let key = index_key(index, &new.row);
                let map = temp.entry((t, i)).or_default();
                if let Some(other) = map.get(&key) {
                    return Err(self.duplicate_index(t, index, *other, u));
                }
                if let Some(other) = self.db.tables[t].indexes[i].get(&key) {
                    if !self.rows[t].contains_key(other) {
                        return Err(self.duplicate_index(t, index, *other, u));
                    }
                }
                map.insert(key, u);
            }
        }
        Ok(())
    }

    fn duplicate_index(&self, t: usize, index: &[usize], a: Uuid, b: Uuid) -> OvsdbError {
        let ts = self.schema(t);
        // ovsdb-server orders the two rows by all columns, _uuid first.
        let (a, b) = if a < b { (b, a) } else { (a, b) };
        let values = |u: &Uuid| -> String {
            match self.current(t, u) {
                Some(r) => index
                    .iter()
                    .map(|&c| {
                        datum_to_string(r.get(c).unwrap_or(&Datum::empty_set()), &ts.columns[c].ty)
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                None => String::new(),
            }
        };
        let n = index.len();
        let mut cols = format!("column{} ", if n > 1 { "s" } else { "" });
        for (i, &c) in index.iter().enumerate() {
            let delim = if i == 0 {
                ""
            } else if i < n - 1 {
                ", "
            } else if n > 2 {
                ", and "
            } else {
                " and "
            };
            cols.push_str(&format!("{delim}\"{}\"", ts.columns[c].name));
        }
        let describe = |title: &str, u: &Uuid| -> String {
            let head = format!("{title} row, with UUID {u}, ");
            let tail = match self.rows[t].get(u) {
                Some(r) if r.any_changed() => match &r.old {
                    None => "was inserted by this transaction.".to_string(),
                    Some(old) => {
                        let same = index.iter().all(|&c| {
                            old.get(c) == r.new.as_ref().and_then(|n| n.get(c))
                        });
                        if same {
                            "existed in the database before this transaction, which modified some of the row's columns but not any columns in this index.".to_string()
                        } else {
                            let old_vals = index
                                .iter()
                                .map(|&c| {
                                    datum_to_string(
                                        old.get(c).unwrap_or(&Datum::empty_set()),
                                        &ts.columns[c].ty,
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join(", ");
                            format!("had the following index values before the transaction: {old_vals}.")
                        }
                    }
                },
                _ => "existed in the database before this transaction and was not modified by the transaction.".to_string(),
            };
            head + &tail
        };
        OvsdbError::constraint(format!(
            "Transaction causes multiple rows in \"{}\" table to have identical values ({}) for index on {cols}.  {}  {}",
            ts.name,
            values(&a),
            describe("First", &a),
            describe("Second", &b)
        ))
    }

    fn update_versions(&mut self) {
        for rows in &mut self.rows {
            for r in rows.values_mut() {
                if r.old.is_some() && r.any_changed() {
                    if let Some(n) = r.new.as_mut() {
                        Arc::make_mut(n).version = super::storage::new_uuid();
                    }
                }
            }
        }
    }
}

fn weak_targets<'d>(
    rc: &super::storage::RefColumn,
    d: &'d Datum,
) -> impl Iterator<Item = (usize, Uuid)> + 'd {
    let key = rc.key.filter(|(_, s)| !*s).map(|(t, _)| t);
    let value = rc.value.filter(|(_, s)| !*s).map(|(t, _)| t);
    let pairs: Vec<(usize, Uuid)> = match d {
        Datum::Set(a) => a
            .iter()
            .filter_map(|x| key.and_then(|t| x.as_uuid().map(|u| (t, u))))
            .collect(),
        Datum::Map(p) => p
            .iter()
            .flat_map(|(k, v)| {
                [
                    key.and_then(|t| k.as_uuid().map(|u| (t, u))),
                    value.and_then(|t| v.as_uuid().map(|u| (t, u))),
                ]
            })
            .flatten()
            .collect(),
    };
    pairs.into_iter()
}

/// The column value without elements whose weak reference dangles.
fn retain_existing(txn: &Txn<'_>, rc: &super::storage::RefColumn, d: &Datum) -> Datum {
    let exists = |table: Option<(usize, bool)>, a: &crate::value::Atom| -> bool {
        match (table, a.as_uuid()) {
            (Some((t, false)), Some(u)) => txn.current(t, &u).is_some(),
            _ => true,
        }
    };
    match d {
        Datum::Set(a) => Datum::Set(a.iter().filter(|x| exists(rc.key, x)).cloned().collect()),
        Datum::Map(p) => Datum::Map(
            p.iter()
                .filter(|(k, v)| exists(rc.key, k) && exists(rc.value, v))
                .cloned()
                .collect(),
        ),
    }
}

/// Elements (pairs) added and removed between two values of one column.
fn added_removed(old: &Datum, new: &Datum) -> (Datum, Datum) {
    match (old, new) {
        (Datum::Set(o), Datum::Set(n)) => (
            Datum::Set(
                n.iter()
                    .filter(|x| o.binary_search(x).is_err())
                    .cloned()
                    .collect(),
            ),
            Datum::Set(
                o.iter()
                    .filter(|x| n.binary_search(x).is_err())
                    .cloned()
                    .collect(),
            ),
        ),
        (Datum::Map(o), Datum::Map(n)) => (
            Datum::Map(n.iter().filter(|p| !o.contains(p)).cloned().collect()),
            Datum::Map(o.iter().filter(|p| !n.contains(p)).cloned().collect()),
        ),
        _ => (new.clone(), old.clone()),
    }
}

// ---------------------------------------------------------------------
// Operations

/// Columns named in `columns`/`sort`, or all of them (`_uuid` first).
fn parse_column_set(json: Option<&Value>, ts: &TableSchema) -> Result<Vec<ColRef>, OvsdbError> {
    let Some(json) = json else {
        let mut all = vec![ColRef::Uuid, ColRef::Version];
        all.extend((0..ts.columns.len()).map(ColRef::Col));
        return Ok(all);
    };
    let distinct =
        || OvsdbError::syntax(Some(json), None, "array of distinct column names expected");
    let items = json.as_array().ok_or_else(distinct)?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let name = item.as_str().ok_or_else(distinct)?;
        let c = ColRef::lookup(ts, name).ok_or_else(|| {
            OvsdbError::syntax(
                Some(json),
                None,
                format!("{name} is not a valid column name"),
            )
        })?;
        if out.contains(&c) {
            return Err(distinct());
        }
        out.push(c);
    }
    Ok(out)
}

fn row_to_json(ts: &TableSchema, uuid: &Uuid, row: &RowData, cols: &[ColRef]) -> Value {
    let mut m = Map::new();
    for c in cols {
        m.insert(c.name(ts).to_string(), c.value(uuid, row).to_json());
    }
    Value::Object(m)
}

/// A `<row>` object parsed over the table's defaults; returns the row and
/// the columns it named (`ovsdb_row_from_json`).
fn parse_row(
    json: &Value,
    ts: &TableSchema,
    symtab: &mut Symtab,
) -> Result<(Row, Vec<ColRef>), OvsdbError> {
    parse_row_full(json, ts, symtab).map(|(row, named, _)| (row, named))
}

/// A parsed `<row>`: values, the columns it named, and the `_uuid` and
/// `_version` it gave.
type ParsedRow = (Row, Vec<ColRef>, [Option<Uuid>; 2]);

/// As `parse_row`, also returning the `_uuid` and `_version` it gave.
fn parse_row_full(
    json: &Value,
    ts: &TableSchema,
    symtab: &mut Symtab,
) -> Result<ParsedRow, OvsdbError> {
    let obj = json
        .as_object()
        .ok_or_else(|| OvsdbError::syntax(Some(json), None, "row must be JSON object"))?;
    let mut row = Row::with_defaults(ts);
    let mut implicit = [None, None];
    let mut named = Vec::with_capacity(obj.len());
    for (name, value) in obj {
        let c = ColRef::lookup(ts, name).ok_or_else(|| {
            OvsdbError::syntax(
                Some(json),
                Some("unknown column"),
                format!("No column {name} in table {}.", ts.name),
            )
        })?;
        let d = parse_datum(value, &c.ty(ts), Some(symtab))?;
        match c {
            ColRef::Col(i) => {
                if let Some(slot) = row.columns.get_mut(i) {
                    *slot = d;
                }
            }
            ColRef::Uuid => implicit[0] = d.as_uuid(),
            ColRef::Version => implicit[1] = d.as_uuid(),
        }
        named.push(c);
    }
    Ok((row, named, implicit))
}

struct OpOutcome {
    error: Option<OvsdbError>,
    read_only: bool,
}

/// Executes one `transact` request (everything after the database name)
/// and runs the commit checks (`ovsdb_execute_compose` + precommit).
pub fn execute(db: &DbData, ops: &[Value], ctx: &TxnContext<'_>) -> Executed {
    let reserved = db.schema.name.starts_with('_');
    let mut txn = Txn::new(db);
    let n = ops.len();
    let mut results = Vec::with_capacity(n);
    let mut failed = false;
    let mut timeout_ms: Option<i64> = None;
    for (i, op) in ops.iter().enumerate() {
        let mut p = Parser::new(op, format!("ovsdb operation {} of {n}", i + 1));
        let mut result = Map::new();
        let name = p.member("op", parser::ID).and_then(Value::as_str);
        let mut outcome = OpOutcome {
            error: None,
            read_only: false,
        };
        if let Some(name) = name {
            outcome = run_op(&mut txn, &mut p, name, &mut result, ctx, &mut timeout_ms);
        }
        let mut error = outcome.error;
        if let Some(pe) = p.finish() {
            error = Some(pe);
        }
        if error.is_none() && !outcome.read_only && reserved {
            error = Some(OvsdbError::new(
                "not allowed",
                format!(
                    "{} operation not allowed on table in reserved database {}",
                    name.unwrap_or_default(),
                    db.schema.name
                ),
            ));
        }
        if let Some(e) = error {
            if e.tag == "not supported" && ctx.triggers {
                return Executed::Blocked { timeout_ms };
            }
            results.push(e.to_json());
            failed = true;
            break;
        }
        results.push(Value::Object(result));
    }
    while results.len() < n {
        results.push(Value::Null);
    }
    if failed {
        return Executed::Done(results, None);
    }
    match txn.precommit() {
        Ok(cs) => Executed::Done(results, Some(cs)),
        Err(e) => {
            results.push(e.to_json());
            Executed::Done(results, None)
        }
    }
}

fn run_op(
    txn: &mut Txn<'_>,
    p: &mut Parser<'_>,
    name: &str,
    result: &mut Map<String, Value>,
    ctx: &TxnContext<'_>,
    timeout_ms: &mut Option<i64>,
) -> OpOutcome {
    let (read_only, error) = match name {
        "insert" => (false, op_insert(txn, p, result).err()),
        "select" => (true, op_select(txn, p, result).err()),
        "update" => (false, op_update(txn, p, result).err()),
        "mutate" => (false, op_mutate(txn, p, result).err()),
        "delete" => (false, op_delete(txn, p, result).err()),
        "wait" => (true, op_wait(txn, p, ctx, timeout_ms).err()),
        "commit" => {
            p.member("durable", parser::BOOLEAN);
            (false, None)
        }
        "abort" => (true, Some(OvsdbError::new("aborted", "aborted by request"))),
        "comment" => {
            p.member("comment", parser::STRING);
            (true, None)
        }
        "assert" => {
            let error = p
                .member("lock", parser::ID)
                .and_then(Value::as_str)
                .filter(|lock| !(ctx.owns_lock)(lock))
                .map(|lock| {
                    OvsdbError::new("not owner", format!("Asserted lock {lock} not held."))
                });
            (true, error)
        }
        other => {
            p.raise(&format!("No operation \"{other}\""));
            (false, None)
        }
    };
    OpOutcome { error, read_only }
}

fn parse_table(txn: &Txn<'_>, p: &mut Parser<'_>) -> Option<usize> {
    let name = p.member("table", parser::ID)?.as_str()?;
    let t = txn.db.table_index(name);
    if t.is_none() {
        p.raise(&format!("No table named {name}."));
    }
    t
}

fn parser_error(p: &Parser<'_>) -> Result<(), OvsdbError> {
    match p.get_error() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn op_insert(
    txn: &mut Txn<'_>,
    p: &mut Parser<'_>,
    result: &mut Map<String, Value>,
) -> Result<(), OvsdbError> {
    let t = parse_table(txn, p);
    let uuid_json = p.member("uuid", parser::STRING | parser::OPTIONAL);
    let uuid_name = p.member("uuid-name", parser::ID | parser::OPTIONAL);
    let row_json = p.member("row", parser::OBJECT);
    parser_error(p)?;
    let (Some(t), Some(row_json)) = (t, row_json) else {
        return Err(bug("insert without table or row"));
    };
    let mut row_uuid = None;
    if let Some(j) = uuid_json {
        let u = parse_uuid(j.as_str().unwrap_or_default())
            .map_err(|_| OvsdbError::syntax(Some(j), None, "bad uuid"))?;
        if !txn.may_create(t, &u) {
            return Err(OvsdbError::syntax(
                Some(j),
                Some("duplicate uuid"),
                "This UUID would duplicate a UUID already present within the table or deleted within the same transaction.",
            ));
        }
        row_uuid = Some(u);
    }
    if let Some(j) = uuid_name {
        let sym = txn.symtab.insert(j.as_str().unwrap_or_default());
        if sym.created {
            return Err(OvsdbError::syntax(
                Some(j),
                Some("duplicate uuid-name"),
                "This \"uuid-name\" appeared on an earlier \"insert\" operation.",
            ));
        }
        match row_uuid {
            Some(u) => sym.uuid = u,
            None => row_uuid = Some(sym.uuid),
        }
        sym.created = true;
    }
    let row_uuid = row_uuid.unwrap_or_else(super::storage::new_uuid);
    let ts = txn.schema(t).clone();
    let (row, _) = parse_row(row_json, &ts, &mut txn.symtab)?;
    // Defaults may violate constraints (an enum without ""), so check the
    // single-valued columns as ovsdb-server does.
    for (c, d) in ts.columns.iter().zip(row.columns.iter()) {
        if d.len() == 1 {
            c.ty.check_atoms(d)
                .map_err(|e| OvsdbError::constraint(e.to_string()))?;
        }
    }
    txn.insert(t, row_uuid, row);
    result.insert("uuid".into(), Datum::scalar(row_uuid).to_json());
    Ok(())
}

fn op_select(
    txn: &mut Txn<'_>,
    p: &mut Parser<'_>,
    result: &mut Map<String, Value>,
) -> Result<(), OvsdbError> {
    let t = parse_table(txn, p);
    let where_ = p.member("where", parser::ARRAY);
    let columns = p.member("columns", parser::ARRAY | parser::OPTIONAL);
    let sort = p.member("sort", parser::ARRAY | parser::OPTIONAL);
    parser_error(p)?;
    let (Some(t), Some(where_)) = (t, where_) else {
        return Err(bug("select without table or where"));
    };
    let ts = txn.schema(t).clone();
    let cond = Condition::parse(&ts, where_, Some(&mut txn.symtab))?;
    let cols = parse_column_set(columns, &ts)?;
    let sort = parse_column_set(sort, &ts)?;
    let mut rows: Vec<(Uuid, Arc<RowData>)> = txn
        .query(t, &cond)
        .into_iter()
        .filter_map(|u| txn.current(t, &u).map(|r| (u, r.clone())))
        .collect();
    rows.sort_by(|(ua, a), (ub, b)| {
        sort.iter()
            .map(|c| compare_datums(&c.value(ua, a), &c.value(ub, b)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let out: Vec<Value> = rows
        .iter()
        .map(|(u, r)| row_to_json(&ts, u, r, &cols))
        .collect();
    result.insert("rows".into(), Value::Array(out));
    Ok(())
}

fn op_update(
    txn: &mut Txn<'_>,
    p: &mut Parser<'_>,
    result: &mut Map<String, Value>,
) -> Result<(), OvsdbError> {
    let t = parse_table(txn, p);
    let where_ = p.member("where", parser::ARRAY);
    let row_json = p.member("row", parser::OBJECT);
    parser_error(p)?;
    let (Some(t), Some(where_), Some(row_json)) = (t, where_, row_json) else {
        return Err(bug("update without table, where or row"));
    };
    let ts = txn.schema(t).clone();
    let (row, named) = parse_row(row_json, &ts, &mut txn.symtab)?;
    for c in &named {
        if !c.mutable(&ts) {
            return Err(OvsdbError::syntax(
                Some(p.json()),
                Some("constraint violation"),
                format!(
                    "Cannot update immutable column {} in table {}.",
                    c.name(&ts),
                    ts.name
                ),
            ));
        }
    }
    let cond = Condition::parse(&ts, where_, Some(&mut txn.symtab))?;
    let matches = txn.query(t, &cond);
    let cols: Vec<usize> = named
        .iter()
        .filter_map(|c| match c {
            ColRef::Col(i) => Some(*i),
            _ => None,
        })
        .collect();
    for u in &matches {
        let same = txn
            .current(t, u)
            .is_some_and(|cur| cols.iter().all(|&i| cur.get(i) == row.get(i)));
        if same {
            continue;
        }
        if let Some(data) = txn.modify(t, u) {
            for &i in &cols {
                if let (Some(dst), Some(src)) = (data.row.columns.get_mut(i), row.get(i)) {
                    *dst = src.clone();
                }
            }
        }
    }
    result.insert("count".into(), Value::from(matches.len()));
    Ok(())
}

fn op_mutate(
    txn: &mut Txn<'_>,
    p: &mut Parser<'_>,
    result: &mut Map<String, Value>,
) -> Result<(), OvsdbError> {
    let t = parse_table(txn, p);
    let where_ = p.member("where", parser::ARRAY);
    let mutations = p.member("mutations", parser::ARRAY);
    parser_error(p)?;
    let (Some(t), Some(where_), Some(mutations)) = (t, where_, mutations) else {
        return Err(bug("mutate without table, where or mutations"));
    };
    let ts = txn.schema(t).clone();
    let mutations = parse_mutations(&ts, mutations, Some(&mut txn.symtab))?;
    let cond = Condition::parse(&ts, where_, Some(&mut txn.symtab))?;
    let matches = txn.query(t, &cond);
    for u in &matches {
        let Some(data) = txn.modify(t, u) else {
            continue;
        };
        for m in &mutations {
            let Some(col) = ts.columns.get(m.column) else {
                continue;
            };
            if let Some(dst) = data.row.columns.get_mut(m.column) {
                m.apply(dst, &col.ty)?;
            }
        }
    }
    result.insert("count".into(), Value::from(matches.len()));
    Ok(())
}

fn op_delete(
    txn: &mut Txn<'_>,
    p: &mut Parser<'_>,
    result: &mut Map<String, Value>,
) -> Result<(), OvsdbError> {
    let where_ = p.member("where", parser::ARRAY);
    let t = parse_table(txn, p);
    parser_error(p)?;
    let (Some(t), Some(where_)) = (t, where_) else {
        return Err(bug("delete without table or where"));
    };
    let ts = txn.schema(t).clone();
    let cond = Condition::parse(&ts, where_, Some(&mut txn.symtab))?;
    let matches = txn.query(t, &cond);
    for u in &matches {
        txn.delete(t, u);
    }
    result.insert("count".into(), Value::from(matches.len()));
    Ok(())
}

fn op_wait(
    txn: &mut Txn<'_>,
    p: &mut Parser<'_>,
    ctx: &TxnContext<'_>,
    min_timeout: &mut Option<i64>,
) -> Result<(), OvsdbError> {
    let timeout = p.member("timeout", parser::INTEGER | parser::OPTIONAL);
    let where_ = p.member("where", parser::ARRAY);
    let columns = p.member("columns", parser::ARRAY | parser::OPTIONAL);
    let until = p.member("until", parser::STRING);
    let rows = p.member("rows", parser::ARRAY);
    let t = parse_table(txn, p);
    parser_error(p)?;
    let (Some(t), Some(where_), Some(until), Some(rows)) = (t, where_, until, rows) else {
        return Err(bug("wait without its members"));
    };
    let ts = txn.schema(t).clone();
    let cond = Condition::parse(&ts, where_, Some(&mut txn.symtab))?;
    let cols = parse_column_set(columns, &ts)?;
    let timeout_ms = match timeout {
        Some(j) => {
            let ms = j.as_i64().unwrap_or(0);
            if ms < 0 {
                return Err(OvsdbError::syntax(
                    Some(j),
                    None,
                    "timeout must be nonnegative",
                ));
            }
            *min_timeout = Some(min_timeout.map_or(ms, |m| m.min(ms)));
            Some(ms)
        }
        None => None,
    };
    let until_eq = match until.as_str() {
        Some("==") => true,
        Some("!=") => false,
        _ => {
            return Err(OvsdbError::syntax(
                Some(until),
                None,
                "\"until\" must be \"==\" or \"!=\"",
            ))
        }
    };
    let project = |u: &Uuid, r: &RowData| -> Vec<Datum> {
        cols.iter().map(|c| c.value(u, r).into_owned()).collect()
    };
    let mut expected: HashSet<Vec<Datum>> = HashSet::new();
    for rj in rows.as_array().map(Vec::as_slice).unwrap_or_default() {
        let (row, _, [uuid, version]) = parse_row_full(rj, &ts, &mut txn.symtab)?;
        let data = RowData {
            row,
            version: version.unwrap_or_else(Uuid::nil),
        };
        expected.insert(project(&uuid.unwrap_or_else(Uuid::nil), &data));
    }
    let mut actual: HashSet<Vec<Datum>> = HashSet::new();
    let mut equal = true;
    for u in txn.query(t, &cond) {
        if let Some(r) = txn.current(t, &u) {
            let key = project(&u, r);
            if !expected.contains(&key) {
                equal = false;
                break;
            }
            actual.insert(key);
        }
    }
    if equal {
        equal = actual.len() == expected.len();
    }
    if until_eq != equal {
        if let Some(ms) = timeout_ms {
            if ctx.elapsed_ms >= ms {
                return Err(if ctx.elapsed_ms > 0 {
                    OvsdbError::new(
                        "timed out",
                        format!("\"wait\" timed out after {} ms", ctx.elapsed_ms),
                    )
                } else {
                    OvsdbError::new("timed out", "\"where\" clause test failed")
                });
            }
        }
        return Err(OvsdbError::new("not supported", "triggers not supported"));
    }
    Ok(())
}
