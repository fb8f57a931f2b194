//! The EVPN ("enet", af 25 / safi 242) `entry` of XMPP.md §4.3, per TF's `xmpp_enet.xsd`.
//!
//! Encoding writes every member, empty ones included, in the schema's order, as TF does.
//! Decoding accepts members in any order, treats empty elements as unset and ignores unknown
//! elements.

use crate::element::{
    escape_attr_into, leaf, parse_bool_field, parse_u32_field, push_u64, write_leaf,
    write_leaf_bool, write_leaf_u32, Element,
};
use crate::error::StanzaError;

/// Address family L2VPN.
pub const AF_L2VPN: u32 = 25;
/// Contrail's "Enet" SAFI.
pub const SAFI_ENET: u32 = 242;
/// Next-hop address family IPv4.
pub const AF_INET: u32 = 1;
/// The broadcast (BUM) route's MAC.
pub const BROADCAST_MAC: &str = "ff:ff:ff:ff:ff:ff";

/// Path preferences used by TF agents (`oper/agent_path.h`).
pub mod preference {
    pub const HA_STALE: u32 = 1;
    pub const LOW: u32 = 100;
    pub const HIGH: u32 = 200;
}

/// `entry/nlri`: the route key (ethernet-tag, mac, address) plus family and multicast fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnetNlri {
    pub af: u32,
    pub safi: u32,
    pub ethernet_tag: u32,
    pub mac: String,
    /// `ip/len`.
    pub address: String,
    /// Non-empty (and not `0.0.0.0`) only for multicast (type 6) routes.
    pub group: String,
    pub source: String,
    pub flags: u32,
}

impl Default for EnetNlri {
    fn default() -> Self {
        EnetNlri {
            af: AF_L2VPN,
            safi: SAFI_ENET,
            ethernet_tag: 0,
            mac: String::new(),
            address: String::new(),
            group: String::new(),
            source: String::new(),
            flags: 0,
        }
    }
}

/// True when a `group`/`source` value means "unset": the CN writes `0.0.0.0` (§5.1).
pub fn is_unset_address(s: &str) -> bool {
    let s = s.trim();
    s.is_empty() || s == "0.0.0.0"
}

impl EnetNlri {
    /// A multicast (type 6) route has a set `group`.
    pub fn is_multicast(&self) -> bool {
        !is_unset_address(&self.group)
    }

    pub fn is_broadcast(&self) -> bool {
        self.mac.eq_ignore_ascii_case(BROADCAST_MAC)
    }

    /// The item id of §5.1: `[<tag>-]<mac>,<ip>/<plen>[,<group>,<source>]`.
    pub fn item_id(&self) -> String {
        let mut id = String::new();
        if self.ethernet_tag != 0 {
            id.push_str(&self.ethernet_tag.to_string());
            id.push('-');
        }
        id.push_str(&self.mac);
        id.push(',');
        id.push_str(&self.address);
        if self.is_multicast() {
            id.push(',');
            id.push_str(&self.group);
            id.push(',');
            id.push_str(if is_unset_address(&self.source) {
                "0.0.0.0"
            } else {
                &self.source
            });
        }
        id
    }

    /// Writes [`EnetNlri::item_id`] escaped as an attribute value.
    pub fn write_item_id_attr(&self, out: &mut String) {
        if self.ethernet_tag != 0 {
            push_u64(out, self.ethernet_tag.into());
            out.push('-');
        }
        escape_attr_into(&self.mac, out);
        out.push(',');
        escape_attr_into(&self.address, out);
        if self.is_multicast() {
            out.push(',');
            escape_attr_into(&self.group, out);
            out.push(',');
            escape_attr_into(
                if is_unset_address(&self.source) {
                    "0.0.0.0"
                } else {
                    &self.source
                },
                out,
            );
        }
    }

    /// Writes [`EnetNlri::publish_node`] escaped as an attribute value.
    pub fn write_publish_node_attr(&self, out: &mut String) {
        push_u64(out, self.af.into());
        out.push('/');
        push_u64(out, self.safi.into());
        out.push('/');
        escape_attr_into(&self.mac, out);
        out.push(',');
        escape_attr_into(&self.address, out);
    }

