//! The running topology of a scenario, on loopback:
//!
//! ```text
//!  sim switches (in process) ──ssl──┐                      ┌─ link agent-a.south ─ agent-a (child) ─ link agent-a.north ─┐
//!  real ovsdb-servers ─────────ssl──┼─ tor-proxy (child) ──┤                                                             ├─ control node(s) (in process)
//!                                   │   TLS passthrough    └─ link agent-b.south ─ agent-b (child) ─ link agent-b.north ─┘        │
//!                                                                                                       observer (XMPP) ──────┘
//! ```
//!
//! Agents and the proxy are child processes running the real code (so a crash is SIGKILL
//! and a hang SIGSTOP). Switches, control nodes, links and the observer live in the
//! runner's process: the simulated switches are thousands of cheap tasks whose MACs the
//! runner learns and moves directly, and the control node's route table is read through
//! its handle. Every TLS hop uses a throwaway CA made for the run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonrpsee::http_client::HttpClient;
use ovsdb::client::{Client, SessionOptions};
use ovsdb::testing::{RealSwitch, RealTls, TestPki};
use ovsdb::transport::{Target, TlsFiles};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::control_node::{ControlNodeConfig, ControlNodeHandle, Fabric};
use crate::switch::{Placement, SimSwitch, SimSwitchHandle, SwitchSpec};

use super::clock::unix_ms;
use super::invariants::FabricModel;
use super::layout::{self, AgentPlan, Layout, SwitchPlan};
use super::link::Link;
use super::monitor::{self, Observers, SimSwitches};
use super::observer::Observer;
use super::procs::{free_port, Launcher, Node, NodeState, Role};
use super::side::SideRuntime;
use super::snapshot::SwitchSnapshot;
use super::spec::{Scenario, Timing};

#[derive(Debug, thiserror::Error)]
pub enum BedError {
    #[error("{what}: {reason}")]
    Setup { what: String, reason: String },
}

fn setup(what: impl Into<String>, reason: impl ToString) -> BedError {
    BedError::Setup {
        what: what.into(),
        reason: reason.to_string(),
    }
}

pub struct CnSlot {
    pub handle: Option<ControlNodeHandle>,
    pub addr: SocketAddr,
}

pub struct AgentSlot {
    pub plan: AgentPlan,
    pub node: Node,
    pub admin: SocketAddr,
    pub south: Link,
    pub north: Link,
    pub client: HttpClient,
}

pub struct ProxySlot {
    pub node: Node,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub client: HttpClient,
}

pub struct RealSlot {
    pub plan: SwitchPlan,
    pub sw: Arc<RealSwitch>,
    /// MAC → logical switch name: the switch's local MACs (the runner writes them as a
    /// switch's own software would, once the agent has created the logical switch).
    pub desired: Arc<Mutex<BTreeMap<String, String>>>,
    task: JoinHandle<()>,
}

impl Drop for RealSlot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Bed {
    pub scenario: Scenario,
    pub dir: tempfile::TempDir,
    pub layout: Layout,
    pub fabric: Fabric,
    pub model: FabricModel,
    pub cns: Vec<CnSlot>,
    pub observers: Observers,
    pub agents: Vec<AgentSlot>,
    pub proxy: ProxySlot,
    pub sims: SimSwitches,
    pub sim_specs: BTreeMap<String, SwitchSpec>,
    pub reals: Vec<RealSlot>,
    /// The agent the latest agent fault acted on.
    pub last_agent: Option<String>,
    /// Threads of the links and the observers (dropped last).
    pub links_rt: SideRuntime,
    pub observer_rt: SideRuntime,
}

/// The VRFs of a fabric with their instance ids (network ids), for the observer.
pub fn vrfs_of(f: &Fabric) -> Vec<(String, u32)> {
    f.virtual_networks
        .iter()
        .map(|v| (v.vrf_name(), v.network_id))
        .collect()
}

