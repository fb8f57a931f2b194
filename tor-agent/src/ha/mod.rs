//! High availability: what each switch contributes to the routes this agent
//! publishes, as pure logic with time passed in (DESIGN.md §4.2–4.3).
//!
//! - While this agent holds a switch's session it exports the switch's
//!   local MACs at local-preference 100 with a MAC-mobility sequence number
//!   (1, or the current best + 1 when the MAC moved here), and one broadcast
//!   route per virtual network with this agent's service node as replicator.
//! - Every agent, active or not, shadows the routes it receives whose next
//!   hop is a switch it is configured for, at local-preference 1 and
//!   sequence 0 (HA-stale): they never win while a live route exists, and
//!   keep the MACs in the control node through a switchover.
//! - When only HA-stale paths are left: an agent holding the switch drops
//!   the shadows of MACs the switch no longer has at once; otherwise the
//!   shadow lives `ha_stale_interval` and is then withdrawn.

pub mod exports;

use crate::hash::HashMap;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tf_xmpp::enet::{preference, EnetEntry, BROADCAST_MAC};
use uuid::Uuid;

use crate::ifmap::DeviceConfig;
use crate::mac::Mac;
use crate::northbound::routes::{next_hop_addresses, RouteKey, RouteStore};
use crate::reconcile::SwitchDb;
use exports::{ExportKey, ExportTable};

/// The plain MAC route address of ToR MACs (no IP learning on ToRs).
pub const MAC_ONLY: &str = "0.0.0.0/32";

/// What the HA logic of one switch reads.
pub struct HaInput<'a> {
    pub device: &'a DeviceConfig,
    /// The switch's database, when this agent holds its session.
    pub db: Option<&'a SwitchDb>,
    pub routes: &'a RouteStore,
    /// The switch's VTEP IP (from the switch when held, else config).
    pub vtep: Option<String>,
    pub tsn_ip: &'a str,
}

/// What a switch contributes for one MAC key.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Nothing,
    /// Its local MAC, live.
    Local {
        next_hop: String,
        sequence: u32,
    },
    /// An HA-stale shadow of a route through it.
    Shadow,
}

impl Wanted {
    fn entry(self, vni: u32, mac: Mac, vtep: Option<&str>) -> Option<EnetEntry> {
        match self {
            Wanted::Nothing => None,
            Wanted::Local { next_hop, sequence } => Some(EnetEntry::tor_mac(
                vni,
                &mac.to_string(),
                &next_hop,
                sequence,
            )),
            Wanted::Shadow => {
                let mut e = EnetEntry::tor_mac(vni, &mac.to_string(), vtep?, 0);
                e.local_preference = preference::HA_STALE;
                e.sequence_number = 0;
                Some(e)
            }
        }
    }
}

/// HA state of one switch.
#[derive(Debug, Default)]
pub struct SwitchHa {
    pub name: String,
    /// Keys this switch currently contributes to the export table, and
    /// whether at live preference.
    contributed: HashMap<ExportKey, bool>,
    /// Contributed MAC keys at live preference (kept for status polls).
    live_macs: usize,
    /// Contributed MAC routes per (VRF, VNI): a broadcast route is wanted
    /// while some exist (or while the switch is held).
    macs_per_vn: HashMap<(String, u32), usize>,
    /// When a shadow was first seen with only HA-stale paths left.
    stale_since: HashMap<ExportKey, Instant>,
    /// Sequence numbers of exported local MACs, fixed while the MAC stays.
    local_seq: HashMap<(Uuid, Mac), u32>,
    wake_at: Option<Instant>,
}

fn mac_key(vrf: &str, vni: u32, mac: Mac) -> ExportKey {
    ExportKey {
        vrf: vrf.to_string(),
        key: RouteKey {
            tag: vni,
            mac,
            address: MAC_ONLY.to_string(),
        },
    }
}

fn bum_key(vrf: &str, vni: u32, vtep: &str) -> ExportKey {
    ExportKey {
        vrf: vrf.to_string(),
        key: RouteKey {
            tag: vni,
            mac: Mac::BROADCAST,
            address: format!("{vtep}/32"),
        },
    }
}

impl SwitchHa {
    pub fn new(name: &str) -> SwitchHa {
        SwitchHa {
            name: name.to_string(),
            ..SwitchHa::default()
        }
    }

    pub fn local_seq(&self, vn: &Uuid, mac: &Mac) -> Option<u32> {
        self.local_seq.get(&(*vn, *mac)).copied()
    }

    /// When `tick` should next run for this switch (a shadow expires).
    pub fn wake_at(&self) -> Option<Instant> {
        self.wake_at
    }

    pub fn shadows_waiting(&self) -> usize {
        self.stale_since.len()
    }

