//! Listeners and sessions: accept, pick a backend (affinity, then least-connections), connect
//! with retry and redispatch, relay, and log one tcplog line per session.

pub mod bufpool;
pub mod relay;
pub mod sockopt;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{info, warn, Instrument};

use crate::backend::{unix_ms, Backend, Lease};
use crate::config::ListenerMode;
use crate::runtime::{ListenerInfo, Runtime, Settings};
use crate::session::{KillReason, SessionCtl, SessionRecord, Termination};
use relay::{End, RelayParams, Side};

/// A bound listener ready to serve.
pub struct Listener {
    pub info: Arc<ListenerInfo>,
    pub socket: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

/// Accepts until `stop` turns true.
pub async fn serve(
    rt: Arc<Runtime>,
    l: Listener,
    limit: Option<Arc<Semaphore>>,
    mut stop: watch::Receiver<bool>,
) {
    let Listener { info, socket, tls } = l;
    loop {
        let permit = match &limit {
            Some(sem) => tokio::select! {
                p = sem.clone().acquire_owned() => match p { Ok(p) => Some(p), Err(_) => return },
                _ = stop.changed() => return,
            },
            None => None,
        };
        tokio::select! {
            r = socket.accept() => match r {
                Ok((stream, peer)) => {
                    info.accepted.fetch_add(1, Ordering::Relaxed);
                    let span = tracing::info_span!("session", listener = %info.name, client = %peer);
                    tokio::spawn(session(rt.clone(), info.clone(), tls.clone(), stream, peer, permit).instrument(span));
                }
                Err(e) => {
                    // EMFILE and friends: keep serving the existing sessions, retry shortly.
                    warn!(listener = %info.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

struct Connected<S> {
    lease: Lease,
    stream: S,
    retries: u32,
    tc_ms: i64,
}

struct Failed {
    retries: u32,
    termination: Termination,
    tc_ms: i64,
}

/// Leases a backend and connects, redispatching each failure to another backend; when every
/// usable backend has failed once, waits min(connect timeout, 1 s) and starts over (HAProxy's
/// retry turn-around), up to `retries` extra attempts.
async fn connect<S, F, Fut>(
    rt: &Runtime,
    switch: &str,
    s: &Settings,
    establish: F,
) -> Result<Connected<S>, Failed>
where
    F: Fn(Arc<Backend>, SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<S>>,
{
    let preferred = if s.affinity.enabled {
        rt.affinity.lookup(switch)
    } else {
        None
    };
    let started = Instant::now();
    let mut excluded: Vec<Arc<Backend>> = Vec::new();
    let mut failures = 0u32;
    loop {
        let lease = match rt.pool.select(preferred.as_deref(), &excluded) {
            Some(l) => l,
            None if !excluded.is_empty() && failures <= s.timeouts.retries => {
                tokio::time::sleep(s.timeouts.connect.min(Duration::from_secs(1))).await;
                excluded.clear();
                match rt.pool.select(preferred.as_deref(), &excluded) {
                    Some(l) => l,
                    None => {
                        return Err(Failed {
                            retries: failures,
                            termination: Termination('S', 'C'),
                            tc_ms: -1,
                        })
                    }
                }
            }
            None => {
                return Err(Failed {
                    retries: failures,
                    termination: if failures == 0 {
                        Termination('P', 'C')
                    } else {
                        Termination('S', 'C')
                    },
                    tc_ms: -1,
                })
            }
        };
        let b = lease.backend().clone();
        let addr = b.settings().addr;
        let err = match tokio::time::timeout(s.timeouts.connect, establish(b.clone(), addr)).await {
            Ok(Ok(stream)) => {
                return Ok(Connected {
                    lease,
                    stream,
                    retries: failures,
                    tc_ms: started.elapsed().as_millis() as i64,
                })
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("timeout after {} ms", s.timeouts.connect.as_millis()),
        };
        drop(lease);
        b.connect_errors.fetch_add(1, Ordering::Relaxed);
        rt.on_connect_error(&b);
        failures += 1;
        warn!(backend = %b.name, %addr, error = %err, attempt = failures, "backend connect failed; redispatching");
        excluded.push(b);
        if failures > s.timeouts.retries {
            return Err(Failed {
                retries: failures - 1,
                termination: Termination('S', 'C'),
                tc_ms: -1,
            });
        }
    }
}

async fn tcp_connect(addr: SocketAddr, s: &Settings) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let _ = sockopt::set_keepalive(&stream, &s.keepalive);
    Ok(stream)
}

fn relay_params(s: &Settings) -> RelayParams {
    RelayParams {
        buffer_size: s.buffer_size,
        idle: s.timeouts.idle,
        fin: s.timeouts.fin,
    }
}

/// Maps how the data phase ended to a termination code; flags the backend when suspicious.
fn finish(rt: &Runtime, b: &Arc<Backend>, end: End) -> Termination {
    match end {
        End::Closed {
            first: Side::Client,
        } => Termination::NORMAL,
        End::Closed {
            first: Side::Server,
        } => {
            // Agents rarely close a switch's session: make sure the agent is still alive.
            rt.suspect(b);
            Termination::NORMAL
        }
        End::Error {
            side: Side::Client, ..
        } => Termination('C', 'D'),
        End::Error {
            side: Side::Server,
            reset,
        } => {
            if reset {
                rt.suspect(b);
            }
            Termination('S', 'D')
        }
        End::Idle => Termination('c', 'D'),
        End::FinTimeout {
            waiting_for: Side::Server,
        } => Termination('s', 'D'),
        End::FinTimeout {
            waiting_for: Side::Client,
        } => Termination('c', 'D'),
        End::Killed(KillReason::BackendDown) => Termination('D', 'D'),
        End::Killed(KillReason::Admin | KillReason::Shutdown) => Termination('K', 'D'),
    }
}

async fn session(
    rt: Arc<Runtime>,
    info: Arc<ListenerInfo>,
    tls: Option<TlsAcceptor>,
    client: TcpStream,
    peer: SocketAddr,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let ctl = rt.sessions.open(info.name.clone(), peer);
    let s = rt.settings();
    let _ = client.set_nodelay(true);
    let _ = sockopt::set_keepalive(&client, &s.keepalive);
    let mut rec = SessionRecord {
        client: peer,
        accept_unix_ms: ctl.started_unix_ms,
        listener: info.name.to_string(),
        backend: None,
        backend_addr: None,
        tw_ms: 0,
        tc_ms: -1,
        tt_ms: 0,
        bytes_up: 0,
        bytes_down: 0,
        termination: Termination::NORMAL,
        active_conns: 0,
        backend_conns: 0,
        retries: 0,
        switch: String::new(),
    };
    match (info.mode, tls) {
        (ListenerMode::Terminate, Some(acceptor)) => {
            terminate(&rt, &info, acceptor, client, &ctl, &s, &mut rec).await
        }
        _ => passthrough(&rt, client, &ctl, &s, &mut rec).await,
    }
    rec.tt_ms = ctl.started.elapsed().as_millis() as u64;
    rec.bytes_up = ctl.bytes_up.load(Ordering::Relaxed);
    rec.bytes_down = ctl.bytes_down.load(Ordering::Relaxed);
    rec.active_conns = rt.sessions.len();
    rt.sessions.close(ctl.id);
    rt.bytes_up.fetch_add(rec.bytes_up, Ordering::Relaxed);
    rt.bytes_down.fetch_add(rec.bytes_down, Ordering::Relaxed);
    rt.count_termination(rec.termination);
    info!(
        target: "tor_proxy::session",
        switch = %rec.switch,
        backend = rec.backend.as_deref().unwrap_or("<NOSRV>"),
        termination = %rec.termination.code(),
        bytes_up = rec.bytes_up,
        bytes_down = rec.bytes_down,
        duration_ms = rec.tt_ms,
        "{}",
        rec.tcplog()
    );
}

fn set_backend(ctl: &SessionCtl, rec: &mut SessionRecord, lease: &Lease, retries: u32, tc_ms: i64) {
    let b = lease.backend();
    let _ = ctl.backend.set(b.clone());
    rec.backend = Some(b.name.clone());
    rec.backend_addr = Some(b.settings().addr);
    rec.retries = retries;
    rec.tc_ms = tc_ms;
    rec.backend_conns = b.current();
}

async fn passthrough(
    rt: &Runtime,
    client: TcpStream,
    ctl: &SessionCtl,
    s: &Settings,
    rec: &mut SessionRecord,
) {
    let switch = ctl.client.ip().to_string();
    let _ = ctl.switch.set(switch.clone());
    rec.switch = switch.clone();
    let conn = connect(rt, &switch, s, |_, addr| tcp_connect(addr, s)).await;
    let c = match conn {
        Ok(c) => c,
        Err(f) => {
            rec.termination = f.termination;
            rec.retries = f.retries;
            rec.tc_ms = f.tc_ms;
            return;
        }
    };
    set_backend(ctl, rec, &c.lease, c.retries, c.tc_ms);
    let b = c.lease.backend().clone();
    if s.affinity.enabled {
        rt.affinity.record(&switch, &b.name, unix_ms());
    }
    let end = relay::relay_tcp(&client, &c.stream, ctl, relay_params(s)).await;
    if let End::Killed(_) = end {
        // The agent is gone or dismissed: reset our leg to it instead of lingering in FIN_WAIT.
        let _ = sockopt::set_linger_zero(&c.stream);
    }
    rec.termination = finish(rt, &b, end);
    drop(c);
}

async fn terminate(
    rt: &Runtime,
    info: &ListenerInfo,
    acceptor: TlsAcceptor,
    client: TcpStream,
    ctl: &SessionCtl,
    s: &Settings,
    rec: &mut SessionRecord,
) {
    let t0 = Instant::now();
    let accepted = tokio::select! {
        r = tokio::time::timeout(s.timeouts.handshake, acceptor.accept(client)) => r,
        reason = ctl.killed() => {
            rec.termination = finish_killed(reason);
            return;
        }
    };
    let tls_client = match accepted {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            info.handshake_failures.fetch_add(1, Ordering::Relaxed);
            warn!(listener = %info.name, client = %ctl.client, error = %e, "switch TLS handshake failed");
            rec.switch = ctl.client.ip().to_string();
            rec.termination = Termination('C', 'R');
            return;
        }
        Err(_) => {
            info.handshake_failures.fetch_add(1, Ordering::Relaxed);
            warn!(listener = %info.name, client = %ctl.client, "switch TLS handshake timed out");
            rec.switch = ctl.client.ip().to_string();
            rec.termination = Termination('c', 'R');
            return;
        }
    };
    rec.tw_ms = t0.elapsed().as_millis() as u64;
    let switch = tls_client
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| crate::tls::subject_cn(c))
        .map(|cn| format!("cn:{cn}"))
        .unwrap_or_else(|| ctl.client.ip().to_string());
    let _ = ctl.switch.set(switch.clone());
    rec.switch = switch.clone();
    let Some(cfg) = s.backend_tls.clone() else {
        rec.termination = Termination('I', 'C');
        return;
    };
    let conn = connect(rt, &switch, s, |b, addr| {
        let cfg = cfg.clone();
        async move {
            let tcp = tcp_connect(addr, s).await?;
            let name = b.settings().tls_server_name.clone();
            let name = crate::tls::server_name(
                name.as_deref().or(s.backend_tls_server_name.as_deref()),
                addr.ip(),
            );
            TlsConnector::from(cfg).connect(name, tcp).await
        }
    })
    .await;
    let c = match conn {
        Ok(c) => c,
        Err(f) => {
            rec.termination = f.termination;
            rec.retries = f.retries;
            rec.tc_ms = f.tc_ms;
            return;
        }
    };
    set_backend(ctl, rec, &c.lease, c.retries, c.tc_ms);
    let b = c.lease.backend().clone();
    if s.affinity.enabled {
        rt.affinity.record(&switch, &b.name, unix_ms());
    }
    let Connected { lease, stream, .. } = c;
    let end = relay::relay_streams(tls_client, stream, ctl, relay_params(s)).await;
    rec.termination = finish(rt, &b, end);
    drop(lease);
}

fn finish_killed(reason: KillReason) -> Termination {
    match reason {
        KillReason::BackendDown => Termination('D', 'R'),
        KillReason::Admin | KillReason::Shutdown => Termination('K', 'R'),
    }
}
