//! A task that drives one Established session: it reads and frames stanzas, writes queued
//! stanzas, and lets the pure [`Liveness`] state machine decide when to send keepalives and
//! when the hold timer has expired.

use crate::element::Element;
use crate::error::XmppError;
use crate::fast::{RouteDecoding, RouteStanza};
use crate::framer::RawFrame;
use crate::io::{read_raw_frame, XmppStream};
use crate::liveness::{Liveness, LivenessAction, DEFAULT_HOLD_TIME, KEEPALIVE};
use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

/// Session timing and queue sizes.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub hold_time: Duration,
    /// The agent sends one keepalive as soon as it is Established (§1.3); the CN does not.
    pub keepalive_on_establish: bool,
    /// Outgoing stanzas that may wait; a full queue makes `send` fail (slow peer).
    pub outgoing_capacity: usize,
    /// Incoming frames that may wait for the consumer before reading pauses.
    pub incoming_capacity: usize,
    /// Route stanzas delivered decoded ([`Incoming::Route`]) instead of as element trees.
    /// Off by default: every stanza is an [`Incoming::Stanza`].
    pub route_decoding: RouteDecoding,
}

impl SessionConfig {
    pub fn agent() -> Self {
        SessionConfig {
            hold_time: DEFAULT_HOLD_TIME,
            keepalive_on_establish: true,
            outgoing_capacity: 4096,
            incoming_capacity: 1024,
            route_decoding: RouteDecoding::Off,
        }
    }
    pub fn control_node() -> Self {
        SessionConfig {
            keepalive_on_establish: false,
            outgoing_capacity: 65536,
            ..SessionConfig::agent()
        }
    }
}

/// Why a session ended.
#[derive(Debug)]
pub enum CloseReason {
    /// TCP closed (with or without `</stream:stream>` first).
    PeerClosed {
        stream_end: bool,
    },
    HoldTimerExpired,
    /// The peer broke framing or sent malformed XML.
    Protocol(XmppError),
    /// Writing did not complete within the hold time.
    WriteStalled,
    /// Closed from our side via [`SessionHandle::close`] or by dropping every handle.
    Local(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed { stream_end: true } => write!(f, "peer closed the stream"),
            CloseReason::PeerClosed { stream_end: false } => write!(f, "peer closed TCP"),
            CloseReason::HoldTimerExpired => write!(f, "hold timer expired"),
            CloseReason::Protocol(e) => write!(f, "protocol error: {e}"),
            CloseReason::WriteStalled => {
                write!(f, "peer stopped reading (write stalled for a hold time)")
            }
            CloseReason::Local(why) => write!(f, "closed locally: {why}"),
        }
    }
}

/// What the session delivers to its owner.
#[derive(Debug)]
pub enum Incoming {
    /// An `iq` or `message`.
    Stanza(Element),
    /// A route stanza decoded on the fast path chosen by [`SessionConfig::route_decoding`];
    /// the same value the generic decoder would give for the [`Incoming::Stanza`] it replaces.
    Route(RouteStanza),
    /// A keepalive (the agent counts these for its backoff reset, §1.7).
    Keepalive,
    /// The last event: the session is over.
    Closed(CloseReason),
}

enum Outgoing {
    Raw(Vec<u8>),
    Close(String),
}

/// Sends on a running session. Cheap to clone; the session ends when every handle is dropped.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    tx: mpsc::Sender<Outgoing>,
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outgoing::Raw(b) => write!(f, "Raw({} bytes)", b.len()),
            Outgoing::Close(w) => write!(f, "Close({w})"),
        }
    }
}

/// The session is gone or its queue is full.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("session closed")]
    Closed,
    #[error("outgoing queue full (peer too slow)")]
    Full,
}

