//! Moving bytes between the switch and the agent.
//!
//! Plain TCP (passthrough): each direction waits for readiness with no buffer, borrows one from
//! [`bufpool`] only while the socket has data, and returns it as soon as the socket would block;
//! an idle session therefore holds two sockets and a small task, never copy buffers.
//! TLS-terminated sessions relay through tokio's copy loop over rustls streams.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use std::os::fd::AsRawFd;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::bufpool;
use super::sockopt::shutdown_write;
use crate::session::{KillReason, SessionCtl};

/// Which leg an error or a close came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// How the data phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both directions closed cleanly.
    Closed,
    /// An I/O error on a leg; `reset` when it was a connection reset / broken pipe.
    Error {
        side: Side,
        reset: bool,
    },
    /// No byte in either direction for the idle timeout.
    Idle,
    /// One side closed and the other did not finish within the fin timeout.
    FinTimeout {
        waiting_for: Side,
    },
    Killed(KillReason),
    /// The agent closed or reset its leg before its first byte, and all the switch sent is
    /// still held by the [`Replay`]: the session can move to another backend.
    Unanswered {
        reset: bool,
    },
}

#[derive(Debug)]
struct PumpError {
    side: Side,
    err: io::Error,
}

pub fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// How much of what a switch sends before its agent's first byte is kept for replay: a TLS
/// ClientHello, even with post-quantum key shares, is well under this.
pub const REPLAY_LIMIT: usize = 16 * 1024;

/// What the switch sent before its agent's first byte, kept so that a backend that drops the
/// session unanswered can be replaced by another one.
///
/// A connect that succeeds proves little when an agent is dying: the kernel releases a killed
/// process's sockets one at a time, and its listener can still complete handshakes after the
/// agent's sessions were reset. HAProxy in TCP mode hands such a connection to the client,
/// which then waits out its reconnect backoff (up to 8 s for ovsdb-server). With the switch's
/// first flight (its TLS ClientHello) kept, the session is redispatched instead.
#[derive(Debug)]
pub struct Replay {
    armed: AtomicBool,
    sent: Mutex<Vec<u8>>,
}

impl Default for Replay {
    fn default() -> Self {
        Replay {
            armed: AtomicBool::new(true),
            sent: Mutex::new(Vec::new()),
        }
    }
}

