//! The agent's view of the config the control node pushes (IFMap over XMPP,
//! XMPP.md §3), and what it means for each switch this agent manages.
//!
//! Plain data: nodes and links are stored as they arrive (updates replace a
//! node's whole property set, deletes remove it), and `derive` walks the
//! graph from this agent's `virtual-router` to the per-switch view the
//! reconcile engine needs. Links to nodes that have not arrived yet are kept
//! and take effect when the node does. After a control-node reconnect the
//! old config is marked stale and swept once the new push has ended.

use crate::hash::{HashMap, HashSet};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use tf_xmpp::config::{ConfigItem, ConfigOp, ConfigSection, IfmapLink, IfmapNode, NodeRef};
use uuid::Uuid;

/// A virtual network as a switch sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VnConfig {
    pub uuid: Uuid,
    pub fq_name: String,
    /// The VXLAN id: Logical_Switch.tunnel_key and the EVPN ethernet tag.
    pub vni: u32,
    pub network_id: u32,
    /// The routing instance (VRF) its routes live in.
    pub vrf: Option<String>,
}

/// Everything configured for one switch (physical router) this agent manages.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeviceConfig {
    /// The Physical_Switch name (the physical-router's display name).
    pub name: String,
    pub management_ip: Option<Ipv4Addr>,
    /// The switch's VTEP (tunnel) IP.
    pub vtep_ip: Option<Ipv4Addr>,
    /// Virtual networks bound on some port of the switch, by uuid.
    pub vns: BTreeMap<Uuid, VnConfig>,
    /// Port name → VLAN → virtual network.
    pub bindings: BTreeMap<String, BTreeMap<u16, Uuid>>,
    /// VNs dropped because their VNI collides with another VN's on this
    /// switch (never sent to the switch: QFX rejects duplicate VNIs).
    pub vni_conflicts: Vec<(Uuid, u32)>,
}

#[derive(Clone, Debug)]
struct StoredNode {
    node: IfmapNode,
    stale: bool,
}

/// Config nodes and links as last pushed by the control node.
#[derive(Clone, Debug, Default)]
pub struct IfmapStore {
    nodes: HashMap<NodeRef, StoredNode>,
    links: HashMap<IfmapLink, bool>,
    adjacency: HashMap<NodeRef, HashSet<(String, NodeRef)>>,
    generation: u64,
}

fn normalize(link: &IfmapLink) -> IfmapLink {
    if link.left <= link.right {
        link.clone()
    } else {
        IfmapLink {
            left: link.right.clone(),
            right: link.left.clone(),
            metadata: link.metadata.clone(),
        }
    }
}

impl IfmapStore {
    /// Bumped on every change, so callers can tell when to re-derive.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Applies one config push, sections in document order.
    pub fn apply(&mut self, sections: &[ConfigSection]) {
        for section in sections {
            for item in &section.items {
                match (section.op, item) {
                    (ConfigOp::Update, ConfigItem::Node(n)) => {
                        self.nodes.insert(
                            n.node_ref(),
                            StoredNode {
                                node: n.clone(),
                                stale: false,
                            },
                        );
                    }
                    (ConfigOp::Delete, ConfigItem::Node(n)) => {
                        self.nodes.remove(&n.node_ref());
                    }
                    (ConfigOp::Update, ConfigItem::Link(l)) => {
                        let l = normalize(l);
                        self.adjacency
                            .entry(l.left.clone())
                            .or_default()
                            .insert((l.metadata.clone(), l.right.clone()));
                        self.adjacency
                            .entry(l.right.clone())
                            .or_default()
                            .insert((l.metadata.clone(), l.left.clone()));
                        self.links.insert(l, false);
                    }
                    (ConfigOp::Delete, ConfigItem::Link(l)) => {
                        let l = normalize(l);
                        self.remove_link(&l);
                    }
                }
            }
        }
        self.generation += 1;
    }

