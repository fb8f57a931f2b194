//! Routes received from the control nodes, per control node and VRF.
//!
//! Plain data. Each control node's advertisements replace the previous one
//! for the same key (XMPP.md §5.1). When a control node's session drops,
//! its routes are kept but marked stale, so the switches keep forwarding
//! while it is away; they go when it comes back and its End-of-RIB (or a
//! timeout) shows they were not re-advertised.

use crate::hash::{HashMap, HashSet};
use std::collections::BTreeSet;

use tf_xmpp::enet::EnetEntry;

use crate::mac::Mac;

/// The EVPN route key within a VRF.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    pub tag: u32,
    pub mac: Mac,
    /// `ip/len`, `0.0.0.0/32` for a plain MAC route.
    pub address: String,
}

impl RouteKey {
    pub fn from_entry(e: &EnetEntry) -> Option<RouteKey> {
        Some(RouteKey {
            tag: e.nlri.ethernet_tag,
            mac: e.nlri.mac.parse().ok()?,
            address: e.nlri.address.clone(),
        })
    }
}

#[derive(Clone, Debug)]
struct Received {
    entry: EnetEntry,
    stale: bool,
}

#[derive(Default, Clone, Debug)]
struct CnRoutes {
    vrfs: HashMap<String, HashMap<RouteKey, Received>>,
}

/// The best information about one key: the route as the first control node
/// that has a fresh copy advertises it.
pub type Best<'a> = &'a EnetEntry;

#[derive(Clone, Debug)]
pub struct RouteStore {
    cns: Vec<CnRoutes>,
    /// VRF → MAC → keys carrying that MAC (any CN), for per-MAC lookups.
    by_mac: HashMap<String, HashMap<Mac, BTreeSet<RouteKey>>>,
    /// Next-hop address → (VRF, key) of routes (from any CN) through it:
    /// finds a switch's own MACs without scanning whole VRFs. May hold a
    /// few keys whose route no longer uses that next hop; readers check.
    by_next_hop: HashMap<String, HashSet<(String, RouteKey)>>,
}

/// A (VRF, key) whose effective route may have changed.
pub type Changed = (String, RouteKey);

/// How the effective route of a key ([`RouteStore::get`]) changed with one
/// advertisement or withdrawal. A takeover moves every route of a switch
/// between HA-stale and live twice (the old agent's paths go, the new
/// agent's come back reflected): nearly all of those change only the
/// preference and sequence, which most readers do not look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteDelta {
    /// The route appeared, went, changed next hops or now comes from
    /// another control node: readers re-read it.
    Replaced,
    /// Same source, same next hops; which of these attributes changed
    /// (neither: nothing a reader can see changed).
    Attributes { sequence: bool, preference: bool },
}

impl RouteDelta {
    /// Nothing a reader can see changed.
    pub const NONE: RouteDelta = RouteDelta::Attributes {
        sequence: false,
        preference: false,
    };
}