    /// The agent's publish node of §4.2: `25/242/<mac>,<ip>/<plen>`.
    pub fn publish_node(&self) -> String {
        format!("{}/{}/{},{}", self.af, self.safi, self.mac, self.address)
    }

    fn to_element(&self, unset_group: &str) -> Element {
        let group = if is_unset_address(&self.group) {
            unset_group
        } else {
            &self.group
        };
        let source = if is_unset_address(&self.source) {
            unset_group
        } else {
            &self.source
        };
        Element::new("nlri")
            .leaf("af", self.af)
            .leaf("safi", self.safi)
            .leaf("ethernet-tag", self.ethernet_tag)
            .leaf("mac", &self.mac)
            .leaf("address", &self.address)
            .leaf("group", group)
            .leaf("source", source)
            .leaf("flags", self.flags)
    }

    /// Writes exactly what `to_element(unset_group).to_xml()` gives, without the tree.
    fn write_xml(&self, unset_group: &str, out: &mut String) {
        let unset = |v: &'_ str| is_unset_address(v);
        out.push_str("<nlri>");
        write_leaf_u32(out, "af", self.af);
        write_leaf_u32(out, "safi", self.safi);
        write_leaf_u32(out, "ethernet-tag", self.ethernet_tag);
        write_leaf(out, "mac", &self.mac);
        write_leaf(out, "address", &self.address);
        let group = if unset(&self.group) {
            unset_group
        } else {
            &self.group
        };
        let source = if unset(&self.source) {
            unset_group
        } else {
            &self.source
        };
        write_leaf(out, "group", group);
        write_leaf(out, "source", source);
        write_leaf_u32(out, "flags", self.flags);
        out.push_str("</nlri>");
    }

    fn from_element(el: &Element) -> Result<Self, StanzaError> {
        Ok(EnetNlri {
            af: parse_u32_field("nlri/af", el.child_text("af"))?,
            safi: parse_u32_field("nlri/safi", el.child_text("safi"))?,
            ethernet_tag: parse_u32_field("nlri/ethernet-tag", el.child_text("ethernet-tag"))?,
            mac: el.child_text("mac").unwrap_or_default(),
            address: el.child_text("address").unwrap_or_default(),
            group: el.child_text("group").unwrap_or_default(),
            source: el.child_text("source").unwrap_or_default(),
            flags: parse_u32_field("nlri/flags", el.child_text("flags"))?,
        })
    }
}

/// Parses an item/retract id of §5.1 back into (ethernet-tag, mac, address, group, source).
/// Receivers take the key from `nlri` for items; this is for retracts.
pub fn parse_item_id(id: &str) -> Result<EnetNlri, StanzaError> {
    let bad = || StanzaError::invalid("item id", id);
    let mut parts = id.split(',');
    let first = parts.next().ok_or_else(bad)?;
    let address = parts.next().ok_or_else(bad)?.to_string();
    let group = parts.next().map(str::to_string).unwrap_or_default();
    let source = parts.next().map(str::to_string).unwrap_or_default();
    if parts.next().is_some() || !address.contains('/') {
        return Err(bad());
    }
    // A MAC never contains '-', so a '-' separates the ethernet tag.
    let (tag, mac) = match first.split_once('-') {
        Some((tag, mac)) => (tag.parse::<u32>().map_err(|_| bad())?, mac),
        None => (0, first),
    };
    if mac.is_empty() {
        return Err(bad());
    }
    Ok(EnetNlri {
        ethernet_tag: tag,
        mac: mac.to_string(),
        address,
        group,
        source,
        ..EnetNlri::default()
    })
}

/// One `next-hop` (also used in `olist` / `leaf-olist`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnetNextHop {
    pub af: u32,
    pub address: String,
    pub mac: String,
    pub label: u32,
    pub l3_label: u32,
    /// `gre`, `udp`, `vxlan`; unknown values are kept (they make a path infeasible).
    pub tunnel_encapsulation: Vec<String>,
    pub tags: Vec<u32>,
    pub local_sequence_number: u32,
}

impl Default for EnetNextHop {
    fn default() -> Self {
        EnetNextHop {
            af: AF_INET,
            address: String::new(),
            mac: String::new(),
            label: 0,
            l3_label: 0,
            tunnel_encapsulation: Vec::new(),
            tags: Vec::new(),
            local_sequence_number: 0,
        }
    }
}

