//! Decoding the two hot route stanzas straight from their text, without an element tree.
//!
//! A takeover moves tens of thousands of routes: the agent's `publish` + `collection` iq pairs
//! (XMPP.md §4.2) to the CN, and the CN's route `message`s with up to 32 `item`s (§5.1) back.
//! Parsing those into an [`Element`](crate::Element) tree costs several allocations per XML
//! element (about 45 per EVPN entry), so these two shapes are decoded here in one pass over
//! the bytes, allocating only the strings the decoded value owns.
//!
//! The contract: when a decoder here returns `Some(v)`, parsing the same text with
//! [`Element::parse`](crate::Element::parse) succeeds and the generic decoder
//! ([`decode_cn_message`](crate::route::decode_cn_message) /
//! [`decode_agent_iq`](crate::route::decode_agent_iq)) returns `Ok(v)`. To keep that simple
//! the recogniser accepts a conservative subset of XML (what TF and our encoders write) and
//! answers `None` ("use the generic path") for everything else: entity or character
//! references, CR, `]`, control characters, comments, CDATA, processing instructions,
//! whitespace inside end tags, unusual names, duplicate attributes, shapes the generic
//! decoder would reject or read differently. `None` never means "invalid"; the generic path
//! decides that, with the same errors as before.

use crate::element::{parse_bool_str, parse_u32_str, MAX_DEPTH};
use crate::enet::{parse_item_id, EnetEntry, EnetNextHop, EnetNlri, Mobility, AF_L2VPN, SAFI_ENET};
use crate::route::{
    split_items_node, AgentIq, CnMessage, CollectionChange, RetractedRoute, RouteItem,
    END_OF_RIB_NODE,
};
use crate::stanza::{channel_of, Channel};

/// `None`: not on the fast path, use the generic one.
type Fast<T> = Option<T>;

/// Deepest element level accepted here, safely below the generic parser's limit.
const MAX_FAST_DEPTH: usize = MAX_DEPTH - 4;
/// Attributes per element accepted here (bounds the duplicate check).
const MAX_ATTRS: usize = 16;

/// A route-channel stanza decoded on the fast path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteStanza {
    /// A CN `message` to `<agent>/bgp-peer`: what [`crate::route::decode_cn_message`] gives.
    Cn(CnMessage),
    /// An agent `iq type="set"` to `…/bgp-peer` holding a publish or a collection: what
    /// [`crate::route::decode_agent_iq`] gives.
    Agent(AgentIq),
}

/// Which stanzas a session decodes on the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteDecoding {
    /// Every stanza is delivered as an element tree.
    #[default]
    Off,
    /// The agent's side: CN route messages (§5.1).
    CnMessages,
    /// The CN's side: agent publish and collection iqs (§4.2).
    AgentIqs,
}

impl RouteDecoding {
    /// Decodes `stanza` (one complete framed stanza) if it is on this fast path.
    pub fn decode(self, stanza: &str) -> Option<RouteStanza> {
        match self {
            RouteDecoding::Off => None,
            RouteDecoding::CnMessages => decode_cn_route_message(stanza).map(RouteStanza::Cn),
            RouteDecoding::AgentIqs => decode_agent_route_iq(stanza).map(RouteStanza::Agent),
        }
    }
}

/// A CN route message (`message` to `…/bgp-peer` with one `event`/`items`), decoded as
/// [`crate::route::decode_cn_message`] would; `None` for anything else.
pub fn decode_cn_route_message(stanza: &str) -> Option<CnMessage> {
    let mut c = Cursor::new(stanza);
    let root = c.start()?;
    if root.name != "message" || channel_of(root.attr("to")?) != Channel::BgpPeer {
        return None;
    }
    let mut msg = None;
    c.only_child(&root, |c, event| {
        if event.name != "event" {
            return None;
        }
        c.only_child(&event, |c, items| {
            if items.name != "items" {
                return None;
            }
            msg = Some(c.items(&items)?);
            Some(())
        })
    })?;
    c.finish()?;
    msg
}

