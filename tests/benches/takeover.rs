//! Takeover benchmark (issue 4): time from a switch's session arriving at
//! the agent to "switch converged and local MACs exported", for 1k, 10k and
//! 100k MACs on a real ovsdb-server switch, beside the floor: the time the
//! real server itself needs to dump and load the same rows with a plain
//! pipelined client and no agent logic.
//!
//! The switch starts with N local MACs (as learnt) and its logical switch;
//! the control node holds N remote MAC routes (published by another agent,
//! spread over 64 VTEPs). Taking over means: dump everything, program N
//! remote MACs, fix unknown-dst, export N local MACs.
//!
//! Run: `cargo bench -p e2e --bench takeover` (needs ovsdb-server).

use std::time::{Duration, Instant};

use e2e::{agent, control_node, FabricToml, BLUE_VN_UUID, BLUE_VRF};
use ovsdb::client::{Client, MonitorSpec, SessionOptions, TableMonitor, Transaction};
use ovsdb::testing::RealSwitch;
use ovsdb::transport::connect;
use ovsdb::{Atom, Datum};
use tf_xmpp::enet::EnetEntry;
use tf_xmpp::io::{client_open, ClientOptions};
use tf_xmpp::route::{encode_route_publish, encode_vrf_subscribe};
use tf_xmpp::session::{spawn_session, SessionConfig};
use tf_xmpp::RouteDecoding;

const VN_UUID: &str = BLUE_VN_UUID;
const VRF: &str = BLUE_VRF;
const VTEP: &str = "10.0.0.11";
const BATCH: usize = 500;
const IN_FLIGHT: usize = 8;

fn fabric() -> String {
    FabricToml::blue(&["bench-agent"])
        .other_router("injector")
        .switch("sw1", "192.0.2.1", VTEP, "p1", 100)
        .toml()
}

