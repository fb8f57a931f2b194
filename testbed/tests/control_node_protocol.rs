//! Protocol tests of the simulated control node, driven by a raw XMPP client written here from
//! `shared/XMPP.md` with literal strings and bytes. It deliberately does NOT use the tf-xmpp
//! crate, so the agent's library and the control node cannot drift into a private dialect.
//!
//! Coverage of XMPP.md §7 (CN-side and "both" items):
//! | #  | test(s) |
//! |----|---------|
//! | 1  | `header_reply_is_exact_and_plain_mode_has_no_features`, `accepts_declaration_single_quotes_keepalives_between_stanzas` |
//! | 3  | `header_reply_is_exact_and_plain_mode_has_no_features` |
//! | 4  | `starttls_with_mutual_tls`, `starttls_refuses_a_client_without_certificate` |
//! | 5  | every received stanza goes through `Raw::next_stanza`, which fails on anything but a well-formed, non-self-closing `iq`/`message` |
//! | 6  | `accepts_declaration_single_quotes_keepalives_between_stanzas` |
//! | 7  | `keepalives_every_hold_over_3_and_hold_timer` |
//! | 8  | `keepalives_every_hold_over_3_and_hold_timer`, `silent_peer_is_closed_without_stream_end` |
//! | 9  | `non_set_iqs_are_ignored_and_no_results_are_sent` (and no received stanza is a result/error, checked in `next_stanza`) |
//! | 10 | `stanzas_are_dispatched_by_to_resource` |
//! | 12 | `config_push_shape_and_runtime_changes` |
//! | 13 | `config_push_shape_and_runtime_changes` |
//! | 18 | `protocol_violations_close_only_the_offender` |
//! | 24 | `publish_collection_merge_and_validation` |
//! | 25 | `route_messages_shape_and_batching` |
//! | 27 | `best_path_ecmp_and_reflection_to_originator` |
//! | 28 | `session_loss_withdraws_paths` |
//! | 29 | `end_of_rib_both_ways` |
//! | 30 | `duplicate_agent_name_is_refused` |
//! Also: hostile peers (`hostile_peers_are_disconnected_others_keep_working`), the open timer
//! (`silent_peer_is_closed_without_stream_end`), the connection limit, two control nodes side
//! by side, runtime config changes and reload, and the admin API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use testbed::control_node::{start, ControlNodeConfig, ControlNodeHandle, Fabric};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);
const VRF: &str = "default-domain:proj1:blue:blue";
const VN_UUID: &str = "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55";

fn fabric_toml() -> String {
    format!(
        r#"
[global]
vxlan_mode = "configured"
[[virtual_router]]
name = "tor-agent-a"
ip = "192.0.2.10"
[[virtual_router]]
name = "tor-agent-b"
[[virtual_router]]
name = "tor-agent-c"
[[virtual_network]]
name = "blue"
project = "proj1"
network_id = 5
vni = 5001
uuid = "{VN_UUID}"
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
mac_addresses = ["02:aa:bb:00:00:01"]
"#
    )
}

async fn cn_with(tweak: impl FnOnce(&mut ControlNodeConfig)) -> ControlNodeHandle {
    let fabric = Fabric::from_toml(&fabric_toml()).unwrap();
    let mut cfg = ControlNodeConfig::new("127.0.0.1:0".parse().unwrap(), fabric);
    cfg.hostname = "cn-host-1".into();
    tweak(&mut cfg);
    start(cfg).await.unwrap()
}