/// An agent route iq (`iq type="set"` to `…/bgp-peer` whose `pubsub` holds exactly one
/// `publish` or `collection`), decoded as [`crate::route::decode_agent_iq`] would; `None` for
/// anything else.
pub fn decode_agent_route_iq(stanza: &str) -> Option<AgentIq> {
    let mut c = Cursor::new(stanza);
    let root = c.start()?;
    if root.name != "iq"
        || root.attr("type")? != "set"
        || channel_of(root.attr("to")?) != Channel::BgpPeer
    {
        return None;
    }
    let mut iq = None;
    c.only_child(&root, |c, pubsub| {
        if pubsub.name != "pubsub" {
            return None;
        }
        c.only_child(&pubsub, |c, op| {
            iq = Some(match op.name {
                "publish" => c.publish(&op)?,
                "collection" => c.collection(&op)?,
                _ => return None,
            });
            Some(())
        })
    })?;
    c.finish()?;
    iq
}

/// Byte classes, one table lookup per byte in the hot loops.
const WS: u8 = 1;
const NAME_START: u8 = 2;
const NAME: u8 = 4;
/// Ends or spoils plain character data: `<`, `&`, CR, `]`, controls other than tab and LF.
const TEXT_STOP: u8 = 8;
/// Spoils an attribute value: `<`, `>`, `&` and every control character (they would be
/// normalised or are not allowed).
const ATTR_STOP: u8 = 16;

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut k = 0;
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            k |= WS;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            k |= NAME_START | NAME;
        }
        if c.is_ascii_digit() || matches!(c, b'-' | b'.' | b':') {
            k |= NAME;
        }
        if matches!(c, b'<' | b'&' | b'\r' | b']') || (c < 0x20 && c != b'\t' && c != b'\n') {
            k |= TEXT_STOP;
        }
        if matches!(c, b'<' | b'>' | b'&') || c < 0x20 {
            k |= ATTR_STOP;
        }
        t[b] = k;
        b += 1;
    }
    t
};

fn class(b: u8) -> u8 {
    CLASS[b as usize]
}

fn is_ws(b: u8) -> bool {
    class(b) & WS != 0
}

fn is_name_start(b: u8) -> bool {
    class(b) & NAME_START != 0
}

fn is_name_byte(b: u8) -> bool {
    class(b) & NAME != 0
}

/// A start tag: its name, its (checked) attribute text, and whether it is `<x/>`.
struct Start<'a> {
    name: &'a str,
    attrs: &'a str,
    empty: bool,
}

impl<'a> Start<'a> {
    /// The value of attribute `name`. The attribute text was checked by [`Cursor::start`]:
    /// `ws name="value"` pairs, unique names, values without markup, references or
    /// whitespace controls (so the raw value is the normalised one).
    fn attr(&self, name: &str) -> Option<&'a str> {
        self.attr_pairs().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    fn attr_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let mut rest = self.attrs;
        std::iter::from_fn(move || {
            rest = rest.trim_start_matches([' ', '\t', '\n', '\r']);
            let eq = rest.find('=')?;
            let (k, tail) = rest.split_at(eq);
            let quote = tail.as_bytes().get(1).copied()? as char;
            let tail = &tail[2..];
            let end = tail.find(quote)?;
            rest = &tail[end + 1..];
            Some((k, &tail[..end]))
        })
    }

    fn has_duplicate_attrs(&self) -> bool {
        self.attr_pairs()
            .enumerate()
            .any(|(i, (k, _))| self.attr_pairs().take(i).any(|(k2, _)| k2 == k))
    }
}

