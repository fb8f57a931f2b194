//! Data: the value of one column, always a set or a map of atoms (RFC 7047 §5.1).

use serde::ser::{Serialize, SerializeSeq, Serializer};
use smallvec::{smallvec, SmallVec};

use super::atom::Atom;
use super::ValueError;
use crate::schema::ColumnType;

/// The atoms of a set. Most columns hold exactly one atom, so one is kept
/// inline: a 100k-row replica then makes one allocation per row fewer per
/// scalar column, which is most of them.
pub type Atoms = SmallVec<[Atom; 1]>;

/// A column value. Sets are kept sorted and free of duplicates, maps sorted
/// by key with unique keys, so equality is structural and diffs are merges.
/// A scalar column is a one-element set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Datum {
    Set(Atoms),
    Map(Vec<(Atom, Atom)>),
}

impl Datum {
    pub fn scalar(atom: impl Into<Atom>) -> Datum {
        Datum::Set(smallvec![atom.into()])
    }

    pub fn empty_set() -> Datum {
        Datum::Set(SmallVec::new())
    }

    pub fn empty_map() -> Datum {
        Datum::Map(Vec::new())
    }

    /// A set from any atoms, sorted and deduplicated.
    pub fn set<I: IntoIterator<Item = Atom>>(atoms: I) -> Datum {
        let mut v: Atoms = atoms.into_iter().collect();
        if v.len() > 1 {
            v.sort();
            v.dedup();
        }
        Datum::Set(v)
    }

