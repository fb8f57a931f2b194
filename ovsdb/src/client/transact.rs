//! Building `transact` requests and reading their results (RFC 7047 §5.2).
//!
//! Operations reference rows inserted earlier in the same transaction by
//! `named-uuid`; the outcome maps those names back to the real UUIDs the
//! server chose, and keeps each operation's error exactly as sent.

use std::collections::HashMap;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value};

use crate::schema::TableSchema;
use crate::value::seed::{Columns, RowSeed};
use crate::value::{Atom, Datum, Uuid};

/// Condition and mutation functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Includes,
    Excludes,
}

impl Function {
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Gt => ">",
            Function::Ge => ">=",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

/// One `<condition>`: `[column, function, value]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub column: String,
    pub function: Function,
    pub value: Datum,
}

impl Condition {
    pub fn new(column: impl Into<String>, function: Function, value: Datum) -> Condition {
        Condition {
            column: column.into(),
            function,
            value,
        }
    }

    pub fn eq(column: impl Into<String>, value: impl Into<Atom>) -> Condition {
        Condition::new(column, Function::Eq, Datum::scalar(value))
    }

    /// `_uuid == u`, the usual way to address one row.
    pub fn uuid(u: Uuid) -> Condition {
        Condition::eq("_uuid", u)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(3))?;
        seq.serialize_element(&self.column)?;
        seq.serialize_element(self.function.as_str())?;
        seq.serialize_element(&self.value)?;
        seq.end()
    }
}

/// Mutators of the `mutate` operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutator {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Insert,
    Delete,
}

impl Mutator {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mutation {
    pub column: String,
    pub mutator: Mutator,
    pub value: Datum,
}

impl Mutation {
    pub fn new(column: impl Into<String>, mutator: Mutator, value: Datum) -> Mutation {
        Mutation {
            column: column.into(),
            mutator,
            value,
        }
    }
}

impl Serialize for Mutation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(3))?;
        seq.serialize_element(&self.column)?;
        seq.serialize_element(self.mutator.as_str())?;
        seq.serialize_element(&self.value)?;
        seq.end()
    }
}

/// Column values by name, as written in `insert`, `update` and `wait`.
pub type RowValues = Vec<(String, Datum)>;

struct RowObject<'a>(&'a RowValues);

impl Serialize for RowObject<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitUntil {
    Equal,
    NotEqual,
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum Operation {
    Insert {
        table: String,
        row: RowValues,
        uuid_name: Option<String>,
    },
    Select {
        table: String,
        conditions: Vec<Condition>,
        columns: Option<Vec<String>>,
    },
    Update {
        table: String,
        conditions: Vec<Condition>,
        row: RowValues,
    },
    Mutate {
        table: String,
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    },
    Delete {
        table: String,
        conditions: Vec<Condition>,
    },
    Wait {
        table: String,
        conditions: Vec<Condition>,
        columns: Vec<String>,
        until: WaitUntil,
        rows: Vec<RowValues>,
        timeout_ms: Option<u64>,
    },
    Commit {
        durable: bool,
    },
    Abort,
    Comment(String),
    Assert {
        lock: String,
    },
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self {
            Operation::Insert {
                table,
                row,
                uuid_name,
            } => {
                m.serialize_entry("op", "insert")?;
                m.serialize_entry("table", table)?;
                m.serialize_entry("row", &RowObject(row))?;
                if let Some(n) = uuid_name {
                    m.serialize_entry("uuid-name", n)?;
                }
            }
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                m.serialize_entry("op", "select")?;
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", conditions)?;
                if let Some(c) = columns {
                    m.serialize_entry("columns", c)?;
                }
            }
            Operation::Update {
                table,
                conditions,
                row,
            } => {
                m.serialize_entry("op", "update")?;
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", conditions)?;
                m.serialize_entry("row", &RowObject(row))?;
            }
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => {
                m.serialize_entry("op", "mutate")?;
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", conditions)?;
                m.serialize_entry("mutations", mutations)?;
            }
            Operation::Delete { table, conditions } => {
                m.serialize_entry("op", "delete")?;
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", conditions)?;
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                until,
                rows,
                timeout_ms,
            } => {
                m.serialize_entry("op", "wait")?;
                if let Some(t) = timeout_ms {
                    m.serialize_entry("timeout", t)?;
                }
                m.serialize_entry("table", table)?;
                m.serialize_entry("where", conditions)?;
                m.serialize_entry("columns", columns)?;
                m.serialize_entry(
                    "until",
                    match until {
                        WaitUntil::Equal => "==",
                        WaitUntil::NotEqual => "!=",
                    },
                )?;
                let rows: Vec<RowObject<'_>> = rows.iter().map(RowObject).collect();
                m.serialize_entry("rows", &rows)?;
            }
            Operation::Commit { durable } => {
                m.serialize_entry("op", "commit")?;
                m.serialize_entry("durable", durable)?;
            }
            Operation::Abort => m.serialize_entry("op", "abort")?,
            Operation::Comment(c) => {
                m.serialize_entry("op", "comment")?;
                m.serialize_entry("comment", c)?;
            }
            Operation::Assert { lock } => {
                m.serialize_entry("op", "assert")?;
                m.serialize_entry("lock", lock)?;
            }
        }
        m.end()
    }
}