impl SessionHandle {
    /// Queues complete stanzas (one or more, e.g. a publish + collection pair) without waiting.
    pub fn send(&self, stanzas: impl Into<Vec<u8>>) -> Result<(), SendError> {
        self.tx
            .try_send(Outgoing::Raw(stanzas.into()))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::Full,
                mpsc::error::TrySendError::Closed(_) => SendError::Closed,
            })
    }

    /// Queues stanzas, waiting for room in the queue.
    pub async fn send_wait(&self, stanzas: impl Into<Vec<u8>>) -> Result<(), SendError> {
        self.tx
            .send(Outgoing::Raw(stanzas.into()))
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Asks the session to close TCP after writing what is queued.
    pub fn close(&self, why: impl Into<String>) {
        let _ = self.tx.try_send(Outgoing::Close(why.into()));
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Spawns the driver for an Established stream. Returns the send handle, the receiver of
/// incoming frames (ending with [`Incoming::Closed`]) and the task.
pub fn spawn_session<S>(
    stream: XmppStream<S>,
    config: SessionConfig,
) -> (SessionHandle, mpsc::Receiver<Incoming>, JoinHandle<()>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, out_rx) = mpsc::channel(config.outgoing_capacity.max(1));
    let (in_tx, in_rx) = mpsc::channel(config.incoming_capacity.max(1));
    let task = tokio::spawn(async move {
        let reason = drive(stream, config, out_rx, &in_tx).await;
        debug!(%reason, "xmpp session ended");
        let _ = in_tx.send(Incoming::Closed(reason)).await;
    });
    (SessionHandle { tx: out_tx }, in_rx, task)
}

async fn drive<S>(
    stream: XmppStream<S>,
    config: SessionConfig,
    mut out_rx: mpsc::Receiver<Outgoing>,
    in_tx: &mpsc::Sender<Incoming>,
) -> CloseReason
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Reading and writing proceed independently, so a peer that floods us while we flood it
    // cannot deadlock the session (each side waiting for the other to read).
    let (io, mut framer) = stream.into_parts();
    let (mut rd, mut wr) = tokio::io::split(io);
    let start = Instant::now().into_std();
    let decoding = config.route_decoding;
    let mut liveness =
        Liveness::established(config.hold_time, start, config.keepalive_on_establish);
    let mut incoming: Option<Incoming> = None;
    // Bytes accepted for writing and how far they are written.
    let mut pending: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut written = 0usize;
    let mut needs_flush = false;
    let mut last_write_progress = start;
    let mut closing: Option<String> = None;
    const HIGH_WATER: usize = 256 * 1024;
    // Partial-stanza bytes seen at the last hold check (TF restarts the hold timer when unread
    // bytes are waiting at expiry; new bytes of a large stanza count, a stuck fragment does not).
    let mut partial_seen = 0usize;
    // The agent's first keepalive goes out before anything queued (§1.3).
    if let Some(LivenessAction::SendKeepalive) = liveness.poll(start) {
        pending.extend_from_slice(KEEPALIVE);
    }
    let timer = tokio::time::sleep_until(Instant::from_std(liveness.next_deadline()));
    tokio::pin!(timer);
    loop {
        let now = Instant::now().into_std();
        if written == pending.len() {
            pending.clear();
            written = 0;
            if !needs_flush {
                if let Some(why) = closing.take() {
                    let _ = wr.shutdown().await;
                    return CloseReason::Local(why);
                }
            }
        }
        let mut deadline = liveness.next_deadline();
        if written < pending.len() {
            let stall = last_write_progress + config.hold_time;
            if now >= stall {
                return CloseReason::WriteStalled;
            }
            deadline = deadline.min(stall);
        }
        let deadline = Instant::from_std(deadline);
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            _ = &mut timer => {
                let now = Instant::now().into_std();
                if now >= liveness.hold_deadline() && !framer.is_idle() && framer.buffered() != partial_seen {
                    partial_seen = framer.buffered();
                    liveness.on_received(now);
                }
                // A stanza waiting for our own consumer (or a full channel) means we stopped
                // reading, not that the peer went quiet: its bytes may be queued in our socket. Judging it dead would
                // punish it for our backlog (an agent busy with a 100k-route takeover while
                // the control node reflects those routes back to it).
                if now >= liveness.hold_deadline() && (incoming.is_some() || in_tx.capacity() == 0) {
                    liveness.on_received(now);
                }
                match liveness.poll(now) {
                    Some(LivenessAction::HoldExpired) => return CloseReason::HoldTimerExpired,
                    Some(LivenessAction::SendKeepalive) => {
                        if written == pending.len() {
                            last_write_progress = Instant::now().into_std();
                        }
                        pending.extend_from_slice(KEEPALIVE);
                    }
                    None => {}
                }
            }
            r = write_or_flush(&mut wr, &pending[written..]), if written < pending.len() || needs_flush => {
                match r {
                    Ok(Some(0)) => return CloseReason::PeerClosed { stream_end: false },
                    Ok(Some(n)) => {
                        written += n;
                        needs_flush = true;
                        last_write_progress = Instant::now().into_std();
                    }
                    Ok(None) => needs_flush = false,
                    Err(e) => return CloseReason::Protocol(XmppError::Io(e)),
                }
            }
            permit = in_tx.reserve(), if incoming.is_some() => {
                match permit {
                    Ok(p) => { if let Some(item) = incoming.take() { p.send(item); } }
                    Err(_) => return CloseReason::Local("session receiver dropped".into()),
                }
                // Frames already buffered go out without another trip through select.
                while let Ok(p) = in_tx.try_reserve() {
                    match framer.next_raw_frame() {
                        Ok(None) => break,
                        Ok(Some(frame)) => match classify(frame, decoding, &mut liveness) {
                            Ok(item) => p.send(item),
                            Err(reason) => return reason,
                        },
                        Err(e) => return CloseReason::Protocol(e.into()),
                    }
                }
            }
            frame = read_raw_frame(&mut rd, &mut framer), if incoming.is_none() => {
                match frame {
                    Ok(Some(frame)) => match classify(frame, decoding, &mut liveness) {
                        Ok(item) => incoming = Some(item),
                        Err(reason) => return reason,
                    },
                    Ok(None) => return CloseReason::PeerClosed { stream_end: false },
                    Err(e) => return CloseReason::Protocol(e),
                }
            }
            out = out_rx.recv(), if closing.is_none() && pending.len() - written < HIGH_WATER => {
                match out {
                    // Every handle is gone: write what is queued, then close.
                    None => closing = Some("all session handles dropped".into()),
                    Some(Outgoing::Raw(b)) => {
                        if written == pending.len() {
                            last_write_progress = Instant::now().into_std();
                        }
                        pending.extend_from_slice(&b);
                    }
                    Some(Outgoing::Close(why)) => closing = Some(why),
                }
            }
        }
    }
}