impl EnetNextHop {
    /// A VXLAN next hop to `vtep` with label = VNI, as a ToR agent publishes it.
    pub fn vxlan(vtep: impl Into<String>, vni: u32) -> Self {
        EnetNextHop {
            address: vtep.into(),
            label: vni,
            tunnel_encapsulation: vec!["vxlan".into()],
            ..EnetNextHop::default()
        }
    }

    fn to_element(&self) -> Element {
        let mut encaps = Element::new("tunnel-encapsulation-list");
        for e in &self.tunnel_encapsulation {
            encaps.push(leaf("tunnel-encapsulation", e));
        }
        let mut tags = Element::new("tag-list");
        for t in &self.tags {
            tags.push(leaf("tag", t));
        }
        Element::new("next-hop")
            .leaf("af", self.af)
            .leaf("address", &self.address)
            .leaf("mac", &self.mac)
            .leaf("label", self.label)
            .leaf("l3-label", self.l3_label)
            .child_with(encaps)
            .child_with(tags)
            .leaf("local-sequence-number", self.local_sequence_number)
    }

    /// Writes exactly what `to_element().to_xml()` gives, without the tree.
    fn write_xml(&self, out: &mut String) {
        out.push_str("<next-hop>");
        write_leaf_u32(out, "af", self.af);
        write_leaf(out, "address", &self.address);
        write_leaf(out, "mac", &self.mac);
        write_leaf_u32(out, "label", self.label);
        write_leaf_u32(out, "l3-label", self.l3_label);
        if self.tunnel_encapsulation.is_empty() {
            out.push_str("<tunnel-encapsulation-list/>");
        } else {
            out.push_str("<tunnel-encapsulation-list>");
            for e in &self.tunnel_encapsulation {
                write_leaf(out, "tunnel-encapsulation", e);
            }
            out.push_str("</tunnel-encapsulation-list>");
        }
        if self.tags.is_empty() {
            out.push_str("<tag-list/>");
        } else {
            out.push_str("<tag-list>");
            for t in &self.tags {
                write_leaf_u32(out, "tag", *t);
            }
            out.push_str("</tag-list>");
        }
        write_leaf_u32(out, "local-sequence-number", self.local_sequence_number);
        out.push_str("</next-hop>");
    }

    fn from_element(el: &Element) -> Result<Self, StanzaError> {
        let mut encaps = Vec::new();
        if let Some(list) = el.child("tunnel-encapsulation-list") {
            for e in list.children_named("tunnel-encapsulation") {
                let t = e.text().trim().to_string();
                if !t.is_empty() {
                    encaps.push(t);
                }
            }
        }
        let mut tags = Vec::new();
        if let Some(list) = el.child("tag-list") {
            for t in list.children_named("tag") {
                tags.push(parse_u32_field(
                    "next-hop/tag-list/tag",
                    Some(t.text().trim().into()),
                )?);
            }
        }
        Ok(EnetNextHop {
            af: parse_u32_field("next-hop/af", el.child_text("af"))?,
            address: el.child_text("address").unwrap_or_default(),
            mac: el.child_text("mac").unwrap_or_default(),
            label: parse_u32_field("next-hop/label", el.child_text("label"))?,
            l3_label: parse_u32_field("next-hop/l3-label", el.child_text("l3-label"))?,
            tunnel_encapsulation: encaps,
            tags,
            local_sequence_number: parse_u32_field(
                "next-hop/local-sequence-number",
                el.child_text("local-sequence-number"),
            )?,
        })
    }
}

/// `entry@mobility`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Mobility {
    pub seqno: u32,
    pub sticky: bool,
}

/// The complete EVPN entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnetEntry {
    pub nlri: EnetNlri,
    pub next_hops: Vec<EnetNextHop>,
    pub olist: Vec<EnetNextHop>,
    pub virtual_network: String,
    pub mobility: Mobility,
    pub sequence_number: u32,
    pub security_groups: Vec<u32>,
    /// 0 = not set (ranks below everything, §6.1).
    pub local_preference: u32,
    pub med: u32,
    pub edge_replication_not_supported: bool,
    pub assisted_replication_supported: bool,
    pub leaf_olist: Vec<EnetNextHop>,
    pub replicator_address: String,
    pub etree_leaf: bool,
}

