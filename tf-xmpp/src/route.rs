//! The route channel: agent-to-CN iqs (XMPP.md §4.1, §4.2, §5.2) and CN-to-agent messages
//! (§5.1, §5.2).

use crate::element::{escape_attr_into, parse_u32_field, push_u64, Element};
use crate::enet::{parse_item_id, EnetEntry, EnetNlri, AF_L2VPN, SAFI_ENET};
use crate::error::StanzaError;
use crate::header::CN_JID;
use crate::stanza::{cn_bgp_peer_jid, cn_config_jid, Channel, Stanza, StanzaKind, PUBSUB_NS};

/// The `items@node` of an End-of-RIB marker.
pub const END_OF_RIB_NODE: &str = "0/0/EndOfRib";
/// At most this many `item`s per CN message (§5.1).
pub const MAX_ITEMS_PER_MESSAGE: usize = 32;
/// At most this many `retract`s per CN message (§5.1).
pub const MAX_RETRACTS_PER_MESSAGE: usize = 256;
/// Prefix of the config subscribe node (§3.1).
pub const CONFIG_NODE_PREFIX: &str = "virtual-router:default-global-system-config:";

// ---------------------------------------------------------------------------------------
// Agent to CN

/// `options` of a VRF subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrfSubscribe {
    pub vrf: String,
    /// A ToR agent sends the VN's network-id.
    pub instance_id: Option<u32>,
    pub no_ribout: bool,
}

/// The change a `collection` iq carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectionChange {
    Associate(String),
    Dissociate(String),
}

/// A decoded agent-to-CN iq (type `set`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentIq {
    /// `pubsub/subscribe` on the config channel; `node` is the full node string.
    ConfigSubscribe {
        node: String,
    },
    VrfSubscribe(VrfSubscribe),
    VrfUnsubscribe {
        vrf: String,
    },
    /// First half of a route change. `node` empty and `entry` absent: first half of an EoR.
    Publish {
        node: String,
        entry: Option<Box<EnetEntry>>,
    },
    /// Second half. `change` absent (and `vrf` empty): second half of an EoR.
    Collection {
        vrf: String,
        change: Option<CollectionChange>,
    },
}

/// The agent name in a config subscribe node, if the node has the §3.1 form.
pub fn config_node_agent(node: &str) -> Option<&str> {
    node.strip_prefix(CONFIG_NODE_PREFIX)
        .filter(|s| !s.is_empty())
}

fn pubsub_of(el: &Element) -> Result<&Element, StanzaError> {
    el.child("pubsub").ok_or(StanzaError::Missing("pubsub"))
}

fn options_of(pubsub: &Element) -> Option<&Element> {
    // TF agents nest options in <subscribe>; the CN's own mock puts it beside (§4.1).
    pubsub.descendant("options")
}

