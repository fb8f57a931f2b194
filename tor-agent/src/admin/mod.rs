//! Operations: status, admin API, metrics, readiness.

pub mod status;
