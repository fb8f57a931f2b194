//! The agent's readiness line, parsed as HAProxy parses an `agent-check` reply.
//!
//! Contract with tor-agent: the proxy connects over plain TCP to the backend's readiness port;
//! the agent writes ONE ASCII line ending in `\n` and closes. Words are separated by spaces,
//! tabs or commas and are case-insensitive:
//!
//! | word | effect |
//! |---|---|
//! | `ready` | admin state back to ready (clears `drain` and `maint`) |
//! | `drain` | healthy, keeps its sessions, gets no new switch |
//! | `maint` | maintenance: no new switch, sessions closed, like an operator's `maint` |
//! | `up` | the agent's own health is up |
//! | `down`, `fail`, `stopped` | the agent's own health is down: marked down, sessions closed |
//! | `NN%` | effective weight = NN % of the configured weight (0% drains) |
//!
//! Unknown words are ignored (so newer agents can say more); everything after a `#` is a
//! description (HAProxy: `down#lost control node`). When several words of one class appear,
//! the last one wins. A failed connect, a timeout or an empty reply changes nothing: plain
//! connectivity is the active health check's job (HAProxy says the same of agent checks).

use serde::Serialize;

/// The longest readiness line read; longer replies are cut here.
pub const MAX_LINE: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentAdmin {
    Ready,
    Drain,
    Maint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentHealth {
    Up,
    Down,
}

/// What one readiness line says; `None` fields were not mentioned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    pub admin: Option<AgentAdmin>,
    pub health: Option<AgentHealth>,
    pub weight_percent: Option<u32>,
    /// Text after `#`, for logs and status.
    pub description: Option<String>,
}

impl ReadinessReport {
    pub fn is_empty(&self) -> bool {
        self.admin.is_none() && self.health.is_none() && self.weight_percent.is_none()
    }
}

/// Parses the first line of `raw` (bytes after the first `\n` are ignored).
pub fn parse(raw: &[u8]) -> ReadinessReport {
    let raw = &raw[..raw.len().min(MAX_LINE)];
    let line_end = raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len());
    let line = String::from_utf8_lossy(&raw[..line_end]);
    let (words, description) = match line.split_once('#') {
        Some((w, d)) => (w, Some(d.trim().to_string()).filter(|d| !d.is_empty())),
        None => (line.as_ref(), None),
    };
    let mut report = ReadinessReport {
        description,
        ..ReadinessReport::default()
    };
    for word in words
        .split([' ', '\t', ',', '\r'])
        .filter(|w| !w.is_empty())
    {
        let lower = word.to_ascii_lowercase();
        match lower.as_str() {
            "ready" => report.admin = Some(AgentAdmin::Ready),
            "drain" => report.admin = Some(AgentAdmin::Drain),
            "maint" => report.admin = Some(AgentAdmin::Maint),
            "up" => report.health = Some(AgentHealth::Up),
            "down" | "fail" | "stopped" => report.health = Some(AgentHealth::Down),
            _ => {
                if let Some(num) = lower.strip_suffix('%') {
                    if let Ok(p) = num.parse::<u32>() {
                        report.weight_percent = Some(p.min(100_000));
                    }
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn words_of_the_contract() {
        assert_eq!(parse(b"ready\n").admin, Some(AgentAdmin::Ready));
        assert_eq!(parse(b"drain\n").admin, Some(AgentAdmin::Drain));
        assert_eq!(parse(b"maint\n").admin, Some(AgentAdmin::Maint));
        for w in ["down", "fail", "stopped", "DOWN"] {
            assert_eq!(parse(w.as_bytes()).health, Some(AgentHealth::Down), "{w}");
        }
        let r = parse(b"up, ready 75%\n");
        assert_eq!(r.health, Some(AgentHealth::Up));
        assert_eq!(r.admin, Some(AgentAdmin::Ready));
        assert_eq!(r.weight_percent, Some(75));
    }

    #[test]
    fn unknown_words_ignored_and_description_kept() {
        let r = parse(b"maxconn:30 frobnicate down#no control node\r\n");
        assert_eq!(r.health, Some(AgentHealth::Down));
        assert_eq!(r.admin, None);
        assert_eq!(r.description.as_deref(), Some("no control node"));
        assert!(parse(b"hello world\n").is_empty());
        assert!(parse(b"").is_empty());
        assert!(parse(b"\nready\n").is_empty(), "only the first line counts");
        assert_eq!(
            parse(b"ready drain").admin,
            Some(AgentAdmin::Drain),
            "last wins"
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&bytes);
        }
    }
}
