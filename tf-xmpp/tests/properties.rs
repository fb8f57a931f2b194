//! Property tests: encoders and decoders round-trip, and a bounded "fuzz" of the framer and
//! stanza decoders: random bytes at random read splits never panic, they frame or error.

use proptest::prelude::*;
use tf_xmpp::config::{
    decode_config_push, encode_config_push, ConfigItem, ConfigOp, ConfigSection, IfmapLink,
    IfmapNode, NodeRef,
};
use tf_xmpp::enet::{parse_item_id, EnetEntry, EnetNextHop, EnetNlri, Mobility};
use tf_xmpp::fast::{decode_agent_route_iq, decode_cn_route_message};
use tf_xmpp::route::encode_route_retracts;
use tf_xmpp::route::{
    decode_agent_iq, decode_cn_message, encode_route_publish, encode_route_updates, AgentIq,
    CnMessage, CollectionChange,
};
use tf_xmpp::{Element, Frame, Framer, RawFrame, Stanza};

fn text() -> impl Strategy<Value = String> {
    // Includes markup characters and non-ASCII to exercise escaping.
    "[a-zA-Z0-9 :/._<>&\"'\\-é]{0,12}".prop_map(|s| s.trim().to_string())
}

fn mac() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), 6).prop_map(|b| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    })
}

fn next_hop() -> impl Strategy<Value = EnetNextHop> {
    (
        any::<u8>(),
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        any::<u32>(),
        proptest::collection::vec(
            prop_oneof![Just("vxlan"), Just("gre"), Just("udp"), Just("mpls")],
            0..3,
        ),
        proptest::collection::vec(any::<u32>(), 0..3),
        any::<u32>(),
    )
        .prop_map(|(af, address, label, encaps, tags, lsn)| EnetNextHop {
            af: af as u32,
            address,
            mac: String::new(),
            label,
            l3_label: label / 2,
            tunnel_encapsulation: encaps.into_iter().map(String::from).collect(),
            tags,
            local_sequence_number: lsn,
        })
}

