//! End-to-end tests of the `tor-proxy` binary with real TLS, real sockets and agent processes
//! that are killed and stopped like real ones.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tor_proxy::admin::api::AdminApiClient;

/// Not a test: the body of the agent child processes (runs only with TOR_PROXY_TEST_AGENT set).
#[test]
#[ignore = "helper process for the kill/hang tests, started by them"]
fn helper_agent_process() {
    support::agent_process_main();
}

fn header(pki: &Pki, node: &str) -> String {
    let (c, k) = pki.leaf("tor-proxy", false);
    format!(
        r#"
[global]
node_name = "{node}"
log_format = "json"

[admin]
listen = "127.0.0.1:0"

[backend_tls]
ca = "{ca}"
cert = "{c}"
key = "{k}"
server_name = "localhost"
"#,
        ca = pki.ca().display(),
        c = c.display(),
        k = k.display()
    )
}

fn backend(name: &str, addr: SocketAddr, ready: Option<SocketAddr>) -> String {
    let ready = ready
        .map(|r| format!("readiness_port = {}\n", r.port()))
        .unwrap_or_default();
    format!("\n[[backend]]\nname = \"{name}\"\naddress = \"{addr}\"\n{ready}")
}

const PASSTHROUGH: &str = "\n[[listener]]\nname = \"ovsdb\"\nbind = \"127.0.0.1:0\"\n";

fn tls_agent(pki: &Pki, name: &str) -> AgentSpec {
    let (c, k) = pki.leaf(&format!("agent-{name}"), false);
    AgentSpec {
        name: name.into(),
        tls: Some((c, k, pki.ca())),
        ready_file: None,
    }
}

fn plain_agent(name: &str, ready_file: Option<&Path>) -> AgentSpec {
    AgentSpec {
        name: name.into(),
        tls: None,
        ready_file: ready_file.map(Path::to_path_buf),
    }
}