    /// Recomputes one (virtual network, MAC) key and updates `exports`.
    pub fn update_mac(
        &mut self,
        input: &HaInput<'_>,
        exports: &mut ExportTable,
        vn: &Uuid,
        mac: Mac,
        interval: Duration,
        now: Instant,
    ) {
        if mac.is_broadcast() {
            return;
        }
        let Some(cfg) = input.device.vns.get(vn) else {
            return;
        };
        let Some(vrf) = cfg.vrf.as_deref() else {
            return;
        };
        let key = mac_key(vrf, cfg.vni, mac);
        let wanted = self.decide(input, &key, vn, mac, interval, now);
        // A shadow depends only on the VNI, the MAC and the switch's VTEP, whose changes
        // recompute the whole switch: one already published stays as it is. (A takeover
        // re-decides the shadows of every MAC of the switches when their live paths go.)
        if wanted == Wanted::Shadow && self.contributed.get(&key) == Some(&false) {
            return;
        }
        let entry = wanted.entry(cfg.vni, mac, input.vtep.as_deref());
        let had = self.contributed.contains_key(&key);
        let has = entry.is_some();
        self.set(exports, key, entry);
        if had != has {
            self.update_broadcast(input, exports);
        }
    }

    /// Records a contribution and passes it to the export table.
    fn set(&mut self, exports: &mut ExportTable, key: ExportKey, entry: Option<EnetEntry>) {
        let is_mac = !key.key.mac.is_broadcast();
        match entry {
            Some(e) => {
                let live = e.local_preference >= preference::LOW;
                let was = match self.contributed.get_mut(&key) {
                    Some(l) => Some(std::mem::replace(l, live)),
                    None => {
                        self.contributed.insert(key.clone(), live);
                        if is_mac {
                            *self
                                .macs_per_vn
                                .entry((key.vrf.clone(), key.key.tag))
                                .or_default() += 1;
                        }
                        None
                    }
                };
                if is_mac {
                    self.count_live(was, Some(live));
                }
                exports.set(&self.name, key, Some(e));
            }
            None => {
                if let Some(was) = self.contributed.remove(&key) {
                    if is_mac {
                        self.count_live(Some(was), None);
                        let vn = (key.vrf.clone(), key.key.tag);
                        if let Some(n) = self.macs_per_vn.get_mut(&vn) {
                            *n -= 1;
                            if *n == 0 {
                                self.macs_per_vn.remove(&vn);
                            }
                        }
                    }
                }
                exports.set(&self.name, key, None);
            }
        }
    }

    fn count_live(&mut self, was: Option<bool>, is: Option<bool>) {
        match (was == Some(true), is == Some(true)) {
            (false, true) => self.live_macs += 1,
            (true, false) => self.live_macs -= 1,
            _ => {}
        }
    }

    /// How many routes this switch contributes.
    pub fn contributed(&self) -> usize {
        self.contributed.len()
    }

    /// MAC routes contributed at live preference (a held switch's local MACs).
    pub fn live_routes(&self) -> usize {
        self.live_macs
    }

    /// What this switch should contribute for one MAC key; keeps the shadow timers.
    fn decide(
        &mut self,
        input: &HaInput<'_>,
        key: &ExportKey,
        vn: &Uuid,
        mac: Mac,
        interval: Duration,
        now: Instant,
    ) -> Wanted {
        let Some(vtep) = input.vtep.as_deref() else {
            return Wanted::Nothing;
        };
        if !input.device.vns.contains_key(vn) {
            return Wanted::Nothing;
        }
        let received = input.routes.get(&key.vrf, &key.key);
        let received_here = received.filter(|r| next_hop_addresses(r).contains(&vtep));
        let local = input.db.and_then(|db| {
            let ls = db.ls_of_vn(vn)?;
            db.first_local(&ls, &mac)
                .map(|r| db.locator_ip(&r.locator).unwrap_or(vtep).to_string())
        });
        if let Some(next_hop) = local {
            self.stale_since.remove(key);
            let sequence = *self
                .local_seq
                .entry((*vn, mac))
                .or_insert_with(|| match received {
                    // The MAC moved here from elsewhere: outbid the old location.
                    Some(r) if !next_hop_addresses(r).contains(&vtep) => {
                        r.effective_sequence().saturating_add(1)
                    }
                    Some(r) => r.effective_sequence().max(1),
                    None => 1,
                });
            return Wanted::Local { next_hop, sequence };
        }
        self.local_seq.remove(&(*vn, mac));
        let Some(r) = received_here else {
            self.stale_since.remove(key);
            return Wanted::Nothing;
        };
        if r.local_preference >= preference::LOW {
            // A live path exists somewhere: shadow it.
            self.stale_since.remove(key);
        } else if input.db.is_some() {
            // Only HA-stale paths left, and we hold the switch: it no
            // longer has the MAC.
            self.stale_since.remove(key);
            return Wanted::Nothing;
        } else {
            let since = *self.stale_since.entry(key.clone()).or_insert(now);
            let due = since + interval;
            if now >= due {
                return Wanted::Nothing;
            }
            self.wake_at = Some(self.wake_at.map_or(due, |w| w.min(due)));
        }
        Wanted::Shadow
    }