fn agent_toml(
    a: &AgentPlan,
    t: &Timing,
    ports: (u16, u16, u16),
    cns: &[SocketAddr],
    tls: &(PathBuf, PathBuf, PathBuf),
) -> String {
    let cns: Vec<String> = cns.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        r#"[agent]
name = "{name}"
tsn_ip = "{tsn}"

[southbound]
listen = "pssl:{sb}:127.0.0.1"
tls = {{ cert = "{cert}", key = "{key}", ca = "{ca}" }}
keepalive_interval_ms = {ka}
stale_grace_ms = {grace}
batch_rows = {batch}
max_txn_in_flight = {inflight}

[northbound]
control_nodes = [{cns}]
hold_time_s = {hold}
end_of_config_quiet_ms = {eoc}
ha_stale_route_interval_ms = {stale}

[admin]
listen = "127.0.0.1:{admin}"
readiness_listen = "127.0.0.1:{ready}"
"#,
        name = a.name,
        tsn = a.tsn_ip,
        sb = ports.0,
        admin = ports.1,
        ready = ports.2,
        cert = tls.0.display(),
        key = tls.1.display(),
        ca = tls.2.display(),
        ka = t.agent_keepalive_ms,
        grace = t.stale_grace_ms,
        batch = t.batch_rows,
        inflight = t.max_txn_in_flight,
        cns = cns.join(", "),
        hold = t.hold_time_s,
        eoc = t.end_of_config_quiet_ms,
        stale = t.ha_stale_ms,
    )
}

fn proxy_toml(
    t: &Timing,
    listen: u16,
    admin: u16,
    backends: &[(String, SocketAddr, u16)],
    tls: &(PathBuf, PathBuf, PathBuf),
) -> String {
    let mut s = format!(
        r#"[global]
node_name = "tor-proxy"
threads = {threads}

[[listener]]
name = "ovsdb"
bind = "127.0.0.1:{listen}"
"#,
        threads = t.proxy_threads,
    );
    for (name, addr, ready) in backends {
        s.push_str(&format!(
            "\n[[backend]]\nname = \"{name}\"\naddress = \"{addr}\"\nreadiness_port = {ready}\n"
        ));
    }
    s.push_str(&format!(
        r#"
[timeouts]
connect = "{connect}ms"
retries = 3

[health]
check = "{check}"
interval = "{interval}ms"
fast_interval = "{fast}ms"
timeout = "{timeout}ms"
rise = {rise}
fall = {fall}
readiness_interval = "{interval}ms"

[backend_tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"

[admin]
listen = "127.0.0.1:{admin}"
"#,
        connect = t.proxy_connect_timeout_ms,
        check = t.proxy_check,
        interval = t.proxy_interval_ms,
        fast = t.proxy_fast_interval_ms,
        timeout = t.proxy_timeout_ms,
        rise = t.proxy_rise,
        fall = t.proxy_fall,
        ca = tls.2.display(),
        cert = tls.0.display(),
        key = tls.1.display(),
    ));
    s
}

async fn start_cn(
    addr: SocketAddr,
    fabric: &Fabric,
    t: &Timing,
) -> std::io::Result<ControlNodeHandle> {
    let mut cfg = ControlNodeConfig::new(addr, fabric.clone());
    cfg.hold_time = Duration::from_secs(t.hold_time_s);
    cfg.outgoing_capacity = 1 << 20;
    crate::control_node::start(cfg).await
}

/// Starts a control node on `addr`, retrying while the old listener goes away.
async fn restart_cn(
    addr: SocketAddr,
    fabric: &Fabric,
    t: &Timing,
) -> Result<ControlNodeHandle, BedError> {
    let mut last = None;
    for _ in 0..100 {
        match start_cn(addr, fabric, t).await {
            Ok(h) => return Ok(h),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(setup(
        format!("control node on {addr}"),
        last.map(|e| e.to_string()).unwrap_or_default(),
    ))
}

fn issue(pki: &TestPki, name: &str) -> Result<(PathBuf, PathBuf, PathBuf), BedError> {
    let (c, k) = pki
        .issue(name)
        .map_err(|e| setup(format!("certificate for {name}"), e))?;
    Ok((c, k, pki.ca_path()))
}

/// A real switch's database as the checks read it.
pub async fn real_snapshot(name: &str, sw: &RealSwitch) -> Result<SwitchSnapshot, String> {
    let target: Target = sw.unix_target.parse().map_err(|e| format!("{e}"))?;
    let stream = ovsdb::transport::connect(&target, None)
        .await
        .map_err(|e| e.to_string())?;
    let (client, _events) = Client::start(stream, SessionOptions::default());
    let reply = client
        .call_value("transact", &SwitchSnapshot::select_params())
        .await
        .map_err(|e| e.to_string());
    client.close();
    SwitchSnapshot::from_select(name, &reply?)
}

/// Writes a real switch's local MACs once their logical switch exists (as the switch's own
/// software does when hosts talk), and again if they disappear.
async fn real_driver(
    name: String,
    sw: Arc<RealSwitch>,
    desired: Arc<Mutex<BTreeMap<String, String>>>,
    ip: String,
) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(snap) = real_snapshot(&name, &sw).await else {
            continue;
        };
        let want: Vec<(String, String)> = desired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(mac, ls)| {
                snap.logical_switches.contains_key(*ls)
                    && !snap.local.iter().any(|r| &r.mac == *mac && &r.ls == *ls)
            })
            .map(|(m, l)| (m.clone(), l.clone()))
            .collect();
        for chunk in want.chunks(100) {
            let mut args: Vec<String> = Vec::new();
            for (mac, ls) in chunk {
                if !args.is_empty() {
                    args.push("--".into());
                }
                args.extend([
                    "add-ucast-local".into(),
                    ls.clone(),
                    mac.clone(),
                    ip.clone(),
                ]);
            }
            let sw = sw.clone();
            let r = tokio::task::spawn_blocking(move || {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                sw.vtep_ctl(&refs)
            })
            .await;
            if let Ok(Err(e)) = r {
                warn!(switch = %name, error = %e, "vtep-ctl add-ucast-local failed");
            }
        }
    }
}