/// One write (or, with nothing left to write, a flush). Cancel-safe: a single poll_write.
async fn write_or_flush<W: AsyncWrite + Unpin>(
    wr: &mut W,
    buf: &[u8],
) -> std::io::Result<Option<usize>> {
    if buf.is_empty() {
        wr.flush().await?;
        Ok(None)
    } else {
        wr.write(buf).await.map(Some)
    }
}

/// A received frame restarts the hold timer and becomes an [`Incoming`]; a stream end ends it,
/// and so does a stanza that is not UTF-8 or not well-formed XML.
fn classify(
    frame: RawFrame,
    decoding: RouteDecoding,
    liveness: &mut Liveness,
) -> Result<Incoming, CloseReason> {
    match frame {
        RawFrame::Stanza(raw) => {
            let protocol = |e: crate::error::FrameError| CloseReason::Protocol(e.into());
            let text = raw.text().map_err(protocol)?;
            let item = match decoding.decode(text) {
                Some(route) => Incoming::Route(route),
                None => Incoming::Stanza(Element::parse(text).map_err(|e| protocol(e.into()))?),
            };
            liveness.on_received(Instant::now().into_std());
            Ok(item)
        }
        RawFrame::Keepalive => {
            liveness.on_received(Instant::now().into_std());
            Ok(Incoming::Keepalive)
        }
        RawFrame::StreamEnd => Err(CloseReason::PeerClosed { stream_end: true }),
    }
}
