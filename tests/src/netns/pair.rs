//! A `tor-proxy` pair behind keepalived's VRRP VIP, in network namespaces,
//! in front of two `tor-agent` processes and the simulated control node,
//! with switches dialing the VIP over TLS (passthrough: the TLS session runs
//! from switch to agent). Shared by `tests/vrrp_pair.rs` and
//! `benches/vrrp_failover.rs`.
//!
//! ```text
//!                              lan: bridge br0 (10.0.0.0/24)
//!     ┌────────────────┬────────────────┬──────────────────┬───────────────────────┐
//!   p1 10.0.0.1      p2 10.0.0.2      agents             sw1 10.0.0.129 … swN, swr
//!   tor-proxy-a      tor-proxy-b      10.0.0.11 agent-1  (one namespace per switch)
//!   keepalived 150   keepalived 100   10.0.0.12 agent-2
//!   VIP 10.0.0.100 on the master's eth0   control node on the agents' loopback
//! ```
//!
//! Why this shape:
//! - p1 and p2 are the two proxy nodes. Each runs its proxy and its own
//!   keepalived; VRRP runs between their `eth0`s over the bridge with
//!   unicast peers, and the VIP is the address keepalived adds to the
//!   master's `eth0` and announces by gratuitous ARP. Nothing is simulated:
//!   the switches' kernels follow the VIP as they would on a real LAN.
//! - One namespace per switch, because a passthrough proxy knows a switch by
//!   its source address (the affinity key), as in production where every
//!   switch has its own management IP.
//! - The agents and the control node share one namespace: nothing here
//!   depends on them being apart. The agents still listen on distinct
//!   addresses and are distinct backends to the proxies.
//! - The addresses are those of the shipped samples
//!   (`proxy/deploy/keepalived.conf`, `proxy/examples/tor-proxy.toml`); all
//!   namespaces are private to the lab, so they never meet the host's.
//! - keepalived runs the shipped sample with only the per-node values
//!   replaced ([`keepalived_conf`]): the sample is what is tested.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ovsdb::testing::{RealSwitch, RealTls};
use ovsdb::transport::{Target, TlsFiles};
use ovsdb::vtep::{McastMacsRemote, PhysicalLocator, PhysicalLocatorSet};
use testbed::control_node::{ControlNodeConfig, ControlNodeHandle, Fabric};
use testbed::switch::{SimSwitch, SimSwitchHandle, SwitchSpec};
use tokio::time::Instant;

use crate::FabricToml;
use tor_agent::admin::api::AdminApiClient as _;
use tor_agent::admin::status::{AgentStatus, SwitchStatus};
use tor_proxy::admin::api::AdminApiClient as _;
use tor_proxy::admin::api::Show;

use super::{ip, tail, workspace_bin, Lan, Netns, NsRuntime, Proc};
use crate::Pki;

pub const PROXY_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub const AGENT_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 12)];
pub const AGENTS: [&str; 2] = ["agent-1", "agent-2"];
pub const PROXIES: [&str; 2] = ["tor-proxy-a", "tor-proxy-b"];
/// keepalived priorities: the sample's 150 on the first node, 100 on the other.
pub const PRIORITIES: [u32; 2] = [150, 100];
pub const TSN: [&str; 2] = ["198.51.100.1", "198.51.100.2"];
pub const OVSDB_PORT: u16 = 6640;
const PEER_PORT: u16 = 7400;
const READINESS_PORT: u16 = 8086;
const AGENT_ADMIN: [u16; 2] = [8085, 8095];
const PROXY_ADMIN: &str = "127.0.0.1:9190";
/// XMPP hold time of the agents and the control node alike.
const HOLD_TIME_S: u64 = 9;
const FIRST_SWITCH_HOST: u8 = 129;
/// Switches fit between .129 and .254.
pub const MAX_SWITCHES: usize = 126;
const VN_UUID: &str = crate::BLUE_VN_UUID;
pub const VRF: &str = crate::BLUE_VRF;
pub const VLAN: u16 = 100;
/// The generous bound every wait uses (a hung lab fails, it never blocks).
pub const T: Duration = Duration::from_secs(60);

/// The keepalived sample shipped with the proxy.
pub const KEEPALIVED_SAMPLE: &str = include_str!("../../../proxy/deploy/keepalived.conf");

/// The logical switch the agents create for the `blue` network.
pub fn logical_switch() -> String {
    format!("Contrail-{VN_UUID}")
}

/// What the lab is made of.
#[derive(Clone, Debug)]
pub struct PairOptions {
    /// Simulated switches (in-process, each in its own namespace).
    pub sim_switches: usize,
    /// One real `ovsdb-server` switch as well.
    pub real_switch: bool,
    /// MACs each switch has learnt.
    pub macs: u32,
    /// `Manager.max_backoff` on every switch (OVS default when `None`: the
    /// redial backoff grows 1, 2, 4, 8 s).
    pub max_backoff: Option<Duration>,
}

