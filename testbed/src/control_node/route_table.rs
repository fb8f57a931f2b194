//! The control node's EVPN route table (XMPP.md §6): every path per (VRF, route key) from every
//! agent, the best path(s) per key, and what changed on the wire. Pure logic, no I/O.

use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use tf_xmpp::enet::{preference, EnetEntry, EnetNextHop, EnetNlri};

/// The route key on the wire: (ethernet-tag, MAC, IP/len).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RouteKey {
    pub ethernet_tag: u32,
    pub mac: String,
    pub address: String,
}

impl RouteKey {
    pub fn from_nlri(n: &EnetNlri) -> Self {
        RouteKey {
            ethernet_tag: n.ethernet_tag,
            mac: n.mac.to_ascii_lowercase(),
            address: n.address.clone(),
        }
    }
    pub fn to_nlri(&self) -> EnetNlri {
        EnetNlri {
            ethernet_tag: self.ethernet_tag,
            mac: self.mac.clone(),
            address: self.address.clone(),
            ..EnetNlri::default()
        }
    }
    pub fn is_broadcast(&self) -> bool {
        self.mac == tf_xmpp::enet::BROADCAST_MAC
    }
    pub fn item_id(&self) -> String {
        self.to_nlri().item_id()
    }
}

/// What the subscribers of a VRF must be told after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireUpdate {
    Advertise(Box<EnetEntry>),
    Withdraw(RouteKey),
}

/// The route distinguisher group of a path: unicast paths share one group (they compete);
/// each agent's broadcast route has its own (§4.5), so they never compete.
type Rd = String;
/// paths by agent name.
type Paths = BTreeMap<String, EnetEntry>;

#[derive(Debug, Default, Clone)]
struct Route {
    groups: BTreeMap<Rd, Paths>,
    advertised: Option<EnetEntry>,
}

#[derive(Debug, Default, Clone)]
struct Vrf {
    routes: BTreeMap<RouteKey, Route>,
}

/// One path, for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathInfo {
    pub vrf: String,
    pub key: RouteKey,
    pub rd: String,
    pub agent: String,
    pub next_hop: String,
    pub label: u32,
    pub local_preference: u32,
    pub sequence: u32,
    /// Selected (alone or as one of several ECMP paths).
    pub best: bool,
}

/// The advertised route of a key, for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BestRoute {
    pub vrf: String,
    pub key: RouteKey,
    pub next_hops: Vec<String>,
    pub local_preference: u32,
    pub sequence: u32,
    /// Agents whose paths are selected.
    pub agents: Vec<String>,
    /// Agents with an HA-stale path for the key: their shadows, which keep
    /// the key through a switchover.
    pub standby: Vec<String>,
}

fn known_encap(e: &str) -> bool {
    matches!(e, "gre" | "udp" | "vxlan")
}

/// Infeasible = every tunnel encapsulation published is unknown (§6.1 step 1).
pub fn feasible(e: &EnetEntry) -> bool {
    let all: Vec<&String> = e
        .next_hops
        .iter()
        .flat_map(|nh| &nh.tunnel_encapsulation)
        .collect();
    all.is_empty() || all.iter().any(|x| known_encap(x))
}

/// MED as compared: 0 means "derive from local-preference" (TF maps LOW→200, HIGH→100).
fn effective_med(e: &EnetEntry) -> u32 {
    if e.med != 0 {
        return e.med;
    }
    match e.local_preference {
        preference::LOW => 200,
        preference::HIGH => 100,
        _ => 0,
    }
}

/// Compares two paths in the §6.1 order: `Greater` means `a` is better; `Equal` means ECMP.
pub fn compare_paths(a: &EnetEntry, b: &EnetEntry) -> Ordering {
    feasible(a)
        .cmp(&feasible(b))
        .then(a.local_preference.cmp(&b.local_preference))
        .then((!a.etree_leaf).cmp(&!b.etree_leaf))
        .then(a.mobility.sticky.cmp(&b.mobility.sticky))
        .then(a.effective_sequence().cmp(&b.effective_sequence()))
        // No LLGR-stale community, AS path or origin on XMPP paths; then MED, lower wins.
        .then(effective_med(b).cmp(&effective_med(a)))
}

