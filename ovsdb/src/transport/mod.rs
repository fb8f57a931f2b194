//! Transports: OVS target notation, TCP, TLS (rustls, mutual authentication)
//! and unix sockets, active and passive.

mod stream;
mod target;
pub mod tls;

pub use stream::{
    connect, Accepted, Listener, Peer, SharedListener, Stream, TransportError, HANDSHAKE_TIMEOUT,
};
pub use target::{Target, TargetError, DEFAULT_PORT};
pub use tls::{TlsError, TlsFiles};
