//! The agent against a minimal control node written here from XMPP.md (not
//! the testbed's, and not using the tf-xmpp crate), with a real
//! ovsdb-server switch dialing the agent (`vtep-ctl set-manager`). Covers
//! the agent-side MUSTs of XMPP.md §7: stream header (#1, #2), keepalive
//! bytes at once and every hold/3 (#7), config subscribe (#11), VRF
//! subscribe before any publish with instance-id = network-id (#17),
//! publish immediately followed by its collection with the identical node
//! (#19), entry fields (#20), ToR MAC and HA-stale preference/sequence
//! (#21), broadcast route (#22), withdraw with the add's key (#23), reflected
//! routes not programmed (#26), EoR in the iq form (#29).

use std::net::SocketAddr;
use std::time::Duration;

use ovsdb::testing::RealSwitch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};
use tor_agent::config::AgentConfig;

const AGENT: &str = "tor-agent-1";
const TSN: &str = "198.51.100.7";
const VTEP: &str = "10.0.0.11";
const VRF: &str = "default-domain:proj:blue:blue";
const VN_UUID: &str = "3f2a9c1e-5b7d-4e21-9a0c-6d1f2e3b4a55";
const T: Duration = Duration::from_secs(30);

/// A control node connection, read as raw bytes.
struct Cn {
    s: TcpStream,
    buf: Vec<u8>,
    keepalives: usize,
}

impl Cn {
    /// Reads more bytes; meanwhile keeps the agent's hold timer happy with
    /// our own keepalives, as a control node does.
    async fn fill(&mut self) {
        let mut chunk = vec![0u8; 65536];
        let deadline = Instant::now() + T;
        loop {
            assert!(Instant::now() < deadline, "agent went silent");
            match timeout(Duration::from_millis(500), self.s.read(&mut chunk)).await {
                Ok(r) => {
                    let n = r.expect("read");
                    assert!(n > 0, "agent closed the connection");
                    self.buf.extend_from_slice(&chunk[..n]);
                    return;
                }
                Err(_) => self.s.write_all(&[0xC8, 0x80]).await.unwrap(),
            }
        }
    }

    /// Bytes up to and including the end of the stream header.
    async fn header(&mut self) -> String {
        let end = "xmlns:stream=\"http://etherx.jabber.org/streams\"";
        loop {
            let text = String::from_utf8_lossy(&self.buf).to_string();
            if let Some(i) = text.find(end) {
                if let Some(j) = text[i..].find('>') {
                    let h = text[..i + j + 1].to_string();
                    self.buf.drain(..h.len());
                    return h;
                }
            }
            self.fill().await;
        }
    }

    /// Skips keepalives (counting 0xC8 0x80) and whitespace between stanzas.
    fn skip_between(&mut self) {
        loop {
            match self.buf.as_slice() {
                [0xC8, 0x80, ..] => {
                    self.keepalives += 1;
                    self.buf.drain(..2);
                }
                [b' ' | b'\n' | b'\r' | b'\t', ..] => {
                    self.buf.drain(..1);
                }
                _ => return,
            }
        }
    }

    /// The next complete `<iq>` or `<message>` stanza.
    async fn stanza(&mut self) -> String {
        let deadline = Instant::now() + T;
        loop {
            assert!(Instant::now() < deadline, "no stanza, only keepalives");
            self.skip_between();
            let text = String::from_utf8_lossy(&self.buf).to_string();
            for (open, close) in [("<iq", "</iq>"), ("<message", "</message>")] {
                if text.starts_with(open) {
                    if let Some(i) = text.find(close) {
                        let st = text[..i + close.len()].to_string();
                        self.buf.drain(..st.len());
                        return st;
                    }
                }
            }
            if !text.is_empty() && !text.starts_with('<') && !text.starts_with('\u{200}') {
                panic!("bytes between stanzas: {text:?}");
            }
            self.fill().await;
        }
    }

    /// Stanzas until one satisfies `f` (others are returned too).
    async fn until(&mut self, f: impl Fn(&str) -> bool) -> (Vec<String>, String) {
        let mut seen = Vec::new();
        let deadline = Instant::now() + T;
        loop {
            assert!(
                Instant::now() < deadline,
                "stanza never came; saw {seen:#?}"
            );
            let s = self.stanza().await;
            if f(&s) {
                return (seen, s);
            }
            seen.push(s);
        }
    }

    async fn send(&mut self, s: &str) {
        self.s.write_all(s.as_bytes()).await.unwrap();
    }
}