/// The sample's `keepalived.conf` for node `node` (0 or 1): its router id,
/// priority, unicast source and peer, and the track script pointing at
/// this lab's binary and config. Every other line, timers included, is the
/// sample's. Fails when the sample no longer has the lines this relies on.
pub fn keepalived_conf(
    sample: &str,
    node: usize,
    tor_proxy: &Path,
    proxy_conf: &Path,
) -> Result<String, String> {
    for needed in [
        "interface eth0".to_string(),
        format!("{VIP}/24 dev eth0"),
        "nopreempt".to_string(),
        "state BACKUP".to_string(),
        "track_script".to_string(),
    ] {
        if !sample.contains(&needed) {
            return Err(format!(
                "the sample keepalived.conf no longer contains {needed:?}"
            ));
        }
    }
    let mut out = String::new();
    let mut seen = BTreeMap::<&str, usize>::new();
    let mut in_peers = false;
    for line in sample.lines() {
        let t = line.trim_start();
        let key = t.split_whitespace().next().unwrap_or("");
        let replaced = match key {
            "router_id" => Some(format!("router_id {}", PROXIES[node])),
            "script" => Some(format!(
                "script \"{} check --config {}\"",
                tor_proxy.display(),
                proxy_conf.display()
            )),
            "priority" => Some(format!("priority {}", PRIORITIES[node])),
            "unicast_src_ip" => Some(format!("unicast_src_ip {}", PROXY_IPS[node])),
            _ if in_peers && !t.is_empty() && !t.starts_with('#') => {
                in_peers = false;
                Some(PROXY_IPS[1 - node].to_string())
            }
            _ => None,
        };
        if key == "unicast_peer" {
            in_peers = true;
        }
        match replaced {
            Some(r) => {
                let what = if ["router_id", "script", "priority", "unicast_src_ip"].contains(&key) {
                    key
                } else {
                    "unicast_peer"
                };
                *seen.entry(what).or_default() += 1;
                out.push_str(&line[..line.len() - t.len()]);
                out.push_str(&r);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for key in [
        "router_id",
        "script",
        "priority",
        "unicast_src_ip",
        "unicast_peer",
    ] {
        match seen.get(key) {
            Some(1) => {}
            n => {
                return Err(format!(
                    "the sample keepalived.conf has {} `{key}` entries, expected one",
                    n.copied().unwrap_or(0)
                ))
            }
        }
    }
    Ok(out)
}

/// The value of the first `key VALUE` line of a keepalived config.
pub fn keepalived_value(conf: &str, key: &str) -> Option<String> {
    conf.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(key))
            .then(|| w.next().map(str::to_string))
            .flatten()
    })
}

/// A switch of the lab.
pub struct LabSwitch {
    pub name: String,
    pub ip: Ipv4Addr,
    pub tunnel_ip: Ipv4Addr,
    /// Its local MACs, as routes at the control node.
    pub macs: Vec<String>,
    pub kind: SwitchKind,
    tls: TlsFiles,
}

pub enum SwitchKind {
    Sim(Option<SimSwitchHandle>),
    Real(Option<RealSwitch>),
}

impl LabSwitch {
    pub fn is_real(&self) -> bool {
        matches!(self.kind, SwitchKind::Real(_))
    }

