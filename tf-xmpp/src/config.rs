//! The config channel: IFMap-over-XMPP config push (XMPP.md §3.2, §3.3).

use crate::element::{leaf, Element};
use crate::error::StanzaError;
use crate::header::CN_JID;
use crate::stanza::{Stanza, StanzaKind};
use uuid::Uuid;

/// At most this many objects per config iq; a link counts as 2 (§3.2).
pub const MAX_OBJECTS_PER_IQ: usize = 16;

/// A node reference inside a `<link>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeRef {
    pub type_name: String,
    pub name: String,
}

impl NodeRef {
    pub fn new(type_name: impl Into<String>, name: impl Into<String>) -> Self {
        NodeRef {
            type_name: type_name.into(),
            name: name.into(),
        }
    }
}

/// An IFMap node: type, FQ name and (on update) its complete set of properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfmapNode {
    pub type_name: String,
    pub name: String,
    pub properties: Vec<Element>,
}

impl IfmapNode {
    pub fn new(type_name: impl Into<String>, name: impl Into<String>) -> Self {
        IfmapNode {
            type_name: type_name.into(),
            name: name.into(),
            properties: Vec::new(),
        }
    }

    /// Builder: appends a property element.
    pub fn prop(mut self, property: Element) -> Self {
        self.properties.push(property);
        self
    }

    /// Builder: appends `<name>value</name>`.
    pub fn prop_text(self, name: &str, value: impl ToString) -> Self {
        self.prop(leaf(name, value))
    }

    pub fn node_ref(&self) -> NodeRef {
        NodeRef::new(self.type_name.clone(), self.name.clone())
    }

    /// The property element with this name.
    pub fn property(&self, name: &str) -> Option<&Element> {
        self.properties.iter().find(|p| p.name == name)
    }

    /// Trimmed text of a scalar property.
    pub fn property_text(&self, name: &str) -> Option<String> {
        self.property(name).map(|p| p.text().trim().to_string())
    }

    /// The UUID in `id-perms/uuid` (mslong/lslong), if present and well formed.
    pub fn uuid(&self) -> Option<Uuid> {
        let uuid = self.property("id-perms")?.child("uuid")?;
        let ms = uuid.child_text("uuid-mslong")?.parse::<u64>().ok()?;
        let ls = uuid.child_text("uuid-lslong")?.parse::<u64>().ok()?;
        Some(uuid_from_halves(ms, ls))
    }

    /// `id-perms/enable` (absent means enabled).
    pub fn enabled(&self) -> bool {
        self.property("id-perms")
            .and_then(|p| p.child_text("enable"))
            .is_none_or(|e| e != "false")
    }
}

/// A `<link>`: two nodes and the link's metadata name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfmapLink {
    pub left: NodeRef,
    pub right: NodeRef,
    pub metadata: String,
}

/// One object in a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigItem {
    Node(IfmapNode),
    Link(IfmapLink),
}