/// Decodes an agent iq of type `set`. Callers drop non-`set` iqs first (checklist #9).
pub fn decode_agent_iq(stanza: &Stanza) -> Result<AgentIq, StanzaError> {
    if stanza.kind != StanzaKind::Iq {
        return Err(StanzaError::Unexpected("not an iq".into()));
    }
    let pubsub = pubsub_of(&stanza.element)?;
    match stanza.channel() {
        Channel::Config => {
            let sub = pubsub
                .child("subscribe")
                .ok_or_else(|| StanzaError::Unexpected("config iq without subscribe".into()))?;
            let node = sub
                .attr("node")
                .ok_or(StanzaError::MissingAttr("subscribe@node"))?;
            Ok(AgentIq::ConfigSubscribe {
                node: node.to_string(),
            })
        }
        Channel::BgpPeer => {
            if let Some(sub) = pubsub.child("subscribe") {
                let vrf = sub
                    .attr("node")
                    .ok_or(StanzaError::MissingAttr("subscribe@node"))?;
                let options = options_of(pubsub);
                let instance_id = match options.and_then(|o| o.child_text("instance-id")) {
                    Some(t) if !t.is_empty() => Some(parse_u32_field("instance-id", Some(t))?),
                    _ => None,
                };
                let no_ribout = options
                    .and_then(|o| o.child_text("no-ribout"))
                    .is_some_and(|t| t == "true" || t == "1");
                return Ok(AgentIq::VrfSubscribe(VrfSubscribe {
                    vrf: vrf.to_string(),
                    instance_id,
                    no_ribout,
                }));
            }
            if let Some(unsub) = pubsub.child("unsubscribe") {
                let vrf = unsub
                    .attr("node")
                    .ok_or(StanzaError::MissingAttr("unsubscribe@node"))?;
                return Ok(AgentIq::VrfUnsubscribe {
                    vrf: vrf.to_string(),
                });
            }
            if let Some(publish) = pubsub.child("publish") {
                let node = publish.attr("node").unwrap_or("").to_string();
                let entry = match publish.child("item").and_then(|i| i.child("entry")) {
                    Some(e) => Some(Box::new(EnetEntry::from_element(e)?)),
                    None => None,
                };
                return Ok(AgentIq::Publish { node, entry });
            }
            if let Some(coll) = pubsub.child("collection") {
                let vrf = coll.attr("node").unwrap_or("").to_string();
                let change = if let Some(a) = coll.child("associate") {
                    Some(CollectionChange::Associate(
                        a.attr("node")
                            .ok_or(StanzaError::MissingAttr("associate@node"))?
                            .into(),
                    ))
                } else if let Some(d) = coll.child("dissociate") {
                    Some(CollectionChange::Dissociate(
                        d.attr("node")
                            .ok_or(StanzaError::MissingAttr("dissociate@node"))?
                            .into(),
                    ))
                } else {
                    None
                };
                return Ok(AgentIq::Collection { vrf, change });
            }
            Err(StanzaError::Unexpected(
                "bgp-peer iq without subscribe, unsubscribe, publish or collection".into(),
            ))
        }
        Channel::Other => Err(StanzaError::Unexpected(format!(
            "iq to unknown channel {:?}",
            stanza.to()
        ))),
    }
}

/// A decoded agent-to-CN message: the only one defined is the message form of EoR (§5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentMessage {
    EndOfRib,
    Other,
}

pub fn decode_agent_message(stanza: &Stanza) -> AgentMessage {
    let eor = stanza
        .element
        .child("event")
        .and_then(|e| e.child("items"))
        .is_some_and(|i| i.attr("node") == Some(END_OF_RIB_NODE));
    if eor {
        AgentMessage::EndOfRib
    } else {
        AgentMessage::Other
    }
}

fn agent_iq(agent: &str, to: &str, id: Option<String>, pubsub: Element) -> String {
    let mut iq = Element::new("iq")
        .attr_with("type", "set")
        .attr_with("from", agent)
        .attr_with("to", to);
    if let Some(id) = id {
        iq = iq.attr_with("id", id);
    }
    iq.child_with(pubsub).to_stanza()
}

fn pubsub() -> Element {
    Element::new("pubsub").attr_with("xmlns", PUBSUB_NS)
}

/// §3.1: the one config subscribe per session (no id).
pub fn encode_config_subscribe(agent: &str) -> String {
    agent_iq(
        agent,
        &cn_config_jid(),
        None,
        pubsub().child_with(
            Element::new("subscribe").attr_with("node", format!("{CONFIG_NODE_PREFIX}{agent}")),
        ),
    )
}

/// §4.1 subscribe; `seq` numbers the id (`subscribe<N>`).
pub fn encode_vrf_subscribe(agent: &str, vrf: &str, instance_id: u32, seq: u64) -> String {
    agent_iq(
        agent,
        &cn_bgp_peer_jid(),
        Some(format!("subscribe{seq}")),
        pubsub().child_with(
            Element::new("subscribe")
                .attr_with("node", vrf)
                .child_with(Element::new("options").leaf("instance-id", instance_id)),
        ),
    )
}

/// §4.1 unsubscribe.
pub fn encode_vrf_unsubscribe(agent: &str, vrf: &str, instance_id: u32, seq: u64) -> String {
    agent_iq(
        agent,
        &cn_bgp_peer_jid(),
        Some(format!("unsubscribe{seq}")),
        pubsub().child_with(
            Element::new("unsubscribe")
                .attr_with("node", vrf)
                .child_with(Element::new("options").leaf("instance-id", instance_id)),
        ),
    )
}

