//! What a simulated switch is: its identity in `Physical_Switch`, its ports,
//! how it is reached (listeners, manager targets, TLS files), and its MAC
//! population. Built in code ([`SwitchSpec::new`], [`SwitchSpec::numbered`])
//! or read from a TOML file ([`SwitchFile`], see `testbed/examples/switch.toml`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ovsdb::transport::{Target, TlsFiles};
use serde::Deserialize;

use super::fdb::{Placement, Population};
use super::mac::Mac;
use super::SwitchError;

/// `Manager.max_backoff` has `minInteger` 1000 in hardware_vtep 1.7.0.
pub const MIN_MAX_BACKOFF: Duration = Duration::from_millis(1000);

/// Populations larger than this do not fit the per-switch MAC blocks that
/// `numbered` and `count` hand out (`base + index · 2^16`).
pub const MAX_NUMBERED_MACS: u32 = 1 << 16;

/// Bounds `count` in a file, so a typo cannot ask for billions of switches.
pub const MAX_COUNT: u32 = 100_000;

/// One simulated switch.
#[derive(Clone, Debug, PartialEq)]
pub struct SwitchSpec {
    /// `Physical_Switch.name`: the name the manager serves it by.
    pub name: String,
    pub description: String,
    pub management_ip: IpAddr,
    /// `Physical_Switch.tunnel_ips`: the VTEP address, and the `dst_ip` of
    /// the locator of every local MAC.
    pub tunnel_ip: IpAddr,
    /// `Physical_Port` names, in the switch's order.
    pub ports: Vec<String>,
    /// Passive targets served (`ptcp:`, `pssl:`, `punix:`).
    pub listen: Vec<Target>,
    /// Targets written to `Global.managers` (`tcp:`/`ssl:` dial out).
    pub managers: Vec<Target>,
    /// `Manager.max_backoff` of every manager row (OVS default: 8 s).
    pub max_backoff: Option<Duration>,
    /// `Manager.inactivity_probe` (OVS default: 5 s; zero disables).
    pub inactivity_probe: Option<Duration>,
    /// Inactivity probe of sessions accepted on the `listen` targets
    /// (default 5 s, as ovsdb-server's; zero disables; `punix:` never probes).
    pub listen_probe: Option<Duration>,
    /// Certificate, key and CA for `ssl:`/`pssl:` targets.
    pub tls: Option<TlsFiles>,
    /// Hosts learnt as soon as bindings exist.
    pub population: Population,
    /// MAC aging time; `None` keeps learnt MACs until unlearnt.
    pub aging: Option<Duration>,
}

/// A locally administered block derived from the name, so that differently
/// named switches get different MACs by default (24 bits of FNV-1a: give
/// switches of one fabric explicit bases, as `numbered` does, when more
/// than a few dozen share it).
pub fn default_mac_base(name: &str) -> Mac {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let v = (0x02u64 << 40) | (u64::from(h & 0x00ff_ffff) << 16);
    Mac::from_u64(v).unwrap_or(Mac::ZERO)
}

impl SwitchSpec {
    /// A switch with two ports (`p0`, `p1`), tunnel and management IP
    /// 127.0.0.1, no listener, no manager and no MACs.
    pub fn new(name: impl Into<String>) -> SwitchSpec {
        let name = name.into();
        SwitchSpec {
            description: format!("simulated ToR switch {name}"),
            population: Population {
                base: default_mac_base(&name),
                count: 0,
                placement: Placement::Spread,
            },
            name,
            management_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            tunnel_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: vec!["p0".into(), "p1".into()],
            listen: Vec::new(),
            managers: Vec::new(),
            max_backoff: None,
            inactivity_probe: None,
            listen_probe: None,
            tls: None,
            aging: None,
        }
    }

