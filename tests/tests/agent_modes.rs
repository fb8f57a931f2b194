//! The agent's other modes: dialing a switch (active `tcp:` southbound)
//! and two control nodes at once (routes published to both, config taken
//! from one, and taken from the other when the first goes).

use e2e::*;

const VN_UUID: &str = BLUE_VN_UUID;
const VRF: &str = BLUE_VRF;

fn fabric() -> String {
    FabricToml::blue(&["agent-a"])
        .switch("sw1", "192.0.2.1", "10.0.0.11", "p1", 100)
        .toml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_southbound_and_two_control_nodes() {
    init_logs();
    let cn1 = control_node(&fabric()).await;
    let cn2 = control_node(&fabric()).await;
    // The switch listens; the agent dials it.
    let sw = ovsdb::testing::RealSwitch::start(true, None).unwrap();
    sw.vtep_ctl(&["add-ps", "sw1"]).unwrap();
    sw.vtep_ctl(&["add-port", "sw1", "p1"]).unwrap();
    sw.vtep_ctl(&["set", "Physical_Switch", "sw1", "tunnel_ips=10.0.0.11"])
        .unwrap();
    let target = sw.net_target.clone().unwrap();
    let text = format!(
        r#"
        [agent]
        name = "agent-a"
        tsn_ip = "198.51.100.1"
        [southbound]
        connect = ["{target}"]
        keepalive_interval_ms = 2000
        [northbound]
        control_nodes = ["{}", "{}"]
        hold_time_s = 9
        end_of_config_quiet_ms = 500
        [admin]
        listen = "127.0.0.1:0"
        readiness_listen = "127.0.0.1:0"
        "#,
        cn1.local_addr(),
        cn2.local_addr()
    );
    let a = agent_from_toml(&text).await;
    let ls = format!("Contrail-{VN_UUID}");
    wait_for("the agent programs the switch it dialed", || {
        remote_macs(&sw, &ls).contains("unknown-dst -> vxlan_over_ipv4/198.51.100.1")
    })
    .await;
    sw.vtep_ctl(&["add-ucast-local", &ls, "02:00:00:00:01:01", "10.0.0.11"])
        .unwrap();
    for (i, cn) in [&cn1, &cn2].into_iter().enumerate() {
        wait_for(&format!("the route at control node {i}"), || {
            cn.best_routes(Some(VRF))
                .iter()
                .any(|r| r.key.mac == "02:00:00:00:01:01" && r.local_preference == 100)
        })
        .await;
    }
    // Ready once the first config push has gone quiet (end_of_config_quiet_ms).
    let deadline = tokio::time::Instant::now() + T;
    let st = loop {
        let st = a.status().await;
        if st.readiness == "ready" {
            break st;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {st:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(st.control_nodes.iter().all(|c| c.up));
    assert_eq!(st.control_nodes.iter().filter(|c| c.for_config).count(), 1);
    // The config control node goes away: config moves to the other one,
    // the agent stays ready and keeps the switch.
    let cfg_cn = st.control_nodes.iter().position(|c| c.for_config).unwrap();
    if cfg_cn == 0 {
        cn1.shutdown();
    } else {
        cn2.shutdown();
    }
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let st = a.status().await;
        if !st.control_nodes[cfg_cn].up && st.control_nodes[1 - cfg_cn].for_config {
            assert_eq!(st.readiness, "ready");
            assert!(st.switches.iter().any(|s| s.name == "sw1" && s.active));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "config never moved: {st:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Changes still reach the surviving control node.
    sw.vtep_ctl(&["add-ucast-local", &ls, "02:00:00:00:01:02", "10.0.0.11"])
        .unwrap();
    let survivor = if cfg_cn == 0 { &cn2 } else { &cn1 };
    wait_for("a new route at the surviving control node", || {
        survivor
            .best_routes(Some(VRF))
            .iter()
            .any(|r| r.key.mac == "02:00:00:00:01:02")
    })
    .await;
    a.stop().await;
    survivor.shutdown();
}