impl EnetEntry {
    /// A ToR local MAC as the active agent exports it (§4.4): address `0.0.0.0/32`,
    /// local-preference 100, sequence ≥1, E-Tree leaf.
    pub fn tor_mac(vni: u32, mac: &str, tor_vtep: &str, sequence: u32) -> Self {
        EnetEntry {
            nlri: EnetNlri {
                ethernet_tag: vni,
                mac: mac.to_ascii_lowercase(),
                address: "0.0.0.0/32".into(),
                ..EnetNlri::default()
            },
            next_hops: vec![EnetNextHop::vxlan(tor_vtep, vni)],
            local_preference: preference::LOW,
            sequence_number: sequence,
            etree_leaf: true,
            ..EnetEntry::default()
        }
    }

    /// The ToR broadcast route (§4.5): key `ff:ff:ff:ff:ff:ff,<tor-vtep>/32`, replicator = TSN.
    pub fn tor_broadcast(vni: u32, tor_vtep: &str, tsn_ip: &str) -> Self {
        EnetEntry {
            nlri: EnetNlri {
                ethernet_tag: vni,
                mac: BROADCAST_MAC.into(),
                address: format!("{tor_vtep}/32"),
                ..EnetNlri::default()
            },
            next_hops: vec![EnetNextHop::vxlan(tor_vtep, vni)],
            local_preference: preference::LOW,
            sequence_number: 0,
            replicator_address: tsn_ip.into(),
            ..EnetEntry::default()
        }
    }

    /// True when one of the next hops is `address`: an agent recognises its own routes
    /// reflected back by the CN this way (§5.1, checklist #26) and must not program them.
    pub fn has_next_hop(&self, address: &str) -> bool {
        self.next_hops.iter().any(|nh| nh.address == address)
    }

    /// The MAC-mobility sequence number the CN compares: `mobility@seqno` when non-zero,
    /// otherwise `sequence-number` (§4.3, §6.1).
    pub fn effective_sequence(&self) -> u32 {
        if self.mobility.seqno != 0 {
            self.mobility.seqno
        } else {
            self.sequence_number
        }
    }

    /// `<entry>` with every member, as TF writes it. `unset_group` is what to write for an
    /// unset group/source: agents leave them empty, the CN writes `0.0.0.0` (§5.1).
    pub fn to_element_with(&self, unset_group: &str) -> Element {
        let olist = |name: &str, list: &[EnetNextHop]| {
            let mut el = Element::new(name);
            for nh in list {
                el.push(nh.to_element());
            }
            el
        };
        let mut sgs = Element::new("security-group-list");
        for sg in &self.security_groups {
            sgs.push(leaf("security-group", sg));
        }
        Element::new("entry")
            .child_with(self.nlri.to_element(unset_group))
            .child_with(olist("next-hops", &self.next_hops))
            .child_with(olist("olist", &self.olist))
            .leaf("virtual-network", &self.virtual_network)
            .child_with(
                Element::new("mobility")
                    .attr_with("seqno", self.mobility.seqno.to_string())
                    .attr_with(
                        "sticky",
                        if self.mobility.sticky {
                            "true"
                        } else {
                            "false"
                        },
                    ),
            )
            .leaf("sequence-number", self.sequence_number)
            .child_with(sgs)
            .leaf("local-preference", self.local_preference)
            .leaf("med", self.med)
            .leaf(
                "edge-replication-not-supported",
                self.edge_replication_not_supported,
            )
            .leaf(
                "assisted-replication-supported",
                self.assisted_replication_supported,
            )
            .child_with(olist("leaf-olist", &self.leaf_olist))
            .leaf("replicator-address", &self.replicator_address)
            .leaf("etree-leaf", self.etree_leaf)
    }

