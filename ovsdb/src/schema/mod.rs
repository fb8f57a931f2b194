//! Database schemas (RFC 7047 §3.2): parsing, validation, the normalized JSON
//! form ovsdb-server serves, and the embedded `hardware_vtep` schema.

mod constraints;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use serde_json::{json, Map, Value};

pub use types::{BaseType, ColumnType, RefType, UNLIMITED};

/// Errors in a schema document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("schema error: {0}")]
pub struct SchemaError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SchemaError> {
    Err(SchemaError(msg.into()))
}

#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSchema {
    pub name: String,
    pub ty: ColumnType,
    pub ephemeral: bool,
    pub mutable: bool,
}

#[derive(Clone, Debug)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<ColumnSchema>,
    by_name: HashMap<String, usize>,
    pub max_rows: Option<u64>,
    pub is_root: bool,
    /// Each index as column positions.
    pub indexes: Vec<Vec<usize>>,
}

impl PartialEq for TableSchema {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.columns == other.columns
            && self.max_rows == other.max_rows
            && self.is_root == other.is_root
            && self.indexes == other.indexes
    }
}

impl TableSchema {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        // Comparing a few short names beats hashing: decoders call this for
        // every column of every row.
        if self.columns.len() <= 12 {
            self.columns.iter().position(|c| c.name == name)
        } else {
            self.by_name.get(name).copied()
        }
    }

    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.column_index(name).and_then(|i| self.columns.get(i))
    }

    fn from_json(name: &str, v: &Value) -> Result<TableSchema, SchemaError> {
        let obj = v
            .as_object()
            .ok_or_else(|| SchemaError(format!("table {name} is not an object")))?;
        for key in obj.keys() {
            if !matches!(key.as_str(), "columns" | "maxRows" | "isRoot" | "indexes") {
                return err(format!("table {name}: unknown member {key}"));
            }
        }
        let cols = obj
            .get("columns")
            .and_then(Value::as_object)
            .ok_or_else(|| SchemaError(format!("table {name} has no columns object")))?;
        if cols.is_empty() {
            return err(format!("table {name} must have at least one column"));
        }
        let mut columns = Vec::with_capacity(cols.len());
        // Sorted by name so positions are stable whatever the document order.
        let sorted: BTreeMap<&String, &Value> = cols.iter().collect();
        for (cname, cv) in sorted {
            if cname.starts_with('_') {
                return err(format!(
                    "{name}.{cname}: names beginning with \"_\" are reserved"
                ));
            }
            if !crate::value::is_valid_id(cname) {
                return err(format!("{name}.{cname}: not a valid column name"));
            }
            let cobj = cv
                .as_object()
                .ok_or_else(|| SchemaError(format!("column {name}.{cname} is not an object")))?;
            for key in cobj.keys() {
                if !matches!(key.as_str(), "type" | "ephemeral" | "mutable") {
                    return err(format!("column {name}.{cname}: unknown member {key}"));
                }
            }
            let ty = ColumnType::from_json(
                cobj.get("type")
                    .ok_or_else(|| SchemaError(format!("column {name}.{cname} has no type")))?,
            )
            .map_err(|e| SchemaError(format!("column {name}.{cname}: {}", e.0)))?;
            let flag = |key: &str, default: bool| -> Result<bool, SchemaError> {
                match cobj.get(key) {
                    None => Ok(default),
                    Some(Value::Bool(b)) => Ok(*b),
                    Some(_) => err(format!("column {name}.{cname}: {key} must be a boolean")),
                }
            };
            columns.push(ColumnSchema {
                name: cname.clone(),
                ephemeral: flag("ephemeral", false)?,
                mutable: flag("mutable", true)?,
                ty,
            });
        }
        let by_name = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect::<HashMap<_, _>>();
        let max_rows = match obj.get("maxRows") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => Some(n),
                _ => return err(format!("table {name}: maxRows must be a positive integer")),
            },
        };
        let is_root = match obj.get("isRoot") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return err(format!("table {name}: isRoot must be a boolean")),
        };
        let mut indexes = Vec::new();
        if let Some(ix) = obj.get("indexes") {
            let list = ix
                .as_array()
                .ok_or_else(|| SchemaError(format!("table {name}: indexes must be an array")))?;
            for index in list {
                let cols = index.as_array().ok_or_else(|| {
                    SchemaError(format!("table {name}: each index must be an array"))
                })?;
                if cols.is_empty() {
                    return err(format!("table {name}: index must have at least one column"));
                }
                let mut positions = Vec::with_capacity(cols.len());
                for c in cols {
                    let cname = c.as_str().ok_or_else(|| {
                        SchemaError(format!("table {name}: index column must be a string"))
                    })?;
                    let pos = by_name.get(cname).copied().ok_or_else(|| {
                        SchemaError(format!(
                            "table {name}: index refers to unknown column {cname}"
                        ))
                    })?;
                    if columns[pos].ephemeral {
                        return err(format!(
                            "table {name}: ephemeral columns (such as {cname}) may not be indexed"
                        ));
                    }
                    positions.push(pos);
                }
                indexes.push(positions);
            }
        }
        Ok(TableSchema {
            name: name.to_string(),
            columns,
            by_name,
            max_rows,
            is_root,
            indexes,
        })
    }

    /// The normalized form ovsdb-server's `get_schema` returns.
    pub fn to_json(&self, all_root: bool) -> Value {
        let mut cols = Map::new();
        for c in &self.columns {
            let mut o = Map::new();
            o.insert("type".into(), c.ty.to_json());
            if c.ephemeral {
                o.insert("ephemeral".into(), Value::Bool(true));
            }
            if !c.mutable {
                o.insert("mutable".into(), Value::Bool(false));
            }
            cols.insert(c.name.clone(), Value::Object(o));
        }
        let mut t = Map::new();
        t.insert("columns".into(), Value::Object(cols));
        if let Some(m) = self.max_rows {
            t.insert("maxRows".into(), json!(m));
        }
        if self.is_root && !all_root {
            t.insert("isRoot".into(), Value::Bool(true));
        }
        if !self.indexes.is_empty() {
            t.insert(
                "indexes".into(),
                Value::Array(
                    self.indexes
                        .iter()
                        .map(|ix| {
                            Value::Array(
                                ix.iter()
                                    .map(|p| Value::String(self.columns[*p].name.clone()))
                                    .collect(),
                            )
                        })
                        .collect(),
                ),
            );
        }
        Value::Object(t)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseSchema {
    pub name: String,
    pub version: String,
    pub cksum: Option<String>,
    pub tables: BTreeMap<String, Arc<TableSchema>>,
}

impl DatabaseSchema {
    pub fn from_json(v: &Value) -> Result<DatabaseSchema, SchemaError> {
        let obj = v
            .as_object()
            .ok_or_else(|| SchemaError("schema is not a JSON object".into()))?;
        for key in obj.keys() {
            if !matches!(key.as_str(), "name" | "version" | "cksum" | "tables") {
                return err(format!("schema: unknown member {key}"));
            }
        }
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| SchemaError("schema has no name".into()))?
            .to_string();
        if !crate::value::is_valid_id(&name) {
            return err(format!("{name} is not a valid database name"));
        }
        // Old schemas have no version; ovsdb-server accepts them.
        let version = match obj.get("version") {
            None => String::new(),
            Some(Value::String(v)) => v.clone(),
            Some(_) => return err("version must be a string"),
        };
        let parts: Vec<&str> = version.split('.').collect();
        if !version.is_empty()
            && (parts.len() != 3 || parts.iter().any(|p| p.parse::<u32>().is_err()))
        {
            return err(format!("schema version \"{version}\" not in format x.y.z"));
        }
        let cksum = match obj.get("cksum") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return err("cksum must be a string"),
        };
        let tables_obj = obj
            .get("tables")
            .and_then(Value::as_object)
            .ok_or_else(|| SchemaError(format!("schema {name} has no tables object")))?;
        let mut tables = BTreeMap::new();
        for (tname, tv) in tables_obj {
            if tname.starts_with('_') || !crate::value::is_valid_id(tname) {
                return err(format!("{tname} is not a valid table name"));
            }
            tables.insert(tname.clone(), Arc::new(TableSchema::from_json(tname, tv)?));
        }
        // If no table is a root table, all of them are (RFC 7047 §3.2, for
        // schemas older than garbage collection).
        if !tables.values().any(|t| t.is_root) {
            for t in tables.values_mut() {
                Arc::make_mut(t).is_root = true;
            }
        }
        // Validate references, and make strong references to non-root
        // tables persistent, as ovsdb-server does: replaying a log without an
        // ephemeral only reference would garbage-collect the row.
        let roots: HashMap<String, bool> =
            tables.iter().map(|(n, t)| (n.clone(), t.is_root)).collect();
        for t in tables.values_mut() {
            let t = Arc::make_mut(t);
            for c in &mut t.columns {
                let mut force_persistent = false;
                for base in std::iter::once(&c.ty.key).chain(c.ty.value.iter()) {
                    if let Some(rt) = &base.ref_table {
                        match roots.get(rt) {
                            None => {
                                return err(format!(
                                    "column {}.{} refers to undefined table {rt}",
                                    t.name, c.name
                                ))
                            }
                            Some(false) if base.ref_type == RefType::Strong => {
                                force_persistent = true
                            }
                            Some(_) => {}
                        }
                    }
                }
                if force_persistent {
                    c.ephemeral = false;
                }
            }
        }
        Ok(DatabaseSchema {
            name,
            version,
            cksum,
            tables,
        })
    }

    /// Parses a schema document (an `.ovsschema` file's text).
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str) -> Result<DatabaseSchema, SchemaError> {
        let v: Value = serde_json::from_str(text).map_err(|e| SchemaError(e.to_string()))?;
        DatabaseSchema::from_json(&v)
    }

    pub fn table(&self, name: &str) -> Option<&Arc<TableSchema>> {
        self.tables.get(name)
    }

    /// The normalized form ovsdb-server's `get_schema` returns.
    pub fn to_json(&self) -> Value {
        // Schemas from before garbage collection have every table in the
        // root set; ovsdb-server then leaves "isRoot" out entirely.
        let all_root = self.tables.values().all(|t| t.is_root);
        let mut o = Map::new();
        o.insert("name".into(), Value::String(self.name.clone()));
        if !self.version.is_empty() {
            o.insert("version".into(), Value::String(self.version.clone()));
        }
        if let Some(c) = &self.cksum {
            o.insert("cksum".into(), Value::String(c.clone()));
        }
        o.insert(
            "tables".into(),
            Value::Object(
                self.tables
                    .iter()
                    .map(|(n, t)| (n.clone(), t.to_json(all_root)))
                    .collect(),
            ),
        );
        Value::Object(o)
    }
}

