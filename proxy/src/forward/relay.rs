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
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

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

#[derive(Debug, Clone, Copy)]
pub struct RelayParams {
    pub buffer_size: usize,
    pub idle: Duration,
    pub fin: Duration,
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
        src.readable().await.map_err(src_err)?;
        let mut buf = bufpool::take(size);
        let outcome = loop {
            match src.try_read(&mut buf) {
                Ok(0) => break Ok(true),
                Ok(n) => {
                    let data = buf.get(..n).unwrap_or_default();
                    if let Err(err) = write_all(dst, data).await {
                        break Err(PumpError {
                            side: dst_side,
                            err,
                        });
                    }
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    ctl.touch();
                    // A short read means the socket is drained: give the buffer back now.
                    if n < buf.len() {
                        break Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(src_err(e)),
            }
        };
        bufpool::give(buf);
        if outcome? {
            return Ok(());
        }
    }
}

async fn write_all(dst: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match dst.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// When the timer must next look at the session.
fn deadline(ctl: &SessionCtl, p: &RelayParams, fin_since: Option<Instant>) -> Option<Instant> {
    let idle = (!p.idle.is_zero()).then(|| {
        let last = Duration::from_millis(ctl.last_activity_ms.load(Ordering::Relaxed));
        Instant::from_std(ctl.started) + last + p.idle
    });
    let fin = fin_since.filter(|_| !p.fin.is_zero()).map(|t| t + p.fin);
    match (idle, fin) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Relays a plain TCP session until it ends; never holds a buffer while idle.
pub async fn relay_tcp(
    client: &TcpStream,
    server: &TcpStream,
    ctl: &SessionCtl,
    p: RelayParams,
) -> End {
    let up = pump(
        client,
        server,
        Side::Client,
        Side::Server,
        &ctl.bytes_up,
        ctl,
        p.buffer_size,
    );
    let down = pump(
        server,
        client,
        Side::Server,
        Side::Client,
        &ctl.bytes_down,
        ctl,
        p.buffer_size,
    );
    tokio::pin!(up, down);
    let mut up_done = false;
    let mut down_done = false;
    let mut fin_since = None;
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let timer = tokio::time::sleep_until(deadline(ctl, &p, None).unwrap_or(far));
    tokio::pin!(timer);
    loop {
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => {
                    up_done = true;
                    let _ = shutdown_write(server);
                    if down_done { return End::Closed }
                    fin_since = Some(Instant::now());
                    timer.as_mut().reset(deadline(ctl, &p, fin_since).unwrap_or(far));
                }
                Err(e) => return End::Error { side: e.side, reset: is_reset(&e.err) },
            },
            r = &mut down, if !down_done => match r {
                Ok(()) => {
                    down_done = true;
                    let _ = shutdown_write(client);
                    if up_done { return End::Closed }
                    fin_since = Some(Instant::now());
                    timer.as_mut().reset(deadline(ctl, &p, fin_since).unwrap_or(far));
                }
                Err(e) => return End::Error { side: e.side, reset: is_reset(&e.err) },
            },
            reason = ctl.killed() => return End::Killed(reason),
            _ = &mut timer => {
                let now = Instant::now();
                if let Some(since) = fin_since {
                    if !p.fin.is_zero() && now >= since + p.fin {
                        return End::FinTimeout { waiting_for: if up_done { Side::Server } else { Side::Client } };
                    }
                }
                match deadline(ctl, &p, fin_since) {
                    Some(d) if d <= now && !p.idle.is_zero() => return End::Idle,
                    Some(d) => timer.as_mut().reset(d),
                    None => timer.as_mut().reset(far),
                }
            }
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
pub async fn relay_streams<A, B>(client: A, server: B, ctl: &SessionCtl, p: RelayParams) -> End
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
    let size = p.buffer_size.min(16 * 1024);
    let result = {
        let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, size, size);
        tokio::pin!(copy);
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        let timer = tokio::time::sleep_until(deadline(ctl, &p, None).unwrap_or(far));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                r = &mut copy => break Ok(r),
                reason = ctl.killed() => break Err(End::Killed(reason)),
                _ = &mut timer => match deadline(ctl, &p, None) {
                    Some(d) if d <= Instant::now() => break Err(End::Idle),
                    Some(d) => timer.as_mut().reset(d),
                    None => timer.as_mut().reset(far),
                },
            }
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
