//! Tungsten Fabric compatible XMPP, the ToR-agent subset (normative spec: `shared/XMPP.md`).
//!
//! Used by both ends: the tor-agent (client) and the testbed's simulated control node (server).
//!
//! * [`header`]: stream headers written byte-exactly as TF writes them (§1.2).
//! * [`framer`]: an incremental stanza framer (§1.5) with a bounded buffer.
//! * [`element`]: a small owned element tree parsed with quick-xml, namespaces not resolved.
//! * [`fast`]: the hot route stanzas (agent publish / collection iqs, CN route messages)
//!   decoded straight from their text, no element tree; sessions opt in with
//!   [`session::SessionConfig::route_decoding`].
//! * [`stanza`]: envelopes and channel dispatch by the `to` resource (§1.6).
//! * [`config`]: the IFMap config push (§3); [`route`] and [`enet`]: VRF subscribe, route
//!   publish / reflection and EndOfRib (§4, §5).
//! * [`liveness`]: keepalive / hold timers and reconnect backoff as pure state machines (§2, §1.7).
//! * [`io`], [`session`], [`tls`]: async helpers over any `AsyncRead + AsyncWrite`.
//!
//! # Why we frame the stream ourselves
//!
//! The usual Rust XMPP stack (`tokio-xmpp` with `xmpp-parsers`) runs one streaming XML
//! parser (`rxml`) over the whole connection. We checked its source: `XMPPCodec` feeds every
//! byte to an `rxml` `RawParser`, and rxml's "restricted XML" deletes the `PI` production, so
//! the `<?xml version="1.0"?>` a TF control node writes before **every config iq** (§3.2) is a
//! hard parse error in the middle of the stream. `tokio-xmpp` also insists on SASL and resource
//! binding, which TF never does (§1.1). (The `0xC8 0x80` keepalive itself, U+0200, is legal
//! character data and would pass rxml as text, so that part is not the blocker.) TF finds
//! stanzas by searching for `<iq` / `<message` and their closing tags; [`framer::Framer`]
//! does the same and then parses each stanza on its own.
//!
//! # Client sketch (agent side)
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tf_xmpp::{config::*, enet::*, io::*, liveness::*, route::*, session::*, stanza::*};
//! let me = "tor-agent-a";
//! let mut backoff = ReconnectBackoff::new();
//! tokio::time::sleep(backoff.next_delay(random_jitter())).await; // 0 s the first time
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:5269").await?;
//! // Plain mode; set `opts.tls = Some(ClientTls { .. })` (see `tls::client_config`) for STARTTLS.
//! let (stream, _cn_header) = client_open(tcp, &ClientOptions::new(me)).await?;
//! // The driver sends a keepalive at once, then every hold/3, and ends on hold-timer expiry.
//! let (tx, mut rx, _task) = spawn_session(stream, SessionConfig::agent());
//! tx.send(encode_config_subscribe(me))?; // only to the CN chosen for config
//! tx.send(encode_vrf_subscribe(me, "default-domain:p:blue:blue", 5, 1))?; // instance-id = network-id
//! let mac = EnetEntry::tor_mac(5001, "02:aa:bb:00:00:01", "192.0.2.21", 1);
//! tx.send(encode_route_publish(me, "default-domain:p:blue:blue", &mac, true, 2))?; // add
//! tx.send(encode_route_publish(me, "default-domain:p:blue:blue", &mac, false, 3))?; // withdraw
//! tx.send(encode_agent_end_of_rib(me))?;
//! let mut vxlan_mode: Option<String> = None;
//! while let Some(ev) = rx.recv().await {
//!     let el = match ev {
//!         Incoming::Stanza(el) => el,
//!         Incoming::Keepalive => { backoff.on_keepalive_received(); continue }
//!         Incoming::Closed(reason) => { eprintln!("session over: {reason}"); break }
//!         // Only with `SessionConfig::route_decoding` on: routes already decoded.
//!         Incoming::Route(_) => continue,
//!     };
//!     let Some(st) = Stanza::from_element(el) else { continue };
//!     if st.is_ignorable_iq() { continue }
//!     match st.channel() {
//!         Channel::Config => for section in decode_config_push(&st)? {
//!             for item in section.items {
//!                 if let ConfigItem::Node(n) = item {
//!                     if n.type_name == "global-vrouter-config" {
//!                         vxlan_mode = n.property_text("vxlan-network-identifier-mode");
//!                     } else if n.type_name == "virtual-network" {
//!                         let _vni = virtual_network_vni(vxlan_mode.as_deref(), &n);
//!                     }
//!                 }
//!             }
//!         },
//!         Channel::BgpPeer => match decode_cn_message(&st)? {
//!             CnMessage::RouteUpdate { vrf: _, items } => for it in items {
//!                 if it.entry.has_next_hop("192.0.2.21") { continue } // our own, reflected
//!             },
//!             CnMessage::RouteRetract { vrf: _, routes: _ } => {}
//!             CnMessage::EndOfRib => {}
//!             CnMessage::OtherFamily { .. } => {}
//!         },
//!         Channel::Other => {}
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod config;
pub mod element;
pub mod enet;
pub mod error;
pub mod fast;
pub mod framer;
pub mod header;
pub mod io;
pub mod liveness;
pub mod route;
pub mod session;
pub mod stanza;
pub mod tls;

pub use element::{Element, Node};
pub use error::{FrameError, ParseError, StanzaError, XmppError};
pub use fast::{RouteDecoding, RouteStanza};
pub use framer::{Frame, Framer, RawFrame, RawStanza};
pub use header::StreamHeader;
pub use stanza::{Channel, Stanza, StanzaKind};