/// The selected paths of a group: all paths equal to the best (ECMP), ordered by agent name
/// (our stand-in for TF's path-id / router-id tie-break, §6.1 step 8).
fn select(paths: &Paths) -> Vec<(&String, &EnetEntry)> {
    let mut best: Vec<(&String, &EnetEntry)> = Vec::new();
    for (agent, e) in paths {
        match best.first().map(|(_, b)| compare_paths(e, b)) {
            None | Some(Ordering::Equal) => best.push((agent, e)),
            Some(Ordering::Greater) => {
                best.clear();
                best.push((agent, e));
            }
            Some(Ordering::Less) => {}
        }
    }
    best
}

impl Route {
    /// The entry to send: the best path's attributes, with every ECMP path's next hops and,
    /// for a broadcast key, the selected next hops of every route distinguisher.
    fn advertisement(&self) -> Option<EnetEntry> {
        let mut out: Option<EnetEntry> = None;
        let mut hops: Vec<EnetNextHop> = Vec::new();
        for paths in self.groups.values() {
            for (_, e) in select(paths) {
                if out.is_none() {
                    out = Some(e.clone());
                }
                for nh in &e.next_hops {
                    let mut nh = nh.clone();
                    if nh.tunnel_encapsulation.is_empty() {
                        nh.tunnel_encapsulation.push("gre".into());
                    }
                    if !hops.contains(&nh) {
                        hops.push(nh);
                    }
                }
            }
        }
        let mut e = out?;
        e.next_hops = hops;
        e.nlri.mac = e.nlri.mac.to_ascii_lowercase();
        Some(e)
    }

    fn refresh(&mut self, key: &RouteKey) -> Option<WireUpdate> {
        let now = self.advertisement();
        if now == self.advertised {
            return None;
        }
        self.advertised = now.clone();
        Some(match now {
            Some(e) => WireUpdate::Advertise(Box::new(e)),
            None => WireUpdate::Withdraw(key.clone()),
        })
    }
}