    /// The `dst_ip`s of its `unknown-dst` Mcast_Macs_Remote locators: the
    /// service node of the agent that programmed it.
    pub fn unknown_dst(&self) -> Vec<String> {
        match &self.kind {
            SwitchKind::Sim(Some(sw)) => sw.db().read(|d| {
                let (Some(mm), Some(sets), Some(locs)) = (
                    d.table(McastMacsRemote::TABLE),
                    d.table(PhysicalLocatorSet::TABLE),
                    d.table(PhysicalLocator::TABLE),
                ) else {
                    return Vec::new();
                };
                let mut out = Vec::new();
                for (u, r) in mm.iter() {
                    let Ok(m) = McastMacsRemote::from_row(&mm.schema, *u, &r.row) else {
                        continue;
                    };
                    if m.mac != "unknown-dst" {
                        continue;
                    }
                    let Some(set) = sets.get(&m.locator_set).and_then(|r| {
                        PhysicalLocatorSet::from_row(&sets.schema, m.locator_set, &r.row).ok()
                    }) else {
                        continue;
                    };
                    for l in set.locators {
                        if let Some(loc) = locs
                            .get(&l)
                            .and_then(|r| PhysicalLocator::from_row(&locs.schema, l, &r.row).ok())
                        {
                            out.push(loc.dst_ip);
                        }
                    }
                }
                out.sort();
                out
            }),
            SwitchKind::Real(Some(sw)) => sw
                .vtep_ctl(&["list-remote-macs", &logical_switch()])
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    l.trim()
                        .strip_prefix("unknown-dst -> vxlan_over_ipv4/")
                        .map(str::to_string)
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Both agents' status at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub at: Instant,
    pub agents: [AgentStatus; 2],
}

impl Snapshot {
    pub fn switch(&self, agent: usize, name: &str) -> Option<&SwitchStatus> {
        self.agents[agent].switches.iter().find(|s| s.name == name)
    }

    /// The agents holding a session with `name`.
    pub fn holders(&self, name: &str) -> Vec<usize> {
        (0..2)
            .filter(|&a| self.switch(a, name).is_some_and(|s| s.active))
            .collect()
    }

    /// The proxy address the agent's session with `name` comes from.
    pub fn via(&self, agent: usize, name: &str) -> Option<Ipv4Addr> {
        let peer = self.switch(agent, name)?.peer.as_ref()?;
        match peer.parse::<SocketAddr>().ok()?.ip() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        }
    }

    /// Takeovers `agent` completed for `name` so far.
    pub fn takeovers(&self, agent: usize, name: &str) -> u64 {
        self.switch(agent, name).map_or(0, |s| s.takeovers)
    }

    /// One line per switch: holders, the proxy each session comes through,
    /// state and takeovers on both agents.
    pub fn summary<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> String {
        let mut out = String::new();
        for n in names {
            let per_agent: Vec<String> = (0..2)
                .map(|a| match self.switch(a, n) {
                    Some(s) => format!(
                        "{}: {} via {} takeovers {}",
                        AGENTS[a],
                        s.state,
                        s.peer.as_deref().unwrap_or("-"),
                        s.takeovers
                    ),
                    None => format!("{}: unknown switch", AGENTS[a]),
                })
                .collect();
            out.push_str(&format!("{n}: {}\n", per_agent.join(" | ")));
        }
        out
    }

    /// `name` is held by `agent` alone, through proxy `proxy`, and that
    /// agent's takeover has converged (switch programmed, MACs exported).
    pub fn settled_on(&self, name: &str, agent: usize, proxy: usize) -> bool {
        self.holders(name) == [agent]
            && self.via(agent, name) == Some(PROXY_IPS[proxy])
            && self
                .switch(agent, name)
                .is_some_and(|s| s.state == "active")
    }
}

/// The running lab. Dropping it stops everything and deletes the
/// namespaces; when dropped during a panic it prints the daemons' logs and
/// keeps its directory for a post-mortem.
pub struct PairLab {
    pub proxies: [Option<Proc>; 2],
    pub keepalived: [Option<Proc>; 2],
    agents: Vec<Proc>,
    pub switches: Vec<LabSwitch>,
    pub cn: ControlNodeHandle,
    sw_rt: Vec<Option<NsRuntime>>,
    agents_rt: NsRuntime,
    proxy_rt: [NsRuntime; 2],
    sw_ns: Vec<Netns>,
    pub agents_ns: Netns,
    pub proxy_ns: [Netns; 2],
    /// Held for its guard: the bridge namespace goes with the lab.
    _lan: Lan,
    pub pki: Pki,
    pub proxy_conf: [PathBuf; 2],
    pub keepalived_conf: [PathBuf; 2],
    tor_proxy: PathBuf,
    dir: Option<tempfile::TempDir>,
    /// Keep the lab's directory when dropped during a panic (the default).
    pub keep_files_on_panic: bool,
    /// The switches' `Manager.max_backoff` ([`PairOptions::max_backoff`]).
    pub max_backoff: Option<Duration>,
}

fn fabric(switches: &[LabSwitch]) -> String {
    switches
        .iter()
        .fold(FabricToml::blue(&AGENTS), |f, s| {
            f.switch(
                &s.name,
                &s.ip.to_string(),
                &s.tunnel_ip.to_string(),
                "p0",
                VLAN,
            )
        })
        .toml()
}

fn agent_toml(pki: &Pki, i: usize, cn: SocketAddr) -> String {
    format!(
        r#"
[agent]
name = "{name}"
tsn_ip = "{tsn}"
[southbound]
listen = "pssl:{OVSDB_PORT}:{ip}"
{tls}
stale_grace_ms = 3000
[northbound]
control_nodes = ["{cn}"]
hold_time_s = {HOLD_TIME_S}
end_of_config_quiet_ms = 500
ha_stale_route_interval_ms = 60000
[admin]
listen = "127.0.0.1:{admin}"
readiness_listen = "{ip}:{READINESS_PORT}"
"#,
        name = AGENTS[i],
        tsn = TSN[i],
        ip = AGENT_IPS[i],
        tls = pki.agent_tls(AGENTS[i]),
        admin = AGENT_ADMIN[i],
    )
}

fn proxy_toml(pki: &Pki, i: usize) -> String {
    let (client_cert, client_key) = pki.pki.issue(&format!("{}-client", PROXIES[i])).unwrap();
    let (peer_cert, peer_key) = pki.pki.issue(&format!("{}-peer", PROXIES[i])).unwrap();
    let ca = pki.pki.ca_path();
    let backends: String = (0..2)
        .map(|a| {
            format!(
                "[[backend]]\nname = \"{}\"\naddress = \"{}:{OVSDB_PORT}\"\nreadiness_port = {READINESS_PORT}\n",
                AGENTS[a], AGENT_IPS[a]
            )
        })
        .collect();
    format!(
        r#"
[global]
node_name = "{name}"
threads = 1

[[listener]]
name = "ovsdb"
bind = "0.0.0.0:{OVSDB_PORT}"
mode = "passthrough"

{backends}
[health]
interval = "1s"

[backend_tls]
ca = "{ca}"
cert = "{cc}"
key = "{ck}"
server_name = "localhost"

[peering]
listen = "{me}:{PEER_PORT}"
tls_cert = "{pc}"
tls_key = "{pk}"
tls_ca = "{ca}"
reconnect = "500ms"

[[peer]]
name = "{other}"
addresses = ["{other_ip}:{PEER_PORT}"]
server_name = "localhost"

[admin]
listen = "{PROXY_ADMIN}"
"#,
        name = PROXIES[i],
        ca = ca.display(),
        cc = client_cert.display(),
        ck = client_key.display(),
        me = PROXY_IPS[i],
        pc = peer_cert.display(),
        pk = peer_key.display(),
        other = PROXIES[1 - i],
        other_ip = PROXY_IPS[1 - i],
    )
}

/// A bounded wait: [`tick`](Deadline::tick) sleeps, or fails the test
/// with what never happened once [`T`] has passed.
pub struct Deadline {
    end: Instant,
    what: String,
}

impl Deadline {
    pub fn new(what: impl Into<String>) -> Deadline {
        Deadline {
            end: Instant::now() + T,
            what: what.into(),
        }
    }