fn entry() -> impl Strategy<Value = EnetEntry> {
    (
        (any::<u32>(), mac(), "[0-9.]{1,15}/[0-9]{1,2}", any::<u32>()),
        proptest::collection::vec(next_hop(), 0..3),
        proptest::collection::vec(next_hop(), 0..2),
        text(),
        (
            any::<u32>(),
            any::<bool>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
        (any::<bool>(), any::<bool>(), any::<bool>(), text()),
        proptest::collection::vec(any::<u32>(), 0..3),
    )
        .prop_map(
            |(
                (tag, mac, address, flags),
                next_hops,
                olist,
                vn,
                (seqno, sticky, seq, lp, med),
                (ers, ars, leaf, repl),
                sgs,
            )| EnetEntry {
                nlri: EnetNlri {
                    ethernet_tag: tag,
                    mac,
                    address,
                    flags,
                    ..EnetNlri::default()
                },
                next_hops,
                olist: olist.clone(),
                virtual_network: vn,
                mobility: Mobility { seqno, sticky },
                sequence_number: seq,
                security_groups: sgs,
                local_preference: lp,
                med,
                edge_replication_not_supported: ers,
                assisted_replication_supported: ars,
                leaf_olist: olist,
                replicator_address: repl,
                etree_leaf: leaf,
            },
        )
}

fn frame_all(
    bytes: &[u8],
    splits: &[usize],
    max: usize,
) -> Result<Vec<Frame>, tf_xmpp::FrameError> {
    let mut f = Framer::new(max);
    let mut out = Vec::new();
    let mut last = 0;
    let mut cuts: Vec<usize> = splits.iter().map(|s| s % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(bytes.len());
    for cut in cuts {
        f.push(&bytes[last..cut]);
        last = cut;
        while let Some(fr) = f.next_frame()? {
            out.push(fr);
        }
    }
    Ok(out)
}

fn stanzas(frames: Vec<Frame>) -> Vec<Stanza> {
    frames
        .into_iter()
        .filter_map(|f| match f {
            Frame::Stanza(e) => Stanza::from_element(e),
            _ => None,
        })
        .collect()
}

/// Pieces spliced into valid stanzas to probe the fast decoders' edges.
const SPLICES: &[&str] = &[
    "<",
    ">",
    "/",
    "/>",
    "</",
    "=",
    "\"",
    "'",
    " ",
    "\n",
    "\t",
    "\r",
    "&amp;",
    "&#65;",
    "&",
    "]]>",
    "]",
    "<!-- c -->",
    "<![CDATA[x]]>",
    "<?p?>",
    "<x/>",
    "<x>",
    "</x>",
    "<entry>",
    "</entry>",
    "<item>",
    "</item>",
    "<nlri/>",
    "<af>1</af>",
    "<mac>m</mac>",
    "<med>9</med>",
    "<retract id='aa,1.1.1.1/32'/>",
    "<next-hop/>",
    " a='1'",
    " a='1' a='2'",
    "é",
    "\u{1}",
    "<iq",
    "<message",
    "</message>",
    "</iq>",
    "x",
];

fn splice(s: &str, edits: &[(usize, usize, bool)]) -> String {
    let mut s = s.to_string();
    for &(at, piece, delete) in edits {
        let mut at = at % (s.len() + 1);
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        if delete {
            let mut end = (at + 1 + piece % 8).min(s.len());
            while !s.is_char_boundary(end) {
                end += 1;
            }
            s.replace_range(at..end, "");
        } else {
            s.insert_str(at, SPLICES[piece % SPLICES.len()]);
        }
    }
    s
}

fn generic(xml: &str) -> Option<Stanza> {
    Stanza::from_element(Element::parse(xml).ok()?)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever the fast decoders accept, the element tree parses, and the generic decoders
    /// give the same value; what we write (without references) is always accepted.
    #[test]
    fn fast_decoders_agree_with_the_tree(e in entry(), edits in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<bool>()), 0..4)) {
        let pair = encode_route_publish("tor-agent-a", "v:1", &e, true, 3);
        let split = pair.find("</iq>").unwrap() + 5;
        let iqs = [&pair[..split], &pair[split..]];
        let msgs = [
            encode_route_updates("tor-agent-a", "v:1", &[e.clone(), e.clone()]).remove(0),
            encode_route_retracts("tor-agent-a", "v:1", std::slice::from_ref(&e.nlri)).remove(0),
        ];
        for iq in iqs {
            if edits.is_empty() && !iq.contains('&') {
                prop_assert!(decode_agent_route_iq(iq).is_some(), "{}", iq);
            }
            let text = splice(iq, &edits);
            if let Some(fast) = decode_agent_route_iq(&text) {
                let st = generic(&text);
                prop_assert!(st.is_some(), "fast accepted what the tree rejects: {}", text);
                prop_assert_eq!(decode_agent_iq(&st.unwrap()), Ok(fast), "{}", text);
            }
        }
        for m in &msgs {
            if edits.is_empty() && !m.contains('&') {
                prop_assert!(decode_cn_route_message(m).is_some(), "{}", m);
            }
            let text = splice(m, &edits);
            if let Some(fast) = decode_cn_route_message(&text) {
                let st = generic(&text);
                prop_assert!(st.is_some(), "fast accepted what the tree rejects: {}", text);
                prop_assert_eq!(decode_cn_message(&st.unwrap()), Ok(fast), "{}", text);
            }
        }
    }

    /// Raw frames are the same frames, unparsed.
    #[test]
    fn raw_frames_parse_to_the_frames(e in entry(), splits in proptest::collection::vec(any::<usize>(), 0..6)) {
        let mut bytes = b"\xC8\x80<?xml version=\"1.0\"?>".to_vec();
        bytes.extend_from_slice(encode_route_publish("a", "v", &e, true, 1).as_bytes());
        bytes.extend_from_slice(b" </stream:stream>");
        let parsed = frame_all(&bytes, &splits, 1 << 20).unwrap();
        let mut f = Framer::new(1 << 20);
        f.push(&bytes);
        let mut raw = Vec::new();
        while let Some(fr) = f.next_raw_frame().unwrap() {
            raw.push(match fr {
                RawFrame::Stanza(s) => Frame::Stanza(s.parse().unwrap()),
                RawFrame::Keepalive => Frame::Keepalive,
                RawFrame::StreamEnd => Frame::StreamEnd,
            });
        }
        prop_assert_eq!(raw, parsed);
    }

    #[test]
    fn entries_round_trip_through_xml(e in entry()) {
        let xml = e.to_element().to_xml();
        let back = EnetEntry::from_element(&Element::parse(&xml).unwrap()).unwrap();
        prop_assert_eq!(back, e);
    }

    #[test]
    fn publish_pairs_round_trip_at_any_split(e in entry(), vrf in "[a-z:-]{1,20}", associate in any::<bool>(), splits in proptest::collection::vec(any::<usize>(), 0..6)) {
        let pair = encode_route_publish("tor-agent-a", &vrf, &e, associate, 9);
        let got = stanzas(frame_all(pair.as_bytes(), &splits, 1 << 20).unwrap());
        prop_assert_eq!(got.len(), 2);
        let node = e.nlri.publish_node();
        prop_assert_eq!(decode_agent_iq(&got[0]).unwrap(), AgentIq::Publish { node: node.clone(), entry: Some(Box::new(e.clone())) });
        let change = if associate { CollectionChange::Associate(node) } else { CollectionChange::Dissociate(node) };
        prop_assert_eq!(decode_agent_iq(&got[1]).unwrap(), AgentIq::Collection { vrf, change: Some(change) });
    }

    #[test]
    fn cn_updates_round_trip(entries in proptest::collection::vec(entry(), 1..40)) {
        let msgs = encode_route_updates("tor-agent-a", "vrf", &entries);
        let mut back = Vec::new();
        for m in msgs {
            let st = stanzas(frame_all(m.as_bytes(), &[], 1 << 22).unwrap()).remove(0);
            match decode_cn_message(&st).unwrap() {
                CnMessage::RouteUpdate { items, .. } => {
                    for it in items {
                        prop_assert_eq!(&it.id, &it.entry.nlri.item_id());
                        back.push(it.entry);
                    }
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
        for (mut b, e) in back.into_iter().zip(&entries) {
            b.nlri.group.clear();
            b.nlri.source.clear();
            prop_assert_eq!(&b, e);
        }
    }

    #[test]
    fn item_ids_round_trip(tag in any::<u32>(), mac in mac(), a in any::<[u8; 4]>(), plen in 0u8..=32) {
        let n = EnetNlri { ethernet_tag: tag, mac, address: format!("{}.{}.{}.{}/{}", a[0], a[1], a[2], a[3], plen), ..EnetNlri::default() };
        let back = parse_item_id(&n.item_id()).unwrap();
        prop_assert_eq!((back.ethernet_tag, back.mac, back.address), (n.ethernet_tag, n.mac, n.address));
    }

    #[test]
    fn config_pushes_round_trip(nodes in proptest::collection::vec(("[a-z-]{1,10}", "[a-z:0-9/.-]{1,20}", text()), 0..30), delete_first in any::<bool>()) {
        let items: Vec<ConfigItem> = nodes.iter().enumerate().map(|(i, (t, n, p))| {
            if i % 3 == 2 {
                ConfigItem::Link(IfmapLink { left: NodeRef::new(t.clone(), n.clone()), right: NodeRef::new("x", "y"), metadata: format!("{t}-x") })
            } else {
                ConfigItem::Node(IfmapNode::new(t.clone(), n.clone()).prop_text("display-name", p))
            }
        }).collect();
        let update = ConfigSection { op: ConfigOp::Update, items: items.clone() };
        let delete = ConfigSection { op: ConfigOp::Delete, items: items.iter().map(|i| match i {
            ConfigItem::Node(n) => ConfigItem::Node(IfmapNode::new(n.type_name.clone(), n.name.clone())),
            l => l.clone(),
        }).collect() };
        let sections = if delete_first { vec![delete, update] } else { vec![update, delete] };
        let mut flat_back = Vec::new();
        for iq in encode_config_push("tor-agent-a", &sections) {
            let st = stanzas(frame_all(iq.as_bytes(), &[], 1 << 20).unwrap()).remove(0);
            for s in decode_config_push(&st).unwrap() {
                for it in s.items { flat_back.push((s.op, it)); }
            }
        }
        let flat: Vec<_> = sections.iter().flat_map(|s| s.items.iter().map(move |i| (s.op, i.clone()))).collect();
        prop_assert_eq!(flat_back, flat);
    }

    /// Random bytes, random splits, small limit: never panics.
    #[test]
    fn framer_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512), splits in proptest::collection::vec(any::<usize>(), 0..8)) {
        let _ = frame_all(&bytes, &splits, 256);
        let mut f = Framer::new(256);
        f.push(&bytes);
        let _ = f.take_header();
        let _ = f.take_nonza();
    }

    /// Mutated valid streams (bytes flipped, cut, duplicated): frames or errors, never panics,
    /// and every framed stanza decodes to a value or an error.
    #[test]
    fn mutated_streams_never_panic(e in entry(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6), splits in proptest::collection::vec(any::<usize>(), 0..6), max in 64usize..4096) {
        let mut bytes = b"\xC8\x80<?xml version=\"1.0\"?>".to_vec();
        bytes.extend_from_slice(encode_route_publish("a", "v", &e, true, 1).as_bytes());
        bytes.extend_from_slice(encode_route_updates("a", "v", std::slice::from_ref(&e))[0].as_bytes());
        let len = bytes.len();
        for (at, b) in flips {
            bytes[at % len] = b;
        }
        let mut f = Framer::new(max);
        let mut last = 0;
        let mut cuts: Vec<usize> = splits.iter().map(|s| s % (len + 1)).collect();
        cuts.sort_unstable();
        cuts.push(len);
        'outer: for cut in cuts {
            f.push(&bytes[last..cut]);
            last = cut;
            loop {
                match f.next_frame() {
                    Ok(Some(Frame::Stanza(el))) => {
                        if let Some(st) = Stanza::from_element(el) {
                            let _ = decode_agent_iq(&st);
                            let _ = decode_cn_message(&st);
                            let _ = decode_config_push(&st);
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
        }
        prop_assert!(f.buffered() <= max + len);
    }

    #[test]
    fn element_parser_never_panics(s in "[<>/a-z &;#x0-9'\"=?!\\[\\]-]{0,200}") {
        let _ = Element::parse(&s);
    }
}
