//! Parsing of OVSDB values inside requests, with ovsdb-server's semantics:
//! constraints are checked while parsing (`ovsdb_atom_from_json`), and
//! `named-uuid`s resolve through the transaction's symbol table.

use std::collections::HashMap;

use serde_json::Value;

use super::error::OvsdbError;
use crate::schema::{BaseType, ColumnType, UNLIMITED};
use crate::value::{is_valid_id, parse_uuid, Atom, AtomicType, Datum, Uuid};

/// A `uuid-name` of one transaction. A name used before (or without) its
/// `insert` gets a fresh UUID at once, as in ovsdb-server, so a reference to
/// a name no insert creates ends as a referential integrity error at commit.
#[derive(Clone, Debug)]
pub struct Symbol {
    pub uuid: Uuid,
    pub created: bool,
}

#[derive(Debug, Default)]
pub struct Symtab {
    symbols: HashMap<String, Symbol>,
}

impl Symtab {
    pub fn insert(&mut self, name: &str) -> &mut Symbol {
        self.symbols
            .entry(name.to_string())
            .or_insert_with(|| Symbol {
                uuid: super::storage::new_uuid(),
                created: false,
            })
    }
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "real",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `unwrap_json`: `["name", <value of the expected JSON type>]`.
fn unwrap<'a>(json: &'a Value, name: &str, expected: &str) -> Result<&'a Value, OvsdbError> {
    if let Value::Array(a) = json {
        if a.len() == 2 && a[0].as_str() == Some(name) && json_type_name(&a[1]) == expected {
            return Ok(&a[1]);
        }
    }
    Err(OvsdbError::syntax(
        Some(json),
        None,
        format!("expected [\"{name}\", <{expected}>]"),
    ))
}

fn parse_uuid_atom(json: &Value, symtab: Option<&mut Symtab>) -> Result<Atom, OvsdbError> {
    match unwrap(json, "uuid", "string") {
        Ok(s) => {
            let s = s.as_str().unwrap_or_default();
            parse_uuid(s).map(Atom::Uuid).map_err(|_| {
                OvsdbError::syntax(Some(json), None, format!("\"{s}\" is not a valid UUID"))
            })
        }
        Err(e0) => {
            if let Some(symtab) = symtab {
                if let Ok(name) = unwrap(json, "named-uuid", "string") {
                    let name = name.as_str().unwrap_or_default();
                    if !is_valid_id(name) {
                        return Err(OvsdbError::syntax(
                            Some(json),
                            None,
                            "named-uuid string is not a valid <id>",
                        ));
                    }
                    return Ok(Atom::Uuid(symtab.insert(name).uuid));
                }
            }
            Err(e0)
        }
    }
}

/// One atom of `base`'s type, constraints included.
pub fn parse_atom(
    json: &Value,
    base: &BaseType,
    symtab: Option<&mut Symtab>,
) -> Result<Atom, OvsdbError> {
    let atom = match (base.atomic, json) {
        (AtomicType::Integer, Value::Number(n)) if !n.is_f64() => match n.as_i64() {
            Some(i) => Atom::Integer(i),
            None => return Err(expected(json, base.atomic)),
        },
        (AtomicType::Real, Value::Number(n)) => match n.as_f64() {
            Some(r) => Atom::Real(r),
            None => return Err(expected(json, base.atomic)),
        },
        (AtomicType::Boolean, Value::Bool(b)) => Atom::Boolean(*b),
        (AtomicType::String, Value::String(s)) => Atom::String(s.as_str().into()),
        (AtomicType::Uuid, _) => parse_uuid_atom(json, symtab)?,
        _ => return Err(expected(json, base.atomic)),
    };
    base.check_atom(&atom)
        .map_err(|e| OvsdbError::constraint(e.to_string()))?;
    Ok(atom)
}

fn expected(json: &Value, ty: AtomicType) -> OvsdbError {
    OvsdbError::syntax(Some(json), None, format!("expected {ty}"))
}

/// A whole column value (`ovsdb_datum_from_json`), with the number of
/// elements checked against `ty` and duplicates rejected.
pub fn parse_datum(
    json: &Value,
    ty: &ColumnType,
    mut symtab: Option<&mut Symtab>,
) -> Result<Datum, OvsdbError> {
    let is_set_syntax =
        matches!(json, Value::Array(a) if a.first().and_then(Value::as_str) == Some("set"));
    if !ty.is_map() && !is_set_syntax {
        return Ok(Datum::Set(smallvec::smallvec![parse_atom(
            json, &ty.key, symtab
        )?]));
    }
    let class = if ty.is_map() { "map" } else { "set" };
    let inner = unwrap(json, class, "array")?;
    let elems = inner.as_array().map(Vec::as_slice).unwrap_or_default();
    let n = elems.len() as u64;
    if n < ty.min || n > ty.max {
        let max = if ty.max == UNLIMITED {
            u64::from(u32::MAX)
        } else {
            ty.max
        };
        let details = if ty.min == 1 && ty.max == 1 {
            format!("{class} must have exactly one member but {n} are present")
        } else {
            format!(
                "{class} must have {} to {max} members but {n} are present",
                ty.min
            )
        };
        return Err(OvsdbError::syntax(Some(json), None, details));
    }
    match &ty.value {
        None => {
            let mut atoms = Vec::with_capacity(elems.len());
            for e in elems {
                atoms.push(parse_atom(e, &ty.key, symtab.as_deref_mut())?);
            }
            let d = Datum::set(atoms);
            if d.len() as u64 != n {
                return Err(OvsdbError::new("ovsdb error", "set contains duplicate"));
            }
            Ok(d)
        }
        Some(vt) => {
            let mut pairs = Vec::with_capacity(elems.len());
            for e in elems {
                let (k, v) = match e {
                    Value::Array(kv) if kv.len() == 2 => (&kv[0], &kv[1]),
                    _ => {
                        return Err(OvsdbError::syntax(
                            Some(e),
                            None,
                            "expected 2-element array",
                        ))
                    }
                };
                let k = parse_atom(k, &ty.key, symtab.as_deref_mut())?;
                let v = parse_atom(v, vt, symtab.as_deref_mut())?;
                pairs.push((k, v));
            }
            let d = Datum::map(pairs);
            if d.len() as u64 != n {
                return Err(OvsdbError::new("ovsdb error", "map contains duplicate key"));
            }
            Ok(d)
        }
    }
}

