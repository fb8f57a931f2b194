//! Checks of values against their column types, with ovsdb-server's wording
//! (`ovsdb-data.c`), since clients and differential tests compare messages.

use super::types::{BaseType, ColumnType, UNLIMITED};
use crate::value::{format_real, Atom, Datum, ValueError};

impl BaseType {
    /// Enum, range and length constraints of one atom. References are
    /// checked at commit time by the transaction engine, not here.
    pub fn check_atom(&self, atom: &Atom) -> Result<(), ValueError> {
        if let Some(allowed) = &self.enumeration {
            if allowed.binary_search(atom).is_err() {
                let list = allowed
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                // The enum is a set type with max > 1, so ovsdb-server
                // brackets it even when it has a single value.
                return Err(ValueError::Constraint(format!(
                    "{atom} is not one of the allowed values ([{list}])"
                )));
            }
        }
        match atom {
            Atom::Integer(i) => match (self.min_integer, self.max_integer) {
                (Some(lo), Some(hi)) if *i < lo || *i > hi => Err(ValueError::Constraint(format!(
                    "{i} is not in the valid range {lo} to {hi} (inclusive)"
                ))),
                (Some(lo), None) if *i < lo => Err(ValueError::Constraint(format!(
                    "{i} is less than minimum allowed value {lo}"
                ))),
                (None, Some(hi)) if *i > hi => Err(ValueError::Constraint(format!(
                    "{i} is greater than maximum allowed value {hi}"
                ))),
                _ => Ok(()),
            },
            Atom::Real(r) => match (self.min_real, self.max_real) {
                (Some(lo), Some(hi)) if *r < lo || *r > hi => Err(ValueError::Constraint(format!(
                    "{} is not in the valid range {} to {} (inclusive)",
                    format_real(*r),
                    format_real(lo),
                    format_real(hi)
                ))),
                (Some(lo), None) if *r < lo => Err(ValueError::Constraint(format!(
                    "{} is less than minimum allowed value {}",
                    format_real(*r),
                    format_real(lo)
                ))),
                (None, Some(hi)) if *r > hi => Err(ValueError::Constraint(format!(
                    "{} is greater than maximum allowed value {}",
                    format_real(*r),
                    format_real(hi)
                ))),
                _ => Ok(()),
            },
            Atom::String(s) => {
                let n = s.chars().count() as u64;
                match (self.min_length, self.max_length) {
                    (Some(lo), _) if n < lo => Err(ValueError::Constraint(format!(
                        "\"{s}\" length {n} is less than minimum allowed length {lo}"
                    ))),
                    (_, Some(hi)) if n > hi => Err(ValueError::Constraint(format!(
                        "\"{s}\" length {n} is greater than maximum allowed length {hi}"
                    ))),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

impl ColumnType {
    /// Cardinality of a whole column value.
    pub fn check_size(&self, datum: &Datum) -> Result<(), ValueError> {
        let n = datum.len() as u64;
        if n < self.min || n > self.max {
            let max = if self.max == UNLIMITED {
                "unlimited".to_string()
            } else {
                self.max.to_string()
            };
            return Err(ValueError::Constraint(format!(
                "{} values when type requires between {} and {max}",
                n, self.min
            )));
        }
        Ok(())
    }

    /// Every atom's constraints, keys and values.
    pub fn check_atoms(&self, datum: &Datum) -> Result<(), ValueError> {
        match datum {
            Datum::Set(atoms) => atoms.iter().try_for_each(|a| self.key.check_atom(a)),
            Datum::Map(pairs) => pairs.iter().try_for_each(|(k, v)| {
                self.key.check_atom(k)?;
                match &self.value {
                    Some(vt) => vt.check_atom(v),
                    None => Ok(()),
                }
            }),
        }
    }
}