/// Opens an agent route iq up to and including `<pubsub xmlns=...>`, written directly (the
/// same bytes as [`agent_iq`] writes for the element tree).
fn open_route_iq(out: &mut String, agent: &str, id_prefix: &str, seq: u64) {
    out.push_str("<iq type=\"set\" from=\"");
    escape_attr_into(agent, out);
    out.push_str("\" to=\"");
    out.push_str(CN_JID);
    out.push_str("/bgp-peer\" id=\"");
    out.push_str(id_prefix);
    push_u64(out, seq);
    out.push_str("\"><pubsub xmlns=\"");
    out.push_str(PUBSUB_NS);
    out.push_str("\">");
}

/// §4.2: the publish iq immediately followed by its collection iq, as one string so that
/// nothing can be written between them. A withdraw (`associate` false) repeats the add's key.
pub fn encode_route_publish(
    agent: &str,
    vrf: &str,
    entry: &EnetEntry,
    associate: bool,
    seq: u64,
) -> String {
    let mut out = String::with_capacity(1600);
    write_route_publish(&mut out, agent, vrf, entry, associate, seq);
    out
}

/// [`encode_route_publish`] appended to `out` (for writing many pairs into one buffer).
pub fn write_route_publish(
    out: &mut String,
    agent: &str,
    vrf: &str,
    entry: &EnetEntry,
    associate: bool,
    seq: u64,
) {
    open_route_iq(out, agent, "pubsub_l2", seq);
    out.push_str("<publish node=\"");
    entry.nlri.write_publish_node_attr(out);
    out.push_str("\"><item>");
    entry.write_xml_with("", out);
    out.push_str("</item></publish></pubsub></iq>");
    open_route_iq(out, agent, "collection_l2", seq);
    out.push_str("<collection node=\"");
    escape_attr_into(vrf, out);
    out.push_str(if associate {
        "\"><associate node=\""
    } else {
        "\"><dissociate node=\""
    });
    // The same node string, byte for byte (§4.2).
    entry.nlri.write_publish_node_attr(out);
    out.push_str("\"/></collection></pubsub></iq>");
}

/// §5.2: the EoR form a TF CN recognises (empty publish, then empty collection).
pub fn encode_agent_end_of_rib(agent: &str) -> String {
    let mut out = agent_iq(
        agent,
        &cn_bgp_peer_jid(),
        None,
        pubsub().child_with(Element::new("publish")),
    );
    out.push_str(&agent_iq(
        agent,
        &cn_bgp_peer_jid(),
        None,
        pubsub().child_with(Element::new("collection")),
    ));
    out
}

/// §5.2: the message form of EoR a TF agent sends.
pub fn encode_agent_end_of_rib_message(agent: &str) -> String {
    Element::new("message")
        .attr_with("from", agent)
        .attr_with("to", cn_bgp_peer_jid())
        .child_with(
            Element::new("event")
                .attr_with("xmlns", PUBSUB_NS)
                .child_with(Element::new("items").attr_with("node", END_OF_RIB_NODE)),
        )
        .to_stanza()
}

// ---------------------------------------------------------------------------------------
// CN to agent

/// One advertised route: the item id and its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteItem {
    pub id: String,
    pub entry: EnetEntry,
}

/// One withdrawn route; the key comes from the id (checklist #26).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetractedRoute {
    pub id: String,
    pub key: EnetNlri,
}

/// A decoded CN-to-agent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CnMessage {
    RouteUpdate {
        vrf: String,
        items: Vec<RouteItem>,
    },
    RouteRetract {
        vrf: String,
        routes: Vec<RetractedRoute>,
    },
    /// `items node="0/0/EndOfRib"`, or a bgp-peer message with no `items` (§5.2).
    EndOfRib,
    /// A family other than EVPN (af 25 / safi 242): to be ignored.
    OtherFamily {
        node: String,
    },
}

