//! The convergence invariants, as pure functions of what the runner read:
//!
//! 1. **Mastership**: at most one agent reports a switch active; once settled exactly one,
//!    in state `active` (takeover done).
//! 2. **Switch database = desired state**: the logical switches (one per network bound on the
//!    switch, `tunnel_key` = VNI), the port VLAN bindings, the remote MACs (every other
//!    switch's local MACs in that network, toward its tunnel IP; nothing else), and one
//!    `unknown-dst` row per logical switch whose locator is the active agent's `tsn_ip`.
//! 3. **Control node routes = the switches' local MACs**: per network (VRF), one MAC route per
//!    local MAC, next hop the switch's tunnel IP, at live preference, selected from the
//!    switch's active agent; no route for a MAC no switch has; a broadcast route per
//!    (switch, network).
//! 4. **Redundancy**: every other agent configured for the switch that answers and has the
//!    control node's session up also holds its HA-stale shadow of each of those routes, so
//!    the next fault finds them: a restarted standby has not recovered until it has.
//!
//! Each violation names the switch, agent or control node and shows a few examples; the
//! HA-stale continuity check (nothing absent during a switchover) is in
//! [`super::timeline`], as it needs the route history, not one snapshot.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tf_xmpp::enet::preference;

use crate::control_node::Fabric;

use super::layout::vn_uuid;
use super::snapshot::{MacRow, SwitchSnapshot};

const UNKNOWN_DST: &str = "unknown-dst";
const BROADCAST: &str = "ff:ff:ff:ff:ff:ff";
/// Examples quoted per violation.
const EXAMPLES: usize = 3;

/// A network as the switches and the control node see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VnModel {
    pub name: String,
    pub vrf: String,
    pub vni: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SwitchModel {
    pub tunnel_ip: String,
    /// Port → VLAN → logical switch name.
    pub bindings: BTreeMap<String, BTreeMap<i64, String>>,
}

impl SwitchModel {
    /// The logical switches the switch should have (its bound networks).
    pub fn logical_switches(&self) -> BTreeSet<&str> {
        self.bindings
            .values()
            .flat_map(|m| m.values().map(String::as_str))
            .collect()
    }
}

/// The desired configuration, from the fabric the control node serves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FabricModel {
    /// Logical switch name (`Contrail-<vn uuid>`) → network.
    pub vns: BTreeMap<String, VnModel>,
    pub switches: BTreeMap<String, SwitchModel>,
}

impl FabricModel {
    pub fn from_fabric(f: &Fabric) -> FabricModel {
        let mut m = FabricModel::default();
        let mut ls_of_fq = BTreeMap::new();
        for vn in &f.virtual_networks {
            let Some(vni) = vn.effective_vni(f.global.vxlan_mode) else {
                continue;
            };
            let ls = format!("Contrail-{}", vn_uuid(vn));
            ls_of_fq.insert(vn.fq_name(), ls.clone());
            m.vns.insert(
                ls,
                VnModel {
                    name: vn.fq_name(),
                    vrf: vn.vrf_name(),
                    vni,
                },
            );
        }
        for pr in &f.physical_routers {
            let mut sm = SwitchModel {
                tunnel_ip: pr.dataplane_ip.clone(),
                bindings: pr
                    .interfaces
                    .iter()
                    .map(|p| (p.clone(), BTreeMap::new()))
                    .collect(),
            };
            for b in f.bindings.iter().filter(|b| b.physical_router == pr.name) {
                let Ok(vn) = f.find_vn(&b.virtual_network) else {
                    continue;
                };
                if let Some(ls) = ls_of_fq.get(&vn.fq_name()) {
                    sm.bindings
                        .entry(b.interface.clone())
                        .or_default()
                        .insert(i64::from(b.vlan), ls.clone());
                }
            }
            m.switches.insert(pr.name.clone(), sm);
        }
        m
    }

