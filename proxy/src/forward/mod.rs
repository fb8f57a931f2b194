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
use tracing::{warn, Instrument};

use crate::backend::{unix_ms, Backend, Lease};
use crate::config::ListenerMode;
use crate::runtime::{ListenerInfo, Runtime, Settings};
use crate::session::{KillReason, SessionCtl, SessionRecord, Termination};
use relay::{End, Replay, Side};

/// A bound listener ready to serve.
pub struct Listener {
    pub info: Arc<ListenerInfo>,
    pub socket: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

/// Sets on the listening socket what every accepted socket inherits on Linux (TCP_NODELAY and
/// the keepalive options): no per-session system call for them.
pub fn prepare_listener(
    socket: &impl std::os::fd::AsRawFd,
    ka: &crate::config::KeepaliveConfig,
) -> io::Result<()> {
    sockopt::set_nodelay(socket)?;
    sockopt::set_keepalive(socket, ka)
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
                    tokio::spawn(session(rt.clone(), info.clone(), tls.clone(), stream, peer, permit));
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

/// One session's connect attempts so far: the backends that failed it, and how many times.
#[derive(Default)]
struct Attempts {
    excluded: Vec<Arc<Backend>>,
    failures: u32,
}

impl Attempts {
    /// Counts a failed attempt against `b` (a live error for its health) and keeps it out of
    /// the next pick; false once the retries are used up.
    fn failed(
        &mut self,
        rt: &Runtime,
        s: &Settings,
        switch: &str,
        b: Arc<Backend>,
        err: &str,
    ) -> bool {
        b.connect_errors.fetch_add(1, Ordering::Relaxed);
        rt.on_connect_error(&b);
        self.failures += 1;
        warn!(%switch, backend = %b.name, addr = %b.settings().addr, error = %err, attempt = self.failures, "backend connect failed; redispatching");
        self.excluded.push(b);
        self.failures <= s.timeouts.retries
    }

    fn exhausted(&self) -> Failed {
        Failed {
            retries: self.failures.saturating_sub(1),
            termination: Termination('S', 'C'),
            tc_ms: -1,
        }
    }
}

/// Leases a backend and connects, redispatching each failure to another backend; when every
/// usable backend has failed once, waits min(connect timeout, 1 s) and starts over (HAProxy's
/// retry turn-around), up to `retries` extra attempts in all (`attempts` carries them across
/// calls, for failures found after the connect).
async fn connect<S, F, Fut>(
    rt: &Runtime,
    switch: &str,
    s: &Settings,
    attempts: &mut Attempts,
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
    loop {
        let failures = attempts.failures;
        let lease = match rt.pool.select(preferred.as_deref(), &attempts.excluded) {
            Some(l) => l,
            None if !attempts.excluded.is_empty() && failures <= s.timeouts.retries => {
                tokio::time::sleep(s.timeouts.connect.min(Duration::from_secs(1))).await;
                attempts.excluded.clear();
                match rt.pool.select(preferred.as_deref(), &attempts.excluded) {
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
        if !attempts.failed(rt, s, switch, b, &err) {
            return Err(attempts.exhausted());
        }
    }
}

async fn tcp_connect(addr: SocketAddr, s: &Settings) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let _ = sockopt::set_keepalive(&stream, &s.keepalive);
    Ok(stream)
}

/// An unchanged placement is re-published at most this often (it only keeps it from expiring).
fn refresh_ms(s: &Settings) -> u64 {
    (s.affinity.expire / 4).as_millis() as u64
}

/// Maps how the data phase ended to a termination code; flags the backend when suspicious.
fn finish(rt: &Runtime, b: &Arc<Backend>, end: End) -> Termination {
    match end {
        End::Closed => Termination::NORMAL,
        End::Error {
            side: Side::Client, ..
        } => Termination('C', 'D'),
        End::Error {
            side: Side::Server,
            reset,
        }
        | End::Unanswered { reset } => {
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
        End::Killed(KillReason::Idle) => Termination('c', 'D'),
        End::Killed(KillReason::FinTimeout) => Termination('c', 'D'),
    }
}

/// What the session task keeps while it runs: small, so that an idle session stays small.
struct Outcome {
    backend: Option<Arc<Backend>>,
    tw_ms: u64,
    tc_ms: i64,
    retries: u32,
    termination: Termination,
}

async fn session(
    rt: Arc<Runtime>,
    info: Arc<ListenerInfo>,
    tls: Option<TlsAcceptor>,
    client: TcpStream,
    peer: SocketAddr,
    _permit: Option<OwnedSemaphorePermit>,
) {
    // TCP_NODELAY and keepalive are inherited from the listening socket (see `prepare_listener`).
    let ctl = rt.sessions.open(info.name.clone(), peer);
    let mut out = Outcome {
        backend: None,
        tw_ms: 0,
        tc_ms: -1,
        retries: 0,
        termination: Termination::NORMAL,
    };
    match (info.mode, tls) {
        // Boxed: rustls state is large and must not inflate every passthrough session's task.
        (ListenerMode::Terminate, Some(acceptor)) => {
            Box::pin(terminate(&rt, &info, acceptor, client, &ctl, &mut out)).await
        }
        _ => passthrough(&rt, &info, client, &ctl, &mut out).await,
    }
    rt.sessions.close(ctl.id);
    log_end(&rt, &info, &ctl, out);
}

/// Counts and logs the ended session: one tcplog line with the switch and backend as fields
/// (the session span covers only the setup phase, so an idle session carries no span).
fn log_end(rt: &Runtime, info: &ListenerInfo, ctl: &SessionCtl, out: Outcome) {
    let client_ip;
    let switch = match ctl.switch.get() {
        Some(name) => name.as_str(),
        None => {
            client_ip = ctl.client.ip().to_string();
            &client_ip
        }
    };
    let rec = SessionRecord {
        client: ctl.client,
        accept_unix_ms: ctl.started_unix_ms,
        listener: &info.name,
        backend: out.backend.as_ref().map(|b| b.name.as_str()),
        tw_ms: out.tw_ms,
        tc_ms: out.tc_ms,
        tt_ms: ctl.started.elapsed().as_millis() as u64,
        bytes_up: ctl.bytes_up.load(Ordering::Relaxed),
        bytes_down: ctl.bytes_down.load(Ordering::Relaxed),
        termination: out.termination,
        active_conns: rt.sessions.len(),
        backend_conns: out.backend.as_ref().map(|b| b.current()).unwrap_or(0),
        retries: out.retries,
        switch,
    };
    rt.bytes_up.fetch_add(rec.bytes_up, Ordering::Relaxed);
    rt.bytes_down.fetch_add(rec.bytes_down, Ordering::Relaxed);
    rt.count_termination(rec.termination);
    crate::logging::session(&rec);
}

/// The session's span around its setup phase (connect attempts, TLS handshake). DEBUG level:
/// at the default INFO filter it costs nothing per session; warnings carry the client anyway.
fn session_span(info: &ListenerInfo, ctl: &SessionCtl) -> tracing::Span {
    tracing::debug_span!("session", listener = %info.name, client = %ctl.client)
}

/// Records where the session went: its backend, the connect figures, the switch's affinity.
fn connected<S>(
    rt: &Runtime,
    s: &Settings,
    switch: &str,
    ctl: &SessionCtl,
    out: &mut Outcome,
    c: &Connected<S>,
) -> Arc<Backend> {
    let b = c.lease.backend().clone();
    ctl.backend.set(b.clone());
    out.backend = Some(b.clone());
    out.retries = c.retries;
    out.tc_ms = c.tc_ms;
    if s.affinity.enabled {
        rt.affinity
            .record(switch, &b.name, unix_ms(), refresh_ms(s));
    }
    b
}

fn failed(out: &mut Outcome, f: Failed) {
    out.termination = f.termination;
    out.retries = f.retries;
    out.tc_ms = f.tc_ms;
}

async fn passthrough(
    rt: &Runtime,
    info: &ListenerInfo,
    client: TcpStream,
    ctl: &SessionCtl,
    out: &mut Outcome,
) {
    let _ = ctl.switch.set(ctl.client.ip().to_string());
    let switch = ctl.switch.get().map(String::as_str).unwrap_or_default();
    let mut attempts = Attempts::default();
    let replay = Replay::default();
    loop {
        let s = rt.settings();
        let conn = connect(rt, switch, &s, &mut attempts, |_, addr| {
            tcp_connect(addr, &s)
        })
        .instrument(session_span(info, ctl))
        .await;
        let c = match conn {
            Ok(c) => c,
            Err(f) => return failed(out, f),
        };
        let b = connected(rt, &s, switch, ctl, out, &c);
        let size = s.buffer_size;
        drop(s);
        let replayed = match attempts.failures {
            0 => Ok(()),
            _ => relay::write_all(&c.stream, &replay.sent(), false).await,
        };
        let end = match replayed {
            Ok(()) => relay::relay_tcp(&client, &c.stream, ctl, size, &replay).await,
            Err(e) => End::Unanswered {
                reset: relay::is_reset(&e),
            },
        };
        match end {
            End::Unanswered { reset } => {
                // Nothing of this agent reached the switch: a failed connect; try another.
                ctl.backend.clear();
                let _ = sockopt::set_linger_zero(&c.stream);
                drop(c);
                let err = if reset {
                    "reset the session before its first byte"
                } else {
                    "closed the session before its first byte"
                };
                let s = rt.settings();
                let retry =
                    session_span(info, ctl).in_scope(|| attempts.failed(rt, &s, switch, b, err));
                if !retry {
                    out.backend = None;
                    return failed(out, attempts.exhausted());
                }
            }
            end => {
                if let End::Killed(_) = end {
                    // The agent is gone or dismissed: reset our leg to it, no FIN_WAIT.
                    let _ = sockopt::set_linger_zero(&c.stream);
                }
                out.termination = finish(rt, &b, end);
                return;
            }
        }
    }
}

async fn terminate(
    rt: &Runtime,
    info: &ListenerInfo,
    acceptor: TlsAcceptor,
    client: TcpStream,
    ctl: &SessionCtl,
    out: &mut Outcome,
) {
    let s = rt.settings();
    let span = session_span(info, ctl);
    let t0 = Instant::now();
    let accepted = tokio::select! {
        r = tokio::time::timeout(s.timeouts.handshake, acceptor.accept(client)) => r,
        reason = ctl.killed() => {
            out.termination = finish_killed(reason);
            return;
        }
    };
    let tls_client = match accepted {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            info.handshake_failures.fetch_add(1, Ordering::Relaxed);
            span.in_scope(
                || warn!(client = %ctl.client, error = %e, "switch TLS handshake failed"),
            );
            out.termination = Termination('C', 'R');
            return;
        }
        Err(_) => {
            info.handshake_failures.fetch_add(1, Ordering::Relaxed);
            span.in_scope(|| warn!(client = %ctl.client, "switch TLS handshake timed out"));
            out.termination = Termination('c', 'R');
            return;
        }
    };
    out.tw_ms = t0.elapsed().as_millis() as u64;
    let switch = tls_client
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| crate::tls::subject_cn(c))
        .map(|cn| format!("cn:{cn}"))
        .unwrap_or_else(|| ctl.client.ip().to_string());
    let _ = ctl.switch.set(switch.clone());
    let Some(cfg) = s.backend_tls.clone() else {
        out.termination = Termination('I', 'C');
        return;
    };
    let conn = connect(rt, &switch, &s, &mut Attempts::default(), |b, addr| {
        let cfg = cfg.clone();
        let s = &s;
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
    .instrument(span)
    .await;
    let c = match conn {
        Ok(c) => c,
        Err(f) => return failed(out, f),
    };
    let b = connected(rt, &s, &switch, ctl, out, &c);
    let Connected { lease, stream, .. } = c;
    let end = relay::relay_streams(tls_client, stream, ctl, s.buffer_size).await;
    out.termination = finish(rt, &b, end);
    drop(lease);
}

fn finish_killed(reason: KillReason) -> Termination {
    match reason {
        KillReason::BackendDown => Termination('D', 'R'),
        KillReason::Admin | KillReason::Shutdown => Termination('K', 'R'),
        KillReason::Idle | KillReason::FinTimeout => Termination('c', 'R'),
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    /// Guards the idle-session footprint measured in BENCHMARKS.md: the task of an idle
    /// passthrough session is this future (plus tokio's task header).
    fn idle_session_task_stays_small() {
        let rt = Runtime::new(
            crate::config::Config::parse(
                "[[listener]]\nname='l'\nbind='127.0.0.1:0'\n[[backend]]\nname='a'\naddress='127.0.0.1:1'\n[health]\ncheck='tcp'\n",
            )
            .unwrap(),
            None,
        )
        .unwrap();
        let r = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        r.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            let info = Arc::new(ListenerInfo {
                name: "l".into(),
                addr: l.local_addr().unwrap(),
                mode: ListenerMode::Passthrough,
                accepted: Default::default(),
                handshake_failures: Default::default(),
            });
            let f = session(
                rt.clone(),
                info,
                None,
                c,
                "127.0.0.1:1".parse().unwrap(),
                None,
            );
            let session_size = std::mem::size_of_val(&f);
            eprintln!("session future: {session_size} bytes");
            assert!(
                session_size <= 1600,
                "session future grew to {session_size} bytes"
            );
            let s = rt.settings();
            let ctl = rt.sessions.open("l".into(), "127.0.0.1:1".parse().unwrap());
            let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            let b = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            let replay = Replay::default();
            let rf = relay::relay_tcp(&a, &b, &ctl, s.buffer_size, &replay);
            let relay_size = std::mem::size_of_val(&rf);
            eprintln!("relay future: {relay_size} bytes");
            assert!(
                relay_size <= 1024,
                "relay future grew to {relay_size} bytes"
            );
        });
    }

    fn getsockopt_int(fd: i32, level: i32, name: i32) -> i32 {
        let mut v: i32 = -1;
        let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: valid fd and out-pointers for the duration of the call.
        unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut i32).cast(), &mut len) };
        v
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_and_keepalive() {
        use std::os::fd::AsRawFd;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ka = crate::config::KeepaliveConfig {
            enabled: true,
            idle: Duration::from_secs(17),
            interval: Duration::from_secs(4),
            count: 5,
        };
        prepare_listener(&l, &ka).unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (a, _) = l.accept().await.unwrap();
        let fd = a.as_raw_fd();
        assert_eq!(getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(
            getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
            17
        );
        assert_eq!(
            getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
            4
        );
        assert_eq!(getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 5);
        assert_eq!(getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY), 1);
        assert!(a.nodelay().unwrap());
    }
}
