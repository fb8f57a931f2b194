//! The async layer against itself over in-memory pipes: headers, STARTTLS with mutual TLS,
//! keepalives and the hold timer under tokio's paused (virtual) clock.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::time::Duration;
use tf_xmpp::io::{client_open, server_accept, ClientOptions, ClientTls, ServerOptions};
use tf_xmpp::session::{spawn_session, CloseReason, Incoming, SessionConfig};
use tf_xmpp::tls::{client_config, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
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

#[tokio::test]
async fn plain_session_exchanges_exact_headers() {
    let (a, mut b) = tokio::io::duplex(4096);
    let client =
        tokio::spawn(async move { client_open(a, &ClientOptions::new("tor-agent-a")).await });
    let mut buf = vec![0u8; 4096];
    let n = b.read(&mut buf).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&buf[..n]).unwrap(),
        r#"<stream:stream from="tor-agent-a" to="network-control@contrailsystems.com" version="1.0" xml:lang="en" xmlns="" xmlns:stream="http://etherx.jabber.org/streams" >"#
    );
    b.write_all(b"<?xml version='1.0'?><stream:stream from='cn' to='tor-agent-a' xmlns:stream='http://etherx.jabber.org/streams'>").await.unwrap();
    let (_stream, header) = client.await.unwrap().unwrap();
    assert_eq!(header.from(), Some("cn"));
}

#[tokio::test]
async fn server_accept_replies_and_reports_the_agent() {
    let (a, mut b) = tokio::io::duplex(4096);
    let server =
        tokio::spawn(async move { server_accept(a, &ServerOptions::new("cn-host-1")).await });
    b.write_all(tf_xmpp::header::client_header("tor-agent-a", "").as_bytes())
        .await
        .unwrap();
    let (_stream, header) = server.await.unwrap().unwrap();
    assert_eq!(header.from(), Some("tor-agent-a"));
    let mut buf = vec![0u8; 4096];
    let n = b.read(&mut buf).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&buf[..n]).unwrap(),
        r#"<stream:stream from="cn-host-1" to="tor-agent-a" id="++123" version="1.0" xml:lang="en" xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams" >"#
    );
}

#[tokio::test]
async fn subcluster_mismatch_is_refused() {
    let (a, b) = tokio::io::duplex(4096);
    let mut opts = ServerOptions::new("cn");
    opts.subcluster = Some("sc1".into());
    let server = tokio::spawn(async move { server_accept(a, &opts).await });
    let mut copts = ClientOptions::new("tor-agent-a");
    copts.subcluster = "sc2".into();
    let client = client_open(b, &copts).await;
    assert!(server.await.unwrap().is_err());
    assert!(client.is_err());
}

#[tokio::test(start_paused = true)]
async fn open_timer_sends_stream_end_and_gives_up() {
    let (a, mut b) = tokio::io::duplex(4096);
    let server = tokio::spawn(async move { server_accept(a, &ServerOptions::new("cn")).await });
    let mut buf = vec![0u8; 64];
    let n = b.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"</stream:stream>");
    assert!(matches!(
        server.await.unwrap(),
        Err(tf_xmpp::XmppError::Timeout(_))
    ));
}