fn count_by_agent(switches: &[Switch]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for s in switches {
        *m.entry(s.agent().to_string()).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_keeps_switch_agent_mutual_tls() {
    let pki = Pki::new();
    let (a1, _) = serve_agent(tls_agent(&pki, "a1")).await;
    let (a2, _) = serve_agent(tls_agent(&pki, "a2")).await;
    let cfg = format!(
        "{}{PASSTHROUGH}[health]\ninterval = \"200ms\"\n{}{}",
        header(&pki, "p"),
        backend("a1", a1, None),
        backend("a2", a2, None)
    );
    let proxy = ProxyProc::start(pki.dir.path(), "p", &cfg);
    proxy
        .wait_for("TLS checks to pass", |s| {
            s.backends
                .iter()
                .all(|b| b.last_check.as_ref().is_some_and(|c| c.ok))
        })
        .await;

    let mut sw = switch(
        proxy.addr("ovsdb"),
        switch_ip(1),
        Some(pki.switch_tls("sw-1", false)),
    )
    .await
    .unwrap();
    // The agent saw the switch's own certificate: TLS ran end to end through the proxy.
    assert_eq!(sw.peer(), "sw-1", "{}", sw.greeting);
    assert!(["a1", "a2"].contains(&sw.agent()));
    assert_eq!(sw.echo("hello").await.unwrap(), "hello");
    // Half-close: our FIN reaches the agent, whose reply still reaches us.
    assert_eq!(sw.finish().await.unwrap(), "bye\n");

    // A switch the agents do not trust is refused by the agent itself, not by the proxy.
    let rogue = switch(
        proxy.addr("ovsdb"),
        switch_ip(2),
        Some(pki.switch_tls("rogue", true)),
    )
    .await;
    assert!(
        rogue.is_err(),
        "an untrusted switch certificate must not reach an agent session"
    );
    let s = proxy
        .wait_for("both sessions logged", |s| {
            s.terminations.values().sum::<u64>() >= 2
        })
        .await;
    assert_eq!(s.terminations.get("--"), Some(&2), "{:?}", s.terminations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_rejects_a_switch_with_a_wrong_certificate() {
    let pki = Pki::new();
    let (a1, _) = serve_agent(tls_agent(&pki, "a1")).await;
    let (pc, pk) = pki.leaf("proxy-front", false);
    let cfg = format!(
        "{}\n[[listener]]\nname = \"ovsdb-tls\"\nbind = \"127.0.0.1:0\"\nmode = \"terminate\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nclient_ca = \"{}\"\n{}",
        header(&pki, "p"),
        pc.display(),
        pk.display(),
        pki.ca().display(),
        backend("a1", a1, None)
    );
    let proxy = ProxyProc::start(pki.dir.path(), "p", &cfg);
    let addr = proxy.addr("ovsdb-tls");

    let bad = switch(addr, switch_ip(1), Some(pki.switch_tls("intruder", true))).await;
    assert!(
        bad.is_err(),
        "a certificate from another CA must be rejected"
    );
    let s = proxy
        .wait_for("handshake failure counted and logged", |s| {
            s.listeners[0].handshake_failures >= 1 && s.terminations.contains_key("CR")
        })
        .await;
    assert_eq!(s.terminations.get("CR"), Some(&1), "{:?}", s.terminations);

    let mut good = switch(addr, switch_ip(2), Some(pki.switch_tls("sw-7", false)))
        .await
        .unwrap();
    // Re-encrypted: the agent sees the proxy's client certificate; the proxy knows the switch.
    assert_eq!(good.greeting, "agent=a1 peer=tor-proxy");
    assert_eq!(good.echo("ping").await.unwrap(), "ping");
    let s = proxy.show().await;
    assert_eq!(s.sessions.len(), 1);
    assert_eq!(s.sessions[0].switch, "cn:sw-7");
    assert_eq!(s.sessions[0].backend, "a1");
    assert!(
        s.sessions[0].bytes_up >= 5 && s.sessions[0].bytes_down >= 5,
        "{:?}",
        s.sessions[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_spreads_100_switches_evenly() {
    let pki = Pki::new();
    let (a1, _) = serve_agent(plain_agent("a1", None)).await;
    let (a2, _) = serve_agent(plain_agent("a2", None)).await;
    let cfg = format!(
        "{}{PASSTHROUGH}[health]\ncheck = \"tcp\"\n{}{}",
        header(&pki, "p"),
        backend("a1", a1, None),
        backend("a2", a2, None)
    );
    let proxy = ProxyProc::start(pki.dir.path(), "p", &cfg);
    let mut switches = Vec::new();
    for i in 0..100 {
        switches.push(
            switch(proxy.addr("ovsdb"), switch_ip(i), None)
                .await
                .unwrap(),
        );
    }
    let counts = count_by_agent(&switches);
    assert_eq!(counts.get("a1"), Some(&50), "{counts:?}");
    assert_eq!(counts.get("a2"), Some(&50), "{counts:?}");
    let s = proxy.show().await;
    assert_eq!(backend_state(&s, "a1").current, 50);
    assert_eq!(backend_state(&s, "a2").current, 50);
    // Close 20 sessions of a1: the counts follow, and the next 20 switches all go to a1.
    let mut kept = Vec::new();
    let mut closed = 0;
    for sw in switches {
        if sw.agent() == "a1" && closed < 20 {
            closed += 1;
            drop(sw);
        } else {
            kept.push(sw);
        }
    }
    proxy
        .wait_for("a1 to hold 30", |s| backend_state(s, "a1").current == 30)
        .await;
    for i in 100..120 {
        let sw = switch(proxy.addr("ovsdb"), switch_ip(i), None)
            .await
            .unwrap();
        assert_eq!(sw.agent(), "a1");
        kept.push(sw);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_sessions_reconnect_to_the_other() {
    let pki = Pki::new();
    let ag1 = AgentProc::start(&tls_agent(&pki, "a1"));
    let ag2 = AgentProc::start(&tls_agent(&pki, "a2"));
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let cfg = format!(
        "{}{PASSTHROUGH}[health]\ninterval = \"300ms\"\nfast_interval = \"100ms\"\ntimeout = \"300ms\"\nfall = 2\n{}{}",
        header(&pki, "p"),
        backend("a1", addr(ag1.port), None),
        backend("a2", addr(ag2.port), None)
    );
    let proxy = ProxyProc::start(pki.dir.path(), "p", &cfg);
    let tls = pki.switch_tls("sw", false);
    let mut switches = Vec::new();
    for i in 0..10 {
        switches.push(
            switch(proxy.addr("ovsdb"), switch_ip(i), Some(tls.clone()))
                .await
                .unwrap(),
        );
    }
    assert_eq!(count_by_agent(&switches).get("a1"), Some(&5));

    ag1.signal(libc::SIGKILL);
    for (i, sw) in switches.iter_mut().enumerate() {
        if sw.agent() == "a1" {
            assert!(
                sw.wait_closed(PATIENCE).await.is_some(),
                "session of switch {i} not closed"
            );
            // Like ovsdb-server: reconnect once. It must land on a2 at the first try.
            let again = switch(proxy.addr("ovsdb"), switch_ip(i as u32), Some(tls.clone()))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "switch {i} must reconnect at its first try: {e}; proxy log: {:#?}",
                        proxy.logs()
                    )
                });
            assert_eq!(again.agent(), "a2");
            *sw = again;
        } else {
            assert_eq!(sw.echo("still here").await.unwrap(), "still here");
        }
    }
    let s = proxy
        .wait_for("a1 marked down", |s| backend_state(s, "a1").state == "DOWN")
        .await;
    assert_eq!(backend_state(&s, "a2").current, 10);
    assert_eq!(backend_state(&s, "a1").current, 0);
    drop(ag2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_backend_is_marked_down_and_its_sessions_closed() {
    let pki = Pki::new();
    let ag1 = AgentProc::start(&tls_agent(&pki, "a1"));
    let ag2 = AgentProc::start(&tls_agent(&pki, "a2"));
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let (interval, fall, timeout) = (Duration::from_millis(400), 2u32, Duration::from_millis(300));
    let cfg = format!(
        "{}{PASSTHROUGH}[health]\ncheck = \"tls\"\ninterval = \"{}ms\"\nfast_interval = \"100ms\"\ntimeout = \"{}ms\"\nfall = {fall}\n[timeouts]\nidle = \"1h\"\n{}{}",
        header(&pki, "p"),
        interval.as_millis(),
        timeout.as_millis(),
        backend("a1", addr(ag1.port), None),
        backend("a2", addr(ag2.port), None)
    );
    let proxy = ProxyProc::start(pki.dir.path(), "p", &cfg);
    proxy
        .wait_for("checks to pass", |s| {
            s.backends
                .iter()
                .all(|b| b.last_check.as_ref().is_some_and(|c| c.ok))
        })
        .await;
    let tls = pki.switch_tls("sw", false);
    let mut switches = Vec::new();
    for i in 0..4 {
        switches.push(
            switch(proxy.addr("ovsdb"), switch_ip(i), Some(tls.clone()))
                .await
                .unwrap(),
        );
    }
    assert_eq!(count_by_agent(&switches).get("a1"), Some(&2));

    // A hung agent: its kernel still accepts TCP, but nothing answers.
    ag1.signal(libc::SIGSTOP);
    let bound = interval * fall + timeout;
    for sw in switches.iter_mut().filter(|s| s.agent() == "a1") {
        let took = sw
            .wait_closed(PATIENCE)
            .await
            .expect("session on the hung agent never closed");
        eprintln!("session on hung agent closed after {took:?} (bound {bound:?})");
        // Detection bound plus slack for process scheduling on a loaded 2-core machine.
        assert!(
            took < bound + Duration::from_secs(2),
            "closed after {took:?}, bound {bound:?}"
        );
    }
    let s = proxy
        .wait_for("a1 down", |s| backend_state(s, "a1").state == "DOWN")
        .await;
    assert!(backend_state(&s, "a1").killed_sessions >= 2);
    let logs = proxy
        .wait_for_session_logs("two DD lines", |l| {
            l.iter().filter(|(_, b, t)| b == "a1" && t == "DD").count() >= 2
        })
        .await;
    assert_eq!(
        logs.iter()
            .filter(|(_, b, t)| b == "a1" && t == "DD")
            .count(),
        2,
        "{logs:?}"
    );
    for sw in switches.iter_mut().filter(|s| s.agent() == "a2") {
        assert_eq!(sw.echo("unaffected").await.unwrap(), "unaffected");
    }
    let again = switch(proxy.addr("ovsdb"), switch_ip(0), Some(tls.clone()))
        .await
        .unwrap();
    assert_eq!(again.agent(), "a2");
    drop(ag1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_maint_enable_and_shutdown_sessions() {
    let pki = Pki::new();
    let (a1, _) = serve_agent(plain_agent("a1", None)).await;
    let (a2, _) = serve_agent(plain_agent("a2", None)).await;
    let cfg = format!(
        "{}{PASSTHROUGH}[health]\ncheck = \"tcp\"\n[affinity]\nenabled = false\n{}{}",
        header(&pki, "p"),
        backend("a1", a1, None),
        backend("a2", a2, None)
    );
    let proxy = ProxyProc::start(pki.dir.path(), "p", &cfg);
    let c = proxy.client();
    let at = proxy.addr("ovsdb");
    let mut s1 = switch(at, switch_ip(1), None).await.unwrap();
    assert_eq!(s1.agent(), "a1");

    let v = c.drain("a1".into()).await.unwrap();
    assert_eq!(v.state, "DRAIN");
    let s2 = switch(at, switch_ip(2), None).await.unwrap();
    let s3 = switch(at, switch_ip(3), None).await.unwrap();
    assert_eq!(
        (s2.agent(), s3.agent()),
        ("a2", "a2"),
        "a drained backend gets no new switch"
    );
    assert_eq!(
        s1.echo("kept").await.unwrap(),
        "kept",
        "draining keeps established sessions"
    );

    let v = c.maint("a1".into()).await.unwrap();
    assert_eq!(v.state, "MAINT");
    assert!(
        s1.wait_closed(PATIENCE).await.is_some(),
        "maint closes sessions"
    );

    c.enable("a1".into()).await.unwrap();
    let s4 = switch(at, switch_ip(4), None).await.unwrap();
    assert_eq!(s4.agent(), "a1", "least-loaded after enable");

    let n = c.shutdown_sessions("a2".into()).await.unwrap();
    assert_eq!(n, 2);
    for mut s in [s2, s3] {
        assert!(s.wait_closed(PATIENCE).await.is_some());
    }
    assert!(
        c.drain("nope".into()).await.is_err(),
        "unknown backend is an error"
    );
    let s = proxy
        .wait_for("kills logged", |s| s.terminations.get("KD") == Some(&3))
        .await;
    assert_eq!(s.sessions.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_drain_down_and_weight() {
    let pki = Pki::new();
    let f1 = pki.path("a1.ready");
    let f2 = pki.path("a2.ready");
    std::fs::write(&f1, "ready up\n").unwrap();
    std::fs::write(&f2, "up\n").unwrap();
    let (a1, r1) = serve_agent(plain_agent("a1", Some(&f1))).await;
    let (a2, r2) = serve_agent(plain_agent("a2", Some(&f2))).await;
    let cfg = format!(
        "{}{PASSTHROUGH}[health]\ncheck = \"tcp\"\ninterval = \"100ms\"\n[affinity]\nenabled = false\n{}{}",
        header(&pki, "p"),
        backend("a1", a1, r1),
        backend("a2", a2, r2)
    );
    let proxy = ProxyProc::start(pki.dir.path(), "p", &cfg);
    proxy
        .wait_for("readiness read", |s| {
            s.backends
                .iter()
                .all(|b| b.last_readiness.as_ref().is_some_and(|r| r.ok))
        })
        .await;
    let at = proxy.addr("ovsdb");
    let mut s1 = switch(at, switch_ip(1), None).await.unwrap();
    assert_eq!(s1.agent(), "a1");

    std::fs::write(&f1, "drain\n").unwrap();
    proxy
        .wait_for("a1 drain", |s| backend_state(s, "a1").state == "DRAIN")
        .await;
    let s2 = switch(at, switch_ip(2), None).await.unwrap();
    let s3 = switch(at, switch_ip(3), None).await.unwrap();
    assert_eq!((s2.agent(), s3.agent()), ("a2", "a2"));
    assert_eq!(s1.echo("still").await.unwrap(), "still");

    std::fs::write(&f1, "down#lost control node\n").unwrap();
    assert!(
        s1.wait_closed(PATIENCE).await.is_some(),
        "readiness down closes sessions"
    );
    let s = proxy
        .wait_for("a1 agent down and its session counted", |s| {
            backend_state(s, "a1").state == "DOWN (agent)" && s.terminations.contains_key("DD")
        })
        .await;
    assert_eq!(s.terminations.get("DD"), Some(&1), "{:?}", s.terminations);
    proxy
        .wait_for_session_logs("a DD line", |l| {
            l.iter().any(|(_, b, t)| b == "a1" && t == "DD")
        })
        .await;

    std::fs::write(&f1, "ready up 50%\n").unwrap();
    let s = proxy
        .wait_for("a1 back at half weight", |s| backend_state(s, "a1").usable)
        .await;
    assert_eq!(backend_state(&s, "a1").effective_weight, 50);
    // a1 (weight 50, 0 sessions) vs a2 (weight 100, 2 sessions): (0+1)/50 < (2+1)/100.
    assert_eq!(switch(at, switch_ip(4), None).await.unwrap().agent(), "a1");
}

fn free_port() -> u16 {
    ovsdb::testing::free_port().unwrap()
}

/// An address where nothing listens, ever: a privileged port no test binds, below the range
/// `free_port` hands out (a port that was merely free a moment ago can be taken by another
/// test's listener, and then the "dead" agent answers).
const DEAD_PORT: u16 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_survives_a_proxy_restart_through_the_peer() {
    let pki = Pki::new();
    let (a1, _) = serve_agent(plain_agent("a1", None)).await;
    let (a2, _) = serve_agent(plain_agent("a2", None)).await;
    let (pa, pb) = (free_port(), free_port());
    // Each peer is listed with a dead address first: the link must move on to the next one.
    let dead_port = DEAD_PORT;
    let peering = |me: &str, listen: u16, other: &str, other_port: u16| {
        let (c, k) = pki.leaf(&format!("peer-{me}"), false);
        format!(
            "\n[peering]\nlisten = \"127.0.0.1:{listen}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_ca = \"{}\"\nreconnect = \"200ms\"\n[[peer]]\nname = \"{other}\"\naddresses = [\"127.0.0.1:{dead_port}\", \"127.0.0.1:{other_port}\"]\nserver_name = \"localhost\"\n",
            c.display(),
            k.display(),
            pki.ca().display()
        )
    };
    let cfg = |me: &str, listen: u16, other: &str, other_port: u16| {
        format!(
            "{}{PASSTHROUGH}[health]\ncheck = \"tcp\"\n{}{}{}",
            header(&pki, me),
            backend("a1", a1, None),
            backend("a2", a2, None),
            peering(me, listen, other, other_port)
        )
    };
    let proxy_a = ProxyProc::start(pki.dir.path(), "A", &cfg("A", pa, "B", pb));
    let proxy_b = ProxyProc::start(pki.dir.path(), "B", &cfg("B", pb, "A", pa));
    proxy_a
        .wait_for("link A->B up", |s| s.peers[0].state == "up")
        .await;
    proxy_b
        .wait_for("link B->A up", |s| s.peers[0].state == "up")
        .await;

    // The switch at S lands on a1 through proxy A; B learns it.
    let s_ip = switch_ip(50);
    let sw = switch(proxy_a.addr("ovsdb"), s_ip, None).await.unwrap();
    assert_eq!(sw.agent(), "a1");
    drop(sw);
    proxy_b
        .wait_for("B to learn the entry", |s| {
            s.affinity_entries == 1 && s.peers[0].received >= 1
        })
        .await;

    // Restart A: a new process with an empty table, refilled by B's full resync.
    let config_a = proxy_a.config_path.clone();
    assert!(proxy_a.stop().success());
    let proxy_a = ProxyProc::start_file(config_a);
    let s = proxy_a
        .wait_for("resync from B", |s| {
            s.affinity_entries == 1 && s.peers[0].received >= 1
        })
        .await;
    assert_eq!(s.sessions.len(), 0);
    let b = proxy_b
        .wait_for("B resynced A", |s| s.peers[0].resyncs >= 2)
        .await;
    assert!(b.peers[0].sent >= 1);

    // Load a1 so that least-connections alone would send S to a2.
    let other = switch(proxy_a.addr("ovsdb"), switch_ip(51), None)
        .await
        .unwrap();
    assert_eq!(other.agent(), "a1");
    let back = switch(proxy_a.addr("ovsdb"), s_ip, None).await.unwrap();
    assert_eq!(
        back.agent(),
        "a1",
        "affinity from the peer sends the switch back to its agent"
    );
    let fresh = switch(proxy_a.addr("ovsdb"), switch_ip(52), None)
        .await
        .unwrap();
    assert_eq!(
        fresh.agent(),
        "a2",
        "a switch without affinity follows least-connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_backends_without_dropping_sessions() {
    let pki = Pki::new();
    let (a1, _) = serve_agent(plain_agent("a1", None)).await;
    let (a2, _) = serve_agent(plain_agent("a2", None)).await;
    let head = format!(
        "{}{PASSTHROUGH}[health]\ncheck = \"tcp\"\n",
        header(&pki, "p")
    );
    let proxy = ProxyProc::start(
        pki.dir.path(),
        "p",
        &format!("{head}{}", backend("a1", a1, None)),
    );
    let at = proxy.addr("ovsdb");
    let mut s1 = switch(at, switch_ip(1), None).await.unwrap();
    assert_eq!(s1.agent(), "a1");

    std::fs::write(
        &proxy.config_path,
        format!(
            "{head}{}{}",
            backend("a1", a1, None),
            backend("a2", a2, None)
        ),
    )
    .unwrap();
    proxy.signal(libc::SIGHUP);
    proxy
        .wait_for("a2 added", |s| {
            s.backends.len() == 2 && backend_state(s, "a2").usable
        })
        .await;
    assert_eq!(s1.echo("survived").await.unwrap(), "survived");
    let s2 = switch(at, switch_ip(2), None).await.unwrap();
    assert_eq!(s2.agent(), "a2");

    // Remove a1 through the admin API's reload: its established session stays up.
    std::fs::write(
        &proxy.config_path,
        format!("{head}{}", backend("a2", a2, None)),
    )
    .unwrap();
    let summary = proxy.client().reload().await.unwrap();
    assert_eq!(summary.removed, vec!["a1".to_string()]);
    assert_eq!(s1.echo("still").await.unwrap(), "still");
    assert_eq!(switch(at, switch_ip(1), None).await.unwrap().agent(), "a2");
    // A broken file is refused and the running configuration kept.
    std::fs::write(&proxy.config_path, "[[listener]]\nname = 1\n").unwrap();
    assert!(proxy.client().reload().await.is_err());
    assert_eq!(proxy.show().await.backends.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_connects_are_redispatched_and_count_against_the_backend() {
    let pki = Pki::new();
    let dead = SocketAddr::from(([127, 0, 0, 1], DEAD_PORT));
    let (live, _) = serve_agent(plain_agent("live", None)).await;
    // Checks so slow they never decide: only the switches' failed connects can.
    let cfg = format!(
        "{}{PASSTHROUGH}[health]\ncheck = \"tcp\"\ninterval = \"1h\"\nfast_interval = \"1h\"\ninit_state = \"fully-up\"\nfall = 3\n[affinity]\nenabled = false\n{}{}",
        header(&pki, "p"),
        backend("dead", dead, None),
        backend("live", live, None)
    );
    let proxy = ProxyProc::start(pki.dir.path(), "p", &cfg);
    proxy
        .wait_for("first check", |s| {
            backend_state(s, "dead").checks_total == 1
        })
        .await;
    let mut kept = Vec::new();
    for i in 0..5 {
        let sw = switch(proxy.addr("ovsdb"), switch_ip(i), None)
            .await
            .unwrap();
        assert_eq!(
            sw.agent(),
            "live",
            "a switch is never handed to a dead agent"
        );
        kept.push(sw);
    }
    let s = proxy.show().await;
    let d = backend_state(&s, "dead");
    // First check failed (1/3); each failed live connect counts as a failed check (2/3, 3/3):
    // down after two switches tried it, without waiting for the 1h interval. (The re-check
    // each one asks for waits for fast_interval, 1h here, after the last check.)
    assert_eq!(d.state, "DOWN");
    assert_eq!(d.connect_errors, 2, "{d:?}");
    assert_eq!(d.checks_failed, 1, "{d:?}");
    assert_eq!(d.current, 0);
    assert_eq!(s.terminations.get("SC"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_dropped_before_the_agents_first_byte_are_redispatched() {
    // A dying agent: its kernel still completes handshakes, then the session is reset or
    // closed before the agent says anything (what SIGKILL does while the kernel releases the
    // process's sockets). Switches speak TLS end to end, so their ClientHello must be replayed.
    let pki = Pki::new();
    let dying = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dying_addr = dying.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = dying.accept().await {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n.is_multiple_of(2) {
                let _ = tor_proxy::forward::sockopt::set_linger_zero(&s);
            } else {
                // Wait for the ClientHello, so the close comes after the proxy forwarded it.
                let _ = s.readable().await;
            }
            drop(s);
        }
    });
    let (live, _) = serve_agent(tls_agent(&pki, "live")).await;
    let cfg = format!(
        "{}{PASSTHROUGH}[health]\ncheck = \"tcp\"\ninterval = \"1h\"\nfast_interval = \"1h\"\ninit_state = \"fully-up\"\nfall = 10\n[affinity]\nenabled = false\n{}{}",
        header(&pki, "p"),
        backend("dying", dying_addr, None),
        backend("live", live, None)
    );
    let proxy = ProxyProc::start(pki.dir.path(), "p", &cfg);
    proxy
        .wait_for("first check", |s| {
            backend_state(s, "dying").checks_total == 1
        })
        .await;
    let tls = pki.switch_tls("sw", false);
    let mut kept = Vec::new();
    for i in 0..4 {
        let mut sw = switch(proxy.addr("ovsdb"), switch_ip(i), Some(tls.clone()))
            .await
            .unwrap_or_else(|e| panic!("switch {i} must be served at its first try: {e}"));
        assert_eq!(sw.agent(), "live");
        assert_eq!(sw.echo("hello").await.unwrap(), "hello");
        kept.push(sw);
    }
    let s = proxy.show().await;
    let d = backend_state(&s, "dying");
    // Least-connections sends every switch after the first to the empty `dying` first.
    let tried = accepted.load(std::sync::atomic::Ordering::SeqCst) - 1;
    assert!(tried >= 3, "dying agent was tried {tried} times");
    assert_eq!(d.connect_errors as usize, tried, "{d:?}");
    assert_eq!(d.current, 0);
    assert_eq!(backend_state(&s, "live").current, 4);
    assert_eq!(s.terminations.get("SC"), None);
    let logs = proxy
        .wait_for_logs("the redispatch warnings", |l| {
            l.iter()
                .filter(|v| field(v, "message") == Some("backend connect failed; redispatching"))
                .count()
                == tried
        })
        .await;
    assert!(logs
        .iter()
        .any(|v| field(v, "error").is_some_and(|e| e.contains("before its first byte"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_time_out() {
    let pki = Pki::new();
    let (a1, _) = serve_agent(plain_agent("a1", None)).await;
    let cfg = format!(
        "{}{PASSTHROUGH}[health]\ncheck = \"tcp\"\n[timeouts]\nidle = \"300ms\"\n{}",
        header(&pki, "p"),
        backend("a1", a1, None)
    );
    let proxy = ProxyProc::start(pki.dir.path(), "p", &cfg);
    let mut sw = switch(proxy.addr("ovsdb"), switch_ip(1), None)
        .await
        .unwrap();
    assert_eq!(sw.echo("a").await.unwrap(), "a");
    assert!(sw.wait_closed(PATIENCE).await.is_some());
    let s = proxy
        .wait_for("idle logged", |s| s.terminations.get("cD") == Some(&1))
        .await;
    assert!(s.sessions.is_empty());
}

fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tor-proxy"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_check_config_status_check_metrics_and_sigterm() {
    let pki = Pki::new();
    let bad = pki.path("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "{}{PASSTHROUGH}\n[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\nweigth = 2\n",
            header(&pki, "x")
        ),
    )
    .unwrap();
    let (ok, _, err) = run_cli(&["check-config", "--config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("weigth") && err.contains("bad.toml"), "{err}");
    let open = pki.path("open.toml");
    std::fs::write(
        &open,
        format!(
            "{}{PASSTHROUGH}\n[health]\ncheck = \"tcp\"\n{}",
            header(&pki, "x").replace("127.0.0.1:0", "0.0.0.0:9999"),
            backend("a", "127.0.0.1:1".parse().unwrap(), None)
        ),
    )
    .unwrap();
    let (ok, _, err) = run_cli(&["check-config", "--config", open.to_str().unwrap()]);
    assert!(!ok && err.contains("not a loopback"), "{err}");

    let dead = SocketAddr::from(([127, 0, 0, 1], DEAD_PORT));
    let cfg = format!(
        "{}{PASSTHROUGH}[health]\ncheck = \"tcp\"\ninterval = \"100ms\"\n{}",
        header(&pki, "p"),
        backend("a1", dead, None)
    );
    let (ok, out, err) = run_cli(&[
        "check-config",
        "--config",
        pki.path("p.toml").to_str().unwrap(),
    ]);
    assert!(!ok, "missing file: {out}{err}");
    let proxy = ProxyProc::start(pki.dir.path(), "p", &cfg);
    let (ok, out, _) = run_cli(&[
        "check-config",
        "--config",
        proxy.config_path.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let admin = proxy.admin.to_string();
    proxy
        .wait_for("a1 down", |s| backend_state(s, "a1").state == "DOWN")
        .await;
    let (ok, out, _) = run_cli(&["check", "--admin", &admin]);
    assert!(
        !ok,
        "no healthy backend must fail keepalived's check: {out}"
    );
    assert!(out.contains("no healthy backend"));

    let (a2, _) = serve_agent(plain_agent("a2", None)).await;
    std::fs::write(
        &proxy.config_path,
        format!("{cfg}{}", backend("a2", a2, None)),
    )
    .unwrap();
    let (ok, out, err) = run_cli(&["admin", "--admin", &admin, "reload"]);
    assert!(ok, "{out}{err}");
    proxy
        .wait_for("a2 up", |s| backend_state(s, "a2").usable)
        .await;
    let (ok, out, _) = run_cli(&[
        "check",
        "--config",
        proxy.config_path.to_str().unwrap(),
        "--admin",
        &admin,
    ]);
    assert!(ok, "{out}");
    let _sw = switch(proxy.addr("ovsdb"), switch_ip(1), None)
        .await
        .unwrap();
    let (ok, out, _) = run_cli(&["status", "--admin", &admin]);
    assert!(ok);
    for needle in ["BACKENDS", "a1", "a2", "DOWN", "SESSIONS", "127.1.0.2"] {
        assert!(out.contains(needle), "status lacks {needle}:\n{out}");
    }
    let (ok, out, _) = run_cli(&["admin", "--admin", &admin, "drain", "a2"]);
    assert!(ok && out.contains("DRAIN"), "{out}");

    let mut http = tokio::net::TcpStream::connect(proxy.admin).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    http.read_to_string(&mut text).await.unwrap();
    assert!(
        text.contains("tor_proxy_backend_up{backend=\"a1\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("tor_proxy_backend_current_sessions{backend=\"a2\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tor_proxy_backend_admin_state{backend=\"a2\",state=\"drain\"} 1"),
        "{text}"
    );

    let status = proxy.stop();
    assert!(status.success(), "SIGTERM must exit cleanly: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_guards_a_non_loopback_listener() {
    let pki = Pki::new();
    let (a1, _) = serve_agent(plain_agent("a1", None)).await;
    let token_file = pki.path("token");
    std::fs::write(&token_file, "s3cret-token-0123456789\n").unwrap();
    let cfg = format!(
        "{}{PASSTHROUGH}[health]\ncheck = \"tcp\"\n{}",
        header(&pki, "p").replace(
            "listen = \"127.0.0.1:0\"",
            &format!(
                "listen = \"0.0.0.0:0\"\ntoken_file = \"{}\"",
                token_file.display()
            )
        ),
        backend("a1", a1, None)
    );
    let proxy = ProxyProc::start(pki.dir.path(), "p", &cfg);
    let admin: SocketAddr = format!("127.0.0.1:{}", proxy.admin.port()).parse().unwrap();
    let anonymous = tor_proxy::admin::client(admin, None).unwrap();
    assert!(anonymous.show().await.is_err(), "no token, no answer");
    let wrong = tor_proxy::admin::client(admin, Some("wrong-token-0123456789")).unwrap();
    assert!(wrong.show().await.is_err());
    let right = tor_proxy::admin::client(admin, Some("s3cret-token-0123456789")).unwrap();
    assert_eq!(right.show().await.unwrap().backends.len(), 1);
    let logs = serde_json::to_string(&proxy.logs()).unwrap();
    assert!(!logs.contains("s3cret"), "the token must never be logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_backend_connection_limit_is_honoured() {
    let pki = Pki::new();
    let (a1, _) = serve_agent(plain_agent("a1", None)).await;
    let (a2, _) = serve_agent(plain_agent("a2", None)).await;
    let cfg = format!(
        "{}{PASSTHROUGH}[health]\ncheck = \"tcp\"\n{}max_conn = 1\n{}",
        header(&pki, "p"),
        backend("a1", a1, None),
        backend("a2", a2, None)
    );
    let proxy = ProxyProc::start(pki.dir.path(), "p", &cfg);
    let at = proxy.addr("ovsdb");
    let s1 = switch(at, switch_ip(1), None).await.unwrap();
    let s2 = switch(at, switch_ip(2), None).await.unwrap();
    assert_eq!((s1.agent(), s2.agent()), ("a1", "a2"));
    // Equal loads: round-robin would pick a1 next, but a1 is at its limit.
    let s3 = switch(at, switch_ip(3), None).await.unwrap();
    assert_eq!(s3.agent(), "a2");
    let s = proxy.show().await;
    assert_eq!(backend_state(&s, "a1").current, 1);
    assert!(
        !backend_state(&s, "a1").usable,
        "full: takes no new session"
    );
    drop(s1);
    proxy
        .wait_for("a1 freed", |s| backend_state(s, "a1").current == 0)
        .await;
    assert_eq!(switch(at, switch_ip(4), None).await.unwrap().agent(), "a1");
}