impl Bed {
    pub async fn start(scenario: Scenario, launcher: Launcher) -> Result<Bed, BedError> {
        let t = scenario.timing.clone();
        let layout = layout::build(&scenario);
        let fabric = layout
            .fabric
            .clone()
            .validated()
            .map_err(|e| setup("fabric", e))?;
        let model = FabricModel::from_fabric(&fabric);
        let dir = tempfile::Builder::new()
            .prefix("testbed-scenario-")
            .tempdir()
            .map_err(|e| setup("run directory", e))?;
        let pki = TestPki::new(dir.path()).map_err(|e| setup("test CA", e))?;
        let links_rt =
            SideRuntime::start("scenario-links").map_err(|e| setup("links thread", e))?;
        let observer_rt =
            SideRuntime::start("scenario-observer").map_err(|e| setup("observer thread", e))?;

        // Control nodes and their observers.
        let mut cns = Vec::new();
        let mut observers = Vec::new();
        for i in 0..scenario.topology.control_nodes {
            // A fixed port outside the ephemeral range: it is bound again on a restart.
            let port = free_port().map_err(|e| setup("port", e))?;
            let h = start_cn(SocketAddr::from(([127, 0, 0, 1], port)), &fabric, &t)
                .await
                .map_err(|e| setup(format!("control node {i}"), e))?;
            let addr = h.local_addr();
            observers.push(Observer::start(
                observer_rt.handle(),
                addr,
                vrfs_of(&fabric),
                Duration::from_secs(t.hold_time_s),
            ));
            cns.push(CnSlot {
                handle: Some(h),
                addr,
            });
        }
        let cn_addrs: Vec<SocketAddr> = cns.iter().map(|c| c.addr).collect();

        // Agents, each behind its two links.
        let mut agents = Vec::new();
        for a in &layout.agents {
            let ports = (
                free_port().map_err(|e| setup("port", e))?,
                free_port().map_err(|e| setup("port", e))?,
                free_port().map_err(|e| setup("port", e))?,
            );
            let lo = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
            let south = Link::start(
                links_rt.handle(),
                &format!("{}.south", a.name),
                &[lo(ports.0), lo(ports.2)],
            )
            .map_err(|e| setup(format!("link {}.south", a.name), e))?;
            let north = Link::start(links_rt.handle(), &format!("{}.north", a.name), &cn_addrs)
                .map_err(|e| setup(format!("link {}.north", a.name), e))?;
            let north_addrs: Vec<SocketAddr> = (0..cn_addrs.len())
                .filter_map(|i| north.listen_addr(i))
                .collect();
            let tls = issue(&pki, &a.name)?;
            let config = dir.path().join(format!("{}.toml", a.name));
            std::fs::write(&config, agent_toml(a, &t, ports, &north_addrs, &tls))
                .map_err(|e| setup(config.display().to_string(), e))?;
            let mut node = Node::new(
                &a.name,
                Role::Agent,
                config,
                dir.path().join(format!("{}.log", a.name)),
                launcher.clone(),
            );
            node.start()
                .map_err(|e| setup(format!("start {}", a.name), e))?;
            let admin = lo(ports.1);
            let client = monitor::agent_client(admin).map_err(|e| setup("admin client", e))?;
            agents.push(AgentSlot {
                plan: a.clone(),
                node,
                admin,
                south,
                north,
                client,
            });
        }
        // Every agent has its config before any switch arrives (else the proxy's readiness
        // check sees "drain" everywhere and turns the switches away).
        for a in &mut agents {
            wait_agent_ready(a, Duration::from_secs(t.setup_timeout_s)).await?;
        }

        // The proxy in front of the agents' south links.
        let backends: Vec<(String, SocketAddr, u16)> = agents
            .iter()
            .map(|a| {
                (
                    a.plan.name.clone(),
                    a.south.listen_addr(0).unwrap_or(a.admin),
                    a.south.listen_addr(1).map(|x| x.port()).unwrap_or(0),
                )
            })
            .collect();
        let listen_port = free_port().map_err(|e| setup("port", e))?;
        let admin_port = free_port().map_err(|e| setup("port", e))?;
        let ptls = issue(&pki, "tor-proxy")?;
        let pconfig = dir.path().join("tor-proxy.toml");
        std::fs::write(
            &pconfig,
            proxy_toml(&t, listen_port, admin_port, &backends, &ptls),
        )
        .map_err(|e| setup(pconfig.display().to_string(), e))?;
        let mut pnode = Node::new(
            "tor-proxy",
            Role::Proxy,
            pconfig,
            dir.path().join("tor-proxy.log"),
            launcher.clone(),
        );
        pnode.start().map_err(|e| setup("start tor-proxy", e))?;
        let padmin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let mut proxy = ProxySlot {
            node: pnode,
            listen: SocketAddr::from(([127, 0, 0, 1], listen_port)),
            admin: padmin,
            client: monitor::proxy_client(padmin).map_err(|e| setup("admin client", e))?,
        };
        wait_proxy_ready(&mut proxy, agents.len(), Duration::from_secs(30)).await?;

        // Switches dial the proxy (the manager VIP of this deployment).
        let manager: Target = format!("ssl:{}", proxy.listen)
            .parse()
            .map_err(|e| setup("manager target", e))?;
        let sw_tls = issue(&pki, "switch")?;
        let mut sim_specs = BTreeMap::new();
        let mut sim_handles = BTreeMap::new();
        for p in layout.switches.iter().filter(|s| !s.real) {
            let spec = SwitchSpec::new(p.name.clone())
                .ports(p.ports.clone())
                .tunnel_ip(p.tunnel_ip.into())
                .management_ip(p.management_ip.into())
                .manager(manager.clone())
                .tls(TlsFiles {
                    cert: sw_tls.0.clone(),
                    key: sw_tls.1.clone(),
                    ca: sw_tls.2.clone(),
                })
                .macs(p.macs)
                .mac_base(p.mac_base)
                .placement(Placement::PerPort)
                .max_backoff(Duration::from_millis(t.switch_max_backoff_ms))
                .inactivity_probe(Duration::from_millis(t.switch_inactivity_probe_ms));
            let h = SimSwitch::start(spec.clone())
                .await
                .map_err(|e| setup(format!("switch {}", p.name), e))?;
            sim_specs.insert(p.name.clone(), spec);
            sim_handles.insert(p.name.clone(), Some(h));
        }
        let mut reals = Vec::new();
        for p in layout.switches.iter().filter(|s| s.real) {
            reals.push(start_real(&pki, p, &model, &proxy.listen)?);
        }
        info!(
            dir = %dir.path().display(),
            switches = layout.switches.len(),
            "topology started"
        );
        Ok(Bed {
            scenario,
            dir,
            layout,
            fabric,
            model,
            cns,
            observers: Arc::new(observers),
            agents,
            proxy,
            sims: Arc::new(Mutex::new(sim_handles)),
            sim_specs,
            reals,
            last_agent: None,
            links_rt,
            observer_rt,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn agent(&mut self, name: &str) -> Option<&mut AgentSlot> {
        self.agents.iter_mut().find(|a| a.plan.name == name)
    }

    pub fn sim(&self, name: &str) -> Option<SimSwitchHandle> {
        self.sims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .flatten()
    }

    /// Every switch's database, simulated (in process) and real (over its unix socket).
    pub async fn snapshots(&self) -> Result<Vec<SwitchSnapshot>, String> {
        let handles: Vec<(String, Option<SimSwitchHandle>)> = self
            .sims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = Vec::new();
        for (name, h) in handles {
            match h {
                Some(h) => out.push(h.db().read(|d| SwitchSnapshot::from_db(&name, d))),
                None => out.push(SwitchSnapshot {
                    name,
                    ..SwitchSnapshot::default()
                }),
            }
        }
        for r in &self.reals {
            out.push(
                real_snapshot(&r.plan.name, &r.sw)
                    .await
                    .map_err(|e| format!("{}: {e}", r.plan.name))?,
            );
        }
        Ok(out)
    }

    /// Replaces the fabric on every control node (a config change at run time).
    pub fn set_fabric(&mut self, f: Fabric) -> Result<(), String> {
        let f = f.validated().map_err(|e| e.to_string())?;
        for c in &self.cns {
            if let Some(h) = &c.handle {
                h.set_fabric(f.clone()).map_err(|e| e.to_string())?;
            }
        }
        for (vrf, id) in vrfs_of(&f) {
            for o in self.observers.iter() {
                o.subscribe(&vrf, id);
            }
        }
        self.model = FabricModel::from_fabric(&f);
        self.fabric = f;
        Ok(())
    }

    pub async fn restart_control_node(&mut self, i: usize, down: Duration) -> Result<(), String> {
        let fabric = self.fabric.clone();
        let t = self.scenario.timing.clone();
        let Some(slot) = self.cns.get_mut(i) else {
            return Err(format!("no control node {i}"));
        };
        if let Some(h) = slot.handle.take() {
            h.shutdown();
        }
        tokio::time::sleep(down).await;
        let h = restart_cn(slot.addr, &fabric, &t)
            .await
            .map_err(|e| e.to_string())?;
        slot.handle = Some(h);
        Ok(())
    }

    pub async fn restart_switch(&mut self, name: &str, down: Duration) -> Result<(), String> {
        let Some(spec) = self.sim_specs.get(name).cloned() else {
            return Err(format!("{name} is not a simulated switch"));
        };
        let old = self
            .sims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), None)
            .flatten();
        if let Some(h) = old {
            h.shutdown().await;
        }
        tokio::time::sleep(down).await;
        let h = SimSwitch::start(spec).await.map_err(|e| e.to_string())?;
        self.sims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Some(h));
        Ok(())
    }