    fn remove_link(&mut self, l: &IfmapLink) {
        self.links.remove(l);
        for (a, b) in [(&l.left, &l.right), (&l.right, &l.left)] {
            if let Some(adj) = self.adjacency.get_mut(a) {
                adj.remove(&(l.metadata.clone(), b.clone()));
                if adj.is_empty() {
                    self.adjacency.remove(a);
                }
            }
        }
    }

    /// A new config session starts: everything known is stale until the
    /// control node sends it again.
    pub fn mark_all_stale(&mut self) {
        for n in self.nodes.values_mut() {
            n.stale = true;
        }
        for s in self.links.values_mut() {
            *s = true;
        }
    }

    /// Called when re-sent: the item is fresh again. (Updates already clear
    /// staleness; this exists for links re-sent unchanged.)
    fn refresh_links(&mut self, sections: &[ConfigSection]) {
        for section in sections {
            if section.op != ConfigOp::Update {
                continue;
            }
            for item in &section.items {
                if let ConfigItem::Link(l) = item {
                    if let Some(s) = self.links.get_mut(&normalize(l)) {
                        *s = false;
                    }
                }
            }
        }
    }

    /// `apply` for a push during a config session: refreshes stale items.
    pub fn apply_push(&mut self, sections: &[ConfigSection]) {
        self.apply(sections);
        self.refresh_links(sections);
    }

    /// Deletes what the control node did not send again since
    /// `mark_all_stale`. Returns how many items went.
    pub fn sweep_stale(&mut self) -> usize {
        let before = self.nodes.len() + self.links.len();
        self.nodes.retain(|_, n| !n.stale);
        let stale: Vec<IfmapLink> = self
            .links
            .iter()
            .filter(|(_, s)| **s)
            .map(|(l, _)| l.clone())
            .collect();
        for l in &stale {
            self.remove_link(l);
        }
        let removed = before - self.nodes.len() - self.links.len();
        if removed > 0 {
            self.generation += 1;
        }
        removed
    }

    pub fn stale_count(&self) -> usize {
        self.nodes.values().filter(|n| n.stale).count()
            + self.links.values().filter(|s| **s).count()
    }

    fn node(&self, r: &NodeRef) -> Option<&IfmapNode> {
        self.nodes.get(r).map(|n| &n.node)
    }

