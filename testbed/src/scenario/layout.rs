//! From a scenario's topology to concrete things: the fabric the control node serves (agents,
//! virtual networks per group of switches, switches with their ports, VLAN bindings), and
//! each switch's addresses and MAC population. Pure and deterministic: the same topology
//! always gives the same names, addresses and MACs.

use std::net::{IpAddr, Ipv4Addr};

use crate::control_node::fabric::derived_uuid;
use crate::control_node::{
    Binding, Fabric, PhysicalRouter, VirtualNetwork, VirtualRouter, VxlanMode,
};
use crate::switch::spec::{numbered_mac_base, offset_ip};
use crate::switch::Mac;

use super::spec::{agent_name, group_count, port_names, real_switch_name, switch_name, Scenario};

/// The project of every generated virtual network.
pub const PROJECT: &str = "scenario";
/// First VLAN; network `j` of a group is VLAN `FIRST_VLAN + j` on port `p{j}`.
pub const FIRST_VLAN: u16 = 100;
/// VNI of network id `n` is `VNI_BASE + n`.
pub const VNI_BASE: u32 = 5000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPlan {
    pub name: String,
    /// The service node IP: the `unknown-dst` locator on the switches it holds.
    pub tsn_ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchPlan {
    pub name: String,
    /// A real `ovsdb-server` (configured with vtep-ctl) instead of a simulated switch.
    pub real: bool,
    pub group: u32,
    pub tunnel_ip: Ipv4Addr,
    pub management_ip: Ipv4Addr,
    pub ports: Vec<String>,
    /// Local MAC `i` is `mac_base + i`.
    pub mac_base: Mac,
    pub macs: u32,
}

impl SwitchPlan {
    pub fn mac(&self, i: u32) -> Option<Mac> {
        (i < self.macs)
            .then(|| self.mac_base.checked_add(u64::from(i)))
            .flatten()
    }
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub fabric: Fabric,
    pub agents: Vec<AgentPlan>,
    pub switches: Vec<SwitchPlan>,
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v) => v,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

/// The generated name of network `j` of group `g`.
pub fn vn_name(group: u32, j: u32) -> String {
    format!("g{group}-vn{j}")
}

/// The VN uuid the control node derives for a network without one (so the runner knows the
/// switch's `Logical_Switch` name, `Contrail-<uuid>`).
pub fn vn_uuid(vn: &VirtualNetwork) -> uuid::Uuid {
    vn.uuid
        .unwrap_or_else(|| derived_uuid("virtual-network", &vn.fq_name()))
}

/// A new network of the scenario's project (for config changes).
pub fn new_vn(name: &str, network_id: u32, vni: u32) -> VirtualNetwork {
    let mut vn = VirtualNetwork {
        name: name.to_string(),
        project: PROJECT.into(),
        domain: "default-domain".into(),
        network_id,
        vni: Some(vni),
        forwarding_mode: Some("l2".into()),
        enabled: true,
        uuid: None,
    };
    vn.uuid = Some(vn_uuid(&vn));
    vn
}

pub fn build(s: &Scenario) -> Layout {
    let t = &s.topology;
    let agents: Vec<AgentPlan> = (0..t.agents)
        .map(|i| AgentPlan {
            name: agent_name(i),
            tsn_ip: Ipv4Addr::new(192, 0, 2, 10 + i as u8),
        })
        .collect();
    let ports = port_names(t);
    let total = t.switches + t.real_switches;
    let group_of = |i: u32| match t.group_size {
        0 => 0,
        g => i / g,
    };
    let mut switches = Vec::new();
    for i in 0..t.switches {
        switches.push(SwitchPlan {
            name: switch_name(i, t.switches),
            real: false,
            group: group_of(i),
            tunnel_ip: v4(offset_ip(IpAddr::V4(Ipv4Addr::new(10, 128, 0, 1)), i)),
            management_ip: v4(offset_ip(IpAddr::V4(Ipv4Addr::new(10, 64, 0, 1)), i)),
            ports: ports.clone(),
            mac_base: numbered_mac_base(i),
            macs: t.macs_per_switch,
        });
    }
    for i in 0..t.real_switches {
        let n = t.switches + i;
        switches.push(SwitchPlan {
            name: real_switch_name(i),
            real: true,
            group: group_of(n),
            tunnel_ip: Ipv4Addr::new(10, 129, 0, 1 + i as u8),
            management_ip: Ipv4Addr::new(10, 65, 0, 1 + i as u8),
            ports: ports.clone(),
            // A block of its own: 02:01:<i>:…
            mac_base: Mac::from_u64((0x0201u64 << 32) | (u64::from(i) << 24)).unwrap_or(Mac::ZERO),
            macs: t.macs_per_switch,
        });
    }
    debug_assert_eq!(switches.len() as u32, total);
    let mut fabric = Fabric {
        global: crate::control_node::fabric::Global {
            vxlan_mode: VxlanMode::Configured,
        },
        ..Fabric::default()
    };
    for a in &agents {
        fabric.virtual_routers.push(VirtualRouter {
            name: a.name.clone(),
            ip: Some(a.tsn_ip.to_string()),
            uuid: None,
        });
    }
    for g in 0..group_count(t) {
        for j in 0..t.vns_per_group {
            let id = g * t.vns_per_group + j + 1;
            fabric
                .virtual_networks
                .push(new_vn(&vn_name(g, j), id, VNI_BASE + id));
        }
    }
    for sw in &switches {
        fabric.physical_routers.push(PhysicalRouter {
            name: sw.name.clone(),
            management_ip: sw.management_ip.to_string(),
            dataplane_ip: sw.tunnel_ip.to_string(),
            tor_agents: agents.iter().map(|a| a.name.clone()).collect(),
            interfaces: sw.ports.clone(),
            uuid: None,
        });
        for j in 0..t.vns_per_group {
            fabric.bindings.push(Binding {
                physical_router: sw.name.clone(),
                interface: format!("p{j}"),
                vlan: FIRST_VLAN + j as u16,
                virtual_network: format!("default-domain:{PROJECT}:{}", vn_name(sw.group, j)),
                mac_addresses: Vec::new(),
                name: None,
            });
        }
    }
    Layout {
        fabric,
        agents,
        switches,
    }
}

/// The next free network id and VNI of a fabric (for networks created by a config change).
pub fn next_network_id(f: &Fabric) -> u32 {
    f.virtual_networks
        .iter()
        .map(|v| v.network_id)
        .max()
        .unwrap_or(0)
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::spec::Scenario;

    #[test]
    fn groups_networks_bindings_and_addresses() {
        let s = Scenario::from_toml(
            r#"
            name = "t"
            [topology]
            switches = 5
            real_switches = 1
            group_size = 3
            vns_per_group = 2
            macs_per_switch = 10
            [[step]]
            do = "converge"
            "#,
        )
        .unwrap();
        let l = build(&s);
        // The fabric is valid as the control node checks it.
        let f = l.fabric.clone().validated().unwrap();
        assert_eq!(f.virtual_routers.len(), 2);
        assert_eq!(f.virtual_networks.len(), 4, "2 groups x 2 networks");
        assert_eq!(f.physical_routers.len(), 6);
        assert_eq!(f.bindings.len(), 12);
        let names: Vec<&str> = l.switches.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["sw01", "sw02", "sw03", "sw04", "sw05", "rsw1"]);
        assert_eq!(l.switches[2].group, 0);
        assert_eq!(l.switches[3].group, 1);
        assert_eq!(l.switches[5].group, 1);
        assert!(l.switches[5].real);
        assert_eq!(l.switches[0].tunnel_ip, Ipv4Addr::new(10, 128, 0, 1));
        assert_eq!(l.switches[5].tunnel_ip, Ipv4Addr::new(10, 129, 0, 1));
        // MAC blocks never overlap.
        let mut all = std::collections::BTreeSet::new();
        for sw in &l.switches {
            for i in 0..sw.macs {
                assert!(all.insert(sw.mac(i).unwrap()), "{} repeats a MAC", sw.name);
            }
        }
        // Binding of sw04 (group 1), network 1: port p1, VLAN 101.
        let b = f
            .bindings
            .iter()
            .find(|b| b.physical_router == "sw04" && b.interface == "p1")
            .unwrap();
        assert_eq!(b.vlan, 101);
        assert_eq!(b.virtual_network, "default-domain:scenario:g1-vn1");
        let vn = f.find_vn("g1-vn1").unwrap();
        assert_eq!(vn.vni, Some(VNI_BASE + 4));
        assert_eq!(
            vn.uuid,
            Some(derived_uuid("virtual-network", &vn.fq_name()))
        );
        assert_eq!(next_network_id(&f), 5);
        assert_eq!(l.agents[1].tsn_ip, Ipv4Addr::new(192, 0, 2, 11));
    }
}
