//! Column and base types (RFC 7047 §3.2 `<type>` and `<base-type>`).

use serde_json::{Map, Value};

use super::SchemaError;
use crate::value::{Atom, AtomicType, Datum};

/// `max` of a set or map type with no upper bound.
pub const UNLIMITED: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RefType {
    #[default]
    Strong,
    Weak,
}

/// An atomic type with its constraints.
#[derive(Clone, Debug, PartialEq)]
pub struct BaseType {
    pub atomic: AtomicType,
    /// Allowed values, as a set of atoms of `atomic` type.
    pub enumeration: Option<Vec<Atom>>,
    pub min_integer: Option<i64>,
    pub max_integer: Option<i64>,
    pub min_real: Option<f64>,
    pub max_real: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub ref_table: Option<String>,
    pub ref_type: RefType,
}

impl BaseType {
    pub fn plain(atomic: AtomicType) -> BaseType {
        BaseType {
            atomic,
            enumeration: None,
            min_integer: None,
            max_integer: None,
            min_real: None,
            max_real: None,
            min_length: None,
            max_length: None,
            ref_table: None,
            ref_type: RefType::Strong,
        }
    }

    fn has_constraints(&self) -> bool {
        self.enumeration.is_some()
            || self.min_integer.is_some()
            || self.max_integer.is_some()
            || self.min_real.is_some()
            || self.max_real.is_some()
            || self.min_length.is_some()
            || self.max_length.is_some()
            || self.ref_table.is_some()
    }

    pub fn from_json(v: &Value) -> Result<BaseType, SchemaError> {
        match v {
            Value::String(s) => AtomicType::from_name(s)
                .map(BaseType::plain)
                .ok_or_else(|| SchemaError(format!("unknown atomic type \"{s}\""))),
            Value::Object(o) => {
                for key in o.keys() {
                    if !matches!(
                        key.as_str(),
                        "type"
                            | "enum"
                            | "minInteger"
                            | "maxInteger"
                            | "minReal"
                            | "maxReal"
                            | "minLength"
                            | "maxLength"
                            | "refTable"
                            | "refType"
                    ) {
                        return Err(SchemaError(format!("base type: unknown member {key}")));
                    }
                }
                let tname = o
                    .get("type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| SchemaError("base type has no type".into()))?;
                let atomic = AtomicType::from_name(tname)
                    .ok_or_else(|| SchemaError(format!("unknown atomic type \"{tname}\"")))?;
                let mut b = BaseType::plain(atomic);
                let only_for = |key: &str, t: AtomicType| -> Result<(), SchemaError> {
                    if o.contains_key(key) && atomic != t {
                        Err(SchemaError(format!(
                            "{key} is not allowed for type {atomic}"
                        )))
                    } else {
                        Ok(())
                    }
                };
                only_for("minInteger", AtomicType::Integer)?;
                only_for("maxInteger", AtomicType::Integer)?;
                only_for("minReal", AtomicType::Real)?;
                only_for("maxReal", AtomicType::Real)?;
                only_for("minLength", AtomicType::String)?;
                only_for("maxLength", AtomicType::String)?;
                only_for("refTable", AtomicType::Uuid)?;
                only_for("refType", AtomicType::Uuid)?;
                let int = |key: &str| -> Result<Option<i64>, SchemaError> {
                    o.get(key)
                        .map(|v| {
                            v.as_i64()
                                .ok_or_else(|| SchemaError(format!("{key} must be an integer")))
                        })
                        .transpose()
                };
                let real = |key: &str| -> Result<Option<f64>, SchemaError> {
                    o.get(key)
                        .map(|v| {
                            v.as_f64()
                                .ok_or_else(|| SchemaError(format!("{key} must be a number")))
                        })
                        .transpose()
                };
                let len = |key: &str| -> Result<Option<u64>, SchemaError> {
                    o.get(key)
                        .map(|v| {
                            v.as_u64().ok_or_else(|| {
                                SchemaError(format!("{key} must be a non-negative integer"))
                            })
                        })
                        .transpose()
                };
                b.min_integer = int("minInteger")?;
                b.max_integer = int("maxInteger")?;
                b.min_real = real("minReal")?;
                b.max_real = real("maxReal")?;
                b.min_length = len("minLength")?;
                b.max_length = len("maxLength")?;
                if let (Some(lo), Some(hi)) = (b.min_integer, b.max_integer) {
                    if lo > hi {
                        return Err(SchemaError(format!(
                            "minInteger {lo} exceeds maxInteger {hi}"
                        )));
                    }
                }
                if let (Some(lo), Some(hi)) = (b.min_real, b.max_real) {
                    if lo > hi {
                        return Err(SchemaError(format!("minReal {lo} exceeds maxReal {hi}")));
                    }
                }
                if let (Some(lo), Some(hi)) = (b.min_length, b.max_length) {
                    if lo > hi {
                        return Err(SchemaError(format!(
                            "minLength {lo} exceeds maxLength {hi}"
                        )));
                    }
                }
                if let Some(rt) = o.get("refTable") {
                    b.ref_table = Some(
                        rt.as_str()
                            .ok_or_else(|| SchemaError("refTable must be a string".into()))?
                            .to_string(),
                    );
                }
                match o.get("refType").map(|v| v.as_str()) {
                    None => {}
                    Some(Some("strong")) => b.ref_type = RefType::Strong,
                    Some(Some("weak")) => b.ref_type = RefType::Weak,
                    Some(_) => {
                        return Err(SchemaError("refType must be \"strong\" or \"weak\"".into()))
                    }
                }
                if o.contains_key("refType") && b.ref_table.is_none() {
                    return Err(SchemaError("refType requires refTable".into()));
                }
                if let Some(e) = o.get("enum") {
                    let set_ty = ColumnType {
                        key: BaseType::plain(atomic),
                        value: None,
                        min: 0,
                        max: UNLIMITED,
                    };
                    let d = Datum::from_json(e, &set_ty)
                        .map_err(|e| SchemaError(format!("enum: {e}")))?;
                    match d {
                        Datum::Set(atoms) => b.enumeration = Some(atoms.into_vec()),
                        Datum::Map(_) => return Err(SchemaError("enum must be a set".into())),
                    }
                }
                Ok(b)
            }
            _ => Err(SchemaError(format!("{v} is not a valid base type"))),
        }
    }

    pub fn to_json(&self) -> Value {
        if !self.has_constraints() {
            return Value::String(self.atomic.name().into());
        }
        let mut o = Map::new();
        o.insert("type".into(), Value::String(self.atomic.name().into()));
        if let Some(e) = &self.enumeration {
            o.insert(
                "enum".into(),
                Datum::Set(e.iter().cloned().collect()).to_json(),
            );
        }
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                o.insert(k.into(), v);
            }
        };
        put("minInteger", self.min_integer.map(Value::from));
        put("maxInteger", self.max_integer.map(Value::from));
        put("minReal", self.min_real.map(Value::from));
        put("maxReal", self.max_real.map(Value::from));
        put("minLength", self.min_length.map(Value::from));
        put("maxLength", self.max_length.map(Value::from));
        put("refTable", self.ref_table.clone().map(Value::String));
        if self.ref_table.is_some() && self.ref_type == RefType::Weak {
            o.insert("refType".into(), Value::String("weak".into()));
        }
        Value::Object(o)
    }
}

