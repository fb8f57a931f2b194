//! A task that drives one Established session: it reads and frames stanzas, writes queued
//! stanzas, and lets the pure [`Liveness`] state machine decide when to send keepalives and
//! when the hold timer has expired.

use crate::element::Element;
use crate::error::XmppError;
use crate::framer::Frame;
use crate::io::XmppStream;
use crate::liveness::{Liveness, LivenessAction, DEFAULT_HOLD_TIME, KEEPALIVE};
use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
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
}

impl SessionConfig {
    pub fn agent() -> Self {
        SessionConfig {
            hold_time: DEFAULT_HOLD_TIME,
            keepalive_on_establish: true,
            outgoing_capacity: 4096,
            incoming_capacity: 1024,
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
    mut stream: XmppStream<S>,
    config: SessionConfig,
    mut out_rx: mpsc::Receiver<Outgoing>,
    in_tx: &mpsc::Sender<Incoming>,
) -> CloseReason
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now().into_std();
    let mut liveness =
        Liveness::established(config.hold_time, start, config.keepalive_on_establish);
    let write_limit = config.hold_time;
    let mut pending: Option<Incoming> = None;
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let deadline = Instant::from_std(liveness.next_deadline());
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(deadline) => {
                match liveness.poll(Instant::now().into_std()) {
                    Some(LivenessAction::HoldExpired) => return CloseReason::HoldTimerExpired,
                    Some(LivenessAction::SendKeepalive) => {
                        match tokio::time::timeout(write_limit, stream.write_raw(KEEPALIVE)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return CloseReason::Protocol(e),
                            Err(_) => return CloseReason::WriteStalled,
                        }
                    }
                    None => {}
                }
            }
            out = out_rx.recv() => {
                let Some(first) = out else {
                    return CloseReason::Local("all session handles dropped".into());
                };
                // Coalesce what is queued into one write.
                batch.clear();
                let mut close = None;
                let mut next = Some(first);
                while let Some(item) = next.take() {
                    match item {
                        Outgoing::Raw(b) => batch.extend_from_slice(&b),
                        Outgoing::Close(why) => { close = Some(why); break; }
                    }
                    if batch.len() >= 256 * 1024 { break; }
                    next = out_rx.try_recv().ok();
                }
                if !batch.is_empty() {
                    match tokio::time::timeout(write_limit, stream.write_raw(&batch)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return CloseReason::Protocol(e),
                        Err(_) => return CloseReason::WriteStalled,
                    }
                }
                if let Some(why) = close {
                    let _ = stream.shutdown().await;
                    return CloseReason::Local(why);
                }
            }
            permit = in_tx.reserve(), if pending.is_some() => {
                match permit {
                    Ok(p) => { if let Some(item) = pending.take() { p.send(item); } }
                    Err(_) => return CloseReason::Local("session receiver dropped".into()),
                }
            }
            frame = stream.read_frame(), if pending.is_none() => {
                match frame {
                    Ok(Some(Frame::Stanza(el))) => {
                        liveness.on_received(Instant::now().into_std());
                        pending = Some(Incoming::Stanza(el));
                    }
                    Ok(Some(Frame::Keepalive)) => {
                        liveness.on_received(Instant::now().into_std());
                        pending = Some(Incoming::Keepalive);
                    }
                    Ok(Some(Frame::StreamEnd)) => return CloseReason::PeerClosed { stream_end: true },
                    Ok(None) => return CloseReason::PeerClosed { stream_end: false },
                    Err(e) => return CloseReason::Protocol(e),
                }
            }
        }
    }
}