/// Splits `items@node` = `<af>/<safi>/<vrf>`.
pub fn split_items_node(node: &str) -> Option<(u32, u32, &str)> {
    let mut it = node.splitn(3, '/');
    let af = it.next()?.parse().ok()?;
    let safi = it.next()?.parse().ok()?;
    let vrf = it.next()?;
    Some((af, safi, vrf))
}

/// Decodes a CN message on the route channel. When (against §5.1) both `item`s and `retract`s
/// are present, only the retracts are taken, as a TF agent does.
pub fn decode_cn_message(stanza: &Stanza) -> Result<CnMessage, StanzaError> {
    if stanza.kind != StanzaKind::Message {
        return Err(StanzaError::Unexpected("not a message".into()));
    }
    let Some(items) = stanza.element.child("event").and_then(|e| e.child("items")) else {
        return Ok(CnMessage::EndOfRib);
    };
    let node = items
        .attr("node")
        .ok_or(StanzaError::MissingAttr("items@node"))?;
    if node == END_OF_RIB_NODE {
        return Ok(CnMessage::EndOfRib);
    }
    let (af, safi, vrf) =
        split_items_node(node).ok_or_else(|| StanzaError::invalid("items@node", node))?;
    if af != AF_L2VPN || safi != SAFI_ENET {
        return Ok(CnMessage::OtherFamily {
            node: node.to_string(),
        });
    }
    let retracts: Vec<_> = items.children_named("retract").collect();
    if !retracts.is_empty() {
        let routes = retracts
            .into_iter()
            .map(|r| {
                let id = r.attr("id").ok_or(StanzaError::MissingAttr("retract@id"))?;
                Ok(RetractedRoute {
                    id: id.to_string(),
                    key: parse_item_id(id)?,
                })
            })
            .collect::<Result<Vec<_>, StanzaError>>()?;
        return Ok(CnMessage::RouteRetract {
            vrf: vrf.to_string(),
            routes,
        });
    }
    let items = items
        .children_named("item")
        .map(|i| {
            let entry = i.child("entry").ok_or(StanzaError::Missing("item/entry"))?;
            Ok(RouteItem {
                id: i.attr("id").unwrap_or("").to_string(),
                entry: EnetEntry::from_element(entry)?,
            })
        })
        .collect::<Result<Vec<_>, StanzaError>>()?;
    Ok(CnMessage::RouteUpdate {
        vrf: vrf.to_string(),
        items,
    })
}

fn cn_message(agent: &str, items: Element) -> String {
    wrap_cn_event(agent, &items.to_xml())
}

/// Wraps a pre-encoded `<items>` body in the CN's message envelope for one agent, so a
/// reflection to many agents writes each entry's XML once.
pub fn wrap_cn_event(agent: &str, items_body: &str) -> String {
    let mut out = String::with_capacity(items_body.len() + 200);
    out.push_str("<message from=\"");
    out.push_str(CN_JID);
    out.push_str("\" to=\"");
    crate::element::escape_attr_into(agent, &mut out);
    out.push_str("/bgp-peer\"><event xmlns=\"");
    out.push_str(PUBSUB_NS);
    out.push_str("\">");
    out.push_str(items_body);
    out.push_str("</event></message>");
    out
}

/// Writes `<items node="25/242/<vrf>">`.
fn open_items(out: &mut String, vrf: &str) {
    out.push_str("<items node=\"");
    push_u64(out, AF_L2VPN.into());
    out.push('/');
    push_u64(out, SAFI_ENET.into());
    out.push('/');
    escape_attr_into(vrf, out);
    out.push_str("\">");
}

/// §5.1 add bodies (`<items>` with at most 32 `item`s each), for [`wrap_cn_event`]. Entries are
/// written with `0.0.0.0` for an unset group/source, as a TF CN does.
pub fn encode_route_update_bodies(vrf: &str, entries: &[EnetEntry]) -> Vec<String> {
    entries
        .chunks(MAX_ITEMS_PER_MESSAGE)
        .map(|chunk| {
            let mut out = String::with_capacity(64 + vrf.len() + chunk.len() * 1200);
            write_route_update_body(&mut out, vrf, chunk.iter());
            out
        })
        .collect()
}