    /// Stops everything: switches first (so agents see them go), then the proxy, agents,
    /// control nodes. With `keep_dir` the run directory (configs, logs) stays.
    pub async fn shutdown(mut self, keep_dir: bool) {
        let handles: Vec<SimSwitchHandle> = self
            .sims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .cloned()
            .collect();
        for h in handles {
            h.shutdown().await;
        }
        self.reals.clear();
        let grace = Duration::from_secs(2);
        let mut nodes: Vec<&mut Node> = vec![&mut self.proxy.node];
        nodes.extend(self.agents.iter_mut().map(|a| &mut a.node));
        for n in nodes {
            if n.state != NodeState::Down {
                n.terminate(grace);
            }
        }
        for o in self.observers.iter() {
            o.shutdown();
        }
        for c in &self.cns {
            if let Some(h) = &c.handle {
                h.shutdown();
            }
        }
        if keep_dir {
            let _ = self.dir.keep();
        }
    }
}

fn start_real(
    pki: &TestPki,
    p: &SwitchPlan,
    model: &FabricModel,
    proxy: &SocketAddr,
) -> Result<RealSlot, BedError> {
    let (cert, key, ca) = issue(pki, &p.name)?;
    let sw = RealSwitch::start(false, Some(&RealTls { key, cert, ca }))
        .map_err(|e| setup(format!("real switch {}", p.name), e))?;
    let ctl = |args: &[&str]| {
        sw.vtep_ctl(args)
            .map(|_| ())
            .map_err(|e| setup(format!("real switch {}", p.name), e))
    };
    ctl(&["add-ps", &p.name])?;
    for port in &p.ports {
        ctl(&["add-port", &p.name, port])?;
    }
    ctl(&[
        "set",
        "Physical_Switch",
        &p.name,
        &format!("tunnel_ips={}", p.tunnel_ip),
        &format!("management_ips={}", p.management_ip),
    ])?;
    // Local MAC i sits in the network bound on port p(i mod ports).
    let bindings = model
        .switches
        .get(&p.name)
        .map(|m| m.bindings.clone())
        .unwrap_or_default();
    let mut desired = BTreeMap::new();
    for i in 0..p.macs {
        let port = format!("p{}", i as usize % p.ports.len().max(1));
        let ls = bindings.get(&port).and_then(|b| b.values().next().cloned());
        if let (Some(mac), Some(ls)) = (p.mac(i), ls) {
            desired.insert(mac.to_string(), ls);
        }
    }
    ctl(&["set-manager", &format!("ssl:{proxy}")])?;
    let sw = Arc::new(sw);
    let desired = Arc::new(Mutex::new(desired));
    let task = tokio::spawn(real_driver(
        p.name.clone(),
        sw.clone(),
        desired.clone(),
        p.tunnel_ip.to_string(),
    ));
    Ok(RealSlot {
        plan: p.clone(),
        sw,
        desired,
        task,
    })
}