    /// Recomputes everything this switch contributes (activity, config or
    /// VTEP changed), including the broadcast routes.
    pub fn recompute_all(
        &mut self,
        input: &HaInput<'_>,
        exports: &mut ExportTable,
        interval: Duration,
        now: Instant,
    ) {
        let before: Vec<ExportKey> = self.contributed.keys().cloned().collect();
        let mut wanted: HashMap<ExportKey, EnetEntry> =
            HashMap::with_capacity_and_hasher(self.contributed.len(), Default::default());
        self.wake_at = None;
        if let Some(vtep) = input.vtep.as_deref() {
            // Routes toward this switch, found through the next-hop index
            // rather than by scanning whole VRFs.
            let mut via: HashMap<&str, Vec<Mac>> = HashMap::default();
            for (vrf, key) in input.routes.keys_via(vtep) {
                via.entry(vrf.as_str()).or_default().push(key.mac);
            }
            for (vn, cfg) in &input.device.vns {
                let Some(vrf) = cfg.vrf.as_deref() else {
                    continue;
                };
                let mut macs: Vec<Mac> = via.get(vrf).cloned().unwrap_or_default();
                if let Some(db) = input.db {
                    if let Some(ls) = db.ls_of_vn(vn) {
                        macs.extend(db.locals_of(&ls).map(|r| r.mac));
                    }
                }
                macs.sort();
                macs.dedup();
                for mac in macs {
                    if mac.is_broadcast() {
                        continue;
                    }
                    let key = mac_key(vrf, cfg.vni, mac);
                    let want = self.decide(input, &key, vn, mac, interval, now);
                    if let Some(e) = want.entry(cfg.vni, mac, Some(vtep)) {
                        wanted.insert(key, e);
                    }
                }
            }
        }
        // Forget state of keys no longer computed.
        self.stale_since.retain(|k, _| wanted.contains_key(k));
        for k in before {
            if !wanted.contains_key(&k) && k.key.mac != Mac::BROADCAST {
                self.set(exports, k, None);
            }
        }
        for (k, e) in wanted {
            self.set(exports, k, Some(e));
        }
        self.update_broadcast(input, exports);
    }

    /// One broadcast route per virtual network: exported while the switch
    /// is held, or while its MACs are shadowed (the backup keeps the
    /// service-node path alive through a switchover, as TF does).
    pub fn update_broadcast(&mut self, input: &HaInput<'_>, exports: &mut ExportTable) {
        let mut wanted: BTreeMap<ExportKey, EnetEntry> = BTreeMap::new();
        if let Some(vtep) = input.vtep.as_deref() {
            for cfg in input.device.vns.values() {
                let Some(vrf) = cfg.vrf.as_deref() else {
                    continue;
                };
                let shadowing = self.macs_per_vn.contains_key(&(vrf.to_string(), cfg.vni));
                if input.db.is_some() || shadowing {
                    wanted.insert(
                        bum_key(vrf, cfg.vni, vtep),
                        EnetEntry::tor_broadcast(cfg.vni, vtep, input.tsn_ip),
                    );
                }
            }
        }
        let stale: Vec<ExportKey> = self
            .contributed
            .keys()
            .filter(|k| k.key.mac.is_broadcast() && !wanted.contains_key(*k))
            .cloned()
            .collect();
        for k in stale {
            self.set(exports, k, None);
        }
        for (k, e) in wanted {
            self.set(exports, k, Some(e));
        }
    }

    /// Shadows whose interval ended are recomputed (and so withdrawn).
    pub fn expired(&self, now: Instant, interval: Duration) -> Vec<ExportKey> {
        self.stale_since
            .iter()
            .filter(|(_, since)| now >= **since + interval)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Drops all contributions (the switch left this agent's config).
    pub fn clear(&mut self, exports: &mut ExportTable) {
        let keys: Vec<ExportKey> = self.contributed.keys().cloned().collect();
        for k in keys {
            self.set(exports, k, None);
        }
        self.stale_since.clear();
        self.local_seq.clear();
        self.live_macs = 0;
    }
}

/// Is this the broadcast MAC string?
pub fn is_broadcast_mac(s: &str) -> bool {
    s.eq_ignore_ascii_case(BROADCAST_MAC)
}