/// Writes one §5.1 add body (`<items>` with the given entries, at most
/// [`MAX_ITEMS_PER_MESSAGE`] of them for a conforming message) into `out`.
pub fn write_route_update_body<'a>(
    out: &mut String,
    vrf: &str,
    entries: impl IntoIterator<Item = &'a EnetEntry>,
) {
    open_items(out, vrf);
    for e in entries {
        out.push_str("<item id=\"");
        e.nlri.write_item_id_attr(out);
        out.push_str("\">");
        e.write_xml_with("0.0.0.0", out);
        out.push_str("</item>");
    }
    out.push_str("</items>");
}

/// §5.1 withdrawal bodies (at most 256 `retract`s each, never mixed with items).
pub fn encode_route_retract_bodies(vrf: &str, keys: &[EnetNlri]) -> Vec<String> {
    keys.chunks(MAX_RETRACTS_PER_MESSAGE)
        .map(|chunk| {
            let mut out = String::with_capacity(64 + vrf.len() + chunk.len() * 64);
            write_route_retract_body(&mut out, vrf, chunk.iter());
            out
        })
        .collect()
}

/// Writes one §5.1 withdrawal body (`<items>` with a `retract` per key, at most
/// [`MAX_RETRACTS_PER_MESSAGE`] for a conforming message) into `out`.
pub fn write_route_retract_body<'a>(
    out: &mut String,
    vrf: &str,
    keys: impl IntoIterator<Item = &'a EnetNlri>,
) {
    open_items(out, vrf);
    for k in keys {
        out.push_str("<retract id=\"");
        k.write_item_id_attr(out);
        out.push_str("\"/>");
    }
    out.push_str("</items>");
}

/// §5.1 adds for one agent, at most 32 items per message.
pub fn encode_route_updates(agent: &str, vrf: &str, entries: &[EnetEntry]) -> Vec<String> {
    encode_route_update_bodies(vrf, entries)
        .iter()
        .map(|b| wrap_cn_event(agent, b))
        .collect()
}

/// §5.1 withdrawals for one agent, at most 256 retracts per message.
pub fn encode_route_retracts(agent: &str, vrf: &str, keys: &[EnetNlri]) -> Vec<String> {
    encode_route_retract_bodies(vrf, keys)
        .iter()
        .map(|b| wrap_cn_event(agent, b))
        .collect()
}

