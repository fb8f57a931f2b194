//! Monitors: `monitor` (update v1), `monitor_cond` (update2) and
//! `monitor_cond_since` (update3): request parsing, initial contents, and
//! per-commit table updates. A commit encodes each table's update once per
//! distinct monitor spec (format, columns, selection, condition) and every
//! session with that spec sends the same text.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::condition::{ColRef, Condition};
use super::db::{Commit, RowUpdate, TableChanges};
use super::error::{canonical_string, OvsdbError};
use super::parser::{self, Parser};
use super::storage::{DbData, RowData};
use crate::schema::TableSchema;
use crate::value::{Datum, Uuid};

/// The all-zero transaction id a standalone database reports.
pub const ZERO_TXN_ID: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitorVersion {
    /// `monitor` → `update`.
    V1,
    /// `monitor_cond` → `update2`.
    V2,
    /// `monitor_cond_since` → `update3`.
    V3,
}

impl MonitorVersion {
    pub fn method(self) -> &'static str {
        match self {
            MonitorVersion::V1 => "update",
            MonitorVersion::V2 => "update2",
            MonitorVersion::V3 => "update3",
        }
    }

    fn conditional(self) -> bool {
        self != MonitorVersion::V1
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Select {
    pub initial: bool,
    pub insert: bool,
    pub delete: bool,
    pub modify: bool,
}

impl Select {
    const ALL: Select = Select {
        initial: true,
        insert: true,
        delete: true,
        modify: true,
    };
}

#[derive(Clone, Debug)]
pub struct MonitorTable {
    pub table: usize,
    pub schema: Arc<TableSchema>,
    /// Monitored columns, each with the changes it is reported for.
    pub columns: Vec<(ColRef, Select)>,
    pub select: Select,
    pub condition: Option<Condition>,
    where_json: Option<Value>,
    key: String,
}

impl MonitorTable {
    fn rekey(&mut self, version: MonitorVersion) {
        let mut key = String::new();
        let format = if version == MonitorVersion::V1 { 1 } else { 2 };
        let _ = write!(key, "v{format}|{}|", self.schema.name);
        for (c, s) in &self.columns {
            let _ = write!(
                key,
                "{}:{}{}{}{},",
                c.name(&self.schema),
                u8::from(s.initial),
                u8::from(s.insert),
                u8::from(s.delete),
                u8::from(s.modify)
            );
        }
        let s = self.select;
        let _ = write!(
            key,
            "|{}{}{}{}|",
            u8::from(s.initial),
            u8::from(s.insert),
            u8::from(s.delete),
            u8::from(s.modify)
        );
        if let Some(w) = &self.where_json {
            key.push_str(&canonical_string(w));
        }
        self.key = key;
    }

    fn matches(&self, uuid: &Uuid, row: &RowData) -> bool {
        self.condition
            .as_ref()
            .is_none_or(|c| c.matches_any(uuid, row))
    }
}

#[derive(Clone, Debug)]
pub struct Monitor {
    pub id: Value,
    pub db: String,
    pub version: MonitorVersion,
    pub tables: Vec<MonitorTable>,
    /// Commits up to this sequence number are in the initial contents.
    pub since_seq: u64,
}

/// Parses `<monitor-requests>` (one request or an array per table).
pub fn parse_requests(
    data: &DbData,
    requests: &Value,
    version: MonitorVersion,
) -> Result<Vec<MonitorTable>, OvsdbError> {
    let obj = requests.as_object().ok_or_else(|| {
        OvsdbError::syntax(Some(requests), None, "monitor-requests must be object")
    })?;
    let mut tables: Vec<MonitorTable> = Vec::new();
    for (name, mr) in obj {
        let t = data
            .table_index(name)
            .ok_or_else(|| OvsdbError::syntax(None, None, format!("no table named {name}")))?;
        let schema = data.tables()[t].schema.clone();
        let mut mt = MonitorTable {
            table: t,
            schema,
            columns: Vec::new(),
            select: Select::default(),
            condition: None,
            where_json: None,
            key: String::new(),
        };
        match mr {
            Value::Array(items) => {
                for item in items {
                    parse_request(&mut mt, item, version)?;
                }
            }
            other => parse_request(&mut mt, other, version)?,
        }
        mt.rekey(version);
        tables.push(mt);
    }
    Ok(tables)
}

fn parse_request(
    mt: &mut MonitorTable,
    json: &Value,
    version: MonitorVersion,
) -> Result<(), OvsdbError> {
    let ts = mt.schema.clone();
    let mut p = Parser::new(json, format!("table {}", ts.name));
    let where_ = if version.conditional() {
        p.member("where", parser::ARRAY | parser::OPTIONAL)
    } else {
        None
    };
    let columns = p.member("columns", parser::ARRAY | parser::OPTIONAL);
    let select = p.member("select", parser::OBJECT | parser::OPTIONAL);
    if let Some(e) = p.finish() {
        return Err(e);
    }
    let sel = match select {
        Some(s) => {
            let mut p = Parser::new(s, format!("table {} select", ts.name));
            let mut flag = |name: &str| {
                p.member(name, parser::BOOLEAN | parser::OPTIONAL)
                    .and_then(Value::as_bool)
                    .unwrap_or(true)
            };
            let sel = Select {
                initial: flag("initial"),
                insert: flag("insert"),
                delete: flag("delete"),
                modify: flag("modify"),
            };
            if let Some(e) = p.finish() {
                return Err(e);
            }
            sel
        }
        None => Select::ALL,
    };
    mt.select.initial |= sel.initial;
    mt.select.insert |= sel.insert;
    mt.select.delete |= sel.delete;
    mt.select.modify |= sel.modify;
    let add = |mt: &mut MonitorTable, c: ColRef, cols_json: Option<&Value>| {
        if mt.columns.iter().any(|(x, _)| *x == c) {
            return Err(OvsdbError::syntax(
                cols_json,
                None,
                format!("column {} mentioned more than once", c.name(&ts)),
            ));
        }
        mt.columns.push((c, sel));
        Ok(())
    };
    match columns {
        Some(cols) => {
            let names = cols.as_array().map(Vec::as_slice).unwrap_or_default();
            for n in names {
                let name = n.as_str().ok_or_else(|| {
                    OvsdbError::syntax(Some(cols), None, "array of column names expected")
                })?;
                let c = ColRef::lookup(&ts, name).ok_or_else(|| {
                    OvsdbError::syntax(
                        Some(cols),
                        None,
                        format!("{name} is not a valid column name"),
                    )
                })?;
                add(mt, c, Some(cols))?;
            }
        }
        None => {
            add(mt, ColRef::Version, None)?;
            for i in 0..ts.columns.len() {
                add(mt, ColRef::Col(i), None)?;
            }
        }
    }
    if let Some(w) = where_ {
        mt.condition = Some(Condition::parse(&ts, w, None)?);
        mt.where_json = Some(w.clone());
    }
    Ok(())
}

fn columns_json(
    mt: &MonitorTable,
    uuid: &Uuid,
    row: &RowData,
    skip_default: bool,
    kind: Kind,
) -> Value {
    let mut m = Map::new();
    for (c, _) in mt.columns.iter().filter(|(_, s)| kind.selected(s)) {
        let v = c.value(uuid, row);
        if skip_default {
            if let ColRef::Col(i) = c {
                if let Some(col) = mt.schema.columns.get(*i) {
                    if *v == Datum::default_for(&col.ty) {
                        continue;
                    }
                }
            }
        }
        m.insert(c.name(&mt.schema).to_string(), v.to_json());
    }
    Value::Object(m)
}

fn single(key: &str, v: Value) -> Value {
    let mut m = Map::new();
    m.insert(key.to_string(), v);
    Value::Object(m)
}

impl Monitor {
    /// The initial contents (`<table-updates>` or `<table-updates2>`).
    pub fn initial(&self, data: &DbData) -> Value {
        let mut out = Map::new();
        for mt in &self.tables {
            if !mt.select.initial {
                continue;
            }
            let Some(table) = data.table_at(mt.table) else {
                continue;
            };
            let mut rows = Map::new();
            for (uuid, row) in table.iter() {
                if !mt.matches(uuid, row) {
                    continue;
                }
                let v = match self.version {
                    MonitorVersion::V1 => {
                        single("new", columns_json(mt, uuid, row, false, Kind::Initial))
                    }
                    _ => single("initial", columns_json(mt, uuid, row, true, Kind::Initial)),
                };
                rows.insert(uuid.to_string(), v);
            }
            if !rows.is_empty() {
                out.insert(mt.schema.name.clone(), Value::Object(rows));
            }
        }
        Value::Object(out)
    }

    /// The notification for one commit, if it touches what is monitored.
    pub fn update(&self, commit: &Commit) -> Option<String> {
        let mut parts: Vec<(String, Arc<str>)> = Vec::new();
        for mt in &self.tables {
            let Some(tc) = commit.tables.iter().find(|t| t.index == mt.table) else {
                continue;
            };
            let cached = commit
                .cache
                .lock()
                .ok()
                .and_then(|c| c.get(&mt.key).cloned());
            let encoded = match cached {
                Some(e) => e,
                None => {
                    let e = encode_table(mt, tc, self.version).map(|v| Arc::from(v.to_string()));
                    if let Ok(mut c) = commit.cache.lock() {
                        c.insert(mt.key.clone(), e.clone());
                    }
                    e
                }
            };
            if let Some(e) = encoded {
                parts.push((mt.schema.name.clone(), e));
            }
        }
        if parts.is_empty() {
            return None;
        }
        Some(self.notification(&parts))
    }

    fn notification(&self, parts: &[(String, Arc<str>)]) -> String {
        let mut s = String::with_capacity(64 + parts.iter().map(|p| p.1.len() + 32).sum::<usize>());
        s.push_str("{\"id\":null,\"method\":\"");
        s.push_str(self.version.method());
        s.push_str("\",\"params\":[");
        s.push_str(&self.id.to_string());
        s.push(',');
        if self.version == MonitorVersion::V3 {
            s.push('"');
            s.push_str(ZERO_TXN_ID);
            s.push_str("\",");
        }
        s.push('{');
        for (i, (name, enc)) in parts.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&Value::String(name.clone()).to_string());
            s.push(':');
            s.push_str(enc);
        }
        s.push_str("}]}");
        s
    }

    /// Replaces conditions (`monitor_cond_change`) and returns the
    /// notification for rows that enter or leave them.
    pub fn change_conditions(
        &mut self,
        data: &DbData,
        changes: Vec<(usize, Condition, Value)>,
    ) -> Option<String> {
        let mut parts = Vec::new();
        for (t, cond, where_json) in changes {
            let version = self.version;
            let Some(mt) = self.tables.iter_mut().find(|m| m.table == t) else {
                continue;
            };
            let old = mt.clone();
            mt.condition = Some(cond);
            mt.where_json = Some(where_json);
            mt.rekey(version);
            let Some(table) = data.table_at(t) else {
                continue;
            };
            let mut rows = Map::new();
            for (uuid, row) in table.iter() {
                let before = old.matches(uuid, row);
                let after = mt.matches(uuid, row);
                if before && !after {
                    rows.insert(uuid.to_string(), single("delete", Value::Null));
                } else if after && !before {
                    rows.insert(
                        uuid.to_string(),
                        single("insert", columns_json(mt, uuid, row, true, Kind::Initial)),
                    );
                }
            }
            if !rows.is_empty() {
                parts.push((
                    mt.schema.name.clone(),
                    Arc::from(Value::Object(rows).to_string()),
                ));
            }
        }
        if parts.is_empty() {
            None
        } else {
            Some(self.notification(&parts))
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Initial,
    Insert,
    Delete,
    Modify,
}

impl Kind {
    fn selected(self, s: &Select) -> bool {
        match self {
            Kind::Initial => s.initial,
            Kind::Insert => s.insert,
            Kind::Delete => s.delete,
            Kind::Modify => s.modify,
        }
    }
}

fn encode_table(mt: &MonitorTable, tc: &TableChanges, version: MonitorVersion) -> Option<Value> {
    let mut rows = Map::new();
    for ru in &tc.rows {
        if let Some(v) = encode_row(mt, ru, version) {
            rows.insert(ru.uuid.to_string(), v);
        }
    }
    if rows.is_empty() {
        None
    } else {
        Some(Value::Object(rows))
    }
}

fn encode_row(mt: &MonitorTable, ru: &RowUpdate, version: MonitorVersion) -> Option<Value> {
    let uuid = &ru.uuid;
    let mut kind = match (&ru.old, &ru.new) {
        (None, Some(_)) => Kind::Insert,
        (Some(_), None) => Kind::Delete,
        (Some(_), Some(_)) => Kind::Modify,
        (None, None) => return None,
    };
    if mt.condition.is_some() {
        let old_match = ru.old.as_ref().is_some_and(|o| mt.matches(uuid, o));
        let new_match = ru.new.as_ref().is_some_and(|n| mt.matches(uuid, n));
        kind = match kind {
            Kind::Insert if new_match => Kind::Insert,
            Kind::Delete if old_match => Kind::Delete,
            Kind::Modify if old_match && new_match => Kind::Modify,
            Kind::Modify if new_match => Kind::Insert,
            Kind::Modify if old_match => Kind::Delete,
            _ => return None,
        };
    }
    if !kind.selected(&mt.select) {
        return None;
    }
    match (version, kind) {
        (MonitorVersion::V1, Kind::Insert) => {
            let new = ru.new.as_ref()?;
            Some(single(
                "new",
                columns_json(mt, uuid, new, false, Kind::Insert),
            ))
        }
        (MonitorVersion::V1, Kind::Delete) => {
            let old = ru.old.as_ref()?;
            Some(single(
                "old",
                columns_json(mt, uuid, old, false, Kind::Delete),
            ))
        }
        (MonitorVersion::V1, Kind::Modify) => {
            let (old, new) = (ru.old.as_ref()?, ru.new.as_ref()?);
            let mut changed = Map::new();
            for (c, _) in mt.columns.iter().filter(|(_, s)| s.modify) {
                let (a, b) = (c.value(uuid, old), c.value(uuid, new));
                if a != b {
                    changed.insert(c.name(&mt.schema).to_string(), a.to_json());
                }
            }
            if changed.is_empty() {
                return None;
            }
            let mut m = Map::new();
            m.insert("old".into(), Value::Object(changed));
            m.insert(
                "new".into(),
                columns_json(mt, uuid, new, false, Kind::Modify),
            );
            Some(Value::Object(m))
        }
        (_, Kind::Insert) => {
            // A row entering the condition is sent whole.
            let new = ru.new.as_ref()?;
            Some(single(
                "insert",
                columns_json(mt, uuid, new, true, Kind::Insert),
            ))
        }
        (_, Kind::Delete) => Some(single("delete", Value::Null)),
        (_, Kind::Initial) => None,
        (_, Kind::Modify) => {
            let (old, new) = (ru.old.as_ref()?, ru.new.as_ref()?);
            let mut diff = Map::new();
            for (c, _) in mt.columns.iter().filter(|(_, s)| s.modify) {
                let (a, b) = (c.value(uuid, old), c.value(uuid, new));
                if a != b {
                    let d = match c {
                        ColRef::Col(i) => match mt.schema.columns.get(*i) {
                            Some(col) => Datum::diff(&a, &b, &col.ty),
                            None => b.into_owned(),
                        },
                        _ => b.into_owned(),
                    };
                    diff.insert(c.name(&mt.schema).to_string(), d.to_json());
                }
            }
            if diff.is_empty() {
                return None;
            }
            Some(single("modify", Value::Object(diff)))
        }
    }
}

/// Monitors of one session, by id (compared as JSON).
#[derive(Default)]
pub struct Monitors {
    list: Vec<Monitor>,
}

impl Monitors {
    pub fn find(&self, id: &Value) -> Option<usize> {
        self.list.iter().position(|m| &m.id == id)
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut Monitor> {
        self.list.get_mut(i)
    }

    pub fn add(&mut self, m: Monitor) {
        self.list.push(m);
    }

    pub fn remove(&mut self, i: usize) {
        if i < self.list.len() {
            self.list.remove(i);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Monitor> {
        self.list.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Groups rows of a commit by table name (for in-process readers).
pub fn changes_by_name(commit: &Commit) -> HashMap<&str, &TableChanges> {
    commit
        .tables
        .iter()
        .map(|t| (t.schema.name.as_str(), t))
        .collect()
}
