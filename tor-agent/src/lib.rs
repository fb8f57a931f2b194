//! The OVSDB ToR agent: manages hardware_vtep switches (southbound OVSDB)
//! for a Tungsten Fabric compatible control node (northbound XMPP), in an
//! active/standby pair behind `tor-proxy`.

pub mod admin;
pub mod config;
pub mod core;
pub mod ha;
pub mod hash;
pub mod ifmap;
pub mod mac;
pub mod northbound;
pub mod reconcile;
pub mod runtime;
pub mod southbound;