async fn tls_pair(with_client_cert: bool) -> (Result<(), String>, Result<(), String>) {
    let pki = pki();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let mut sopts = ServerOptions::new("cn");
    sopts.tls = Some(
        server_config(
            pki.server.0.as_bytes(),
            pki.server.1.as_bytes(),
            Some(pki.ca.as_bytes()),
        )
        .unwrap(),
    );
    let server = tokio::spawn(async move {
        let (stream, header) = server_accept(a, &sopts).await.map_err(|e| e.to_string())?;
        assert!(stream.get_ref().is_tls());
        assert_eq!(header.from(), Some("tor-agent-a"));
        let (tx, mut rx, _t) = spawn_session(stream, SessionConfig::control_node());
        // Echo the first stanza back so the client sees data flow over TLS.
        loop {
            match rx.recv().await {
                Some(Incoming::Stanza(el)) => {
                    tx.send(el.to_stanza()).unwrap();
                    return Ok(());
                }
                Some(Incoming::Keepalive) => {}
                other => return Err(format!("{other:?}")),
            }
        }
    });
    let identity = with_client_cert.then_some((pki.client.0.as_bytes(), pki.client.1.as_bytes()));
    let mut copts = ClientOptions::new("tor-agent-a");
    copts.tls = Some(ClientTls {
        config: client_config(pki.ca.as_bytes(), identity).unwrap(),
        server_name: "cn.test".try_into().unwrap(),
    });
    let client = async {
        let (stream, _h) = client_open(b, &copts).await.map_err(|e| e.to_string())?;
        let (tx, mut rx, _t) = spawn_session(stream, SessionConfig::agent());
        tx.send(tf_xmpp::route::encode_config_subscribe("tor-agent-a"))
            .unwrap();
        loop {
            match rx.recv().await {
                Some(Incoming::Stanza(el)) => {
                    assert_eq!(el.name, "iq");
                    return Ok(());
                }
                Some(Incoming::Keepalive) => {}
                other => return Err(format!("{other:?}")),
            }
        }
    }
    .await;
    (client, server.await.unwrap())
}

#[tokio::test]
async fn starttls_with_mutual_authentication() {
    let (client, server) = tls_pair(true).await;
    client.unwrap();
    server.unwrap();
}

#[tokio::test]
async fn tls_without_a_client_certificate_is_refused() {
    let (client, server) = tls_pair(false).await;
    assert!(
        server.is_err(),
        "server accepted a client without a certificate"
    );
    let _ = client;
}

