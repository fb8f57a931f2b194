//! The hash maps of the agent's hot paths (route store, exports, replica
//! indexes, planner). Their keys are MACs, VRF names and route keys, millions
//! of lookups in a takeover: std's SipHash was most of the core loop's time.
//! foldhash is several times faster and still seeded per process, so peers
//! that choose MACs or route keys cannot precompute collisions.

pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