/// Refers to an insert in a transaction, to find its UUID in the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsertHandle(pub usize);

/// A transaction under construction for one database.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transaction {
    pub database: String,
    pub ops: Vec<Operation>,
    next_name: u64,
}

impl Transaction {
    pub fn new(database: impl Into<String>) -> Transaction {
        Transaction {
            database: database.into(),
            ops: Vec::new(),
            next_name: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn push(&mut self, op: Operation) -> usize {
        self.ops.push(op);
        self.ops.len() - 1
    }

    /// A fresh `uuid-name`, valid only inside this transaction: the hint's
    /// identifier characters (no leading digit) and a counter. Built in one
    /// allocation: bulk loads name every inserted row.
    pub fn fresh_name(&mut self, hint: &str) -> String {
        use std::fmt::Write as _;
        self.next_name += 1;
        let mut name = String::with_capacity(hint.len() + 8);
        for c in hint.chars() {
            let ident = c.is_ascii_alphanumeric() || c == '_';
            if ident && !(name.is_empty() && c.is_ascii_digit()) {
                name.push(c);
            }
        }
        if name.is_empty() {
            name.push_str("row");
        }
        let _ = write!(name, "_{}", self.next_name);
        name
    }

    /// Inserts a row; other operations may refer to it with the returned
    /// `Atom::NamedUuid` until the transaction commits.
    pub fn insert(&mut self, table: &str, row: RowValues) -> (InsertHandle, Atom) {
        let name = self.fresh_name(table);
        let idx = self.push(Operation::Insert {
            table: table.to_string(),
            row,
            uuid_name: Some(name.clone()),
        });
        (InsertHandle(idx), Atom::NamedUuid(name.into()))
    }

    pub fn update(&mut self, table: &str, conditions: Vec<Condition>, row: RowValues) -> usize {
        self.push(Operation::Update {
            table: table.to_string(),
            conditions,
            row,
        })
    }

    pub fn mutate(
        &mut self,
        table: &str,
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    ) -> usize {
        self.push(Operation::Mutate {
            table: table.to_string(),
            conditions,
            mutations,
        })
    }

    pub fn delete(&mut self, table: &str, conditions: Vec<Condition>) -> usize {
        self.push(Operation::Delete {
            table: table.to_string(),
            conditions,
        })
    }

    pub fn select(
        &mut self,
        table: &str,
        conditions: Vec<Condition>,
        columns: Option<Vec<String>>,
    ) -> usize {
        self.push(Operation::Select {
            table: table.to_string(),
            conditions,
            columns,
        })
    }

    pub fn comment(&mut self, text: impl Into<String>) -> usize {
        self.push(Operation::Comment(text.into()))
    }

    /// The `params` of the `transact` request.
    pub fn params(&self) -> TransactParams<'_> {
        TransactParams(self)
    }
}

/// Serializes as `[db, op, op, …]`.
pub struct TransactParams<'a>(&'a Transaction);

impl Serialize for TransactParams<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.ops.len() + 1))?;
        seq.serialize_element(&self.0.database)?;
        for op in &self.0.ops {
            seq.serialize_element(op)?;
        }
        seq.end()
    }
}

