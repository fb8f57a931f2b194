//! The simulated switch through the real tools: `vtep-ctl` and
//! `ovsdb-client` (Debian openvswitch-vtep 3.1) against its `ptcp:`
//! listener. Where the real server defines the behaviour, the same commands
//! run against a real `ovsdb-server` seeded as ovs-vtep would leave it, and
//! the outputs must be equal.

mod switch_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use ovsdb::testing::RealSwitch;
use switch_common::{lines, ptcp0, tcp_of, tool, vtep_ctl, wait_for, DEADLINE};
use testbed::switch::{Mac, SimSwitch, SimSwitchHandle, SwitchSpec};

const TUNNEL_IP: &str = "10.0.0.1";

async fn sim(name: &str, macs: u32, base: &str) -> SimSwitchHandle {
    let spec = SwitchSpec::new(name)
        .ports(["p0", "p1"])
        .tunnel_ip(TUNNEL_IP.parse().unwrap())
        .management_ip("192.0.2.10".parse().unwrap())
        .listen(ptcp0())
        .macs(macs)
        .mac_base(base.parse().unwrap());
    let mut spec = spec;
    spec.description = "simulated for tests".into();
    SimSwitch::start(spec).await.unwrap()
}

/// A real ovsdb-server switch database as ovs-vtep sets it up for `name`.
async fn real_switch(name: &str) -> RealSwitch {
    let real = RealSwitch::start(false, None).expect("real ovsdb-server");
    let db = real.unix_target.clone();
    for cmd in [
        vec!["add-ps", name],
        vec![
            "set",
            "Physical_Switch",
            name,
            "tunnel_ips=10.0.0.1",
            "management_ips=192.0.2.10",
            "description=\"simulated for tests\"",
        ],
        vec!["add-port", name, "p0"],
        vec!["add-port", name, "p1"],
    ] {
        vtep_ctl(&db, &cmd).await.unwrap();
    }
    real
}

/// Both databases answer these read commands identically.
async fn same_output(sim_db: &str, real_db: &str, cmd: &[&str]) -> String {
    let a = vtep_ctl(sim_db, cmd).await.unwrap();
    let b = vtep_ctl(real_db, cmd).await.unwrap();
    assert_eq!(a, b, "vtep-ctl {cmd:?}: simulated (left) vs real (right)");
    a
}