    /// The network of a VRF.
    pub fn ls_of_vrf(&self, vrf: &str) -> Option<&str> {
        self.vns
            .iter()
            .find(|(_, v)| v.vrf == vrf)
            .map(|(ls, _)| ls.as_str())
    }
}

/// One switch as an agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentSwitchView {
    pub active: bool,
    pub state: String,
    pub txn_in_flight: usize,
    pub stale_rows_waiting: usize,
}

/// An agent as the runner saw it (its admin API status, or unreachable).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentView {
    pub name: String,
    pub tsn_ip: String,
    /// Answered its admin API (a crashed or hung agent does not).
    pub reachable: bool,
    pub switches: BTreeMap<String, AgentSwitchView>,
    /// Per control node: session up.
    pub cn_up: Vec<bool>,
}

/// A control node's selected route for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnRoute {
    pub vrf: String,
    pub tag: u32,
    pub mac: String,
    pub address: String,
    pub next_hops: Vec<String>,
    pub local_preference: u32,
    pub agents: Vec<String>,
    /// Agents with an HA-stale path (shadow) for the key.
    pub standby: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    DualActive,
    NoActive,
    NotSettled,
    Agent,
    LogicalSwitch,
    Binding,
    RemoteMac,
    UnknownDst,
    Route,
    Continuity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: Kind,
    /// The switch, agent or control node concerned.
    pub subject: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}

fn v(kind: Kind, subject: &str, message: String) -> Violation {
    Violation {
        kind,
        subject: subject.to_string(),
        message,
    }
}

/// Everything one check reads.
pub struct CheckInput<'a> {
    pub model: &'a FabricModel,
    pub switches: &'a [SwitchSnapshot],
    pub agents: &'a [AgentView],
    /// Per control node: its selected routes.
    pub control_nodes: &'a [Vec<CnRoute>],
}

#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub violations: Vec<Violation>,
    /// Switch → its one active agent (when exactly one).
    pub active: BTreeMap<String, String>,
    /// Facts worth reporting that are not violations.
    pub notes: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Switch → reachable agents reporting it active.
pub fn actives(agents: &[AgentView]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in agents.iter().filter(|a| a.reachable) {
        for (sw, s) in &a.switches {
            if s.active {
                out.entry(sw.clone()).or_default().push(a.name.clone());
            }
        }
    }
    out
}

fn examples<T: std::fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().take(EXAMPLES).map(|i| i.to_string()).collect();
    if items.len() > EXAMPLES {
        format!("{}, …", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

impl std::fmt::Display for MacRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}", self.mac, self.ip)
    }
}

/// Where each MAC of each logical switch is local: LS → MAC → [(switch, locator IP)].
type Locals<'a> = BTreeMap<&'a str, BTreeMap<&'a str, Vec<(&'a str, &'a str)>>>;

fn locals<'a>(model: &FabricModel, switches: &'a [SwitchSnapshot]) -> Locals<'a> {
    let mut out: Locals<'a> = BTreeMap::new();
    for s in switches {
        let wanted = model
            .switches
            .get(&s.name)
            .map(|m| m.logical_switches())
            .unwrap_or_default();
        for r in &s.local {
            // Rows in a logical switch the switch should not have are stale, not routes.
            if wanted.contains(r.ls.as_str()) {
                out.entry(r.ls.as_str())
                    .or_default()
                    .entry(r.mac.as_str())
                    .or_default()
                    .push((s.name.as_str(), r.ip.as_str()));
            }
        }
    }
    out
}