    /// Switch number `index` of a fleet: name `{prefix}{index}`, tunnel IP
    /// `10.128.0.1 + index`, management IP `10.64.0.1 + index`, MACs from
    /// `02:00:00:00:00:00 + index · 2^16` (up to 65,536 per switch).
    pub fn numbered(prefix: &str, index: u32) -> SwitchSpec {
        let mut s = SwitchSpec::new(format!("{prefix}{index}"));
        s.tunnel_ip = offset_ip(IpAddr::V4(Ipv4Addr::new(10, 128, 0, 1)), index);
        s.management_ip = offset_ip(IpAddr::V4(Ipv4Addr::new(10, 64, 0, 1)), index);
        s.population.base = numbered_mac_base(index);
        s
    }

    pub fn ports<I, S>(mut self, names: I) -> SwitchSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.ports = names.into_iter().map(Into::into).collect();
        self
    }

    pub fn listen(mut self, target: Target) -> SwitchSpec {
        self.listen.push(target);
        self
    }

    pub fn manager(mut self, target: Target) -> SwitchSpec {
        self.managers.push(target);
        self
    }

    pub fn tls(mut self, files: TlsFiles) -> SwitchSpec {
        self.tls = Some(files);
        self
    }

    pub fn tunnel_ip(mut self, ip: IpAddr) -> SwitchSpec {
        self.tunnel_ip = ip;
        self
    }

    pub fn management_ip(mut self, ip: IpAddr) -> SwitchSpec {
        self.management_ip = ip;
        self
    }

    /// Learn `count` MACs from the current base once bindings exist.
    pub fn macs(mut self, count: u32) -> SwitchSpec {
        self.population.count = count;
        self
    }

    pub fn mac_base(mut self, base: Mac) -> SwitchSpec {
        self.population.base = base;
        self
    }

    pub fn placement(mut self, placement: Placement) -> SwitchSpec {
        self.population.placement = placement;
        self
    }

    pub fn aging(mut self, aging: Option<Duration>) -> SwitchSpec {
        self.aging = aging.filter(|a| !a.is_zero());
        self
    }

    pub fn max_backoff(mut self, d: Duration) -> SwitchSpec {
        self.max_backoff = Some(d);
        self
    }

    pub fn inactivity_probe(mut self, d: Duration) -> SwitchSpec {
        self.inactivity_probe = Some(d);
        self
    }

    pub fn listen_probe(mut self, d: Duration) -> SwitchSpec {
        self.listen_probe = Some(d);
        self
    }

    /// Checks everything the server would otherwise reject later, with a
    /// message naming the switch and the field.
    pub fn validate(&self) -> Result<(), SwitchError> {
        let bad = |field: &str, reason: String| SwitchError::Spec {
            switch: self.name.clone(),
            reason: format!("{field}: {reason}"),
        };
        if self.name.is_empty() {
            return Err(bad("name", "must not be empty".into()));
        }
        if self.ports.len() > usize::from(u16::MAX) {
            return Err(bad("ports", "at most 65,535 ports".into()));
        }
        for (i, p) in self.ports.iter().enumerate() {
            if p.is_empty() {
                return Err(bad("ports", "a port name is empty".into()));
            }
            if self.ports[..i].contains(p) {
                return Err(bad("ports", format!("port {p} is listed twice")));
            }
        }
        for t in &self.listen {
            if !t.is_passive() {
                return Err(bad(
                    "listen",
                    format!("{t} is an active target (use ptcp:, pssl: or punix:)"),
                ));
            }
        }
        for t in &self.managers {
            if matches!(t, Target::Unix(_) | Target::PUnix(_)) {
                return Err(bad(
                    "managers",
                    format!("{t}: managers are tcp:, ssl:, ptcp: or pssl:"),
                ));
            }
        }
        let needs_tls = self
            .listen
            .iter()
            .chain(&self.managers)
            .find(|t| t.uses_tls());
        if let (Some(t), None) = (needs_tls, &self.tls) {
            return Err(bad(
                "tls",
                format!("{t} needs a certificate, a private key and a CA certificate"),
            ));
        }
        if let Some(f) = &self.tls {
            for (what, p) in [("cert", &f.cert), ("key", &f.key), ("ca", &f.ca)] {
                if !p.is_file() {
                    return Err(bad("tls", format!("{what} {} is not a file", p.display())));
                }
            }
        }
        if let Some(b) = self.max_backoff {
            if b < MIN_MAX_BACKOFF {
                return Err(bad(
                    "max_backoff",
                    format!(
                        "{} ms is below the schema's minimum of 1000 ms",
                        b.as_millis()
                    ),
                ));
            }
        }
        self.population
            .validate()
            .map_err(|e| bad("macs", e.to_string()))?;
        Ok(())
    }
}