fn attr<'a>(s: &'a str, tag: &str, name: &str) -> Option<&'a str> {
    let i = s.find(&format!("<{tag}"))?;
    let rest = &s[i..];
    let end = rest.find('>')?;
    let open = &rest[..end];
    let k = open.find(&format!(" {name}=\""))? + name.len() + 3;
    let v = &open[k..];
    Some(&v[..v.find('"')?])
}

fn text<'a>(s: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let i = s.find(&open)? + open.len();
    let j = s[i..].find(&format!("</{tag}>"))?;
    Some(&s[i..i + j])
}

fn uuid_halves(u: &str) -> (u64, u64) {
    let v = u128::from_str_radix(&u.replace('-', ""), 16).unwrap();
    ((v >> 64) as u64, v as u64)
}

fn config_push() -> String {
    let (ms, ls) = uuid_halves(VN_UUID);
    let node = |t: &str, n: &str, props: &str| {
        format!("<node type=\"{t}\"><name>{n}</name>{props}</node>")
    };
    let link = |t1: &str, n1: &str, t2: &str, n2: &str, m: &str| {
        format!("<link><node type=\"{t1}\"><name>{n1}</name></node><node type=\"{t2}\"><name>{n2}</name></node><metadata type=\"{m}\"/></link>")
    };
    let vr = format!("default-global-system-config:{AGENT}");
    let pr = "default-global-system-config:qfx1";
    let pi = "default-global-system-config:qfx1:p1";
    let li = "default-global-system-config:qfx1:p1:p1.100";
    let vmi = "default-domain:proj:vmi1";
    let vn = "default-domain:proj:blue";
    let perms = format!("<id-perms><uuid><uuid-mslong>{ms}</uuid-mslong><uuid-lslong>{ls}</uuid-lslong></uuid><enable>true</enable></id-perms>");
    let mut body = String::new();
    body += &node(
        "global-vrouter-config",
        "default-global-system-config:default-global-vrouter-config",
        "<vxlan-network-identifier-mode>configured</vxlan-network-identifier-mode>",
    );
    body += &node(
        "virtual-router",
        &vr,
        "<virtual-router-type>tor-agent</virtual-router-type>",
    );
    body += &node(
        "physical-router",
        pr,
        &format!("<display-name>sw1</display-name><physical-router-management-ip>192.0.2.1</physical-router-management-ip><physical-router-dataplane-ip>{VTEP}</physical-router-dataplane-ip>"),
    );
    body += &node("physical-interface", pi, "<display-name>p1</display-name>");
    body += &node(
        "logical-interface",
        li,
        "<logical-interface-vlan-tag>100</logical-interface-vlan-tag>",
    );
    body += &node("virtual-machine-interface", vmi, "");
    body += &node(
        "virtual-network",
        vn,
        &format!("{perms}<virtual-network-network-id>5</virtual-network-network-id><virtual-network-properties><vxlan-network-identifier>5001</vxlan-network-identifier><forwarding-mode>l2</forwarding-mode></virtual-network-properties><unknown-property>x</unknown-property>"),
    );
    body += &node("routing-instance", VRF, "");
    body += &node("project", "default-domain:proj", "<whatever/>");
    let mut links = String::new();
    links += &link(
        "physical-router",
        pr,
        "virtual-router",
        &vr,
        "physical-router-virtual-router",
    );
    links += &link(
        "physical-router",
        pr,
        "physical-interface",
        pi,
        "physical-router-physical-interface",
    );
    links += &link(
        "physical-interface",
        pi,
        "logical-interface",
        li,
        "physical-interface-logical-interface",
    );
    links += &link(
        "logical-interface",
        li,
        "virtual-machine-interface",
        vmi,
        "logical-interface-virtual-machine-interface",
    );
    links += &link(
        "virtual-machine-interface",
        vmi,
        "virtual-network",
        vn,
        "virtual-machine-interface-virtual-network",
    );
    links += &link(
        "virtual-network",
        vn,
        "routing-instance",
        VRF,
        "virtual-network-routing-instance",
    );
    format!(
        "<?xml version=\"1.0\"?>\n<iq type=\"set\" from=\"network-control@contrailsystems.com\" to=\"{AGENT}/config\"><config><update>{body}{links}</update></config></iq>"
    )
}

