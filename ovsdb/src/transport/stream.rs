//! One byte stream type for every transport, and connecting/listening by target.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::tls::{subject_common_name, TlsError, TlsFiles};
use super::Target;

/// Where a connection comes from, for logs and identification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix(Option<PathBuf>),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix(Some(p)) => write!(f, "unix:{}", p.display()),
            Peer::Unix(None) => write!(f, "unix"),
        }
    }
}

/// A connected byte stream: plain TCP, TLS over TCP, or a unix socket.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl Stream {
    pub fn peer(&self) -> Peer {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(Peer::Tcp).unwrap_or(Peer::Unix(None)),
            Stream::Tls(s) => s
                .get_ref()
                .0
                .peer_addr()
                .map(Peer::Tcp)
                .unwrap_or(Peer::Unix(None)),
            Stream::Unix(s) => Peer::Unix(
                s.peer_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.to_path_buf())),
            ),
        }
    }

    /// The subject CN of the peer's TLS certificate, when there is one.
    pub fn peer_common_name(&self) -> Option<String> {
        match self {
            Stream::Tls(s) => {
                let certs = match s.as_ref() {
                    tokio_rustls::TlsStream::Client(c) => c.get_ref().1.peer_certificates(),
                    tokio_rustls::TlsStream::Server(c) => c.get_ref().1.peer_certificates(),
                };
                certs.and_then(|c| c.first()).and_then(subject_common_name)
            }
            _ => None,
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Stream::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{target}: {source}")]
    Io {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("{target}: TLS target needs certificate, key and CA files")]
    TlsMissing { target: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{target}: TLS handshake timed out")]
    HandshakeTimeout { target: String },
    #[error("{target}: {what} target used where a {expected} one is needed")]
    WrongKind {
        target: String,
        what: &'static str,
        expected: &'static str,
    },
}

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to an active target (`tcp:`, `ssl:`, `unix:`).
pub async fn connect(target: &Target, tls: Option<&TlsFiles>) -> Result<Stream, TransportError> {
    let io_err = |source| TransportError::Io {
        target: target.to_string(),
        source,
    };
    match target {
        Target::Tcp(addr) => {
            let s = TcpStream::connect(addr).await.map_err(io_err)?;
            let _ = s.set_nodelay(true);
            Ok(Stream::Tcp(s))
        }
        Target::Ssl(addr) => {
            let files = tls.ok_or_else(|| TransportError::TlsMissing {
                target: target.to_string(),
            })?;
            let connector = TlsConnector::from(files.client_config()?);
            let s = TcpStream::connect(addr).await.map_err(io_err)?;
            let _ = s.set_nodelay(true);
            let name = ServerName::IpAddress(addr.ip().into());
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, s))
                .await
                .map_err(|_| TransportError::HandshakeTimeout {
                    target: target.to_string(),
                })?
                .map_err(io_err)?;
            Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
        }
        Target::Unix(path) => Ok(Stream::Unix(
            UnixStream::connect(path).await.map_err(io_err)?,
        )),
        _ => Err(TransportError::WrongKind {
            target: target.to_string(),
            what: "passive",
            expected: "active",
        }),
    }
}

enum Inner {
    Tcp(TcpListener, Option<TlsAcceptor>),
    Unix(UnixListener, PathBuf),
}

/// A listening passive target. Unlike OVS's passive sessions, which keep one
/// connection per listener, every accepted connection is its own session.
pub struct Listener {
    inner: Inner,
    target: Target,
}

impl Listener {
    pub async fn bind(target: &Target, tls: Option<&TlsFiles>) -> Result<Listener, TransportError> {
        let io_err = |source| TransportError::Io {
            target: target.to_string(),
            source,
        };
        let inner = match target {
            Target::PTcp(addr) => Inner::Tcp(TcpListener::bind(addr).await.map_err(io_err)?, None),
            Target::PSsl(addr) => {
                let files = tls.ok_or_else(|| TransportError::TlsMissing {
                    target: target.to_string(),
                })?;
                let acceptor = TlsAcceptor::from(files.server_config()?);
                Inner::Tcp(
                    TcpListener::bind(addr).await.map_err(io_err)?,
                    Some(acceptor),
                )
            }
            Target::PUnix(path) => {
                // A stale socket file from an earlier run would make bind fail.
                let _ = std::fs::remove_file(path);
                Inner::Unix(UnixListener::bind(path).map_err(io_err)?, path.clone())
            }
            _ => {
                return Err(TransportError::WrongKind {
                    target: target.to_string(),
                    what: "active",
                    expected: "passive",
                })
            }
        };
        let mut listener = Listener {
            inner,
            target: target.clone(),
        };
        // Report the real port when the target asked for port 0.
        if let Inner::Tcp(l, _) = &listener.inner {
            if let Ok(local) = l.local_addr() {
                listener.target = match target {
                    Target::PSsl(_) => Target::PSsl(local),
                    _ => Target::PTcp(local),
                };
            }
        }
        Ok(listener)
    }

    /// The bound target, with the actual port if 0 was requested.
    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.inner {
            Inner::Tcp(l, _) => l.local_addr().ok(),
            Inner::Unix(..) => None,
        }
    }

    /// Accepts the next raw connection. TLS handshakes happen in
    /// `Accepted::finish`, so a slow peer cannot stall the accept loop.
    pub async fn accept(&self) -> io::Result<Accepted> {
        match &self.inner {
            Inner::Tcp(l, acceptor) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Accepted {
                    raw: RawConn::Tcp(s, acceptor.clone()),
                    peer: Peer::Tcp(peer),
                })
            }
            Inner::Unix(l, _) => {
                let (s, _) = l.accept().await?;
                Ok(Accepted {
                    raw: RawConn::Unix(s),
                    peer: Peer::Unix(None),
                })
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Inner::Unix(_, path) = &self.inner {
            let _ = std::fs::remove_file(path);
        }
    }
}

enum RawConn {
    Tcp(TcpStream, Option<TlsAcceptor>),
    Unix(UnixStream),
}

/// A connection accepted but not yet through its TLS handshake.
pub struct Accepted {
    raw: RawConn,
    pub peer: Peer,
}

impl Accepted {
    /// Runs the TLS handshake, if the listener is `pssl:`.
    pub async fn finish(self) -> io::Result<Stream> {
        match self.raw {
            RawConn::Tcp(s, None) => Ok(Stream::Tcp(s)),
            RawConn::Tcp(s, Some(acceptor)) => {
                let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(s))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
                Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))))
            }
            RawConn::Unix(s) => Ok(Stream::Unix(s)),
        }
    }
}

/// Shared handle so many tasks can accept from one listener.
pub type SharedListener = Arc<Listener>;