fn mac(prefix: u8, i: usize) -> String {
    format!(
        "02:{prefix:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        (i >> 24) & 0xff,
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

fn remote_vtep(i: usize) -> String {
    format!("10.9.0.{}", 1 + i % 64)
}

/// Runs `txns` pipelined, `IN_FLIGHT` at a time.
async fn pipelined(client: &Client, txns: Vec<Transaction>) {
    let mut set = tokio::task::JoinSet::new();
    for t in txns {
        while set.len() >= IN_FLIGHT {
            set.join_next().await;
        }
        let c = client.clone();
        set.spawn(async move {
            let out = c.transact(&t).await.unwrap();
            assert!(out.is_success(), "{out:?}");
        });
    }
    while set.join_next().await.is_some() {}
}

/// MAC rows `prefix:i` for every `i` in `range`, in `BATCH`-row transactions
/// (the same batching the agent is configured with).
fn mac_batches(
    table: &str,
    prefix: u8,
    range: std::ops::Range<usize>,
    ls: &Atom,
    locator: impl Fn(usize) -> Atom,
) -> Vec<Transaction> {
    range
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|chunk| {
            let mut t = Transaction::new("hardware_vtep");
            for &i in chunk {
                t.insert(
                    table,
                    vec![
                        ("MAC".into(), Datum::scalar(mac(prefix, i))),
                        ("logical_switch".into(), Datum::scalar(ls.clone())),
                        ("locator".into(), Datum::scalar(locator(i))),
                    ],
                );
            }
            t
        })
        .collect()
}

/// A switch with its logical switch and `n` local MACs, as learnt.
async fn prepared_switch(n: usize) -> RealSwitch {
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
    let ls = format!("Contrail-{VN_UUID}");
    sw.vtep_ctl(&["add-ls", &ls]).unwrap();
    sw.vtep_ctl(&["set", "Logical_Switch", &ls, "tunnel_key=5001"])
        .unwrap();
    sw.vtep_ctl(&["bind-ls", "sw1", "p1", "100", &ls]).unwrap();
    sw.vtep_ctl(&["add-ucast-local", &ls, &mac(0xaa, 0), VTEP])
        .unwrap();
    let (client, _ev) = Client::start(
        connect(&sw.unix_target.parse().unwrap(), None)
            .await
            .unwrap(),
        SessionOptions::default(),
    );
    client.get_schema("hardware_vtep").await.unwrap();
    let out = client
        .transact(&{
            let mut t = Transaction::new("hardware_vtep");
            t.select("Logical_Switch", vec![], Some(vec!["_uuid".into()]));
            t.select("Physical_Locator", vec![], Some(vec!["_uuid".into()]));
            t
        })
        .await
        .unwrap();
    let uuid = |op: usize| {
        let row = &out.rows(op).unwrap()[0];
        Atom::Uuid(row["_uuid"][1].as_str().unwrap().parse().unwrap())
    };
    let (ls_uuid, loc) = (uuid(0), uuid(1));
    let txns = mac_batches("Ucast_Macs_Local", 0xaa, 1..n, &ls_uuid, |_| loc.clone());
    pipelined(&client, txns).await;
    client.close();
    sw
}

/// The floor: dump the switch and load the same remote rows, no agent.
async fn floor(sw: &RealSwitch, n: usize) -> Duration {
    let (client, _ev) = Client::start(
        connect(&sw.unix_target.parse().unwrap(), None)
            .await
            .unwrap(),
        SessionOptions {
            keep_replica: false,
            ..SessionOptions::default()
        },
    );
    let t0 = Instant::now();
    client.get_schema("hardware_vtep").await.unwrap();
    let spec = [
        "Physical_Switch",
        "Physical_Port",
        "Logical_Switch",
        "Ucast_Macs_Local",
        "Ucast_Macs_Remote",
        "Mcast_Macs_Local",
        "Mcast_Macs_Remote",
        "Physical_Locator",
        "Physical_Locator_Set",
    ]
    .iter()
    .fold(MonitorSpec::new(), |s, t| s.table(*t, TableMonitor::all()));
    client.monitor_cond("hardware_vtep", &spec).await.unwrap();
    let dumped = t0.elapsed();
    let ls = {
        let mut t = Transaction::new("hardware_vtep");
        t.select("Logical_Switch", vec![], Some(vec!["_uuid".into()]));
        let out = client.transact(&t).await.unwrap();
        Atom::Uuid(
            out.rows(0).unwrap()[0]["_uuid"][1]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        )
    };
    // A locator must be created with a row that references it (an
    // unreferenced non-root row is garbage-collected at commit): the first
    // transaction makes the 64 locators with one MAC each, the rest
    // reference them, in pipelined batches, as the agent does.
    let vteps = 64.min(n);
    let mut t = Transaction::new("hardware_vtep");
    let mut handles = Vec::new();
    for v in 0..vteps {
        let (h, loc) = t.insert(
            "Physical_Locator",
            vec![
                ("dst_ip".into(), Datum::scalar(remote_vtep(v))),
                (
                    "encapsulation_type".into(),
                    Datum::scalar("vxlan_over_ipv4"),
                ),
            ],
        );
        handles.push(h);
        t.insert(
            "Ucast_Macs_Remote",
            vec![
                ("MAC".into(), Datum::scalar(mac(0xbb, v))),
                ("logical_switch".into(), Datum::scalar(ls.clone())),
                ("locator".into(), Datum::scalar(loc)),
            ],
        );
    }
    let out = client.transact(&t).await.unwrap();
    assert!(out.is_success(), "{out:?}");
    let locs: Vec<Atom> = handles
        .into_iter()
        .map(|h| Atom::Uuid(out.uuid(h).unwrap()))
        .collect();
    let txns = mac_batches("Ucast_Macs_Remote", 0xbb, vteps..n, &ls, |i| {
        locs[i % 64].clone()
    });
    pipelined(&client, txns).await;
    let total = t0.elapsed();
    // Undo, so the agent's run starts from the same state.
    let mut t = Transaction::new("hardware_vtep");
    t.delete("Ucast_Macs_Remote", vec![]);
    client.transact(&t).await.unwrap();
    client.close();
    eprintln!("  floor: dump {:?}, total {:?}", dumped, total);
    total
}

/// Publishes `n` remote MAC routes as another agent would.
async fn inject(cn: std::net::SocketAddr, n: usize) -> tf_xmpp::session::SessionHandle {
    let tcp = tokio::net::TcpStream::connect(cn).await.unwrap();
    let (stream, _) = client_open(tcp, &ClientOptions::new("injector"))
        .await
        .unwrap();
    // The injector stands for agents on other machines: it reads what the
    // control node reflects with the cheap route decoder, so that its CPU
    // does not count against the agent under test.
    let cfg = SessionConfig {
        route_decoding: RouteDecoding::CnMessages,
        ..SessionConfig::agent()
    };
    let (h, mut rx, _t) = spawn_session(stream, cfg);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    h.send_wait(encode_vrf_subscribe("injector", VRF, 5, 1).into_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    for i in 0..n {
        let e = EnetEntry::tor_mac(5001, &mac(0xbb, i), &remote_vtep(i), 1);
        buf.push_str(&encode_route_publish(
            "injector",
            VRF,
            &e,
            true,
            i as u64 + 2,
        ));
        if buf.len() > 256 * 1024 {
            h.send_wait(std::mem::take(&mut buf).into_bytes())
                .await
                .unwrap();
        }
    }
    h.send_wait(buf.into_bytes()).await.unwrap();
    h
}

async fn run(n: usize) -> (f64, f64, f64) {
    let sw = prepared_switch(n).await;
    let floor = floor(&sw, n).await;
    let cn = control_node(&fabric()).await;
    let _inj = inject(cn.local_addr(), n).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while cn.best_routes(Some(VRF)).len() < n {
        assert!(
            Instant::now() < deadline,
            "routes never reached the control node"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = agent(
        "bench-agent",
        "198.51.100.1",
        cn.local_addr(),
        "[southbound]\nlisten = \"ptcp:0:127.0.0.1\"\nmax_txn_in_flight = 8\nbatch_rows = 500",
    )
    .await;
    loop {
        let st = a.status().await;
        if st.routes_received >= n && st.readiness == "ready" {
            break;
        }
        assert!(Instant::now() < deadline, "agent never got the routes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    sw.vtep_ctl(&["set-manager", &format!("tcp:127.0.0.1:{}", a.port())])
        .unwrap();
    // Converged as the agent sees it, then as the control node sees it.
    let agent_ms = loop {
        let st = a.status().await;
        if let Some(ms) = st
            .switches
            .iter()
            .find(|s| s.name == "sw1")
            .and_then(|s| s.last_takeover_ms)
        {
            break ms as f64 / 1000.0;
        }
        assert!(Instant::now() < deadline, "takeover never converged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    loop {
        let exported = cn
            .paths(Some(VRF))
            .iter()
            .filter(|p| p.agent == "bench-agent" && p.local_preference == 100)
            .count();
        if exported > n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "exports never reached the control node ({exported})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let external = t0.elapsed().as_secs_f64();
    let remote = sw
        .vtep_ctl(&["list-remote-macs", &format!("Contrail-{VN_UUID}")])
        .unwrap();
    assert!(
        remote.lines().filter(|l| l.contains("02:bb:")).count() == n,
        "switch not fully programmed"
    );
    a.stop().await;
    cn.shutdown();
    (floor.as_secs_f64(), agent_ms, external)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    e2e::init_logs();
    let sizes: Vec<usize> = std::env::var("SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
    println!("# Takeover of a real ovsdb-server switch (N local MACs to export, N remote MACs to program)\n");
    println!("| MACs | floor: server dump + load (s) | agent: session arrival → converged (s) | ratio | external: set-manager → CN has all exports (s) |");
    println!("|---:|---:|---:|---:|---:|");
    for n in sizes {
        let (floor, agent, external) = run(n).await;
        println!(
            "| {n} | {floor:.3} | {agent:.3} | {:.2}x | {external:.3} |",
            agent / floor
        );
    }
}