    pub async fn tick(&self, every: Duration, context: impl FnOnce() -> String) {
        assert!(
            Instant::now() < self.end,
            "timed out waiting for {}\n{}",
            self.what,
            context()
        );
        tokio::time::sleep(every).await;
    }
}

impl PairLab {
    /// Builds the namespaces, starts the control node, both agents, both
    /// proxies and keepalived (the first node's first, so that it becomes
    /// master), and returns once the first node holds the VIP, the second
    /// is its backup, the peer links are up and both proxies see both
    /// agents healthy. No switch is started yet ([`start_switch`]).
    ///
    /// [`start_switch`]: PairLab::start_switch
    pub async fn start(opts: PairOptions) -> PairLab {
        super::require_root_and_tools();
        assert!(
            opts.sim_switches + usize::from(opts.real_switch) <= MAX_SWITCHES,
            "at most {MAX_SWITCHES} switches fit the lab's /24"
        );
        let tor_proxy = workspace_bin("tor-proxy");
        let tor_agent = workspace_bin("tor-agent");
        let removed = super::clean_leftovers();
        if removed > 0 {
            eprintln!("removed {removed} namespace(s) left by an earlier run");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new();
        let prefix = super::unique_prefix();
        let mut lan = Lan::create(&format!("{prefix}-lan")).expect("lan");
        let proxy_ns = [
            Netns::create(&format!("{prefix}-p1")).expect("netns p1"),
            Netns::create(&format!("{prefix}-p2")).expect("netns p2"),
        ];
        let agents_ns = Netns::create(&format!("{prefix}-agents")).expect("netns agents");

        let mut switches = Vec::new();
        let mut sw_ns = Vec::new();
        let total = opts.sim_switches + usize::from(opts.real_switch);
        for k in 0..total {
            let real = opts.real_switch && k == total - 1;
            let name = if real {
                "swr".to_string()
            } else {
                format!("sw{}", k + 1)
            };
            let ip = Ipv4Addr::new(10, 0, 0, FIRST_SWITCH_HOST + k as u8);
            let tunnel_ip = Ipv4Addr::new(10, 128, 0, 1 + k as u8);
            let (cert, key) = pki.pki.issue(&name).expect("switch cert");
            let tls = TlsFiles {
                cert,
                key,
                ca: pki.pki.ca_path(),
            };
            let (macs, kind) = if real {
                let macs = (0..opts.macs)
                    .map(|i| format!("02:ee:00:00:{:02x}:{:02x}", i >> 8, i & 0xff))
                    .collect();
                (macs, SwitchKind::Real(None))
            } else {
                let spec = SwitchSpec::numbered("sw", k as u32 + 1).macs(opts.macs);
                let macs = (0..opts.macs)
                    .filter_map(|i| spec.population.mac(i))
                    .map(|m| m.to_string())
                    .collect();
                (macs, SwitchKind::Sim(None))
            };
            sw_ns.push(Netns::create(&format!("{prefix}-{name}")).expect("switch netns"));
            switches.push(LabSwitch {
                name,
                ip,
                tunnel_ip,
                macs,
                kind,
                tls,
            });
        }
        let mut members: Vec<(&Netns, Vec<String>)> = vec![
            (&proxy_ns[0], vec![format!("{}/24", PROXY_IPS[0])]),
            (&proxy_ns[1], vec![format!("{}/24", PROXY_IPS[1])]),
            (
                &agents_ns,
                AGENT_IPS.iter().map(|a| format!("{a}/24")).collect(),
            ),
        ];
        for (ns, s) in sw_ns.iter().zip(&switches) {
            members.push((ns, vec![format!("{}/24", s.ip)]));
        }
        lan.attach(&members).expect("veths");

        let proxy_rt = [
            NsRuntime::start(&proxy_ns[0]).expect("runtime p1"),
            NsRuntime::start(&proxy_ns[1]).expect("runtime p2"),
        ];
        let agents_rt = NsRuntime::start(&agents_ns).expect("runtime agents");

        // The control node, in process, on the agents' loopback.
        let fabric_text = fabric(&switches);
        let cn = agents_rt
            .run(async move {
                let fabric = Fabric::from_toml(&fabric_text).expect("fabric");
                let mut cfg = ControlNodeConfig::new("127.0.0.1:0".parse().unwrap(), fabric);
                // The agents' hold time: the control node's keepalives (every
                // third of it) keep an idle session alive. With the default
                // 90 s, an agent holding 9 s drops an idle session, reports
                // `drain`, and the proxies send arriving switches elsewhere.
                cfg.hold_time = Duration::from_secs(HOLD_TIME_S);
                testbed::control_node::start(cfg)
                    .await
                    .expect("control node")
            })
            .await;
        let mut agents = Vec::new();
        for (i, name) in AGENTS.iter().enumerate() {
            let conf = dir.path().join(format!("{name}.toml"));
            std::fs::write(&conf, agent_toml(&pki, i, cn.local_addr())).unwrap();
            let mut cmd = agents_ns.command(&tor_agent);
            cmd.arg("--config").arg(&conf);
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "info");
            }
            agents.push(
                Proc::spawn(name, cmd, &dir.path().join(format!("{name}.log"))).expect("agent"),
            );
        }

