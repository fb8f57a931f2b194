//! The control node's protocol logic as a pure state machine: sessions, config and VRF
//! subscriptions, publish/collection merging, validation, route reflection through the
//! [`RouteTable`], EndOfRib timing and config changes. Time is passed in; the output is the
//! list of stanzas to write and sessions to close.

use super::fabric::{AgentConfig, Fabric};
use super::route_table::{BestRoute, PathInfo, RouteKey, RouteTable, WireUpdate};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};
use tf_xmpp::config::encode_config_push;
use tf_xmpp::enet::{parse_item_id, EnetEntry, EnetNlri, AF_L2VPN, BROADCAST_MAC, SAFI_ENET};
use tf_xmpp::route::{
    config_node_agent, decode_agent_iq, decode_agent_message, encode_cn_end_of_rib,
    encode_route_retracts, encode_route_updates, wrap_cn_event, write_route_retract_body,
    write_route_update_body, AgentIq, AgentMessage, CollectionChange, VrfSubscribe,
    MAX_ITEMS_PER_MESSAGE, MAX_RETRACTS_PER_MESSAGE,
};
use tf_xmpp::{Element, Stanza, StanzaKind};
use tracing::{debug, info, warn};

pub type PeerId = u64;

/// What the I/O layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send { peer: PeerId, data: String },
    Close { peer: PeerId, reason: String },
}

/// Timing knobs of the pure logic.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// Send EoR once a session has been quiet (no subscribe or route) this long (TF: ~6 s).
    pub eor_quiet: Duration,
    /// Send EoR at the latest this long after the session came up (TF: 300 s).
    pub eor_max: Duration,
}

impl Default for CoreSettings {
    fn default() -> Self {
        CoreSettings {
            eor_quiet: Duration::from_secs(6),
            eor_max: Duration::from_secs(300),
        }
    }
}

/// Counters, all monotonic.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    pub sessions_established: u64,
    pub sessions_refused: u64,
    pub sessions_closed: u64,
    pub protocol_violations: u64,
    pub config_subscribes: u64,
    pub duplicate_config_subscribes: u64,
    pub config_iqs_sent: u64,
    pub vrf_subscribes: u64,
    pub vrf_unsubscribes: u64,
    pub routes_added: u64,
    pub routes_withdrawn: u64,
    pub routes_rejected: u64,
    pub withdraws_ignored: u64,
    pub collections_discarded: u64,
    pub items_sent: u64,
    pub retracts_sent: u64,
    pub route_messages_sent: u64,
    pub eor_sent: u64,
    pub eor_received: u64,
    pub stanzas_ignored: u64,
}

#[derive(Debug, Clone)]
struct VrfSub {
    instance_id: u32,
    no_ribout: bool,
}

#[derive(Debug)]
struct Peer {
    name: String,
    remote_ip: IpAddr,
    since: SystemTime,
    established_at: Instant,
    last_activity: Instant,
    /// The virtual-router name subscribed to, and the config last pushed.
    config_sub: Option<String>,
    config_pushed: AgentConfig,
    vrfs: BTreeMap<String, VrfSub>,
    pending_publish: Option<(String, Option<Box<EnetEntry>>)>,
    eor_sent: bool,
    eor_received: bool,
    routes_published: u64,
    stanzas_received: u64,
}

/// One connected agent, for inspection.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AgentInfo {
    pub name: String,
    pub remote_ip: String,
    /// Seconds since the UNIX epoch when the session became Established.
    pub connected_since_unix: u64,
    pub config_subscription: Option<String>,
    pub config_objects_pushed: usize,
    /// (VRF, known to the fabric)
    pub vrfs: Vec<(String, bool)>,
    pub paths: usize,
    pub routes_published: u64,
    pub stanzas_received: u64,
    pub eor_sent: bool,
    pub eor_received: bool,
}

/// One input from an agent's session: a stanza as an element tree, or a route iq already
/// decoded on the session's fast path (`tf_xmpp::fast`).
#[derive(Debug)]
pub enum AgentInput {
    Stanza(Element),
    Iq(AgentIq),
}

/// The control node's state.
#[derive(Debug)]
pub struct Core {
    fabric: Fabric,
    /// VRF name → the FQ name of its virtual network, for VRFs the fabric knows (cached from
    /// the fabric so that reflecting a route does not search it).
    vrf_vn: HashMap<String, String>,
    settings: CoreSettings,
    peers: BTreeMap<PeerId, Peer>,
    table: RouteTable,
    counters: Counters,
    /// Wire updates gathered while a batch of inputs is handled, per VRF in arrival order;
    /// sent by [`Core::flush`].
    pending: BTreeMap<String, Vec<WireUpdate>>,
}

/// The publish-node prefix of EVPN routes.
const ENET_NODE_PREFIX: &str = "25/242/";

/// What `Fabric::vn_of_vrf` finds (the first VN with that VRF), by VRF name.
fn vrf_vn_index(fabric: &Fabric) -> HashMap<String, String> {
    let mut index = HashMap::new();
    for vn in &fabric.virtual_networks {
        index.entry(vn.vrf_name()).or_insert_with(|| vn.fq_name());
    }
    index
}