    /// A map from pairs, sorted by key; a later pair wins on a duplicate key.
    pub fn map<I: IntoIterator<Item = (Atom, Atom)>>(pairs: I) -> Datum {
        let mut v: Vec<(Atom, Atom)> = pairs.into_iter().collect();
        // Stable sort keeps the input order among equal keys; keep the last.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Atom, Atom)> = Vec::with_capacity(v.len());
        for pair in v {
            match out.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => out.push(pair),
            }
        }
        Datum::Map(out)
    }

    /// The value of a column nobody has written: the type's default atom for
    /// a scalar, an empty set or map otherwise.
    pub fn default_for(ty: &ColumnType) -> Datum {
        if ty.value.is_some() {
            Datum::empty_map()
        } else if ty.min == 1 {
            Datum::Set(smallvec![ty.key.atomic.default_atom()])
        } else {
            Datum::empty_set()
        }
    }

    pub fn is_map(&self) -> bool {
        matches!(self, Datum::Map(_))
    }

    pub fn len(&self) -> usize {
        match self {
            Datum::Set(v) => v.len(),
            Datum::Map(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The only atom of a one-element set.
    pub fn as_scalar(&self) -> Option<&Atom> {
        match self {
            Datum::Set(v) if v.len() == 1 => v.first(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_scalar().and_then(Atom::as_str)
    }

    pub fn as_integer(&self) -> Option<i64> {
        self.as_scalar().and_then(Atom::as_integer)
    }

    pub fn as_uuid(&self) -> Option<uuid::Uuid> {
        self.as_scalar().and_then(Atom::as_uuid)
    }

    pub fn as_bool(&self) -> Option<bool> {
        self.as_scalar().and_then(Atom::as_bool)
    }

    /// Set elements (keys, for a map).
    pub fn keys(&self) -> Box<dyn Iterator<Item = &Atom> + '_> {
        match self {
            Datum::Set(v) => Box::new(v.iter()),
            Datum::Map(v) => Box::new(v.iter().map(|(k, _)| k)),
        }
    }

    pub fn set_atoms(&self) -> &[Atom] {
        match self {
            Datum::Set(v) => v,
            Datum::Map(_) => &[],
        }
    }

    pub fn map_pairs(&self) -> &[(Atom, Atom)] {
        match self {
            Datum::Map(v) => v,
            Datum::Set(_) => &[],
        }
    }

    pub fn contains_key(&self, key: &Atom) -> bool {
        match self {
            Datum::Set(v) => v.binary_search(key).is_ok(),
            Datum::Map(v) => v.binary_search_by(|(k, _)| k.cmp(key)).is_ok(),
        }
    }

    pub fn get(&self, key: &Atom) -> Option<&Atom> {
        match self {
            Datum::Map(v) => v
                .binary_search_by(|(k, _)| k.cmp(key))
                .ok()
                .and_then(|i| v.get(i).map(|(_, val)| val)),
            Datum::Set(_) => None,
        }
    }

    /// Every atom in the datum, keys and values, for reference walking.
    pub fn atoms(&self) -> Box<dyn Iterator<Item = &Atom> + '_> {
        match self {
            Datum::Set(v) => Box::new(v.iter()),
            Datum::Map(v) => Box::new(v.iter().flat_map(|(k, val)| [k, val])),
        }
    }

    /// Parses a column value of a known type. A bare atom stands for a
    /// one-element set; `["set",[…]]` and `["map",[[k,v],…]]` otherwise.
    /// Cardinality is not checked here (see `ColumnType::check_size`).
    pub fn from_json(value: &serde_json::Value, ty: &ColumnType) -> Result<Datum, ValueError> {
        use serde_json::Value;
        if let Some(vt) = &ty.value {
            let pairs = match value {
                Value::Array(a) if a.len() == 2 && a[0] == "map" => match &a[1] {
                    Value::Array(p) => p,
                    _ => return Err(ValueError::Syntax(format!("{value}: map is not an array"))),
                },
                _ => {
                    return Err(ValueError::Syntax(format!(
                        "{value}: expected [\"map\", [...]] for a map column"
                    )))
                }
            };
            let mut out = Vec::with_capacity(pairs.len());
            for pair in pairs {
                match pair {
                    Value::Array(kv) if kv.len() == 2 => out.push((
                        Atom::from_json(&kv[0], ty.key.atomic)?,
                        Atom::from_json(&kv[1], vt.atomic)?,
                    )),
                    _ => {
                        return Err(ValueError::Syntax(format!(
                            "{pair}: map element is not a 2-element array"
                        )))
                    }
                }
            }
            let before = out.len();
            let datum = Datum::map(out);
            if datum.len() != before {
                return Err(ValueError::Syntax(format!(
                    "{value}: map contains duplicate key"
                )));
            }
            Ok(datum)
        } else {
            match value {
                Value::Array(a) if a.len() == 2 && a[0] == "set" => {
                    let elems = match &a[1] {
                        Value::Array(e) => e,
                        _ => {
                            return Err(ValueError::Syntax(format!("{value}: set is not an array")))
                        }
                    };
                    let atoms = elems
                        .iter()
                        .map(|e| Atom::from_json(e, ty.key.atomic))
                        .collect::<Result<Vec<_>, _>>()?;
                    let before = atoms.len();
                    let datum = Datum::set(atoms);
                    if datum.len() != before {
                        return Err(ValueError::Syntax(format!(
                            "{value}: set contains duplicate value"
                        )));
                    }
                    Ok(datum)
                }
                _ => Ok(Datum::Set(smallvec![Atom::from_json(
                    value,
                    ty.key.atomic
                )?])),
            }
        }
    }

    /// Parses a value without its type (for generic tools and tests).
    pub fn from_json_untyped(value: &serde_json::Value) -> Result<Datum, ValueError> {
        use serde_json::Value;
        match value {
            Value::Array(a) if a.len() == 2 && a[0] == "set" => match &a[1] {
                Value::Array(e) => Ok(Datum::set(
                    e.iter()
                        .map(Atom::from_json_untyped)
                        .collect::<Result<Vec<_>, _>>()?,
                )),
                _ => Err(ValueError::Syntax(format!("{value}: set is not an array"))),
            },
            Value::Array(a) if a.len() == 2 && a[0] == "map" => match &a[1] {
                Value::Array(p) => {
                    let mut out = Vec::with_capacity(p.len());
                    for pair in p {
                        match pair {
                            Value::Array(kv) if kv.len() == 2 => out.push((
                                Atom::from_json_untyped(&kv[0])?,
                                Atom::from_json_untyped(&kv[1])?,
                            )),
                            _ => return Err(ValueError::Syntax(format!("{pair}: bad map pair"))),
                        }
                    }
                    Ok(Datum::map(out))
                }
                _ => Err(ValueError::Syntax(format!("{value}: map is not an array"))),
            },
            _ => Ok(Datum::Set(smallvec![Atom::from_json_untyped(value)?])),
        }
    }

    /// The wire form: a one-element set goes as a bare atom, like ovsdb-server.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Applies an `update2` "modify" diff (ovsdb-server(7) §4.1.14): a scalar
    /// column takes the new value; a set toggles each element of the diff; a
    /// map adds missing keys, removes pairs that match exactly and replaces
    /// values of keys present with another value.
    pub fn apply_diff(&mut self, diff: Datum, ty: &ColumnType) -> Result<(), ValueError> {
        // ovsdb-server sends the new value for every column that can hold at
        // most one element (optional scalars too): `ovsdb_type_is_composite`.
        if ty.max <= 1 {
            *self = diff;
            return Ok(());
        }
        match (self, diff) {
            (Datum::Set(cur), Datum::Set(d)) => {
                let mut out = Atoms::with_capacity(cur.len() + d.len());
                let mut a = std::mem::take(cur).into_iter().peekable();
                let mut b = d.into_iter().peekable();
                loop {
                    match (a.peek(), b.peek()) {
                        (Some(x), Some(y)) => match x.cmp(y) {
                            std::cmp::Ordering::Less => out.extend(a.next()),
                            std::cmp::Ordering::Greater => out.extend(b.next()),
                            std::cmp::Ordering::Equal => {
                                a.next();
                                b.next();
                            }
                        },
                        (Some(_), None) => out.extend(a.next()),
                        (None, Some(_)) => out.extend(b.next()),
                        (None, None) => break,
                    }
                }
                *cur = out;
                Ok(())
            }
            (Datum::Map(cur), Datum::Map(d)) => {
                for (k, v) in d {
                    match cur.binary_search_by(|(ck, _)| ck.cmp(&k)) {
                        Ok(i) => {
                            if cur[i].1 == v {
                                cur.remove(i);
                            } else {
                                cur[i].1 = v;
                            }
                        }
                        Err(i) => cur.insert(i, (k, v)),
                    }
                }
                Ok(())
            }
            (Datum::Map(_), Datum::Set(d)) if d.is_empty() => Ok(()),
            _ => Err(ValueError::Syntax(
                "update2 diff does not match the column's type".into(),
            )),
        }
    }

    /// The `update2` diff that turns `old` into `new` (inverse of `apply_diff`).
    pub fn diff(old: &Datum, new: &Datum, ty: &ColumnType) -> Datum {
        if ty.max <= 1 {
            return new.clone();
        }
        match (old, new) {
            (Datum::Set(a), Datum::Set(b)) => {
                let mut out = Atoms::new();
                let (mut i, mut j) = (0, 0);
                while i < a.len() || j < b.len() {
                    match (a.get(i), b.get(j)) {
                        (Some(x), Some(y)) => match x.cmp(y) {
                            std::cmp::Ordering::Less => {
                                out.push(x.clone());
                                i += 1;
                            }
                            std::cmp::Ordering::Greater => {
                                out.push(y.clone());
                                j += 1;
                            }
                            std::cmp::Ordering::Equal => {
                                i += 1;
                                j += 1;
                            }
                        },
                        (Some(x), None) => {
                            out.push(x.clone());
                            i += 1;
                        }
                        (None, Some(y)) => {
                            out.push(y.clone());
                            j += 1;
                        }
                        (None, None) => break,
                    }
                }
                Datum::Set(out)
            }
            (Datum::Map(a), Datum::Map(b)) => {
                let mut out = Vec::new();
                for (k, v) in a {
                    match b.binary_search_by(|(bk, _)| bk.cmp(k)) {
                        Ok(i) if b[i].1 == *v => {}
                        Ok(i) => out.push((k.clone(), b[i].1.clone())),
                        Err(_) => out.push((k.clone(), v.clone())),
                    }
                }
                for (k, v) in b {
                    if a.binary_search_by(|(ak, _)| ak.cmp(k)).is_err() {
                        out.push((k.clone(), v.clone()));
                    }
                }
                out.sort_by(|x, y| x.0.cmp(&y.0));
                Datum::Map(out)
            }
            _ => new.clone(),
        }
    }
}

impl Serialize for Datum {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Pairs<'a>(&'a [(Atom, Atom)]);
        impl Serialize for Pairs<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    seq.serialize_element(&(k, v))?;
                }
                seq.end()
            }
        }
        match self {
            Datum::Set(v) if v.len() == 1 => v[0].serialize(serializer),
            Datum::Set(v) => {
                let mut seq = serializer.serialize_seq(Some(2))?;
                seq.serialize_element("set")?;
                seq.serialize_element(v.as_slice())?;
                seq.end()
            }
            Datum::Map(v) => {
                let mut seq = serializer.serialize_seq(Some(2))?;
                seq.serialize_element("map")?;
                seq.serialize_element(&Pairs(v))?;
                seq.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnType;
    use serde_json::json;

    fn ty(j: serde_json::Value) -> ColumnType {
        ColumnType::from_json(&j).unwrap()
    }

    #[test]
    fn wire_forms_round_trip() {
        let set_ty = ty(json!({"key": "string", "min": 0, "max": "unlimited"}));
        for v in [json!("a"), json!(["set", []]), json!(["set", ["a", "b"]])] {
            let d = Datum::from_json(&v, &set_ty).unwrap();
            assert_eq!(d.to_json(), v);
        }
        let map_ty = ty(json!({"key": "integer", "value": "string", "min": 0, "max": "unlimited"}));
        let m = json!(["map", [[1, "x"], [5, "y"]]]);
        assert_eq!(Datum::from_json(&m, &map_ty).unwrap().to_json(), m);
        assert_eq!(
            Datum::from_json(&json!(["map", []]), &map_ty)
                .unwrap()
                .to_json(),
            json!(["map", []])
        );
        assert!(Datum::from_json(&json!({"1": "x"}), &map_ty).is_err());
        assert!(Datum::from_json(&json!(["set", ["a", "a"]]), &set_ty).is_err());
    }

    #[test]
    fn optional_columns_diff_as_new_value() {
        // ovsdb-server sends "tunnel_key":3 for 2 -> 3 on a 0..1 column.
        let opt = ty(json!({"key": "integer", "min": 0, "max": 1}));
        let (a, b) = (Datum::scalar(2), Datum::scalar(3));
        assert_eq!(Datum::diff(&a, &b, &opt), b);
        let mut x = a.clone();
        x.apply_diff(Datum::scalar(3), &opt).unwrap();
        assert_eq!(x, b);
        x.apply_diff(Datum::empty_set(), &opt).unwrap();
        assert_eq!(x, Datum::empty_set());
    }

    #[test]
    fn diffs_invert() {
        let set_ty = ty(json!({"key": "integer", "min": 0, "max": "unlimited"}));
        let a = Datum::set([1.into(), 2.into(), 3.into()]);
        let b = Datum::set([2.into(), 4.into()]);
        let d = Datum::diff(&a, &b, &set_ty);
        assert_eq!(d, Datum::set([1.into(), 3.into(), 4.into()]));
        let mut x = a.clone();
        x.apply_diff(d, &set_ty).unwrap();
        assert_eq!(x, b);

        let map_ty = ty(json!({"key": "integer", "value": "string", "min": 0, "max": "unlimited"}));
        let a = Datum::map([(1.into(), "a".into()), (2.into(), "b".into())]);
        let b = Datum::map([(2.into(), "c".into()), (3.into(), "d".into())]);
        let d = Datum::diff(&a, &b, &map_ty);
        let mut x = a.clone();
        x.apply_diff(d, &map_ty).unwrap();
        assert_eq!(x, b);
    }
}
