//! The fabric description (TOML) and the IFMap config graph derived from it (XMPP.md §3.3).
//!
//! Operators describe virtual routers (ToR agents), virtual networks, physical routers with
//! their ports, and VLAN bindings; [`Fabric::agent_config`] turns that into the nodes and
//! links a TF control node would push to one agent. See `testbed/examples/fabric.toml`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use tf_xmpp::config::{
    id_perms, ConfigItem, ConfigOp, ConfigSection, IfmapLink, IfmapNode, NodeRef,
};
use tf_xmpp::Element;
use uuid::Uuid;

/// FQ name of the one global-system-config.
pub const GSC: &str = "default-global-system-config";
/// Largest VxLAN id.
pub const MAX_VNI: u32 = 16_777_215;

#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing fabric TOML: {0}")]
    Toml(String),
    #[error("invalid fabric: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> FabricError {
    FabricError::Invalid(msg.into())
}

/// How the VxLAN id of a virtual network is chosen (global-vrouter-config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VxlanMode {
    /// VNI = `virtual-network-network-id`.
    #[default]
    Automatic,
    /// VNI = `virtual-network-properties/vxlan-network-identifier`.
    Configured,
}

impl VxlanMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VxlanMode::Automatic => "automatic",
            VxlanMode::Configured => "configured",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Global {
    #[serde(default)]
    pub vxlan_mode: VxlanMode,
}

/// A ToR agent, as its `virtual-router` object (`virtual-router-type` = `tor-agent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualRouter {
    /// The agent name: its XMPP `from` and the last component of the FQ name.
    pub name: String,
    /// `virtual-router-ip-address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
}

fn default_domain() -> String {
    "default-domain".into()
}
fn default_project() -> String {
    "admin".into()
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualNetwork {
    /// Last FQ-name component; the FQ name is `<domain>:<project>:<name>`.
    pub name: String,
    #[serde(default = "default_project")]
    pub project: String,
    #[serde(default = "default_domain")]
    pub domain: String,
    /// `virtual-network-network-id`: the VNI in automatic mode and the VRF instance-id.
    pub network_id: u32,
    /// `virtual-network-properties/vxlan-network-identifier`: the VNI in configured mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// `virtual-network-properties/forwarding-mode` (`l2`, `l3`, `l2_l3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding_mode: Option<String>,
    /// `id-perms/enable`.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
}

impl VirtualNetwork {
    pub fn fq_name(&self) -> String {
        format!("{}:{}:{}", self.domain, self.project, self.name)
    }
    /// The routing instance (VRF) name used on the route channel.
    pub fn vrf_name(&self) -> String {
        format!("{}:{}", self.fq_name(), self.name)
    }
    /// The VNI an agent derives (XMPP.md §3.3).
    pub fn effective_vni(&self, mode: VxlanMode) -> Option<u32> {
        match mode {
            VxlanMode::Configured => self.vni,
            VxlanMode::Automatic => Some(self.network_id),
        }
    }
}

/// A ToR switch (`physical-router`) and its ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhysicalRouter {
    /// Also its `display-name`, which must equal the switch's OVSDB Physical_Switch name.
    pub name: String,
    pub management_ip: String,
    /// The VTEP (tunnel) IP.
    pub dataplane_ip: String,
    /// Agents (virtual routers) that manage this switch: usually an active/standby pair.
    #[serde(default)]
    pub tor_agents: Vec<String>,
    /// Port names (`physical-interface`), equal to the OVSDB Physical_Port names.
    #[serde(default)]
    pub interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
}

/// A VLAN on a port bound to a virtual network (logical-interface + VMI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub physical_router: String,
    pub interface: String,
    /// `logical-interface-vlan-tag`, 0..=4094 (0 = untagged).
    pub vlan: u16,
    /// The VN's FQ name, or its short name when that is unique.
    pub virtual_network: String,
    /// `virtual-machine-interface-mac-addresses` of the VMI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mac_addresses: Vec<String>,
    /// Logical interface name; defaults to `<interface>.<vlan>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Binding {
    pub fn lif_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}.{}", self.interface, self.vlan))
    }
}