pub fn check(input: &CheckInput<'_>) -> Verdict {
    let mut verdict = Verdict::default();
    check_agents(input, &mut verdict);
    let locals = locals(input.model, input.switches);
    for (ls, macs) in &locals {
        let dup: Vec<String> = macs
            .iter()
            .filter(|(_, at)| at.len() > 1)
            .map(|(m, at)| {
                let names: Vec<&str> = at.iter().map(|x| x.0).collect();
                format!("{m} on {}", names.join("+"))
            })
            .collect();
        if !dup.is_empty() {
            verdict.notes.push(format!(
                "{ls}: {} MACs are local on more than one switch (not checked): {}",
                dup.len(),
                examples(&dup)
            ));
        }
    }
    for s in input.switches {
        check_switch(input, s, &locals, &mut verdict);
    }
    for (i, routes) in input.control_nodes.iter().enumerate() {
        check_routes(input, i, routes, &locals, &mut verdict);
    }
    verdict
}

fn check_agents(input: &CheckInput<'_>, verdict: &mut Verdict) {
    if !input.agents.iter().any(|a| a.reachable) {
        verdict.violations.push(v(
            Kind::Agent,
            "agents",
            "no agent answers its admin API".into(),
        ));
    }
    for a in input.agents.iter().filter(|a| a.reachable) {
        for (i, up) in a.cn_up.iter().enumerate() {
            if !up {
                verdict.violations.push(v(
                    Kind::Agent,
                    &a.name,
                    format!("its session to control node {i} is down"),
                ));
            }
        }
    }
    let act = actives(input.agents);
    for name in input.model.switches.keys() {
        let holders = act.get(name).cloned().unwrap_or_default();
        match holders.as_slice() {
            [] => verdict.violations.push(v(
                Kind::NoActive,
                name,
                "no agent reports this switch active".into(),
            )),
            [one] => {
                verdict.active.insert(name.clone(), one.clone());
                let st = input
                    .agents
                    .iter()
                    .find(|a| &a.name == one)
                    .and_then(|a| a.switches.get(name));
                if let Some(st) = st {
                    if st.state != "active" {
                        verdict.violations.push(v(
                            Kind::NotSettled,
                            name,
                            format!("{one} holds it in state {:?} (takeover not done)", st.state),
                        ));
                    }
                }
            }
            many => verdict.violations.push(v(
                Kind::DualActive,
                name,
                format!(
                    "{} agents report it active: {}",
                    many.len(),
                    many.join(", ")
                ),
            )),
        }
    }
}