/// `base + n` for IPv4 and IPv6 (wrapping within the family).
pub fn offset_ip(base: IpAddr, n: u32) -> IpAddr {
    match base {
        IpAddr::V4(v) => IpAddr::V4(Ipv4Addr::from(u32::from(v).wrapping_add(n))),
        IpAddr::V6(v) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v).wrapping_add(u128::from(n)),
        )),
    }
}

/// `02:00:00:00:00:00 + index · 2^16`.
pub fn numbered_mac_base(index: u32) -> Mac {
    Mac::from_u64((0x02u64 << 40) | (u64::from(index) << 16)).unwrap_or(Mac::ZERO)
}

/// A target with its port moved by `n` (ports 0 and unix paths unchanged).
fn offset_target(t: &Target, n: u32) -> Result<Target, String> {
    let bump = |a: &SocketAddr| -> Result<SocketAddr, String> {
        if a.port() == 0 {
            return Ok(*a);
        }
        let p = u32::from(a.port()) + n;
        let p = u16::try_from(p).map_err(|_| format!("{t} + {n} is beyond port 65535"))?;
        Ok(SocketAddr::new(a.ip(), p))
    };
    Ok(match t {
        Target::PTcp(a) => Target::PTcp(bump(a)?),
        Target::PSsl(a) => Target::PSsl(bump(a)?),
        Target::PUnix(p) if n > 0 => {
            let mut s = p.as_os_str().to_owned();
            s.push(format!(".{n}"));
            Target::PUnix(PathBuf::from(s))
        }
        other => other.clone(),
    })
}

/// TLS files as written in the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl From<&TlsSection> for TlsFiles {
    fn from(t: &TlsSection) -> TlsFiles {
        TlsFiles {
            cert: t.cert.clone(),
            key: t.key.clone(),
            ca: t.ca.clone(),
        }
    }
}

/// One `[[switch]]` entry; `count` > 1 makes that many numbered copies.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSection {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tunnel_ip: Option<IpAddr>,
    #[serde(default)]
    pub management_ip: Option<IpAddr>,
    #[serde(default)]
    pub ports: Option<Vec<String>>,
    #[serde(default)]
    pub listen: Vec<String>,
    #[serde(default)]
    pub managers: Vec<String>,
    #[serde(default)]
    pub max_backoff_ms: Option<u64>,
    #[serde(default)]
    pub inactivity_probe_ms: Option<u64>,
    #[serde(default)]
    pub listen_inactivity_probe_ms: Option<u64>,
    #[serde(default)]
    pub macs: u32,
    #[serde(default)]
    pub mac_base: Option<Mac>,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub aging_secs: Option<f64>,
    #[serde(default)]
    pub tls: Option<TlsSection>,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// A whole `testbed switch --config FILE`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchFile {
    /// Admin API address (loopback only).
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    /// TLS files for every switch without its own.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    #[serde(default, rename = "switch")]
    pub switches: Vec<SwitchSection>,
}

/// Parses a target, naming the switch and the field on error.
pub fn parse_target(switch: &str, field: &str, s: &str) -> Result<Target, SwitchError> {
    s.parse()
        .map_err(|e: ovsdb::transport::TargetError| SwitchError::Spec {
            switch: switch.to_string(),
            reason: format!("{field}: {e}"),
        })
}