        let mut proxy_conf = [PathBuf::new(), PathBuf::new()];
        let mut keepalived_paths = [PathBuf::new(), PathBuf::new()];
        for i in 0..2 {
            proxy_conf[i] = dir.path().join(format!("{}.toml", PROXIES[i]));
            std::fs::write(&proxy_conf[i], proxy_toml(&pki, i)).unwrap();
            let conf = keepalived_conf(KEEPALIVED_SAMPLE, i, &tor_proxy, &proxy_conf[i])
                .unwrap_or_else(|e| panic!("{e}"));
            keepalived_paths[i] = dir.path().join(format!("keepalived-{}.conf", PROXIES[i]));
            std::fs::write(&keepalived_paths[i], conf).unwrap();
        }
        let mut lab = PairLab {
            proxies: [None, None],
            keepalived: [None, None],
            agents,
            switches,
            cn,
            sw_rt: Vec::new(),
            agents_rt,
            proxy_rt,
            sw_ns,
            agents_ns,
            proxy_ns,
            _lan: lan,
            pki,
            proxy_conf,
            keepalived_conf: keepalived_paths,
            tor_proxy,
            dir: Some(dir),
            keep_files_on_panic: true,
            max_backoff: opts.max_backoff,
        };
        lab.sw_rt = (0..lab.switches.len()).map(|_| None).collect();
        for i in 0..2 {
            lab.check_proxy_config(i);
            lab.check_keepalived_config(i);
            lab.start_proxy(i);
        }
        let d = Deadline::new("both agents connected to the control node");
        while lab.cn.agents().len() < 2 {
            d.tick(Duration::from_millis(100), || lab.logs()).await;
        }
        for i in 0..2 {
            lab.wait_proxy("both agents usable", i, |s| {
                s.backends.iter().filter(|b| b.usable).count() == 2
            })
            .await;
        }
        // The first node first: it becomes master once its master-down timer
        // runs out; the second then starts as its backup.
        lab.start_keepalived(0);
        lab.wait_vip_on(0).await;
        lab.start_keepalived(1);
        for i in 0..2 {
            lab.wait_proxy("the peer link up", i, |s| {
                s.peers.iter().all(|p| p.state == "up" && p.incoming)
            })
            .await;
        }
        lab
    }

