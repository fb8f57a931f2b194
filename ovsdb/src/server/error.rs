//! ovsdb-server's error objects: `{"error": tag, "details": …, "syntax": …}`.
//!
//! Clients and the differential tests compare these strings, so the wording
//! follows ovsdb-server 3.1 exactly (`ovsdb-error.c`, and each caller's text).

use serde_json::{Map, Value};

/// One OVSDB error, as an operation result or an RPC error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvsdbError {
    pub tag: String,
    pub details: Option<String>,
    /// The offending JSON, serialized, for syntax errors (debugging aid that
    /// ovsdb-server includes).
    pub syntax: Option<String>,
}

impl OvsdbError {
    pub fn new(tag: &str, details: impl Into<String>) -> OvsdbError {
        OvsdbError {
            tag: tag.to_string(),
            details: Some(details.into()),
            syntax: None,
        }
    }

    /// `ovsdb_syntax_error(json, tag, …)`: the tag defaults to "syntax error".
    pub fn syntax(json: Option<&Value>, tag: Option<&str>, details: impl Into<String>) -> Self {
        OvsdbError {
            tag: tag.unwrap_or("syntax error").to_string(),
            details: Some(details.into()),
            syntax: json.map(canonical_string),
        }
    }

    pub fn constraint(details: impl Into<String>) -> OvsdbError {
        OvsdbError::new("constraint violation", details)
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("error".into(), Value::String(self.tag.clone()));
        if let Some(d) = &self.details {
            m.insert("details".into(), Value::String(d.clone()));
        }
        if let Some(s) = &self.syntax {
            m.insert("syntax".into(), Value::String(s.clone()));
        }
        Value::Object(m)
    }
}

impl std::fmt::Display for OvsdbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.details {
            Some(d) => write!(f, "{}: {d}", self.tag),
            None => f.write_str(&self.tag),
        }
    }
}

impl std::error::Error for OvsdbError {}

/// Compact JSON with object members sorted by name, as ovsdb-server prints
/// JSON in error messages (independent of serde_json's `preserve_order`).
pub fn canonical_string(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(*k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn syntax_errors_carry_sorted_json() {
        let e = OvsdbError::syntax(
            Some(&json!({"op": "x", "a": [1, {"z": 1, "b": 2}]})),
            None,
            "bad",
        );
        assert_eq!(
            e.to_json(),
            json!({"error": "syntax error", "details": "bad", "syntax": "{\"a\":[1,{\"b\":2,\"z\":1}],\"op\":\"x\"}"})
        );
    }
}