/// Why a route add is rejected (checklist #24).
fn validate_add(node: &str, entry: &EnetEntry) -> Result<(), String> {
    debug_assert_eq!(ENET_NODE_PREFIX, format!("{AF_L2VPN}/{SAFI_ENET}/"));
    let fam = ENET_NODE_PREFIX;
    if !node.starts_with(fam) {
        return Err(format!("publish node {node:?} is not {fam}..."));
    }
    if entry.nlri.af != AF_L2VPN || entry.nlri.safi != SAFI_ENET {
        return Err(format!(
            "nlri af/safi {}/{} is not 25/242",
            entry.nlri.af, entry.nlri.safi
        ));
    }
    if entry.next_hops.len() != 1 {
        return Err(format!(
            "{} next hops (exactly one required)",
            entry.next_hops.len()
        ));
    }
    let nh = &entry.next_hops[0];
    if nh.address.is_empty() || nh.address == "0.0.0.0" {
        return Err("next-hop address is empty or 0.0.0.0".into());
    }
    let Some((ip, plen)) = entry.nlri.address.split_once('/') else {
        return Err(format!("nlri address {:?} has no '/'", entry.nlri.address));
    };
    if entry.nlri.mac.is_empty() {
        return Err("nlri has no mac".into());
    }
    if !entry.nlri.is_multicast() && plen != "32" && !(ip == "0.0.0.0" && plen == "0") {
        return Err(format!("MAC route prefix length {plen} is not 32"));
    }
    Ok(())
}

/// The route key of a withdraw: from the entry, or from the publish node `25/242/<mac>,<ip>/<len>`.
fn withdraw_key(node: &str, entry: Option<&EnetEntry>) -> Option<RouteKey> {
    if let Some(e) = entry {
        return Some(RouteKey::from_nlri(&e.nlri));
    }
    let rest = node.strip_prefix(ENET_NODE_PREFIX)?;
    parse_item_id(rest).ok().map(|n| RouteKey::from_nlri(&n))
}

/// The updates of a VRF with, for a key that changed more than once, only its last update
/// (each update is a full replacement, §5.1), in the order of those last updates.
fn last_per_key(updates: Vec<WireUpdate>) -> Vec<WireUpdate> {
    if updates.len() < 2 {
        return updates;
    }
    let mut keep = vec![false; updates.len()];
    let mut seen: HashSet<(u32, &str, &str)> = HashSet::with_capacity(updates.len());
    for (i, u) in updates.iter().enumerate().rev() {
        let key = match u {
            WireUpdate::Advertise(e) => (e.nlri.ethernet_tag, &*e.nlri.mac, &*e.nlri.address),
            WireUpdate::Withdraw(k) => (k.ethernet_tag, &*k.mac, &*k.address),
        };
        keep[i] = seen.insert(key);
    }
    drop(seen);
    updates
        .into_iter()
        .zip(keep)
        .filter_map(|(u, k)| k.then_some(u))
        .collect()
}

impl Core {
    pub fn new(fabric: Fabric, settings: CoreSettings) -> Self {
        Core {
            vrf_vn: vrf_vn_index(&fabric),
            fabric,
            settings,
            peers: BTreeMap::new(),
            table: RouteTable::new(),
            counters: Counters::default(),
            pending: BTreeMap::new(),
        }
    }

    pub fn fabric(&self) -> &Fabric {
        &self.fabric
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A connection that never became a session (bad header, TLS failure, open timer).
    pub fn note_refused(&mut self) {
        self.counters.sessions_refused += 1;
    }

    fn vrf_known(&self, vrf: &str) -> bool {
        self.vrf_vn.contains_key(vrf)
    }

    /// Route distinguisher group: per agent for broadcast keys (TF: `<agent-ip>:<instance-id>`;
    /// we add the agent name because testbeds run every agent on one loopback address).
    fn rd(peer: &Peer, broadcast: bool, vrf: &str) -> String {
        if broadcast {
            let id = peer.vrfs.get(vrf).map(|s| s.instance_id).unwrap_or(0);
            format!("{}@{}:{}", peer.name, peer.remote_ip, id)
        } else {
            String::new()
        }
    }

    /// A new Established session. Refused when an agent of that name is already connected (§1.6).
    pub fn connect(
        &mut self,
        id: PeerId,
        name: &str,
        remote_ip: IpAddr,
        now: Instant,
    ) -> Result<(), String> {
        if let Some(p) = self.peers.values().find(|p| p.name == name) {
            self.counters.sessions_refused += 1;
            return Err(format!(
                "agent {name:?} already has a session from {}",
                p.remote_ip
            ));
        }
        if let Some(problem) = tf_xmpp::stanza::agent_name_problem(name) {
            warn!(agent = name, "{problem}");
        }
        self.counters.sessions_established += 1;
        self.peers.insert(
            id,
            Peer {
                name: name.to_string(),
                remote_ip,
                since: SystemTime::now(),
                established_at: now,
                last_activity: now,
                config_sub: None,
                config_pushed: AgentConfig::default(),
                vrfs: BTreeMap::new(),
                pending_publish: None,
                eor_sent: false,
                eor_received: false,
                routes_published: 0,
                stanzas_received: 0,
            },
        );
        Ok(())
    }

    /// The session ended (TCP close, hold timer, error): with GR off, every path of the agent is
    /// deleted and the result advertised to the others (§6.3).
    pub fn disconnect(&mut self, id: PeerId) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(peer) = self.peers.remove(&id) else {
            return out;
        };
        self.counters.sessions_closed += 1;
        let updates = self.table.remove_agent(&peer.name, None);
        info!(agent = %peer.name, paths_withdrawn = updates.len(), "agent session removed");
        for (vrf, u) in updates {
            self.defer(&vrf, u);
        }
        self.flush(&mut out);
        out
    }