struct Cursor<'a> {
    s: &'a str,
    i: usize,
    /// Elements open around the cursor.
    depth: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor { s, i: 0, depth: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.s.as_bytes()
    }

    /// The whole input must have been consumed (the framer cuts right after the root).
    fn finish(&self) -> Fast<()> {
        (self.i == self.s.len()).then_some(())
    }

    /// Reads a start tag at the cursor: `<name`, attributes, optional whitespace, `>` or `/>`.
    fn start(&mut self) -> Fast<Start<'a>> {
        if self.depth >= MAX_FAST_DEPTH {
            return None;
        }
        let b = self.bytes();
        let mut i = self.i;
        if b.get(i) != Some(&b'<') || !is_name_start(*b.get(i + 1)?) {
            return None;
        }
        i += 1;
        let name_start = i;
        while i < b.len() && is_name_byte(b[i]) {
            i += 1;
        }
        let name = &self.s[name_start..i];
        let attrs_start = i;
        let mut n = 0;
        let empty = loop {
            let ws_start = i;
            while i < b.len() && is_ws(b[i]) {
                i += 1;
            }
            match *b.get(i)? {
                b'>' => break false,
                b'/' => {
                    if b.get(i + 1) != Some(&b'>') {
                        return None;
                    }
                    break true;
                }
                c if is_name_start(c) && i > ws_start => {
                    while i < b.len() && is_name_byte(b[i]) {
                        i += 1;
                    }
                    n += 1;
                    if n > MAX_ATTRS || b.get(i) != Some(&b'=') {
                        return None;
                    }
                    let quote = *b.get(i + 1)?;
                    if quote != b'"' && quote != b'\'' {
                        return None;
                    }
                    i += 2;
                    loop {
                        let c = *b.get(i)?;
                        if c == quote {
                            break;
                        }
                        if class(c) & ATTR_STOP != 0 {
                            return None;
                        }
                        i += 1;
                    }
                    i += 1;
                }
                _ => return None,
            }
        };
        let start = Start {
            name,
            attrs: &self.s[attrs_start..i],
            empty,
        };
        if n > 1 && start.has_duplicate_attrs() {
            return None;
        }
        self.i = i + if empty { 2 } else { 1 };
        Some(start)
    }

    /// Character data up to the next `<`, if it is plain: no references, CR, `]` or control
    /// characters other than tab and LF (so it reads the same as after XML normalisation).
    fn text(&mut self) -> Fast<&'a str> {
        let b = self.bytes();
        let start = self.i;
        let mut i = start;
        loop {
            let c = *b.get(i)?;
            if class(c) & TEXT_STOP != 0 {
                if c == b'<' {
                    break;
                }
                return None;
            }
            i += 1;
        }
        self.i = i;
        Some(&self.s[start..i])
    }

    fn at_end_tag(&self) -> bool {
        self.bytes()[self.i..].starts_with(b"</")
    }

    /// Reads `</name>` exactly.
    fn end_tag(&mut self, name: &str) -> Fast<()> {
        let rest = &self.bytes()[self.i..];
        let n = name.len();
        if rest.len() >= n + 3
            && rest.starts_with(b"</")
            && &rest[2..2 + n] == name.as_bytes()
            && rest[2 + n] == b'>'
        {
            self.i += n + 3;
            Some(())
        } else {
            None
        }
    }

    /// Walks the child elements of `parent` (whose start tag was just read) up to and
    /// including its end tag; text between them must be whitespace. `child` must consume
    /// each child completely.
    fn children(
        &mut self,
        parent: &Start<'a>,
        mut child: impl FnMut(&mut Self, Start<'a>) -> Fast<()>,
    ) -> Fast<()> {
        if parent.empty {
            return Some(());
        }
        self.depth += 1;
        loop {
            if !self.text()?.bytes().all(is_ws) {
                return None;
            }
            if self.at_end_tag() {
                self.end_tag(parent.name)?;
                break;
            }
            let st = self.start()?;
            child(self, st)?;
        }
        self.depth -= 1;
        Some(())
    }

    /// `parent` must hold exactly one child element (and whitespace).
    fn only_child(
        &mut self,
        parent: &Start<'a>,
        mut child: impl FnMut(&mut Self, Start<'a>) -> Fast<()>,
    ) -> Fast<()> {
        let mut seen = false;
        self.children(parent, |c, st| {
            if std::mem::replace(&mut seen, true) {
                return None;
            }
            child(c, st)
        })?;
        seen.then_some(())
    }

    /// The trimmed text of a leaf element (no child elements); `""` for `<x/>`.
    fn leaf(&mut self, st: &Start<'a>) -> Fast<&'a str> {
        if st.empty {
            return Some("");
        }
        let t = self.text()?;
        self.end_tag(st.name)?;
        Some(t.trim())
    }

    fn leaf_u32(&mut self, st: &Start<'a>) -> Fast<u32> {
        let t = self.leaf(st)?;
        parse_u32_str("", Some(t)).ok()
    }

    fn leaf_bool(&mut self, st: &Start<'a>) -> Fast<bool> {
        let t = self.leaf(st)?;
        parse_bool_str("", Some(t)).ok()
    }

    fn leaf_string(&mut self, st: &Start<'a>) -> Fast<String> {
        self.leaf(st).map(str::to_string)
    }

    /// Skips a well-formed element whose start tag was just read (members the decoders
    /// ignore, or repeated members of which only the first counts).
    fn skip(&mut self, st: &Start<'a>) -> Fast<()> {
        if st.empty {
            return Some(());
        }
        self.depth += 1;
        loop {
            self.text()?;
            if self.at_end_tag() {
                self.end_tag(st.name)?;
                break;
            }
            let child = self.start()?;
            self.skip(&child)?;
        }
        self.depth -= 1;
        Some(())
    }

    /// `<items node=...>` of a CN message.
    fn items(&mut self, st: &Start<'a>) -> Fast<CnMessage> {
        let node = st.attr("node")?;
        if node == END_OF_RIB_NODE {
            self.skip(st)?;
            return Some(CnMessage::EndOfRib);
        }
        let (af, safi, vrf) = split_items_node(node)?;
        if af != AF_L2VPN || safi != SAFI_ENET {
            self.skip(st)?;
            return Some(CnMessage::OtherFamily {
                node: node.to_string(),
            });
        }
        let mut items = Vec::new();
        let mut retracts = Vec::new();
        self.children(st, |c, child| {
            match child.name {
                "item" => {
                    let id = child.attr("id").unwrap_or("").to_string();
                    let mut entry = None;
                    c.children(&child, |c, e| {
                        if e.name == "entry" && entry.is_none() {
                            entry = Some(c.entry(&e)?);
                            Some(())
                        } else {
                            c.skip(&e)
                        }
                    })?;
                    items.push(RouteItem { id, entry: entry? });
                }
                "retract" => {
                    let id = child.attr("id")?;
                    c.skip(&child)?;
                    retracts.push(RetractedRoute {
                        id: id.to_string(),
                        key: parse_item_id(id).ok()?,
                    });
                }
                _ => c.skip(&child)?,
            }
            Some(())
        })?;
        let vrf = vrf.to_string();
        match (items.is_empty(), retracts.is_empty()) {
            (_, true) => Some(CnMessage::RouteUpdate { vrf, items }),
            (true, false) => Some(CnMessage::RouteRetract {
                vrf,
                routes: retracts,
            }),
            // Both: the generic decoder takes only the retracts (without decoding the items).
            (false, false) => None,
        }
    }

    /// `<publish node=...>` with nothing or one `item` (holding nothing or one `entry`).
    fn publish(&mut self, st: &Start<'a>) -> Fast<AgentIq> {
        let node = st.attr("node").unwrap_or("").to_string();
        let mut entry = None;
        let mut item_seen = false;
        self.children(st, |c, item| {
            if item.name != "item" || std::mem::replace(&mut item_seen, true) {
                return None;
            }
            c.children(&item, |c, e| {
                if e.name != "entry" || entry.is_some() {
                    return None;
                }
                entry = Some(Box::new(c.entry(&e)?));
                Some(())
            })
        })?;
        Some(AgentIq::Publish { node, entry })
    }

    /// `<collection node=...>` with nothing or one `associate` / `dissociate`.
    fn collection(&mut self, st: &Start<'a>) -> Fast<AgentIq> {
        let vrf = st.attr("node").unwrap_or("").to_string();
        let mut change = None;
        self.children(st, |c, ch| {
            if change.is_some() {
                return None;
            }
            let node = ch.attr("node")?.to_string();
            change = Some(match ch.name {
                "associate" => CollectionChange::Associate(node),
                "dissociate" => CollectionChange::Dissociate(node),
                _ => return None,
            });
            c.skip(&ch)
        })?;
        Some(AgentIq::Collection { vrf, change })
    }

    /// An `<entry>` (§4.3): members in any order, the first of a repeated member counts,
    /// unknown members are skipped, as [`EnetEntry::from_element`] reads it.
    fn entry(&mut self, st: &Start<'a>) -> Fast<EnetEntry> {
        let mut e = EnetEntry::default();
        let mut nlri = None;
        let mut seen = 0u32;
        let s = &mut seen;
        self.children(st, |c, m| {
            match m.name {
                "nlri" if once(s, 0) => nlri = Some(c.nlri(&m)?),
                "next-hops" if once(s, 1) => e.next_hops = c.next_hops(&m)?,
                "olist" if once(s, 2) => e.olist = c.next_hops(&m)?,
                "leaf-olist" if once(s, 3) => e.leaf_olist = c.next_hops(&m)?,
                "virtual-network" if once(s, 4) => e.virtual_network = c.leaf_string(&m)?,
                "mobility" if once(s, 5) => {
                    let attr = |k| m.attr(k).map(str::trim);
                    e.mobility = Mobility {
                        seqno: parse_u32_str("", attr("seqno")).ok()?,
                        sticky: parse_bool_str("", attr("sticky")).ok()?,
                    };
                    c.skip(&m)?;
                }
                "sequence-number" if once(s, 6) => e.sequence_number = c.leaf_u32(&m)?,
                "security-group-list" if once(s, 7) => {
                    c.children(&m, |c, sg| {
                        if sg.name == "security-group" {
                            e.security_groups.push(c.leaf_u32(&sg)?);
                            Some(())
                        } else {
                            c.skip(&sg)
                        }
                    })?;
                }
                "local-preference" if once(s, 8) => e.local_preference = c.leaf_u32(&m)?,
                "med" if once(s, 9) => e.med = c.leaf_u32(&m)?,
                "edge-replication-not-supported" if once(s, 10) => {
                    e.edge_replication_not_supported = c.leaf_bool(&m)?
                }
                "assisted-replication-supported" if once(s, 11) => {
                    e.assisted_replication_supported = c.leaf_bool(&m)?
                }
                "replicator-address" if once(s, 12) => e.replicator_address = c.leaf_string(&m)?,
                "etree-leaf" if once(s, 13) => e.etree_leaf = c.leaf_bool(&m)?,
                // Unknown members, and repeats of which only the first counts.
                _ => c.skip(&m)?,
            }
            Some(())
        })?;
        e.nlri = nlri?;
        Some(e)
    }

    fn nlri(&mut self, st: &Start<'a>) -> Fast<EnetNlri> {
        // Absent numeric members read as 0, as in the generic decoder.
        let mut n = EnetNlri {
            af: 0,
            safi: 0,
            ..EnetNlri::default()
        };
        let mut seen = 0u32;
        let s = &mut seen;
        self.children(st, |c, m| {
            match m.name {
                "af" if once(s, 0) => n.af = c.leaf_u32(&m)?,
                "safi" if once(s, 1) => n.safi = c.leaf_u32(&m)?,
                "ethernet-tag" if once(s, 2) => n.ethernet_tag = c.leaf_u32(&m)?,
                "mac" if once(s, 3) => n.mac = c.leaf_string(&m)?,
                "address" if once(s, 4) => n.address = c.leaf_string(&m)?,
                "group" if once(s, 5) => n.group = c.leaf_string(&m)?,
                "source" if once(s, 6) => n.source = c.leaf_string(&m)?,
                "flags" if once(s, 7) => n.flags = c.leaf_u32(&m)?,
                _ => c.skip(&m)?,
            }
            Some(())
        })?;
        Some(n)
    }

    /// `next-hops`, `olist`, `leaf-olist`: every `next-hop`, other members skipped.
    fn next_hops(&mut self, st: &Start<'a>) -> Fast<Vec<EnetNextHop>> {
        let mut hops = Vec::new();
        self.children(st, |c, m| {
            if m.name == "next-hop" {
                hops.push(c.next_hop(&m)?);
                Some(())
            } else {
                c.skip(&m)
            }
        })?;
        Some(hops)
    }

    fn next_hop(&mut self, st: &Start<'a>) -> Fast<EnetNextHop> {
        let mut nh = EnetNextHop {
            af: 0,
            ..EnetNextHop::default()
        };
        let mut seen = 0u32;
        let s = &mut seen;
        self.children(st, |c, m| {
            match m.name {
                "af" if once(s, 0) => nh.af = c.leaf_u32(&m)?,
                "address" if once(s, 1) => nh.address = c.leaf_string(&m)?,
                "mac" if once(s, 2) => nh.mac = c.leaf_string(&m)?,
                "label" if once(s, 3) => nh.label = c.leaf_u32(&m)?,
                "l3-label" if once(s, 4) => nh.l3_label = c.leaf_u32(&m)?,
                "local-sequence-number" if once(s, 5) => {
                    nh.local_sequence_number = c.leaf_u32(&m)?
                }
                "tunnel-encapsulation-list" if once(s, 6) => {
                    c.children(&m, |c, t| {
                        if t.name != "tunnel-encapsulation" {
                            return c.skip(&t);
                        }
                        let v = c.leaf(&t)?;
                        if !v.is_empty() {
                            nh.tunnel_encapsulation.push(v.to_string());
                        }
                        Some(())
                    })?;
                }
                "tag-list" if once(s, 7) => {
                    c.children(&m, |c, t| {
                        if t.name == "tag" {
                            nh.tags.push(c.leaf_u32(&t)?);
                            Some(())
                        } else {
                            c.skip(&t)
                        }
                    })?;
                }
                _ => c.skip(&m)?,
            }
            Some(())
        })?;
        Some(nh)
    }
}

/// Marks member `bit` as read; false if it already was. `Element::child` finds the first of
/// repeated members, so later ones are skipped.
fn once(seen: &mut u32, bit: u32) -> bool {
    let first = *seen & (1 << bit) == 0;
    *seen |= 1 << bit;
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{
        decode_agent_iq, decode_cn_message, encode_agent_end_of_rib, encode_route_publish,
        encode_route_retracts, encode_route_updates, encode_vrf_subscribe,
    };
    use crate::{Element, Stanza};

    fn generic_cn(xml: &str) -> CnMessage {
        let st = Stanza::from_element(Element::parse(xml).unwrap()).unwrap();
        decode_cn_message(&st).unwrap()
    }

    fn generic_iq(xml: &str) -> AgentIq {
        let st = Stanza::from_element(Element::parse(xml).unwrap()).unwrap();
        decode_agent_iq(&st).unwrap()
    }

    fn split_pair(pair: &str) -> (&str, &str) {
        pair.split_at(pair.find("</iq>").unwrap() + 5)
    }

    /// XMPP.md §5.1 and §4.4, as written there (pretty-printed with tabs and newlines).
    const SPEC_UPDATE: &str = "<message from=\"network-control@contrailsystems.com\" to=\"tor-agent-a/bgp-peer\">\n\t<event xmlns=\"http://jabber.org/protocol/pubsub\">\n\t\t<items node=\"25/242/default-domain:proj1:blue:blue\">\n\t\t\t<item id=\"5001-02:aa:bb:00:00:01,0.0.0.0/32\"><entry>\n <nlri><af>25</af><safi>242</safi><ethernet-tag>5001</ethernet-tag><mac>02:aa:bb:00:00:01</mac><address>0.0.0.0/32</address><group/><source/><flags>0</flags></nlri>\n <next-hops><next-hop><af>1</af><address>192.0.2.21</address><label>5001</label>\n  <tunnel-encapsulation-list><tunnel-encapsulation>vxlan</tunnel-encapsulation></tunnel-encapsulation-list></next-hop></next-hops>\n <virtual-network/><mobility seqno=\"0\" sticky=\"false\"/><sequence-number>1</sequence-number>\n <local-preference>100</local-preference><med>0</med><etree-leaf>true</etree-leaf>\n <edge-replication-not-supported>false</edge-replication-not-supported><assisted-replication-supported>false</assisted-replication-supported>\n</entry></item>\n\t\t</items>\n\t</event>\n</message>";

    #[test]
    fn what_we_and_the_spec_write_is_on_the_fast_path_and_decodes_the_same() {
        let mut entries = Vec::new();
        for i in 0..40u32 {
            let mut e =
                EnetEntry::tor_mac(5001, &format!("02:00:00:00:00:{i:02x}"), "192.0.2.21", 1);
            e.next_hops.push(EnetNextHop::vxlan("192.0.2.22", 5001));
            e.security_groups = vec![i, 7];
            e.next_hops[0].tags = vec![3];
            e.virtual_network = "default-domain:p:blue".into();
            entries.push(e);
        }
        entries.push(EnetEntry::tor_broadcast(5001, "192.0.2.21", "198.51.100.7"));
        let mut cn = encode_route_updates("tor-agent-a", "default-domain:p:blue:blue", &entries);
        let keys: Vec<EnetNlri> = entries.iter().map(|e| e.nlri.clone()).collect();
        cn.extend(encode_route_retracts("tor-agent-a", "v", &keys));
        cn.push(SPEC_UPDATE.to_string());
        cn.push("<message from='network-control@contrailsystems.com' to='tor-agent-a/bgp-peer'><event xmlns='http://jabber.org/protocol/pubsub'><items node='25/242/default-domain:proj1:blue:blue'><retract id='5001-02:cc:dd:00:00:09,0.0.0.0/32' /></items></event></message>".into());
        cn.push(crate::route::encode_cn_end_of_rib("tor-agent-a"));
        cn.push(
            "<message to='a/bgp-peer'><event><items node='1/1/v'><x/></items></event></message>"
                .into(),
        );
        for m in &cn {
            let fast = decode_cn_route_message(m).unwrap_or_else(|| panic!("not fast: {m}"));
            assert_eq!(fast, generic_cn(m), "{m}");
        }
        for (i, e) in entries.iter().enumerate() {
            for associate in [true, false] {
                let pair = encode_route_publish("tor-agent-a", "vrf-1", e, associate, i as u64);
                let (p, c) = split_pair(&pair);
                for s in [p, c] {
                    let fast = decode_agent_route_iq(s).unwrap_or_else(|| panic!("not fast: {s}"));
                    assert_eq!(fast, generic_iq(s), "{s}");
                }
            }
        }
        let eor = encode_agent_end_of_rib("tor-agent-a");
        let (p, c) = split_pair(&eor);
        for s in [p, c] {
            assert_eq!(decode_agent_route_iq(s).unwrap(), generic_iq(s));
        }
        assert_eq!(
            RouteDecoding::CnMessages.decode(&cn[0]),
            Some(RouteStanza::Cn(generic_cn(&cn[0])))
        );
        assert_eq!(RouteDecoding::Off.decode(&cn[0]), None);
        assert_eq!(RouteDecoding::AgentIqs.decode(&cn[0]), None);
    }

    #[test]
    fn repeated_and_unknown_members_read_as_the_tree_reads_them() {
        let m = "<message to='a/bgp-peer'><event><items node='25/242/v'><item id='x'><junk a='1'><deep>t<er/></deep></junk><entry><nlri><af>25</af><af>1</af><mac> aa </mac><future/></nlri><med>5</med><med>x</med><next-hops><next-hop><address>1.1.1.1</address><tag-list><tag>1</tag><other/></tag-list><tag-list><tag>2</tag></tag-list></next-hop><note/></next-hops><mobility seqno=' 3 ' sticky='1'><x/></mobility></entry><entry><nlri/></entry></item></items></event></message>";
        let fast = decode_cn_route_message(m).unwrap();
        assert_eq!(fast, generic_cn(m));
        let CnMessage::RouteUpdate { items, .. } = fast else {
            panic!()
        };
        assert_eq!(items[0].entry.nlri.af, 25);
        assert_eq!(items[0].entry.med, 5);
        assert_eq!(items[0].entry.next_hops[0].tags, vec![1]);
    }

    #[test]
    fn everything_else_takes_the_generic_path() {
        let ok = "<message to='a/bgp-peer'><event><items node='25/242/v'><item id='x'><entry><nlri><mac>aa</mac></nlri></entry></item></items></event></message>";
        assert!(decode_cn_route_message(ok).is_some());
        for (from, to) in [
            ("<mac>aa</mac>", "<mac>a&amp;a</mac>"),
            ("<mac>aa</mac>", "<mac>a\ra</mac>"),
            ("<mac>aa</mac>", "<mac>a]]>a</mac>"),
            ("<mac>aa</mac>", "<mac>a<!-- c -->a</mac>"),
            ("<mac>aa</mac>", "<mac><![CDATA[aa]]></mac>"),
            ("<mac>aa</mac>", "<mac>a<b/>a</mac>"),
            ("<mac>aa</mac>", "<mac>aa</mac >"),
            ("<mac>aa</mac>", "<mac>aa</mac"),
            ("<mac>aa</mac>", "<mac>aa</ma>"),
            ("<mac>aa</mac>", "<mac>a\u{1}a</mac>"),
            ("<mac>aa</mac>", "<mac x='1' x='2'>aa</mac>"),
            ("<mac>aa</mac>", "<mac x='1'y='2'>aa</mac>"),
            ("<mac>aa</mac>", "<mac x = '1'>aa</mac>"),
            ("<mac>aa</mac>", "<mac x='a&lt;'>aa</mac>"),
            ("<mac>aa</mac>", "<mac x='a\nb'>aa</mac>"),
            ("<mac>aa</mac>", "<mac x=1>aa</mac>"),
            ("<mac>aa</mac>", "<?pi x?><mac>aa</mac>"),
            ("<mac>aa</mac>", "<1mac>aa</1mac>"),
            ("<nlri>", "<nlri>text"),
            ("to='a/bgp-peer'", "to='a/config'"),
            ("to='a/bgp-peer'", "from='a/bgp-peer'"),
            ("<message", "<iq type='set'"),
            ("<event>", "<event><other/>"),
            (
                "<item id='x'>",
                "<retract id='aa,1.1.1.1/32'/><item id='x'>",
            ),
            ("<item id='x'><entry>", "<item id='x'><entri>"),
            ("node='25/242/v'", "node='junk'"),
            ("</message>", "</message> "),
            ("</message>", "</message><x/>"),
        ] {
            let bad = ok.replacen(from, to, 1);
            let bad = if to.ends_with("<entri>") {
                bad.replacen("</entry>", "</entri>", 1)
            } else if to.starts_with("<iq") {
                bad.replacen("</message>", "</iq>", 1)
            } else {
                bad
            };
            assert_eq!(decode_cn_route_message(&bad), None, "{bad}");
        }
        let deep = format!(
            "<message to='a/bgp-peer'><event><items node='25/242/v'><item id='x'><entry><nlri/>{}{}</entry></item></items></event></message>",
            "<x>".repeat(MAX_DEPTH),
            "</x>".repeat(MAX_DEPTH)
        );
        assert_eq!(decode_cn_route_message(&deep), None);
        let pair = encode_route_publish(
            "a",
            "v",
            &EnetEntry::tor_mac(1, "02:00:00:00:00:01", "192.0.2.21", 1),
            true,
            1,
        );
        let (p, _) = split_pair(&pair);
        assert!(decode_agent_route_iq(p).is_some());
        for (from, to) in [
            ("type=\"set\"", "type=\"get\""),
            ("type=\"set\"", "kind=\"set\""),
            ("/bgp-peer\"", "/config\""),
            ("<publish ", "<subscribe node='v'/><publish "),
            ("<item>", "<item><entry><nlri/></entry>"),
            ("<item>", "<item/><item>"),
        ] {
            let bad = p.replacen(from, to, 1);
            assert_eq!(decode_agent_route_iq(&bad), None, "{bad}");
        }
        let sub = encode_vrf_subscribe("a", "v", 5, 1);
        assert_eq!(decode_agent_route_iq(&sub), None);
    }
}
