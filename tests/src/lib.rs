//! End-to-end test support: agents, control nodes and real `ovsdb-server`
//! switches wired together on loopback.

pub mod netns;

use std::net::SocketAddr;
use std::time::Duration;

use ovsdb::testing::{RealSwitch, RealTls, TestPki};
use testbed::control_node::{ControlNodeConfig, ControlNodeHandle, Fabric};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tor_agent::config::AgentConfig;
use tor_agent::runtime::AgentHandle;

pub const T: Duration = Duration::from_secs(60);

/// The network every e2e fabric has: "blue" in project "p", VNI 5001.
pub const BLUE_VN_UUID: &str = "6a3b1f00-0000-4000-8000-000000000001";
pub const BLUE_VRF: &str = "default-domain:p:blue:blue";

/// The fabric config (testbed control node TOML) the e2e tests and benches
/// share: the "blue" network, some agents, and switches that every agent
/// serves, each bound to blue on one port and VLAN.
#[derive(Debug, Clone, Default)]
pub struct FabricToml {
    agents: Vec<String>,
    /// Virtual routers that serve no switch (a stand-in for compute agents).
    others: Vec<String>,
    switches: Vec<String>,
}

impl FabricToml {
    pub fn blue(agents: &[&str]) -> FabricToml {
        FabricToml {
            agents: agents.iter().map(|a| a.to_string()).collect(),
            ..FabricToml::default()
        }
    }

    /// A virtual router that serves no switch.
    pub fn other_router(mut self, name: &str) -> Self {
        self.others.push(name.to_string());
        self
    }

    /// A switch named `name` (management IP `mgmt`, VTEP `vtep`) with blue
    /// on `port`, VLAN `vlan`.
    pub fn switch(mut self, name: &str, mgmt: &str, vtep: &str, port: &str, vlan: u16) -> Self {
        let agents: Vec<String> = self.agents.iter().map(|a| format!("{a:?}")).collect();
        self.switches.push(format!(
            r#"
            [[physical_router]]
            name = "{name}"
            management_ip = "{mgmt}"
            dataplane_ip = "{vtep}"
            tor_agents = [{agents}]
            interfaces = ["{port}"]
            [[binding]]
            physical_router = "{name}"
            interface = "{port}"
            vlan = {vlan}
            virtual_network = "blue"
            "#,
            agents = agents.join(", ")
        ));
        self
    }

    pub fn toml(&self) -> String {
        let mut f = String::from("[global]\nvxlan_mode = \"configured\"\n");
        for a in self.agents.iter().chain(&self.others) {
            f.push_str(&format!("[[virtual_router]]\nname = \"{a}\"\n"));
        }
        f.push_str(&format!(
            "[[virtual_network]]\nname = \"blue\"\nproject = \"p\"\nnetwork_id = 5\nvni = 5001\nuuid = \"{BLUE_VN_UUID}\"\n"
        ));
        for s in &self.switches {
            f.push_str(s);
        }
        f
    }
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Polls `f` until true or the timeout; the message says what never happened.
pub async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A control node on an ephemeral port.
pub async fn control_node(fabric_toml: &str) -> ControlNodeHandle {
    let fabric = Fabric::from_toml(fabric_toml).expect("fabric");
    let cfg = ControlNodeConfig::new("127.0.0.1:0".parse().unwrap(), fabric);
    testbed::control_node::start(cfg)
        .await
        .expect("control node")
}

/// A running in-process agent.
pub struct Agent {
    pub handle: AgentHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Agent {
    /// The agent's southbound port (its pssl:/ptcp: listener).
    pub fn port(&self) -> u16 {
        let t = self.handle.southbound[0].to_string();
        t.split(':')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    pub async fn status(&self) -> tor_agent::admin::status::AgentStatus {
        tokio::time::timeout(T, self.handle.status())
            .await
            .unwrap()
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(T, &mut self.task).await;
    }

    /// Kills the agent abruptly (its task is aborted: sockets close).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Starts an agent with `southbound` TOML and sensible test settings.
pub async fn agent(name: &str, tsn: &str, cn: SocketAddr, southbound: &str) -> Agent {
    agent_from_toml(&format!(
        r#"
        [agent]
        name = "{name}"
        tsn_ip = "{tsn}"
        {southbound}
        keepalive_interval_ms = 2000
        stale_grace_ms = 3000
        [northbound]
        control_nodes = ["{cn}"]
        hold_time_s = 9
        end_of_config_quiet_ms = 500
        ha_stale_route_interval_ms = 5000
        [admin]
        listen = "127.0.0.1:0"
        readiness_listen = "127.0.0.1:0"
        "#
    ))
    .await
}

/// Starts an agent from a whole TOML configuration.
pub async fn agent_from_toml(text: &str) -> Agent {
    let cfg: AgentConfig = toml::from_str(text).expect("agent config");
    cfg.validate().expect("valid agent config");
    let (tx, rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let r = tor_agent::runtime::run(
            cfg,
            async {
                let _ = stop_rx.await;
            },
            Some(tx),
        )
        .await;
        if let Err(e) = r {
            panic!("agent failed: {e}");
        }
    });
    let handle = rx.await.expect("agent started");
    Agent {
        handle,
        stop: Some(stop_tx),
        task,
    }
}

/// A PKI with certificates for switches and agents.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub pki: TestPki,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path()).unwrap();
        Pki { dir, pki }
    }

    /// `tls = { cert, key, ca }` for an agent's southbound.
    pub fn agent_tls(&self, name: &str) -> String {
        let (cert, key) = self.pki.issue(name).unwrap();
        format!(
            "tls = {{ cert = \"{}\", key = \"{}\", ca = \"{}\" }}",
            cert.display(),
            key.display(),
            self.pki.ca_path().display()
        )
    }

    pub fn switch_tls(&self, name: &str) -> RealTls {
        let (cert, key) = self.pki.issue(name).unwrap();
        RealTls {
            key,
            cert,
            ca: self.pki.ca_path(),
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

/// A real ovsdb-server switch seeded with vtep-ctl: a Physical_Switch with
/// ports and its tunnel IP.
pub fn real_switch(name: &str, vtep: &str, ports: &[&str], tls: Option<&RealTls>) -> RealSwitch {
    let sw = RealSwitch::start(false, tls).expect("real ovsdb-server");
    sw.vtep_ctl(&["add-ps", name]).unwrap();
    for p in ports {
        sw.vtep_ctl(&["add-port", name, p]).unwrap();
    }
    sw.vtep_ctl(&[
        "set",
        "Physical_Switch",
        name,
        &format!("tunnel_ips={vtep}"),
    ])
    .unwrap();
    sw
}

/// `vtep-ctl list-remote-macs LS` lines that mention `needle`.
pub fn remote_macs(sw: &RealSwitch, ls: &str) -> String {
    sw.vtep_ctl(&["list-remote-macs", ls]).unwrap_or_default()
}
