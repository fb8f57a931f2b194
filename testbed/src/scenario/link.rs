//! Fault-injecting TCP relays ("links") placed in the paths between the proxy and an agent
//! and between an agent and its control nodes, so partitions need no network namespaces.
//!
//! A link has one or more relays (ports) that are cut and healed together:
//! - `Up`: bytes are copied both ways; a half-close is passed on as a half-close.
//! - `Blackhole`: nothing is forwarded either way and the sockets stay open, as when a cable
//!   is cut or a firewall drops packets: the peers only notice through their own timeouts.
//!   New connections are accepted and held (a handshake that never completes). Healing
//!   resumes forwarding, so a short partition is survived as TCP would survive it.
//! - `Reset`: every connection is reset (RST to both sides) and new ones are reset at once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::debug;

use super::spec::CutMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Up,
    Cut(CutMode),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const BUF: usize = 64 * 1024;

struct Relay {
    listen: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
}

/// A named link; dropping it (or [`Link::shutdown`]) closes every relay and connection.
pub struct Link {
    pub name: String,
    state: watch::Sender<LinkState>,
    relays: Vec<Relay>,
    tasks: Mutex<JoinSet<()>>,
}

impl Link {
    /// Starts one relay per upstream, each on an ephemeral loopback port, served by the
    /// runtime `rt` (sockets are registered with it, so give links a runtime of their own).
    pub fn start(rt: &Handle, name: &str, upstreams: &[SocketAddr]) -> std::io::Result<Link> {
        let (state, _) = watch::channel(LinkState::Up);
        let mut relays = Vec::new();
        let mut tasks = JoinSet::new();
        for up in upstreams {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            let listen = listener.local_addr()?;
            let upstream = Arc::new(Mutex::new(*up));
            let state = state.subscribe();
            let u = upstream.clone();
            tasks.spawn_on(
                async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => accept_loop(l, u, state).await,
                        Err(e) => debug!(error = %e, "link listener"),
                    }
                },
                rt,
            );
            relays.push(Relay { listen, upstream });
        }
        Ok(Link {
            name: name.to_string(),
            state,
            relays,
            tasks: Mutex::new(tasks),
        })
    }

    /// Where relay `i` listens (what the peer dials instead of the upstream).
    pub fn listen_addr(&self, i: usize) -> Option<SocketAddr> {
        self.relays.get(i).map(|r| r.listen)
    }

    /// Points relay `i` at a new upstream (for connections made from now on).
    pub fn set_upstream(&self, i: usize, addr: SocketAddr) {
        if let Some(r) = self.relays.get(i) {
            *r.upstream.lock().unwrap_or_else(|p| p.into_inner()) = addr;
        }
    }

    pub fn set(&self, s: LinkState) {
        debug!(link = %self.name, state = ?s, "link state");
        let _ = self.state.send(s);
    }

    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    pub fn shutdown(&self) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: Arc<Mutex<SocketAddr>>,
    state: watch::Receiver<LinkState>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let _ = client.set_nodelay(true);
                    let up = *upstream.lock().unwrap_or_else(|p| p.into_inner());
                    conns.spawn(connection(client, up, state.clone()));
                }
                Err(e) => {
                    debug!(error = %e, "link accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Zero linger: the close that follows sends a reset (and never blocks, as a non-zero
/// linger would, which is what the deprecation warns about).
#[allow(deprecated)]
fn reset(s: &TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
}

/// Waits until the link is up; `false` when it is reset meanwhile.
async fn wait_up(state: &mut watch::Receiver<LinkState>) -> bool {
    loop {
        let s = *state.borrow_and_update();
        match s {
            LinkState::Up => return true,
            LinkState::Cut(CutMode::Reset) => return false,
            LinkState::Cut(CutMode::Blackhole) => {
                if state.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut state: watch::Receiver<LinkState>,
) {
    // A connection made while cut waits (blackhole) or is reset.
    if !wait_up(&mut state).await {
        reset(&client);
        return;
    }
    let server = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await {
        Ok(Ok(s)) => s,
        _ => {
            // The upstream refuses: the client sees a reset, as it would dialling it directly.
            reset(&client);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let clean = {
        let up = pump(&mut cr, &mut sw, state.clone());
        let down = pump(&mut sr, &mut cw, state.clone());
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (None, None);
        while up_done.is_none() || down_done.is_none() {
            tokio::select! {
                r = &mut up, if up_done.is_none() => {
                    if r == Pumped::Reset { break; }
                    up_done = Some(r);
                }
                r = &mut down, if down_done.is_none() => {
                    if r == Pumped::Reset { break; }
                    down_done = Some(r);
                }
            }
        }
        up_done == Some(Pumped::Eof) && down_done == Some(Pumped::Eof)
    };
    if !clean {
        // Cut with reset, or one peer failed: both see a reset.
        reset(cw.as_ref());
        reset(sw.as_ref());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pumped {
    /// The reader closed its side; the close was passed on.
    Eof,
    Reset,
}

/// Copies one direction while the link is up; holds bytes while it is blackholed.
async fn pump(
    r: &mut OwnedReadHalf,
    w: &mut OwnedWriteHalf,
    mut state: watch::Receiver<LinkState>,
) -> Pumped {
    let mut buf = vec![0u8; BUF];
    loop {
        if !wait_up(&mut state).await {
            return Pumped::Reset;
        }
        let n = tokio::select! {
            res = r.read(&mut buf) => match res {
                Ok(n) => n,
                Err(_) => return Pumped::Reset,
            },
            changed = state.changed() => {
                if changed.is_err() { return Pumped::Reset; }
                continue;
            }
        };
        if n == 0 {
            let _ = w.shutdown().await;
            return Pumped::Eof;
        }
        if !wait_up(&mut state).await {
            return Pumped::Reset;
        }
        let data = buf.get(..n).unwrap_or_default();
        if w.write_all(data).await.is_err() {
            return Pumped::Reset;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut buf = vec![0u8; msg.len()];
        match tokio::time::timeout(wait, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf),
            _ => None,
        }
    }

    #[tokio::test]
    async fn forwards_blackholes_heals_and_resets() {
        let echo = echo_server().await;
        let link = Link::start(&Handle::current(), "t", &[echo]).unwrap();
        let at = link.listen_addr(0).unwrap();
        let mut c = TcpStream::connect(at).await.unwrap();
        let long = Duration::from_secs(5);
        assert_eq!(roundtrip(&mut c, b"one", long).await.unwrap(), b"one");

        // Blackhole: nothing comes back, the socket stays open.
        link.set(LinkState::Cut(CutMode::Blackhole));
        assert_eq!(
            roundtrip(&mut c, b"two", Duration::from_millis(300)).await,
            None
        );
        // A new connection is accepted but goes nowhere.
        let mut held = TcpStream::connect(at).await.unwrap();
        assert_eq!(
            roundtrip(&mut held, b"h", Duration::from_millis(200)).await,
            None
        );
        // Healing delivers what was held, in order.
        link.set(LinkState::Up);
        let mut buf = [0u8; 3];
        tokio::time::timeout(long, c.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"two");
        let mut b1 = [0u8; 1];
        tokio::time::timeout(long, held.read_exact(&mut b1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b1, b"h");

        // Reset: the client sees its connection reset (or closed) at once.
        link.set(LinkState::Cut(CutMode::Reset));
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(long, c.read(&mut buf)).await.unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        // New connections are reset too.
        let mut n = TcpStream::connect(at).await.unwrap();
        let r = tokio::time::timeout(long, n.read(&mut buf)).await.unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        link.set(LinkState::Up);
        let mut again = TcpStream::connect(at).await.unwrap();
        assert_eq!(roundtrip(&mut again, b"ok", long).await.unwrap(), b"ok");
    }

    #[tokio::test]
    async fn refused_upstream_is_a_reset_and_upstream_can_move() {
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let link = Link::start(&Handle::current(), "t", &[dead]).unwrap();
        let at = link.listen_addr(0).unwrap();
        let mut c = TcpStream::connect(at).await.unwrap();
        let mut buf = [0u8; 4];
        let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        let echo = echo_server().await;
        link.set_upstream(0, echo);
        let mut c = TcpStream::connect(at).await.unwrap();
        assert_eq!(
            roundtrip(&mut c, b"moved", Duration::from_secs(5))
                .await
                .unwrap(),
            b"moved"
        );
    }
}
