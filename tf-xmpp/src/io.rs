//! Async stream helpers, generic over `AsyncRead + AsyncWrite`: opening a session as the
//! agent (client) or accepting one as the CN (server), plain or with STARTTLS (§1.2-§1.4),
//! then reading frames and writing stanzas and keepalives.

use crate::element::Element;
use crate::error::XmppError;
use crate::framer::{Frame, Framer, RawFrame, DEFAULT_MAX_STANZA};
use crate::header::{client_header, server_header, StreamHeader};
use crate::liveness::{KEEPALIVE, OPEN_TIMEOUT};
use crate::tls::{FEATURES_STARTTLS, PROCEED, STARTTLS};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Plain or TLS transport, so both modes give one stream type.
#[derive(Debug)]
pub enum Transport<S> {
    Plain(S),
    ClientTls(Box<tokio_rustls::client::TlsStream<S>>),
    ServerTls(Box<tokio_rustls::server::TlsStream<S>>),
}

impl<S> Transport<S> {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Transport::Plain(_))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Transport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Transport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A byte stream with a framer: the building block for both roles.
#[derive(Debug)]
pub struct XmppStream<S> {
    io: S,
    framer: Framer,
}

impl<S: AsyncRead + AsyncWrite + Unpin> XmppStream<S> {
    pub fn new(io: S, max_stanza: usize) -> Self {
        XmppStream {
            io,
            framer: Framer::new(max_stanza),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Reads more bytes into the framer; `Ok(false)` on EOF. Cancel-safe.
    async fn fill(&mut self) -> io::Result<bool> {
        fill(&mut self.io, &mut self.framer).await
    }

    /// The next frame; `Ok(None)` when the peer closed TCP cleanly between stanzas.
    /// Cancel-safe: bytes already read stay buffered.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, XmppError> {
        read_frame(&mut self.io, &mut self.framer).await
    }

    /// The transport and the framer (which may hold bytes already received).
    pub fn into_parts(self) -> (S, Framer) {
        (self.io, self.framer)
    }

    /// Reads the peer's stream header.
    pub async fn read_header(&mut self) -> Result<StreamHeader, XmppError> {
        loop {
            if let Some(h) = self.framer.take_header()? {
                return Ok(h);
            }
            if !self.fill().await? {
                return Err(XmppError::Closed(" before sending its stream header"));
            }
        }
    }

    /// Reads one top-level element of the TLS negotiation (may be self-closing).
    pub async fn read_nonza(&mut self) -> Result<Element, XmppError> {
        loop {
            if let Some(e) = self.framer.take_nonza()? {
                return Ok(e);
            }
            if !self.fill().await? {
                return Err(XmppError::Closed(" during stream negotiation"));
            }
        }
    }

    /// Writes raw bytes (one or more complete stanzas) and flushes.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), XmppError> {
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Writes the `0xC8 0x80` keepalive.
    pub async fn write_keepalive(&mut self) -> Result<(), XmppError> {
        self.write_raw(KEEPALIVE).await
    }

    /// Shuts the write side down (TCP FIN). TF does not send `</stream:stream>` first (§1.7).
    pub async fn shutdown(&mut self) -> Result<(), XmppError> {
        self.io.shutdown().await?;
        Ok(())
    }

    /// Gives the transport back; fails if the peer already sent bytes we have not framed
    /// (they would belong to the next protocol layer, e.g. a TLS ClientHello).
    fn into_io_checked(self) -> Result<S, XmppError> {
        if self.framer.buffered() > 0 {
            return Err(XmppError::Negotiation(
                "peer sent data before the TLS handshake".into(),
            ));
        }
        Ok(self.io)
    }
}

async fn fill<R: AsyncRead + Unpin>(rd: &mut R, framer: &mut Framer) -> io::Result<bool> {
    let buf = framer.buffer_mut();
    buf.reserve(16 * 1024);
    Ok(rd.read_buf(buf).await? > 0)
}

/// Reads the next frame from any reader (e.g. the read half of a split stream) into `framer`.
/// `Ok(None)` on a clean TCP close between stanzas. Cancel-safe.
pub async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    framer: &mut Framer,
) -> Result<Option<Frame>, XmppError> {
    Ok(match read_raw_frame(rd, framer).await? {
        None => None,
        Some(RawFrame::Stanza(raw)) => Some(Frame::Stanza(raw.parse()?)),
        Some(RawFrame::Keepalive) => Some(Frame::Keepalive),
        Some(RawFrame::StreamEnd) => Some(Frame::StreamEnd),
    })
}