impl ConfigItem {
    fn weight(&self) -> usize {
        match self {
            ConfigItem::Node(_) => 1,
            ConfigItem::Link(_) => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOp {
    Update,
    Delete,
}

/// An `<update>` or `<delete>` section; sections apply in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSection {
    pub op: ConfigOp,
    pub items: Vec<ConfigItem>,
}

/// The VxLAN id an agent derives for a `virtual-network` node (§3.3), given the
/// `vxlan-network-identifier-mode` of `global-vrouter-config` (`None` or unknown = automatic):
/// configured mode takes `virtual-network-properties/vxlan-network-identifier`; automatic mode
/// takes `virtual-network-network-id`, else `virtual-network-properties/network-id`.
/// `None` when the value is missing, zero or out of range.
pub fn virtual_network_vni(vxlan_mode: Option<&str>, vn: &IfmapNode) -> Option<u32> {
    let props = vn.property("virtual-network-properties");
    let from_props = |name: &str| {
        props
            .and_then(|p| p.child_text(name))
            .and_then(|t| t.parse::<u32>().ok())
    };
    let vni = match vxlan_mode {
        Some("configured") => from_props("vxlan-network-identifier"),
        _ => vn
            .property_text("virtual-network-network-id")
            .and_then(|t| t.parse::<u32>().ok())
            .or_else(|| from_props("network-id")),
    }?;
    (1..=16_777_215).contains(&vni).then_some(vni)
}

/// (mslong, lslong): the big-endian halves of a UUID (§3.2).
pub fn uuid_halves(u: Uuid) -> (u64, u64) {
    let v = u.as_u128();
    ((v >> 64) as u64, v as u64)
}

pub fn uuid_from_halves(ms: u64, ls: u64) -> Uuid {
    Uuid::from_u128(((ms as u128) << 64) | ls as u128)
}

/// `<id-perms>` with the UUID halves and `<enable>`.
pub fn id_perms(u: Uuid, enable: bool) -> Element {
    let (ms, ls) = uuid_halves(u);
    Element::new("id-perms")
        .child_with(
            Element::new("uuid")
                .leaf("uuid-mslong", ms)
                .leaf("uuid-lslong", ls),
        )
        .leaf("enable", enable)
}

fn node_ref_from(el: &Element) -> Result<NodeRef, StanzaError> {
    Ok(NodeRef {
        type_name: el
            .attr("type")
            .ok_or(StanzaError::MissingAttr("node@type"))?
            .to_string(),
        name: el
            .child_text("name")
            .ok_or(StanzaError::Missing("node/name"))?,
    })
}

/// Decodes the sections of a config iq (`<config>` child), in document order. Unknown
/// children are ignored.
pub fn decode_config_push(stanza: &Stanza) -> Result<Vec<ConfigSection>, StanzaError> {
    if stanza.kind != StanzaKind::Iq {
        return Err(StanzaError::Unexpected("config push must be an iq".into()));
    }
    let config = stanza
        .element
        .child("config")
        .ok_or(StanzaError::Missing("config"))?;
    let mut sections = Vec::new();
    for section in config.elements() {
        let op = match section.name.as_str() {
            "update" => ConfigOp::Update,
            "delete" => ConfigOp::Delete,
            _ => continue,
        };
        let mut items = Vec::new();
        for obj in section.elements() {
            match obj.name.as_str() {
                "node" => {
                    let r = node_ref_from(obj)?;
                    let properties = obj
                        .elements()
                        .filter(|p| p.name != "name")
                        .cloned()
                        .collect();
                    items.push(ConfigItem::Node(IfmapNode {
                        type_name: r.type_name,
                        name: r.name,
                        properties,
                    }));
                }
                "link" => {
                    let mut nodes = obj.children_named("node");
                    let left =
                        node_ref_from(nodes.next().ok_or(StanzaError::Missing("link/node"))?)?;
                    let right =
                        node_ref_from(nodes.next().ok_or(StanzaError::Missing("link/node"))?)?;
                    let metadata = obj
                        .child("metadata")
                        .and_then(|m| m.attr("type"))
                        .ok_or(StanzaError::MissingAttr("link/metadata@type"))?
                        .to_string();
                    items.push(ConfigItem::Link(IfmapLink {
                        left,
                        right,
                        metadata,
                    }));
                }
                _ => {}
            }
        }
        sections.push(ConfigSection { op, items });
    }
    Ok(sections)
}

fn item_element(item: &ConfigItem, op: ConfigOp) -> Element {
    match item {
        ConfigItem::Node(n) => {
            let mut el = Element::new("node")
                .attr_with("type", n.type_name.clone())
                .leaf("name", &n.name);
            if op == ConfigOp::Update {
                for p in &n.properties {
                    el.push(p.clone());
                }
            }
            el
        }
        ConfigItem::Link(l) => {
            let r = |n: &NodeRef| {
                Element::new("node")
                    .attr_with("type", n.type_name.clone())
                    .leaf("name", &n.name)
            };
            Element::new("link")
                .child_with(r(&l.left))
                .child_with(r(&l.right))
                .child_with(Element::new("metadata").attr_with("type", l.metadata.clone()))
        }
    }
}

/// Encodes sections as config iqs to `<agent>/config`, at most 16 objects per iq (a link
/// counts 2), each preceded by `<?xml version="1.0"?>` as a TF CN writes it. Document order
/// is kept across iqs.
pub fn encode_config_push(agent: &str, sections: &[ConfigSection]) -> Vec<String> {
    let mut out = Vec::new();
    let mut config = Element::new("config");
    let mut current: Option<(ConfigOp, Element)> = None;
    let mut weight = 0;
    let flush = |config: &mut Element, out: &mut Vec<String>| {
        if config.children.is_empty() {
            return;
        }
        let iq = Element::new("iq")
            .attr_with("type", "set")
            .attr_with("from", CN_JID)
            .attr_with("to", format!("{agent}/config"))
            .child_with(std::mem::replace(config, Element::new("config")));
        out.push(format!("<?xml version=\"1.0\"?>{}", iq.to_stanza()));
    };
    for section in sections {
        for item in &section.items {
            if weight + item.weight() > MAX_OBJECTS_PER_IQ && weight > 0 {
                if let Some((_, el)) = current.take() {
                    config.push(el);
                }
                flush(&mut config, &mut out);
                weight = 0;
            }
            match &mut current {
                Some((op, el)) if *op == section.op => el.push(item_element(item, section.op)),
                _ => {
                    if let Some((_, el)) = current.take() {
                        config.push(el);
                    }
                    let name = match section.op {
                        ConfigOp::Update => "update",
                        ConfigOp::Delete => "delete",
                    };
                    current = Some((
                        section.op,
                        Element::new(name).child_with(item_element(item, section.op)),
                    ));
                }
            }
            weight += item.weight();
        }
    }
    if let Some((_, el)) = current.take() {
        config.push(el);
    }
    flush(&mut config, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::{Frame, Framer};

    /// XMPP.md §3.2, verbatim.
    const PUSH: &str = r#"<?xml version="1.0"?>
<iq type="set" from="network-control@contrailsystems.com" to="tor-agent-a/config">
  <config>
    <update>
      <node type="virtual-network">
        <name>default-domain:proj1:blue</name>
        <id-perms><uuid><uuid-mslong>4551622027609198113</uuid-mslong><uuid-lslong>11100367162248481365</uuid-lslong></uuid><enable>true</enable></id-perms>
        <virtual-network-network-id>5</virtual-network-network-id>
      </node>
      <link>
        <node type="virtual-network"><name>default-domain:proj1:blue</name></node>
        <node type="routing-instance"><name>default-domain:proj1:blue:blue</name></node>
        <metadata type="virtual-network-routing-instance"/>
      </link>
    </update>
    <delete>
      <node type="logical-interface"><name>default-global-system-config:qfx-1:xe-0/0/3:xe-0/0/3.20</name></node>
    </delete>
  </config>
</iq>"#;

    fn parse_push(bytes: &str) -> Vec<ConfigSection> {
        let mut f = Framer::default();
        f.push(bytes.as_bytes());
        match f.next_frame().unwrap().unwrap() {
            Frame::Stanza(e) => decode_config_push(&Stanza::from_element(e).unwrap()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn spec_uuid() -> Uuid {
        Uuid::parse_str("3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55").unwrap()
    }

    #[test]
    fn vni_follows_the_vxlan_mode() {
        let vn = IfmapNode::new("virtual-network", "d:p:blue")
            .prop_text("virtual-network-network-id", 5)
            .prop(
                Element::new("virtual-network-properties").leaf("vxlan-network-identifier", 5001),
            );
        assert_eq!(virtual_network_vni(Some("configured"), &vn), Some(5001));
        assert_eq!(virtual_network_vni(Some("automatic"), &vn), Some(5));
        assert_eq!(virtual_network_vni(None, &vn), Some(5));
        let only_props = IfmapNode::new("virtual-network", "x")
            .prop(Element::new("virtual-network-properties").leaf("network-id", 7));
        assert_eq!(virtual_network_vni(None, &only_props), Some(7));
        assert_eq!(virtual_network_vni(Some("configured"), &only_props), None);
        let zero =
            IfmapNode::new("virtual-network", "x").prop_text("virtual-network-network-id", 0);
        assert_eq!(virtual_network_vni(None, &zero), None);
    }

    #[test]
    fn uuid_halves_match_the_spec_example() {
        assert_eq!(
            uuid_halves(spec_uuid()),
            (4551622027609198113, 11100367162248481365)
        );
        assert_eq!(
            uuid_from_halves(4551622027609198113, 11100367162248481365),
            spec_uuid()
        );
    }

    #[test]
    fn decodes_the_spec_push_in_document_order() {
        let sections = parse_push(PUSH);
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].op, ConfigOp::Update);
        let ConfigItem::Node(vn) = &sections[0].items[0] else {
            panic!()
        };
        assert_eq!(vn.type_name, "virtual-network");
        assert_eq!(vn.name, "default-domain:proj1:blue");
        assert_eq!(vn.uuid(), Some(spec_uuid()));
        assert!(vn.enabled());
        assert_eq!(
            vn.property_text("virtual-network-network-id").as_deref(),
            Some("5")
        );
        let ConfigItem::Link(link) = &sections[0].items[1] else {
            panic!()
        };
        assert_eq!(link.metadata, "virtual-network-routing-instance");
        assert_eq!(
            link.right,
            NodeRef::new("routing-instance", "default-domain:proj1:blue:blue")
        );
        assert_eq!(sections[1].op, ConfigOp::Delete);
        assert_eq!(sections[1].items.len(), 1);
    }

    #[test]
    fn encodes_what_it_decodes() {
        let vn = IfmapNode::new("virtual-network", "default-domain:proj1:blue")
            .prop(id_perms(spec_uuid(), true))
            .prop_text("virtual-network-network-id", 5);
        let sections = vec![
            ConfigSection {
                op: ConfigOp::Update,
                items: vec![
                    ConfigItem::Node(vn),
                    ConfigItem::Link(IfmapLink {
                        left: NodeRef::new("virtual-network", "default-domain:proj1:blue"),
                        right: NodeRef::new("routing-instance", "default-domain:proj1:blue:blue"),
                        metadata: "virtual-network-routing-instance".into(),
                    }),
                ],
            },
            ConfigSection {
                op: ConfigOp::Delete,
                items: vec![ConfigItem::Node(IfmapNode::new(
                    "logical-interface",
                    "default-global-system-config:qfx-1:xe-0/0/3:xe-0/0/3.20",
                ))],
            },
        ];
        let iqs = encode_config_push("tor-agent-a", &sections);
        assert_eq!(iqs.len(), 1);
        assert!(iqs[0].starts_with("<?xml version=\"1.0\"?><iq type=\"set\" from=\"network-control@contrailsystems.com\" to=\"tor-agent-a/config\"><config><update>"));
        assert_eq!(parse_push(&iqs[0]), sections);
        assert_eq!(parse_push(&iqs[0]), parse_push(PUSH));
    }

    #[test]
    fn batches_at_most_16_objects_keeping_order() {
        let mut items = Vec::new();
        for i in 0..20 {
            items.push(ConfigItem::Node(IfmapNode::new("t", format!("n{i}"))));
            items.push(ConfigItem::Link(IfmapLink {
                left: NodeRef::new("t", format!("n{i}")),
                right: NodeRef::new("u", "x"),
                metadata: "t-u".into(),
            }));
        }
        let sections = vec![
            ConfigSection {
                op: ConfigOp::Update,
                items: items.clone(),
            },
            ConfigSection {
                op: ConfigOp::Delete,
                items: items[..3].to_vec(),
            },
            ConfigSection {
                op: ConfigOp::Update,
                items: items[..1].to_vec(),
            },
        ];
        let iqs = encode_config_push("a", &sections);
        let mut flat: Vec<(ConfigOp, ConfigItem)> = Vec::new();
        for iq in &iqs {
            let decoded = parse_push(iq);
            let weight: usize = decoded
                .iter()
                .flat_map(|s| &s.items)
                .map(|i| i.weight())
                .sum();
            assert!(weight <= MAX_OBJECTS_PER_IQ, "{weight}");
            for s in decoded {
                for it in s.items {
                    flat.push((s.op, it));
                }
            }
        }
        let mut want: Vec<(ConfigOp, ConfigItem)> = Vec::new();
        for s in &sections {
            for it in &s.items {
                let it = match (s.op, it) {
                    (ConfigOp::Delete, ConfigItem::Node(n)) => {
                        ConfigItem::Node(IfmapNode::new(n.type_name.clone(), n.name.clone()))
                    }
                    (_, it) => it.clone(),
                };
                want.push((s.op, it));
            }
        }
        assert_eq!(flat, want);
        assert!(encode_config_push("a", &[]).is_empty());
    }
}