/// `ovsdb_type_to_english`, for type mismatch messages.
pub fn type_to_english(ty: &ColumnType) -> String {
    if ty.is_scalar() {
        return ty.key.atomic.name().to_string();
    }
    let mut s = String::from(if ty.is_map() { "map" } else { "set" });
    if ty.max == UNLIMITED {
        if ty.min > 0 {
            s.push_str(&format!(" of {} or more", ty.min));
        } else {
            s.push_str(" of");
        }
    } else if ty.min > 0 {
        s.push_str(&format!(" of {} to {}", ty.min, ty.max));
    } else {
        s.push_str(&format!(" of up to {}", ty.max));
    }
    match &ty.value {
        None => s.push_str(&format!(" {}s", ty.key.atomic.name())),
        Some(v) => s.push_str(&format!(
            " ({}, {}) pairs",
            ty.key.atomic.name(),
            v.atomic.name()
        )),
    }
    s
}

/// `ovsdb_datum_to_string`: brackets for sets and maps whose type allows more
/// than one element (or when empty), `k=v` for map pairs.
pub fn datum_to_string(d: &Datum, ty: &ColumnType) -> String {
    let bracket = ty.max > 1 || d.is_empty();
    let (open, close) = if ty.is_map() { ('{', '}') } else { ('[', ']') };
    let mut s = String::new();
    if bracket {
        s.push(open);
    }
    match d {
        Datum::Set(atoms) => {
            for (i, a) in atoms.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(&a.to_string());
            }
        }
        Datum::Map(pairs) => {
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(&format!("{k}={v}"));
            }
        }
    }
    if bracket {
        s.push(close);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ty(j: Value) -> ColumnType {
        ColumnType::from_json(&j).unwrap()
    }

    #[test]
    fn counts_and_duplicates_use_ovsdb_wording() {
        let opt = ty(json!({"key": "integer", "min": 0, "max": 1}));
        let e = parse_datum(&json!(["set", [1, 2]]), &opt, None).unwrap_err();
        assert_eq!(
            e.details.as_deref(),
            Some("set must have 0 to 1 members but 2 are present")
        );
        let many = ty(json!({"key": "string", "min": 1, "max": "unlimited"}));
        let e = parse_datum(&json!(["set", []]), &many, None).unwrap_err();
        assert_eq!(
            e.details.as_deref(),
            Some("set must have 1 to 4294967295 members but 0 are present")
        );
        let e = parse_datum(&json!(["set", ["a", "a"]]), &many, None).unwrap_err();
        assert_eq!(e.tag, "ovsdb error");
        let m = ty(json!({"key": "string", "value": "string", "min": 0, "max": "unlimited"}));
        let e = parse_datum(&json!("x"), &m, None).unwrap_err();
        assert_eq!(e.details.as_deref(), Some("expected [\"map\", <array>]"));
    }

    #[test]
    fn named_uuids_need_a_symbol_table() {
        let u = ty(json!({"key": {"type": "uuid", "refTable": "T"}}));
        let mut st = Symtab::default();
        let a = parse_datum(&json!(["named-uuid", "row1"]), &u, Some(&mut st)).unwrap();
        let b = parse_datum(&json!(["named-uuid", "row1"]), &u, Some(&mut st)).unwrap();
        assert_eq!(a, b);
        assert!(parse_datum(&json!(["named-uuid", "row1"]), &u, None).is_err());
        let e = parse_datum(&json!(["named-uuid", "1x"]), &u, Some(&mut st)).unwrap_err();
        assert_eq!(
            e.details.as_deref(),
            Some("named-uuid string is not a valid <id>")
        );
    }

    #[test]
    fn english_types() {
        assert_eq!(type_to_english(&ty(json!("string"))), "string");
        assert_eq!(
            type_to_english(&ty(json!({"key": "integer", "min": 0}))),
            "set of up to 1 integers"
        );
        assert_eq!(
            type_to_english(&ty(
                json!({"key": "string", "value": "string", "min": 0, "max": "unlimited"})
            )),
            "map of (string, string) pairs"
        );
    }
}