impl RouteStore {
    pub fn new(control_nodes: usize) -> RouteStore {
        RouteStore {
            cns: vec![CnRoutes::default(); control_nodes.max(1)],
            by_mac: HashMap::default(),
            by_next_hop: HashMap::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.cns
            .iter()
            .map(|c| c.vrfs.values().map(HashMap::len).sum::<usize>())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The control node whose copy [`RouteStore::get`] returns.
    fn source(&self, vrf: &str, key: &RouteKey) -> Option<usize> {
        self.effective(vrf, key).map(|(cn, _)| cn)
    }

    /// The copy read for a key, and its control node: the first with a fresh
    /// copy, else the first with a stale one.
    fn effective(&self, vrf: &str, key: &RouteKey) -> Option<(usize, Best<'_>)> {
        let mut stale = None;
        for (i, c) in self.cns.iter().enumerate() {
            if let Some(r) = c.vrfs.get(vrf).and_then(|t| t.get(key)) {
                if !r.stale {
                    return Some((i, &r.entry));
                }
                stale.get_or_insert((i, &r.entry));
            }
        }
        stale
    }

    /// An advertisement from control node `cn`.
    pub fn update(
        &mut self,
        cn: usize,
        vrf: &str,
        entry: EnetEntry,
    ) -> Option<(Changed, RouteDelta)> {
        let key = RouteKey::from_entry(&entry)?;
        let before = self.source(vrf, &key);
        let own_copy = self.store(cn, vrf, &key, entry)?;
        let after = self.source(vrf, &key);
        let delta = match (before == after, own_copy) {
            // Another control node's copy was and still is the one read.
            (true, _) if after != Some(cn) => RouteDelta::NONE,
            (true, Some(delta)) => delta,
            _ => RouteDelta::Replaced,
        };
        Some(((vrf.to_string(), key), delta))
    }

    /// Stores `cn`'s copy of a route. When it replaces a copy with the same
    /// next hops, says which other attributes changed (else `None`).
    fn store(
        &mut self,
        cn: usize,
        vrf: &str,
        key: &RouteKey,
        entry: EnetEntry,
    ) -> Option<Option<RouteDelta>> {
        let vrfs = &mut self.cns.get_mut(cn)?.vrfs;
        let table = match vrfs.get_mut(vrf) {
            Some(t) => t,
            None => vrfs.entry(vrf.to_string()).or_default(),
        };
        // The common update (a takeover moving a route between HA-stale and live) changes
        // only preference and sequence: then the next-hop and MAC indexes already hold it.
        if let Some(old) = table.get_mut(key) {
            let same_next_hops = old.entry.next_hops.len() == entry.next_hops.len()
                && old
                    .entry
                    .next_hops
                    .iter()
                    .zip(&entry.next_hops)
                    .all(|(a, b)| a.address == b.address);
            if same_next_hops {
                let delta = RouteDelta::Attributes {
                    sequence: old.entry.effective_sequence() != entry.effective_sequence(),
                    preference: old.entry.local_preference != entry.local_preference,
                };
                // A stale copy coming back fresh may change which copy is read: the
                // caller compares sources.
                old.entry = entry;
                old.stale = false;
                return Some(Some(delta));
            }
        }
        for nh in &entry.next_hops {
            self.by_next_hop
                .entry(nh.address.clone())
                .or_default()
                .insert((vrf.to_string(), key.clone()));
        }
        let old = table.insert(
            key.clone(),
            Received {
                entry,
                stale: false,
            },
        );
        if let Some(old) = old {
            self.unindex_next_hops(vrf, key, &old.entry);
        }
        self.by_mac
            .entry(vrf.to_string())
            .or_default()
            .entry(key.mac)
            .or_default()
            .insert(key.clone());
        Some(None)
    }

    /// A withdrawal from control node `cn`.
    pub fn withdraw(
        &mut self,
        cn: usize,
        vrf: &str,
        key: &RouteKey,
    ) -> Option<(Changed, RouteDelta)> {
        let before = self.source(vrf, key);
        let removed = self
            .cns
            .get_mut(cn)?
            .vrfs
            .get_mut(vrf)
            .and_then(|t| t.remove(key))?;
        self.unindex_next_hops(vrf, key, &removed.entry);
        self.unindex(vrf, key);
        let delta = if before == Some(cn) {
            RouteDelta::Replaced
        } else {
            RouteDelta::NONE
        };
        Some(((vrf.to_string(), key.clone()), delta))
    }

    /// Drops (vrf, key) from the next hops of `old` that no copy of the
    /// route (any CN) uses any more.
    fn unindex_next_hops(&mut self, vrf: &str, key: &RouteKey, old: &EnetEntry) {
        for nh in &old.next_hops {
            let still = self.cns.iter().any(|c| {
                c.vrfs
                    .get(vrf)
                    .and_then(|t| t.get(key))
                    .is_some_and(|r| r.entry.next_hops.iter().any(|n| n.address == nh.address))
            });
            if still {
                continue;
            }
            if let Some(set) = self.by_next_hop.get_mut(&nh.address) {
                set.remove(&(vrf.to_string(), key.clone()));
                if set.is_empty() {
                    self.by_next_hop.remove(&nh.address);
                }
            }
        }
    }

    /// (VRF, key) of routes whose next hops include `address`.
    pub fn keys_via(&self, address: &str) -> impl Iterator<Item = &(String, RouteKey)> + '_ {
        self.by_next_hop
            .get(address)
            .into_iter()
            .flat_map(|s| s.iter())
    }

    fn unindex(&mut self, vrf: &str, key: &RouteKey) {
        let still_there = self
            .cns
            .iter()
            .any(|c| c.vrfs.get(vrf).is_some_and(|t| t.contains_key(key)));
        if still_there {
            return;
        }
        if let Some(m) = self.by_mac.get_mut(vrf) {
            if let Some(keys) = m.get_mut(&key.mac) {
                keys.remove(key);
                if keys.is_empty() {
                    m.remove(&key.mac);
                }
            }
            if m.is_empty() {
                self.by_mac.remove(vrf);
            }
        }
    }

    /// The control node's session ended: keep its routes as stale.
    pub fn mark_stale(&mut self, cn: usize) {
        if let Some(c) = self.cns.get_mut(cn) {
            for t in c.vrfs.values_mut() {
                for r in t.values_mut() {
                    r.stale = true;
                }
            }
        }
    }

    /// Removes `cn`'s routes that are still stale (after its End-of-RIB, or
    /// when waiting for it timed out).
    pub fn sweep_stale(&mut self, cn: usize) -> Vec<Changed> {
        let mut gone = Vec::new();
        if let Some(c) = self.cns.get_mut(cn) {
            for (vrf, t) in c.vrfs.iter_mut() {
                t.retain(|k, r| {
                    if r.stale {
                        gone.push((vrf.clone(), k.clone(), r.entry.clone()));
                    }
                    !r.stale
                });
            }
        }
        for (vrf, k, e) in &gone {
            self.unindex_next_hops(vrf, k, e);
            self.unindex(vrf, k);
        }
        gone.into_iter().map(|(v, k, _)| (v, k)).collect()
    }

    /// Drops a VRF's routes from one control node (unsubscribed).
    pub fn drop_vrf(&mut self, cn: usize, vrf: &str) -> Vec<Changed> {
        let routes: Vec<(RouteKey, Received)> = self
            .cns
            .get_mut(cn)
            .and_then(|c| c.vrfs.remove(vrf))
            .map(|t| t.into_iter().collect())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(routes.len());
        for (k, r) in routes {
            self.unindex_next_hops(vrf, &k, &r.entry);
            self.unindex(vrf, &k);
            out.push((vrf.to_string(), k));
        }
        out
    }

    pub fn has_stale(&self, cn: usize) -> bool {
        self.cns
            .get(cn)
            .is_some_and(|c| c.vrfs.values().any(|t| t.values().any(|r| r.stale)))
    }

    /// The effective route for a key: the first control node with a fresh
    /// copy, else the first with a stale one.
    pub fn get(&self, vrf: &str, key: &RouteKey) -> Option<Best<'_>> {
        self.effective(vrf, key).map(|(_, e)| e)
    }

