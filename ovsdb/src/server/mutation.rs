//! `mutate` operations (RFC 7047 §5.1 `<mutation>`), with ovsdb-server's
//! checks: arithmetic on integer and real scalars and sets, `insert` and
//! `delete` on sets and maps, overflow, division by zero, duplicates and
//! cardinality after the change.

use serde_json::Value;

use super::condition::ColRef;
use super::error::OvsdbError;
use super::json::{parse_datum, type_to_english, Symtab};
use crate::schema::{BaseType, ColumnType, TableSchema, UNLIMITED};
use crate::value::{Atom, AtomicType, Datum};

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
    fn from_name(s: &str) -> Option<Mutator> {
        Some(match s {
            "+=" => Mutator::Add,
            "-=" => Mutator::Sub,
            "*=" => Mutator::Mul,
            "/=" => Mutator::Div,
            "%=" => Mutator::Mod,
            "insert" => Mutator::Insert,
            "delete" => Mutator::Delete,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
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

#[derive(Clone, Debug)]
pub struct Mutation {
    pub column: usize,
    pub mutator: Mutator,
    pub arg: Datum,
}

fn is_set_type(ty: &ColumnType) -> bool {
    ty.value.is_none() && !(ty.min == 1 && ty.max == 1)
}

pub fn parse_mutations(
    ts: &TableSchema,
    json: &Value,
    mut symtab: Option<&mut Symtab>,
) -> Result<Vec<Mutation>, OvsdbError> {
    let items = json.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(parse_mutation(ts, item, symtab.as_deref_mut())?);
    }
    Ok(out)
}

fn parse_mutation(
    ts: &TableSchema,
    json: &Value,
    symtab: Option<&mut Symtab>,
) -> Result<Mutation, OvsdbError> {
    let parts = match json {
        Value::Array(a) if a.len() == 3 && a[0].is_string() && a[1].is_string() => a,
        _ => {
            return Err(OvsdbError::syntax(
                Some(json),
                None,
                "Parse error in mutation.",
            ))
        }
    };
    let column_name = parts[0].as_str().unwrap_or_default();
    let col = ColRef::lookup(ts, column_name).ok_or_else(|| {
        OvsdbError::syntax(
            Some(json),
            Some("unknown column"),
            format!("No column {column_name} in table {}.", ts.name),
        )
    })?;
    let (column, col_ty) = match col {
        ColRef::Col(i) if col.mutable(ts) => (i, col.ty(ts).into_owned()),
        _ => {
            return Err(OvsdbError::syntax(
                Some(json),
                Some("constraint violation"),
                format!(
                    "Cannot mutate immutable column {column_name} in table {}.",
                    ts.name
                ),
            ))
        }
    };
    let mutator_name = parts[1].as_str().unwrap_or_default();
    let mutator = Mutator::from_name(mutator_name).ok_or_else(|| {
        OvsdbError::syntax(
            None,
            Some("unknown mutator"),
            format!("No mutator named {mutator_name}."),
        )
    })?;
    let mismatch = || {
        OvsdbError::syntax(
            Some(json),
            None,
            format!(
                "Type mismatch: \"{mutator_name}\" operator may not be applied to column {column_name} of type {}.",
                type_to_english(&col_ty)
            ),
        )
    };
    let mut ty = col_ty.clone();
    let arg = match mutator {
        Mutator::Add | Mutator::Sub | Mutator::Mul | Mutator::Div | Mutator::Mod => {
            let numeric = matches!(ty.key.atomic, AtomicType::Integer | AtomicType::Real);
            if (!ty.is_scalar() && !is_set_type(&ty))
                || !numeric
                || (mutator == Mutator::Mod && ty.key.atomic == AtomicType::Real)
            {
                return Err(mismatch());
            }
            ty.key = BaseType::plain(ty.key.atomic);
            ty.min = 1;
            ty.max = 1;
            parse_datum(&parts[2], &ty, symtab)?
        }
        Mutator::Insert | Mutator::Delete => {
            if ty.is_scalar() {
                return Err(mismatch());
            }
            ty.min = 0;
            if mutator == Mutator::Delete {
                ty.max = UNLIMITED;
            }
            let mut symtab = symtab;
            match parse_datum(&parts[2], &ty, symtab.as_deref_mut()) {
                Ok(d) => d,
                Err(e) => {
                    if ty.is_map() && mutator == Mutator::Delete {
                        // A set of keys deletes pairs by key.
                        ty.value = None;
                        parse_datum(&parts[2], &ty, symtab)?
                    } else {
                        return Err(e);
                    }
                }
            }
        }
    };
    Ok(Mutation {
        column,
        mutator,
        arg,
    })
}

fn range_error(m: Mutator) -> OvsdbError {
    OvsdbError::new(
        "range error",
        format!("Result of \"{}\" operation is out of range.", m.name()),
    )
}

fn int_op(m: Mutator, x: i64, y: i64) -> Result<i64, OvsdbError> {
    let r = match m {
        Mutator::Add => x.checked_add(y),
        Mutator::Sub => x.checked_sub(y),
        Mutator::Mul => x.checked_mul(y),
        Mutator::Div | Mutator::Mod => {
            if y == 0 {
                return Err(OvsdbError::new("domain error", "Division by zero."));
            }
            if m == Mutator::Div {
                x.checked_div(y)
            } else {
                x.checked_rem(y)
            }
        }
        _ => Some(x),
    };
    r.ok_or_else(|| range_error(m))
}

fn real_op(m: Mutator, x: f64, y: f64) -> Result<f64, OvsdbError> {
    let r = match m {
        Mutator::Add => x + y,
        Mutator::Sub => x - y,
        Mutator::Mul => x * y,
        Mutator::Div => {
            if y == 0.0 {
                return Err(OvsdbError::new("domain error", "Division by zero."));
            }
            x / y
        }
        _ => x,
    };
    if r.is_finite() {
        Ok(r)
    } else {
        Err(range_error(m))
    }
}

impl Mutation {
    /// Applies the mutation to a column value of type `ty`.
    pub fn apply(&self, dst: &mut Datum, ty: &ColumnType) -> Result<(), OvsdbError> {
        match self.mutator {
            Mutator::Insert => {
                *dst = union(dst, &self.arg);
                check_count(dst, ty)
            }
            Mutator::Delete => {
                *dst = subtract(dst, &self.arg);
                check_count(dst, ty)
            }
            m => {
                let Some(y) = self.arg.as_scalar() else {
                    return Ok(());
                };
                let Datum::Set(atoms) = dst else {
                    return Ok(());
                };
                let mut out = Vec::with_capacity(atoms.len());
                for a in atoms.iter() {
                    let r = match (a, y) {
                        (Atom::Integer(x), Atom::Integer(y)) => Atom::Integer(int_op(m, *x, *y)?),
                        (Atom::Real(x), _) => {
                            Atom::Real(real_op(m, *x, y.as_real().unwrap_or(0.0))?)
                        }
                        (other, _) => other.clone(),
                    };
                    ty.key
                        .check_atom(&r)
                        .map_err(|e| OvsdbError::constraint(e.to_string()))?;
                    out.push(r);
                }
                let n = out.len();
                let d = Datum::set(out);
                if d.len() != n {
                    return Err(OvsdbError::constraint(format!(
                        "Result of \"{}\" operation contains duplicates.",
                        m.name()
                    )));
                }
                *dst = d;
                Ok(())
            }
        }
    }
}

fn check_count(d: &Datum, ty: &ColumnType) -> Result<(), OvsdbError> {
    let n = d.len() as u64;
    if n < ty.min || n > ty.max {
        return Err(OvsdbError::constraint(format!(
            "Attempted to store {n} elements in {}.",
            type_to_english(ty)
        )));
    }
    Ok(())
}

/// Adds elements of `b` missing from `a`; for maps, keys already present
/// keep their value (`ovsdb_datum_union` without replace).
fn union(a: &Datum, b: &Datum) -> Datum {
    match (a, b) {
        (Datum::Set(x), Datum::Set(y)) => Datum::set(x.iter().chain(y).cloned()),
        (Datum::Map(x), Datum::Map(y)) => {
            let mut out = x.clone();
            for (k, v) in y {
                if let Err(i) = out.binary_search_by(|(ok, _)| ok.cmp(k)) {
                    out.insert(i, (k.clone(), v.clone()));
                }
            }
            Datum::Map(out)
        }
        (Datum::Set(x), Datum::Map(_)) if x.is_empty() => b.clone(),
        _ => a.clone(),
    }
}

/// Removes from `a` the elements of `b`: map pairs that match exactly, or
/// map keys when `b` is a set.
fn subtract(a: &Datum, b: &Datum) -> Datum {
    match (a, b) {
        (Datum::Set(x), Datum::Set(_)) => {
            Datum::Set(x.iter().filter(|e| !b.contains_key(e)).cloned().collect())
        }
        (Datum::Map(x), Datum::Set(_)) => Datum::Map(
            x.iter()
                .filter(|(k, _)| !b.contains_key(k))
                .cloned()
                .collect(),
        ),
        (Datum::Map(x), Datum::Map(_)) => Datum::Map(
            x.iter()
                .filter(|(k, v)| b.get(k) != Some(v))
                .cloned()
                .collect(),
        ),
        _ => a.clone(),
    }
}