/// An operation's error, exactly as the server sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    pub error: String,
    pub details: Option<String>,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.details {
            Some(d) => write!(f, "{}: {}", self.error, d),
            None => f.write_str(&self.error),
        }
    }
}

/// The result of one executed operation.
#[derive(Clone, Debug, PartialEq)]
pub enum OpResult {
    /// `{"uuid": …}` from an insert.
    Inserted(Uuid),
    /// `{"count": n}` from update, mutate and delete.
    Count(u64),
    /// `{"rows": […]}` from select, each row as JSON.
    Rows(Vec<Map<String, Value>>),
    /// `{}` from wait, commit, comment, assert.
    Empty,
    Error(OpError),
}

/// A decoded `transact` reply.
#[derive(Clone, Debug, PartialEq)]
pub struct TransactOutcome {
    /// One entry per operation sent; `None` where the server did not run it
    /// (the `null`s after a failed operation).
    pub results: Vec<Option<OpResult>>,
    /// The trailing extra element: a commit-time error (referential
    /// integrity, index, maxRows…) after every operation succeeded.
    pub commit_error: Option<OpError>,
    /// Real UUIDs of rows inserted with a `uuid-name`.
    pub named_uuids: HashMap<String, Uuid>,
}

impl TransactOutcome {
    /// Decodes the `result` array of a transact reply.
    pub fn from_json(txn: &Transaction, result: &Value) -> Result<TransactOutcome, String> {
        let arr = result
            .as_array()
            .ok_or_else(|| format!("transact result is not an array: {result}"))?;
        let mut results = Vec::with_capacity(txn.ops.len());
        let mut commit_error = None;
        for (i, item) in arr.iter().enumerate() {
            let parsed = match item {
                Value::Null => None,
                Value::Object(o) => Some(parse_op_result(o)?),
                other => return Err(format!("bad operation result {other}")),
            };
            if i < txn.ops.len() {
                results.push(parsed);
            } else if let Some(OpResult::Error(e)) = parsed {
                commit_error = Some(e);
            } else {
                return Err(format!("unexpected extra transact result {item}"));
            }
        }
        if results.len() < txn.ops.len() {
            // ovsdb-server always answers every operation, with null for
            // those it skipped; a shorter answer is still usable.
            results.resize(txn.ops.len(), None);
        }
        let mut named_uuids = HashMap::new();
        for (op, res) in txn.ops.iter().zip(&results) {
            if let (
                Operation::Insert {
                    uuid_name: Some(n), ..
                },
                Some(OpResult::Inserted(u)),
            ) = (op, res)
            {
                named_uuids.insert(n.clone(), *u);
            }
        }
        Ok(TransactOutcome {
            results,
            commit_error,
            named_uuids,
        })
    }

    /// The first error, whether from an operation or from the commit.
    pub fn error(&self) -> Option<(Option<usize>, &OpError)> {
        self.results
            .iter()
            .enumerate()
            .find_map(|(i, r)| match r {
                Some(OpResult::Error(e)) => Some((Some(i), e)),
                _ => None,
            })
            .or(self.commit_error.as_ref().map(|e| (None, e)))
    }

    pub fn is_success(&self) -> bool {
        self.error().is_none()
    }

    pub fn uuid(&self, handle: InsertHandle) -> Option<Uuid> {
        match self.results.get(handle.0) {
            Some(Some(OpResult::Inserted(u))) => Some(*u),
            _ => None,
        }
    }

    pub fn count(&self, op: usize) -> Option<u64> {
        match self.results.get(op) {
            Some(Some(OpResult::Count(n))) => Some(*n),
            _ => None,
        }
    }

    pub fn rows(&self, op: usize) -> Option<&[Map<String, Value>]> {
        match self.results.get(op) {
            Some(Some(OpResult::Rows(r))) => Some(r),
            _ => None,
        }
    }
}