    /// Every key known in a VRF (any control node).
    pub fn keys(&self, vrf: &str) -> impl Iterator<Item = &RouteKey> + '_ {
        self.by_mac
            .get(vrf)
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(|s| s.iter())
    }

    /// Keys for one MAC in a VRF.
    pub fn keys_for_mac(&self, vrf: &str, mac: &Mac) -> impl Iterator<Item = &RouteKey> + '_ {
        self.by_mac
            .get(vrf)
            .and_then(|m| m.get(mac))
            .into_iter()
            .flat_map(|s| s.iter())
    }

    /// The route that decides where `mac` lives in `vrf`: the plain MAC
    /// route (`0.0.0.0/32`) of the VN's own ethernet tag if there is one,
    /// then any route of that tag, then routes of another tag (a VRF is one
    /// bridge domain; during a VNI change both tags exist for a while and
    /// the MAC must not vanish from the switch meanwhile).
    pub fn mac_route(&self, vrf: &str, vni: u32, mac: &Mac) -> Option<Best<'_>> {
        let mut best: Option<(u8, Best<'_>)> = None;
        for key in self.keys_for_mac(vrf, mac) {
            let Some(e) = self.get(vrf, key) else {
                continue;
            };
            let plain = key.address == "0.0.0.0/32" || key.address == "0.0.0.0/0";
            let rank = match (key.tag == vni, plain) {
                (true, true) => 0,
                (true, false) => 1,
                (false, true) => 2,
                (false, false) => 3,
            };
            if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, e));
            }
        }
        best.map(|(_, e)| e)
    }
}