/// §5.2: the CN's EoR message.
pub fn encode_cn_end_of_rib(agent: &str) -> String {
    let mut s = cn_message(
        agent,
        Element::new("items").attr_with("node", END_OF_RIB_NODE),
    );
    // TF writes `<items node="0/0/EndOfRib"></items>`; both forms are equal XML.
    s = s.replacen(
        "<items node=\"0/0/EndOfRib\"/>",
        "<items node=\"0/0/EndOfRib\"></items>",
        1,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enet::EnetNextHop;

    fn stanza(xml: &str) -> Stanza {
        Stanza::from_element(Element::parse(xml).unwrap()).unwrap()
    }

    #[test]
    fn decodes_the_spec_vrf_subscribe_and_options_anywhere() {
        let s = stanza(
            r#"<iq type="set" from="tor-agent-a" to="network-control@contrailsystems.com/bgp-peer" id="subscribe7">
 <pubsub xmlns="http://jabber.org/protocol/pubsub">
  <subscribe node="default-domain:proj1:blue:blue">
   <options><instance-id>5</instance-id></options>
  </subscribe>
 </pubsub>
</iq>"#,
        );
        let want = AgentIq::VrfSubscribe(VrfSubscribe {
            vrf: "default-domain:proj1:blue:blue".into(),
            instance_id: Some(5),
            no_ribout: false,
        });
        assert_eq!(decode_agent_iq(&s).unwrap(), want);
        let mock = stanza(
            r#"<iq type="set" to="x/bgp-peer"><pubsub><subscribe node="default-domain:proj1:blue:blue"/><options><instance-id>5</instance-id></options></pubsub></iq>"#,
        );
        assert_eq!(decode_agent_iq(&mock).unwrap(), want);
        let encoded = stanza(&encode_vrf_subscribe(
            "tor-agent-a",
            "default-domain:proj1:blue:blue",
            5,
            7,
        ));
        assert_eq!(decode_agent_iq(&encoded).unwrap(), want);
        assert_eq!(encoded.id(), Some("subscribe7"));
    }

    #[test]
    fn encodes_the_config_subscribe_of_the_spec() {
        let s = encode_config_subscribe("tor-agent-a");
        assert_eq!(
            s,
            "<iq type=\"set\" from=\"tor-agent-a\" to=\"network-control@contrailsystems.com/config\"><pubsub xmlns=\"http://jabber.org/protocol/pubsub\"><subscribe node=\"virtual-router:default-global-system-config:tor-agent-a\"/></pubsub></iq>"
        );
        match decode_agent_iq(&stanza(&s)).unwrap() {
            AgentIq::ConfigSubscribe { node } => {
                assert_eq!(config_node_agent(&node), Some("tor-agent-a"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn publish_pair_repeats_the_node_byte_for_byte() {
        let e = EnetEntry::tor_mac(5001, "02:aa:bb:00:00:01", "192.0.2.21", 1);
        let pair =
            encode_route_publish("tor-agent-a", "default-domain:proj1:blue:blue", &e, true, 5);
        let split = pair.find("</iq>").unwrap() + 5;
        let (p, c) = pair.split_at(split);
        let p = decode_agent_iq(&stanza(p)).unwrap();
        let c = decode_agent_iq(&stanza(c)).unwrap();
        assert_eq!(
            p,
            AgentIq::Publish {
                node: "25/242/02:aa:bb:00:00:01,0.0.0.0/32".into(),
                entry: Some(Box::new(e.clone()))
            }
        );
        assert_eq!(
            c,
            AgentIq::Collection {
                vrf: "default-domain:proj1:blue:blue".into(),
                change: Some(CollectionChange::Associate(
                    "25/242/02:aa:bb:00:00:01,0.0.0.0/32".into()
                ))
            }
        );
        assert!(pair.contains("id=\"pubsub_l25\"") && pair.contains("id=\"collection_l25\""));
        let w = encode_route_publish("a", "v", &e, false, 6);
        assert!(w.contains("<dissociate node=\"25/242/02:aa:bb:00:00:01,0.0.0.0/32\"/>"));
    }

    /// The tree-based encoders the direct writers replaced: the writers must give the same bytes.
    mod reference {
        use super::super::*;

        pub fn route_publish(
            agent: &str,
            vrf: &str,
            entry: &EnetEntry,
            associate: bool,
            seq: u64,
        ) -> String {
            let node = entry.nlri.publish_node();
            let mut out = agent_iq(
                agent,
                &cn_bgp_peer_jid(),
                Some(format!("pubsub_l2{seq}")),
                pubsub().child_with(
                    Element::new("publish")
                        .attr_with("node", node.clone())
                        .child_with(Element::new("item").child_with(entry.to_element())),
                ),
            );
            let change = if associate { "associate" } else { "dissociate" };
            out.push_str(&agent_iq(
                agent,
                &cn_bgp_peer_jid(),
                Some(format!("collection_l2{seq}")),
                pubsub().child_with(
                    Element::new("collection")
                        .attr_with("node", vrf)
                        .child_with(Element::new(change).attr_with("node", node)),
                ),
            ));
            out
        }

        pub fn update_bodies(vrf: &str, entries: &[EnetEntry]) -> Vec<String> {
            entries
                .chunks(MAX_ITEMS_PER_MESSAGE)
                .map(|chunk| {
                    let mut items = Element::new("items")
                        .attr_with("node", format!("{AF_L2VPN}/{SAFI_ENET}/{vrf}"));
                    for e in chunk {
                        items.push(
                            Element::new("item")
                                .attr_with("id", e.nlri.item_id())
                                .child_with(e.to_element_with("0.0.0.0")),
                        );
                    }
                    items.to_xml()
                })
                .collect()
        }

        pub fn retract_bodies(vrf: &str, keys: &[EnetNlri]) -> Vec<String> {
            keys.chunks(MAX_RETRACTS_PER_MESSAGE)
                .map(|chunk| {
                    let mut items = Element::new("items")
                        .attr_with("node", format!("{AF_L2VPN}/{SAFI_ENET}/{vrf}"));
                    for k in chunk {
                        items.push(Element::new("retract").attr_with("id", k.item_id()));
                    }
                    items.to_xml()
                })
                .collect()
        }
    }

    #[test]
    fn direct_encoders_write_what_the_tree_wrote() {
        let mut entries = Vec::new();
        for i in 0..40u32 {
            let mut e =
                EnetEntry::tor_mac(i % 3, &format!("02:00:00:00:00:{i:02x}"), "192.0.2.21", i);
            if i % 5 == 0 {
                e.nlri.group = "225.0.0.1".into();
            }
            if i % 7 == 0 {
                e.nlri.mac = "<&\"\t>".into();
            }
            entries.push(e);
        }
        for vrf in ["default-domain:p:blue:blue", "a&b\"c<d>\n"] {
            for (i, e) in entries.iter().enumerate() {
                for associate in [true, false] {
                    assert_eq!(
                        encode_route_publish("tor-agent-<a>", vrf, e, associate, i as u64),
                        reference::route_publish("tor-agent-<a>", vrf, e, associate, i as u64)
                    );
                }
            }
            assert_eq!(
                encode_route_update_bodies(vrf, &entries),
                reference::update_bodies(vrf, &entries)
            );
            let keys: Vec<EnetNlri> = entries.iter().map(|e| e.nlri.clone()).collect();
            let keys: Vec<EnetNlri> = keys.iter().cycle().take(300).cloned().collect();
            assert_eq!(
                encode_route_retract_bodies(vrf, &keys),
                reference::retract_bodies(vrf, &keys)
            );
        }
    }

    #[test]
    fn end_of_rib_forms() {
        let iqs = encode_agent_end_of_rib("tor-agent-a");
        assert_eq!(
            iqs,
            "<iq type=\"set\" from=\"tor-agent-a\" to=\"network-control@contrailsystems.com/bgp-peer\"><pubsub xmlns=\"http://jabber.org/protocol/pubsub\"><publish/></pubsub></iq><iq type=\"set\" from=\"tor-agent-a\" to=\"network-control@contrailsystems.com/bgp-peer\"><pubsub xmlns=\"http://jabber.org/protocol/pubsub\"><collection/></pubsub></iq>"
        );
        let split = iqs.find("</iq>").unwrap() + 5;
        assert_eq!(
            decode_agent_iq(&stanza(&iqs[..split])).unwrap(),
            AgentIq::Publish {
                node: String::new(),
                entry: None
            }
        );
        assert_eq!(
            decode_agent_iq(&stanza(&iqs[split..])).unwrap(),
            AgentIq::Collection {
                vrf: String::new(),
                change: None
            }
        );
        assert_eq!(
            decode_agent_message(&stanza(&encode_agent_end_of_rib_message("a"))),
            AgentMessage::EndOfRib
        );
        let cn = encode_cn_end_of_rib("tor-agent-a");
        assert_eq!(cn, "<message from=\"network-control@contrailsystems.com\" to=\"tor-agent-a/bgp-peer\"><event xmlns=\"http://jabber.org/protocol/pubsub\"><items node=\"0/0/EndOfRib\"></items></event></message>");
        assert_eq!(
            decode_cn_message(&stanza(&cn)).unwrap(),
            CnMessage::EndOfRib
        );
        assert_eq!(
            decode_cn_message(&stanza("<message to='a/bgp-peer'></message>")).unwrap(),
            CnMessage::EndOfRib
        );
    }

    #[test]
    fn decodes_the_spec_withdraw() {
        let s = stanza(
            r#"<message from="network-control@contrailsystems.com" to="tor-agent-a/bgp-peer"><event xmlns="http://jabber.org/protocol/pubsub"><items node="25/242/default-domain:proj1:blue:blue"><retract id="5001-02:cc:dd:00:00:09,0.0.0.0/32" /></items></event></message>"#,
        );
        match decode_cn_message(&s).unwrap() {
            CnMessage::RouteRetract { vrf, routes } => {
                assert_eq!(vrf, "default-domain:proj1:blue:blue");
                assert_eq!(routes[0].key.ethernet_tag, 5001);
                assert_eq!(routes[0].key.mac, "02:cc:dd:00:00:09");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn route_messages_are_batched_and_never_mixed() {
        let entries: Vec<EnetEntry> = (0..70u32)
            .map(|i| {
                let mut e =
                    EnetEntry::tor_mac(5001, &format!("02:00:00:00:00:{:02x}", i), "192.0.2.21", 1);
                e.next_hops.push(EnetNextHop::vxlan("192.0.2.22", 5001));
                e
            })
            .collect();
        let msgs = encode_route_updates("tor-agent-a", "vrf1", &entries);
        assert_eq!(msgs.len(), 3);
        let mut decoded = Vec::new();
        for m in &msgs {
            assert!(!m.contains("<retract"));
            match decode_cn_message(&stanza(m)).unwrap() {
                CnMessage::RouteUpdate { vrf, items } => {
                    assert_eq!(vrf, "vrf1");
                    assert!(items.len() <= MAX_ITEMS_PER_MESSAGE);
                    for it in items {
                        assert_eq!(it.id, it.entry.nlri.item_id());
                        decoded.push(it.entry);
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        // The CN writes unset group/source as 0.0.0.0; everything else round-trips.
        for (d, e) in decoded.iter().zip(&entries) {
            assert_eq!(d.nlri.group, "0.0.0.0");
            let mut d = d.clone();
            d.nlri.group.clear();
            d.nlri.source.clear();
            assert_eq!(&d, e);
        }
        let keys: Vec<EnetNlri> = entries.iter().map(|e| e.nlri.clone()).collect();
        let keys: Vec<EnetNlri> = keys.iter().cycle().take(600).cloned().collect();
        let msgs = encode_route_retracts("a", "vrf1", &keys);
        assert_eq!(msgs.len(), 3);
        assert!(msgs.iter().all(|m| !m.contains("<item ")));
        let n: usize = msgs
            .iter()
            .map(|m| match decode_cn_message(&stanza(m)).unwrap() {
                CnMessage::RouteRetract { routes, .. } => routes.len(),
                other => panic!("{other:?}"),
            })
            .sum();
        assert_eq!(n, 600);
    }

    #[test]
    fn mixed_items_and_retracts_take_only_the_retracts_and_other_families_are_flagged() {
        let s = stanza(
            r#"<message to="a/bgp-peer"><event><items node="25/242/v"><item id="x"><entry><nlri/></entry></item><retract id="aa:bb,1.1.1.1/32"/></items></event></message>"#,
        );
        assert!(matches!(
            decode_cn_message(&s).unwrap(),
            CnMessage::RouteRetract { .. }
        ));
        let s =
            stanza(r#"<message to="a/bgp-peer"><event><items node="1/1/v"/></event></message>"#);
        assert!(matches!(
            decode_cn_message(&s).unwrap(),
            CnMessage::OtherFamily { .. }
        ));
        let s = stanza(r#"<message to="a/bgp-peer"><event><items node="junk"/></event></message>"#);
        assert!(decode_cn_message(&s).is_err());
    }

    #[test]
    fn bad_agent_iqs_are_errors() {
        for xml in [
            "<iq type='set' to='x/bgp-peer'></iq>",
            "<iq type='set' to='x/bgp-peer'><pubsub><unknown/></pubsub></iq>",
            "<iq type='set' to='x/bgp-peer'><pubsub><subscribe/></pubsub></iq>",
            "<iq type='set' to='x/bgp-peer'><pubsub><subscribe node='v'><options><instance-id>x</instance-id></options></subscribe></pubsub></iq>",
            "<iq type='set' to='x/config'><pubsub><publish/></pubsub></iq>",
            "<iq type='set' to='x/dns-peer'><pubsub><publish/></pubsub></iq>",
            "<iq type='set' to='x/bgp-peer'><pubsub><collection node='v'><associate/></collection></pubsub></iq>",
        ] {
            assert!(decode_agent_iq(&stanza(xml)).is_err(), "{xml}");
        }
    }
}
