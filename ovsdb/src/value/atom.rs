//! OVSDB atoms: the scalar values every column is made of (RFC 7047 §5.1).

use std::cmp::Ordering;
use std::fmt;

use serde::ser::{Serialize, SerializeSeq, Serializer};
use uuid::Uuid;

use super::ValueError;

/// The five atomic types of RFC 7047.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AtomicType {
    Integer,
    Real,
    Boolean,
    String,
    Uuid,
}

impl AtomicType {
    pub fn from_name(name: &str) -> Option<AtomicType> {
        Some(match name {
            "integer" => AtomicType::Integer,
            "real" => AtomicType::Real,
            "boolean" => AtomicType::Boolean,
            "string" => AtomicType::String,
            "uuid" => AtomicType::Uuid,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            AtomicType::Integer => "integer",
            AtomicType::Real => "real",
            AtomicType::Boolean => "boolean",
            AtomicType::String => "string",
            AtomicType::Uuid => "uuid",
        }
    }

    /// The value a column of this type holds when nothing was written to it.
    pub fn default_atom(self) -> Atom {
        match self {
            AtomicType::Integer => Atom::Integer(0),
            AtomicType::Real => Atom::Real(0.0),
            AtomicType::Boolean => Atom::Boolean(false),
            AtomicType::String => Atom::String(Box::from("")),
            AtomicType::Uuid => Atom::Uuid(Uuid::nil()),
        }
    }
}

impl fmt::Display for AtomicType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One atom. `NamedUuid` only exists inside a `transact` request, before the
/// server maps it to the row it names.
///
/// Strings are boxed slices rather than `String`s: a replica holds millions of
/// them and the spare capacity of a `String` is pure waste there.
#[derive(Clone, Debug)]
pub enum Atom {
    Integer(i64),
    Real(f64),
    Boolean(bool),
    String(Box<str>),
    Uuid(Uuid),
    NamedUuid(Box<str>),
}

impl Atom {
    pub fn string(s: impl Into<Box<str>>) -> Atom {
        Atom::String(s.into())
    }

    pub fn atomic_type(&self) -> AtomicType {
        match self {
            Atom::Integer(_) => AtomicType::Integer,
            Atom::Real(_) => AtomicType::Real,
            Atom::Boolean(_) => AtomicType::Boolean,
            Atom::String(_) => AtomicType::String,
            Atom::Uuid(_) | Atom::NamedUuid(_) => AtomicType::Uuid,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_real(&self) -> Option<f64> {
        match self {
            Atom::Real(r) => Some(*r),
            Atom::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Atom::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(u) => Some(*u),
            _ => None,
        }
    }

    /// Parses an atom of a known type from its JSON form. Integers are
    /// accepted where reals are expected, as ovsdb-server does.
    pub fn from_json(value: &serde_json::Value, ty: AtomicType) -> Result<Atom, ValueError> {
        use serde_json::Value;
        match (ty, value) {
            (AtomicType::Integer, Value::Number(n)) => match n.as_i64() {
                Some(i) => Ok(Atom::Integer(i)),
                None => Err(ValueError::type_mismatch(ty, value)),
            },
            (AtomicType::Real, Value::Number(n)) => match n.as_f64() {
                Some(r) => Ok(Atom::Real(r)),
                None => Err(ValueError::type_mismatch(ty, value)),
            },
            (AtomicType::Boolean, Value::Bool(b)) => Ok(Atom::Boolean(*b)),
            (AtomicType::String, Value::String(s)) => Ok(Atom::String(s.as_str().into())),
            (AtomicType::Uuid, Value::Array(a)) if a.len() == 2 => {
                match (a[0].as_str(), a[1].as_str()) {
                    (Some("uuid"), Some(s)) => parse_uuid(s).map(Atom::Uuid),
                    (Some("named-uuid"), Some(s)) => {
                        if is_valid_id(s) {
                            Ok(Atom::NamedUuid(s.into()))
                        } else {
                            Err(ValueError::Syntax(format!("\"{s}\" is not a valid <id>")))
                        }
                    }
                    _ => Err(ValueError::type_mismatch(ty, value)),
                }
            }
            _ => Err(ValueError::type_mismatch(ty, value)),
        }
    }

    /// Parses an atom without knowing its column type (for generic tools):
    /// JSON numbers without a fraction become integers.
    pub fn from_json_untyped(value: &serde_json::Value) -> Result<Atom, ValueError> {
        use serde_json::Value;
        match value {
            Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(Atom::Integer(i)),
                None => n
                    .as_f64()
                    .map(Atom::Real)
                    .ok_or_else(|| ValueError::Syntax(format!("bad number {n}"))),
            },
            Value::Bool(b) => Ok(Atom::Boolean(*b)),
            Value::String(s) => Ok(Atom::String(s.as_str().into())),
            Value::Array(_) => Atom::from_json(value, AtomicType::Uuid),
            _ => Err(ValueError::Syntax(format!("{value} is not an atom"))),
        }
    }

    /// The JSON form, as sent on the wire.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Atom::Integer(i) => Value::from(*i),
            Atom::Real(r) => serde_json::Number::from_f64(*r)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Atom::Boolean(b) => Value::Bool(*b),
            Atom::String(s) => Value::String(s.to_string()),
            Atom::Uuid(u) => serde_json::json!(["uuid", u.to_string()]),
            Atom::NamedUuid(n) => serde_json::json!(["named-uuid", n.as_ref()]),
        }
    }