/// [`read_frame`] with the stanza left unparsed (see [`crate::framer::RawStanza`]).
pub async fn read_raw_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    framer: &mut Framer,
) -> Result<Option<RawFrame>, XmppError> {
    loop {
        if let Some(frame) = framer.next_raw_frame()? {
            return Ok(Some(frame));
        }
        if !fill(rd, framer).await? {
            return if framer.is_idle() {
                Ok(None)
            } else {
                Err(XmppError::Closed(" in the middle of a stanza"))
            };
        }
    }
}

async fn timed<T>(
    what: &'static str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, XmppError>>,
) -> Result<T, XmppError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| XmppError::Timeout(what))?
}

/// TLS settings of the agent.
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    /// Name checked against the CN's certificate.
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// How the agent opens a session.
#[derive(Clone)]
pub struct ClientOptions {
    pub agent_name: String,
    /// Sent as `xmlns`; empty unless a sub-cluster is configured.
    pub subcluster: String,
    pub tls: Option<ClientTls>,
    pub max_stanza: usize,
    /// Limit for the whole negotiation.
    pub open_timeout: Duration,
}

impl ClientOptions {
    pub fn new(agent_name: impl Into<String>) -> Self {
        ClientOptions {
            agent_name: agent_name.into(),
            subcluster: String::new(),
            tls: None,
            max_stanza: DEFAULT_MAX_STANZA,
            open_timeout: OPEN_TIMEOUT,
        }
    }
}

/// Agent side of §1.2-§1.4 on a connected socket. Returns the Established stream and the CN's
/// header. The caller sends the first keepalive (see [`crate::session`]).
pub async fn client_open<S>(
    io: S,
    opts: &ClientOptions,
) -> Result<(XmppStream<Transport<S>>, StreamHeader), XmppError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    timed(
        "the control node's stream header",
        opts.open_timeout,
        async {
            let header = client_header(&opts.agent_name, &opts.subcluster);
            let mut stream = XmppStream::new(io, opts.max_stanza);
            stream.write_raw(header.as_bytes()).await?;
            let cn_header = stream.read_header().await?;
            let Some(tls) = &opts.tls else {
                let XmppStream { io, framer } = stream;
                return Ok((
                    XmppStream {
                        io: Transport::Plain(io),
                        framer,
                    },
                    cn_header,
                ));
            };
            let features = stream.read_nonza().await?;
            if features.name != "stream:features" || features.child("starttls").is_none() {
                return Err(XmppError::Negotiation(format!(
                    "expected stream:features with starttls, got <{}>",
                    features.name
                )));
            }
            stream.write_raw(STARTTLS.as_bytes()).await?;
            let proceed = stream.read_nonza().await?;
            if proceed.name != "proceed" {
                return Err(XmppError::Negotiation(format!(
                    "expected proceed, got <{}>",
                    proceed.name
                )));
            }
            let io = stream.into_io_checked()?;
            let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
            let tls_io = connector
                .connect(tls.server_name.clone(), io)
                .await
                .map_err(|e| XmppError::Tls(format!("handshake: {e}")))?;
            let mut stream =
                XmppStream::new(Transport::ClientTls(Box::new(tls_io)), opts.max_stanza);
            stream.write_raw(header.as_bytes()).await?;
            let cn_header = stream.read_header().await?;
            Ok((stream, cn_header))
        },
    )
    .await
}