    /// Every namespace of the lab.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out = vec![
            self._lan.ns.name().to_string(),
            self.agents_ns.name().to_string(),
        ];
        out.extend(self.proxy_ns.iter().map(|n| n.name().to_string()));
        out.extend(self.sw_ns.iter().map(|n| n.name().to_string()));
        out
    }

    /// Every process inside the lab's namespaces (daemons, keepalived and
    /// its children, real switches).
    pub fn pids(&self) -> Vec<u32> {
        self.namespaces()
            .iter()
            .flat_map(|n| super::pids_in(n))
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/"))
    }

    fn check_proxy_config(&self, i: usize) {
        let out = self.proxy_ns[i]
            .command(&self.tor_proxy)
            .arg("check-config")
            .arg("--config")
            .arg(&self.proxy_conf[i])
            .output()
            .expect("tor-proxy check-config");
        assert!(
            out.status.success(),
            "tor-proxy check-config {}: {}{}",
            self.proxy_conf[i].display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `keepalived -t` in the node's namespace: the rendered sample must
    /// parse without a single complaint (keepalived ignores bad lines
    /// and goes on, which would test something else than the sample).
    fn check_keepalived_config(&self, i: usize) {
        let out = self.proxy_ns[i]
            .command(super::keepalived_path())
            .arg("-t")
            .arg("-f")
            .arg(&self.keepalived_conf[i])
            .arg("-l")
            .output()
            .expect("keepalived -t");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.trim().is_empty(),
            "keepalived -t {} (status {}): {text}",
            self.keepalived_conf[i].display(),
            out.status
        );
    }

    /// Starts (or restarts) node `i`'s proxy.
    pub fn start_proxy(&mut self, i: usize) {
        let mut cmd = self.proxy_ns[i].command(&self.tor_proxy);
        cmd.arg("--config").arg(&self.proxy_conf[i]);
        let log = self.dir().join(format!("{}.log", PROXIES[i]));
        self.proxies[i] = Some(Proc::spawn(PROXIES[i], cmd, &log).expect("tor-proxy"));
    }

    /// Starts (or restarts) node `i`'s keepalived, in the foreground, VRRP
    /// only, logging to its console, with its pid files in the lab.
    pub fn start_keepalived(&mut self, i: usize) {
        let d = self.dir().to_path_buf();
        let name = PROXIES[i];
        let mut cmd = self.proxy_ns[i].command(super::keepalived_path());
        cmd.args([
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--vrrp",
        ])
        .arg("--use-file")
        .arg(&self.keepalived_conf[i])
        .arg("--pid")
        .arg(d.join(format!("keepalived-{name}.pid")))
        .arg("--vrrp_pid")
        .arg(d.join(format!("keepalived-{name}-vrrp.pid")))
        .arg("--checkers_pid")
        .arg(d.join(format!("keepalived-{name}-checkers.pid")));
        let log = d.join(format!("keepalived-{name}.log"));
        self.keepalived[i] = Some(Proc::spawn(&format!("keepalived {name}"), cmd, &log).unwrap());
    }

    /// SIGKILLs node `i`'s proxy, as a crash (keepalived stays).
    pub fn kill_proxy(&mut self, i: usize) {
        if let Some(mut p) = self.proxies[i].take() {
            p.kill();
        }
    }

    /// Node `i` is lost at once (power cut): its proxy and every keepalived
    /// process are SIGKILLed and its link goes down. The VIP the dead
    /// keepalived leaves on the interface is unreachable behind the down link.
    pub fn kill_node(&mut self, i: usize) {
        ip(&["-n", self.proxy_ns[i].name(), "link", "set", "eth0", "down"]).expect("link down");
        if let Some(mut p) = self.proxies[i].take() {
            p.kill();
        }
        for pid in self.proxy_ns[i].pids() {
            if super::comm(pid) == "keepalived" {
                super::kill(pid, libc::SIGKILL);
            }
        }
        if let Some(mut k) = self.keepalived[i].take() {
            k.kill();
        }
    }

    /// Brings a node lost by [`kill_node`](PairLab::kill_node) back: the
    /// stale VIP removed, link up, proxy and keepalived started (as BACKUP:
    /// with nopreempt it does not take the VIP back).
    pub async fn restore_node(&mut self, i: usize) {
        let ns = self.proxy_ns[i].name().to_string();
        let _ = ip(&[
            "-n",
            &ns,
            "addr",
            "del",
            &format!("{VIP}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]).expect("link up");
        self.start_proxy(i);
        self.wait_proxy("both agents usable", i, |s| {
            s.backends.iter().filter(|b| b.usable).count() == 2
        })
        .await;
        self.start_keepalived(i);
    }

    /// The VRRP state node `i`'s keepalived last entered (`MASTER`,
    /// `BACKUP`, `FAULT`), from its log (`(NAME) Entering X STATE`).
    pub fn keepalived_state(&self, i: usize) -> Option<String> {
        let log = std::fs::read_to_string(self.log_path(&format!("keepalived-{}", PROXIES[i])))
            .unwrap_or_default();
        log.lines().rev().find_map(|l| {
            let rest = &l[l.find("Entering ")? + "Entering ".len()..];
            rest.strip_suffix(" STATE").map(str::to_string)
        })
    }

    pub async fn wait_keepalived_state(&self, i: usize, state: &str) {
        let d = Deadline::new(format!("keepalived on {} in {state}", PROXIES[i]));
        while self.keepalived_state(i).as_deref() != Some(state) {
            d.tick(Duration::from_millis(100), || self.logs()).await;
        }
    }

    /// Which nodes have the VIP on their `eth0`.
    pub fn vip_holders(&self) -> Vec<usize> {
        (0..2)
            .filter(|&i| self.proxy_ns[i].ipv4_addrs("eth0").contains(&VIP))
            .collect()
    }

    pub async fn wait_vip_on(&self, i: usize) {
        let d = Deadline::new(format!("the VIP on {} alone", PROXIES[i]));
        while self.vip_holders() != [i] {
            d.tick(Duration::from_millis(50), || self.logs()).await;
        }
    }

    /// Starts switch `k`: it dials `ssl:VIP:6640` from its namespace.
    pub async fn start_switch(&mut self, k: usize) {
        let manager = format!("ssl:{VIP}:{OVSDB_PORT}");
        let sw = &mut self.switches[k];
        match &mut sw.kind {
            SwitchKind::Sim(slot) => {
                let rt = NsRuntime::start(&self.sw_ns[k]).expect("switch runtime");
                let spec = SwitchSpec::numbered("sw", k as u32 + 1)
                    .ports(["p0"])
                    .management_ip(sw.ip.into())
                    .tunnel_ip(sw.tunnel_ip.into())
                    .macs(sw.macs.len() as u32)
                    .tls(sw.tls.clone())
                    .manager(manager.parse::<Target>().expect("manager target"));
                let spec = match self.max_backoff {
                    Some(b) => spec.max_backoff(b),
                    None => spec,
                };
                assert_eq!(spec.name, sw.name);
                let handle = rt
                    .run(async move { SimSwitch::start(spec).await.expect("simulated switch") })
                    .await;
                *slot = Some(handle);
                self.sw_rt[k] = Some(rt);
            }
            SwitchKind::Real(slot) => {
                let tls = RealTls {
                    key: sw.tls.key.clone(),
                    cert: sw.tls.cert.clone(),
                    ca: sw.tls.ca.clone(),
                };
                let (name, tunnel) = (sw.name.clone(), sw.tunnel_ip.to_string());
                // Started from a thread inside the switch's namespace, so the
                // server (and its manager connection) lives there.
                let real = self.sw_ns[k]
                    .run_blocking(|| crate::real_switch(&name, &tunnel, &["p0"], Some(&tls)));
                real.vtep_ctl(&["set-manager", &manager])
                    .expect("vtep-ctl set-manager");
                if let Some(b) = self.max_backoff {
                    let v = format!("max_backoff={}", b.as_millis());
                    real.vtep_ctl(&["set", "Manager", &manager, &v])
                        .expect("vtep-ctl set Manager max_backoff");
                }
                *slot = Some(real);
            }
        }
    }

    /// Real switches learn their MACs (as `vtep-ctl add-ucast-local`) once
    /// their agent has created the logical switch.
    pub async fn learn_real_macs(&self) {
        let ls = logical_switch();
        for sw in &self.switches {
            let SwitchKind::Real(Some(real)) = &sw.kind else {
                continue;
            };
            let d = Deadline::new(format!("{}: logical switch {ls}", sw.name));
            while !real
                .vtep_ctl(&["list-ls"])
                .unwrap_or_default()
                .contains(&ls)
            {
                d.tick(Duration::from_millis(100), || self.logs()).await;
            }
            for mac in &sw.macs {
                real.vtep_ctl(&["add-ucast-local", &ls, mac, &sw.tunnel_ip.to_string()])
                    .expect("add-ucast-local");
            }
        }
    }

    pub async fn agent_status(&self, i: usize) -> Result<AgentStatus, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], AGENT_ADMIN[i]));
        self.agents_rt
            .run(async move {
                let c = tor_agent::admin::client(addr, None)?;
                match tokio::time::timeout(Duration::from_secs(10), c.status()).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("status timed out".to_string()),
                }
            })
            .await
    }

    pub async fn snapshot(&self) -> Result<Snapshot, String> {
        let at = Instant::now();
        let (a, b) = tokio::join!(self.agent_status(0), self.agent_status(1));
        Ok(Snapshot {
            at,
            agents: [a?, b?],
        })
    }

    pub async fn proxy_show(&self, i: usize) -> Result<Show, String> {
        self.proxy_rt[i]
            .run(async move {
                let c = tor_proxy::admin::client(PROXY_ADMIN.parse().unwrap(), None)?;
                match tokio::time::timeout(Duration::from_secs(10), c.show()).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("show timed out".to_string()),
                }
            })
            .await
    }

    /// `drain`, `maint` or `enable` a backend on proxy `i`, as an operator.
    pub async fn proxy_admin(&self, i: usize, verb: &'static str, backend: &str) {
        let backend = backend.to_string();
        let r = self.proxy_rt[i]
            .run(async move {
                let c = tor_proxy::admin::client(PROXY_ADMIN.parse().unwrap(), None)?;
                let r = match verb {
                    "drain" => c.drain(backend).await,
                    "maint" => c.maint(backend).await,
                    "enable" => c.enable(backend).await,
                    other => return Err(format!("unknown verb {other}")),
                };
                r.map(|_| ()).map_err(|e| e.to_string())
            })
            .await;
        r.unwrap_or_else(|e| panic!("{} {verb}: {e}", PROXIES[i]));
    }

    pub async fn wait_proxy(&self, what: &str, i: usize, f: impl Fn(&Show) -> bool) -> Show {
        let d = Deadline::new(format!("{}: {what}", PROXIES[i]));
        loop {
            let last = self.proxy_show(i).await;
            match last {
                Ok(s) if f(&s) => return s,
                other => {
                    d.tick(Duration::from_millis(100), || {
                        format!("last: {other:?}\n{}", self.logs())
                    })
                    .await
                }
            }
        }
    }

    /// Waits until every switch in `expected` (name → agent) is settled on
    /// its agent through proxy `proxy` (see [`Snapshot::settled_on`]).
    pub async fn wait_settled(
        &self,
        what: &str,
        expected: &BTreeMap<String, usize>,
        proxy: usize,
    ) -> Snapshot {
        let d = Deadline::new(what);
        loop {
            let last = self.snapshot().await;
            if let Ok(s) = &last {
                if expected.iter().all(|(n, &a)| s.settled_on(n, a, proxy)) {
                    return s.clone();
                }
            }
            d.tick(Duration::from_millis(100), || {
                let last = match &last {
                    Ok(s) => s.summary(expected.keys()),
                    Err(e) => e.clone(),
                };
                format!("expected {expected:?}\n{last}\n{}", self.logs())
            })
            .await;
        }
    }

    /// Every MAC of every switch in `expected` is a best route at live
    /// preference (100) published by the switch's expected agent alone.
    pub fn routes_on(&self, expected: &BTreeMap<String, usize>) -> bool {
        let best = self.cn.best_routes(Some(VRF));
        self.switches
            .iter()
            .filter_map(|s| expected.get(&s.name).map(|&a| (s, a)))
            .all(|(s, a)| {
                s.macs.iter().all(|m| {
                    best.iter().any(|r| {
                        r.key.mac == *m && r.local_preference == 100 && r.agents == [AGENTS[a]]
                    })
                })
            })
    }

    /// MACs of the lab's switches missing from the control node's best routes.
    pub fn missing_routes(&self) -> Vec<String> {
        let best = self.cn.best_routes(Some(VRF));
        self.switches
            .iter()
            .flat_map(|s| s.macs.iter())
            .filter(|m| !best.iter().any(|r| r.key.mac == **m))
            .cloned()
            .collect()
    }

    /// Each switch's `unknown-dst` points at its expected agent's service node.
    pub fn unknown_dst_on(&self, expected: &BTreeMap<String, usize>) -> bool {
        self.switches
            .iter()
            .filter_map(|s| expected.get(&s.name).map(|&a| (s, a)))
            .all(|(s, a)| s.unknown_dst() == [TSN[a]])
    }

    /// The tail of every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let Some(dir) = &self.dir else {
            return out;
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "log"));
        files.sort();
        for f in files {
            out.push_str(&format!(
                "---- {} (last 40 lines)\n{}\n",
                f.display(),
                tail(&f, 40)
            ));
        }
        out
    }

    /// The current log of a process (for timelines).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}.log"))
    }
}

