//! Affinity sync between the two proxies of a pair.
//!
//! Protocol: newline-delimited JSON over mutual TLS (both sides verify the other against the
//! configured CA). Each proxy dials every configured peer and *pushes* its table over that
//! outgoing link; it *receives* on the links peers opened to it. So each direction has exactly
//! one writer and a link coming back always starts with a full resync from the side that dialled.
//!
//! ```text
//! -> {"t":"hello","node":"proxy-a","proto":1}      <- {"t":"hello","node":"proxy-b","proto":1}
//! -> {"t":"resync_begin"}  {"t":"update","key":"10.0.0.7","entry":{...}} ...  {"t":"resync_end","count":N}
//! -> {"t":"update",...}   (each later change)
//! -> {"t":"ping"}          <- {"t":"pong"}         (every 5 s; 15 s of silence = link down)
//! ```
//! Lines are at most [`MAX_LINE`] bytes; anything malformed closes the link with a logged
//! reason and counts as an error.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{info, warn};

use super::{AffinityTable, Entry};
use crate::config::PeerConfig;
use crate::runtime::Runtime;

pub const MAX_LINE: usize = 4096;
const PROTO: u32 = 1;
const PING_EVERY: Duration = Duration::from_secs(5);
const SILENCE_LIMIT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Msg {
    Hello { node: String, proto: u32 },
    ResyncBegin,
    Update { key: String, entry: Entry },
    ResyncEnd { count: u64 },
    Ping,
    Pong,
}

/// Link state and counters of one configured peer.
#[derive(Debug)]
pub struct PeerStats {
    pub name: String,
    pub addresses: Vec<SocketAddr>,
    state: Mutex<&'static str>,
    current: Mutex<Option<SocketAddr>>,
    last_error: Mutex<Option<String>>,
    pub incoming_up: AtomicBool,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub errors: AtomicU64,
    pub resyncs: AtomicU64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerView {
    pub name: String,
    pub addresses: Vec<String>,
    pub state: String,
    pub current: Option<String>,
    pub incoming: bool,
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    pub resyncs: u64,
    pub last_error: Option<String>,
}

impl PeerStats {
    pub fn new(name: String, addresses: Vec<SocketAddr>) -> PeerStats {
        PeerStats {
            name,
            addresses,
            state: Mutex::new("down"),
            current: Mutex::new(None),
            last_error: Mutex::new(None),
            incoming_up: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
        }
    }

    fn set_state(&self, s: &'static str, addr: Option<SocketAddr>) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = addr;
    }

    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    pub fn state(&self) -> &'static str {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn view(&self) -> PeerView {
        PeerView {
            name: self.name.clone(),
            addresses: self.addresses.iter().map(|a| a.to_string()).collect(),
            state: self.state().to_string(),
            current: (*self.current.lock().unwrap_or_else(|p| p.into_inner()))
                .map(|a| a.to_string()),
            incoming: self.incoming_up.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Reads one `\n`-terminated line of at most `max` bytes; `Ok(None)` at a clean EOF.
pub async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "line cut by EOF",
                ))
            };
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if line.len() + take > max + 1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line longer than {max} bytes"),
            ));
        }
        line.extend_from_slice(available.get(..take).unwrap_or_default());
        r.consume(take);
        if done {
            line.pop();
            return Ok(Some(line));
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, msg: &Msg) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