fn parse_op_result(o: &Map<String, Value>) -> Result<OpResult, String> {
    if let Some(e) = o.get("error") {
        return Ok(OpResult::Error(OpError {
            error: e
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string()),
            details: o.get("details").map(|d| {
                d.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| d.to_string())
            }),
        }));
    }
    if let Some(u) = o.get("uuid") {
        let atom = Atom::from_json(u, crate::value::AtomicType::Uuid).map_err(|e| e.to_string())?;
        return match atom {
            Atom::Uuid(u) => Ok(OpResult::Inserted(u)),
            _ => Err(format!("bad uuid in insert result: {u}")),
        };
    }
    if let Some(c) = o.get("count") {
        return c
            .as_u64()
            .map(OpResult::Count)
            .ok_or_else(|| format!("bad count {c}"));
    }
    if let Some(r) = o.get("rows") {
        let rows = r
            .as_array()
            .ok_or_else(|| format!("bad rows {r}"))?
            .iter()
            .map(|row| {
                row.as_object()
                    .cloned()
                    .ok_or_else(|| format!("bad row {row}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(OpResult::Rows(rows));
    }
    Ok(OpResult::Empty)
}

/// A selected row decoded against its table schema: its `_uuid` (when
/// selected) and the columns present.
pub fn typed_row(
    table: &TableSchema,
    row: &Map<String, Value>,
) -> Result<(Option<Uuid>, Columns), String> {
    use serde::de::DeserializeSeed;
    let uuid = match row.get("_uuid") {
        Some(u) => match Atom::from_json(u, crate::value::AtomicType::Uuid) {
            Ok(Atom::Uuid(u)) => Some(u),
            _ => return Err(format!("bad _uuid {u}")),
        },
        None => None,
    };
    let value = Value::Object(row.clone());
    let cols = RowSeed(table)
        .deserialize(&value)
        .map_err(|e| e.to_string())?;
    Ok((uuid, cols))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_wire_ops() {
        let mut t = Transaction::new("hardware_vtep");
        let (h, loc) = t.insert(
            "Physical_Locator",
            vec![
                ("dst_ip".into(), Datum::scalar("10.0.0.1")),
                (
                    "encapsulation_type".into(),
                    Datum::scalar("vxlan_over_ipv4"),
                ),
            ],
        );
        t.insert(
            "Ucast_Macs_Remote",
            vec![
                ("MAC".into(), Datum::scalar("02:00:00:00:00:01")),
                ("locator".into(), Datum::scalar(loc)),
            ],
        );
        t.mutate(
            "Physical_Port",
            vec![Condition::eq("name", "p1")],
            vec![Mutation::new(
                "vlan_bindings",
                Mutator::Delete,
                Datum::set([Atom::Integer(100)]),
            )],
        );
        let v = serde_json::to_value(t.params()).unwrap();
        assert_eq!(v[0], json!("hardware_vtep"));
        assert_eq!(v[1]["uuid-name"], json!("Physical_Locator_1"));
        assert_eq!(
            v[2]["row"]["locator"],
            json!(["named-uuid", "Physical_Locator_1"])
        );
        assert_eq!(v[3]["mutations"], json!([["vlan_bindings", "delete", 100]]));
        let reply = json!([{"uuid": ["uuid", "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55"]}, {"uuid": ["uuid", "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a56"]}, {"count": 1}]);
        let out = TransactOutcome::from_json(&t, &reply).unwrap();
        assert!(out.is_success());
        assert_eq!(
            out.uuid(h).unwrap().to_string(),
            "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55"
        );
        assert_eq!(out.named_uuids.len(), 2);
    }

    #[test]
    fn surfaces_op_and_commit_errors() {
        let mut t = Transaction::new("hardware_vtep");
        t.delete("Logical_Switch", vec![]);
        t.comment("x");
        let op_err = json!([{"error": "constraint violation", "details": "bad"}, null]);
        let out = TransactOutcome::from_json(&t, &op_err).unwrap();
        assert_eq!(out.error().unwrap().0, Some(0));
        assert_eq!(out.results[1], None);
        let commit_err = json!([{"count": 1}, {}, {"error": "referential integrity violation", "details": "cannot delete"}]);
        let out = TransactOutcome::from_json(&t, &commit_err).unwrap();
        let (idx, e) = out.error().unwrap();
        assert_eq!(idx, None);
        assert_eq!(e.error, "referential integrity violation");
    }
}