impl Drop for PairLab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!("{}", self.logs());
        }
        // Processes first, then the in-process switches and runtimes; the
        // namespaces go last (their guards kill anything left inside).
        // keepalived gets SIGTERM first: it then stops and reaps its VRRP
        // child itself (SIGKILLed, the child would be orphaned, and on a
        // host whose init does not reap, it would stay a zombie).
        for k in self.keepalived.iter().flatten() {
            if let Some(pid) = k.pid() {
                super::kill(pid, libc::SIGTERM);
            }
        }
        for k in self.keepalived.iter_mut().flatten() {
            k.stop(Duration::from_secs(3));
        }
        for p in self.proxies.iter_mut().flatten() {
            p.kill();
        }
        for a in &mut self.agents {
            a.kill();
        }
        for s in &mut self.switches {
            match &mut s.kind {
                SwitchKind::Sim(h) => drop(h.take()),
                SwitchKind::Real(r) => drop(r.take()),
            }
        }
        self.cn.shutdown();
        self.sw_rt.clear();
        if panicking && self.keep_files_on_panic {
            if let Some(d) = self.dir.take() {
                let kept = d.keep();
                eprintln!("lab files kept in {}", kept.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_rendered_per_node_and_keeps_its_timers() {
        let bin = Path::new("/opt/bin/tor-proxy");
        for node in 0..2 {
            let conf = Path::new("/lab/p.toml");
            let text = keepalived_conf(KEEPALIVED_SAMPLE, node, bin, conf).unwrap();
            assert_eq!(
                keepalived_value(&text, "router_id").as_deref(),
                Some(PROXIES[node])
            );
            assert_eq!(
                keepalived_value(&text, "priority"),
                Some(PRIORITIES[node].to_string())
            );
            assert_eq!(
                keepalived_value(&text, "unicast_src_ip"),
                Some(PROXY_IPS[node].to_string())
            );
            let peers = &text[text.find("unicast_peer").unwrap()..];
            let peer = peers.lines().nth(1).unwrap().trim();
            assert_eq!(peer, PROXY_IPS[1 - node].to_string());
            assert!(text.contains("script \"/opt/bin/tor-proxy check --config /lab/p.toml\""));
            for key in [
                "advert_int",
                "interval",
                "fall",
                "rise",
                "virtual_router_id",
            ] {
                assert_eq!(
                    keepalived_value(&text, key),
                    keepalived_value(KEEPALIVED_SAMPLE, key),
                    "{key} is the sample's"
                );
            }
            assert_eq!(
                text.lines().count(),
                KEEPALIVED_SAMPLE.lines().count(),
                "lines are replaced, never added or dropped"
            );
        }
    }

    #[test]
    fn a_sample_without_the_expected_lines_is_refused() {
        let bin = Path::new("/b");
        let no_prio: String = KEEPALIVED_SAMPLE
            .lines()
            .filter(|l| !l.trim_start().starts_with("priority"))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = keepalived_conf(&no_prio, 0, bin, bin).unwrap_err();
        assert!(e.contains("priority"), "{e}");
        let e =
            keepalived_conf(&KEEPALIVED_SAMPLE.replace("nopreempt", ""), 0, bin, bin).unwrap_err();
        assert!(e.contains("nopreempt"), "{e}");
    }
}