fn check_switch(
    input: &CheckInput<'_>,
    s: &SwitchSnapshot,
    locals: &Locals<'_>,
    verdict: &mut Verdict,
) {
    let name = s.name.as_str();
    let Some(model) = input.model.switches.get(name) else {
        verdict.violations.push(v(
            Kind::LogicalSwitch,
            name,
            "switch is not in the fabric".into(),
        ));
        return;
    };
    let wanted = model.logical_switches();
    // Logical switches and their VNIs.
    for ls in &wanted {
        let vni = input.model.vns.get(*ls).map(|v| i64::from(v.vni));
        match s.logical_switches.get(*ls) {
            None => verdict.violations.push(v(
                Kind::LogicalSwitch,
                name,
                format!("logical switch {ls} is missing"),
            )),
            Some(k) if *k != vni => verdict.violations.push(v(
                Kind::LogicalSwitch,
                name,
                format!(
                    "logical switch {ls} has tunnel_key {}, expected {}",
                    k.map_or("none".into(), |k| k.to_string()),
                    vni.map_or("none".into(), |k| k.to_string())
                ),
            )),
            Some(_) => {}
        }
    }
    let stale: Vec<&String> = s
        .logical_switches
        .keys()
        .filter(|l| !wanted.contains(l.as_str()))
        .collect();
    if !stale.is_empty() {
        verdict.violations.push(v(
            Kind::LogicalSwitch,
            name,
            format!(
                "{} stale logical switches: {}",
                stale.len(),
                examples(&stale)
            ),
        ));
    }
    for d in &s.duplicate_ls {
        verdict.violations.push(v(
            Kind::LogicalSwitch,
            name,
            format!("logical switch name {d} is used by more than one row"),
        ));
    }
    // Bindings.
    for (port, want) in &model.bindings {
        match s.ports.get(port) {
            None => verdict.violations.push(v(
                Kind::Binding,
                name,
                format!("port {port} (in the fabric) does not exist on the switch"),
            )),
            Some(have) if have != want => verdict.violations.push(v(
                Kind::Binding,
                name,
                format!("port {port} vlan_bindings are {have:?}, expected {want:?}"),
            )),
            Some(_) => {}
        }
    }
    for (port, have) in &s.ports {
        if !model.bindings.contains_key(port) && !have.is_empty() {
            verdict.violations.push(v(
                Kind::Binding,
                name,
                format!("port {port} is not in the fabric but has vlan_bindings {have:?}"),
            ));
        }
    }
    // Remote MACs: every other switch's local MACs of each bound network.
    let mut want_remote: BTreeSet<MacRow> = BTreeSet::new();
    let mut skip: BTreeSet<(&str, &str)> = BTreeSet::new();
    for ls in &wanted {
        let Some(macs) = locals.get(ls) else { continue };
        for (mac, at) in macs {
            let here = at.iter().any(|(sw, _)| *sw == name);
            let elsewhere: Vec<&(&str, &str)> = at.iter().filter(|(sw, _)| *sw != name).collect();
            if at.len() > 1 {
                skip.insert((ls, mac));
                continue;
            }
            if !here {
                if let Some((_, ip)) = elsewhere.first() {
                    want_remote.insert(MacRow {
                        ls: ls.to_string(),
                        mac: mac.to_string(),
                        ip: ip.to_string(),
                    });
                }
            }
        }
    }
    let mut have_remote: BTreeSet<MacRow> = BTreeSet::new();
    let mut dup_rows = Vec::new();
    for r in &s.remote {
        if skip.contains(&(r.ls.as_str(), r.mac.as_str())) {
            continue;
        }
        if !have_remote.insert(r.clone()) {
            dup_rows.push(r.clone());
        }
    }
    let missing: Vec<&MacRow> = want_remote.difference(&have_remote).collect();
    let extra: Vec<&MacRow> = have_remote.difference(&want_remote).collect();
    let per_ls = |rows: &[&MacRow]| -> String {
        let mut by: BTreeMap<&str, Vec<&MacRow>> = BTreeMap::new();
        for r in rows {
            by.entry(r.ls.as_str()).or_default().push(r);
        }
        by.iter()
            .map(|(ls, rs)| format!("{} in {ls} (e.g. {})", rs.len(), examples(rs)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if !missing.is_empty() {
        verdict.violations.push(v(
            Kind::RemoteMac,
            name,
            format!(
                "{} remote MACs missing: {}",
                missing.len(),
                per_ls(&missing)
            ),
        ));
    }
    if !extra.is_empty() {
        verdict.violations.push(v(
            Kind::RemoteMac,
            name,
            format!(
                "{} stale or wrong remote MAC rows: {}",
                extra.len(),
                per_ls(&extra)
            ),
        ));
    }
    if !dup_rows.is_empty() {
        verdict.violations.push(v(
            Kind::RemoteMac,
            name,
            format!(
                "{} duplicate remote MAC rows, e.g. {}",
                dup_rows.len(),
                examples(&dup_rows)
            ),
        ));
    }
    // unknown-dst toward the active agent's service node.
    let tsn = verdict.active.get(name).and_then(|a| {
        input
            .agents
            .iter()
            .find(|x| &x.name == a)
            .map(|x| (a.clone(), x.tsn_ip.clone()))
    });
    for ls in &wanted {
        let rows: Vec<_> = s
            .mcast_remote
            .iter()
            .filter(|r| r.ls == *ls && r.mac == UNKNOWN_DST)
            .collect();
        match (rows.as_slice(), &tsn) {
            ([], _) => verdict.violations.push(v(
                Kind::UnknownDst,
                name,
                format!("no unknown-dst row in {ls}"),
            )),
            ([one], Some((agent, ip))) if one.ips != vec![ip.clone()] => {
                verdict.violations.push(v(
                    Kind::UnknownDst,
                    name,
                    format!(
                        "unknown-dst in {ls} points at {:?}, expected [{ip}] ({agent}, the active agent)",
                        one.ips
                    ),
                ))
            }
            ([_], _) => {}
            (many, _) => verdict.violations.push(v(
                Kind::UnknownDst,
                name,
                format!("{} unknown-dst rows in {ls}", many.len()),
            )),
        }
    }
    let stray: Vec<String> = s
        .mcast_remote
        .iter()
        .filter(|r| !wanted.contains(r.ls.as_str()) || r.mac != UNKNOWN_DST)
        .map(|r| format!("{} in {}", r.mac, r.ls))
        .collect();
    if !stray.is_empty() {
        verdict.violations.push(v(
            Kind::UnknownDst,
            name,
            format!(
                "{} stale Mcast_Macs_Remote rows: {}",
                stray.len(),
                examples(&stray)
            ),
        ));
    }
}

fn check_routes(
    input: &CheckInput<'_>,
    index: usize,
    routes: &[CnRoute],
    locals: &Locals<'_>,
    verdict: &mut Verdict,
) {
    let subject = format!("control node {index}");
    // (vrf, tag, mac) → (switch, next hop)
    let mut want: BTreeMap<(&str, u32, &str), (&str, &str)> = BTreeMap::new();
    let mut skip: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (ls, macs) in locals {
        let Some(vn) = input.model.vns.get(*ls) else {
            continue;
        };
        for (mac, at) in macs {
            match at.as_slice() {
                [(sw, ip)] => {
                    want.insert((vn.vrf.as_str(), vn.vni, mac), (sw, ip));
                }
                _ => {
                    skip.insert((vn.vrf.as_str(), mac));
                }
            }
        }
    }
    // (vrf, tag, "ip/32") of the broadcast routes wanted: one per (switch, bound network).
    let mut want_bum: BTreeSet<(String, u32, String)> = BTreeSet::new();
    for (sw, m) in &input.model.switches {
        if !input.switches.iter().any(|s| &s.name == sw) {
            continue;
        }
        for ls in m.logical_switches() {
            if let Some(vn) = input.model.vns.get(ls) {
                want_bum.insert((vn.vrf.clone(), vn.vni, format!("{}/32", m.tunnel_ip)));
            }
        }
    }
    let mut missing = Vec::new();
    let mut stale = Vec::new();
    let mut wrong_nh = Vec::new();
    let mut not_live = Vec::new();
    let mut wrong_agent = Vec::new();
    let mut unshadowed = Vec::new();
    let mut seen: BTreeSet<(&str, u32, &str)> = BTreeSet::new();
    let mut have_bum: BTreeSet<(String, u32, String)> = BTreeSet::new();
    for r in routes {
        if r.mac == BROADCAST {
            have_bum.insert((r.vrf.clone(), r.tag, r.address.clone()));
            continue;
        }
        if skip.contains(&(r.vrf.as_str(), r.mac.as_str())) {
            continue;
        }
        let key = (r.vrf.as_str(), r.tag, r.mac.as_str());
        seen.insert(key);
        let Some((sw, ip)) = want.get(&key) else {
            stale.push(format!("{}/{} via {:?}", r.tag, r.mac, r.next_hops));
            continue;
        };
        if r.next_hops != vec![ip.to_string()] {
            wrong_nh.push(format!(
                "{}/{} via {:?}, expected {ip} ({sw})",
                r.tag, r.mac, r.next_hops
            ));
        }
        if r.local_preference < preference::LOW {
            not_live.push(format!(
                "{}/{} ({sw}) at local-preference {}",
                r.tag, r.mac, r.local_preference
            ));
        } else if let Some(a) = verdict.active.get(*sw) {
            if !r.agents.iter().any(|x| x == a) {
                wrong_agent.push(format!(
                    "{}/{} ({sw}) selected from {:?}, not from {a} (its active agent)",
                    r.tag, r.mac, r.agents
                ));
            }
            let missing_shadow = input.agents.iter().find(|b| {
                &b.name != a
                    && b.reachable
                    && b.switches.contains_key(*sw)
                    && b.cn_up.get(index) == Some(&true)
                    && !r.standby.contains(&b.name)
            });
            if let Some(b) = missing_shadow {
                unshadowed.push(format!("{}/{} ({sw}) by {}", r.tag, r.mac, b.name));
            }
        }
    }
    for (key, (sw, ip)) in &want {
        if !seen.contains(key) {
            missing.push(format!("{}/{} -> {ip} ({sw})", key.1, key.2));
        }
    }
    let mut report = |what: &str, items: Vec<String>| {
        if !items.is_empty() {
            verdict.violations.push(v(
                Kind::Route,
                &subject,
                format!("{} {what}: {}", items.len(), examples(&items)),
            ));
        }
    };
    report("MAC routes missing (local on a switch)", missing);
    report("stale MAC routes (no switch has the MAC)", stale);
    report("MAC routes with a wrong next hop", wrong_nh);
    report("MAC routes only at HA-stale preference", not_live);
    report("MAC routes not selected from the active agent", wrong_agent);
    report(
        "MAC routes without the standby's HA-stale shadow",
        unshadowed,
    );
    let bum_missing: Vec<String> = want_bum
        .difference(&have_bum)
        .map(|(vrf, tag, a)| format!("{vrf} {tag}/{a}"))
        .collect();
    let bum_stale: Vec<String> = have_bum
        .difference(&want_bum)
        .map(|(vrf, tag, a)| format!("{vrf} {tag}/{a}"))
        .collect();
    report("broadcast routes missing", bum_missing);
    report("stale broadcast routes", bum_stale);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::layout;
    use crate::scenario::snapshot::McastRow;
    use crate::scenario::spec::Scenario;

    /// Two switches in one group with two networks; each has one local MAC per network.
    struct World {
        model: FabricModel,
        switches: Vec<SwitchSnapshot>,
        agents: Vec<AgentView>,
        routes: Vec<CnRoute>,
    }

    fn world() -> World {
        let s = Scenario::from_toml(
            "name = \"t\"\n[topology]\nswitches = 2\n[[step]]\ndo = \"converge\"",
        )
        .unwrap();
        let l = layout::build(&s);
        let model = FabricModel::from_fabric(&l.fabric);
        let ls: Vec<String> = model.vns.keys().cloned().collect();
        let vns: Vec<VnModel> = model.vns.values().cloned().collect();
        let mac = |sw: usize, j: usize| format!("02:00:00:0{sw}:00:0{j}");
        let ip = |sw: usize| format!("10.128.0.{}", sw + 1);
        let mut switches = Vec::new();
        let mut routes = Vec::new();
        for sw in 0..2 {
            let name = format!("sw0{}", sw + 1);
            let m = &model.switches[&name];
            let mut snap = SwitchSnapshot {
                name: name.clone(),
                ports: m.bindings.clone(),
                ..SwitchSnapshot::default()
            };
            for (j, l) in ls.iter().enumerate() {
                snap.logical_switches
                    .insert(l.clone(), Some(i64::from(vns[j].vni)));
                snap.local.push(MacRow {
                    ls: l.clone(),
                    mac: mac(sw, j),
                    ip: ip(sw),
                });
                snap.remote.push(MacRow {
                    ls: l.clone(),
                    mac: mac(1 - sw, j),
                    ip: ip(1 - sw),
                });
                snap.mcast_remote.push(McastRow {
                    ls: l.clone(),
                    mac: "unknown-dst".into(),
                    ips: vec![format!("192.0.2.1{sw}")],
                });
                routes.push(CnRoute {
                    vrf: vns[j].vrf.clone(),
                    tag: vns[j].vni,
                    mac: mac(sw, j),
                    address: "0.0.0.0/32".into(),
                    next_hops: vec![ip(sw)],
                    local_preference: 100,
                    agents: vec![layout::build(&s).agents[sw].name.clone()],
                    standby: vec![layout::build(&s).agents[1 - sw].name.clone()],
                });
                routes.push(CnRoute {
                    vrf: vns[j].vrf.clone(),
                    tag: vns[j].vni,
                    mac: BROADCAST.into(),
                    address: format!("{}/32", ip(sw)),
                    next_hops: vec![ip(sw)],
                    local_preference: 100,
                    agents: vec!["agent-a".into(), "agent-b".into()],
                    standby: Vec::new(),
                });
            }
            switches.push(snap);
        }
        // sw01 on agent-a, sw02 on agent-b.
        let agents = (0..2)
            .map(|i| AgentView {
                name: l.agents[i].name.clone(),
                tsn_ip: l.agents[i].tsn_ip.to_string(),
                reachable: true,
                switches: (0..2)
                    .map(|sw| {
                        (
                            format!("sw0{}", sw + 1),
                            AgentSwitchView {
                                active: sw == i,
                                state: if sw == i { "active" } else { "standby" }.into(),
                                ..AgentSwitchView::default()
                            },
                        )
                    })
                    .collect(),
                cn_up: vec![true],
            })
            .collect();
        World {
            model,
            switches,
            agents,
            routes,
        }
    }

    fn run(w: &World) -> Verdict {
        check(&CheckInput {
            model: &w.model,
            switches: &w.switches,
            agents: &w.agents,
            control_nodes: std::slice::from_ref(&w.routes),
        })
    }

    fn only(w: &World, kind: Kind, want: &str) {
        let verdict = run(w);
        assert!(
            verdict
                .violations
                .iter()
                .any(|x| x.kind == kind && x.to_string().contains(want)),
            "expected {kind:?} mentioning {want:?}, got {:#?}",
            verdict.violations
        );
        assert!(
            verdict.violations.iter().all(|x| x.kind == kind),
            "only {kind:?} expected: {:#?}",
            verdict.violations
        );
    }

    #[test]
    fn a_converged_world_passes() {
        let w = world();
        let verdict = run(&w);
        assert!(verdict.passed(), "{:#?}", verdict.violations);
        assert_eq!(verdict.active["sw01"], "agent-a");
        assert_eq!(verdict.active["sw02"], "agent-b");
    }

    #[test]
    fn mastership_violations() {
        let mut w = world();
        w.agents[1].switches.get_mut("sw01").unwrap().active = true;
        // Two actives: the unknown-dst of sw01 cannot be judged, so only dual-active and the
        // route selection are reported.
        let verdict = run(&w);
        assert!(verdict.violations.iter().any(|x| x.kind == Kind::DualActive
            && x.to_string() == "sw01: 2 agents report it active: agent-a, agent-b"));
        let mut w = world();
        w.agents[0].reachable = false;
        let verdict = run(&w);
        assert!(verdict
            .violations
            .iter()
            .any(|x| x.kind == Kind::NoActive && x.subject == "sw01"));
        let mut w = world();
        w.agents[1].switches.get_mut("sw02").unwrap().state = "auditing".into();
        only(
            &w,
            Kind::NotSettled,
            "agent-b holds it in state \"auditing\"",
        );
        let mut w = world();
        w.agents[0].cn_up = vec![false];
        only(
            &w,
            Kind::Agent,
            "agent-a: its session to control node 0 is down",
        );
    }

    #[test]
    fn switch_database_violations() {
        let mut w = world();
        w.switches[0].remote.pop();
        only(
            &w,
            Kind::RemoteMac,
            "sw01: 1 remote MACs missing: 1 in Contrail-",
        );
        let mut w = world();
        let mut extra = w.switches[0].remote[0].clone();
        extra.mac = "02:99:00:00:00:01".into();
        w.switches[0].remote.push(extra);
        only(&w, Kind::RemoteMac, "1 stale or wrong remote MAC rows");
        let mut w = world();
        w.switches[1].remote[0].ip = "10.9.9.9".into();
        let verdict = run(&w);
        assert_eq!(verdict.violations.len(), 2, "{:#?}", verdict.violations);
        let mut w = world();
        w.switches[0].mcast_remote[0].ips = vec!["192.0.2.11".into()];
        only(
            &w,
            Kind::UnknownDst,
            "points at [\"192.0.2.11\"], expected [192.0.2.10] (agent-a, the active agent)",
        );
        let mut w = world();
        let first = w.switches[0]
            .logical_switches
            .keys()
            .next()
            .unwrap()
            .clone();
        let want = w.switches[0].logical_switches[&first].unwrap_or_default();
        w.switches[0]
            .logical_switches
            .insert(first.clone(), Some(1));
        only(
            &w,
            Kind::LogicalSwitch,
            &format!("{first} has tunnel_key 1, expected {want}"),
        );
        let mut w = world();
        w.switches[1]
            .logical_switches
            .insert("Contrail-gone".into(), Some(9));
        only(
            &w,
            Kind::LogicalSwitch,
            "1 stale logical switches: Contrail-gone",
        );
        let mut w = world();
        w.switches[1].ports.get_mut("p0").unwrap().clear();
        only(&w, Kind::Binding, "port p0 vlan_bindings are {}");
    }

    #[test]
    fn control_node_violations() {
        let mut w = world();
        w.routes.retain(|r| r.mac != "02:00:00:01:00:01");
        only(&w, Kind::Route, "1 MAC routes missing (local on a switch)");
        let mut w = world();
        w.routes[0].local_preference = 1;
        only(&w, Kind::Route, "1 MAC routes only at HA-stale preference");
        let mut w = world();
        w.routes[0].agents = vec!["agent-b".into()];
        only(&w, Kind::Route, "not from agent-a (its active agent)");
        let mut w = world();
        let mut r = w.routes[0].clone();
        r.mac = "02:77:00:00:00:01".into();
        w.routes.push(r);
        only(&w, Kind::Route, "1 stale MAC routes");
        let mut w = world();
        w.routes.retain(|r| r.mac != BROADCAST);
        only(&w, Kind::Route, "4 broadcast routes missing");
        // A standby that answers and is connected must shadow the route...
        let mut w = world();
        w.routes[0].standby.clear();
        only(
            &w,
            Kind::Route,
            "1 MAC routes without the standby's HA-stale shadow",
        );
        // ... unless it is down or cut off from the control node.
        let mut unreachable = world();
        unreachable.routes[0].standby.clear();
        unreachable.agents[1].reachable = false;
        unreachable.agents[1].switches.clear();
        assert!(run(&unreachable)
            .violations
            .iter()
            .all(|v| v.kind != Kind::Route));
        let mut cut_off = world();
        cut_off.routes[0].standby.clear();
        cut_off.agents[1].cn_up = vec![false];
        assert!(run(&cut_off)
            .violations
            .iter()
            .all(|v| v.kind != Kind::Route));
        // A MAC local on two switches is noted, not judged.
        let mut w = world();
        let dup = w.switches[0].local[0].clone();
        w.switches[1].local.push(MacRow {
            ip: "10.128.0.2".into(),
            ..dup
        });
        let verdict = run(&w);
        assert!(verdict.passed(), "{:#?}", verdict.violations);
        assert!(verdict.notes[0].contains("local on more than one switch"));
    }
}