    fn violation(&mut self, id: PeerId, reason: String, out: &mut Vec<Output>) {
        // What was reflected before the offending stanza goes out first.
        self.flush(out);
        self.counters.protocol_violations += 1;
        let name = self
            .peers
            .get(&id)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        warn!(agent = %name, %reason, "closing session: protocol violation");
        out.extend(self.disconnect(id));
        out.push(Output::Close { peer: id, reason });
    }

    /// A stanza from an agent.
    pub fn handle_stanza(&mut self, id: PeerId, element: Element, now: Instant) -> Vec<Output> {
        self.handle_batch(id, [AgentInput::Stanza(element)], now)
    }

    /// A route iq from an agent, decoded on the session's fast path: the same as
    /// [`Core::handle_stanza`] with the `iq` it was decoded from.
    pub fn handle_agent_iq(&mut self, id: PeerId, iq: AgentIq, now: Instant) -> Vec<Output> {
        self.handle_batch(id, [AgentInput::Iq(iq)], now)
    }

    /// Inputs that arrived together from one agent, handled in order as if one by one, except
    /// that the reflections of consecutive route changes go out together: per VRF, adds in
    /// messages of up to 32 items and withdrawals of up to 256 retracts (XMPP.md §5.1), with
    /// only the last update of a key that changed several times. Anything else that sends
    /// (a subscribe's table, a config push, a violation) first sends what was gathered, so
    /// every agent sees the same order of events per route as without batching.
    pub fn handle_batch(
        &mut self,
        id: PeerId,
        inputs: impl IntoIterator<Item = AgentInput>,
        now: Instant,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        for input in inputs {
            match input {
                AgentInput::Stanza(el) => self.stanza(id, el, now, &mut out),
                AgentInput::Iq(iq) => {
                    let Some(peer) = self.peers.get_mut(&id) else {
                        continue;
                    };
                    peer.stanzas_received += 1;
                    self.handle_iq(id, iq, now, &mut out);
                }
            }
        }
        self.flush(&mut out);
        out
    }

