//! Two agents, the testbed control node and real ovsdb-server switches
//! dialing the agents over TLS (`vtep-ctl set-manager ssl:…`): the switch
//! databases converge to the desired state, local MACs become routes at the
//! control node, remote routes reach the other switch, `unknown-dst` points
//! at the active agent's service node, and a switch moved to the other agent
//! is taken over with its routes kept alive by the HA-stale shadows.

use e2e::*;

const TSN_A: &str = "198.51.100.1";
const TSN_B: &str = "198.51.100.2";
const VN_UUID: &str = BLUE_VN_UUID;

fn fabric() -> String {
    FabricToml::blue(&["agent-a", "agent-b"])
        .switch("sw1", "192.0.2.1", "10.0.0.11", "p1", 100)
        .switch("sw2", "192.0.2.2", "10.0.0.12", "p1", 200)
        .toml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_two_real_switches_over_tls() {
    init_logs();
    let pki = Pki::new();
    let cn = control_node(&fabric()).await;
    let cn_addr = cn.local_addr();
    let sb_a = format!(
        "[southbound]\nlisten = \"pssl:0:127.0.0.1\"\n{}",
        pki.agent_tls("agent-a")
    );
    let sb_b = format!(
        "[southbound]\nlisten = \"pssl:0:127.0.0.1\"\n{}",
        pki.agent_tls("agent-b")
    );
    let a = agent("agent-a", TSN_A, cn_addr, &sb_a).await;
    let b = agent("agent-b", TSN_B, cn_addr, &sb_b).await;
    wait_for("both agents ready", || cn.agents().len() == 2).await;

    let sw1 = real_switch(
        "sw1",
        "10.0.0.11",
        &["p1", "p2"],
        Some(&pki.switch_tls("sw1")),
    );
    let sw2 = real_switch("sw2", "10.0.0.12", &["p1"], Some(&pki.switch_tls("sw2")));
    sw1.vtep_ctl(&["set-manager", &format!("ssl:127.0.0.1:{}", a.port())])
        .unwrap();
    sw2.vtep_ctl(&["set-manager", &format!("ssl:127.0.0.1:{}", b.port())])
        .unwrap();
    let ls = format!("Contrail-{VN_UUID}");

    // Each switch converges: logical switch, binding, unknown-dst to its agent's TSN.
    for (sw, name, vlan, tsn) in [(&sw1, "sw1", "100", TSN_A), (&sw2, "sw2", "200", TSN_B)] {
        wait_for(&format!("{name}: logical switch"), || {
            sw.vtep_ctl(&["list-ls"]).unwrap_or_default().contains(&ls)
        })
        .await;
        wait_for(&format!("{name}: binding"), || {
            sw.vtep_ctl(&["list-bindings", name, "p1"])
                .unwrap_or_default()
                .contains(&format!("{vlan:0>4} {ls}"))
        })
        .await;
        wait_for(&format!("{name}: unknown-dst -> {tsn}"), || {
            remote_macs(sw, &ls).contains(&format!("unknown-dst -> vxlan_over_ipv4/{tsn}"))
        })
        .await;
    }

    // Local MACs become routes; each switch gets the other's as remote.
    sw1.vtep_ctl(&["add-ucast-local", &ls, "02:00:00:00:01:01", "10.0.0.11"])
        .unwrap();
    sw2.vtep_ctl(&["add-ucast-local", &ls, "02:00:00:00:02:01", "10.0.0.12"])
        .unwrap();
    let vrf = "default-domain:p:blue:blue";
    wait_for("sw1's MAC at the control node from agent-a at 100", || {
        cn.best_routes(Some(vrf)).iter().any(|r| {
            r.key.mac == "02:00:00:00:01:01"
                && r.local_preference == 100
                && r.agents == vec!["agent-a".to_string()]
        })
    })
    .await;
    wait_for("sw2 programmed with sw1's MAC", || {
        remote_macs(&sw2, &ls).contains("02:00:00:00:01:01 -> vxlan_over_ipv4/10.0.0.11")
    })
    .await;
    wait_for("sw1 programmed with sw2's MAC", || {
        remote_macs(&sw1, &ls).contains("02:00:00:00:02:01 -> vxlan_over_ipv4/10.0.0.12")
    })
    .await;
    // The standby (agent-b) shadows sw1's MAC at HA-stale preference.
    wait_for("agent-b's HA-stale shadow of sw1's MAC", || {
        cn.paths(Some(vrf)).iter().any(|p| {
            p.key.mac == "02:00:00:00:01:01"
                && p.agent == "agent-b"
                && p.local_preference == 1
                && p.sequence == 0
        })
    })
    .await;
    // Mastership is visible and unique.
    let (sa, sb) = (a.status().await, b.status().await);
    let active = |s: &tor_agent::admin::status::AgentStatus, n: &str| {
        s.switches.iter().any(|w| w.name == n && w.active)
    };
    assert!(active(&sa, "sw1") && !active(&sb, "sw1"));
    assert!(active(&sb, "sw2") && !active(&sa, "sw2"));

    // sw1 moves to agent-b (as after a proxy decision): taken over, its
    // route stays at the control node throughout.
    sw1.vtep_ctl(&["set-manager", &format!("ssl:127.0.0.1:{}", b.port())])
        .unwrap();
    let mut lost = false;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let best = cn.best_routes(Some(vrf));
        let r = best.iter().find(|r| r.key.mac == "02:00:00:00:01:01");
        if r.is_none() {
            lost = true;
        }
        if r.is_some_and(|r| r.local_preference == 100 && r.agents == vec!["agent-b".to_string()])
            && remote_macs(&sw1, &ls).contains(&format!("unknown-dst -> vxlan_over_ipv4/{TSN_B}"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sw1 never taken over by agent-b: {best:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !lost,
        "the MAC route vanished from the control node during the switchover"
    );
    let sb = b.status().await;
    assert!(active(&sb, "sw1"));
    wait_for("agent-a no longer active for sw1", || true).await;
    let sa = a.status().await;
    assert!(!active(&sa, "sw1"));
    // sw2 still has sw1's MAC, now shown by the new active agent.
    assert!(remote_macs(&sw2, &ls).contains("02:00:00:00:01:01 -> vxlan_over_ipv4/10.0.0.11"));

    a.stop().await;
    b.stop().await;
    cn.shutdown();
}
