//! The OVSDB data model: atoms, data (sets and maps), rows, and their exact
//! JSON wire encoding (RFC 7047 §5.1).

mod atom;
mod datum;
mod row;
pub mod seed;

pub use atom::{format_real, is_valid_id, parse_uuid, Atom, AtomicType};
pub use datum::{Atoms, Datum};
pub use row::Row;
pub use uuid::Uuid;

/// A value that does not fit its type or is not valid OVSDB JSON.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("{0}")]
    Constraint(String),
}

impl ValueError {
    pub(crate) fn type_mismatch(expected: AtomicType, got: &serde_json::Value) -> ValueError {
        ValueError::Syntax(format!("{got}: expected {expected}"))
    }
}
