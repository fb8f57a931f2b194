//! A row: its column values, by position in the table schema.

use super::Datum;
use crate::schema::TableSchema;

/// Column values in the order of `TableSchema::columns`. `_uuid` is the key
/// the row is stored under and `_version` lives beside it, not in here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub columns: Box<[Datum]>,
}

impl Row {
    /// A row holding every column's default value.
    pub fn with_defaults(table: &TableSchema) -> Row {
        Row {
            columns: table
                .columns
                .iter()
                .map(|c| Datum::default_for(&c.ty))
                .collect(),
        }
    }

    /// A row from the columns a peer sent; the others take their defaults.
    /// Builds each column once (a 100k-row dump makes this hot).
    pub fn from_columns(table: &TableSchema, cols: Vec<(usize, Datum)>) -> Row {
        let n = table.columns.len();
        let mut slots: Vec<Option<Datum>> = Vec::with_capacity(n);
        slots.resize_with(n, || None);
        for (i, d) in cols {
            if let Some(slot) = slots.get_mut(i) {
                *slot = Some(d);
            }
        }
        Row {
            columns: slots
                .into_iter()
                .zip(&table.columns)
                .map(|(d, c)| d.unwrap_or_else(|| Datum::default_for(&c.ty)))
                .collect(),
        }
    }

    pub fn get(&self, column: usize) -> Option<&Datum> {
        self.columns.get(column)
    }

    /// The value of a column by name, for code that does not keep indexes.
    pub fn column<'a>(&'a self, table: &TableSchema, name: &str) -> Option<&'a Datum> {
        table.column_index(name).and_then(|i| self.columns.get(i))
    }
}