    fn stanza(&mut self, id: PeerId, element: Element, now: Instant, out: &mut Vec<Output>) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.stanzas_received += 1;
        let Some(stanza) = Stanza::from_element(element) else {
            self.violation(
                id,
                "top-level element is neither iq nor message".into(),
                out,
            );
            return;
        };
        match stanza.kind {
            StanzaKind::Message => match decode_agent_message(&stanza) {
                AgentMessage::EndOfRib => {
                    peer.eor_received = true;
                    self.counters.eor_received += 1;
                }
                AgentMessage::Other => self.counters.stanzas_ignored += 1,
            },
            StanzaKind::Iq if stanza.is_ignorable_iq() => self.counters.stanzas_ignored += 1,
            StanzaKind::Iq => match decode_agent_iq(&stanza) {
                Ok(iq) => self.handle_iq(id, iq, now, out),
                Err(e) => self.violation(id, format!("malformed iq: {e}"), out),
            },
        }
    }

    fn handle_iq(&mut self, id: PeerId, iq: AgentIq, now: Instant, out: &mut Vec<Output>) {
        // Subscriptions and config change who gets what: send what was gathered first.
        if !matches!(iq, AgentIq::Publish { .. } | AgentIq::Collection { .. }) {
            self.flush(out);
        }
        // A publish must be immediately followed by its collection (§4.2).
        if !matches!(iq, AgentIq::Collection { .. }) {
            if let Some(p) = self.peers.get_mut(&id) {
                if p.pending_publish.take().is_some() {
                    self.counters.collections_discarded += 1;
                }
            }
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.last_activity = now;
        match iq {
            AgentIq::ConfigSubscribe { node } => {
                let Some(vr) = config_node_agent(&node).map(str::to_string) else {
                    return self.violation(
                        id,
                        format!("config subscribe to bad node {node:?}"),
                        out,
                    );
                };
                if peer.config_sub.is_some() {
                    self.counters.duplicate_config_subscribes += 1;
                    return;
                }
                self.counters.config_subscribes += 1;
                peer.config_sub = Some(vr);
                self.push_config(id, out);
            }
            AgentIq::VrfSubscribe(VrfSubscribe {
                vrf,
                instance_id,
                no_ribout,
            }) => {
                if peer.vrfs.contains_key(&vrf) {
                    return self.violation(id, format!("duplicate subscribe to VRF {vrf:?}"), out);
                }
                self.counters.vrf_subscribes += 1;
                peer.vrfs.insert(
                    vrf.clone(),
                    VrfSub {
                        instance_id: instance_id.unwrap_or(0),
                        no_ribout,
                    },
                );
                let name = peer.name.clone();
                if !self.vrf_known(&vrf) {
                    debug!(agent = %name, %vrf, "subscribe to unknown VRF held as pending");
                } else if !no_ribout {
                    let entries = self.decorated(&vrf, self.table.advertised(&vrf));
                    self.send_updates(id, &name, &vrf, &entries, out);
                }
            }
            AgentIq::VrfUnsubscribe { vrf } => {
                if peer.vrfs.remove(&vrf).is_none() {
                    return self.violation(
                        id,
                        format!("unsubscribe from VRF {vrf:?} without subscribe"),
                        out,
                    );
                }
                self.counters.vrf_unsubscribes += 1;
                let name = peer.name.clone();
                let updates = self.table.remove_agent(&name, Some(&vrf));
                for (vrf, u) in updates {
                    self.defer(&vrf, u);
                }
                self.flush(out);
            }
            AgentIq::Publish { node, entry } => {
                peer.pending_publish = Some((node, entry));
            }
            AgentIq::Collection { vrf, change } => {
                let pending = peer.pending_publish.take();
                match (pending, change) {
                    (Some((node, None)), None) if node.is_empty() && vrf.is_empty() => {
                        peer.eor_received = true;
                        self.counters.eor_received += 1;
                    }
                    (Some((node, entry)), Some(CollectionChange::Associate(n))) if n == node => {
                        self.route_add(id, &vrf, &node, entry, out)
                    }
                    (Some((node, entry)), Some(CollectionChange::Dissociate(n))) if n == node => {
                        if let Some(u) = self.route_withdraw(id, &vrf, &node, entry.as_deref()) {
                            self.defer(&vrf, u);
                        }
                    }
                    _ => self.counters.collections_discarded += 1,
                }
            }
        }
    }

    fn route_add(
        &mut self,
        id: PeerId,
        vrf: &str,
        node: &str,
        entry: Option<Box<EnetEntry>>,
        out: &mut Vec<Output>,
    ) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        if !peer.vrfs.contains_key(vrf) {
            return self.violation(id, format!("route add for unsubscribed VRF {vrf:?}"), out);
        }
        let Some(entry) = entry else {
            self.counters.routes_rejected += 1;
            warn!(agent = %peer.name, vrf, node, "route add rejected: publish has no item/entry");
            return;
        };
        if let Err(why) = validate_add(node, &entry) {
            self.counters.routes_rejected += 1;
            warn!(agent = %peer.name, vrf, node, %why, "route add rejected");
            return;
        }
        let mut entry = *entry;
        entry.nlri.mac.make_ascii_lowercase();
        let rd = Self::rd(peer, entry.nlri.mac == BROADCAST_MAC, vrf);
        self.counters.routes_added += 1;
        let update = self.table.add_path(vrf, &rd, &peer.name, entry);
        if let Some(p) = self.peers.get_mut(&id) {
            p.routes_published += 1;
        }
        if let Some(u) = update {
            self.defer(vrf, u);
        }
    }

    fn route_withdraw(
        &mut self,
        id: PeerId,
        vrf: &str,
        node: &str,
        entry: Option<&EnetEntry>,
    ) -> Option<WireUpdate> {
        let peer = self.peers.get(&id)?;
        let Some(key) = withdraw_key(node, entry) else {
            self.counters.withdraws_ignored += 1;
            return None;
        };
        if !peer.vrfs.contains_key(vrf) {
            self.counters.withdraws_ignored += 1;
            return None;
        }
        let rd = Self::rd(peer, key.is_broadcast(), vrf);
        self.counters.routes_withdrawn += 1;
        self.table.remove_path(vrf, &rd, &peer.name, &key)
    }

    /// Fills `virtual-network` (the VN FQ name) in what is sent, as a TF CN does.
    fn decorated(&self, vrf: &str, mut entries: Vec<EnetEntry>) -> Vec<EnetEntry> {
        if let Some(fq) = self.vrf_vn.get(vrf) {
            for e in &mut entries {
                e.virtual_network.clone_from(fq);
            }
        }
        entries
    }

    fn send_updates(
        &mut self,
        id: PeerId,
        name: &str,
        vrf: &str,
        entries: &[EnetEntry],
        out: &mut Vec<Output>,
    ) {
        if entries.is_empty() {
            return;
        }
        for m in encode_route_updates(name, vrf, entries) {
            self.counters.route_messages_sent += 1;
            out.push(Output::Send { peer: id, data: m });
        }
        self.counters.items_sent += entries.len() as u64;
    }

    fn send_retracts(
        &mut self,
        id: PeerId,
        name: &str,
        vrf: &str,
        keys: &[RouteKey],
        out: &mut Vec<Output>,
    ) {
        if keys.is_empty() {
            return;
        }
        let nlris: Vec<_> = keys.iter().map(RouteKey::to_nlri).collect();
        for m in encode_route_retracts(name, vrf, &nlris) {
            self.counters.route_messages_sent += 1;
            out.push(Output::Send { peer: id, data: m });
        }
        self.counters.retracts_sent += keys.len() as u64;
    }

    /// Gathers a wire update for the VRF's subscribers; [`Core::flush`] sends it.
    fn defer(&mut self, vrf: &str, u: WireUpdate) {
        match self.pending.get_mut(vrf) {
            Some(list) => list.push(u),
            None => {
                self.pending.insert(vrf.to_string(), vec![u]);
            }
        }
    }

    /// Sends the gathered wire updates to every agent subscribed to their VRF (known VRF,
    /// ribout wanted), the originator included (§5.1): per VRF the adds, then the
    /// withdrawals, of each key only its last update. Each message body is written once and
    /// wrapped per agent.
    fn flush(&mut self, out: &mut Vec<Output>) {
        for (vrf, updates) in std::mem::take(&mut self.pending) {
            let Some(fq) = self.vrf_vn.get(&vrf) else {
                continue;
            };
            let mut adds: Vec<EnetEntry> = Vec::new();
            let mut withdraws: Vec<EnetNlri> = Vec::new();
            for u in last_per_key(updates) {
                match u {
                    WireUpdate::Advertise(mut e) => {
                        // Fills `virtual-network` (the VN FQ name), as a TF CN does.
                        e.virtual_network.clone_from(fq);
                        adds.push(*e);
                    }
                    WireUpdate::Withdraw(k) => withdraws.push(k.to_nlri()),
                }
            }
            let targets: Vec<(PeerId, &str)> = self
                .peers
                .iter()
                .filter(|(_, p)| p.vrfs.get(&vrf).is_some_and(|s| !s.no_ribout))
                .map(|(id, p)| (*id, p.name.as_str()))
                .collect();
            if targets.is_empty() {
                continue;
            }
            let mut bodies = Vec::new();
            for chunk in adds.chunks(MAX_ITEMS_PER_MESSAGE) {
                let mut body = String::with_capacity(64 + vrf.len() + chunk.len() * 1200);
                write_route_update_body(&mut body, &vrf, chunk);
                bodies.push(body);
            }
            for chunk in withdraws.chunks(MAX_RETRACTS_PER_MESSAGE) {
                let mut body = String::with_capacity(64 + vrf.len() + chunk.len() * 64);
                write_route_retract_body(&mut body, &vrf, chunk);
                bodies.push(body);
            }
            for (id, name) in &targets {
                for b in &bodies {
                    out.push(Output::Send {
                        peer: *id,
                        data: wrap_cn_event(name, b),
                    });
                }
            }
            let n = targets.len() as u64;
            self.counters.route_messages_sent += bodies.len() as u64 * n;
            self.counters.items_sent += adds.len() as u64 * n;
            self.counters.retracts_sent += withdraws.len() as u64 * n;
        }
    }

    /// Pushes the difference between the agent's current config and what it has.
    fn push_config(&mut self, id: PeerId, out: &mut Vec<Output>) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(vr) = &peer.config_sub else { return };
        let Some(now) = self.fabric.agent_config(vr) else {
            if peer.config_pushed.object_count() > 0 {
                // The virtual-router disappeared: delete everything the agent has.
                let sections = AgentConfig::default().diff_from(&peer.config_pushed);
                peer.config_pushed = AgentConfig::default();
                for iq in encode_config_push(&peer.name, &sections) {
                    self.counters.config_iqs_sent += 1;
                    out.push(Output::Send { peer: id, data: iq });
                }
            } else {
                debug!(agent = %peer.name, vr, "config subscribe to unknown virtual-router held as pending");
            }
            return;
        };
        let sections = now.diff_from(&peer.config_pushed);
        for iq in encode_config_push(&peer.name, &sections) {
            self.counters.config_iqs_sent += 1;
            out.push(Output::Send { peer: id, data: iq });
        }
        peer.config_pushed = now;
    }

    /// Replaces the fabric: pushes config changes to subscribed agents, activates pending VRF
    /// subscriptions whose routing instance now exists, and withdraws routes of VRFs that
    /// disappeared (their subscriptions go back to pending).
    pub fn set_fabric(&mut self, fabric: Fabric) -> Vec<Output> {
        let mut out = Vec::new();
        self.fabric = fabric;
        let old_vrf_vn = std::mem::replace(&mut self.vrf_vn, vrf_vn_index(&self.fabric));
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in &ids {
            self.push_config(*id, &mut out);
        }
        for id in ids {
            let Some(peer) = self.peers.get(&id) else {
                continue;
            };
            let name = peer.name.clone();
            let subs: Vec<(String, bool)> = peer
                .vrfs
                .iter()
                .map(|(v, s)| (v.clone(), s.no_ribout))
                .collect();
            for (vrf, no_ribout) in subs {
                if no_ribout {
                    continue;
                }
                let was = old_vrf_vn.contains_key(&vrf);
                let is = self.vrf_known(&vrf);
                if !was && is {
                    let entries = self.decorated(&vrf, self.table.advertised(&vrf));
                    self.send_updates(id, &name, &vrf, &entries, &mut out);
                } else if was && !is {
                    let keys = self.table.advertised_keys(&vrf);
                    self.send_retracts(id, &name, &vrf, &keys, &mut out);
                }
            }
        }
        out
    }

    /// Timers: EndOfRib once per session after it has been quiet (§5.2).
    pub fn poll(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            if p.eor_sent {
                continue;
            }
            let quiet = now.saturating_duration_since(p.last_activity) >= self.settings.eor_quiet;
            let late = now.saturating_duration_since(p.established_at) >= self.settings.eor_max;
            if quiet || late {
                p.eor_sent = true;
                self.counters.eor_sent += 1;
                out.push(Output::Send {
                    peer: *id,
                    data: encode_cn_end_of_rib(&p.name),
                });
            }
        }
        out
    }

    /// Closes an agent's session on purpose (fault injection).
    pub fn kick(&mut self, name: &str, reason: &str) -> Vec<Output> {
        let Some(id) = self
            .peers
            .iter()
            .find(|(_, p)| p.name == name)
            .map(|(id, _)| *id)
        else {
            return Vec::new();
        };
        let mut out = self.disconnect(id);
        out.push(Output::Close {
            peer: id,
            reason: reason.to_string(),
        });
        out
    }

    // ---- inspection ----

    pub fn agents(&self) -> Vec<AgentInfo> {
        let paths = self.table.paths(None);
        self.peers
            .values()
            .map(|p| AgentInfo {
                name: p.name.clone(),
                remote_ip: p.remote_ip.to_string(),
                connected_since_unix: p
                    .since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                config_subscription: p.config_sub.clone(),
                config_objects_pushed: p.config_pushed.object_count(),
                vrfs: p
                    .vrfs
                    .keys()
                    .map(|v| (v.clone(), self.vrf_known(v)))
                    .collect(),
                paths: paths.iter().filter(|x| x.agent == p.name).count(),
                routes_published: p.routes_published,
                stanzas_received: p.stanzas_received,
                eor_sent: p.eor_sent,
                eor_received: p.eor_received,
            })
            .collect()
    }

    pub fn paths(&self, vrf: Option<&str>) -> Vec<PathInfo> {
        self.table.paths(vrf)
    }

    pub fn best_routes(&self, vrf: Option<&str>) -> Vec<BestRoute> {
        self.table.best_routes(vrf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tf_xmpp::enet::EnetEntry;
    use tf_xmpp::route::{
        decode_cn_message, encode_config_subscribe, encode_route_publish, encode_vrf_subscribe,
        CnMessage,
    };

    const FABRIC: &str = r#"
[global]
vxlan_mode = "configured"
[[virtual_router]]
name = "agent-a"
[[virtual_router]]
name = "agent-b"
[[virtual_network]]
name = "blue"
project = "p"
network_id = 5
vni = 5001
[[physical_router]]
name = "qfx-1"
management_ip = "192.0.2.1"
dataplane_ip = "192.0.2.21"
tor_agents = ["agent-a", "agent-b"]
interfaces = ["xe-0/0/3"]
[[binding]]
physical_router = "qfx-1"
interface = "xe-0/0/3"
vlan = 20
virtual_network = "blue"
"#;
    const VRF: &str = "default-domain:p:blue:blue";

    fn core() -> Core {
        Core::new(Fabric::from_toml(FABRIC).unwrap(), CoreSettings::default())
    }

    fn el(s: &str) -> Vec<Element> {
        let mut f = tf_xmpp::Framer::default();
        f.push(s.as_bytes());
        let mut v = Vec::new();
        while let Some(fr) = f.next_frame().unwrap() {
            if let tf_xmpp::Frame::Stanza(e) = fr {
                v.push(e);
            }
        }
        v
    }

    fn feed(c: &mut Core, id: PeerId, s: &str, now: Instant) -> Vec<Output> {
        el(s)
            .into_iter()
            .flat_map(|e| c.handle_stanza(id, e, now))
            .collect()
    }

    fn sent_to(out: &[Output], id: PeerId) -> Vec<CnMessage> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { peer, data } if *peer == id => el(data).into_iter().next(),
                _ => None,
            })
            .filter_map(|e| {
                let st = Stanza::from_element(e)?;
                (st.kind == StanzaKind::Message).then(|| decode_cn_message(&st).unwrap())
            })
            .collect()
    }

    fn closed(out: &[Output], id: PeerId) -> bool {
        out.iter()
            .any(|o| matches!(o, Output::Close { peer, .. } if *peer == id))
    }

    fn up(c: &mut Core, id: PeerId, name: &str, t: Instant) {
        c.connect(id, name, "127.0.0.1".parse().unwrap(), t)
            .unwrap();
        feed(c, id, &encode_vrf_subscribe(name, VRF, 5, 1), t);
    }

    #[test]
    fn config_subscribe_pushes_config_and_duplicate_is_ignored() {
        let mut c = core();
        let t = Instant::now();
        c.connect(1, "agent-a", "127.0.0.1".parse().unwrap(), t)
            .unwrap();
        let out = feed(&mut c, 1, &encode_config_subscribe("agent-a"), t);
        assert!(!out.is_empty());
        assert!(out.iter().all(|o| matches!(o, Output::Send { data, .. } if data.starts_with("<?xml version=\"1.0\"?><iq type=\"set\""))));
        let again = feed(&mut c, 1, &encode_config_subscribe("agent-a"), t);
        assert!(again.is_empty());
        assert_eq!(c.counters().duplicate_config_subscribes, 1);
        // A config change pushes only the difference.
        let mut f = c.fabric().clone();
        f.set_vni("blue", 6001).unwrap();
        let out = c.set_fabric(f);
        assert_eq!(out.len(), 1);
        let Output::Send { data, .. } = &out[0] else {
            panic!()
        };
        assert!(data.contains("<vxlan-network-identifier>6001</vxlan-network-identifier>"));
    }

    #[test]
    fn routes_are_reflected_to_all_subscribers_including_the_originator() {
        let mut c = core();
        let t = Instant::now();
        up(&mut c, 1, "agent-a", t);
        up(&mut c, 2, "agent-b", t);
        let e = EnetEntry::tor_mac(5001, "02:aa:bb:00:00:01", "192.0.2.21", 1);
        let out = feed(
            &mut c,
            1,
            &encode_route_publish("agent-a", VRF, &e, true, 1),
            t,
        );
        for id in [1, 2] {
            let msgs = sent_to(&out, id);
            assert_eq!(msgs.len(), 1, "peer {id}");
            let CnMessage::RouteUpdate { vrf, items } = &msgs[0] else {
                panic!()
            };
            assert_eq!(vrf, VRF);
            assert_eq!(items[0].entry.virtual_network, "default-domain:p:blue");
        }
        // The backup's HA-stale copy changes nothing on the wire.
        let mut stale = e.clone();
        stale.local_preference = 1;
        stale.sequence_number = 0;
        assert!(feed(
            &mut c,
            2,
            &encode_route_publish("agent-b", VRF, &stale, true, 2),
            t
        )
        .is_empty());
        // Session loss of the active agent: the stale path is advertised, not a withdraw.
        let out = c.disconnect(1);
        let msgs = sent_to(&out, 2);
        let CnMessage::RouteUpdate { items, .. } = &msgs[0] else {
            panic!("{msgs:?}")
        };
        assert_eq!(items[0].entry.local_preference, 1);
        // And a withdraw by the last exporter retracts it.
        let out = feed(
            &mut c,
            2,
            &encode_route_publish("agent-b", VRF, &stale, false, 3),
            t,
        );
        assert!(
            matches!(&sent_to(&out, 2)[0], CnMessage::RouteRetract { routes, .. } if routes[0].key.mac == "02:aa:bb:00:00:01")
        );
    }

    #[test]
    fn protocol_violations_close_the_session() {
        let t = Instant::now();
        let e = EnetEntry::tor_mac(5001, "02:aa:bb:00:00:01", "192.0.2.21", 1);
        // Route for an unsubscribed VRF.
        let mut c = core();
        c.connect(1, "agent-a", "127.0.0.1".parse().unwrap(), t)
            .unwrap();
        assert!(closed(
            &feed(
                &mut c,
                1,
                &encode_route_publish("agent-a", VRF, &e, true, 1),
                t
            ),
            1
        ));
        // Duplicate subscribe.
        let mut c = core();
        up(&mut c, 1, "agent-a", t);
        assert!(closed(
            &feed(&mut c, 1, &encode_vrf_subscribe("agent-a", VRF, 5, 2), t),
            1
        ));
        // Unsubscribe without subscribe, and a route after an unsubscribe.
        let mut c = core();
        c.connect(1, "agent-a", "127.0.0.1".parse().unwrap(), t)
            .unwrap();
        assert!(closed(
            &feed(
                &mut c,
                1,
                &tf_xmpp::route::encode_vrf_unsubscribe("agent-a", VRF, 5, 1),
                t
            ),
            1
        ));
        let mut c = core();
        up(&mut c, 1, "agent-a", t);
        feed(
            &mut c,
            1,
            &tf_xmpp::route::encode_vrf_unsubscribe("agent-a", VRF, 5, 1),
            t,
        );
        assert!(closed(
            &feed(
                &mut c,
                1,
                &encode_route_publish("agent-a", VRF, &e, true, 1),
                t
            ),
            1
        ));
        assert_eq!(c.counters().protocol_violations, 1);
        assert!(c.agents().is_empty());
    }

    #[test]
    fn invalid_routes_are_rejected_without_closing() {
        let t = Instant::now();
        let mut c = core();
        up(&mut c, 1, "agent-a", t);
        let good = EnetEntry::tor_mac(5001, "02:aa:bb:00:00:01", "192.0.2.21", 1);
        let mut bads = Vec::new();
        let mut b = good.clone();
        b.next_hops.clear();
        bads.push(b);
        let mut b = good.clone();
        b.next_hops.push(b.next_hops[0].clone());
        bads.push(b);
        let mut b = good.clone();
        b.nlri.af = 1;
        bads.push(b);
        let mut b = good.clone();
        b.nlri.safi = 241;
        bads.push(b);
        let mut b = good.clone();
        b.nlri.address = "0.0.0.0".into();
        bads.push(b);
        let mut b = good.clone();
        b.nlri.address = "10.0.0.0/24".into();
        bads.push(b);
        for (i, b) in bads.iter().enumerate() {
            let out = feed(
                &mut c,
                1,
                &encode_route_publish("agent-a", VRF, b, true, i as u64),
                t,
            );
            assert!(out.is_empty(), "{i}: {out:?}");
        }
        assert_eq!(c.counters().routes_rejected, bads.len() as u64);
        assert_eq!(c.counters().protocol_violations, 0);
        assert!(!feed(
            &mut c,
            1,
            &encode_route_publish("agent-a", VRF, &good, true, 99),
            t
        )
        .is_empty());
    }

    #[test]
    fn collection_must_match_the_publish() {
        let t = Instant::now();
        let mut c = core();
        up(&mut c, 1, "agent-a", t);
        let e = EnetEntry::tor_mac(5001, "02:aa:bb:00:00:01", "192.0.2.21", 1);
        let pair = encode_route_publish("agent-a", VRF, &e, true, 1);
        let mangled = pair.replacen(
            "<associate node=\"25/242/02:aa",
            "<associate node=\"25/242/02:ff",
            1,
        );
        assert!(feed(&mut c, 1, &mangled, t).is_empty());
        let split = pair.find("</iq>").unwrap() + 5;
        assert!(feed(&mut c, 1, &pair[split..], t).is_empty());
        assert_eq!(c.counters().collections_discarded, 2);
    }

    #[test]
    fn pending_vrf_becomes_active_when_the_network_is_added() {
        let t = Instant::now();
        let mut f = Fabric::from_toml(FABRIC).unwrap();
        f.remove_virtual_network("blue").unwrap();
        let mut c = Core::new(f, CoreSettings::default());
        up(&mut c, 1, "agent-a", t);
        let e = EnetEntry::tor_mac(5001, "02:aa:bb:00:00:01", "192.0.2.21", 1);
        // Routes into a pending VRF are kept but not sent.
        assert!(feed(
            &mut c,
            1,
            &encode_route_publish("agent-a", VRF, &e, true, 1),
            t
        )
        .is_empty());
        assert_eq!(c.agents()[0].vrfs, vec![(VRF.to_string(), false)]);
        let out = c.set_fabric(Fabric::from_toml(FABRIC).unwrap());
        assert!(
            matches!(&sent_to(&out, 1)[0], CnMessage::RouteUpdate { items, .. } if items.len() == 1)
        );
        // Removing the VN again retracts what was advertised.
        let mut f = c.fabric().clone();
        f.remove_virtual_network("blue").unwrap();
        let out = c.set_fabric(f);
        assert!(sent_to(&out, 1)
            .iter()
            .any(|m| matches!(m, CnMessage::RouteRetract { .. })));
    }

    #[test]
    fn end_of_rib_after_quiet_period_and_both_incoming_forms() {
        let t = Instant::now();
        let mut c = core();
        up(&mut c, 1, "agent-a", t);
        assert!(c.poll(t + Duration::from_secs(5)).is_empty());
        let out = c.poll(t + Duration::from_secs(6));
        assert_eq!(sent_to(&out, 1), vec![CnMessage::EndOfRib]);
        assert!(c.poll(t + Duration::from_secs(60)).is_empty());
        feed(
            &mut c,
            1,
            &tf_xmpp::route::encode_agent_end_of_rib("agent-a"),
            t,
        );
        assert!(c.agents()[0].eor_received);
        up(&mut c, 2, "agent-b", t);
        feed(
            &mut c,
            2,
            &tf_xmpp::route::encode_agent_end_of_rib_message("agent-b"),
            t,
        );
        assert_eq!(c.counters().eor_received, 2);
    }

    #[test]
    fn duplicate_agent_names_are_refused() {
        let t = Instant::now();
        let mut c = core();
        c.connect(1, "agent-a", "127.0.0.1".parse().unwrap(), t)
            .unwrap();
        assert!(c
            .connect(2, "agent-a", "127.0.0.2".parse().unwrap(), t)
            .is_err());
        assert_eq!(c.counters().sessions_refused, 1);
    }

    #[test]
    fn non_set_iqs_and_unknown_messages_are_ignored() {
        let t = Instant::now();
        let mut c = core();
        up(&mut c, 1, "agent-a", t);
        let out = feed(&mut c, 1, "<iq type='get' to='x/bgp-peer'><junk/></iq><iq type='result'></iq><message to='x/bgp-peer'><body/></message>", t);
        assert!(out.is_empty());
        assert_eq!(c.counters().stanzas_ignored, 3);
        let out = feed(&mut c, 1, "<iq type='set' to='x/bgp-peer'><junk/></iq>", t);
        assert!(closed(&out, 1));
    }

    mod random {
        use super::*;
        use proptest::prelude::*;

        fn stanza_for(kind: u8, agent: &str, mac: u8, pref: u32, garbage: &str) -> String {
            let mut e =
                EnetEntry::tor_mac(5001, &format!("02:00:00:00:00:{mac:02x}"), "192.0.2.21", 1);
            e.local_preference = pref;
            match kind {
                0 => encode_vrf_subscribe(agent, VRF, 5, 1),
                1 => tf_xmpp::route::encode_vrf_unsubscribe(agent, VRF, 5, 1),
                2 => encode_route_publish(agent, VRF, &e, true, 1),
                3 => encode_route_publish(agent, VRF, &e, false, 1),
                4 => encode_config_subscribe(agent),
                5 => tf_xmpp::route::encode_agent_end_of_rib(agent),
                6 => encode_route_publish(agent, "default-domain:p:red:red", &e, true, 1),
                7 => {
                    let pair = encode_route_publish(agent, VRF, &e, true, 1);
                    pair[..pair.find("</iq>").map(|i| i + 5).unwrap_or(0)].to_string()
                }
                _ => {
                    format!("<iq type=\"set\" to=\"x/bgp-peer\"><pubsub><{garbage}/></pubsub></iq>")
                }
            }
        }

        proptest! {
            /// Random sessions, stanzas, config changes and timer ticks: never panics, and the
            /// table only ever holds paths of connected agents.
            #[test]
            fn core_survives_random_traffic(ops in proptest::collection::vec((0u8..12, 0u8..3, 0u8..4, prop_oneof![Just(1u32), Just(100)], "[a-z]{1,6}"), 1..80)) {
                let mut c = core();
                let t0 = Instant::now();
                let names = ["agent-a", "agent-b", "tor-agent-x"];
                let mut connected = [false; 3];
                for (step, (kind, who, mac, pref, garbage)) in ops.into_iter().enumerate() {
                    let now = t0 + Duration::from_millis(500 * step as u64);
                    let id = who as PeerId + 1;
                    let w = who as usize;
                    match kind {
                        9 => {
                            if !connected[w] {
                                connected[w] = c.connect(id, names[w], "127.0.0.1".parse().unwrap(), now).is_ok();
                            }
                        }
                        10 => {
                            c.disconnect(id);
                            connected[w] = false;
                        }
                        11 => {
                            let mut f = c.fabric().clone();
                            if f.virtual_networks.is_empty() {
                                f = Fabric::from_toml(FABRIC).unwrap();
                            } else {
                                f.remove_virtual_network("blue").unwrap();
                            }
                            c.set_fabric(f);
                            c.poll(now);
                        }
                        k => {
                            let out = feed(&mut c, id, &stanza_for(k, names[w], mac, pref, &garbage), now);
                            if closed(&out, id) {
                                connected[w] = false;
                            }
                        }
                    }
                    let live: Vec<String> = c.agents().into_iter().map(|a| a.name).collect();
                    for p in c.paths(None) {
                        prop_assert!(live.contains(&p.agent), "path of gone agent {}", p.agent);
                    }
                    for b in c.best_routes(None) {
                        prop_assert!(!b.next_hops.is_empty());
                    }
                }
            }
        }
    }
}