/// A column's type: key (and value, for a map) base types and cardinality.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnType {
    pub key: BaseType,
    pub value: Option<BaseType>,
    pub min: u64,
    pub max: u64,
}

impl ColumnType {
    pub fn scalar(atomic: AtomicType) -> ColumnType {
        ColumnType {
            key: BaseType::plain(atomic),
            value: None,
            min: 1,
            max: 1,
        }
    }

    /// Exactly one value and not a map.
    pub fn is_scalar(&self) -> bool {
        self.min == 1 && self.max == 1 && self.value.is_none()
    }

    pub fn is_optional(&self) -> bool {
        self.min == 0 && self.max == 1
    }

    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }

    pub fn from_json(v: &Value) -> Result<ColumnType, SchemaError> {
        match v {
            Value::String(_) => Ok(ColumnType {
                key: BaseType::from_json(v)?,
                value: None,
                min: 1,
                max: 1,
            }),
            Value::Object(o) => {
                for key in o.keys() {
                    if !matches!(key.as_str(), "key" | "value" | "min" | "max") {
                        return Err(SchemaError(format!("type: unknown member {key}")));
                    }
                }
                let key = BaseType::from_json(
                    o.get("key")
                        .ok_or_else(|| SchemaError("type has no key".into()))?,
                )?;
                let value = o.get("value").map(BaseType::from_json).transpose()?;
                let min = match o.get("min") {
                    None => 1,
                    Some(m) => match m.as_u64() {
                        Some(n @ (0 | 1)) => n,
                        _ => return Err(SchemaError("min must be 0 or 1".into())),
                    },
                };
                let max = match o.get("max") {
                    None => 1,
                    Some(Value::String(s)) if s == "unlimited" => UNLIMITED,
                    Some(m) => match m.as_u64() {
                        Some(n) if n >= 1 => n,
                        _ => {
                            return Err(SchemaError(
                                "max must be a positive integer or \"unlimited\"".into(),
                            ))
                        }
                    },
                };
                if min > max {
                    return Err(SchemaError(format!(
                        "ovsdb type fails constraint checks: min {min} exceeds max {max}"
                    )));
                }
                Ok(ColumnType {
                    key,
                    value,
                    min,
                    max,
                })
            }
            _ => Err(SchemaError(format!("{v} is not a valid type"))),
        }
    }

    pub fn to_json(&self) -> Value {
        if self.value.is_none() && self.min == 1 && self.max == 1 && !self.key.has_constraints() {
            return self.key.to_json();
        }
        let mut o = Map::new();
        o.insert("key".into(), self.key.to_json());
        if let Some(v) = &self.value {
            o.insert("value".into(), v.to_json());
        }
        if self.min != 1 {
            o.insert("min".into(), Value::from(self.min));
        }
        if self.max != 1 {
            o.insert(
                "max".into(),
                if self.max == UNLIMITED {
                    Value::String("unlimited".into())
                } else {
                    Value::from(self.max)
                },
            );
        }
        Value::Object(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shorthand_and_object_forms() {
        let t = ColumnType::from_json(&json!("string")).unwrap();
        assert!(t.is_scalar());
        assert_eq!(t.to_json(), json!("string"));
        let o = ColumnType::from_json(&json!({"key": "integer", "min": 0})).unwrap();
        assert!(o.is_optional());
        assert_eq!(o.to_json(), json!({"key": "integer", "min": 0}));
        let e = ColumnType::from_json(
            &json!({"key": {"type": "string", "enum": ["set", ["a", "b"]]}, "min": 0}),
        )
        .unwrap();
        assert_eq!(e.key.enumeration.as_ref().unwrap().len(), 2);
        assert!(ColumnType::from_json(&json!({"key": "string", "min": 2})).is_err());
        assert!(
            ColumnType::from_json(&json!({"key": {"type": "string", "minInteger": 1}})).is_err()
        );
    }
}
