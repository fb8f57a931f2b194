//! Stanza envelopes (XMPP.md §1.5, §1.6): kind, type, addresses and channel dispatch.

use crate::element::Element;
use crate::header::CN_JID;

/// Resource of the CN's and the agent's route channel.
pub const BGP_PEER_RESOURCE: &str = "bgp-peer";
/// Resource of the config channel.
pub const CONFIG_RESOURCE: &str = "config";
/// The pubsub namespace on `pubsub` and `event`.
pub const PUBSUB_NS: &str = "http://jabber.org/protocol/pubsub";

/// `to` of the agent's route iqs.
pub fn cn_bgp_peer_jid() -> String {
    format!("{CN_JID}/{BGP_PEER_RESOURCE}")
}

/// `to` of the agent's config subscribe.
pub fn cn_config_jid() -> String {
    format!("{CN_JID}/{CONFIG_RESOURCE}")
}

/// Which channel a stanza belongs to, decided by the `to` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Config,
    BgpPeer,
    /// Neither resource (TF also has `dns-peer` and `other-peer`, unused by ToR agents).
    Other,
}

/// TF dispatches by a substring test on `to` (§1.6). We test the resource (after the last
/// `/`) when there is one, so an agent name containing `config` cannot misroute its stanzas,
/// and fall back to TF's whole-string test otherwise.
pub fn channel_of(to: &str) -> Channel {
    let part = match to.rfind('/') {
        Some(i) => &to[i + 1..],
        None => to,
    };
    if part.contains(BGP_PEER_RESOURCE) {
        Channel::BgpPeer
    } else if part.contains(CONFIG_RESOURCE) {
        Channel::Config
    } else {
        Channel::Other
    }
}

/// Names an agent SHOULD NOT contain (§1.6, checklist #30).
pub fn agent_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty agent name");
    }
    for bad in ["config", "bgp-peer", "dns-peer", "other-peer"] {
        if name.contains(bad) {
            return Some("agent names must not contain config, bgp-peer, dns-peer or other-peer");
        }
    }
    if name.contains('/') {
        return Some("agent names must not contain '/'");
    }
    None
}

/// The two top-level stanza kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StanzaKind {
    Iq,
    Message,
}

/// A received top-level stanza with its envelope decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    pub kind: StanzaKind,
    pub element: Element,
}

impl Stanza {
    /// Wraps a framed element; `None` for anything but `iq` / `message`.
    pub fn from_element(element: Element) -> Option<Stanza> {
        let kind = match element.name.as_str() {
            "iq" => StanzaKind::Iq,
            "message" => StanzaKind::Message,
            _ => return None,
        };
        Some(Stanza { kind, element })
    }
    pub fn from(&self) -> &str {
        self.element.attr("from").unwrap_or("")
    }
    pub fn to(&self) -> &str {
        self.element.attr("to").unwrap_or("")
    }
    pub fn id(&self) -> Option<&str> {
        self.element.attr("id")
    }
    pub fn iq_type(&self) -> Option<&str> {
        self.element.attr("type")
    }
    /// Iqs whose type is not `set` must be ignored (§1.5, checklist #9).
    pub fn is_ignorable_iq(&self) -> bool {
        self.kind == StanzaKind::Iq && self.iq_type() != Some("set")
    }
    pub fn channel(&self) -> Channel {
        channel_of(self.to())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatches_by_resource() {
        assert_eq!(
            channel_of("network-control@contrailsystems.com/config"),
            Channel::Config
        );
        assert_eq!(
            channel_of("network-control@contrailsystems.com/bgp-peer"),
            Channel::BgpPeer
        );
        assert_eq!(channel_of("tor-agent-a/bgp-peer"), Channel::BgpPeer);
        assert_eq!(channel_of("tor-agent-a/config"), Channel::Config);
        assert_eq!(channel_of("configurator/bgp-peer"), Channel::BgpPeer);
        assert_eq!(channel_of("bgp-peer-x/config"), Channel::Config);
        assert_eq!(channel_of("x/dns-peer"), Channel::Other);
        assert_eq!(channel_of("bgp-peer"), Channel::BgpPeer);
        assert_eq!(channel_of(""), Channel::Other);
        assert_eq!(
            cn_bgp_peer_jid(),
            "network-control@contrailsystems.com/bgp-peer"
        );
    }

    #[test]
    fn envelope_and_ignorable_iqs() {
        let s = Stanza::from_element(
            Element::parse("<iq type='result' from='a' to='b/config' id='x'></iq>").unwrap(),
        )
        .unwrap();
        assert!(s.is_ignorable_iq());
        assert_eq!(s.channel(), Channel::Config);
        assert_eq!(s.id(), Some("x"));
        assert!(Stanza::from_element(Element::new("presence")).is_none());
        assert!(agent_name_problem("tor-config-1").is_some());
        assert!(agent_name_problem("tor-agent-a").is_none());
    }
}