/// The next-hop addresses of a route, sorted (ECMP paths come as several).
pub fn next_hop_addresses(e: &EnetEntry) -> Vec<&str> {
    let mut v: Vec<&str> = e.next_hops.iter().map(|n| n.address.as_str()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(mac: &str, nh: &str, pref: u32, seq: u32) -> EnetEntry {
        let mut e = EnetEntry::tor_mac(5001, mac, nh, seq);
        e.local_preference = pref;
        e
    }

    #[test]
    fn first_fresh_control_node_wins_and_stale_survives_until_swept() {
        let mut s = RouteStore::new(2);
        let vrf = "blue";
        s.update(0, vrf, route("02:00:00:00:00:01", "10.0.0.1", 100, 1));
        s.update(1, vrf, route("02:00:00:00:00:01", "10.0.0.2", 100, 2));
        let mac: Mac = "02:00:00:00:00:01".parse().unwrap();
        assert_eq!(
            next_hop_addresses(s.mac_route(vrf, 5001, &mac).unwrap()),
            vec!["10.0.0.1"]
        );
        s.mark_stale(0);
        assert_eq!(
            next_hop_addresses(s.mac_route(vrf, 5001, &mac).unwrap()),
            vec!["10.0.0.2"]
        );
        s.mark_stale(1);
        // Both stale: still known (the switches keep forwarding).
        assert!(s.mac_route(vrf, 5001, &mac).is_some());
        assert_eq!(s.keys_via("10.0.0.1").count(), 1);
        assert_eq!(s.sweep_stale(0).len(), 1);
        assert_eq!(s.keys_via("10.0.0.1").count(), 0, "index follows the sweep");
        assert_eq!(s.keys_via("10.0.0.2").count(), 1);
        assert_eq!(s.sweep_stale(1).len(), 1);
        assert!(s.mac_route(vrf, 5001, &mac).is_none());
        assert!(s.is_empty());
        assert_eq!(s.keys_via("10.0.0.2").count(), 0);
    }

    #[test]
    fn deltas_say_what_a_reader_of_the_effective_route_can_see() {
        let mac = "02:00:00:00:00:03";
        let delta = |s: &mut RouteStore, cn, e| s.update(cn, "v", e).map(|(_, d)| d);
        let mut s = RouteStore::new(2);
        assert_eq!(
            delta(&mut s, 0, route(mac, "10.0.0.1", 100, 1)),
            Some(RouteDelta::Replaced),
            "a new route"
        );
        assert_eq!(
            delta(&mut s, 0, route(mac, "10.0.0.1", 100, 1)),
            Some(RouteDelta::NONE),
            "the same route again"
        );
        // Live to HA-stale and back, as in a takeover: next hops kept.
        assert_eq!(
            delta(&mut s, 0, route(mac, "10.0.0.1", 1, 0)),
            Some(RouteDelta::Attributes {
                sequence: true,
                preference: true
            })
        );
        assert_eq!(
            delta(&mut s, 0, route(mac, "10.0.0.1", 1, 0)),
            Some(RouteDelta::NONE)
        );
        assert_eq!(
            delta(&mut s, 0, route(mac, "10.0.0.1", 100, 0)),
            Some(RouteDelta::Attributes {
                sequence: false,
                preference: true
            })
        );
        assert_eq!(
            delta(&mut s, 0, route(mac, "10.0.0.2", 100, 0)),
            Some(RouteDelta::Replaced),
            "next hop moved"
        );
        // The second control node's copy is not the one read while the first is fresh.
        assert_eq!(
            delta(&mut s, 1, route(mac, "10.0.0.7", 100, 5)),
            Some(RouteDelta::NONE)
        );
        assert_eq!(
            delta(&mut s, 1, route(mac, "10.0.0.7", 1, 0)),
            Some(RouteDelta::NONE)
        );
        // The first goes stale: the second's copy is read from now on.
        s.mark_stale(0);
        assert_eq!(
            delta(&mut s, 1, route(mac, "10.0.0.7", 100, 5)),
            Some(RouteDelta::Attributes {
                sequence: true,
                preference: true
            })
        );
        // The first comes back fresh with the same route it had: read again.
        assert_eq!(
            delta(&mut s, 0, route(mac, "10.0.0.2", 100, 0)),
            Some(RouteDelta::Replaced)
        );
        let k = RouteKey::from_entry(&route(mac, "10.0.0.2", 100, 0)).unwrap();
        assert_eq!(
            s.withdraw(1, "v", &k).map(|(_, d)| d),
            Some(RouteDelta::NONE),
            "withdrawing the copy not read"
        );
        assert_eq!(
            s.withdraw(0, "v", &k).map(|(_, d)| d),
            Some(RouteDelta::Replaced)
        );
        assert!(s.mac_route("v", 5001, &k.mac).is_none());
    }

    #[test]
    fn withdraw_and_tag_filter() {
        let mut s = RouteStore::new(1);
        let ((_, k), _) = s
            .update(0, "v", route("02:00:00:00:00:02", "10.0.0.1", 100, 1))
            .unwrap();
        let mac = k.mac;
        // Another tag still counts (VNI change in progress), own tag first.
        assert!(s.mac_route("v", 7, &mac).is_some());
        let mut own = route("02:00:00:00:00:02", "10.0.0.9", 100, 1);
        own.nlri.ethernet_tag = 7;
        s.update(0, "v", own);
        assert_eq!(
            next_hop_addresses(s.mac_route("v", 7, &mac).unwrap()),
            vec!["10.0.0.9"]
        );
        assert_eq!(
            next_hop_addresses(s.mac_route("v", 5001, &mac).unwrap()),
            vec!["10.0.0.1"]
        );
        let k7 = RouteKey {
            tag: 7,
            ..k.clone()
        };
        assert!(s.withdraw(0, "v", &k7).is_some());
        assert!(s.withdraw(0, "v", &k).is_some());
        assert!(s.withdraw(0, "v", &k).is_none());
        assert_eq!(s.keys("v").count(), 0);
    }
}