/// The `hardware_vtep` 1.7.0 schema exactly as Open vSwitch 3.1 ships it
/// (`vtep/vtep.ovsschema`, cksum 353943336 11434).
pub const HARDWARE_VTEP_SCHEMA_JSON: &str = include_str!("../../schemas/vtep.ovsschema");

/// The `_Server` schema ovsdb-server 3.1 serves beside every database.
pub const SERVER_SCHEMA_JSON: &str = include_str!("../../schemas/_server.ovsschema");

/// The embedded `hardware_vtep` schema, parsed once.
pub fn hardware_vtep() -> Arc<DatabaseSchema> {
    static SCHEMA: OnceLock<Arc<DatabaseSchema>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            // The embedded document is checked by tests; a failure here is a
            // build defect, never peer input.
            #[allow(clippy::expect_used)]
            Arc::new(
                DatabaseSchema::from_str(HARDWARE_VTEP_SCHEMA_JSON)
                    .expect("embedded hardware_vtep schema parses"),
            )
        })
        .clone()
}

/// The embedded `_Server` schema, parsed once.
pub fn server_db() -> Arc<DatabaseSchema> {
    static SCHEMA: OnceLock<Arc<DatabaseSchema>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            #[allow(clippy::expect_used)]
            Arc::new(
                DatabaseSchema::from_str(SERVER_SCHEMA_JSON)
                    .expect("embedded _Server schema parses"),
            )
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_vtep_parses_with_expected_shape() {
        let s = hardware_vtep();
        assert_eq!(s.name, "hardware_vtep");
        assert_eq!(s.version, "1.7.0");
        assert_eq!(s.cksum.as_deref(), Some("353943336 11434"));
        let pl = s.table("Physical_Locator").unwrap();
        assert!(!pl.is_root);
        assert_eq!(pl.indexes.len(), 1);
        assert!(!pl.column("dst_ip").unwrap().mutable);
        let g = s.table("Global").unwrap();
        assert!(g.is_root);
        assert_eq!(g.max_rows, Some(1));
        let pp = s.table("Physical_Port").unwrap();
        let vb = &pp.column("vlan_bindings").unwrap().ty;
        assert_eq!(vb.key.max_integer, Some(4095));
        assert_eq!(
            vb.value.as_ref().unwrap().ref_table.as_deref(),
            Some("Logical_Switch")
        );
    }

    #[test]
    fn normalized_json_reparses_identically() {
        let s = hardware_vtep();
        let again = DatabaseSchema::from_json(&s.to_json()).unwrap();
        assert_eq!(*s, again);
    }

    #[test]
    fn rejects_bad_schemas() {
        for bad in [
            json!({"name": "x", "version": "1", "tables": {}}),
            json!({"name": "x", "version": 1, "tables": {}}),
            json!({"name": "x", "version": "1.0.0", "tables": {"T": {"columns": {}}}}),
            json!({"name": "x", "version": "1.0.0", "tables": {"T": {"columns": {"a": {"type": "nope"}}}}}),
            json!({"name": "x", "version": "1.0.0", "tables": {"T": {"columns": {"a": {"type": {"key": {"type": "uuid", "refTable": "U"}}}}}}}),
            json!({"name": "x", "version": "1.0.0", "tables": {"T": {"columns": {"a": {"type": "string"}}, "indexes": [["b"]]}}}),
            json!({"name": "x", "version": "1.0.0", "tables": {"T": {"columns": {"_a": {"type": "string"}}}}}),
        ] {
            assert!(DatabaseSchema::from_json(&bad).is_err(), "{bad}");
        }
    }
}