    /// Existing neighbours of `from` over links named `metadata` of nodes of
    /// type `to_type` (pending links to absent nodes are skipped).
    fn neighbours<'a>(
        &'a self,
        from: &NodeRef,
        metadata: &'a str,
        to_type: &'a str,
    ) -> impl Iterator<Item = &'a IfmapNode> + 'a {
        self.adjacency
            .get(from)
            .into_iter()
            .flat_map(|s| s.iter())
            .filter(move |(m, r)| m == metadata && r.type_name == to_type)
            .filter_map(move |(_, r)| self.node(r))
    }

    /// `vxlan-network-identifier-mode` of the global vrouter config.
    fn vxlan_mode_configured(&self) -> bool {
        self.nodes
            .values()
            .filter(|n| n.node.type_name == "global-vrouter-config")
            .any(|n| {
                n.node
                    .property_text("vxlan-network-identifier-mode")
                    .as_deref()
                    == Some("configured")
            })
    }

    /// The VNI of a virtual network (XMPP.md §3.3).
    fn vni_of(&self, vn: &IfmapNode, configured: bool) -> Option<u32> {
        let props = vn.property("virtual-network-properties");
        let from_props = |name: &str| {
            props
                .and_then(|p| p.child_text(name))
                .and_then(|t| t.trim().parse::<u32>().ok())
                .filter(|v| *v > 0)
        };
        let network_id = vn
            .property_text("virtual-network-network-id")
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|v| *v > 0);
        let vni = if configured {
            from_props("vxlan-network-identifier")
        } else {
            network_id.or_else(|| from_props("network-id"))
        };
        vni.filter(|v| *v <= 16_777_215)
    }

    /// Derives the per-switch config for agent `agent_name`.
    pub fn derive(&self, agent_name: &str) -> BTreeMap<String, DeviceConfig> {
        let vr = NodeRef::new(
            "virtual-router",
            format!("default-global-system-config:{agent_name}"),
        );
        let configured = self.vxlan_mode_configured();
        let mut out = BTreeMap::new();
        for pr in self.neighbours(&vr, "physical-router-virtual-router", "physical-router") {
            if !pr.enabled() {
                continue;
            }
            let name = display_name(pr);
            let mut dev = DeviceConfig {
                name: name.clone(),
                management_ip: pr
                    .property_text("physical-router-management-ip")
                    .and_then(|s| s.parse().ok()),
                vtep_ip: pr
                    .property_text("physical-router-dataplane-ip")
                    .and_then(|s| s.parse().ok()),
                ..DeviceConfig::default()
            };
            let mut vni_owner: BTreeMap<u32, Uuid> = BTreeMap::new();
            let mut wanted: BTreeMap<Uuid, VnConfig> = BTreeMap::new();
            let mut bindings: Vec<(String, u16, Uuid)> = Vec::new();
            let pr_ref = pr.node_ref();
            for pi in self.neighbours(
                &pr_ref,
                "physical-router-physical-interface",
                "physical-interface",
            ) {
                let port = display_name(pi);
                for li in self.neighbours(
                    &pi.node_ref(),
                    "physical-interface-logical-interface",
                    "logical-interface",
                ) {
                    if !li.enabled() {
                        continue;
                    }
                    let vlan = li
                        .property_text("logical-interface-vlan-tag")
                        .and_then(|t| t.parse::<u16>().ok())
                        .unwrap_or(0);
                    if vlan > 4095 {
                        continue;
                    }
                    for vmi in self.neighbours(
                        &li.node_ref(),
                        "logical-interface-virtual-machine-interface",
                        "virtual-machine-interface",
                    ) {
                        for vn in self.neighbours(
                            &vmi.node_ref(),
                            "virtual-machine-interface-virtual-network",
                            "virtual-network",
                        ) {
                            if !vn.enabled() {
                                continue;
                            }
                            let (Some(uuid), Some(vni)) = (vn.uuid(), self.vni_of(vn, configured))
                            else {
                                continue;
                            };
                            let vrf = self
                                .neighbours(
                                    &vn.node_ref(),
                                    "virtual-network-routing-instance",
                                    "routing-instance",
                                )
                                .map(|ri| ri.name.clone())
                                .min();
                            let network_id = vn
                                .property_text("virtual-network-network-id")
                                .and_then(|t| t.parse().ok())
                                .unwrap_or(0);
                            wanted.insert(
                                uuid,
                                VnConfig {
                                    uuid,
                                    fq_name: vn.name.clone(),
                                    vni,
                                    network_id,
                                    vrf,
                                },
                            );
                            bindings.push((port.clone(), vlan, uuid));
                        }
                    }
                }
            }
            // One VNI, one VN: the lowest uuid keeps it, the others wait.
            for (uuid, vn) in &wanted {
                vni_owner.entry(vn.vni).or_insert(*uuid);
            }
            for (uuid, vn) in wanted {
                if vni_owner.get(&vn.vni) == Some(&uuid) {
                    dev.vns.insert(uuid, vn);
                } else {
                    dev.vni_conflicts.push((uuid, vn.vni));
                }
            }
            for (port, vlan, vn) in bindings {
                if dev.vns.contains_key(&vn) {
                    dev.bindings.entry(port).or_default().insert(vlan, vn);
                }
            }
            out.insert(name, dev);
        }
        out
    }

    /// All routing instances any switch of this agent needs.
    pub fn vrfs(devices: &BTreeMap<String, DeviceConfig>) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for d in devices.values() {
            for vn in d.vns.values() {
                if let Some(vrf) = &vn.vrf {
                    out.insert(vrf.clone(), vn.network_id);
                }
            }
        }
        out
    }
}