async fn cn() -> ControlNodeHandle {
    cn_with(|_| {}).await
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A raw test client: bytes in, bytes out, string matching.
struct Raw {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    keepalives: usize,
    saw_stream_end: bool,
}

fn agent_header(name: &str) -> String {
    format!(
        r#"<stream:stream from="{name}" to="network-control@contrailsystems.com" version="1.0" xml:lang="en" xmlns="" xmlns:stream="http://etherx.jabber.org/streams" >"#
    )
}

fn cn_header(name: &str) -> String {
    format!(
        r#"<stream:stream from="cn-host-1" to="{name}" id="++123" version="1.0" xml:lang="en" xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams" >"#
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Checks well-formedness with quick-xml (independent of tf-xmpp's parser).
fn well_formed(xml: &str) -> bool {
    let mut r = quick_xml::Reader::from_str(xml);
    r.config_mut().check_end_names = true;
    let mut depth = 0i64;
    loop {
        match r.read_event() {
            Ok(quick_xml::events::Event::Start(_)) => depth += 1,
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Eof) => return depth == 0,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

impl Raw {
    async fn tcp(addr: SocketAddr) -> Raw {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Raw {
            io: Box::new(tcp),
            buf: Vec::new(),
            keepalives: 0,
            saw_stream_end: false,
        }
    }

    /// Connects, sends the agent header, and checks the CN's reply byte for byte.
    async fn open(addr: SocketAddr, name: &str) -> Raw {
        let mut r = Raw::tcp(addr).await;
        r.send(&agent_header(name)).await;
        let h = r.read_header().await;
        assert_eq!(h, cn_header(name));
        r
    }

    async fn send(&mut self, s: &str) {
        self.send_bytes(s.as_bytes()).await;
    }

    async fn send_bytes(&mut self, b: &[u8]) {
        self.io.write_all(b).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// Reads more; false on EOF or error (a reset counts as closed).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.io.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn read_header(&mut self) -> String {
        let end = br#"xmlns:stream="http://etherx.jabber.org/streams" >"#;
        timeout(WAIT, async {
            loop {
                if let Some(i) = find(&self.buf, end) {
                    let h: Vec<u8> = self.buf.drain(..i + end.len()).collect();
                    return String::from_utf8(h).unwrap();
                }
                assert!(
                    self.fill().await,
                    "closed before header; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        })
        .await
        .expect("timed out waiting for the stream header")
    }

    /// Skips keepalives and declarations; returns the next stanza, checking §1.5 / #5 / #9.
    async fn try_next_stanza(&mut self, limit: Duration) -> Option<String> {
        timeout(limit, async {
            loop {
                // Keepalive octets between stanzas.
                let mut i = 0;
                while i < self.buf.len() {
                    match self.buf[i] {
                        b' ' | b'\n' | b'\r' | b'\t' => i += 1,
                        0xC8 if self.buf.get(i + 1) == Some(&0x80) => {
                            self.keepalives += 1;
                            i += 2
                        }
                        _ => break,
                    }
                }
                self.buf.drain(..i);
                if self.buf.starts_with(b"<?xml") {
                    if let Some(e) = find(&self.buf, b"?>") {
                        self.buf.drain(..e + 2);
                        continue;
                    }
                }
                if self.buf.starts_with(b"</stream:stream>") {
                    self.saw_stream_end = true;
                    self.buf.drain(..16);
                    continue;
                }
                for (open, close) in [(&b"<iq "[..], &b"</iq>"[..]), (b"<message ", b"</message>")]
                {
                    if self.buf.starts_with(open) {
                        if let Some(e) = find(&self.buf, close) {
                            let st: Vec<u8> = self.buf.drain(..e + close.len()).collect();
                            let st = String::from_utf8(st).expect("stanza is UTF-8");
                            assert!(well_formed(&st), "malformed stanza from CN: {st}");
                            let head = &st[..st.find('>').unwrap()];
                            assert!(!head.ends_with('/'), "self-closing stanza: {st}");
                            assert!(
                                !head.contains("type=\"result\"")
                                    && !head.contains("type=\"error\""),
                                "iq reply sent: {st}"
                            );
                            return Some(st);
                        }
                    }
                }
                if !self.buf.is_empty()
                    && !b"<iq ".starts_with(&self.buf[..self.buf.len().min(4)])
                    && !b"<message ".starts_with(&self.buf[..self.buf.len().min(9)])
                    && !self.buf.starts_with(b"<iq ")
                    && !self.buf.starts_with(b"<message ")
                    && !b"<?xml".starts_with(&self.buf[..self.buf.len().min(5)])
                    && !self.buf.starts_with(b"<?xml")
                    && !b"</stream:stream>".starts_with(&self.buf[..self.buf.len().min(16)])
                    && self.buf != [0xC8]
                {
                    panic!(
                        "unexpected bytes from CN: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                }
                if !self.fill().await {
                    return None;
                }
            }
        })
        .await
        .unwrap_or(None)
    }

    async fn next_stanza(&mut self) -> String {
        self.try_next_stanza(WAIT)
            .await
            .expect("no stanza from the control node")
    }

    /// The next stanza whose text contains `needle` (others are dropped).
    async fn stanza_with(&mut self, needle: &str) -> String {
        loop {
            let s = self.next_stanza().await;
            if s.contains(needle) {
                return s;
            }
        }
    }

    /// Reads until the CN closes the connection; returns what arrived meanwhile.
    async fn expect_closed(&mut self) -> Vec<u8> {
        let mut seen = Vec::new();
        timeout(WAIT, async {
            while self.fill().await {}
            seen.extend_from_slice(&self.buf);
        })
        .await
        .expect("the control node did not close the connection");
        seen
    }

    /// True if nothing but keepalives arrives for `d` and the connection stays open.
    async fn quiet_for(&mut self, d: Duration) -> bool {
        self.try_next_stanza(d).await.is_none()
            && self
                .buf
                .iter()
                .all(|b| matches!(b, 0xC8 | 0x80 | b' ' | b'\n'))
    }
}

fn attr(s: &str, name: &str) -> Option<String> {
    let pat = format!("{name}=\"");
    let i = s.find(&pat)? + pat.len();
    let j = s[i..].find('"')?;
    Some(s[i..i + j].to_string())
}

fn count(s: &str, needle: &str) -> usize {
    s.matches(needle).count()
}

// ---- stanzas an agent sends, written from XMPP.md ----

fn config_subscribe(name: &str) -> String {
    format!(
        r#"<iq type="set" from="{name}" to="network-control@contrailsystems.com/config"><pubsub xmlns="http://jabber.org/protocol/pubsub"><subscribe node="virtual-router:default-global-system-config:{name}"/></pubsub></iq>"#
    )
}

fn vrf_subscribe(name: &str, vrf: &str, n: u32) -> String {
    format!(
        r#"<iq type="set" from="{name}" to="network-control@contrailsystems.com/bgp-peer" id="subscribe{n}"><pubsub xmlns="http://jabber.org/protocol/pubsub"><subscribe node="{vrf}"><options><instance-id>5</instance-id></options></subscribe></pubsub></iq>"#
    )
}

fn vrf_unsubscribe(name: &str, vrf: &str) -> String {
    format!(
        r#"<iq type="set" from="{name}" to="network-control@contrailsystems.com/bgp-peer" id="unsubscribe1"><pubsub xmlns="http://jabber.org/protocol/pubsub"><unsubscribe node="{vrf}"/></pubsub></iq>"#
    )
}

struct Route<'a> {
    mac: &'a str,
    address: &'a str,
    vtep: &'a str,
    pref: u32,
    seq: u32,
    hops: usize,
    af: u32,
    safi: u32,
}

fn route<'a>(mac: &'a str, vtep: &'a str, pref: u32, seq: u32) -> Route<'a> {
    Route {
        mac,
        address: "0.0.0.0/32",
        vtep,
        pref,
        seq,
        hops: 1,
        af: 25,
        safi: 242,
    }
}

fn entry(r: &Route) -> String {
    let hop = format!(
        r#"<next-hop><af>1</af><address>{}</address><label>5001</label><tunnel-encapsulation-list><tunnel-encapsulation>vxlan</tunnel-encapsulation></tunnel-encapsulation-list></next-hop>"#,
        r.vtep
    );
    format!(
        r#"<entry><nlri><af>{}</af><safi>{}</safi><ethernet-tag>5001</ethernet-tag><mac>{}</mac><address>{}</address><group/><source/><flags>0</flags></nlri><next-hops>{}</next-hops><virtual-network/><mobility seqno="0" sticky="false"/><sequence-number>{}</sequence-number><local-preference>{}</local-preference><med>0</med><etree-leaf>true</etree-leaf><edge-replication-not-supported>false</edge-replication-not-supported><assisted-replication-supported>false</assisted-replication-supported></entry>"#,
        r.af,
        r.safi,
        r.mac,
        r.address,
        hop.repeat(r.hops),
        r.seq,
        r.pref
    )
}

/// The publish iq immediately followed by its collection iq (§4.2).
fn publish(name: &str, vrf: &str, r: &Route, associate: bool) -> String {
    let node = format!("25/242/{},{}", r.mac, r.address);
    let op = if associate { "associate" } else { "dissociate" };
    format!(
        r#"<iq type="set" from="{name}" to="network-control@contrailsystems.com/bgp-peer" id="pubsub_l21"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="{node}"><item>{}</item></publish></pubsub></iq><iq type="set" from="{name}" to="network-control@contrailsystems.com/bgp-peer" id="collection_l21"><pubsub xmlns="http://jabber.org/protocol/pubsub"><collection node="{vrf}"><{op} node="{node}"/></collection></pubsub></iq>"#,
        entry(r)
    )
}

async fn agent(addr: SocketAddr, name: &str) -> Raw {
    let mut r = Raw::open(addr, name).await;
    r.send(&vrf_subscribe(name, VRF, 1)).await;
    r
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    timeout(WAIT, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn header_reply_is_exact_and_plain_mode_has_no_features() {
    let cn = cn().await;
    let mut a = Raw::open(cn.local_addr(), "tor-agent-a").await;
    // Established right away: a config subscribe is answered with config, and nothing
    // (no stream:features, no SASL) comes before it.
    a.send(&config_subscribe("tor-agent-a")).await;
    let first = a.next_stanza().await;
    assert!(first.starts_with("<iq type=\"set\" from=\"network-control@contrailsystems.com\" to=\"tor-agent-a/config\">"), "{first}");
    assert!(!String::from_utf8_lossy(&a.buf).contains("stream:features"));
}

#[tokio::test]
async fn accepts_declaration_single_quotes_keepalives_between_stanzas() {
    let cn = cn().await;
    let mut a = Raw::tcp(cn.local_addr()).await;
    a.send("\n<?xml version='1.0'?>\n<stream:stream from='tor-agent-a' to='network-control@contrailsystems.com' xmlns='' xmlns:stream='http://etherx.jabber.org/streams'>").await;
    assert_eq!(a.read_header().await, cn_header("tor-agent-a"));
    let mut bytes = b"\xC8\x80 \n\t\r".to_vec();
    bytes.extend_from_slice(b"<?xml version=\"1.0\"?>");
    bytes.extend_from_slice(vrf_subscribe("tor-agent-a", VRF, 1).as_bytes());
    bytes.extend_from_slice(b"\xC8\x80\xC8\x80\n");
    bytes.extend_from_slice(b"<?xml version=\"1.0\"?>\n");
    bytes.extend_from_slice(
        publish(
            "tor-agent-a",
            VRF,
            &route("02:aa:bb:00:00:01", "192.0.2.21", 100, 1),
            true,
        )
        .as_bytes(),
    );
    // Split the bytes awkwardly, across the keepalive octets too.
    for chunk in bytes.chunks(7) {
        a.send_bytes(chunk).await;
    }
    let m = a.stanza_with("<item ").await;
    assert!(m.contains("02:aa:bb:00:00:01"));
}

#[tokio::test]
async fn keepalives_every_hold_over_3_and_hold_timer() {
    let cn = cn_with(|c| {
        c.hold_time = Duration::from_secs(3);
        c.core.eor_quiet = Duration::from_secs(3600);
    })
    .await;
    let mut a = Raw::open(cn.local_addr(), "tor-agent-a").await;
    // Our keepalives every 500 ms keep the session up past several hold times.
    for _ in 0..14 {
        a.send_bytes(b"\xC8\x80").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Meanwhile the CN sent its own keepalives, exactly 0xC8 0x80 (none before 1 s).
    assert!(a.quiet_for(Duration::from_millis(100)).await);
    assert!(a.keepalives >= 3, "keepalives seen: {}", a.keepalives);
    a.send(&config_subscribe("tor-agent-a")).await;
    a.stanza_with("<config>").await;
    // Now stay silent: the hold timer closes TCP, without </stream:stream>.
    let tail = a.expect_closed().await;
    assert!(!a.saw_stream_end && find(&tail, b"</stream:stream>").is_none());
    until("session removal", || cn.agents().is_empty()).await;
}

#[tokio::test]
async fn silent_peer_is_closed_without_stream_end() {
    let cn = cn_with(|c| c.hold_time = Duration::from_secs(3)).await;
    let mut a = Raw::open(cn.local_addr(), "tor-agent-a").await;
    let tail = a.expect_closed().await;
    assert!(find(&tail, b"</stream:stream>").is_none());
    // Open timer: no header at all gets </stream:stream> and a close (failure before Established).
    let cn = cn_with(|c| c.open_timeout = Duration::from_millis(300)).await;
    let mut b = Raw::tcp(cn.local_addr()).await;
    let tail = b.expect_closed().await;
    assert_eq!(tail, b"</stream:stream>");
}

#[tokio::test]
async fn non_set_iqs_are_ignored_and_no_results_are_sent() {
    let cn = cn().await;
    let mut a = Raw::open(cn.local_addr(), "tor-agent-a").await;
    // A "get" subscribe is ignored; if it were processed the real one would be a duplicate.
    a.send(&vrf_subscribe("tor-agent-a", VRF, 1).replace("type=\"set\"", "type=\"get\""))
        .await;
    a.send(&vrf_subscribe("tor-agent-a", VRF, 2).replace("type=\"set\"", "type=\"result\""))
        .await;
    a.send(&vrf_subscribe("tor-agent-a", VRF, 3)).await;
    a.send(&publish(
        "tor-agent-a",
        VRF,
        &route("02:aa:bb:00:00:01", "192.0.2.21", 100, 1),
        true,
    ))
    .await;
    a.stanza_with("<item ").await;
    assert_eq!(cn.counters().stanzas_ignored, 2);
    assert_eq!(cn.counters().protocol_violations, 0);
}

#[tokio::test]
async fn stanzas_are_dispatched_by_to_resource() {
    let cn = cn().await;
    let mut a = Raw::open(cn.local_addr(), "tor-agent-a").await;
    // The config subscribe node sent to /bgp-peer is a VRF subscribe, not a config request.
    a.send(&config_subscribe("tor-agent-a").replace("/config", "/bgp-peer"))
        .await;
    assert!(a.quiet_for(Duration::from_millis(300)).await);
    until("vrf subscription", || {
        cn.agents().first().is_some_and(|x| x.vrfs.len() == 1)
    })
    .await;
    a.send(&config_subscribe("tor-agent-a")).await;
    let iq = a.stanza_with("<config>").await;
    assert_eq!(attr(&iq, "to").as_deref(), Some("tor-agent-a/config"));
    a.send(&vrf_subscribe("tor-agent-a", VRF, 1)).await;
    a.send(&publish(
        "tor-agent-a",
        VRF,
        &route("02:aa:bb:00:00:01", "192.0.2.21", 100, 1),
        true,
    ))
    .await;
    let m = a.stanza_with("<item ").await;
    assert_eq!(attr(&m, "to").as_deref(), Some("tor-agent-a/bgp-peer"));
    assert_eq!(
        attr(&m, "from").as_deref(),
        Some("network-control@contrailsystems.com")
    );
}

#[tokio::test]
async fn config_push_shape_and_runtime_changes() {
    let cn = cn().await;
    let mut a = Raw::open(cn.local_addr(), "tor-agent-a").await;
    a.send(&config_subscribe("tor-agent-a")).await;
    let mut push = String::new();
    while let Some(s) = a.try_next_stanza(Duration::from_millis(500)).await {
        assert!(s.starts_with("<iq type=\"set\" from=\"network-control@contrailsystems.com\" to=\"tor-agent-a/config\"><config>"), "{s}");
        // At most 16 objects per iq, a link counting 2.
        let objects =
            count(&s, "<link>") * 2 + (count(&s, "<node type=") - 2 * count(&s, "<link>"));
        assert!(objects <= 16, "{objects} objects in one iq");
        push.push_str(&s);
    }
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
        assert!(
            push.contains(&format!("<node type=\"{t}\"><name>")),
            "missing {t}"
        );
    }
    for m in [
        "physical-router-virtual-router",
        "physical-router-physical-interface",
        "physical-interface-logical-interface",
        "logical-interface-virtual-machine-interface",
        "virtual-machine-interface-virtual-network",
        "virtual-network-routing-instance",
    ] {
        assert!(
            push.contains(&format!("<metadata type=\"{m}\"/></link>")),
            "missing link {m}"
        );
    }
    // A link is exactly two nodes (type + name only) and the metadata.
    assert!(push.contains("<link><node type=\"virtual-network\"><name>default-domain:proj1:blue</name></node><node type=\"routing-instance\"><name>default-domain:proj1:blue:blue</name></node><metadata type=\"virtual-network-routing-instance\"/></link>"));
    // id-perms: big-endian UUID halves in decimal, enable true (XMPP.md §3.2 example UUID).
    assert!(push.contains("<node type=\"virtual-network\"><name>default-domain:proj1:blue</name><id-perms><uuid><uuid-mslong>4551622027609198113</uuid-mslong><uuid-lslong>11100367162248481365</uuid-lslong></uuid><enable>true</enable></id-perms>"));
    for prop in [
        "<vxlan-network-identifier-mode>configured</vxlan-network-identifier-mode>",
        "<physical-router-dataplane-ip>192.0.2.21</physical-router-dataplane-ip>",
        "<physical-router-management-ip>192.0.2.1</physical-router-management-ip>",
        "<display-name>qfx-1</display-name>", "<display-name>xe-0/0/3</display-name>",
        "<logical-interface-vlan-tag>20</logical-interface-vlan-tag>",
        "<virtual-machine-interface-mac-addresses><mac-address>02:aa:bb:00:00:01</mac-address></virtual-machine-interface-mac-addresses>",
        "<virtual-network-network-id>5</virtual-network-network-id>",
        "<vxlan-network-identifier>5001</vxlan-network-identifier>",
        "<virtual-router-type>tor-agent</virtual-router-type>",
    ] {
        assert!(push.contains(prop), "missing {prop}");
    }
    assert_eq!(
        count(&push, "<enable>true</enable>"),
        count(&push, "<id-perms>")
    );
    // Runtime change through the admin API: a VNI change is pushed as an update of the VN.
    let (admin, _h) =
        testbed::control_node::admin::serve("127.0.0.1:0".parse().unwrap(), cn.clone())
            .await
            .unwrap();
    let mut p = jsonrpsee::core::params::ObjectParams::new();
    p.insert("virtual_network", "default-domain:proj1:blue")
        .unwrap();
    p.insert("vni", 6001).unwrap();
    testbed::control_node::admin::call(&admin.to_string(), "cn_set_vni", p)
        .await
        .unwrap();
    let up = a.stanza_with("<config>").await;
    assert!(up
        .contains("<update><node type=\"virtual-network\"><name>default-domain:proj1:blue</name>"));
    assert!(up.contains("<vxlan-network-identifier>6001</vxlan-network-identifier>"));
    // Removing the binding deletes its logical interface and VMI (links before nodes).
    cn.update_fabric(|f| f.remove_binding("qfx-1", "xe-0/0/3", 20))
        .unwrap();
    let del = a.stanza_with("<delete>").await;
    assert!(del.contains("<node type=\"logical-interface\"><name>default-global-system-config:qfx-1:xe-0/0/3:xe-0/0/3.20</name></node>"));
    assert!(
        del.find("<link>").unwrap() < del.find("<node type=\"logical-interface\"><name>").unwrap()
    );
    let status =
        testbed::control_node::admin::call(&admin.to_string(), "cn_status", Default::default())
            .await
            .unwrap();
    assert_eq!(status["agents"][0]["name"], "tor-agent-a");
    // Reload from the fabric file: a changed VLAN arrives as updates and deletes.
    let path = std::env::temp_dir().join(format!(
        "cn-fabric-{}-{}.toml",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&path, fabric_toml()).unwrap();
    let cn2 = cn_with(|c| c.fabric_path = Some(path.clone())).await;
    let mut b = Raw::open(cn2.local_addr(), "tor-agent-b").await;
    b.send(&config_subscribe("tor-agent-b")).await;
    b.stanza_with("<config>").await;
    std::fs::write(&path, fabric_toml().replace("vlan = 20", "vlan = 21")).unwrap();
    cn2.reload().unwrap();
    let up = b.stanza_with("xe-0/0/3.21").await;
    assert!(
        up.contains("<logical-interface-vlan-tag>21</logical-interface-vlan-tag>"),
        "{up}"
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn protocol_violations_close_only_the_offender() {
    let cn = cn().await;
    let addr = cn.local_addr();
    let mut c = agent(addr, "tor-agent-c").await;
    let r = route("02:aa:bb:00:00:01", "192.0.2.21", 100, 1);
    // Duplicate subscribe.
    let mut a = agent(addr, "tor-agent-a").await;
    a.send(&vrf_subscribe("tor-agent-a", VRF, 2)).await;
    a.expect_closed().await;
    // Unsubscribe without subscribe.
    let mut a = Raw::open(addr, "tor-agent-a").await;
    a.send(&vrf_unsubscribe("tor-agent-a", VRF)).await;
    a.expect_closed().await;
    // Route for an unsubscribed VRF.
    let mut a = Raw::open(addr, "tor-agent-a").await;
    a.send(&publish(
        "tor-agent-a",
        "default-domain:proj1:red:red",
        &r,
        true,
    ))
    .await;
    a.expect_closed().await;
    // Route after an unsubscribe.
    let mut a = agent(addr, "tor-agent-a").await;
    a.send(&vrf_unsubscribe("tor-agent-a", VRF)).await;
    a.send(&publish("tor-agent-a", VRF, &r, true)).await;
    a.expect_closed().await;
    assert_eq!(cn.counters().protocol_violations, 4);
    // The bystander is still served.
    c.send(&publish("tor-agent-c", VRF, &r, true)).await;
    c.stanza_with("<item ").await;
}

#[tokio::test]
async fn publish_collection_merge_and_validation() {
    let cn = cn().await;
    let mut a = agent(cn.local_addr(), "tor-agent-a").await;
    let good = route("02:aa:bb:00:00:01", "192.0.2.21", 100, 1);
    let bads = [
        Route {
            hops: 0,
            ..route("02:aa:bb:00:00:02", "192.0.2.21", 100, 1)
        },
        Route {
            hops: 2,
            ..route("02:aa:bb:00:00:03", "192.0.2.21", 100, 1)
        },
        Route {
            af: 1,
            ..route("02:aa:bb:00:00:04", "192.0.2.21", 100, 1)
        },
        Route {
            safi: 241,
            ..route("02:aa:bb:00:00:05", "192.0.2.21", 100, 1)
        },
        Route {
            address: "0.0.0.0",
            ..route("02:aa:bb:00:00:06", "192.0.2.21", 100, 1)
        },
        Route {
            address: "10.1.1.0/24",
            ..route("02:aa:bb:00:00:07", "192.0.2.21", 100, 1)
        },
    ];
    for b in &bads {
        a.send(&publish("tor-agent-a", VRF, b, true)).await;
    }
    // A collection whose node differs from the publish, and one with no publish: discarded.
    let pair = publish(
        "tor-agent-a",
        VRF,
        &route("02:aa:bb:00:00:08", "192.0.2.21", 100, 1),
        true,
    );
    let (p, c) = pair.split_at(pair.find("</iq>").unwrap() + 5);
    a.send(p).await;
    a.send(&c.replace("02:aa:bb:00:00:08", "02:aa:bb:00:00:09"))
        .await;
    a.send(c).await;
    a.send(&publish("tor-agent-a", VRF, &good, true)).await;
    let m = a.stanza_with("<item ").await;
    assert!(m.contains("<mac>02:aa:bb:00:00:01</mac>"), "{m}");
    assert_eq!(count(&m, "<item "), 1);
    let k = cn.counters();
    assert_eq!(
        (
            k.routes_rejected,
            k.collections_discarded,
            k.protocol_violations
        ),
        (6, 2, 0)
    );
    assert_eq!(cn.paths(None).len(), 1);
}

#[tokio::test]
async fn route_messages_shape_and_batching() {
    let cn = cn().await;
    let addr = cn.local_addr();
    let mut a = agent(addr, "tor-agent-a").await;
    let macs: Vec<String> = (0..300)
        .map(|i| format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256))
        .collect();
    let mut all = String::new();
    for m in &macs {
        all.push_str(&publish(
            "tor-agent-a",
            VRF,
            &route(m, "192.0.2.21", 100, 1),
            true,
        ));
    }
    a.send(&all).await;
    until("300 paths", || cn.paths(None).len() == 300).await;
    // A late subscriber gets the table in messages of at most 32 items.
    let mut b = agent(addr, "tor-agent-b").await;
    let mut items = 0;
    while items < 300 {
        let m = b.stanza_with("<items node=").await;
        assert!(m.starts_with("<message from=\"network-control@contrailsystems.com\" to=\"tor-agent-b/bgp-peer\"><event xmlns=\"http://jabber.org/protocol/pubsub\"><items node=\"25/242/default-domain:proj1:blue:blue\">"), "{m}");
        let n = count(&m, "<item id=");
        assert!(
            (1..=32).contains(&n) && !m.contains("<retract"),
            "{n} items"
        );
        assert!(m.contains("<item id=\"5001-02:00:00:00:"));
        // The CN writes unset group/source as 0.0.0.0 and fills virtual-network.
        assert!(m.contains("<group>0.0.0.0</group><source>0.0.0.0</source>"));
        assert!(m.contains("<virtual-network>default-domain:proj1:blue</virtual-network>"));
        items += n;
    }
    assert_eq!(items, 300);
    // Session loss withdraws all 300 at once: retract messages of at most 256, never mixed.
    drop(a);
    let mut retracts = 0;
    while retracts < 300 {
        let m = b.stanza_with("<retract").await;
        let n = count(&m, "<retract id=");
        assert!(
            (1..=256).contains(&n) && !m.contains("<item "),
            "{n} retracts"
        );
        assert!(m.contains("<retract id=\"5001-02:00:00:00:"));
        retracts += n;
    }
    assert_eq!(retracts, 300);
}

#[tokio::test]
async fn best_path_ecmp_and_reflection_to_originator() {
    let cn = cn().await;
    let addr = cn.local_addr();
    let mut a = agent(addr, "tor-agent-a").await;
    let mut b = agent(addr, "tor-agent-b").await;
    let mut c = agent(addr, "tor-agent-c").await;
    let mac = "02:aa:bb:00:00:01";
    // A exports at 100/seq 1; everybody, A included, gets it.
    a.send(&publish(
        "tor-agent-a",
        VRF,
        &route(mac, "192.0.2.21", 100, 1),
        true,
    ))
    .await;
    for r in [&mut a, &mut b, &mut c] {
        let m = r.stanza_with("<item ").await;
        assert!(
            m.contains("<address>192.0.2.21</address>")
                && m.contains("<local-preference>100</local-preference>")
        );
    }
    // B's HA-stale copy (pref 1, seq 0) loses: nothing changes on the wire.
    b.send(&publish(
        "tor-agent-b",
        VRF,
        &route(mac, "192.0.2.22", 1, 0),
        true,
    ))
    .await;
    until("two paths", || cn.paths(None).len() == 2).await;
    assert!(c.quiet_for(Duration::from_millis(300)).await);
    // C at equal preference and sequence: ECMP, two next hops in one item.
    c.send(&publish(
        "tor-agent-c",
        VRF,
        &route(mac, "192.0.2.23", 100, 1),
        true,
    ))
    .await;
    let m = b.stanza_with("<item ").await;
    assert_eq!(count(&m, "<next-hop>"), 2, "{m}");
    assert!(m.contains("192.0.2.21") && m.contains("192.0.2.23") && !m.contains("192.0.2.22"));
    // MAC move: B at sequence 2 wins at equal preference.
    b.send(&publish(
        "tor-agent-b",
        VRF,
        &route(mac, "192.0.2.22", 100, 2),
        true,
    ))
    .await;
    let m = a.stanza_with("<sequence-number>2</sequence-number>").await;
    assert_eq!(count(&m, "<next-hop>"), 1);
    assert!(m.contains("<address>192.0.2.22</address>"));
    let best = cn.best_routes(Some(VRF));
    assert_eq!(best[0].agents, vec!["tor-agent-b"]);
    assert_eq!(cn.paths(Some(VRF)).iter().filter(|p| p.best).count(), 1);
}

#[tokio::test]
async fn session_loss_withdraws_paths() {
    let cn = cn().await;
    let addr = cn.local_addr();
    let mut a = agent(addr, "tor-agent-a").await;
    let mut b = agent(addr, "tor-agent-b").await;
    let mac = "02:aa:bb:00:00:01";
    a.send(&publish(
        "tor-agent-a",
        VRF,
        &route(mac, "192.0.2.21", 100, 1),
        true,
    ))
    .await;
    b.send(&publish(
        "tor-agent-b",
        VRF,
        &route("02:aa:bb:00:00:02", "192.0.2.22", 100, 1),
        true,
    ))
    .await;
    b.stanza_with(mac).await;
    drop(a);
    let m = b.stanza_with("<retract").await;
    assert!(
        m.contains(&format!("<retract id=\"5001-{mac},0.0.0.0/32\"/>")),
        "{m}"
    );
    until("removal", || cn.agents().len() == 1).await;
    assert!(cn.paths(None).iter().all(|p| p.agent == "tor-agent-b"));
}

#[tokio::test]
async fn end_of_rib_both_ways() {
    let cn = cn_with(|c| c.core.eor_quiet = Duration::from_millis(300)).await;
    let mut a = agent(cn.local_addr(), "tor-agent-a").await;
    let m = a.stanza_with("EndOfRib").await;
    assert_eq!(m, "<message from=\"network-control@contrailsystems.com\" to=\"tor-agent-a/bgp-peer\"><event xmlns=\"http://jabber.org/protocol/pubsub\"><items node=\"0/0/EndOfRib\"></items></event></message>");
    // Both agent forms are EoR: empty publish + empty collection, and the message form.
    a.send(r#"<iq type="set" from="tor-agent-a" to="network-control@contrailsystems.com/bgp-peer"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish/></pubsub></iq><iq type="set" from="tor-agent-a" to="network-control@contrailsystems.com/bgp-peer"><pubsub xmlns="http://jabber.org/protocol/pubsub"><collection/></pubsub></iq>"#).await;
    a.send(r#"<message from="tor-agent-a" to="network-control@contrailsystems.com/bgp-peer"><event xmlns="http://jabber.org/protocol/pubsub"><items node="0/0/EndOfRib"></items></event></message>"#).await;
    until("two EoRs", || cn.counters().eor_received == 2).await;
    assert!(cn.agents()[0].eor_received && cn.agents()[0].eor_sent);
    assert_eq!(cn.counters().protocol_violations, 0);
}

#[tokio::test]
async fn duplicate_agent_name_is_refused() {
    let cn = cn().await;
    let mut a = agent(cn.local_addr(), "tor-agent-a").await;
    let mut dup = Raw::open(cn.local_addr(), "tor-agent-a").await;
    dup.expect_closed().await;
    a.send(&publish(
        "tor-agent-a",
        VRF,
        &route("02:aa:bb:00:00:01", "192.0.2.21", 100, 1),
        true,
    ))
    .await;
    a.stanza_with("<item ").await;
    assert_eq!(cn.counters().sessions_refused, 1);
}

#[tokio::test]
async fn hostile_peers_are_disconnected_others_keep_working() {
    let cn = cn_with(|c| c.max_stanza = 64 * 1024).await;
    let addr = cn.local_addr();
    let mut good = agent(addr, "tor-agent-c").await;
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("bad xml", b"<iq type=\"set\" to=\"x/bgp-peer\"><pubsub><a></b></pubsub></iq>".to_vec()),
        ("unknown stanza", b"<presence/>".to_vec()),
        ("self-closing", b"<iq type=\"set\"/>".to_vec()),
        ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("bad utf-8", b"<iq type=\"set\">\xff\xfe</iq>".to_vec()),
        ("unknown iq content", b"<iq type=\"set\" to=\"network-control@contrailsystems.com/bgp-peer\"><pubsub><frobnicate/></pubsub></iq>".to_vec()),
        ("huge stanza", {
            let mut v = b"<message to=\"x/bgp-peer\"><body>".to_vec();
            v.extend(std::iter::repeat_n(b'a', 200 * 1024));
            v
        }),
    ];
    for (what, bytes) in hostile {
        let mut h = Raw::open(addr, "tor-agent-a").await;
        h.send_bytes(&bytes).await;
        h.expect_closed().await;
        until(what, || cn.agents().len() == 1).await;
    }
    // A bad stream header is refused before Established.
    let mut h = Raw::tcp(addr).await;
    h.send("<stream:stream from='x'>").await;
    h.expect_closed().await;
    good.send(&publish(
        "tor-agent-c",
        VRF,
        &route("02:aa:bb:00:00:01", "192.0.2.21", 100, 1),
        true,
    ))
    .await;
    good.stanza_with("<item ").await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let cn = cn_with(|c| c.max_connections = 2).await;
    let addr = cn.local_addr();
    let _idle = Raw::tcp(addr).await; // negotiating, holds a slot
    let mut a = agent(addr, "tor-agent-a").await;
    let mut extra = Raw::tcp(addr).await;
    extra.send(&agent_header("tor-agent-b")).await;
    extra.expect_closed().await;
    a.send(&publish(
        "tor-agent-a",
        VRF,
        &route("02:aa:bb:00:00:01", "192.0.2.21", 100, 1),
        true,
    ))
    .await;
    a.stanza_with("<item ").await;
    assert!(cn.counters().sessions_refused >= 1);
}

#[tokio::test]
async fn two_control_nodes_side_by_side() {
    let cn1 = cn().await;
    let cn2 = cn().await;
    assert_ne!(cn1.local_addr(), cn2.local_addr());
    let mut a1 = agent(cn1.local_addr(), "tor-agent-a").await;
    let mut a2 = agent(cn2.local_addr(), "tor-agent-a").await;
    let mut b1 = agent(cn1.local_addr(), "tor-agent-b").await;
    let r = route("02:aa:bb:00:00:01", "192.0.2.21", 100, 1);
    a1.send(&publish("tor-agent-a", VRF, &r, true)).await;
    a2.send(&publish("tor-agent-a", VRF, &r, true)).await;
    b1.stanza_with("<item ").await;
    a2.stanza_with("<item ").await;
    assert_eq!(cn1.paths(None).len(), 1);
    assert_eq!(cn2.paths(None).len(), 1);
    // Losing one CN's session does not touch the other's table.
    drop(a1);
    b1.stanza_with("<retract").await;
    assert_eq!(cn2.paths(None).len(), 1);
}

// ---- TLS (§1.4), with the client written from the spec on tokio-rustls directly ----

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca.as_ref().pem(),
        server: leaf("cn.test"),
        client: leaf("tor-agent-a"),
    }
}

fn pem_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

fn pem_key(pem: &str) -> rustls::pki_types::PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

async fn tls_cn(p: &Pki) -> ControlNodeHandle {
    let server = tf_xmpp::tls::server_config(
        p.server.0.as_bytes(),
        p.server.1.as_bytes(),
        Some(p.ca.as_bytes()),
    )
    .unwrap();
    cn_with(|c| c.tls = Some(server)).await
}

async fn starttls(p: &Pki, with_cert: bool) -> Result<Raw, String> {
    let cn = tls_cn(p).await;
    let mut r = Raw::tcp(cn.local_addr()).await;
    r.send(&agent_header("tor-agent-a")).await;
    assert_eq!(r.read_header().await, cn_header("tor-agent-a"));
    let features = br#"<stream:features><starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"><required/></starttls></stream:features>"#;
    while r.buf.len() < features.len() {
        assert!(r.fill().await);
    }
    assert_eq!(&r.buf[..], &features[..]);
    r.buf.clear();
    r.send(r#"<starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"/>"#)
        .await;
    let proceed = br#"<proceed xmlns="urn:ietf:params:xml:ns:xmpp-tls"/>"#;
    while r.buf.len() < proceed.len() {
        assert!(r.fill().await);
    }
    assert_eq!(&r.buf[..], &proceed[..]);
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(&p.ca) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = if with_cert {
        builder
            .with_client_auth_cert(pem_certs(&p.client.0), pem_key(&p.client.1))
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let Raw { io, .. } = r;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("cn.test".try_into().unwrap(), io)
        .await
        .map_err(|e| e.to_string())?;
    let mut r = Raw {
        io: Box::new(tls),
        buf: Vec::new(),
        keepalives: 0,
        saw_stream_end: false,
    };
    // A new header on the TLS stream; the reply comes with no second features element.
    r.send(&agent_header("tor-agent-a")).await;
    let h = timeout(WAIT, async {
        let end = br#"xmlns:stream="http://etherx.jabber.org/streams" >"#;
        loop {
            if let Some(i) = find(&r.buf, end) {
                return Ok(String::from_utf8(r.buf.drain(..i + end.len()).collect()).unwrap());
            }
            if !r.fill().await {
                return Err("closed".to_string());
            }
        }
    })
    .await
    .map_err(|_| "timeout".to_string())??;
    assert_eq!(h, cn_header("tor-agent-a"));
    // The session tasks keep the control node alive after its handle is dropped.
    drop(cn);
    Ok(r)
}

#[tokio::test]
async fn starttls_with_mutual_tls() {
    let p = pki();
    let mut r = starttls(&p, true).await.unwrap();
    r.send(&config_subscribe("tor-agent-a")).await;
    let s = r.stanza_with("<config>").await;
    assert!(!s.contains("stream:features"));
}

#[tokio::test]
async fn starttls_refuses_a_client_without_certificate() {
    let p = pki();
    match starttls(&p, false).await {
        Err(_) => {}
        Ok(mut r) => {
            // TLS 1.3 reports the missing certificate after the handshake: the CN then closes.
            r.send(&config_subscribe("tor-agent-a")).await;
            assert!(
                r.try_next_stanza(WAIT).await.is_none(),
                "a client without certificate was served"
            );
        }
    }
}