    /// Writes `<entry>` exactly as `to_element_with(unset_group).to_xml()` would, without
    /// building the tree (the hot path of publishing and reflecting routes).
    pub fn write_xml_with(&self, unset_group: &str, out: &mut String) {
        fn list(out: &mut String, name: &str, hops: &[EnetNextHop]) {
            out.push('<');
            out.push_str(name);
            if hops.is_empty() {
                out.push_str("/>");
                return;
            }
            out.push('>');
            for nh in hops {
                nh.write_xml(out);
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        out.push_str("<entry>");
        self.nlri.write_xml(unset_group, out);
        list(out, "next-hops", &self.next_hops);
        list(out, "olist", &self.olist);
        write_leaf(out, "virtual-network", &self.virtual_network);
        out.push_str("<mobility seqno=\"");
        push_u64(out, self.mobility.seqno.into());
        out.push_str(if self.mobility.sticky {
            "\" sticky=\"true\"/>"
        } else {
            "\" sticky=\"false\"/>"
        });
        write_leaf_u32(out, "sequence-number", self.sequence_number);
        if self.security_groups.is_empty() {
            out.push_str("<security-group-list/>");
        } else {
            out.push_str("<security-group-list>");
            for sg in &self.security_groups {
                write_leaf_u32(out, "security-group", *sg);
            }
            out.push_str("</security-group-list>");
        }
        write_leaf_u32(out, "local-preference", self.local_preference);
        write_leaf_u32(out, "med", self.med);
        write_leaf_bool(
            out,
            "edge-replication-not-supported",
            self.edge_replication_not_supported,
        );
        write_leaf_bool(
            out,
            "assisted-replication-supported",
            self.assisted_replication_supported,
        );
        list(out, "leaf-olist", &self.leaf_olist);
        write_leaf(out, "replicator-address", &self.replicator_address);
        write_leaf_bool(out, "etree-leaf", self.etree_leaf);
        out.push_str("</entry>");
    }

    /// `<entry>` as an agent writes it (empty group/source).
    pub fn to_element(&self) -> Element {
        self.to_element_with("")
    }

    /// Decodes an `<entry>`; members may come in any order, empty ones mean unset.
    pub fn from_element(el: &Element) -> Result<Self, StanzaError> {
        if el.name != "entry" {
            return Err(StanzaError::Missing("entry"));
        }
        let nlri = EnetNlri::from_element(el.child("nlri").ok_or(StanzaError::Missing("nlri"))?)?;
        let hops = |name: &str| -> Result<Vec<EnetNextHop>, StanzaError> {
            match el.child(name) {
                Some(list) => list
                    .children_named("next-hop")
                    .map(EnetNextHop::from_element)
                    .collect(),
                None => Ok(Vec::new()),
            }
        };
        let mobility = match el.child("mobility") {
            Some(m) => Mobility {
                seqno: parse_u32_field("mobility@seqno", m.attr("seqno").map(|s| s.trim().into()))?,
                sticky: parse_bool_field(
                    "mobility@sticky",
                    m.attr("sticky").map(|s| s.trim().into()),
                )?,
            },
            None => Mobility::default(),
        };
        let mut security_groups = Vec::new();
        if let Some(list) = el.child("security-group-list") {
            for sg in list.children_named("security-group") {
                security_groups.push(parse_u32_field(
                    "security-group",
                    Some(sg.text().trim().into()),
                )?);
            }
        }
        Ok(EnetEntry {
            nlri,
            next_hops: hops("next-hops")?,
            olist: hops("olist")?,
            virtual_network: el.child_text("virtual-network").unwrap_or_default(),
            mobility,
            sequence_number: parse_u32_field("sequence-number", el.child_text("sequence-number"))?,
            security_groups,
            local_preference: parse_u32_field(
                "local-preference",
                el.child_text("local-preference"),
            )?,
            med: parse_u32_field("med", el.child_text("med"))?,
            edge_replication_not_supported: parse_bool_field(
                "edge-replication-not-supported",
                el.child_text("edge-replication-not-supported"),
            )?,
            assisted_replication_supported: parse_bool_field(
                "assisted-replication-supported",
                el.child_text("assisted-replication-supported"),
            )?,
            leaf_olist: hops("leaf-olist")?,
            replicator_address: el.child_text("replicator-address").unwrap_or_default(),
            etree_leaf: parse_bool_field("etree-leaf", el.child_text("etree-leaf"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XMPP.md §4.4, verbatim.
    const TOR_MAC: &str = r#"<item><entry>
 <nlri><af>25</af><safi>242</safi><ethernet-tag>5001</ethernet-tag><mac>02:aa:bb:00:00:01</mac><address>0.0.0.0/32</address><group/><source/><flags>0</flags></nlri>
 <next-hops><next-hop><af>1</af><address>192.0.2.21</address><label>5001</label>
  <tunnel-encapsulation-list><tunnel-encapsulation>vxlan</tunnel-encapsulation></tunnel-encapsulation-list></next-hop></next-hops>
 <virtual-network/><mobility seqno="0" sticky="false"/><sequence-number>1</sequence-number>
 <local-preference>100</local-preference><med>0</med><etree-leaf>true</etree-leaf>
 <edge-replication-not-supported>false</edge-replication-not-supported><assisted-replication-supported>false</assisted-replication-supported>
</entry></item>"#;

    /// XMPP.md §4.5, verbatim.
    const TOR_BUM: &str = r#"<item><entry>
 <nlri><af>25</af><safi>242</safi><ethernet-tag>5001</ethernet-tag><mac>ff:ff:ff:ff:ff:ff</mac><address>192.0.2.21/32</address><group/><source/><flags>0</flags></nlri>
 <next-hops><next-hop><af>1</af><address>192.0.2.21</address><label>5001</label>
  <tunnel-encapsulation-list><tunnel-encapsulation>vxlan</tunnel-encapsulation></tunnel-encapsulation-list></next-hop></next-hops>
 <sequence-number>0</sequence-number><local-preference>100</local-preference><med>0</med>
 <replicator-address>198.51.100.7</replicator-address>
 <edge-replication-not-supported>false</edge-replication-not-supported><assisted-replication-supported>false</assisted-replication-supported>
</entry></item>"#;

    fn entry_of(item: &str) -> EnetEntry {
        let item = Element::parse(item).unwrap();
        EnetEntry::from_element(item.child("entry").unwrap()).unwrap()
    }

    #[test]
    fn decodes_the_tor_mac_example_and_matches_the_builder() {
        let e = entry_of(TOR_MAC);
        assert_eq!(
            e,
            EnetEntry::tor_mac(5001, "02:AA:BB:00:00:01", "192.0.2.21", 1)
        );
        assert_eq!(e.nlri.item_id(), "5001-02:aa:bb:00:00:01,0.0.0.0/32");
        assert_eq!(e.nlri.publish_node(), "25/242/02:aa:bb:00:00:01,0.0.0.0/32");
        assert!(!e.nlri.is_multicast());
        assert!(e.has_next_hop("192.0.2.21") && !e.has_next_hop("192.0.2.22"));
    }

    #[test]
    fn decodes_the_broadcast_example_and_matches_the_builder() {
        let e = entry_of(TOR_BUM);
        assert_eq!(
            e,
            EnetEntry::tor_broadcast(5001, "192.0.2.21", "198.51.100.7")
        );
        assert_eq!(
            e.nlri.publish_node(),
            "25/242/ff:ff:ff:ff:ff:ff,192.0.2.21/32"
        );
        assert!(e.nlri.is_broadcast());
    }

    #[test]
    fn writes_every_member_in_schema_order() {
        let xml = EnetEntry::tor_mac(5001, "02:aa:bb:00:00:01", "192.0.2.21", 1)
            .to_element()
            .to_xml();
        let order = [
            "<nlri>",
            "<af>25</af><safi>242</safi><ethernet-tag>5001</ethernet-tag>",
            "<group/><source/><flags>0</flags>",
            "<next-hops>",
            "<mac/><label>5001</label><l3-label>0</l3-label>",
            "<tunnel-encapsulation>vxlan</tunnel-encapsulation>",
            "<tag-list/>",
            "<local-sequence-number>0</local-sequence-number>",
            "<olist/>",
            "<virtual-network/>",
            "<mobility seqno=\"0\" sticky=\"false\"/>",
            "<sequence-number>1</sequence-number>",
            "<security-group-list/>",
            "<local-preference>100</local-preference>",
            "<med>0</med>",
            "<edge-replication-not-supported>false</edge-replication-not-supported>",
            "<assisted-replication-supported>false</assisted-replication-supported>",
            "<leaf-olist/>",
            "<replicator-address/>",
            "<etree-leaf>true</etree-leaf>",
        ];
        let mut at = 0;
        for piece in order {
            let found = xml[at..]
                .find(piece)
                .unwrap_or_else(|| panic!("{piece} after {at} in {xml}"));
            at += found + piece.len();
        }
        let cn = EnetEntry::tor_mac(1, "02:aa:bb:00:00:01", "192.0.2.21", 1)
            .to_element_with("0.0.0.0")
            .to_xml();
        assert!(cn.contains("<group>0.0.0.0</group><source>0.0.0.0</source>"));
        // The CN's 0.0.0.0 means unset.
        let back = EnetEntry::from_element(&Element::parse(&cn).unwrap()).unwrap();
        assert!(!back.nlri.is_multicast());
    }

    #[test]
    fn direct_writer_matches_the_tree() {
        let mut e = EnetEntry::tor_mac(5001, "02:aa:bb:00:00:01", "192.0.2.21", 7);
        let mut cases = vec![e.clone()];
        e.nlri.group = "225.1.1.1".into();
        e.nlri.source = " ".into();
        e.next_hops[0].tags = vec![1, 4_000_000_000];
        e.next_hops[0].tunnel_encapsulation.push(String::new());
        e.next_hops[0].mac = "a<b>&\"c'\n".into();
        e.olist = e.next_hops.clone();
        e.leaf_olist = vec![EnetNextHop::default()];
        e.virtual_network = "default-domain:p:&blue".into();
        e.mobility = Mobility {
            seqno: 9,
            sticky: true,
        };
        e.security_groups = vec![8000001, 0];
        e.replicator_address = "198.51.100.7".into();
        cases.push(e);
        cases.push(EnetEntry::default());
        cases.push(EnetEntry::tor_broadcast(1, "192.0.2.21", "198.51.100.7"));
        for e in &cases {
            for unset in ["", "0.0.0.0"] {
                let mut direct = String::new();
                e.write_xml_with(unset, &mut direct);
                assert_eq!(direct, e.to_element_with(unset).to_xml());
            }
            let mut id = String::new();
            e.nlri.write_item_id_attr(&mut id);
            assert_eq!(id, crate::element::escape_attr(&e.nlri.item_id()));
            let mut node = String::new();
            e.nlri.write_publish_node_attr(&mut node);
            assert_eq!(node, crate::element::escape_attr(&e.nlri.publish_node()));
        }
    }

    #[test]
    fn tolerant_of_unknown_and_empty_members() {
        let e = EnetEntry::from_element(
            &Element::parse(
                "<entry><future>1</future><nlri><mac>aa</mac><address>1.1.1.1/32</address><af/></nlri><med></med><mobility/></entry>",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(e.nlri.af, 0);
        assert_eq!(e.med, 0);
        assert!(e.next_hops.is_empty());
        let err = EnetEntry::from_element(
            &Element::parse("<entry><nlri/><local-preference>x</local-preference></entry>")
                .unwrap(),
        );
        assert!(err.is_err());
        assert!(EnetEntry::from_element(&Element::parse("<entry/>").unwrap()).is_err());
    }

    #[test]
    fn item_ids_round_trip() {
        for (id, tag, mac, addr, group) in [
            (
                "5001-02:cc:dd:00:00:09,0.0.0.0/32",
                5001,
                "02:cc:dd:00:00:09",
                "0.0.0.0/32",
                "",
            ),
            (
                "02:cc:dd:00:00:0a,10.1.1.5/32",
                0,
                "02:cc:dd:00:00:0a",
                "10.1.1.5/32",
                "",
            ),
            (
                "7-01:00:5e:00:00:01,0.0.0.0/32,225.1.1.1,0.0.0.0",
                7,
                "01:00:5e:00:00:01",
                "0.0.0.0/32",
                "225.1.1.1",
            ),
        ] {
            let n = parse_item_id(id).unwrap();
            assert_eq!(
                (
                    n.ethernet_tag,
                    n.mac.as_str(),
                    n.address.as_str(),
                    n.group.as_str()
                ),
                (tag, mac, addr, group)
            );
            assert_eq!(n.item_id(), id);
        }
        for bad in [
            "",
            "aa",
            "x-aa,1.1.1.1/32",
            "aa,1.1.1.1",
            "-aa,1/1",
            "a,b/1,c,d,e",
        ] {
            assert!(parse_item_id(bad).is_err(), "{bad}");
        }
    }
}