/// A node's display name, or the last component of its FQ name.
fn display_name(n: &IfmapNode) -> String {
    n.property_text("display-name")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| n.name.rsplit(':').next().unwrap_or(&n.name).to_string())
}

/// The set of switch names configured, for identification of sessions.
pub fn device_names(devices: &BTreeMap<String, DeviceConfig>) -> BTreeSet<String> {
    devices.keys().cloned().collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tf_xmpp::config::id_perms;

    fn node(t: &str, name: &str) -> IfmapNode {
        IfmapNode::new(t, name)
    }

    fn link(a: &IfmapNode, b: &IfmapNode, m: &str) -> ConfigItem {
        ConfigItem::Link(IfmapLink {
            left: a.node_ref(),
            right: b.node_ref(),
            metadata: m.into(),
        })
    }

    /// A fabric: agent `agent` manages switch `sw1` (VTEP 10.0.0.11) with VN
    /// blue (network-id 5, VNI 5001) bound on port p1 VLAN 100.
    pub(crate) fn fabric(agent: &str, vn_uuid: Uuid, vni_mode: &str) -> Vec<ConfigSection> {
        let gvc = node(
            "global-vrouter-config",
            "default-global-system-config:default-global-vrouter-config",
        )
        .prop_text("vxlan-network-identifier-mode", vni_mode);
        let vr = node(
            "virtual-router",
            &format!("default-global-system-config:{agent}"),
        )
        .prop(id_perms(Uuid::from_u128(1), true));
        let pr = node("physical-router", "default-global-system-config:qfx1")
            .prop_text("display-name", "sw1")
            .prop_text("physical-router-management-ip", "192.0.2.1")
            .prop_text("physical-router-dataplane-ip", "10.0.0.11")
            .prop(id_perms(Uuid::from_u128(2), true));
        let pi = node("physical-interface", "default-global-system-config:qfx1:p1")
            .prop_text("display-name", "p1");
        let li = node(
            "logical-interface",
            "default-global-system-config:qfx1:p1:p1.100",
        )
        .prop_text("logical-interface-vlan-tag", 100);
        let vmi = node("virtual-machine-interface", "default-domain:proj:vmi1");
        let props = tf_xmpp::Element::new("virtual-network-properties")
            .leaf("vxlan-network-identifier", 5001);
        let vn = node("virtual-network", "default-domain:proj:blue")
            .prop(id_perms(vn_uuid, true))
            .prop_text("virtual-network-network-id", 5)
            .prop(props);
        let ri = node("routing-instance", "default-domain:proj:blue:blue");
        let items = vec![
            ConfigItem::Node(gvc),
            ConfigItem::Node(vr.clone()),
            ConfigItem::Node(pr.clone()),
            ConfigItem::Node(pi.clone()),
            ConfigItem::Node(li.clone()),
            ConfigItem::Node(vmi.clone()),
            ConfigItem::Node(vn.clone()),
            ConfigItem::Node(ri.clone()),
            link(&pr, &vr, "physical-router-virtual-router"),
            link(&pr, &pi, "physical-router-physical-interface"),
            link(&pi, &li, "physical-interface-logical-interface"),
            link(&li, &vmi, "logical-interface-virtual-machine-interface"),
            link(&vmi, &vn, "virtual-machine-interface-virtual-network"),
            link(&vn, &ri, "virtual-network-routing-instance"),
        ];
        vec![ConfigSection {
            op: ConfigOp::Update,
            items,
        }]
    }

    #[test]
    fn derives_switch_config_in_both_vni_modes() {
        let vn = Uuid::from_u128(0xabc);
        let mut s = IfmapStore::default();
        s.apply(&fabric("a1", vn, "configured"));
        let d = s.derive("a1");
        let sw = &d["sw1"];
        assert_eq!(sw.vtep_ip, Some("10.0.0.11".parse().unwrap()));
        assert_eq!(sw.vns[&vn].vni, 5001);
        assert_eq!(
            sw.vns[&vn].vrf.as_deref(),
            Some("default-domain:proj:blue:blue")
        );
        assert_eq!(sw.bindings["p1"][&100], vn);
        assert!(s.derive("other-agent").is_empty());

        let mut s = IfmapStore::default();
        s.apply(&fabric("a1", vn, "automatic"));
        assert_eq!(s.derive("a1")["sw1"].vns[&vn].vni, 5);
    }

    #[test]
    fn links_before_nodes_and_deletes() {
        let vn = Uuid::from_u128(0xabc);
        let sections = fabric("a1", vn, "configured");
        // Links first, nodes after: the pending links take effect.
        let mut items = sections[0].items.clone();
        items.sort_by_key(|i| matches!(i, ConfigItem::Node(_)));
        let mut s = IfmapStore::default();
        s.apply(&[ConfigSection {
            op: ConfigOp::Update,
            items,
        }]);
        assert_eq!(s.derive("a1")["sw1"].vns.len(), 1);
        // Deleting the VMI-VN link unbinds the VN.
        let del = sections[0]
            .items
            .iter()
            .find(|i| matches!(i, ConfigItem::Link(l) if l.metadata == "virtual-machine-interface-virtual-network"))
            .cloned()
            .unwrap();
        s.apply(&[ConfigSection {
            op: ConfigOp::Delete,
            items: vec![del],
        }]);
        let d = s.derive("a1");
        assert!(d["sw1"].vns.is_empty());
        assert!(d["sw1"].bindings.is_empty());
    }

    #[test]
    fn stale_config_is_swept_after_a_new_session() {
        let vn = Uuid::from_u128(0xabc);
        let mut s = IfmapStore::default();
        s.apply(&fabric("a1", vn, "configured"));
        s.mark_all_stale();
        // The new session re-sends everything but the routing instance.
        let mut again = fabric("a1", vn, "configured");
        again[0]
            .items
            .retain(|i| !matches!(i, ConfigItem::Node(n) if n.type_name == "routing-instance"));
        s.apply_push(&again);
        assert_eq!(s.stale_count(), 1);
        assert_eq!(s.sweep_stale(), 1);
        assert_eq!(s.derive("a1")["sw1"].vns[&vn].vrf, None);
    }

    #[test]
    fn duplicate_vnis_are_never_both_used() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let mut s = IfmapStore::default();
        s.apply(&fabric("a1", a, "configured"));
        // A second VN with the same VNI, bound on the same port at VLAN 200.
        let props = tf_xmpp::Element::new("virtual-network-properties")
            .leaf("vxlan-network-identifier", 5001);
        let vn2 = node("virtual-network", "default-domain:proj:red")
            .prop(id_perms(b, true))
            .prop_text("virtual-network-network-id", 6)
            .prop(props);
        let li2 = node(
            "logical-interface",
            "default-global-system-config:qfx1:p1:p1.200",
        )
        .prop_text("logical-interface-vlan-tag", 200);
        let vmi2 = node("virtual-machine-interface", "default-domain:proj:vmi2");
        let pi = node("physical-interface", "default-global-system-config:qfx1:p1");
        s.apply(&[ConfigSection {
            op: ConfigOp::Update,
            items: vec![
                ConfigItem::Node(vn2.clone()),
                ConfigItem::Node(li2.clone()),
                ConfigItem::Node(vmi2.clone()),
                link(&pi, &li2, "physical-interface-logical-interface"),
                link(&li2, &vmi2, "logical-interface-virtual-machine-interface"),
                link(&vmi2, &vn2, "virtual-machine-interface-virtual-network"),
            ],
        }]);
        let d = &s.derive("a1")["sw1"];
        assert_eq!(d.vns.len(), 1);
        assert!(d.vns.contains_key(&a));
        assert_eq!(d.vni_conflicts, vec![(b, 5001)]);
        assert_eq!(d.bindings["p1"].len(), 1);
    }
}
