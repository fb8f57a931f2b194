//! Tungsten Fabric compatible XMPP, the ToR-agent subset (normative spec: `shared/XMPP.md`).
//!
//! Used by both ends: the tor-agent (client) and the testbed's simulated control node (server).
//!
//! * [`header`]: stream headers written byte-exactly as TF writes them (§1.2).
//! * [`framer`]: an incremental stanza framer (§1.5) with a bounded buffer.
//! * [`element`]: a small owned element tree parsed with quick-xml, namespaces not resolved.
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
//! use tf_xmpp::{io::*, route::*, session::*, config::*, enet::*, stanza::*};
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:5269").await?;
//! let (stream, _cn_header) = client_open(tcp, &ClientOptions::new("tor-agent-a")).await?;
//! let (tx, mut rx, _task) = spawn_session(stream, SessionConfig::agent());
//! tx.send(encode_config_subscribe("tor-agent-a"))?;
//! tx.send(encode_vrf_subscribe("tor-agent-a", "default-domain:p:blue:blue", 5, 1))?;
//! let entry = EnetEntry::tor_mac(5001, "02:aa:bb:00:00:01", "192.0.2.21", 1);
//! tx.send(encode_route_publish("tor-agent-a", "default-domain:p:blue:blue", &entry, true, 2))?;
//! while let Some(ev) = rx.recv().await {
//!     let Incoming::Stanza(el) = ev else { continue };
//!     let Some(st) = Stanza::from_element(el) else { continue };
//!     match st.channel() {
//!         Channel::Config => { let _sections = decode_config_push(&st)?; }
//!         Channel::BgpPeer => { let _msg = decode_cn_message(&st)?; }
//!         Channel::Other => {}
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod config;
pub mod element;
pub mod enet;
pub mod error;
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
pub use framer::{Frame, Framer};
pub use header::StreamHeader;
pub use stanza::{Channel, Stanza, StanzaKind};