    /// Rank of the variant, so that atoms of different types still order totally.
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
            Atom::NamedUuid(_) => 5,
        }
    }
}

/// `<id>` of RFC 7047 §3.1: a letter or underscore, then letters, digits, underscores.
pub fn is_valid_id(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses the canonical 8-4-4-4-12 form only, as ovsdb-server does. Eight
/// hex digits at a time as one 64-bit word (check, convert, pack), with no
/// branch per digit: a 100k-row dump holds some 400k uuids.
pub fn parse_uuid(s: &str) -> Result<Uuid, ValueError> {
    let bad = || ValueError::Syntax(format!("\"{s}\" is not a valid UUID"));
    let b: &[u8; 36] = s.as_bytes().try_into().map_err(|_| bad())?;
    if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return Err(bad());
    }
    let word = |hi: &[u8], lo: &[u8]| {
        let mut w = [0u8; 8];
        w[..hi.len()].copy_from_slice(hi);
        w[hi.len()..].copy_from_slice(lo);
        u64::from_be_bytes(w)
    };
    let words = [
        word(&b[0..8], &[]),
        word(&b[9..13], &b[14..18]),
        word(&b[19..23], &b[24..28]),
        word(&b[28..36], &[]),
    ];
    let mut value = 0u128;
    for w in words {
        value = (value << 32) | u128::from(hex8(w).ok_or_else(bad)?);
    }
    Ok(Uuid::from_u128(value))
}

/// Eight ASCII hex digits (the first in the top byte) to their 32-bit value.
fn hex8(w: u64) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if w & HIGH != 0 {
        return None;
    }
    // Per byte x < 0x80: x + (0x80 - lo) has its high bit set iff x >= lo;
    // no byte carries into the next.
    let at_least = |x: u64, lo: u8| (x + ONES * u64::from(0x80 - lo)) & HIGH;
    // Letters compare case-folded ('A' | 0x20 == 'a'), digits as they are.
    let folded = w | (ONES * 0x20);
    let digit = at_least(w, b'0') & !at_least(w, b'9' + 1);
    let letter = at_least(folded, b'a') & !at_least(folded, b'f' + 1);
    if digit | letter != HIGH {
        return None;
    }
    // '0'..'9' are 0x30..0x39 and 'a'..'f' / 'A'..'F' end in 1..6.
    let mut v = (w & (ONES * 0x0f)) + (letter >> 7) * 9;
    v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    v = (v | (v >> 16)) & 0x0000_0000_ffff_ffff;
    Some(v as u32)
}

impl PartialEq for Atom {
    fn eq(&self, other: &Atom) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Atom {}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Atom) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Atom {
    fn cmp(&self, other: &Atom) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            (Atom::NamedUuid(a), Atom::NamedUuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl std::hash::Hash for Atom {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Atom::Integer(i) => i.hash(state),
            Atom::Real(r) => r.to_bits().hash(state),
            Atom::Boolean(b) => b.hash(state),
            Atom::String(s) | Atom::NamedUuid(s) => s.hash(state),
            Atom::Uuid(u) => u.hash(state),
        }
    }
}

impl fmt::Display for Atom {
    /// The notation ovsdb-server uses in error messages (strings unquoted
    /// unless they need it, reals in shortest form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Integer(i) => write!(f, "{i}"),
            Atom::Real(r) => write!(f, "{}", format_real(*r)),
            Atom::Boolean(b) => write!(f, "{b}"),
            Atom::String(s) => {
                if needs_quotes(s) {
                    write!(f, "{}", serde_json::Value::String(s.to_string()))
                } else {
                    f.write_str(s)
                }
            }
            Atom::Uuid(u) => write!(f, "{u}"),
            Atom::NamedUuid(n) => f.write_str(n),
        }
    }
}

/// Reals as `%.17g` shortened the way OVS prints them.
pub fn format_real(r: f64) -> String {
    if r == r.trunc() && r.abs() < 1e15 {
        format!("{}", r as i64)
    } else {
        format!("{r}")
    }
}

/// ovsdb-server's `string_needs_quotes`: empty, starting with a non-letter,
/// holding anything outside `[A-Za-z0-9_.-]`, a boolean keyword or a UUID
/// would be ambiguous unquoted (checked against ovsdb-server 3.1).
fn needs_quotes(s: &str) -> bool {
    let mut chars = s.chars();
    let plain = match chars.next() {
        None => false,
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => false,
        Some(_) => chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')),
    };
    !plain || s == "true" || s == "false" || parse_uuid(s).is_ok()
}

