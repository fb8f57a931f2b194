//! Connection targets in OVS notation: `tcp:IP:PORT`, `ssl:IP:PORT`,
//! `unix:PATH` (active) and `ptcp:PORT[:IP]`, `pssl:PORT[:IP]`, `punix:PATH`
//! (passive). IPv6 addresses go in brackets, as in OVS.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// OVSDB's registered port, the default when a target gives none.
pub const DEFAULT_PORT: u16 = 6640;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Tcp(SocketAddr),
    Ssl(SocketAddr),
    Unix(PathBuf),
    PTcp(SocketAddr),
    PSsl(SocketAddr),
    PUnix(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid target \"{target}\": {reason}")]
pub struct TargetError {
    pub target: String,
    pub reason: String,
}

impl Target {
    /// Passive targets listen; active ones connect.
    pub fn is_passive(&self) -> bool {
        matches!(self, Target::PTcp(_) | Target::PSsl(_) | Target::PUnix(_))
    }

    pub fn uses_tls(&self) -> bool {
        matches!(self, Target::Ssl(_) | Target::PSsl(_))
    }
}

fn parse_host(s: &str) -> Option<IpAddr> {
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// `IP[:PORT]` for active targets.
fn parse_active(rest: &str) -> Result<SocketAddr, String> {
    if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| "unterminated '[' in IPv6 address".to_string())?;
        let ip: IpAddr = host.parse().map_err(|_| format!("bad IP address {host}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("bad port {p}"))?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(format!("unexpected {after}")),
        };
        return Ok(SocketAddr::new(ip, port));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().map_err(|_| format!("bad port {p}"))?),
        _ => (rest, DEFAULT_PORT),
    };
    let ip = parse_host(host).ok_or_else(|| format!("bad IP address {host}"))?;
    Ok(SocketAddr::new(ip, port))
}

/// `[PORT][:IP]` for passive targets; the address defaults to all IPv4.
fn parse_passive(rest: &str) -> Result<SocketAddr, String> {
    let (port, host) = match rest.split_once(':') {
        Some((p, h)) => (p, Some(h)),
        None => (rest, None),
    };
    let port = if port.is_empty() {
        DEFAULT_PORT
    } else {
        port.parse().map_err(|_| format!("bad port {port}"))?
    };
    let ip = match host {
        Some(h) => parse_host(h).ok_or_else(|| format!("bad IP address {h}"))?,
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    Ok(SocketAddr::new(ip, port))
}

impl FromStr for Target {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Target, TargetError> {
        let fail = |reason: String| TargetError {
            target: s.to_string(),
            reason,
        };
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| fail("expected METHOD:ADDRESS".into()))?;
        let path = |rest: &str| -> Result<PathBuf, TargetError> {
            if rest.is_empty() {
                Err(fail("empty socket path".into()))
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        match kind {
            "tcp" => parse_active(rest).map(Target::Tcp).map_err(fail),
            "ssl" => parse_active(rest).map(Target::Ssl).map_err(fail),
            "unix" => path(rest).map(Target::Unix),
            "ptcp" => parse_passive(rest).map(Target::PTcp).map_err(fail),
            "pssl" => parse_passive(rest).map(Target::PSsl).map_err(fail),
            "punix" => path(rest).map(Target::PUnix),
            other => Err(fail(format!(
                "unknown method {other} (expected tcp, ssl, unix, ptcp, pssl or punix)"
            ))),
        }
    }
}

fn fmt_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "tcp:{}:{}", fmt_host(a.ip()), a.port()),
            Target::Ssl(a) => write!(f, "ssl:{}:{}", fmt_host(a.ip()), a.port()),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
            Target::PTcp(a) => write!(f, "ptcp:{}:{}", a.port(), fmt_host(a.ip())),
            Target::PSsl(a) => write!(f, "pssl:{}:{}", a.port(), fmt_host(a.ip())),
            Target::PUnix(p) => write!(f, "punix:{}", p.display()),
        }
    }
}

impl serde::Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ovs_notation() {
        assert_eq!(
            "tcp:127.0.0.1:6641".parse::<Target>().unwrap(),
            Target::Tcp("127.0.0.1:6641".parse().unwrap())
        );
        assert_eq!(
            "ssl:10.0.0.1".parse::<Target>().unwrap(),
            Target::Ssl("10.0.0.1:6640".parse().unwrap())
        );
        assert_eq!(
            "ptcp:6642:127.0.0.1".parse::<Target>().unwrap(),
            Target::PTcp("127.0.0.1:6642".parse().unwrap())
        );
        assert_eq!(
            "pssl:6643".parse::<Target>().unwrap(),
            Target::PSsl("0.0.0.0:6643".parse().unwrap())
        );
        assert_eq!(
            "ssl:[::1]:6640".parse::<Target>().unwrap(),
            Target::Ssl("[::1]:6640".parse().unwrap())
        );
        assert_eq!(
            "ptcp:0:[::1]".parse::<Target>().unwrap(),
            Target::PTcp("[::1]:0".parse().unwrap())
        );
        for bad in [
            "tcp",
            "udp:1.2.3.4:5",
            "tcp:host:x",
            "tcp:example.com:6640",
            "unix:",
            "ptcp:99999",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
        for t in [
            "tcp:127.0.0.1:6641",
            "pssl:6643:0.0.0.0",
            "unix:/tmp/x.sock",
            "ssl:[::1]:6640",
        ] {
            assert_eq!(t.parse::<Target>().unwrap().to_string(), t);
        }
    }
}