async fn wait_agent_ready(a: &mut AgentSlot, limit: Duration) -> Result<(), BedError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(st) = monitor::agent_status(&a.client, Duration::from_secs(2)).await {
            if st.readiness == "ready" {
                return Ok(());
            }
        }
        if let Some(status) = a.node.exited() {
            return Err(setup(
                format!("agent {}", a.plan.name),
                format!("exited ({status}): {}", a.node.log_tail(20)),
            ));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(setup(
                format!("agent {}", a.plan.name),
                format!(
                    "not ready after {limit:?} (config from the control node?): {}",
                    a.node.log_tail(20)
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_proxy_ready(
    p: &mut ProxySlot,
    agents: usize,
    limit: Duration,
) -> Result<(), BedError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(b) = monitor::proxy_backends(&p.client, Duration::from_secs(2)).await {
            if b.iter().filter(|b| b.health_up).count() == agents {
                return Ok(());
            }
        }
        if let Some(status) = p.node.exited() {
            return Err(setup(
                "tor-proxy",
                format!("exited ({status}): {}", p.node.log_tail(20)),
            ));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(setup(
                "tor-proxy",
                format!(
                    "backends not all up after {limit:?}: {}",
                    p.node.log_tail(20)
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the proxy again on the same ports with the same configuration.
pub async fn restart_proxy(p: &mut ProxySlot) -> Result<(), String> {
    p.node.start().map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while monitor::proxy_backends(&p.client, Duration::from_secs(1))
        .await
        .is_none()
    {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "tor-proxy did not come back: {}",
                p.node.log_tail(20)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `unix_ms` re-exported for the runner's fault timestamps.
pub fn now_ms() -> u64 {
    unix_ms()
}