/// All VRFs' routes.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    vrfs: BTreeMap<String, Vrf>,
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `agent`'s path for the key (a re-publish replaces, §6.2). `rd` is the
    /// route distinguisher group: empty for unicast keys, per agent for broadcast keys.
    pub fn add_path(
        &mut self,
        vrf: &str,
        rd: &str,
        agent: &str,
        entry: EnetEntry,
    ) -> Option<WireUpdate> {
        let key = RouteKey::from_nlri(&entry.nlri);
        let route = self
            .vrfs
            .entry(vrf.to_string())
            .or_default()
            .routes
            .entry(key.clone())
            .or_default();
        route
            .groups
            .entry(rd.to_string())
            .or_default()
            .insert(agent.to_string(), entry);
        route.refresh(&key)
    }

    /// Removes `agent`'s path for the key.
    pub fn remove_path(
        &mut self,
        vrf: &str,
        rd: &str,
        agent: &str,
        key: &RouteKey,
    ) -> Option<WireUpdate> {
        let v = self.vrfs.get_mut(vrf)?;
        let route = v.routes.get_mut(key)?;
        let group = route.groups.get_mut(rd)?;
        group.remove(agent)?;
        if group.is_empty() {
            route.groups.remove(rd);
        }
        let update = route.refresh(key);
        if route.groups.is_empty() {
            v.routes.remove(key);
        }
        if v.routes.is_empty() {
            self.vrfs.remove(vrf);
        }
        update
    }

    /// Removes every path of `agent` (in one VRF, or everywhere): session loss with GR off
    /// (§6.3) or an unsubscribe. Returns the wire updates per VRF.
    pub fn remove_agent(
        &mut self,
        agent: &str,
        only_vrf: Option<&str>,
    ) -> Vec<(String, WireUpdate)> {
        let mut todo = Vec::new();
        for (vrf, v) in &self.vrfs {
            if only_vrf.is_some_and(|o| o != vrf) {
                continue;
            }
            for (key, route) in &v.routes {
                for (rd, paths) in &route.groups {
                    if paths.contains_key(agent) {
                        todo.push((vrf.clone(), rd.clone(), key.clone()));
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (vrf, rd, key) in todo {
            if let Some(u) = self.remove_path(&vrf, &rd, agent, &key) {
                out.push((vrf, u));
            }
        }
        out
    }

    /// Everything currently advertised in a VRF (for a new subscriber).
    pub fn advertised(&self, vrf: &str) -> Vec<EnetEntry> {
        self.vrfs
            .get(vrf)
            .map(|v| {
                v.routes
                    .values()
                    .filter_map(|r| r.advertised.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Keys currently advertised in a VRF.
    pub fn advertised_keys(&self, vrf: &str) -> Vec<RouteKey> {
        self.vrfs
            .get(vrf)
            .map(|v| {
                v.routes
                    .iter()
                    .filter(|(_, r)| r.advertised.is_some())
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every path, with whether it is selected.
    pub fn paths(&self, only_vrf: Option<&str>) -> Vec<PathInfo> {
        let mut out = Vec::new();
        for (vrf, v) in &self.vrfs {
            if only_vrf.is_some_and(|o| o != vrf) {
                continue;
            }
            for (key, route) in &v.routes {
                for (rd, paths) in &route.groups {
                    let selected: Vec<&String> =
                        select(paths).into_iter().map(|(a, _)| a).collect();
                    for (agent, e) in paths {
                        let nh = e.next_hops.first();
                        out.push(PathInfo {
                            vrf: vrf.clone(),
                            key: key.clone(),
                            rd: rd.clone(),
                            agent: agent.clone(),
                            next_hop: nh.map(|n| n.address.clone()).unwrap_or_default(),
                            label: nh.map(|n| n.label).unwrap_or_default(),
                            local_preference: e.local_preference,
                            sequence: e.effective_sequence(),
                            best: selected.contains(&agent),
                        });
                    }
                }
            }
        }
        out
    }

    /// The advertised route per key.
    pub fn best_routes(&self, only_vrf: Option<&str>) -> Vec<BestRoute> {
        let mut out = Vec::new();
        for (vrf, v) in &self.vrfs {
            if only_vrf.is_some_and(|o| o != vrf) {
                continue;
            }
            for (key, route) in &v.routes {
                let Some(adv) = &route.advertised else {
                    continue;
                };
                let agents = route
                    .groups
                    .values()
                    .flat_map(|paths| select(paths).into_iter().map(|(a, _)| a.clone()))
                    .collect();
                let standby = route
                    .groups
                    .values()
                    .flat_map(|paths| paths.iter())
                    .filter(|(_, e)| e.local_preference < preference::LOW)
                    .map(|(a, _)| a.clone())
                    .collect();
                out.push(BestRoute {
                    vrf: vrf.clone(),
                    key: key.clone(),
                    next_hops: adv.next_hops.iter().map(|n| n.address.clone()).collect(),
                    local_preference: adv.local_preference,
                    sequence: adv.effective_sequence(),
                    agents,
                    standby,
                });
            }
        }
        out
    }

    pub fn path_count(&self) -> usize {
        self.vrfs
            .values()
            .flat_map(|v| v.routes.values())
            .flat_map(|r| r.groups.values())
            .map(|p| p.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V: &str = "default-domain:p:blue:blue";

    fn mac(seq: u32, lp: u32, vtep: &str) -> EnetEntry {
        let mut e = EnetEntry::tor_mac(5001, "02:aa:bb:00:00:01", vtep, seq);
        e.local_preference = lp;
        e
    }

    fn adv_hops(u: &Option<WireUpdate>) -> Vec<String> {
        match u {
            Some(WireUpdate::Advertise(e)) => {
                e.next_hops.iter().map(|n| n.address.clone()).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn higher_local_preference_wins_and_ha_stale_is_a_fallback() {
        let mut t = RouteTable::new();
        // The backup's HA-stale re-export (pref 1, seq 0) arrives first.
        let u = t.add_path(V, "", "agent-b", mac(0, preference::HA_STALE, "192.0.2.21"));
        assert_eq!(adv_hops(&u), vec!["192.0.2.21"]);
        let u = t.add_path(V, "", "agent-a", mac(1, preference::LOW, "192.0.2.21"));
        match &u {
            Some(WireUpdate::Advertise(e)) => {
                assert_eq!(e.local_preference, 100);
                assert_eq!(e.sequence_number, 1);
            }
            other => panic!("{other:?}"),
        }
        let best = t.best_routes(None);
        assert_eq!(best[0].agents, vec!["agent-a"]);
        // The active agent's session ends: the HA-stale path takes over, nothing is withdrawn.
        let ups = t.remove_agent("agent-a", None);
        assert_eq!(ups.len(), 1);
        match &ups[0].1 {
            WireUpdate::Advertise(e) => assert_eq!(e.local_preference, preference::HA_STALE),
            other => panic!("{other:?}"),
        }
        let ups = t.remove_agent("agent-b", None);
        assert_eq!(
            ups,
            vec![(
                V.to_string(),
                WireUpdate::Withdraw(RouteKey::from_nlri(&mac(0, 1, "x").nlri))
            )]
        );
        assert_eq!(t.path_count(), 0);
    }

    #[test]
    fn mac_move_higher_sequence_wins_at_equal_preference() {
        let mut t = RouteTable::new();
        t.add_path(V, "", "agent-a", mac(1, 100, "192.0.2.21"));
        let u = t.add_path(V, "", "agent-c", mac(2, 100, "192.0.2.31"));
        assert_eq!(adv_hops(&u), vec!["192.0.2.31"]);
        // mobility@seqno takes precedence over sequence-number.
        let mut m = mac(0, 100, "192.0.2.41");
        m.mobility.seqno = 3;
        let u = t.add_path(V, "", "agent-d", m);
        assert_eq!(adv_hops(&u), vec!["192.0.2.41"]);
    }

    #[test]
    fn equal_paths_are_ecmp_next_hops() {
        let mut t = RouteTable::new();
        t.add_path(V, "", "agent-a", mac(1, 100, "192.0.2.21"));
        let u = t.add_path(V, "", "agent-b", mac(1, 100, "192.0.2.22"));
        assert_eq!(adv_hops(&u), vec!["192.0.2.21", "192.0.2.22"]);
        assert!(t.paths(None).iter().all(|p| p.best));
        // Re-publishing an identical path changes nothing on the wire.
        assert_eq!(
            t.add_path(V, "", "agent-b", mac(1, 100, "192.0.2.22")),
            None
        );
    }

    #[test]
    fn order_of_criteria() {
        let base = mac(1, 100, "x");
        let mut infeasible = base.clone();
        infeasible.local_preference = 200;
        infeasible.next_hops[0].tunnel_encapsulation = vec!["mpls-magic".into()];
        assert_eq!(compare_paths(&base, &infeasible), Ordering::Greater);
        let mut root = base.clone();
        root.etree_leaf = false;
        root.sequence_number = 0;
        assert_eq!(compare_paths(&root, &base), Ordering::Greater);
        let mut sticky = base.clone();
        sticky.mobility.sticky = true;
        sticky.sequence_number = 0;
        assert_eq!(compare_paths(&sticky, &base), Ordering::Greater);
        let mut low_med = base.clone();
        low_med.med = 5;
        assert_eq!(compare_paths(&low_med, &base), Ordering::Greater);
        let mut no_pref = base.clone();
        no_pref.local_preference = 0;
        no_pref.sequence_number = 99;
        assert_eq!(compare_paths(&base, &no_pref), Ordering::Greater);
    }

    #[test]
    fn broadcast_routes_of_different_agents_never_compete() {
        let mut t = RouteTable::new();
        let a = EnetEntry::tor_broadcast(5001, "192.0.2.21", "198.51.100.7");
        let mut b = a.clone();
        b.local_preference = 200; // would win if compared
        b.next_hops[0].address = "192.0.2.99".into();
        t.add_path(V, "agent-a@127.0.0.1:5", "agent-a", a);
        let u = t.add_path(V, "agent-b@127.0.0.1:5", "agent-b", b);
        assert_eq!(adv_hops(&u), vec!["192.0.2.21", "192.0.2.99"]);
        assert_eq!(t.paths(None).iter().filter(|p| p.best).count(), 2);
        let ups = t.remove_agent("agent-b", None);
        assert_eq!(adv_hops(&Some(ups[0].1.clone())), vec!["192.0.2.21"]);
    }

    #[test]
    fn withdraw_of_unknown_path_is_a_no_op() {
        let mut t = RouteTable::new();
        let k = RouteKey::from_nlri(&mac(1, 100, "x").nlri);
        assert_eq!(t.remove_path(V, "", "a", &k), None);
        t.add_path(V, "", "a", mac(1, 100, "x"));
        assert_eq!(t.remove_path(V, "", "b", &k), None);
        assert_eq!(t.remove_path(V, "", "a", &k), Some(WireUpdate::Withdraw(k)));
        assert!(t.advertised(V).is_empty());
    }

    proptest! {
        /// Whatever the sequence of adds and removes, what was last sent for each key equals
        /// the best of the paths present, computed from scratch.
        #[test]
        fn wire_state_tracks_best_path(ops in proptest::collection::vec((0u8..4, 0u8..3, 0u32..3, prop_oneof![Just(1u32), Just(100), Just(200)], any::<bool>()), 1..60)) {
            let mut t = RouteTable::new();
            let mut wire: BTreeMap<RouteKey, EnetEntry> = BTreeMap::new();
            let mut present: BTreeMap<(u8, u8), EnetEntry> = BTreeMap::new();
            for (agent, macn, seq, lp, add) in ops {
                let mut e = EnetEntry::tor_mac(7, &format!("02:00:00:00:00:0{macn}"), &format!("10.0.0.{agent}"), seq);
                e.local_preference = lp;
                let key = RouteKey::from_nlri(&e.nlri);
                let name = format!("agent-{agent}");
                let u = if add {
                    present.insert((agent, macn), e.clone());
                    t.add_path(V, "", &name, e)
                } else {
                    present.remove(&(agent, macn));
                    t.remove_path(V, "", &name, &key)
                };
                match u {
                    Some(WireUpdate::Advertise(e)) => { wire.insert(RouteKey::from_nlri(&e.nlri), *e); }
                    Some(WireUpdate::Withdraw(k)) => { wire.remove(&k); }
                    None => {}
                }
            }
            for macn in 0..3u8 {
                let paths: Vec<&EnetEntry> = present.iter().filter(|((_, m), _)| *m == macn).map(|(_, e)| e).collect();
                let key = RouteKey { ethernet_tag: 7, mac: format!("02:00:00:00:00:0{macn}"), address: "0.0.0.0/32".into() };
                match paths.iter().copied().max_by(|a, b| compare_paths(a, b)) {
                    None => prop_assert!(!wire.contains_key(&key)),
                    Some(best) => {
                        let sent = wire.get(&key).expect("advertised");
                        prop_assert_eq!(compare_paths(sent, best), Ordering::Equal);
                        let want: usize = paths.iter().filter(|p| compare_paths(p, best) == Ordering::Equal).count();
                        prop_assert_eq!(sent.next_hops.len(), want);
                    }
                }
            }
        }
    }
}
