//! Northbound: the control nodes (XMPP, TF-compatible).

pub mod routes;
