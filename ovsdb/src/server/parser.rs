//! Member extraction from request objects with ovsdb-server's error wording
//! (`ovsdb_parser`): the first problem wins, and members nobody asked for
//! are an error once parsing is finished.

use serde_json::{Map, Value};

use super::error::OvsdbError;
use crate::value::is_valid_id;

pub const NULL: u32 = 1;
pub const BOOLEAN: u32 = 1 << 1;
pub const OBJECT: u32 = 1 << 2;
pub const ARRAY: u32 = 1 << 3;
pub const STRING: u32 = 1 << 4;
pub const INTEGER: u32 = 1 << 5;
pub const REAL: u32 = 1 << 6;
/// A string that is a valid `<id>`.
pub const ID: u32 = 1 << 7;
pub const OPTIONAL: u32 = 1 << 8;

fn type_bit(v: &Value) -> u32 {
    match v {
        Value::Null => NULL,
        Value::Bool(_) => BOOLEAN,
        Value::Object(_) => OBJECT,
        Value::Array(_) => ARRAY,
        Value::String(_) => STRING,
        Value::Number(n) if n.is_f64() => REAL,
        Value::Number(_) => INTEGER,
    }
}

pub struct Parser<'a> {
    json: &'a Value,
    obj: Option<&'a Map<String, Value>>,
    name: String,
    used: Vec<&'a str>,
    error: Option<OvsdbError>,
}

impl<'a> Parser<'a> {
    pub fn new(json: &'a Value, name: String) -> Parser<'a> {
        let mut p = Parser {
            json,
            obj: json.as_object(),
            name,
            used: Vec::new(),
            error: None,
        };
        if p.obj.is_none() {
            p.raise("Object expected.");
        }
        p
    }

    /// The object being parsed (for errors that quote it).
    pub fn json(&self) -> &'a Value {
        self.json
    }

    pub fn member(&mut self, name: &str, types: u32) -> Option<&'a Value> {
        let obj = self.obj?;
        let Some((key, value)) = obj.get_key_value(name) else {
            if types & OPTIONAL == 0 {
                self.raise(&format!("Required '{name}' member is missing."));
            }
            return None;
        };
        let ok = types & type_bit(value) != 0
            || (types & ID != 0 && value.as_str().is_some_and(is_valid_id));
        if ok {
            if !self.used.contains(&key.as_str()) {
                self.used.push(key.as_str());
            }
            Some(value)
        } else {
            self.raise(&format!("Type mismatch for member '{name}'."));
            None
        }
    }

    pub fn raise(&mut self, msg: &str) {
        if self.error.is_none() {
            self.error = Some(OvsdbError::syntax(
                self.obj.map(|_| self.json),
                None,
                format!("Parsing {} failed: {msg}", self.name),
            ));
        }
    }

    pub fn get_error(&self) -> Option<OvsdbError> {
        self.error.clone()
    }

    /// Reports the first error, or members that were present but not used.
    pub fn finish(mut self) -> Option<OvsdbError> {
        if self.error.is_none() {
            if let Some(obj) = self.obj {
                let unused: Vec<&String> = obj
                    .keys()
                    .filter(|k| !self.used.contains(&k.as_str()))
                    .collect();
                if let Some(first) = unused.first() {
                    let n = unused.len();
                    let msg = if n > 1 {
                        format!(
                            "Member '{first}' and {} other member{} are present but not allowed here.",
                            n - 1,
                            if n > 2 { "s" } else { "" }
                        )
                    } else {
                        format!("Member '{first}' is present but not allowed here.")
                    };
                    self.raise(&msg);
                }
            }
        }
        self.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_missing_mistyped_and_unused_members() {
        let op = json!({"op": "select", "table": 5, "x": 1});
        let mut p = Parser::new(&op, "ovsdb operation 1 of 1".into());
        assert!(p.member("op", ID).is_some());
        assert!(p.member("table", ID).is_none());
        assert_eq!(
            p.finish().unwrap().details.as_deref(),
            Some("Parsing ovsdb operation 1 of 1 failed: Type mismatch for member 'table'.")
        );
        let op = json!({"op": "select", "x": 1});
        let mut p = Parser::new(&op, "op".into());
        p.member("op", ID);
        let e = p.finish().unwrap();
        assert_eq!(
            e.details.as_deref(),
            Some("Parsing op failed: Member 'x' is present but not allowed here.")
        );
        let not_obj = json!([1]);
        let p = Parser::new(&not_obj, "op".into());
        let e = p.finish().unwrap();
        assert_eq!(
            e.details.as_deref(),
            Some("Parsing op failed: Object expected.")
        );
        assert_eq!(e.syntax, None);
    }
}
