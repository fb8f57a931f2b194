//! `where` conditions (RFC 7047 §5.1 plus ovsdb-server's extensions: `<`,
//! `<=`, `>`, `>=` on optional scalars and the boolean clauses `true` and
//! `false`). In `transact` all clauses must hold; in `monitor_cond` a row
//! matches when any clause holds (an empty condition matches everything).

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use super::error::OvsdbError;
use super::json::{parse_datum, type_to_english, Symtab};
use super::storage::RowData;
use crate::schema::{ColumnType, TableSchema, UNLIMITED};
use crate::value::{Atom, AtomicType, Datum, Uuid};

/// A column of a table, including the two implicit ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColRef {
    Uuid,
    Version,
    Col(usize),
}

impl ColRef {
    pub fn lookup(ts: &TableSchema, name: &str) -> Option<ColRef> {
        match name {
            "_uuid" => Some(ColRef::Uuid),
            "_version" => Some(ColRef::Version),
            _ => ts.column_index(name).map(ColRef::Col),
        }
    }

    pub fn name<'a>(&self, ts: &'a TableSchema) -> &'a str {
        match self {
            ColRef::Uuid => "_uuid",
            ColRef::Version => "_version",
            ColRef::Col(i) => ts.columns.get(*i).map(|c| c.name.as_str()).unwrap_or(""),
        }
    }

    pub fn ty<'a>(&self, ts: &'a TableSchema) -> Cow<'a, ColumnType> {
        match self {
            ColRef::Col(i) => match ts.columns.get(*i) {
                Some(c) => Cow::Borrowed(&c.ty),
                None => Cow::Owned(ColumnType::scalar(AtomicType::Uuid)),
            },
            _ => Cow::Owned(ColumnType::scalar(AtomicType::Uuid)),
        }
    }

    pub fn mutable(&self, ts: &TableSchema) -> bool {
        match self {
            ColRef::Col(i) => ts.columns.get(*i).is_some_and(|c| c.mutable),
            _ => false,
        }
    }

    /// The column's value in a row.
    pub fn value<'a>(&self, uuid: &Uuid, row: &'a RowData) -> Cow<'a, Datum> {
        match self {
            ColRef::Uuid => Cow::Owned(Datum::scalar(*uuid)),
            ColRef::Version => Cow::Owned(Datum::scalar(row.version)),
            ColRef::Col(i) => match row.get(*i) {
                Some(d) => Cow::Borrowed(d),
                None => Cow::Owned(Datum::empty_set()),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
    Includes,
    Excludes,
    True,
    False,
}

impl Function {
    fn from_name(name: &str) -> Option<Function> {
        Some(match name {
            "<" => Function::Lt,
            "<=" => Function::Le,
            "==" => Function::Eq,
            "!=" => Function::Ne,
            ">=" => Function::Ge,
            ">" => Function::Gt,
            "includes" => Function::Includes,
            "excludes" => Function::Excludes,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Clause {
    pub column: ColRef,
    pub function: Function,
    pub arg: Datum,
    optional_scalar: bool,
    scalar: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Condition {
    pub clauses: Vec<Clause>,
}

impl Condition {
    /// Parses a `where` array. `symtab` is the transaction's (named UUIDs
    /// are only valid inside `transact`).
    pub fn parse(
        ts: &TableSchema,
        json: &Value,
        mut symtab: Option<&mut Symtab>,
    ) -> Result<Condition, OvsdbError> {
        let items = json.as_array().map(Vec::as_slice).unwrap_or_default();
        let mut clauses = Vec::with_capacity(items.len());
        for item in items {
            clauses.push(parse_clause(ts, item, symtab.as_deref_mut())?);
        }
        Ok(Condition { clauses })
    }

    /// A condition that every row satisfies.
    pub fn always() -> Condition {
        Condition::default()
    }

    /// `_uuid == X` in the condition: the only row it can match.
    pub fn uuid_eq(&self) -> Option<Uuid> {
        self.clauses
            .iter()
            .find_map(|c| match (c.column, c.function) {
                (ColRef::Uuid, Function::Eq) => c.arg.as_uuid(),
                _ => None,
            })
    }

    /// Transaction semantics: all clauses hold.
    pub fn matches_all(&self, uuid: &Uuid, row: &RowData) -> bool {
        self.clauses.iter().all(|c| c.evaluate(uuid, row))
    }

    /// Monitor semantics: an empty condition or any clause holding.
    pub fn matches_any(&self, uuid: &Uuid, row: &RowData) -> bool {
        self.clauses.is_empty() || self.clauses.iter().any(|c| c.evaluate(uuid, row))
    }
}

fn parse_clause(
    ts: &TableSchema,
    json: &Value,
    symtab: Option<&mut Symtab>,
) -> Result<Clause, OvsdbError> {
    if let Value::Bool(b) = json {
        return Ok(Clause {
            column: ColRef::Uuid,
            function: if *b { Function::True } else { Function::False },
            arg: Datum::empty_set(),
            optional_scalar: false,
            scalar: true,
        });
    }
    let parts = match json {
        Value::Array(a) if a.len() == 3 && a[0].is_string() && a[1].is_string() => a,
        _ => {
            return Err(OvsdbError::syntax(
                Some(json),
                None,
                "Parse error in condition.",
            ))
        }
    };
    let column_name = parts[0].as_str().unwrap_or_default();
    let column = ColRef::lookup(ts, column_name).ok_or_else(|| {
        OvsdbError::syntax(
            Some(json),
            Some("unknown column"),
            format!("No column {column_name} in table {}.", ts.name),
        )
    })?;
    let function_name = parts[1].as_str().unwrap_or_default();
    let function = Function::from_name(function_name).ok_or_else(|| {
        OvsdbError::syntax(
            None,
            Some("unknown function"),
            format!("No function named {function_name}."),
        )
    })?;
    let col_ty = column.ty(ts);
    let mut ty = col_ty.clone().into_owned();
    match function {
        Function::Lt | Function::Le | Function::Gt | Function::Ge => {
            let numeric = matches!(ty.key.atomic, AtomicType::Integer | AtomicType::Real);
            if !(ty.is_scalar() || (ty.is_optional() && !ty.is_map())) || !numeric {
                return Err(OvsdbError::syntax(
                    Some(json),
                    None,
                    format!(
                        "Type mismatch: \"{function_name}\" operator may not be applied to column {column_name} of type {}.",
                        type_to_english(&ty)
                    ),
                ));
            }
        }
        Function::Excludes if !ty.is_scalar() => {
            ty.min = 0;
            ty.max = UNLIMITED;
        }
        Function::Includes if !ty.is_scalar() => ty.min = 0,
        _ => {}
    }
    let arg = parse_datum(&parts[2], &ty, symtab)?;
    Ok(Clause {
        column,
        function,
        arg,
        optional_scalar: col_ty.is_optional() && !col_ty.is_map(),
        scalar: col_ty.is_scalar(),
    })
}

impl Clause {
    pub fn evaluate(&self, uuid: &Uuid, row: &RowData) -> bool {
        use Function::*;
        match self.function {
            True => return true,
            False => return false,
            _ => {}
        }
        let field = self.column.value(uuid, row);
        let field = field.as_ref();
        if self.optional_scalar && field.is_empty() && matches!(self.function, Lt | Le | Gt | Ge) {
            return false;
        }
        if self.scalar || self.optional_scalar {
            if let (Some(f), Some(a)) = (field.as_scalar(), self.arg.as_scalar()) {
                let cmp = compare_atoms(f, a);
                return match self.function {
                    Lt => cmp == Ordering::Less,
                    Le => cmp != Ordering::Greater,
                    Eq | Includes => cmp == Ordering::Equal,
                    Ne | Excludes => cmp != Ordering::Equal,
                    Ge => cmp != Ordering::Less,
                    Gt => cmp == Ordering::Greater,
                    True | False => false,
                };
            }
        }
        match self.function {
            Eq => field == &self.arg,
            Ne => field != &self.arg,
            Includes => includes_all(&self.arg, field),
            Excludes => excludes_all(&self.arg, field),
            _ => false,
        }
    }
}

/// `ovsdb_atom_compare_3way`: reals compare numerically.
pub fn compare_atoms(a: &Atom, b: &Atom) -> Ordering {
    match (a, b) {
        (Atom::Real(x), Atom::Real(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        _ => a.cmp(b),
    }
}

/// `ovsdb_datum_compare_3way`: by size first, then element by element.
pub fn compare_datums(a: &Datum, b: &Datum) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| match (a, b) {
        (Datum::Set(x), Datum::Set(y)) => x
            .iter()
            .zip(y)
            .map(|(p, q)| compare_atoms(p, q))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal),
        (Datum::Map(x), Datum::Map(y)) => {
            let keys = x
                .iter()
                .zip(y)
                .map(|(p, q)| compare_atoms(&p.0, &q.0))
                .find(|o| o.is_ne());
            keys.unwrap_or_else(|| {
                x.iter()
                    .zip(y)
                    .map(|(p, q)| compare_atoms(&p.1, &q.1))
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
            })
        }
        _ => Ordering::Equal,
    })
}

/// Every element (pair, for maps) of `a` is in `b`.
pub fn includes_all(a: &Datum, b: &Datum) -> bool {
    match (a, b) {
        (Datum::Set(x), _) => x.iter().all(|e| b.contains_key(e)),
        (Datum::Map(x), Datum::Map(_)) => x.iter().all(|(k, v)| b.get(k) == Some(v)),
        (Datum::Map(x), Datum::Set(_)) => x.is_empty(),
    }
}

/// No element (pair, for maps) of `a` is in `b`.
pub fn excludes_all(a: &Datum, b: &Datum) -> bool {
    match (a, b) {
        (Datum::Set(x), _) => x.iter().all(|e| !b.contains_key(e)),
        (Datum::Map(x), Datum::Map(_)) => x.iter().all(|(k, v)| b.get(k) != Some(v)),
        (Datum::Map(_), Datum::Set(_)) => true,
    }
}
