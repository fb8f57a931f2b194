//! The client's replica of the monitored part of a database.
//!
//! Plain data: fed by monitor replies and update notifications, it never
//! does I/O. A new session starts from an empty replica: a switch's
//! standalone database answers `monitor_cond_since` with `found=false`
//! anyway, so every reconnect is a full reload (ovsdb-anchors §0.3).

use std::collections::HashMap;
use std::sync::Arc;

use crate::schema::{DatabaseSchema, TableSchema};
use crate::value::seed::{RowChange, TableUpdates};
use crate::value::{Datum, Row, Uuid};

/// What happened to one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Modify,
    Delete,
}

/// One applied row change. `old` holds the row before the change (for
/// modifications and deletions); the new state is in the replica.
#[derive(Clone, Debug)]
pub struct RowEvent {
    pub table: Arc<TableSchema>,
    pub uuid: Uuid,
    pub kind: ChangeKind,
    pub old: Option<Row>,
}

/// Rows of one table by UUID.
#[derive(Clone, Debug)]
pub struct TableReplica {
    pub schema: Arc<TableSchema>,
    pub rows: HashMap<Uuid, Row>,
}

impl TableReplica {
    pub fn get(&self, uuid: &Uuid) -> Option<&Row> {
        self.rows.get(uuid)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Uuid, &Row)> {
        self.rows.iter()
    }

    /// Position of a column, for callers that read many rows.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.schema.column_index(name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("update modifies unknown row {table} {uuid}")]
    UnknownRow { table: String, uuid: Uuid },
    #[error("bad update2 diff for {table}.{column}: {reason}")]
    BadDiff {
        table: String,
        column: String,
        reason: String,
    },
}

/// The replica of one database.
#[derive(Clone, Debug)]
pub struct Replica {
    schema: Arc<DatabaseSchema>,
    tables: HashMap<String, TableReplica>,
}

impl Replica {
    pub fn new(schema: Arc<DatabaseSchema>) -> Replica {
        let tables = schema
            .tables
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    TableReplica {
                        schema: t.clone(),
                        rows: HashMap::new(),
                    },
                )
            })
            .collect();
        Replica { schema, tables }
    }

    pub fn schema(&self) -> &Arc<DatabaseSchema> {
        &self.schema
    }

    pub fn table(&self, name: &str) -> Option<&TableReplica> {
        self.tables.get(name)
    }

    pub fn row(&self, table: &str, uuid: &Uuid) -> Option<&Row> {
        self.tables.get(table).and_then(|t| t.rows.get(uuid))
    }

    pub fn row_count(&self) -> usize {
        self.tables.values().map(|t| t.rows.len()).sum()
    }

    pub fn clear(&mut self) {
        for t in self.tables.values_mut() {
            t.rows.clear();
        }
    }

    /// Applies updates in order and reports what changed. A change that
    /// cannot apply (modify of an unknown row, a malformed diff) is an
    /// error: the replica no longer matches the server, and the session
    /// should be restarted rather than carry on with wrong state.
    pub fn apply(&mut self, updates: TableUpdates) -> Result<Vec<RowEvent>, ReplicaError> {
        let mut events = Vec::with_capacity(updates.row_count());
        for tc in updates.tables {
            let Some(t) = self.tables.get_mut(&tc.table.name) else {
                continue;
            };
            let schema = t.schema.clone();
            for (uuid, change) in tc.rows {
                match change {
                    RowChange::Insert(cols) => {
                        let old = t.rows.insert(uuid, Row::from_columns(&schema, cols));
                        events.push(RowEvent {
                            table: schema.clone(),
                            uuid,
                            kind: if old.is_some() {
                                ChangeKind::Modify
                            } else {
                                ChangeKind::Insert
                            },
                            old,
                        });
                    }
                    RowChange::Replace(cols) => {
                        let Some(row) = t.rows.get_mut(&uuid) else {
                            return Err(ReplicaError::UnknownRow {
                                table: schema.name.clone(),
                                uuid,
                            });
                        };
                        let old = row.clone();
                        set_columns(row, cols);
                        events.push(RowEvent {
                            table: schema.clone(),
                            uuid,
                            kind: ChangeKind::Modify,
                            old: Some(old),
                        });
                    }
                    RowChange::Modify(diffs) => {
                        let Some(row) = t.rows.get_mut(&uuid) else {
                            return Err(ReplicaError::UnknownRow {
                                table: schema.name.clone(),
                                uuid,
                            });
                        };
                        let old = row.clone();
                        let mut columns = std::mem::take(&mut row.columns).into_vec();
                        for (i, diff) in diffs {
                            let (Some(col), Some(cur)) =
                                (schema.columns.get(i), columns.get_mut(i))
                            else {
                                continue;
                            };
                            cur.apply_diff(diff, &col.ty)
                                .map_err(|e| ReplicaError::BadDiff {
                                    table: schema.name.clone(),
                                    column: col.name.clone(),
                                    reason: e.to_string(),
                                })?;
                        }
                        row.columns = columns.into_boxed_slice();
                        events.push(RowEvent {
                            table: schema.clone(),
                            uuid,
                            kind: ChangeKind::Modify,
                            old: Some(old),
                        });
                    }
                    RowChange::Delete => {
                        if let Some(old) = t.rows.remove(&uuid) {
                            events.push(RowEvent {
                                table: schema.clone(),
                                uuid,
                                kind: ChangeKind::Delete,
                                old: Some(old),
                            });
                        }
                    }
                }
            }
        }
        Ok(events)
    }
}