impl Replay {
    /// Whether the session can still move: the agent has not spoken, the switch has neither
    /// closed its side nor sent more than [`REPLAY_LIMIT`].
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    /// A copy of what the switch sent, for the next backend.
    pub fn sent(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// Keeps `data` (the caller checked the replay is armed), or disarms past the limit.
    fn record(&self, data: &[u8]) {
        let mut sent = self.lock();
        if sent.len() + data.len() <= REPLAY_LIMIT {
            sent.extend_from_slice(data);
        } else {
            self.armed.store(false, Ordering::Relaxed);
            *sent = Vec::new();
        }
    }

    fn disarm(&self) {
        if self.armed.swap(false, Ordering::Relaxed) {
            *self.lock() = Vec::new();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // Nothing panics while the lock is held: a poisoned copy is still whole.
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which way a pump moves bytes, and so what its data means for the [`Replay`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Switch to agent: kept for replay while the agent has not answered.
    Up,
    /// Agent to switch: the first byte ends the replay.
    Down,
}

/// Copies `src` to `dst` until EOF on `src`; errors say which leg failed.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    way: Way,
    counter: &AtomicU64,
    ctl: &SessionCtl,
    size: usize,
    replay: &Replay,
) -> Result<(), PumpError> {
    let (src_side, dst_side) = match way {
        Way::Up => (Side::Client, Side::Server),
        Way::Down => (Side::Server, Side::Client),
    };
    let src_err = |err| PumpError {
        side: src_side,
        err,
    };
    loop {
        let ready = src
            .ready(tokio::io::Interest::READABLE)
            .await
            .map_err(src_err)?;
        // The peer's FIN is already here (EPOLLRDHUP): what is left to read is the last of
        // this direction, and the FIN follows it in the same segment (see `send`).
        let closing = ready.is_read_closed();
        let mut buf = bufpool::take(size);
        let outcome = loop {
            let n = match read_chunk(src, &mut buf, closing) {
                Ok(Chunk::Data(n)) => n,
                Ok(Chunk::Eof) => break Ok(true),
                Ok(Chunk::Drained) => break Ok(false),
                Err(e) => break Err(src_err(e)),
            };
            let data = buf.get(..n).unwrap_or_default();
            if replay.is_armed() {
                match way {
                    Way::Up => replay.record(data),
                    Way::Down => replay.disarm(),
                }
            }
            let last = closing && n < buf.len();
            if let Err(err) = write_all(dst, data, last).await {
                break Err(PumpError {
                    side: dst_side,
                    err,
                });
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
            ctl.touch();
            if n < buf.len() && !closing {
                break Ok(false);
            }
        };
        bufpool::give(buf);
        if outcome? {
            return Ok(());
        }
    }
}

/// What one read of a readable socket gave.
enum Chunk {
    Data(usize),
    Eof,
    /// Nothing more to read for now; tokio's readiness is cleared.
    Drained,
}

/// Reads once from `src`. A short read means the socket is drained: it is reported to tokio as
/// WouldBlock so that tokio clears the readiness (tick-safe: an edge that arrived meanwhile is
/// kept) and the caller's buffer goes back at once, without one more recv just to see EAGAIN.
/// Unless the FIN is here (`closing`): then the next recv returns 0 at once.
fn read_chunk(src: &TcpStream, buf: &mut [u8], closing: bool) -> io::Result<Chunk> {
    loop {
        let mut got = None;
        let r = src.try_io(tokio::io::Interest::READABLE, || {
            let n = recv(src, buf)?;
            got = Some(n);
            if n > 0 && n < buf.len() && !closing {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        return match (r, got) {
            (Ok(n), _) | (Err(_), Some(n)) if n > 0 => Ok(Chunk::Data(n)),
            (Ok(_), _) => Ok(Chunk::Eof),
            (Err(e), _) if e.kind() == io::ErrorKind::WouldBlock => Ok(Chunk::Drained),
            (Err(e), _) if e.kind() == io::ErrorKind::Interrupted => continue,
            (Err(e), _) => Err(e),
        };
    }
}

/// One recv(2) on the socket (non-blocking; tokio registered it).
fn recv(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: fd is live for the borrow of `s`; buf is valid for writes of buf.len() bytes.
    let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    byte_count(n)
}

/// A byte count returned by recv(2)/send(2), or the error it stands for.
fn byte_count(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Writes all of `data`. With `last` (the source's FIN has arrived and this is the rest of
/// its data) it goes with MSG_MORE: the kernel holds it for the `shutdown` that follows at
/// once, and the peer gets data and FIN in one segment, as from HAProxy (one packet, one
/// ACK and one wake-up fewer for the peer of every short session).
pub async fn write_all(dst: &TcpStream, mut data: &[u8], last: bool) -> io::Result<()> {
    let flags = if last { libc::MSG_MORE } else { 0 };
    while !data.is_empty() {
        match dst.try_io(tokio::io::Interest::WRITABLE, || send(dst, data, flags)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One send(2) on the socket: non-blocking, no SIGPIPE.
fn send(s: &TcpStream, data: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: fd is live for the borrow of `s`; data is valid for reads of data.len() bytes.
    let n = unsafe {
        libc::send(
            s.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            flags | libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    byte_count(n)
}

fn half_closed(ctl: &SessionCtl, waiting_for: Side) {
    let since = (ctl.started.elapsed().as_millis() as u64).max(1);
    ctl.fin_waiting.store(
        if waiting_for == Side::Client { 1 } else { 2 },
        Ordering::Relaxed,
    );
    ctl.fin_since_ms.store(since, Ordering::Relaxed);
}

/// Maps an outside kill to how the data phase ended (idle and fin timeouts come from the
/// sessions sweeper, see [`crate::session::Sessions::sweep`]).
fn killed_end(ctl: &SessionCtl, reason: KillReason) -> End {
    match reason {
        KillReason::Idle => End::Idle,
        KillReason::FinTimeout => End::FinTimeout {
            waiting_for: if ctl.fin_waiting.load(Ordering::Relaxed) == 1 {
                Side::Client
            } else {
                Side::Server
            },
        },
        other => End::Killed(other),
    }
}

/// Relays a plain TCP session until it ends; never holds a buffer or a timer while idle.
/// While `replay` is armed, an agent that drops the session before its first byte ends it as
/// [`End::Unanswered`] (the switch's leg untouched).
pub async fn relay_tcp(
    client: &TcpStream,
    server: &TcpStream,
    ctl: &SessionCtl,
    size: usize,
    replay: &Replay,
) -> End {
    let up = pump(client, server, Way::Up, &ctl.bytes_up, ctl, size, replay);
    let down = pump(
        server,
        client,
        Way::Down,
        &ctl.bytes_down,
        ctl,
        size,
        replay,
    );
    tokio::pin!(up, down);
    let mut up_done = false;
    let mut down_done = false;
    loop {
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => {
                    up_done = true;
                    // The switch's FIN goes on to the agent: nothing to replay any more.
                    replay.disarm();
                    // Both ways done: closing the sockets sends the FINs (no extra shutdown).
                    if down_done { return End::Closed }
                    let _ = shutdown_write(server);
                    half_closed(ctl, Side::Server);
                }
                Err(e) if e.side == Side::Server && replay.is_armed() => {
                    return End::Unanswered { reset: is_reset(&e.err) }
                }
                Err(e) => return End::Error { side: e.side, reset: is_reset(&e.err) },
            },
            r = &mut down, if !down_done => match r {
                Ok(()) if replay.is_armed() => return End::Unanswered { reset: false },
                Ok(()) => {
                    down_done = true;
                    if up_done { return End::Closed }
                    let _ = shutdown_write(client);
                    half_closed(ctl, Side::Client);
                }
                Err(e) if e.side == Side::Server && replay.is_armed() => {
                    return End::Unanswered { reset: is_reset(&e.err) }
                }
                Err(e) => return End::Error { side: e.side, reset: is_reset(&e.err) },
            },
            reason = ctl.killed() => return killed_end(ctl, reason),
        }
    }
}

/// Counts bytes through an async stream and remembers whether it failed.
pub struct Counted<'a, S> {
    pub inner: S,
    /// Counter for bytes *read* from this stream.
    pub read_counter: &'a AtomicU64,
    pub ctl: &'a SessionCtl,
    pub failed: Option<bool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    self.read_counter.fetch_add(n as u64, Ordering::Relaxed);
                    self.ctl.touch();
                }
            }
            Poll::Ready(Err(e)) => self.failed = Some(is_reset(e)),
            Poll::Pending => {}
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Err(e)) = &r {
            self.failed = Some(is_reset(e));
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Err(e)) = &r {
            self.failed = Some(is_reset(e));
        }
        r
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Relays two arbitrary streams (TLS legs) until they end, with kill and idle handling.
pub async fn relay_streams<A, B>(client: A, server: B, ctl: &SessionCtl, size: usize) -> End
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut a = Counted {
        inner: client,
        read_counter: &ctl.bytes_up,
        ctl,
        failed: None,
    };
    let mut b = Counted {
        inner: server,
        read_counter: &ctl.bytes_down,
        ctl,
        failed: None,
    };
    let size = size.min(16 * 1024);
    let result = {
        let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, size, size);
        tokio::pin!(copy);
        tokio::select! {
            r = &mut copy => Ok(r),
            reason = ctl.killed() => Err(killed_end(ctl, reason)),
        }
    };
    match result {
        Err(end) => end,
        Ok(Ok(_)) => End::Closed,
        Ok(Err(_)) => match (a.failed, b.failed) {
            (_, Some(reset)) => End::Error {
                side: Side::Server,
                reset,
            },
            (Some(reset), None) => End::Error {
                side: Side::Client,
                reset,
            },
            (None, None) => End::Error {
                side: Side::Server,
                reset: false,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::forward::sockopt::set_linger_zero;
    use crate::session::Sessions;

    /// A connected pair (the proxy's end, the far end) on loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (near, _) = l.accept().await.unwrap();
        (near, far)
    }

    /// The proxy's two legs of one session.
    struct Legs {
        client: TcpStream,
        server: TcpStream,
        ctl: Arc<SessionCtl>,
    }

    impl Legs {
        async fn relay(&self, replay: &Replay) -> End {
            tokio::time::timeout(
                Duration::from_secs(10),
                relay_tcp(&self.client, &self.server, &self.ctl, 4096, replay),
            )
            .await
            .expect("relay ended")
        }
    }

    /// The proxy's legs, the switch's end and the agent's end.
    async fn session() -> (Legs, TcpStream, TcpStream) {
        let (client, switch) = pair().await;
        let (server, agent) = pair().await;
        let ctl = Sessions::default().open("l".into(), "127.0.0.1:1".parse().unwrap());
        let legs = Legs {
            client,
            server,
            ctl,
        };
        (legs, switch, agent)
    }

    async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        s.read_exact(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn an_agent_closing_before_its_first_byte_leaves_the_session_movable() {
        for reset in [false, true] {
            let (legs, mut switch, mut agent) = session().await;
            let replay = Replay::default();
            switch.write_all(b"client hello").await.unwrap();
            let far = async {
                assert_eq!(read_n(&mut agent, 12).await, b"client hello");
                if reset {
                    set_linger_zero(&agent).unwrap();
                }
                drop(agent);
            };
            let (end, ()) = tokio::join!(legs.relay(&replay), far);
            assert_eq!(end, End::Unanswered { reset }, "reset: {reset}");
            assert!(replay.is_armed());
            assert_eq!(replay.sent(), b"client hello");
            // The switch's leg is untouched: no FIN reached it.
            let mut byte = [0u8; 1];
            let r = tokio::time::timeout(Duration::from_millis(50), switch.read(&mut byte)).await;
            assert!(r.is_err(), "the switch saw {r:?}");
        }
    }

    #[tokio::test]
    async fn the_agents_first_byte_ends_the_replay() {
        let (legs, mut switch, mut agent) = session().await;
        let replay = Replay::default();
        switch.write_all(b"hello").await.unwrap();
        let far = async {
            assert_eq!(read_n(&mut agent, 5).await, b"hello");
            agent.write_all(b"welcome").await.unwrap();
            drop(agent);
            assert_eq!(read_n(&mut switch, 7).await, b"welcome");
            switch.shutdown().await.unwrap();
        };
        let (end, ()) = tokio::join!(legs.relay(&replay), far);
        assert_eq!(end, End::Closed);
        assert!(!replay.is_armed());
        assert!(replay.sent().is_empty(), "the copy is freed");
    }

    #[tokio::test]
    async fn no_replay_once_the_switch_closed_its_side() {
        let (legs, mut switch, mut agent) = session().await;
        let replay = Replay::default();
        switch.write_all(b"bye").await.unwrap();
        switch.shutdown().await.unwrap();
        let far = async {
            let mut all = Vec::new();
            agent.read_to_end(&mut all).await.unwrap();
            assert_eq!(all, b"bye");
            drop(agent);
        };
        let (end, ()) = tokio::join!(legs.relay(&replay), far);
        assert_eq!(end, End::Closed);
        assert!(!replay.is_armed());
    }

    #[tokio::test]
    async fn no_replay_once_the_switch_sent_more_than_the_limit() {
        let (legs, mut switch, mut agent) = session().await;
        let replay = Replay::default();
        let big = vec![7u8; REPLAY_LIMIT + 1];
        let far = async {
            switch.write_all(&big).await.unwrap();
            assert_eq!(read_n(&mut agent, big.len()).await, big);
            drop(agent);
            switch.shutdown().await.unwrap();
        };
        let (end, ()) = tokio::join!(legs.relay(&replay), far);
        assert_eq!(end, End::Closed);
        assert!(!replay.is_armed());
        assert!(replay.sent().is_empty());
    }
}
