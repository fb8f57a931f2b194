//! Switch-to-agent affinity: which backend each switch was last on.
//!
//! Entries carry a Lamport version and the writing proxy's name: when two proxies disagree, the
//! higher `(version, node)` wins everywhere, so the pair converges whatever the order of
//! messages. Wall-clock time is used only to expire entries. The merge rule is pure and tested
//! here; [`peer`] carries entries between proxies.

pub mod peer;

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// One remembered placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub backend: String,
    pub version: u64,
    pub node: String,
    pub updated_unix_ms: u64,
}

impl Entry {
    fn newer_than(&self, other: &Entry) -> bool {
        (self.version, &self.node, &self.backend) > (other.version, &other.node, &other.backend)
    }
}

/// A change to publish to peers.
#[derive(Debug, Clone)]
pub struct Update {
    pub key: String,
    pub entry: Entry,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Entry>,
    clock: u64,
}

#[derive(Debug)]
pub struct AffinityTable {
    node: String,
    max_entries: usize,
    inner: Mutex<Inner>,
    updates: broadcast::Sender<Update>,
}

/// Longest switch key accepted from a peer.
pub const MAX_KEY: usize = 256;

impl AffinityTable {
    pub fn new(node: String, max_entries: usize) -> AffinityTable {
        let (updates, _) = broadcast::channel(4096);
        AffinityTable {
            node,
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner::default()),
            updates,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn lookup(&self, key: &str) -> Option<String> {
        self.lock().map.get(key).map(|e| e.backend.clone())
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        self.lock().map.get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Local placement: a switch is now on `backend`. Publishes the new entry, unless the same
    /// placement was recorded less than `refresh_ms` ago (a reconnect storm to the same agent
    /// then costs a lookup, not a sync message per session).
    pub fn record(&self, key: &str, backend: &str, now_unix_ms: u64, refresh_ms: u64) {
        let entry = {
            let mut inner = self.lock();
            if let Some(e) = inner.map.get(key) {
                if e.backend == backend
                    && now_unix_ms.saturating_sub(e.updated_unix_ms) < refresh_ms
                {
                    return;
                }
            }
            inner.clock += 1;
            let entry = Entry {
                backend: backend.to_string(),
                version: inner.clock,
                node: self.node.clone(),
                updated_unix_ms: now_unix_ms,
            };
            if !inner.map.contains_key(key) && inner.map.len() >= self.max_entries {
                evict_oldest(&mut inner.map);
            }
            inner.map.insert(key.to_string(), entry.clone());
            entry
        };
        let _ = self.updates.send(Update {
            key: key.to_string(),
            entry,
        });
    }

    /// An entry from a peer: kept if newer than ours. Returns whether it was applied.
    pub fn merge(&self, key: &str, entry: Entry) -> bool {
        if key.is_empty() || key.len() > MAX_KEY || entry.backend.len() > MAX_KEY {
            return false;
        }
        let mut inner = self.lock();
        inner.clock = inner.clock.max(entry.version);
        match inner.map.get(key) {
            Some(current) if !entry.newer_than(current) => false,
            existing => {
                if existing.is_none() && inner.map.len() >= self.max_entries {
                    evict_oldest(&mut inner.map);
                }
                inner.map.insert(key.to_string(), entry);
                true
            }
        }
    }

    /// Everything, for a full resync.
    pub fn snapshot(&self) -> Vec<Update> {
        self.lock()
            .map
            .iter()
            .map(|(k, e)| Update {
                key: k.clone(),
                entry: e.clone(),
            })
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    /// Drops entries not refreshed within `expire_ms`; returns how many.
    pub fn expire(&self, now_unix_ms: u64, expire_ms: u64) -> usize {
        let mut inner = self.lock();
        let before = inner.map.len();
        inner
            .map
            .retain(|_, e| now_unix_ms.saturating_sub(e.updated_unix_ms) < expire_ms);
        before - inner.map.len()
    }
}

fn evict_oldest(map: &mut HashMap<String, Entry>) {
    if let Some(oldest) = map
        .iter()
        .min_by_key(|(_, e)| e.updated_unix_ms)
        .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(backend: &str, version: u64, node: &str) -> Entry {
        Entry {
            backend: backend.into(),
            version,
            node: node.into(),
            updated_unix_ms: 1000,
        }
    }

    #[test]
    fn newer_wins_and_local_writes_follow_the_clock() {
        let t = AffinityTable::new("A".into(), 100);
        t.record("sw1", "agent1", 1, 0);
        assert_eq!(t.get("sw1").unwrap().version, 1);
        assert!(t.merge("sw1", entry("agent2", 5, "B")));
        assert_eq!(t.lookup("sw1").as_deref(), Some("agent2"));
        assert!(!t.merge("sw1", entry("agent1", 4, "B")), "older is ignored");
        t.record("sw1", "agent1", 2, 0);
        let e = t.get("sw1").unwrap();
        assert_eq!(
            (e.backend.as_str(), e.version),
            ("agent1", 6),
            "a local write after a merge is newer"
        );
    }

    #[test]
    fn unchanged_placements_are_republished_only_after_refresh() {
        let t = AffinityTable::new("A".into(), 10);
        let mut rx = t.subscribe();
        t.record("sw", "a1", 1000, 500);
        t.record("sw", "a1", 1200, 500);
        t.record("sw", "a1", 1600, 500);
        t.record("sw", "a2", 1601, 500);
        let versions: Vec<(String, u64)> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|u| (u.entry.backend, u.entry.updated_unix_ms))
            .collect();
        assert_eq!(
            versions,
            vec![
                ("a1".into(), 1000),
                ("a1".into(), 1600),
                ("a2".into(), 1601)
            ]
        );
    }

    #[test]
    fn ties_break_on_node_name_the_same_everywhere() {
        let a = AffinityTable::new("A".into(), 10);
        let b = AffinityTable::new("B".into(), 10);
        let ea = entry("agent1", 3, "A");
        let eb = entry("agent2", 3, "B");
        a.merge("sw", ea.clone());
        a.merge("sw", eb.clone());
        b.merge("sw", eb);
        b.merge("sw", ea);
        assert_eq!(a.lookup("sw"), b.lookup("sw"));
    }

    #[test]
    fn bounded_and_expiring() {
        let t = AffinityTable::new("A".into(), 2);
        t.record("a", "x", 10, 0);
        t.record("b", "x", 20, 0);
        t.record("c", "x", 30, 0);
        assert_eq!(t.len(), 2);
        assert!(t.lookup("a").is_none(), "oldest evicted");
        assert_eq!(t.expire(1000, 975), 1);
        assert!(t.lookup("c").is_some());
        assert!(!t.merge(&"k".repeat(MAX_KEY + 1), entry("x", 1, "B")));
    }

    proptest! {
        /// Two tables receiving the same entries in any order end up identical.
        #[test]
        fn merge_is_order_independent(ops in proptest::collection::vec((0u8..4, 0u8..3, 1u64..20, 0u8..2), 0..40),
                                      seed in any::<u64>()) {
            let entries: Vec<(String, Entry)> = ops.iter().map(|&(k, b, v, n)|
                (format!("sw{k}"), entry(&format!("agent{b}"), v, if n == 0 { "A" } else { "B" }))).collect();
            let mut shuffled = entries.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let t1 = AffinityTable::new("X".into(), 100);
            let t2 = AffinityTable::new("Y".into(), 100);
            for (k, e) in entries { t1.merge(&k, e); }
            for (k, e) in shuffled { t2.merge(&k, e); }
            for k in 0..4 {
                let key = format!("sw{k}");
                prop_assert_eq!(t1.get(&key), t2.get(&key));
            }
        }
    }
}
