//! Wall-clock time in milliseconds: the one clock shared by the runner, the proxy's
//! `last_change_unix_ms` and the agents' status ages (all processes run on one host).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `t` relative to `origin`, in milliseconds (negative before it).
pub fn rel(t: u64, origin: u64) -> i64 {
    t as i64 - origin as i64
}