fn set_columns(row: &mut Row, cols: Vec<(usize, Datum)>) {
    for (i, d) in cols {
        if let Some(slot) = row.columns.get_mut(i) {
            *slot = d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::hardware_vtep;
    use crate::value::seed::{parse_table_updates, UpdateFormat};

    #[test]
    fn applies_inserts_diffs_and_deletes() {
        let s = hardware_vtep();
        let mut r = Replica::new(s.clone());
        let u = "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55";
        let apply = |r: &mut Replica, text: String| {
            r.apply(parse_table_updates(&text, &s, UpdateFormat::V2).unwrap())
                .unwrap()
        };
        let ev = apply(
            &mut r,
            format!(
                r#"{{"Physical_Port":{{"{u}":{{"initial":{{"name":"p1","vlan_bindings":["map",[[10,["uuid","{u}"]]]]}}}}}}}}"#
            ),
        );
        assert_eq!(ev[0].kind, ChangeKind::Insert);
        let uuid: Uuid = u.parse().unwrap();
        let t = r.table("Physical_Port").unwrap();
        let vb = t.column("vlan_bindings").unwrap();
        assert_eq!(r.row("Physical_Port", &uuid).unwrap().columns[vb].len(), 1);
        let ev = apply(
            &mut r,
            format!(
                r#"{{"Physical_Port":{{"{u}":{{"modify":{{"vlan_bindings":["map",[[10,["uuid","{u}"]],[20,["uuid","{u}"]]]]}}}}}}}}"#
            ),
        );
        assert_eq!(ev[0].kind, ChangeKind::Modify);
        let row = r.row("Physical_Port", &uuid).unwrap();
        assert_eq!(row.columns[vb].map_pairs().len(), 1);
        assert_eq!(
            row.columns[vb].map_pairs()[0].0,
            crate::value::Atom::Integer(20)
        );
        let ev = apply(
            &mut r,
            format!(r#"{{"Physical_Port":{{"{u}":{{"delete":null}}}}}}"#),
        );
        assert_eq!(ev[0].kind, ChangeKind::Delete);
        assert!(ev[0].old.is_some());
        assert_eq!(r.row_count(), 0);
        let bad = parse_table_updates(
            &format!(r#"{{"Physical_Port":{{"{u}":{{"modify":{{"name":"x"}}}}}}}}"#),
            &s,
            UpdateFormat::V2,
        )
        .unwrap();
        assert!(r.apply(bad).is_err());
    }
}