fn route_message(mac: &str, nh: &str, pref: u32, seq: u32) -> String {
    format!(
        "<message from=\"network-control@contrailsystems.com\" to=\"{AGENT}/bgp-peer\"><event xmlns=\"http://jabber.org/protocol/pubsub\"><items node=\"25/242/{VRF}\"><item id=\"5001-{mac},0.0.0.0/32\"><entry><nlri><af>25</af><safi>242</safi><ethernet-tag>5001</ethernet-tag><mac>{mac}</mac><address>0.0.0.0/32</address><group>0.0.0.0</group><source>0.0.0.0</source></nlri><next-hops><next-hop><af>1</af><address>{nh}</address><label>5001</label><tunnel-encapsulation-list><tunnel-encapsulation>vxlan</tunnel-encapsulation></tunnel-encapsulation-list></next-hop></next-hops><local-preference>{pref}</local-preference><sequence-number>{seq}</sequence-number><virtual-network>default-domain:proj:blue</virtual-network></entry></item></items></event></message>"
    )
}

fn agent_config(cn: SocketAddr) -> AgentConfig {
    let text = format!(
        r#"
        [agent]
        name = "{AGENT}"
        tsn_ip = "{TSN}"
        [southbound]
        listen = "ptcp:0:127.0.0.1"
        keepalive_interval_ms = 2000
        stale_grace_ms = 2000
        [northbound]
        control_nodes = ["{cn}"]
        hold_time_s = 3
        end_of_config_quiet_ms = 300
        ha_stale_route_interval_ms = 1000
        [admin]
        listen = "127.0.0.1:0"
        readiness_listen = "127.0.0.1:0"
        "#
    );
    let c: AgentConfig = toml::from_str(&text).unwrap();
    c.validate().unwrap();
    c
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_speaks_tf_xmpp_and_programs_a_real_switch() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let sw = RealSwitch::start(false, None).unwrap();
    sw.vtep_ctl(&["add-ps", "sw1"]).unwrap();
    sw.vtep_ctl(&["add-port", "sw1", "p1"]).unwrap();
    sw.vtep_ctl(&[
        "set",
        "Physical_Switch",
        "sw1",
        &format!("tunnel_ips={VTEP}"),
    ])
    .unwrap();

    let cn_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cn_addr = cn_listener.local_addr().unwrap();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(tor_agent::runtime::run(
        agent_config(cn_addr),
        async {
            let _ = stop_rx.await;
        },
        Some(started_tx),
    ));
    let handle = started_rx.await.unwrap();

    eprintln!("step: stream header (#1, #2) and the first keepalive (#7)");
    // --- stream header (#1, #2) and the first keepalive (#7) -------------
    let (s, _) = timeout(T, cn_listener.accept()).await.unwrap().unwrap();
    let mut cn = Cn {
        s,
        buf: Vec::new(),
        keepalives: 0,
    };
    let header = cn.header().await;
    assert_eq!(
        header,
        format!("<stream:stream from=\"{AGENT}\" to=\"network-control@contrailsystems.com\" version=\"1.0\" xml:lang=\"en\" xmlns=\"\" xmlns:stream=\"http://etherx.jabber.org/streams\" >")
    );
    cn.send(&format!("<stream:stream from=\"cn-test\" to=\"{AGENT}\" id=\"++123\" version=\"1.0\" xml:lang=\"en\" xmlns=\"jabber:client\" xmlns:stream=\"http://etherx.jabber.org/streams\" >")).await;

    eprintln!("step: config subscribe (#11)");
    // --- config subscribe (#11) -----------------------------------------------
    let sub = cn.stanza().await;
    assert!(
        cn.keepalives >= 1,
        "a keepalive (0xC8 0x80) as soon as Established"
    );
    assert_eq!(attr(&sub, "iq", "type"), Some("set"));
    assert_eq!(
        attr(&sub, "iq", "to"),
        Some("network-control@contrailsystems.com/config")
    );
    assert_eq!(
        attr(&sub, "subscribe", "node"),
        Some(format!("virtual-router:default-global-system-config:{AGENT}").as_str())
    );
    assert!(!sub.contains("/>\n<iq") && !sub.starts_with("<iq/>"));

    eprintln!("step: config push; VRF subscribe before any publish (#17)");
    // --- config push; VRF subscribe before any publish (#17) ----------------
    cn.send(&config_push()).await;
    let (before, vrf_sub) = cn
        .until(|s| attr(s, "subscribe", "node") == Some(VRF))
        .await;
    assert!(
        before.iter().all(|s| !s.contains("<publish")),
        "publish before subscribe: {before:?}"
    );
    assert_eq!(
        attr(&vrf_sub, "iq", "to"),
        Some("network-control@contrailsystems.com/bgp-peer")
    );
    assert_eq!(text(&vrf_sub, "instance-id"), Some("5"));

    eprintln!("step: the real switch dials the agent; takeover");
    // --- the real switch dials the agent; takeover ---------------------------
    let port = handle.southbound[0]
        .to_string()
        .split(':')
        .nth(1)
        .unwrap()
        .to_string();
    sw.vtep_ctl(&["set-manager", &format!("tcp:127.0.0.1:{port}")])
        .unwrap();
    let ls_name = format!("Contrail-{VN_UUID}");
    wait_for("the logical switch on the switch", || {
        sw.vtep_ctl(&["list-ls"])
            .unwrap_or_default()
            .contains(&ls_name)
    })
    .await;
    wait_for("the VLAN binding", || {
        sw.vtep_ctl(&["list-bindings", "sw1", "p1"])
            .unwrap_or_default()
            .contains(&ls_name)
    })
    .await;
    wait_for("unknown-dst toward our service node", || {
        sw.vtep_ctl(&["list-remote-macs", &ls_name])
            .unwrap_or_default()
            .contains(TSN)
    })
    .await;
    let key = sw
        .vtep_ctl(&["get", "Logical_Switch", &ls_name, "tunnel_key"])
        .unwrap();
    assert_eq!(key.trim(), "5001");

    eprintln!("step: broadcast route (#22) and End");
    // --- broadcast route (#22) and End-of-RIB (#29) ---------------------------
    let (_, bum) = cn
        .until(|s| s.contains("<mac>ff:ff:ff:ff:ff:ff</mac>"))
        .await;
    assert_eq!(
        attr(&bum, "publish", "node"),
        Some(format!("25/242/ff:ff:ff:ff:ff:ff,{VTEP}/32").as_str())
    );
    assert_eq!(text(&bum, "replicator-address"), Some(TSN));
    assert_eq!(text(&bum, "local-preference"), Some("100"));
    assert_eq!(text(&bum, "sequence-number"), Some("0"));
    let coll = cn.stanza().await;
    assert_eq!(attr(&coll, "collection", "node"), Some(VRF));
    assert_eq!(
        attr(&coll, "associate", "node"),
        attr(&bum, "publish", "node")
    );
    let (_, eor) = cn.until(|s| s.contains("<publish/>")).await;
    assert!(eor.contains("<pubsub xmlns=\"http://jabber.org/protocol/pubsub\"><publish/></pubsub>"));
    let eor2 = cn.stanza().await;
    assert!(
        eor2.contains("<collection/>"),
        "EoR: empty publish then empty collection: {eor2}"
    );

    eprintln!("step: a local MAC: publish + collection pair, entry fields (#19, #20, #21)");
    // --- a local MAC: publish + collection pair, entry fields (#19, #20, #21)
    sw.vtep_ctl(&["add-ucast-local", &ls_name, "02:AA:00:00:00:01", VTEP])
        .unwrap();
    let (_, publish) = cn
        .until(|s| s.contains("<mac>02:aa:00:00:00:01</mac>"))
        .await;
    let node = "25/242/02:aa:00:00:00:01,0.0.0.0/32";
    assert_eq!(attr(&publish, "publish", "node"), Some(node));
    let collection = cn.stanza().await;
    assert_eq!(attr(&collection, "collection", "node"), Some(VRF));
    assert_eq!(
        attr(&collection, "associate", "node"),
        Some(node),
        "identical node string"
    );
    for (tag, want) in [
        ("af", "25"),
        ("safi", "242"),
        ("ethernet-tag", "5001"),
        ("address", "0.0.0.0/32"),
        ("label", "5001"),
        ("tunnel-encapsulation", "vxlan"),
        ("local-preference", "100"),
        ("sequence-number", "1"),
    ] {
        assert_eq!(text(&publish, tag), Some(want), "{tag} in {publish}");
    }
    assert!(
        publish.contains("<group/>") || publish.contains("<group></group>"),
        "empty group"
    );
    assert_eq!(
        publish.matches("<next-hop>").count(),
        1,
        "exactly one next hop"
    );
    assert!(publish.contains(&format!("<next-hop><af>1</af><address>{VTEP}</address>")));

    eprintln!("step: remote routes: programmed; a reflection of our own is not (#26)");
    // --- remote routes: programmed; a reflection of our own is not (#26) ----
    cn.send(&route_message("02:bb:00:00:00:09", "10.0.0.99", 100, 1))
        .await;
    cn.send(&route_message("02:aa:00:00:00:01", VTEP, 100, 1))
        .await;
    wait_for("the remote MAC", || {
        sw.vtep_ctl(&["list-remote-macs", &ls_name])
            .unwrap_or_default()
            .contains("02:bb:00:00:00:09")
    })
    .await;
    let remote = sw.vtep_ctl(&["list-remote-macs", &ls_name]).unwrap();
    assert!(
        !remote.contains("02:aa:00:00:00:01"),
        "own route reflected back must not be programmed: {remote}"
    );

    eprintln!("step: HA");
    // --- HA-stale shadow of a route toward this switch (#21) -----------------
    cn.send(&route_message("02:cc:00:00:00:03", VTEP, 100, 1))
        .await;
    let (_, shadow) = cn
        .until(|s| s.contains("<mac>02:cc:00:00:00:03</mac>"))
        .await;
    assert_eq!(text(&shadow, "local-preference"), Some("1"));
    assert_eq!(text(&shadow, "sequence-number"), Some("0"));
    let _ = cn.stanza().await;

    eprintln!("step: withdraw repeats the key with dissociate (#23)");
    // --- withdraw repeats the key with dissociate (#23) -----------------------
    // The MAC ages out. The control node still shows a live path toward
    // this switch (its reflection of our route), so the route first drops
    // to HA-stale; once only HA-stale paths are left and we hold the
    // switch, it is withdrawn with the add's key.
    sw.vtep_ctl(&["del-ucast-local", &ls_name, "02:AA:00:00:00:01"])
        .unwrap();
    let (_, down) = cn
        .until(|s| s.contains("<mac>02:aa:00:00:00:01</mac>"))
        .await;
    assert_eq!(text(&down, "local-preference"), Some("1"));
    let _ = cn.stanza().await;
    cn.send(&route_message("02:aa:00:00:00:01", VTEP, 1, 0))
        .await;
    let (_, wd) = cn
        .until(|s| s.contains("<mac>02:aa:00:00:00:01</mac>"))
        .await;
    assert_eq!(attr(&wd, "publish", "node"), Some(node));
    let wd_coll = cn.stanza().await;
    assert_eq!(attr(&wd_coll, "dissociate", "node"), Some(node));

    eprintln!("step: keepalives every hold/3 (1 s here)");
    // --- keepalives every hold/3 (1 s here) ----------------------------------
    let before = cn.keepalives;
    let t0 = Instant::now();
    while Instant::now() < t0 + Duration::from_millis(3500) {
        cn.s.write_all(&[0xC8, 0x80]).await.unwrap();
        let _ = timeout(Duration::from_millis(200), cn.fill()).await;
        cn.skip_between();
    }
    assert!(
        cn.keepalives >= before + 2,
        "keepalives: {} then {}",
        before,
        cn.keepalives
    );

    eprintln!("step: status and metrics");
    // --- status and metrics --------------------------------------------------
    eprintln!("checking status");
    let st = timeout(T, handle.status()).await.unwrap().unwrap();
    let sw_st = st.switches.iter().find(|s| s.name == "sw1").unwrap();
    assert!(sw_st.active);
    assert_eq!(sw_st.state, "active");
    assert!(sw_st.last_takeover_ms.is_some());
    let metrics = reqwest_free_get(handle.admin_addr, "/metrics").await;
    assert!(
        metrics.contains("tor_agent_switch_active{switch=\"sw1\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tor_agent_takeovers_total 1"));
    // The core loop accounts for its time: the switch's dump, the audit, the exports.
    let sample = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {name} in {metrics}"))
    };
    for work in ["monitor_updates", "audits", "exports", "routes"] {
        let busy = sample(&format!(
            "tor_agent_core_busy_seconds_total{{work=\"{work}\"}}"
        ));
        let n = sample(&format!("tor_agent_core_work_total{{work=\"{work}\"}}"));
        assert!(busy > 0.0 && n >= 1.0, "{work}: {busy} s in {n}");
    }
    assert!(sample("tor_agent_core_queued_events") >= 0.0);
    let mut r = TcpStream::connect(handle.readiness_addr.unwrap())
        .await
        .unwrap();
    let mut line = String::new();
    r.read_to_string(&mut line).await.unwrap();
    assert_eq!(line, "ready\n");

    let _ = stop_tx.send(());
    let _ = timeout(T, agent).await;
}

/// A plain HTTP GET (the admin listener speaks HTTP/1.1).
async fn reqwest_free_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
