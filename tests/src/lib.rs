//! End-to-end test support: locating binaries, spawning real ovsdb-server switches.