/// `vtep-ctl show` without its first line (the Global UUID), with the
/// `Physical_Port` blocks sorted.
fn show_tree(show: &str) -> Vec<String> {
    let mut head = Vec::new();
    let mut ports: Vec<Vec<&str>> = Vec::new();
    for line in show.lines().skip(1) {
        if line.trim_start().starts_with("Physical_Port ") {
            ports.push(vec![line]);
        } else if let Some(block) = ports.last_mut() {
            block.push(line);
        } else {
            head.push(line.to_string());
        }
    }
    ports.sort();
    head.extend(ports.into_iter().flatten().map(str::to_string));
    head
}

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeded_switch_reads_like_a_real_one() {
    let sw = sim("sw1", 0, "02:00:00:00:00:10").await;
    let real = real_switch("sw1").await;
    let (s, r) = (tcp_of(&sw), real.unix_target.clone());

    assert_eq!(same_output(&s, &r, &["list-ps"]).await, "sw1\n");
    assert_eq!(
        same_output(&s, &r, &["list-ports", "sw1"]).await,
        "p0\np1\n"
    );
    same_output(
        &s,
        &r,
        &[
            "--columns=name,description,management_ips,tunnel_ips,switch_fault_status,other_config,tunnels",
            "list",
            "Physical_Switch",
        ],
    )
    .await;
    same_output(
        &s,
        &r,
        &["--columns=managers,other_config", "list", "Global"],
    )
    .await;
    let ports = same_output(
        &s,
        &r,
        &[
            "--columns=name,description,vlan_bindings,port_fault_status,other_config",
            "find",
            "Physical_Port",
            "name=p1",
        ],
    )
    .await;
    assert!(ports.starts_with("name                : p1\n"), "{ports}");
    // `show` starts with the Global row's UUID, then the same tree (ports
    // come in UUID order, so the port blocks are compared as a set).
    let a = vtep_ctl(&s, &["show"]).await.unwrap();
    let b = vtep_ctl(&r, &["show"]).await.unwrap();
    assert_eq!(show_tree(&a), show_tree(&b));
    assert!(a.contains("Physical_Switch sw1") && a.contains("Physical_Port p1"));

    // ovsdb-client sees exactly one Global row referring to the switch.
    let dump = tool(
        "ovsdb-client",
        &["dump", &s, "hardware_vtep", "Global", "switches"],
    )
    .await
    .unwrap();
    let ps = sw.physical_switch().to_string();
    assert!(dump.contains(&ps), "{dump}");
    assert_eq!(dump.lines().filter(|l| l.contains(&ps)).count(), 1);
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learnt_macs_are_the_rows_ovs_vtep_writes() {
    let base = "02:00:00:00:00:10";
    let sw = sim("sw1", 5, base).await;
    let real = real_switch("sw1").await;
    let (s, r) = (tcp_of(&sw), real.unix_target.clone());
    let manager = [
        vec!["add-ls", "ls0"],
        vec!["set", "Logical_Switch", "ls0", "tunnel_key=5000"],
        vec!["bind-ls", "sw1", "p0", "100", "ls0"],
    ];
    for cmd in &manager {
        vtep_ctl(&s, cmd).await.unwrap();
        vtep_ctl(&r, cmd).await.unwrap();
    }
    // The population: base, base+1, … (the test's own arithmetic).
    let expected: Vec<String> = (0..5u64)
        .map(|i| Mac::from_u64(mac(base).as_u64() + i).unwrap().to_string())
        .collect();
    // On the real switch, what ovs-vtep does for the same learnt MACs.
    for m in &expected {
        vtep_ctl(&r, &["add-ucast-local", "ls0", m, TUNNEL_IP])
            .await
            .unwrap();
    }
    vtep_ctl(&r, &["add-mcast-local", "ls0", "unknown-dst", TUNNEL_IP])
        .await
        .unwrap();

    let want = vtep_ctl(&r, &["list-local-macs", "ls0"]).await.unwrap();
    assert_eq!(lines(&want).len(), 2 + 5 + 1, "{want}");
    let got = wait_for("the switch to learn its population", || {
        let s = s.clone();
        let want = want.clone();
        async move {
            let got = vtep_ctl(&s, &["list-local-macs", "ls0"]).await.ok()?;
            (got == want).then_some(got)
        }
    })
    .await;
    for m in &expected {
        assert!(
            got.contains(&format!("{m} -> vxlan_over_ipv4/{TUNNEL_IP}")),
            "{got}"
        );
    }
    // One locator, reused by every row.
    same_output(
        &s,
        &r,
        &[
            "--columns=encapsulation_type,dst_ip,tunnel_key",
            "list",
            "Physical_Locator",
        ],
    )
    .await;
    // One locator set (for unknown-dst) on both, holding that locator.
    for db in [&s, &r] {
        let sets = vtep_ctl(db, &["--columns=locators", "list", "Physical_Locator_Set"])
            .await
            .unwrap();
        assert_eq!(lines(&sets).len(), 1, "{sets}");
    }
    let dump = |db: String| async move {
        let out = tool(
            "ovsdb-client",
            &[
                "dump",
                &db,
                "hardware_vtep",
                "Ucast_Macs_Local",
                "MAC",
                "ipaddr",
            ],
        )
        .await
        .unwrap();
        let mut l = lines(&out);
        l.sort();
        l
    };
    assert_eq!(dump(s.clone()).await, dump(r.clone()).await);
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbinding_clears_local_macs_so_the_manager_can_delete_the_logical_switch() {
    let sw = sim("sw2", 4, "02:00:00:00:01:00").await;
    let s = tcp_of(&sw);
    for cmd in [
        vec!["add-ls", "ls0"],
        vec!["bind-ls", "sw2", "p0", "100", "ls0"],
        vec!["bind-ls", "sw2", "p1", "200", "ls0"],
    ] {
        vtep_ctl(&s, &cmd).await.unwrap();
    }
    sw.sync().await.unwrap();
    assert_eq!(
        lines(&vtep_ctl(&s, &["list-local-macs", "ls0"]).await.unwrap()).len(),
        2 + 4 + 1
    );
    // A row someone else wrote (as vtep-ctl add-ucast-local does).
    vtep_ctl(
        &s,
        &["add-ucast-local", "ls0", "02:ee:00:00:00:01", TUNNEL_IP],
    )
    .await
    .unwrap();
    // While any local row refers to it, the logical switch cannot go.
    assert!(vtep_ctl(&s, &["del-ls", "ls0"]).await.is_err());

    // One binding left: the rows stay (the population moves to p1/200).
    vtep_ctl(&s, &["unbind-ls", "sw2", "p0", "100"])
        .await
        .unwrap();
    sw.sync().await.unwrap();
    let macs = sw.macs().await.unwrap();
    assert_eq!(macs.len(), 4);
    assert!(macs
        .iter()
        .all(|m| m.port.as_deref() == Some("p1") && m.vlan == Some(200) && m.row.is_some()));
    assert_eq!(
        lines(&vtep_ctl(&s, &["list-local-macs", "ls0"]).await.unwrap()).len(),
        2 + 5 + 1
    );

    // The last binding goes: every local row of ls0 goes, the foreign one too.
    vtep_ctl(&s, &["unbind-ls", "sw2", "p1", "200"])
        .await
        .unwrap();
    wait_for("local rows of ls0 to be cleared", || {
        let s = s.clone();
        async move {
            let out = vtep_ctl(&s, &["list-local-macs", "ls0"]).await.ok()?;
            (lines(&out) == ["ucast-mac-local", "mcast-mac-local"]).then_some(())
        }
    })
    .await;
    vtep_ctl(&s, &["del-ls", "ls0"]).await.unwrap();
    assert_eq!(vtep_ctl(&s, &["list-ls"]).await.unwrap(), "");
    // Garbage collection took the locator with the last row referring to it.
    assert_eq!(
        vtep_ctl(&s, &["list", "Physical_Locator"]).await.unwrap(),
        ""
    );
    // The hosts are still there, waiting for a binding.
    assert_eq!(sw.macs().await.unwrap().len(), 4);
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_mac_from_the_manager_moves_the_local_one_away_and_back() {
    let base = "02:00:00:00:02:00";
    let sw = sim("sw3", 3, base).await;
    let s = tcp_of(&sw);
    for cmd in [
        vec!["add-ls", "ls0"],
        vec!["add-ls", "ls1"],
        vec!["bind-ls", "sw3", "p0", "100", "ls0"],
        vec!["bind-ls", "sw3", "p1", "200", "ls1"],
    ] {
        vtep_ctl(&s, &cmd).await.unwrap();
    }
    sw.sync().await.unwrap();
    // Population host i sits on slot i mod 2: 0 and 2 on p0/100 (ls0), 1 on p1/200 (ls1).
    let m = |i: u64| Mac::from_u64(mac(base).as_u64() + i).unwrap();
    let local = |ls: &'static str| {
        let s = s.clone();
        async move { vtep_ctl(&s, &["list-local-macs", ls]).await.unwrap() }
    };
    assert!(local("ls0").await.contains(&m(0).to_string()));
    assert!(local("ls0").await.contains(&m(2).to_string()));
    assert!(local("ls1").await.contains(&m(1).to_string()));

    // A remote row for host 0 in the other logical switch changes nothing.
    vtep_ctl(
        &s,
        &["add-ucast-remote", "ls1", &m(0).to_string(), "10.9.9.9"],
    )
    .await
    .unwrap();
    sw.sync().await.unwrap();
    assert!(local("ls0").await.contains(&m(0).to_string()));

    // In its own logical switch, the manager says host 0 is behind 10.9.9.8.
    vtep_ctl(
        &s,
        &["add-ucast-remote", "ls0", &m(0).to_string(), "10.9.9.8"],
    )
    .await
    .unwrap();
    let gone = m(0).to_string();
    wait_for("the local row to be withdrawn", || {
        let gone = gone.clone();
        let l = local("ls0");
        async move { (!l.await.contains(&gone)).then_some(()) }
    })
    .await;
    let remote = vtep_ctl(&s, &["list-remote-macs", "ls0"]).await.unwrap();
    assert!(remote.contains(&format!("{} -> vxlan_over_ipv4/10.9.9.8", m(0))));
    assert!(local("ls0").await.contains(&m(2).to_string()));
    assert_eq!(sw.stats().await.unwrap().moved_away, 1);

    // Seen locally again: moved back, the local row returns.
    let back = sw.learn(m(0), "p0", 100).await.unwrap();
    assert!(back.row.is_some());
    assert!(local("ls0").await.contains(&m(0).to_string()));
    sw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ovsdb_client_monitor_and_transact_see_learning() {
    let base = "02:00:00:00:03:00";
    let sw = sim("sw4", 3, base).await;
    let s = tcp_of(&sw);
    let mut child = Command::new("ovsdb-client")
        .args(["monitor", &s, "hardware_vtep", "ALL"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ovsdb-client (install Debian's openvswitch-vtep)");
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The initial contents come first: the monitor is in place.
    let deadline = Instant::now() + DEADLINE;
    let mut seen: Vec<String> = Vec::new();
    while !seen.iter().any(|l| l.contains("sw4")) {
        let line = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("monitor header")
            .expect("monitor running");
        seen.push(line);
    }
    sw.bind_for_test("p0", 7, "ls-mon", 77).await.unwrap();
    let want: Vec<String> = (0..3u64)
        .map(|i| Mac::from_u64(mac(base).as_u64() + i).unwrap().to_string())
        .collect();
    while !want
        .iter()
        .all(|m| seen.iter().any(|l| l.contains(m) && l.contains("insert")))
    {
        let line = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("inserts for the learnt MACs")
            .expect("monitor running");
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();

    let out = tool(
        "ovsdb-client",
        &[
            "transact",
            &s,
            r#"["hardware_vtep",{"op":"select","table":"Ucast_Macs_Local","where":[],"columns":["MAC"]}]"#,
        ],
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut got: Vec<String> = v[0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["MAC"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, want);
    sw.shutdown().await;
}