#[tokio::test(start_paused = true)]
async fn agent_keepalive_at_once_then_every_hold_over_3_and_hold_expiry() {
    let (a, mut b) = tokio::io::duplex(4096);
    let stream = tf_xmpp::io::XmppStream::new(a, 4096);
    let mut cfg = SessionConfig::agent();
    cfg.hold_time = Duration::from_secs(9);
    let start = tokio::time::Instant::now();
    let (_tx, mut rx, _task) = spawn_session(stream, cfg);
    let mut buf = [0u8; 2];
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"\xC8\x80");
    assert_eq!(start.elapsed(), Duration::ZERO);
    // Keep the agent's hold timer alive with our own keepalives and watch its cadence.
    b.write_all(b" ").await.unwrap();
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    b.write_all(b"\xC8\x80").await.unwrap();
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(6));
    assert!(matches!(rx.recv().await, Some(Incoming::Keepalive)));
    assert!(matches!(rx.recv().await, Some(Incoming::Keepalive)));
    // Now stay silent: the hold timer (9 s after our last keepalive at t=3) fires at t=12.
    loop {
        match rx.recv().await {
            Some(Incoming::Closed(CloseReason::HoldTimerExpired)) => break,
            Some(Incoming::Keepalive) | Some(Incoming::Stanza(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(start.elapsed(), Duration::from_secs(12));
}

#[tokio::test(start_paused = true)]
async fn cn_session_reports_protocol_errors_and_peer_close() {
    let (a, mut b) = tokio::io::duplex(4096);
    let (_tx, mut rx, _t) = spawn_session(
        tf_xmpp::io::XmppStream::new(a, 4096),
        SessionConfig::control_node(),
    );
    b.write_all(b"<presence/>").await.unwrap();
    match rx.recv().await {
        Some(Incoming::Closed(CloseReason::Protocol(e))) => {
            assert!(e.to_string().contains("presence"))
        }
        other => panic!("{other:?}"),
    }
    let (a, mut b) = tokio::io::duplex(4096);
    let (_tx, mut rx, _t) = spawn_session(
        tf_xmpp::io::XmppStream::new(a, 4096),
        SessionConfig::control_node(),
    );
    b.write_all(b"<iq type='set'></iq></stream:stream>")
        .await
        .unwrap();
    assert!(matches!(rx.recv().await, Some(Incoming::Stanza(_))));
    assert!(matches!(
        rx.recv().await,
        Some(Incoming::Closed(CloseReason::PeerClosed {
            stream_end: true
        }))
    ));
    let (a, b) = tokio::io::duplex(4096);
    let (_tx, mut rx, _t) = spawn_session(
        tf_xmpp::io::XmppStream::new(a, 4096),
        SessionConfig::control_node(),
    );
    drop(b);
    assert!(matches!(
        rx.recv().await,
        Some(Incoming::Closed(CloseReason::PeerClosed {
            stream_end: false
        }))
    ));
}

#[tokio::test(start_paused = true)]
async fn huge_stanza_is_cut_off_at_the_limit() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let (_tx, mut rx, _t) = spawn_session(
        tf_xmpp::io::XmppStream::new(a, 1000),
        SessionConfig::control_node(),
    );
    let writer = tokio::spawn(async move {
        let _ = b.write_all(b"<iq type='set'>").await;
        for _ in 0..100 {
            if b.write_all(&[b'x'; 1000]).await.is_err() {
                break;
            }
        }
        b
    });
    match rx.recv().await {
        Some(Incoming::Closed(CloseReason::Protocol(e))) => {
            assert!(e.to_string().contains("maximum size"))
        }
        other => panic!("{other:?}"),
    }
    drop(writer);
}

/// Both ends send a burst while the other is also sending: reading must never wait for
/// writing to finish, or the two would deadlock on full buffers.
#[tokio::test]
async fn simultaneous_floods_do_not_deadlock() {
    let (a, b) = tokio::io::duplex(1024);
    let (ta, ra, _t1) = spawn_session(
        tf_xmpp::io::XmppStream::new(a, 4096),
        SessionConfig::agent(),
    );
    let (tb, rb, _t2) = spawn_session(
        tf_xmpp::io::XmppStream::new(b, 4096),
        SessionConfig::control_node(),
    );
    const N: usize = 3000;
    let stanza = format!(
        "<message to='x/bgp-peer'><body>{}</body></message>",
        "y".repeat(200)
    );
    let count = |mut rx: tokio::sync::mpsc::Receiver<Incoming>| async move {
        let mut n = 0;
        while n < N {
            match rx.recv().await {
                Some(Incoming::Stanza(_)) => n += 1,
                Some(Incoming::Keepalive) => {}
                other => panic!("{other:?}"),
            }
        }
        (n, rx)
    };
    let (s1, s2) = (stanza.clone(), stanza);
    let send_a = tokio::spawn(async move {
        for _ in 0..N {
            ta.send_wait(s1.clone()).await.unwrap();
        }
        ta
    });
    let send_b = tokio::spawn(async move {
        for _ in 0..N {
            tb.send_wait(s2.clone()).await.unwrap();
        }
        tb
    });
    let both = async { tokio::join!(count(ra), count(rb)) };
    let ((na, _), (nb, _)) = tokio::time::timeout(Duration::from_secs(60), both)
        .await
        .expect("deadlock");
    assert_eq!((na, nb), (N, N));
    let _ = (send_a.await, send_b.await);
}

/// A large stanza still arriving keeps the session alive (TF restarts the hold timer when
/// unread bytes are waiting); a fragment that stops growing does not.
#[tokio::test(start_paused = true)]
async fn hold_timer_tolerates_a_slow_large_stanza_but_not_a_stuck_one() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let mut cfg = SessionConfig::control_node();
    cfg.hold_time = Duration::from_secs(9);
    let (_tx, mut rx, _t) = spawn_session(tf_xmpp::io::XmppStream::new(a, 1 << 16), cfg);
    b.write_all(b"<iq type='set'><x>").await.unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(7)).await;
        b.write_all(b"more").await.unwrap();
    }
    b.write_all(b"</x></iq>").await.unwrap();
    match rx.recv().await {
        Some(Incoming::Stanza(el)) => {
            assert_eq!(el.child_text("x").as_deref(), Some("moremoremoremoremore"))
        }
        other => panic!("{other:?}"),
    }
    b.write_all(b"<iq type='set'><x>stuck").await.unwrap();
    assert!(matches!(
        rx.recv().await,
        Some(Incoming::Closed(CloseReason::HoldTimerExpired))
    ));
}

