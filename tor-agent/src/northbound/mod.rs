//! Northbound: the control nodes (XMPP, TF-compatible).

pub mod routes;
pub mod session;