/// The whole fabric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Fabric {
    #[serde(default)]
    pub global: Global,
    #[serde(default, rename = "virtual_router")]
    pub virtual_routers: Vec<VirtualRouter>,
    #[serde(default, rename = "virtual_network")]
    pub virtual_networks: Vec<VirtualNetwork>,
    #[serde(default, rename = "physical_router")]
    pub physical_routers: Vec<PhysicalRouter>,
    #[serde(default, rename = "binding")]
    pub bindings: Vec<Binding>,
}

/// A stable UUID for objects without a configured one (a v8 UUID from an FNV-1a-128 hash of
/// type and FQ name), so a restart or reload names the same Logical_Switch the same way.
pub fn derived_uuid(type_name: &str, fq_name: &str) -> Uuid {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for b in type_name.bytes().chain([0u8]).chain(fq_name.bytes()) {
        h ^= b as u128;
        h = h.wrapping_mul(PRIME);
    }
    uuid::Builder::from_custom_bytes(h.to_be_bytes()).into_uuid()
}

fn check_name(what: &str, name: &str) -> Result<(), FabricError> {
    if name.trim().is_empty() || name.contains(':') || name.chars().any(|c| c.is_control()) {
        return Err(invalid(format!(
            "{what} name {name:?} must be non-empty, without ':' or control characters"
        )));
    }
    Ok(())
}

fn check_ipv4(what: &str, ip: &str) -> Result<(), FabricError> {
    ip.parse::<std::net::Ipv4Addr>()
        .map(|_| ())
        .map_err(|_| invalid(format!("{what} {ip:?} is not an IPv4 address")))
}

fn normalize_mac(mac: &str) -> Result<String, FabricError> {
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || u8::from_str_radix(p, 16).is_err())
    {
        return Err(invalid(format!(
            "MAC address {mac:?} is not aa:bb:cc:dd:ee:ff"
        )));
    }
    Ok(mac.to_ascii_lowercase())
}

/// The nodes and links pushed to one agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentConfig {
    pub nodes: BTreeMap<NodeRef, IfmapNode>,
    pub links: BTreeSet<IfmapLink>,
}

impl AgentConfig {
    fn node(&mut self, node: IfmapNode) -> NodeRef {
        let r = node.node_ref();
        self.nodes.insert(r.clone(), node);
        r
    }
    fn link(&mut self, left: &NodeRef, right: &NodeRef, metadata: &str) {
        self.links.insert(IfmapLink {
            left: left.clone(),
            right: right.clone(),
            metadata: metadata.into(),
        });
    }

    /// Everything as one update section: nodes first, then links.
    pub fn full_push(&self) -> Vec<ConfigSection> {
        self.diff_from(&AgentConfig::default())
    }

    /// Sections that turn `old` (what the agent has) into `self`: updates (changed or new nodes,
    /// new links), then deletes (gone links, then gone nodes).
    pub fn diff_from(&self, old: &AgentConfig) -> Vec<ConfigSection> {
        let mut updates = Vec::new();
        for (r, n) in &self.nodes {
            if old.nodes.get(r) != Some(n) {
                updates.push(ConfigItem::Node(n.clone()));
            }
        }
        for l in self.links.difference(&old.links) {
            updates.push(ConfigItem::Link(l.clone()));
        }
        let mut deletes = Vec::new();
        for l in old.links.difference(&self.links) {
            deletes.push(ConfigItem::Link(l.clone()));
        }
        for (r, n) in &old.nodes {
            if !self.nodes.contains_key(r) {
                deletes.push(ConfigItem::Node(IfmapNode::new(
                    n.type_name.clone(),
                    n.name.clone(),
                )));
            }
        }
        let mut out = Vec::new();
        if !updates.is_empty() {
            out.push(ConfigSection {
                op: ConfigOp::Update,
                items: updates,
            });
        }
        if !deletes.is_empty() {
            out.push(ConfigSection {
                op: ConfigOp::Delete,
                items: deletes,
            });
        }
        out
    }

    pub fn object_count(&self) -> usize {
        self.nodes.len() + self.links.len()
    }
}

impl Fabric {
    pub fn from_toml(text: &str) -> Result<Fabric, FabricError> {
        let fabric: Fabric = toml::from_str(text).map_err(|e| FabricError::Toml(e.to_string()))?;
        fabric.validated()
    }