/// A consumer that falls behind stops the session reading; the peer's stanzas then wait in the
/// socket, so the hold timer must not blame the peer. Once the consumer is back, the peer's
/// silence counts again.
#[tokio::test(start_paused = true)]
async fn hold_timer_does_not_blame_the_peer_for_our_own_backlog() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut cfg = SessionConfig::control_node();
    cfg.hold_time = Duration::from_secs(9);
    cfg.incoming_capacity = 1;
    let (_tx, mut rx, _t) = spawn_session(tf_xmpp::io::XmppStream::new(a, 1 << 16), cfg);
    // Keep the peer's side drained so the session's own keepalives never block it.
    let (mut br, mut bw) = tokio::io::split(b);
    tokio::spawn(async move {
        let mut sink = vec![0u8; 4096];
        while matches!(br.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    // Three stanzas, all sent at once: one fills the channel, one waits in the session, one in
    // the socket. Nobody reads them for three hold times.
    for i in 0..3 {
        bw.write_all(format!("<iq type='set' id='{i}'></iq>").as_bytes())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(27)).await;
    for i in 0..3 {
        match rx.recv().await {
            Some(Incoming::Stanza(el)) => assert_eq!(el.attr("id"), Some(i.to_string().as_str())),
            other => panic!("stanza {i}: {other:?}"),
        }
    }
    // Caught up, and the peer now really is silent: the hold timer fires.
    let t = tokio::time::Instant::now();
    assert!(matches!(
        rx.recv().await,
        Some(Incoming::Closed(CloseReason::HoldTimerExpired))
    ));
    assert!(t.elapsed() <= Duration::from_secs(9), "{:?}", t.elapsed());
}

/// With route decoding on, route stanzas arrive decoded (the value the generic decoder gives),
/// everything else as an element, and malformed XML still ends the session.
#[tokio::test(start_paused = true)]
async fn route_stanzas_arrive_decoded_when_asked() {
    use tf_xmpp::enet::EnetEntry;
    use tf_xmpp::route::{
        decode_agent_iq, decode_cn_message, encode_route_publish, encode_route_updates,
        encode_vrf_subscribe,
    };
    use tf_xmpp::{Element, RouteDecoding, RouteStanza, Stanza};
    let generic = |xml: &str| Stanza::from_element(Element::parse(xml).unwrap()).unwrap();
    let e = EnetEntry::tor_mac(5001, "02:aa:bb:00:00:01", "192.0.2.21", 1);
    // The CN's side: agent iqs.
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let mut cfg = SessionConfig::control_node();
    cfg.route_decoding = RouteDecoding::AgentIqs;
    let (_tx, mut rx, _t) = spawn_session(tf_xmpp::io::XmppStream::new(a, 1 << 16), cfg);
    let sub = encode_vrf_subscribe("tor-agent-a", "v", 5, 1);
    let pair = encode_route_publish("tor-agent-a", "v", &e, true, 2);
    b.write_all(format!("{sub}\u{200}{pair}<iq type='set'><a></b></iq>").as_bytes())
        .await
        .unwrap();
    match rx.recv().await {
        Some(Incoming::Stanza(el)) => assert_eq!(el, Element::parse(&sub).unwrap()),
        other => panic!("{other:?}"),
    }
    assert!(matches!(rx.recv().await, Some(Incoming::Keepalive)));
    let split = pair.find("</iq>").unwrap() + 5;
    for part in [&pair[..split], &pair[split..]] {
        match rx.recv().await {
            Some(Incoming::Route(RouteStanza::Agent(iq))) => {
                assert_eq!(Ok(iq), decode_agent_iq(&generic(part)))
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        rx.recv().await,
        Some(Incoming::Closed(CloseReason::Protocol(_)))
    ));
    // The agent's side: CN messages.
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let mut cfg = SessionConfig::agent();
    cfg.route_decoding = RouteDecoding::CnMessages;
    let (_tx, mut rx, _t) = spawn_session(tf_xmpp::io::XmppStream::new(a, 1 << 16), cfg);
    let msg = encode_route_updates("tor-agent-a", "v", &[e.clone(), e]).remove(0);
    b.write_all(msg.as_bytes()).await.unwrap();
    match rx.recv().await {
        Some(Incoming::Route(RouteStanza::Cn(m))) => {
            assert_eq!(Ok(m), decode_cn_message(&generic(&msg)))
        }
        other => panic!("{other:?}"),
    }
}
