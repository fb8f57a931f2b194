//! Monitor requests (RFC 7047 §4.1.5 and ovsdb-server's `monitor_cond`).

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::transact::Condition;

/// Which kinds of change a monitor reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Select {
    pub initial: bool,
    pub insert: bool,
    pub delete: bool,
    pub modify: bool,
}

impl Default for Select {
    fn default() -> Select {
        Select {
            initial: true,
            insert: true,
            delete: true,
            modify: true,
        }
    }
}

/// What to monitor in one table.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TableMonitor {
    /// `None` monitors every column.
    pub columns: Option<Vec<String>>,
    /// `monitor_cond` only; `None` matches every row.
    pub conditions: Option<Vec<Condition>>,
    pub select: Select,
}

impl TableMonitor {
    pub fn all() -> TableMonitor {
        TableMonitor::default()
    }

    pub fn columns<I: IntoIterator<Item = S>, S: Into<String>>(cols: I) -> TableMonitor {
        TableMonitor {
            columns: Some(cols.into_iter().map(Into::into).collect()),
            ..TableMonitor::default()
        }
    }
}

/// A whole `<monitor-requests>` object.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MonitorSpec {
    pub tables: Vec<(String, TableMonitor)>,
}

impl MonitorSpec {
    pub fn new() -> MonitorSpec {
        MonitorSpec::default()
    }

    pub fn table(mut self, name: impl Into<String>, m: TableMonitor) -> MonitorSpec {
        self.tables.push((name.into(), m));
        self
    }
}

/// Serializes the request object; `with_conditions` for `monitor_cond`.
pub(crate) struct Requests<'a> {
    pub spec: &'a MonitorSpec,
    pub with_conditions: bool,
}

impl Serialize for Requests<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct One<'a>(&'a TableMonitor, bool);
        impl Serialize for One<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                struct SelectObj<'a>(&'a Select);
                impl Serialize for SelectObj<'_> {
                    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                        let mut m = s.serialize_map(Some(4))?;
                        m.serialize_entry("initial", &self.0.initial)?;
                        m.serialize_entry("insert", &self.0.insert)?;
                        m.serialize_entry("delete", &self.0.delete)?;
                        m.serialize_entry("modify", &self.0.modify)?;
                        m.end()
                    }
                }
                let mut m = s.serialize_map(None)?;
                if let Some(c) = &self.0.columns {
                    m.serialize_entry("columns", c)?;
                }
                if self.1 {
                    if let Some(w) = &self.0.conditions {
                        m.serialize_entry("where", w)?;
                    }
                }
                m.serialize_entry("select", &SelectObj(&self.0.select))?;
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(self.spec.tables.len()))?;
        for (name, tm) in &self.spec.tables {
            // ovsdb-server accepts one request object or an array of them.
            m.serialize_entry(name, &[One(tm, self.with_conditions)])?;
        }
        m.end()
    }
}
