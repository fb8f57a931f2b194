//! OVSDB (RFC 7047 and the ovsdb-server extensions) for the ToR agent and the
//! simulated switch: the data model, schemas, a streaming JSON-RPC 1.0 codec,
//! an async client with a replica cache, and an in-memory server that
//! reproduces ovsdb-server's transaction semantics.

pub mod client;
pub mod rpc;
pub mod schema;
pub mod server;
pub mod transport;
pub mod value;
pub mod vtep;

#[cfg(feature = "testing")]
pub mod testing;

pub use schema::{DatabaseSchema, TableSchema};
pub use value::{Atom, Datum, Row, Uuid};