impl SwitchFile {
    pub fn from_toml(text: &str) -> Result<SwitchFile, SwitchError> {
        toml::from_str(text).map_err(|e| SwitchError::Config(e.to_string()))
    }

    pub fn load(path: &Path) -> Result<SwitchFile, SwitchError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SwitchError::Config(format!("reading {}: {e}", path.display())))?;
        SwitchFile::from_toml(&text)
            .map_err(|e| SwitchError::Config(format!("{}: {e}", path.display())))
    }

    /// Every switch the file describes, validated; names are unique.
    pub fn specs(&self) -> Result<Vec<SwitchSpec>, SwitchError> {
        let mut out: Vec<SwitchSpec> = Vec::new();
        for sec in &self.switches {
            if sec.count == 0 {
                continue;
            }
            if sec.count > MAX_COUNT {
                return Err(SwitchError::Spec {
                    switch: sec.name.clone(),
                    reason: format!("count: at most {MAX_COUNT}"),
                });
            }
            if sec.count > 1 && sec.macs > MAX_NUMBERED_MACS {
                return Err(SwitchError::Spec {
                    switch: sec.name.clone(),
                    reason: format!("macs: at most {MAX_NUMBERED_MACS} per switch when count > 1"),
                });
            }
            for i in 0..sec.count {
                out.push(self.expand(sec, i)?);
            }
        }
        let mut names: Vec<&str> = out.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(SwitchError::Config(format!(
                "switch name {} appears twice",
                w[0]
            )));
        }
        Ok(out)
    }

    fn expand(&self, sec: &SwitchSection, i: u32) -> Result<SwitchSpec, SwitchError> {
        let many = sec.count > 1;
        let name = if many {
            format!("{}{i}", sec.name)
        } else {
            sec.name.clone()
        };
        let mut s = SwitchSpec::new(name.clone());
        if let Some(d) = &sec.description {
            s.description = d.clone();
        }
        if let Some(ip) = sec.tunnel_ip {
            s.tunnel_ip = offset_ip(ip, i);
            s.management_ip = s.tunnel_ip;
        }
        if let Some(ip) = sec.management_ip {
            s.management_ip = offset_ip(ip, i);
        }
        if let Some(p) = &sec.ports {
            s.ports = p.clone();
        }
        for t in &sec.listen {
            let t = parse_target(&name, "listen", t)?;
            let t = offset_target(&t, i).map_err(|reason| SwitchError::Spec {
                switch: name.clone(),
                reason: format!("listen: {reason}"),
            })?;
            s.listen.push(t);
        }
        for t in &sec.managers {
            s.managers.push(parse_target(&name, "managers", t)?);
        }
        s.max_backoff = sec.max_backoff_ms.map(Duration::from_millis);
        s.inactivity_probe = sec.inactivity_probe_ms.map(Duration::from_millis);
        s.listen_probe = sec.listen_inactivity_probe_ms.map(Duration::from_millis);
        s.population.count = sec.macs;
        s.population.placement = sec.placement;
        s.population.base = match (sec.mac_base, many) {
            (Some(b), false) => b,
            (Some(b), true) => {
                b.checked_add(u64::from(i) << 16)
                    .ok_or_else(|| SwitchError::Spec {
                        switch: name.clone(),
                        reason: "mac_base: the numbered blocks run past ff:ff:ff:ff:ff:ff".into(),
                    })?
            }
            (None, false) => default_mac_base(&name),
            (None, true) => numbered_mac_base(i),
        };
        if let Some(secs) = sec.aging_secs {
            if !(secs.is_finite() && secs >= 0.0) {
                return Err(SwitchError::Spec {
                    switch: name,
                    reason: "aging_secs: must be a non-negative number".into(),
                });
            }
            s = s.aging(Some(Duration::from_secs_f64(secs)));
        }
        s.tls = sec.tls.as_ref().or(self.tls.as_ref()).map(TlsFiles::from);
        s.validate()?;
        Ok(s)
    }
}