    pub fn load(path: &Path) -> Result<Fabric, FabricError> {
        let text = std::fs::read_to_string(path).map_err(|source| FabricError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Fabric::from_toml(&text)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks every reference and uniqueness rule; normalises MACs. Returns the fabric.
    pub fn validated(mut self) -> Result<Fabric, FabricError> {
        let mut seen = HashSet::new();
        for vr in &self.virtual_routers {
            check_name("virtual_router", &vr.name)?;
            if let Some(problem) = tf_xmpp::stanza::agent_name_problem(&vr.name) {
                return Err(invalid(format!("virtual_router {:?}: {problem}", vr.name)));
            }
            if let Some(ip) = &vr.ip {
                check_ipv4("virtual_router ip", ip)?;
            }
            if !seen.insert(vr.name.clone()) {
                return Err(invalid(format!("duplicate virtual_router {:?}", vr.name)));
            }
        }
        let mut fq = HashSet::new();
        let mut ids = HashSet::new();
        let mut vnis = HashSet::new();
        for vn in &self.virtual_networks {
            check_name("virtual_network", &vn.name)?;
            check_name("virtual_network project", &vn.project)?;
            check_name("virtual_network domain", &vn.domain)?;
            if !fq.insert(vn.fq_name()) {
                return Err(invalid(format!(
                    "duplicate virtual_network {:?}",
                    vn.fq_name()
                )));
            }
            if vn.network_id == 0 || vn.network_id > MAX_VNI {
                return Err(invalid(format!(
                    "virtual_network {:?}: network_id must be 1..={MAX_VNI}",
                    vn.fq_name()
                )));
            }
            if !ids.insert(vn.network_id) {
                return Err(invalid(format!(
                    "virtual_network {:?}: network_id {} is used twice",
                    vn.fq_name(),
                    vn.network_id
                )));
            }
            if let Some(vni) = vn.vni {
                if vni == 0 || vni > MAX_VNI {
                    return Err(invalid(format!(
                        "virtual_network {:?}: vni must be 1..={MAX_VNI}",
                        vn.fq_name()
                    )));
                }
            }
            match vn.effective_vni(self.global.vxlan_mode) {
                None => {
                    return Err(invalid(format!(
                        "virtual_network {:?} has no vni but vxlan_mode is configured",
                        vn.fq_name()
                    )))
                }
                Some(v) if !vnis.insert(v) => {
                    return Err(invalid(format!(
                        "virtual_network {:?}: VNI {v} is used twice",
                        vn.fq_name()
                    )))
                }
                Some(_) => {}
            }
        }
        let mut routers = HashSet::new();
        for pr in &self.physical_routers {
            check_name("physical_router", &pr.name)?;
            check_ipv4("physical_router management_ip", &pr.management_ip)?;
            check_ipv4("physical_router dataplane_ip", &pr.dataplane_ip)?;
            if !routers.insert(pr.name.clone()) {
                return Err(invalid(format!("duplicate physical_router {:?}", pr.name)));
            }
            for a in &pr.tor_agents {
                if !seen.contains(a) {
                    return Err(invalid(format!(
                        "physical_router {:?}: unknown tor_agent {a:?}",
                        pr.name
                    )));
                }
            }
            let mut ports = HashSet::new();
            for i in &pr.interfaces {
                check_name("interface", i)?;
                if !ports.insert(i) {
                    return Err(invalid(format!(
                        "physical_router {:?}: duplicate interface {i:?}",
                        pr.name
                    )));
                }
            }
        }
        let mut lifs = HashSet::new();
        let mut vlans = HashSet::new();
        for i in 0..self.bindings.len() {
            let b = &self.bindings[i];
            let pr = self
                .physical_routers
                .iter()
                .find(|p| p.name == b.physical_router)
                .ok_or_else(|| {
                    invalid(format!(
                        "binding: unknown physical_router {:?}",
                        b.physical_router
                    ))
                })?;
            if !pr.interfaces.contains(&b.interface) {
                return Err(invalid(format!(
                    "binding: {:?} has no interface {:?}",
                    b.physical_router, b.interface
                )));
            }
            if b.vlan > 4094 {
                return Err(invalid(format!(
                    "binding {}:{}: vlan must be 0..=4094",
                    b.physical_router, b.interface
                )));
            }
            check_name("binding name", &b.lif_name())?;
            self.find_vn(&b.virtual_network)?;
            if !vlans.insert((b.physical_router.clone(), b.interface.clone(), b.vlan)) {
                return Err(invalid(format!(
                    "binding {}:{} vlan {} is bound twice",
                    b.physical_router, b.interface, b.vlan
                )));
            }
            if !lifs.insert((b.physical_router.clone(), b.interface.clone(), b.lif_name())) {
                return Err(invalid(format!(
                    "duplicate logical interface {:?}",
                    b.lif_name()
                )));
            }
            let macs = b
                .mac_addresses
                .iter()
                .map(|m| normalize_mac(m))
                .collect::<Result<Vec<_>, _>>()?;
            self.bindings[i].mac_addresses = macs;
        }
        Ok(self)
    }

    /// A VN by FQ name, or by short name when unique.
    pub fn find_vn(&self, name: &str) -> Result<&VirtualNetwork, FabricError> {
        if let Some(vn) = self.virtual_networks.iter().find(|v| v.fq_name() == name) {
            return Ok(vn);
        }
        let mut short = self.virtual_networks.iter().filter(|v| v.name == name);
        match (short.next(), short.next()) {
            (Some(vn), None) => Ok(vn),
            (Some(_), Some(_)) => Err(invalid(format!(
                "virtual network name {name:?} is ambiguous; use the FQ name"
            ))),
            _ => Err(invalid(format!("unknown virtual network {name:?}"))),
        }
    }

    /// The VN whose routing instance is `vrf`.
    pub fn vn_of_vrf(&self, vrf: &str) -> Option<&VirtualNetwork> {
        self.virtual_networks.iter().find(|v| v.vrf_name() == vrf)
    }

    // ---- runtime changes (each leaves a validated fabric or changes nothing) ----

    fn apply(
        &mut self,
        change: impl FnOnce(&mut Fabric) -> Result<(), FabricError>,
    ) -> Result<(), FabricError> {
        let mut next = self.clone();
        change(&mut next)?;
        *self = next.validated()?;
        Ok(())
    }

    /// Changes a VN's VNI (`vni` in configured mode, `network_id` in automatic mode).
    pub fn set_vni(&mut self, vn: &str, vni: u32) -> Result<(), FabricError> {
        let fq = self.find_vn(vn)?.fq_name();
        self.apply(|f| {
            let mode = f.global.vxlan_mode;
            let v = f
                .virtual_networks
                .iter_mut()
                .find(|v| v.fq_name() == fq)
                .ok_or_else(|| invalid("vanished"))?;
            match mode {
                VxlanMode::Configured => v.vni = Some(vni),
                VxlanMode::Automatic => v.network_id = vni,
            }
            Ok(())
        })
    }

    pub fn add_virtual_network(&mut self, vn: VirtualNetwork) -> Result<(), FabricError> {
        self.apply(|f| {
            f.virtual_networks.push(vn);
            Ok(())
        })
    }

    /// Removes a VN and every binding to it.
    pub fn remove_virtual_network(&mut self, vn: &str) -> Result<(), FabricError> {
        let fq = self.find_vn(vn)?.fq_name();
        self.apply(|f| {
            let mut keep = Vec::new();
            for b in std::mem::take(&mut f.bindings) {
                if f.find_vn(&b.virtual_network)
                    .map(|v| v.fq_name())
                    .ok()
                    .as_deref()
                    != Some(fq.as_str())
                {
                    keep.push(b);
                }
            }
            f.bindings = keep;
            f.virtual_networks.retain(|v| v.fq_name() != fq);
            Ok(())
        })
    }

    pub fn add_binding(&mut self, b: Binding) -> Result<(), FabricError> {
        self.apply(|f| {
            f.bindings.push(b);
            Ok(())
        })
    }

    pub fn remove_binding(
        &mut self,
        physical_router: &str,
        interface: &str,
        vlan: u16,
    ) -> Result<(), FabricError> {
        self.apply(|f| {
            let before = f.bindings.len();
            f.bindings.retain(|b| {
                !(b.physical_router == physical_router
                    && b.interface == interface
                    && b.vlan == vlan)
            });
            if f.bindings.len() == before {
                return Err(invalid(format!(
                    "no binding {physical_router}:{interface} vlan {vlan}"
                )));
            }
            Ok(())
        })
    }

    // ---- the IFMap graph ----

    fn perms(&self, type_name: &str, fq: &str, configured: Option<Uuid>, enable: bool) -> Element {
        id_perms(
            configured.unwrap_or_else(|| derived_uuid(type_name, fq)),
            enable,
        )
    }

    /// The config a TF control node would push to `agent`, or `None` when no virtual-router of
    /// that name exists (the subscription then waits for it).
    pub fn agent_config(&self, agent: &str) -> Option<AgentConfig> {
        let vr = self.virtual_routers.iter().find(|v| v.name == agent)?;
        let mut c = AgentConfig::default();
        let gsc = c.node(IfmapNode::new("global-system-config", GSC).prop(self.perms(
            "global-system-config",
            GSC,
            None,
            true,
        )));
        let gvc_name = format!("{GSC}:default-global-vrouter-config");
        let gvc = c.node(
            IfmapNode::new("global-vrouter-config", gvc_name.clone())
                .prop(self.perms("global-vrouter-config", &gvc_name, None, true))
                .prop_text(
                    "vxlan-network-identifier-mode",
                    self.global.vxlan_mode.as_str(),
                ),
        );
        c.link(&gsc, &gvc, "global-system-config-global-vrouter-config");
        let vr_name = format!("{GSC}:{}", vr.name);
        let mut vr_node = IfmapNode::new("virtual-router", vr_name.clone())
            .prop(self.perms("virtual-router", &vr_name, vr.uuid, true))
            .prop_text("display-name", &vr.name)
            .prop_text("virtual-router-type", "tor-agent");
        if let Some(ip) = &vr.ip {
            vr_node = vr_node.prop_text("virtual-router-ip-address", ip);
        }
        let vr_ref = c.node(vr_node);
        for pr in self
            .physical_routers
            .iter()
            .filter(|p| p.tor_agents.iter().any(|a| a == agent))
        {
            let pr_name = format!("{GSC}:{}", pr.name);
            let pr_ref = c.node(
                IfmapNode::new("physical-router", pr_name.clone())
                    .prop(self.perms("physical-router", &pr_name, pr.uuid, true))
                    .prop_text("display-name", &pr.name)
                    .prop_text("physical-router-management-ip", &pr.management_ip)
                    .prop_text("physical-router-dataplane-ip", &pr.dataplane_ip),
            );
            c.link(&pr_ref, &vr_ref, "physical-router-virtual-router");
            for port in &pr.interfaces {
                let pi_name = format!("{pr_name}:{port}");
                let pi_ref = c.node(
                    IfmapNode::new("physical-interface", pi_name.clone())
                        .prop(self.perms("physical-interface", &pi_name, None, true))
                        .prop_text("display-name", port),
                );
                c.link(&pr_ref, &pi_ref, "physical-router-physical-interface");
                for b in self
                    .bindings
                    .iter()
                    .filter(|b| b.physical_router == pr.name && &b.interface == port)
                {
                    let Ok(vn) = self.find_vn(&b.virtual_network) else {
                        continue;
                    };
                    let lif = b.lif_name();
                    let li_name = format!("{pi_name}:{lif}");
                    let li_ref = c.node(
                        IfmapNode::new("logical-interface", li_name.clone())
                            .prop(self.perms("logical-interface", &li_name, None, true))
                            .prop_text("display-name", &lif)
                            .prop_text("logical-interface-vlan-tag", b.vlan),
                    );
                    c.link(&pi_ref, &li_ref, "physical-interface-logical-interface");
                    let vmi_uuid = derived_uuid("virtual-machine-interface", &li_name);
                    let vmi_name = format!("{}:{}:{}", vn.domain, vn.project, vmi_uuid);
                    let mut vmi = IfmapNode::new("virtual-machine-interface", vmi_name.clone())
                        .prop(id_perms(vmi_uuid, true))
                        .prop_text("display-name", format!("{}-{}-{}", pr.name, port, b.vlan));
                    if !b.mac_addresses.is_empty() {
                        let mut macs = Element::new("virtual-machine-interface-mac-addresses");
                        for m in &b.mac_addresses {
                            macs.push(Element::new("mac-address").text_with(m.clone()));
                        }
                        vmi = vmi.prop(macs);
                    }
                    let vmi_ref = c.node(vmi);
                    c.link(
                        &li_ref,
                        &vmi_ref,
                        "logical-interface-virtual-machine-interface",
                    );
                    let vn_ref = self.vn_nodes(&mut c, vn);
                    c.link(
                        &vmi_ref,
                        &vn_ref,
                        "virtual-machine-interface-virtual-network",
                    );
                }
            }
        }
        Some(c)
    }

    fn vn_nodes(&self, c: &mut AgentConfig, vn: &VirtualNetwork) -> NodeRef {
        let fq = vn.fq_name();
        let mut node = IfmapNode::new("virtual-network", fq.clone())
            .prop(self.perms("virtual-network", &fq, vn.uuid, vn.enabled))
            .prop_text("display-name", &vn.name)
            .prop_text("virtual-network-network-id", vn.network_id);
        if vn.vni.is_some() || vn.forwarding_mode.is_some() {
            let mut props = Element::new("virtual-network-properties");
            if let Some(vni) = vn.vni {
                props = props.leaf("vxlan-network-identifier", vni);
            }
            if let Some(fm) = &vn.forwarding_mode {
                props = props.leaf("forwarding-mode", fm);
            }
            node = node.prop(props);
        }
        let vn_ref = c.node(node);
        let ri_name = vn.vrf_name();
        let ri_ref = c.node(
            IfmapNode::new("routing-instance", ri_name.clone())
                .prop(self.perms("routing-instance", &ri_name, None, true))
                .prop_text("display-name", &vn.name),
        );
        c.link(&vn_ref, &ri_ref, "virtual-network-routing-instance");
        vn_ref
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SMALL: &str = r#"
[global]
vxlan_mode = "configured"

[[virtual_router]]
name = "tor-agent-a"
ip = "192.0.2.10"

[[virtual_router]]
name = "tor-agent-b"

[[virtual_network]]
name = "blue"
project = "proj1"
network_id = 5
vni = 5001

[[physical_router]]
name = "qfx-1"
management_ip = "192.0.2.1"
dataplane_ip = "192.0.2.21"
tor_agents = ["tor-agent-a", "tor-agent-b"]
interfaces = ["xe-0/0/3"]

[[binding]]
physical_router = "qfx-1"
interface = "xe-0/0/3"
vlan = 20
virtual_network = "blue"
mac_addresses = ["02:AA:BB:00:00:01"]
"#;

    #[test]
    fn example_file_is_valid() {
        let text = include_str!("../../examples/fabric.toml");
        let f = Fabric::from_toml(text).unwrap();
        assert!(!f.virtual_networks.is_empty());
        for vr in &f.virtual_routers {
            assert!(f.agent_config(&vr.name).is_some());
        }
    }

    #[test]
    fn agent_config_has_the_minimal_subset_and_links() {
        let f = Fabric::from_toml(SMALL).unwrap();
        assert_eq!(f.bindings[0].mac_addresses, vec!["02:aa:bb:00:00:01"]);
        let c = f.agent_config("tor-agent-a").unwrap();
        let types: BTreeSet<&str> = c.nodes.keys().map(|r| r.type_name.as_str()).collect();
        for t in [
            "virtual-router",
            "global-vrouter-config",
            "physical-router",
            "physical-interface",
            "logical-interface",
            "virtual-machine-interface",
            "virtual-network",
            "routing-instance",
        ] {
            assert!(types.contains(t), "{t}");
        }
        let metas: BTreeSet<&str> = c.links.iter().map(|l| l.metadata.as_str()).collect();
        for m in [
            "physical-router-virtual-router",
            "physical-router-physical-interface",
            "physical-interface-logical-interface",
            "logical-interface-virtual-machine-interface",
            "virtual-machine-interface-virtual-network",
            "virtual-network-routing-instance",
            "global-system-config-global-vrouter-config",
        ] {
            assert!(metas.contains(m), "{m}");
        }
        let vn = &c.nodes[&NodeRef::new("virtual-network", "default-domain:proj1:blue")];
        assert_eq!(
            vn.property_text("virtual-network-network-id").as_deref(),
            Some("5")
        );
        assert_eq!(
            vn.property("virtual-network-properties")
                .unwrap()
                .child_text("vxlan-network-identifier")
                .as_deref(),
            Some("5001")
        );
        assert_eq!(
            vn.uuid(),
            Some(derived_uuid("virtual-network", "default-domain:proj1:blue"))
        );
        assert!(vn.enabled());
        let li = &c.nodes[&NodeRef::new(
            "logical-interface",
            "default-global-system-config:qfx-1:xe-0/0/3:xe-0/0/3.20",
        )];
        assert_eq!(
            li.property_text("logical-interface-vlan-tag").as_deref(),
            Some("20")
        );
        // Both agents of the pair get the same switch config.
        let b = f.agent_config("tor-agent-b").unwrap();
        assert_eq!(b.object_count(), c.object_count());
        assert!(f.agent_config("nobody").is_none());
    }

    #[test]
    fn diffs_are_updates_then_deletes() {
        let mut f = Fabric::from_toml(SMALL).unwrap();
        let before = f.agent_config("tor-agent-a").unwrap();
        f.set_vni("blue", 6001).unwrap();
        let after = f.agent_config("tor-agent-a").unwrap();
        let d = after.diff_from(&before);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].op, ConfigOp::Update);
        assert_eq!(d[0].items.len(), 1);
        f.remove_binding("qfx-1", "xe-0/0/3", 20).unwrap();
        let removed = f.agent_config("tor-agent-a").unwrap();
        let d = removed.diff_from(&after);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].op, ConfigOp::Delete);
        // Links are deleted before the nodes they join.
        let first_node = d[0]
            .items
            .iter()
            .position(|i| matches!(i, ConfigItem::Node(_)))
            .unwrap();
        assert!(d[0].items[..first_node]
            .iter()
            .all(|i| matches!(i, ConfigItem::Link(_))));
        assert!(removed.diff_from(&removed).is_empty());
        assert_eq!(after.full_push()[0].items.len(), after.object_count());
    }

    #[test]
    fn rejects_bad_fabrics_precisely() {
        let cases = [
            (SMALL.replace("vni = 5001", ""), "no vni"),
            (SMALL.replace("vlan = 20", "vlan = 5000"), "vlan"),
            (
                SMALL.replace(
                    "interface = \"xe-0/0/3\"\nvlan",
                    "interface = \"xe-9\"\nvlan",
                ),
                "no interface",
            ),
            (
                SMALL.replace("virtual_network = \"blue\"", "virtual_network = \"red\""),
                "unknown virtual network",
            ),
            (
                SMALL.replace("\"tor-agent-a\", \"tor-agent-b\"", "\"tor-agent-z\""),
                "unknown tor_agent",
            ),
            (
                SMALL.replace("name = \"tor-agent-b\"", "name = \"tor-config\""),
                "must not contain",
            ),
            (SMALL.replace("192.0.2.21", "not-an-ip"), "IPv4"),
            (SMALL.replace("02:AA:BB:00:00:01", "zz"), "MAC"),
            (
                SMALL.replace("network_id = 5", "network_id = 0"),
                "network_id",
            ),
            (format!("{SMALL}\nbogus = 1\n"), "unknown field"),
        ];
        for (text, want) in cases {
            let err = Fabric::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        let mut f = Fabric::from_toml(SMALL).unwrap();
        let copy = f.clone();
        assert!(f.add_binding(f.bindings[0].clone()).is_err());
        assert_eq!(f, copy, "a failed change leaves the fabric untouched");
        f.remove_virtual_network("default-domain:proj1:blue")
            .unwrap();
        assert!(f.bindings.is_empty() && f.virtual_networks.is_empty());
    }

    #[test]
    fn derived_uuids_are_stable_and_distinct() {
        let a = derived_uuid("virtual-network", "default-domain:p:blue");
        assert_eq!(a, derived_uuid("virtual-network", "default-domain:p:blue"));
        assert_ne!(a, derived_uuid("virtual-network", "default-domain:p:red"));
        assert_ne!(a, derived_uuid("routing-instance", "default-domain:p:blue"));
        assert_eq!(a.get_version_num(), 8);
    }

    proptest::proptest! {
        /// Arbitrary (mostly broken) TOML never panics the loader: it parses or errors.
        #[test]
        fn loader_never_panics(s in "[\\[\\]a-z_=\" 0-9.:\n,-]{0,300}") {
            let _ = Fabric::from_toml(&s);
        }

        /// Mutations of a valid file either load or give a precise error, never a panic.
        #[test]
        fn mutated_files_never_panic(cut in 0usize..2000, insert in "[\\[\\]a-z_=\" 0-9:\n-]{0,20}") {
            let mut t = SMALL.to_string();
            let at = cut % (t.len() + 1);
            let at = (0..=at).rev().find(|i| t.is_char_boundary(*i)).unwrap_or(0);
            t.insert_str(at, &insert);
            if let Ok(f) = Fabric::from_toml(&t) {
                for vr in &f.virtual_routers {
                    let _ = f.agent_config(&vr.name);
                }
            }
        }
    }
}
