//! What this agent publishes to the control nodes, and the minimal
//! publish/withdraw traffic to get there.
//!
//! Every switch contributes routes (its local MACs when this agent holds it,
//! HA-stale shadows otherwise); if two switches contribute the same key the
//! higher preference, then the higher sequence, then the lower switch name
//! wins. `take_changes` returns what to send since the last call.

use crate::hash::{HashMap, HashSet};

use tf_xmpp::enet::EnetEntry;

use crate::northbound::routes::RouteKey;

/// A route this agent publishes: VRF and EVPN key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExportKey {
    pub vrf: String,
    pub key: RouteKey,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExportChange {
    Publish { vrf: String, entry: EnetEntry },
    Withdraw { vrf: String, entry: EnetEntry },
}

#[derive(Default, Debug)]
pub struct ExportTable {
    /// Per key, each contributing switch's entry: nearly always one, so a
    /// short vector (a B-tree node per key cost kilobytes and a page fault
    /// every few keys in a takeover).
    contributions: HashMap<ExportKey, Vec<(String, EnetEntry)>>,
    published: HashMap<ExportKey, EnetEntry>,
    dirty: HashSet<ExportKey>,
}

fn rank(e: &EnetEntry) -> (u32, u32) {
    (e.local_preference, e.effective_sequence())
}

impl ExportTable {
    /// Sets (or with `None` removes) one switch's route for a key.
    pub fn set(&mut self, switch: &str, key: ExportKey, entry: Option<EnetEntry>) {
        match entry {
            Some(e) => {
                let slot = match self.contributions.get_mut(&key) {
                    Some(slot) => slot,
                    None => self.contributions.entry(key.clone()).or_default(),
                };
                match slot.iter_mut().find(|(s, _)| s == switch) {
                    Some((_, old)) if *old == e => {}
                    Some((_, old)) => {
                        *old = e;
                        self.dirty.insert(key);
                    }
                    None => {
                        slot.push((switch.to_string(), e));
                        self.dirty.insert(key);
                    }
                }
            }
            None => {
                if let Some(slot) = self.contributions.get_mut(&key) {
                    if let Some(i) = slot.iter().position(|(s, _)| s == switch) {
                        slot.swap_remove(i);
                        if slot.is_empty() {
                            self.contributions.remove(&key);
                        }
                        self.dirty.insert(key);
                    }
                }
            }
        }
    }

    /// Keys one switch contributes.
    pub fn keys_of(&self, switch: &str) -> Vec<ExportKey> {
        self.contributions
            .iter()
            .filter(|(_, s)| s.iter().any(|(name, _)| name == switch))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn effective(&self, key: &ExportKey) -> Option<&EnetEntry> {
        self.contributions.get(key).and_then(|slot| {
            slot.iter()
                .max_by(|(na, a), (nb, b)| rank(a).cmp(&rank(b)).then_with(|| nb.cmp(na)))
                .map(|(_, e)| e)
        })
    }

    /// What to send since the last call, withdrawals first (a VNI change
    /// is a withdraw of the old key plus a publish of the new one).
    pub fn take_changes(&mut self) -> Vec<ExportChange> {
        let mut keys: Vec<ExportKey> = self.dirty.drain().collect();
        keys.sort();
        let mut withdraws = Vec::new();
        let mut publishes = Vec::new();
        for key in keys {
            let want = self.effective(&key).cloned();
            let have = self.published.get(&key);
            match (want, have) {
                (Some(w), Some(h)) if w == *h => {}
                (Some(w), _) => {
                    publishes.push(ExportChange::Publish {
                        vrf: key.vrf.clone(),
                        entry: w.clone(),
                    });
                    self.published.insert(key, w);
                }
                (None, Some(_)) => {
                    if let Some(h) = self.published.remove(&key) {
                        withdraws.push(ExportChange::Withdraw {
                            vrf: key.vrf,
                            entry: h,
                        });
                    }
                }
                (None, None) => {}
            }
        }
        withdraws.extend(publishes);
        withdraws
    }

    /// Everything currently published (for a control node that just came up).
    pub fn all_published(&self) -> Vec<ExportChange> {
        let mut v: Vec<(&ExportKey, &EnetEntry)> = self.published.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter()
            .map(|(k, e)| ExportChange::Publish {
                vrf: k.vrf.clone(),
                entry: e.clone(),
            })
            .collect()
    }

    pub fn published_count(&self) -> usize {
        self.published.len()
    }

    pub fn published(&self, key: &ExportKey) -> Option<&EnetEntry> {
        self.published.get(key)
    }

    /// Published routes in one VRF.
    pub fn published_in(&self, vrf: &str) -> usize {
        self.published.keys().filter(|k| k.vrf == vrf).count()
    }

    pub fn is_settled(&self) -> bool {
        self.dirty.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tf_xmpp::enet::preference;

    fn key(mac: &str) -> ExportKey {
        ExportKey {
            vrf: "blue".into(),
            key: RouteKey {
                tag: 5001,
                mac: mac.parse().unwrap(),
                address: "0.0.0.0/32".into(),
            },
        }
    }

    #[test]
    fn preference_then_name_decides_and_changes_are_minimal() {
        let mut t = ExportTable::default();
        let k = key("02:00:00:00:00:01");
        let live = EnetEntry::tor_mac(5001, "02:00:00:00:00:01", "10.0.0.1", 1);
        let mut stale = live.clone();
        stale.local_preference = preference::HA_STALE;
        stale.sequence_number = 0;
        t.set("sw1", k.clone(), Some(stale.clone()));
        t.set("sw2", k.clone(), Some(live.clone()));
        let ch = t.take_changes();
        assert_eq!(
            ch,
            vec![ExportChange::Publish {
                vrf: "blue".into(),
                entry: live.clone()
            }]
        );
        assert!(t.take_changes().is_empty());
        // The same contribution again sends nothing.
        t.set("sw2", k.clone(), Some(live.clone()));
        assert!(t.take_changes().is_empty());
        // Live route goes: the shadow takes its place (a re-publish).
        t.set("sw2", k.clone(), None);
        assert_eq!(
            t.take_changes(),
            vec![ExportChange::Publish {
                vrf: "blue".into(),
                entry: stale.clone()
            }]
        );
        t.set("sw1", k.clone(), None);
        assert_eq!(
            t.take_changes(),
            vec![ExportChange::Withdraw {
                vrf: "blue".into(),
                entry: stale
            }]
        );
        assert_eq!(t.published_count(), 0);
    }
}