async fn recv<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Option<Msg>, String> {
    match read_line_bounded(r, MAX_LINE).await {
        Ok(None) => Ok(None),
        Ok(Some(line)) => serde_json::from_slice(&line)
            .map(Some)
            .map_err(|e| format!("bad message: {e}")),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Sends the whole table, framed so the receiver can log the resync.
async fn full_resync<W: AsyncWrite + Unpin>(
    w: &mut W,
    table: &AffinityTable,
    stats: &PeerStats,
) -> std::io::Result<u64> {
    let snapshot = table.snapshot();
    let mut out = tokio::io::BufWriter::new(w);
    send(&mut out, &Msg::ResyncBegin).await?;
    for u in &snapshot {
        send(
            &mut out,
            &Msg::Update {
                key: u.key.clone(),
                entry: u.entry.clone(),
            },
        )
        .await?;
    }
    let count = snapshot.len() as u64;
    send(&mut out, &Msg::ResyncEnd { count }).await?;
    out.flush().await?;
    stats.sent.fetch_add(count, Ordering::Relaxed);
    stats.resyncs.fetch_add(1, Ordering::Relaxed);
    Ok(count)
}

/// Accepts peers' links and merges what they push.
pub async fn serve(
    rt: Arc<Runtime>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, addr)) => {
                    let rt = rt.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        if let Err(e) = incoming(rt, tcp, acceptor).await {
                            warn!(peer_addr = %addr, error = %e, "peer link (incoming) closed");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

async fn incoming(rt: Arc<Runtime>, tcp: TcpStream, acceptor: TlsAcceptor) -> Result<(), String> {
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (r, mut w) = tokio::io::split(tls);
    let mut r = BufReader::new(r);
    let hello = tokio::time::timeout(CONNECT_TIMEOUT, recv(&mut r))
        .await
        .map_err(|_| "no hello".to_string())??;
    let Some(Msg::Hello { node, proto }) = hello else {
        return Err("first message is not hello".into());
    };
    let Some(stats) = rt.peers.iter().find(|p| p.name == node).cloned() else {
        return Err(format!("unknown peer {node:?} (not in [[peer]])"));
    };
    if proto != PROTO {
        stats.error(format!("protocol {proto} unsupported"));
        return Err(format!("peer {node}: protocol {proto} unsupported"));
    }
    send(
        &mut w,
        &Msg::Hello {
            node: rt.node.clone(),
            proto: PROTO,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    stats.incoming_up.store(true, Ordering::Relaxed);
    info!(peer = %node, "peer link (incoming) up");
    let result = async {
        loop {
            let msg = tokio::time::timeout(SILENCE_LIMIT, recv(&mut r))
                .await
                .map_err(|_| "peer silent".to_string())??;
            match msg {
                None => return Ok(()),
                Some(Msg::Update { key, entry }) => {
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    rt.affinity.merge(&key, entry);
                }
                Some(Msg::Ping) => send(&mut w, &Msg::Pong).await.map_err(|e| e.to_string())?,
                Some(Msg::ResyncBegin) => info!(peer = %node, "full resync from peer starting"),
                Some(Msg::ResyncEnd { count }) => {
                    info!(peer = %node, count, "full resync from peer done")
                }
                Some(Msg::Hello { .. } | Msg::Pong) => return Err("unexpected message".to_string()),
            }
        }
    }
    .await;
    stats.incoming_up.store(false, Ordering::Relaxed);
    if let Err(e) = &result {
        stats.error(e.clone());
    }
    result
}

/// Keeps the outgoing link to one peer up, pushing a full resync each time it (re)connects.
pub async fn link(
    rt: Arc<Runtime>,
    peer: PeerConfig,
    stats: Arc<PeerStats>,
    connector: TlsConnector,
    reconnect: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut i = 0usize;
    loop {
        let Some(&addr) = peer.addresses.get(i % peer.addresses.len().max(1)) else {
            return;
        };
        i = i.wrapping_add(1);
        stats.set_state("connecting", Some(addr));
        let result = tokio::select! {
            r = outgoing(&rt, &peer, &stats, &connector, addr) => r,
            _ = stop.changed() => return,
        };
        stats.set_state("down", None);
        if let Err(e) = result {
            warn!(peer = %peer.name, %addr, error = %e, "peer link (outgoing) down");
            stats.error(e);
        }
        tokio::select! {
            _ = tokio::time::sleep(reconnect) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn outgoing(
    rt: &Runtime,
    peer: &PeerConfig,
    stats: &PeerStats,
    connector: &TlsConnector,
    addr: SocketAddr,
) -> Result<(), String> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = crate::tls::server_name(peer.server_name.as_deref(), addr.ip());
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (r, mut w) = tokio::io::split(tls);
    let mut r = BufReader::new(r);
    send(
        &mut w,
        &Msg::Hello {
            node: rt.node.clone(),
            proto: PROTO,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    match tokio::time::timeout(CONNECT_TIMEOUT, recv(&mut r))
        .await
        .map_err(|_| "no hello".to_string())??
    {
        Some(Msg::Hello { node, .. }) if node == peer.name => {}
        Some(Msg::Hello { node, .. }) => {
            return Err(format!(
                "expected peer {:?}, {addr} says it is {node:?}",
                peer.name
            ))
        }
        _ => return Err("peer did not say hello".into()),
    }
    // Subscribe before the snapshot so that no change falls between the two.
    let mut updates = rt.affinity.subscribe();
    let count = full_resync(&mut w, &rt.affinity, stats)
        .await
        .map_err(|e| e.to_string())?;
    stats.set_state("up", Some(addr));
    info!(peer = %peer.name, %addr, entries = count, "peer link (outgoing) up, full resync sent");
    // Reads run in their own task: a line reader is not cancel-safe inside select!.
    let (tx, mut heard) = tokio::sync::mpsc::channel::<Result<Option<Msg>, String>>(4);
    let reader = tokio::spawn(async move {
        loop {
            let m = recv(&mut r).await;
            let stop = !matches!(m, Ok(Some(_)));
            if tx.send(m).await.is_err() || stop {
                return;
            }
        }
    });
    let _abort_reader = AbortOnDrop(reader);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            u = updates.recv() => match u {
                Ok(u) => {
                    send(&mut w, &Msg::Update { key: u.key, entry: u.entry }).await.map_err(|e| e.to_string())?;
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(peer = %peer.name, missed = n, "peer link lagged; full resync");
                    full_resync(&mut w, &rt.affinity, stats).await.map_err(|e| e.to_string())?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    return Err("peer silent".into());
                }
                send(&mut w, &Msg::Ping).await.map_err(|e| e.to_string())?;
            }
            m = heard.recv() => match m {
                Some(Ok(Some(Msg::Pong))) => last_heard = tokio::time::Instant::now(),
                Some(Ok(Some(_))) => return Err("unexpected message".into()),
                Some(Err(e)) => return Err(e),
                Some(Ok(None)) | None => return Err("closed by peer".into()),
            },
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_lines() {
        let data = b"{\"t\":\"ping\"}\nabc".to_vec();
        let mut r = BufReader::new(&data[..]);
        assert_eq!(recv(&mut r).await.unwrap(), Some(Msg::Ping));
        assert!(read_line_bounded(&mut r, 10).await.is_err(), "cut by EOF");
        let long = vec![b'x'; MAX_LINE + 10];
        let mut r = BufReader::new(&long[..]);
        assert!(read_line_bounded(&mut r, MAX_LINE).await.is_err());
        let mut r = BufReader::new(&b"not json\n"[..]);
        assert!(recv(&mut r).await.is_err());
        let mut r = BufReader::new(&b""[..]);
        assert_eq!(recv(&mut r).await.unwrap(), None);
    }

    #[test]
    fn messages_round_trip() {
        let m = Msg::Update {
            key: "10.0.0.7".into(),
            entry: Entry {
                backend: "agent1".into(),
                version: 3,
                node: "a".into(),
                updated_unix_ms: 9,
            },
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.starts_with("{\"t\":\"update\""), "{text}");
        assert_eq!(serde_json::from_str::<Msg>(&text).unwrap(), m);
    }
}