impl Serialize for Atom {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Atom::Integer(i) => serializer.serialize_i64(*i),
            Atom::Real(r) => serializer.serialize_f64(*r),
            Atom::Boolean(b) => serializer.serialize_bool(*b),
            Atom::String(s) => serializer.serialize_str(s),
            Atom::Uuid(u) => {
                let mut seq = serializer.serialize_seq(Some(2))?;
                seq.serialize_element("uuid")?;
                let mut buf = [0u8; 36];
                seq.serialize_element(u.hyphenated().encode_lower(&mut buf) as &str)?;
                seq.end()
            }
            Atom::NamedUuid(n) => {
                let mut seq = serializer.serialize_seq(Some(2))?;
                seq.serialize_element("named-uuid")?;
                seq.serialize_element(n.as_ref())?;
                seq.end()
            }
        }
    }
}

impl From<i64> for Atom {
    fn from(i: i64) -> Atom {
        Atom::Integer(i)
    }
}

impl From<bool> for Atom {
    fn from(b: bool) -> Atom {
        Atom::Boolean(b)
    }
}

impl From<&str> for Atom {
    fn from(s: &str) -> Atom {
        Atom::String(s.into())
    }
}

impl From<String> for Atom {
    fn from(s: String) -> Atom {
        Atom::String(s.into_boxed_str())
    }
}

impl From<Uuid> for Atom {
    fn from(u: Uuid) -> Atom {
        Atom::Uuid(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uuid_needs_canonical_form() {
        assert!(parse_uuid("3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55").is_ok());
        assert!(parse_uuid("3f2a9c1e5b7d4e219a0c6d1f2e3b4a55").is_err());
        assert!(parse_uuid("{3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55}").is_err());
        assert!(parse_uuid("3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a5g").is_err());
        assert!(parse_uuid("3f2a9c1e-5b7d-4e21-9a0c6-d1f2e3b4a55").is_err());
        let u = uuid::Uuid::new_v4();
        assert_eq!(parse_uuid(&u.to_string()).unwrap(), u);
        assert_eq!(parse_uuid(&u.to_string().to_uppercase()).unwrap(), u);
    }

    /// Every byte value at every digit position: accepted exactly when it
    /// is a hex digit, and then read as the uuid crate reads it.
    #[test]
    fn uuid_digits_checked_at_every_position() {
        let base = "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55";
        for at in (0..36).filter(|i| ![8, 13, 18, 23].contains(i)) {
            for byte in 0..=255u8 {
                let mut text = base.as_bytes().to_vec();
                text[at] = byte;
                let Ok(text) = String::from_utf8(text) else {
                    continue;
                };
                let ours = parse_uuid(&text).ok();
                let theirs = byte
                    .is_ascii_hexdigit()
                    .then(|| uuid::Uuid::parse_str(&text).unwrap());
                assert_eq!(ours, theirs, "byte {byte:#04x} at {at}");
            }
        }
        for _ in 0..1000 {
            let u = uuid::Uuid::new_v4();
            assert_eq!(parse_uuid(&u.to_string()).unwrap(), u);
        }
    }

    #[test]
    fn typed_parse_and_wire_form() {
        let u = json!(["uuid", "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55"]);
        let a = Atom::from_json(&u, AtomicType::Uuid).unwrap();
        assert_eq!(serde_json::to_value(&a).unwrap(), u);
        assert_eq!(a.to_json(), u);
        assert_eq!(
            Atom::from_json(&json!(5), AtomicType::Real).unwrap(),
            Atom::Real(5.0)
        );
        assert!(Atom::from_json(&json!(5.5), AtomicType::Integer).is_err());
        assert!(Atom::from_json(&json!("x"), AtomicType::Integer).is_err());
        assert!(Atom::from_json(&json!(["named-uuid", "1bad"]), AtomicType::Uuid).is_err());
        assert_eq!(
            Atom::from_json(&json!(["named-uuid", "row_1"]), AtomicType::Uuid).unwrap(),
            Atom::NamedUuid("row_1".into())
        );
    }

    #[test]
    fn display_quotes_like_ovsdb() {
        assert_eq!(Atom::from("service_node").to_string(), "service_node");
        assert_eq!(Atom::from("bogus value").to_string(), "\"bogus value\"");
        assert_eq!(Atom::from("").to_string(), "\"\"");
        assert_eq!(Atom::from("a.b-c_9").to_string(), "a.b-c_9");
        assert_eq!(Atom::from("true").to_string(), "\"true\"");
        assert_eq!(Atom::from("1a").to_string(), "\"1a\"");
        assert_eq!(
            Atom::from("11111111-2222-3333-4444-555555555555").to_string(),
            "\"11111111-2222-3333-4444-555555555555\""
        );
        assert_eq!(Atom::Real(2.0).to_string(), "2");
    }
}