/// How the CN accepts a session.
#[derive(Clone)]
pub struct ServerOptions {
    /// `from` of the CN's header.
    pub hostname: String,
    /// When set, STARTTLS is required (§1.4).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// When set, agents whose header `xmlns` differs are refused.
    pub subcluster: Option<String>,
    pub max_stanza: usize,
    /// The open timer: how long to wait for the agent's header (15 s in TF).
    pub open_timeout: Duration,
}

impl ServerOptions {
    pub fn new(hostname: impl Into<String>) -> Self {
        ServerOptions {
            hostname: hostname.into(),
            tls: None,
            subcluster: None,
            max_stanza: DEFAULT_MAX_STANZA,
            open_timeout: OPEN_TIMEOUT,
        }
    }
}

async fn check_agent_header<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut XmppStream<S>,
    header: &StreamHeader,
    opts: &ServerOptions,
) -> Result<String, XmppError> {
    let from = header.from().unwrap_or("").to_string();
    let problem = if from.is_empty() {
        Some("stream header has no from".to_string())
    } else {
        match &opts.subcluster {
            Some(sc) if header.xmlns().unwrap_or("") != sc => Some(format!(
                "sub-cluster {:?} does not match ours {:?}",
                header.xmlns().unwrap_or(""),
                sc
            )),
            _ => None,
        }
    };
    if let Some(p) = problem {
        // Before Established TF closes the stream explicitly (§1.7).
        let _ = stream.write_raw(b"</stream:stream>").await;
        return Err(XmppError::Negotiation(p));
    }
    Ok(from)
}

/// CN side of §1.2-§1.4 on an accepted socket: waits for the agent's header (open timer),
/// replies, and runs STARTTLS when configured. Returns the Established stream and the agent's
/// header (whose `from` is the agent name). On an open-timer expiry it sends
/// `</stream:stream>` before giving up, as TF does.
pub async fn server_accept<S>(
    io: S,
    opts: &ServerOptions,
) -> Result<(XmppStream<Transport<S>>, StreamHeader), XmppError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = XmppStream::new(io, opts.max_stanza);
    let header = match tokio::time::timeout(opts.open_timeout, stream.read_header()).await {
        Ok(h) => h?,
        Err(_) => {
            let _ = stream.write_raw(b"</stream:stream>").await;
            return Err(XmppError::Timeout("the agent's stream header"));
        }
    };
    let agent = check_agent_header(&mut stream, &header, opts).await?;
    stream
        .write_raw(server_header(&opts.hostname, &agent).as_bytes())
        .await?;
    let Some(tls) = &opts.tls else {
        let XmppStream { io, framer } = stream;
        return Ok((
            XmppStream {
                io: Transport::Plain(io),
                framer,
            },
            header,
        ));
    };
    timed("STARTTLS negotiation", opts.open_timeout, async move {
        stream.write_raw(FEATURES_STARTTLS.as_bytes()).await?;
        let starttls = stream.read_nonza().await?;
        if starttls.name != "starttls" {
            let _ = stream.write_raw(b"</stream:stream>").await;
            return Err(XmppError::Negotiation(format!(
                "expected starttls, got <{}>",
                starttls.name
            )));
        }
        stream.write_raw(PROCEED.as_bytes()).await?;
        let io = stream.into_io_checked()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
        let tls_io = acceptor
            .accept(io)
            .await
            .map_err(|e| XmppError::Tls(format!("handshake: {e}")))?;
        let mut stream = XmppStream::new(Transport::ServerTls(Box::new(tls_io)), opts.max_stanza);
        let header = stream.read_header().await?;
        let agent = check_agent_header(&mut stream, &header, opts).await?;
        stream
            .write_raw(server_header(&opts.hostname, &agent).as_bytes())
            .await?;
        Ok((stream, header))
    })
    .await
}
