//! Moving bytes between the switch and the agent.
//!
//! Plain TCP (passthrough): each direction waits for readiness with no buffer, borrows one from
//! [`bufpool`] only while the socket has data, and returns it as soon as the socket would block;
//! an idle session therefore holds two sockets and a small task, never copy buffers.
//! TLS-terminated sessions relay through tokio's copy loop over rustls streams.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

#[derive(Debug)]
struct PumpError {
    side: Side,
    err: io::Error,
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// Copies `src` to `dst` until EOF on `src`; errors say which leg failed.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    src_side: Side,
    dst_side: Side,
    counter: &AtomicU64,
    ctl: &SessionCtl,
    size: usize,
) -> Result<(), PumpError> {
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
            // A short read means the socket is drained: report it to tokio as WouldBlock so
            // that it clears the readiness (tick-safe: an edge that arrived meanwhile is kept)
            // and the buffer goes back at once, without one more recv just to see EAGAIN.
            // Unless the FIN is here: then the next recv returns 0 at once.
            let mut got = None;
            let r = src.try_io(tokio::io::Interest::READABLE, || {
                let n = recv(src, &mut buf)?;
                got = Some(n);
                if n > 0 && n < buf.len() && !closing {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(n)
                }
            });
            let n = match (r, got) {
                (Ok(0), _) => break Ok(true),
                (Ok(n), _) | (Err(_), Some(n)) if n > 0 => n,
                (Err(e), _) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                (Err(e), _) if e.kind() == io::ErrorKind::Interrupted => continue,
                (Err(e), _) => break Err(src_err(e)),
                (Ok(_), _) => break Ok(true),
            };
            let data = buf.get(..n).unwrap_or_default();
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
async fn write_all(dst: &TcpStream, mut data: &[u8], last: bool) -> io::Result<()> {
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
pub async fn relay_tcp(
    client: &TcpStream,
    server: &TcpStream,
    ctl: &SessionCtl,
    size: usize,
) -> End {
    let up = pump(
        client,
        server,
        Side::Client,
        Side::Server,
        &ctl.bytes_up,
        ctl,
        size,
    );
    let down = pump(
        server,
        client,
        Side::Server,
        Side::Client,
        &ctl.bytes_down,
        ctl,
        size,
    );
    tokio::pin!(up, down);
    let mut up_done = false;
    let mut down_done = false;
    loop {
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => {
                    up_done = true;
                    // Both ways done: closing the sockets sends the FINs (no extra shutdown).
                    if down_done { return End::Closed }
                    let _ = shutdown_write(server);
                    half_closed(ctl, Side::Server);
                }
                Err(e) => return End::Error { side: e.side, reset: is_reset(&e.err) },
            },
            r = &mut down, if !down_done => match r {
                Ok(()) => {
                    down_done = true;
                    if up_done { return End::Closed }
                    let _ = shutdown_write(client);
                    half_closed(ctl, Side::Client);
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
