//! Putting it together: bind listeners, start checks, admin API, peer links and maintenance,
//! then serve until SIGTERM; SIGHUP reloads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{error, info, warn};

use crate::backend::unix_ms;
use crate::config::{Config, ConfigError, ListenerMode};
use crate::forward::{self, Listener};
use crate::runtime::{ListenerInfo, Runtime};
use crate::session::KillReason;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
}

/// A started proxy.
pub struct Running {
    pub rt: Arc<Runtime>,
    stop: watch::Sender<bool>,
    pub admin_addr: SocketAddr,
    pub listener_addrs: Vec<(String, SocketAddr)>,
    pub peer_addr: Option<SocketAddr>,
    data_threads: Vec<std::thread::JoinHandle<()>>,
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            what: what.to_string(),
            addr,
            source,
        })
}

/// Binds everything and starts serving (in the current tokio runtime).
pub async fn start(config: Config, path: Option<PathBuf>) -> Result<Running, StartError> {
    config.check_files()?;
    let rt = Runtime::new(config.clone(), path)?;
    let (stop, stop_rx) = watch::channel(false);
    let limit = (config.global.max_sessions > 0)
        .then(|| Arc::new(Semaphore::new(config.global.max_sessions as usize)));

    let threads = match config.global.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // One listening socket per listener, shared by every data thread (each registers its own
    // duplicate of the descriptor): whichever thread is free accepts the next switch, as
    // HAProxy's threads do, and a session never leaves the thread that accepted it. With one
    // SO_REUSEPORT copy per thread, the kernel hashed a new switch onto a thread that could be
    // busy while another idled, and a stalled thread stranded the switches queued on its copy.
    let mut per_thread: Vec<Vec<ThreadListener>> = (0..threads).map(|_| Vec::new()).collect();
    let mut listener_addrs = Vec::new();
    for l in &config.listeners {
        let what = format!("listener {}", l.name);
        let bind_err = |source| StartError::Bind {
            what: what.clone(),
            addr: l.bind,
            source,
        };
        let first = listen_socket(l.bind).map_err(bind_err)?;
        let addr = first.local_addr().map_err(bind_err)?;
        let tls = match (l.mode, &l.tls_cert, &l.tls_key, &l.client_ca) {
            (ListenerMode::Terminate, Some(c), Some(k), Some(ca)) => Some(TlsAcceptor::from(
                crate::tls::server_config(c, k, Some(ca))
                    .map_err(|e| StartError::Tls(format!("listener {:?}: {e}", l.name)))?,
            )),
            _ => None,
        };
        let info = Arc::new(ListenerInfo {
            name: l.name.as_str().into(),
            addr,
            mode: l.mode,
            accepted: Default::default(),
            handshake_failures: Default::default(),
        });
        forward::prepare_listener(&first, &config.keepalive).map_err(bind_err)?;
        for slot in per_thread.iter_mut() {
            let s = duplicate(&first).map_err(bind_err)?;
            slot.push((info.clone(), s, tls.clone()));
        }
        rt.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(info);
        listener_addrs.push((l.name.clone(), addr));
    }
    let mut data_threads = Vec::new();
    let mut ready = Vec::new();
    for (i, sockets) in per_thread.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push(rx);
        let (rt, limit, stop_rx) = (rt.clone(), limit.clone(), stop_rx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("tor-proxy-data-{i}"))
            .spawn(move || data_thread(rt, sockets, limit, stop_rx, tx))
            .map_err(|e| StartError::Tls(format!("cannot start a data thread: {e}")))?;
        data_threads.push(handle);
    }
    for rx in ready {
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(StartError::Tls("a data thread died at start".into())),
        }
    }
    for (name, addr) in &listener_addrs {
        info!(listener = %name, %addr, threads, "listening");
    }

    for b in rt.pool.backends().iter() {
        crate::checks::spawn(rt.clone(), b.clone());
    }

    let a = &config.admin;
    let admin_socket = bind("admin API", a.listen).await?;
    let admin_addr = admin_socket
        .local_addr()
        .map_err(|source| StartError::Bind {
            what: "admin API".into(),
            addr: a.listen,
            source,
        })?;
    let admin_tls = match (&a.tls_cert, &a.tls_key, &a.tls_client_ca) {
        (Some(c), Some(k), Some(ca)) => Some(TlsAcceptor::from(
            crate::tls::server_config(c, k, Some(ca))
                .map_err(|e| StartError::Tls(format!("admin: {e}")))?,
        )),
        _ => None,
    };
    let token = match &a.token_file {
        Some(p) => Some(
            crate::admin::read_token(p).map_err(|e| StartError::Config(ConfigError::Invalid(e)))?,
        ),
        None => None,
    };
    info!(addr = %admin_addr, tls = admin_tls.is_some(), token = token.is_some(), "admin API listening");
    tokio::spawn(crate::admin::serve(
        rt.clone(),
        admin_socket,
        admin_tls,
        token,
        stop_rx.clone(),
    ));

    let mut peer_addr = None;
    if let Some(p) = &config.peering {
        let socket = bind("peering", p.listen).await?;
        let addr = socket.local_addr().map_err(|source| StartError::Bind {
            what: "peering".into(),
            addr: p.listen,
            source,
        })?;
        peer_addr = Some(addr);
        let acceptor = TlsAcceptor::from(
            crate::tls::server_config(&p.tls_cert, &p.tls_key, Some(&p.tls_ca))
                .map_err(|e| StartError::Tls(format!("peering: {e}")))?,
        );
        let connector = TlsConnector::from(
            crate::tls::client_config(&p.tls_ca, Some(&p.tls_cert), Some(&p.tls_key))
                .map_err(|e| StartError::Tls(format!("peering: {e}")))?,
        );
        info!(%addr, "peer sync listening");
        tokio::spawn(crate::affinity::peer::serve(
            rt.clone(),
            socket,
            acceptor,
            stop_rx.clone(),
        ));
        for (pc, stats) in config.peers.iter().zip(rt.peers.iter()) {
            tokio::spawn(crate::affinity::peer::link(
                rt.clone(),
                pc.clone(),
                stats.clone(),
                connector.clone(),
                p.reconnect,
                stop_rx.clone(),
            ));
        }
    }

    tokio::spawn(session_sweeper(rt.clone(), stop_rx.clone()));
    tokio::spawn(affinity_maintenance(rt.clone(), stop_rx));
    Ok(Running {
        rt,
        stop,
        admin_addr,
        listener_addrs,
        peer_addr,
        data_threads,
    })
}

/// A data thread's copy of one listener, before it listens.
type ThreadListener = (Arc<ListenerInfo>, TcpSocket, Option<TlsAcceptor>);

/// A bound socket; no SO_REUSEPORT, so a second proxy on the same address fails to start
/// instead of silently taking half of the switches.
fn listen_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    Ok(s)
}

/// A data thread's own descriptor for the shared listening socket (close-on-exec).
fn duplicate(socket: &TcpSocket) -> std::io::Result<TcpSocket> {
    use std::os::fd::{AsFd, FromRawFd, IntoRawFd};
    let fd = socket.as_fd().try_clone_to_owned()?;
    // SAFETY: `fd` is a freshly duplicated descriptor of a TCP socket, owned here and handed
    // over whole.
    Ok(unsafe { TcpSocket::from_raw_fd(fd.into_raw_fd()) })
}

/// One data-path thread: a single event loop (one worker) serving its copy of every listener,
/// until stopped and its sessions are gone.
fn data_thread(
    rt: Arc<Runtime>,
    sockets: Vec<ThreadListener>,
    limit: Option<Arc<Semaphore>>,
    mut stop: watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<Result<(), StartError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(StartError::Tls(format!("data thread runtime: {e}"))));
            return;
        }
    };
    runtime.block_on(async move {
        for (info, socket, tls) in sockets {
            match socket.listen(4096) {
                Ok(socket) => {
                    tokio::spawn(forward::serve(
                        rt.clone(),
                        Listener { info, socket, tls },
                        limit.clone(),
                        stop.clone(),
                    ));
                }
                Err(source) => {
                    let _ = ready.send(Err(StartError::Bind {
                        what: format!("listener {}", info.name),
                        addr: info.addr,
                        source,
                    }));
                    return;
                }
            }
        }
        let _ = ready.send(Ok(()));
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        // Sessions of this thread run here until shutdown closes them.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !rt.sessions.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// Enforces the idle and fin timeouts of all sessions from one periodic sweep.
async fn session_sweeper(rt: Arc<Runtime>, mut stop: watch::Receiver<bool>) {
    loop {
        let t = rt.settings().timeouts.clone();
        let shortest = [t.idle, t.fin]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(Duration::from_secs(1));
        let every = (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        rt.sessions.sweep(t.idle, t.fin);
    }
}

/// Refreshes entries of switches still connected, and forgets those unseen for `expire`.
async fn affinity_maintenance(rt: Arc<Runtime>, mut stop: watch::Receiver<bool>) {
    loop {
        let expire = rt.settings().affinity.expire;
        let every = (expire / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let now = unix_ms();
        let refresh_ms = (expire / 4).as_millis() as u64;
        for (switch, backend) in rt.sessions.live_placements() {
            let stale = rt.affinity.get(&switch).is_none_or(|e| {
                e.backend != backend || now.saturating_sub(e.updated_unix_ms) > refresh_ms
            });
            if stale {
                rt.affinity.record(&switch, &backend, now, 0);
            }
        }
        let n = rt.affinity.expire(now, expire.as_millis() as u64);
        if n > 0 {
            info!(expired = n, "affinity entries expired");
        }
    }
}

impl Running {
    /// Stops accepting, lets sessions finish for `grace`, then closes the rest (`K`).
    pub async fn shutdown(self, grace: Duration) {
        self.rt.stopping.store(true, Ordering::Relaxed);
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        while !self.rt.sessions.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let n = self.rt.sessions.kill_all(KillReason::Shutdown);
        if n > 0 {
            info!(sessions = n, "closing remaining sessions");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.rt.sessions.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while self.data_threads.iter().any(|t| !t.is_finished())
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        info!("stopped");
    }
}

/// `tor-proxy run`: loads the configuration file, starts logging and the
/// control-plane runtime (one thread; sessions run on the proxy's own data
/// threads), and runs until SIGTERM/SIGINT. Errors go to stderr. The binary
/// and the scenario runner's proxy processes both start here.
pub fn run_from_file(path: &std::path::Path) -> std::process::ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("tor-proxy: {e}");
        std::process::ExitCode::FAILURE
    };
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    crate::logging::init(config.global.log_format, &config.global.log_level);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match rt.block_on(run(config, Some(path.to_path_buf()))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Runs until SIGTERM/SIGINT; SIGHUP reloads the configuration in place.
pub async fn run(config: Config, path: Option<PathBuf>) -> Result<(), StartError> {
    use tokio::signal::unix::{signal, SignalKind};
    let grace = config.global.shutdown_grace;
    let sig = |k| signal(k).map_err(|e| StartError::Tls(format!("signal handler: {e}")));
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut hup = sig(SignalKind::hangup())?;
    let running = start(config, path).await?;
    info!(node = %running.rt.node, "tor-proxy started");
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: shutting down"); break }
            _ = int.recv() => { info!("SIGINT: shutting down"); break }
            _ = hup.recv() => {
                info!("SIGHUP: reloading configuration");
                if let Err(e) = running.rt.reload().await {
                    error!(error = %e, "reload failed; keeping the running configuration");
                }
            }
        }
    }
    if !running.rt.sessions.is_empty() {
        warn!(
            sessions = running.rt.sessions.len(),
            grace_ms = grace.as_millis() as u64,
            "sessions still open"
        );
    }
    running.shutdown(grace).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn config(bind: &str, backend: SocketAddr) -> Config {
        Config::parse(&format!(
            r#"
[global]
threads = 2
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "ovsdb"
bind = "{bind}"
[[backend]]
name = "a1"
address = "{backend}"
[health]
check = "none"
"#
        ))
        .unwrap()
    }

    /// With two data threads on one shared listening socket, sessions are served, and a
    /// second proxy cannot bind the address (no SO_REUSEPORT to split the switches between
    /// two processes).
    #[tokio::test]
    async fn data_threads_share_one_listening_socket() {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    if s.read_exact(&mut b).await.is_ok() {
                        let _ = s.write_all(&b).await;
                    }
                });
            }
        });
        let running = start(config("127.0.0.1:0", backend), None).await.unwrap();
        let addr = running.listener_addrs[0].1;
        for _ in 0..50 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&b, b"x");
        }
        let second = start(config(&addr.to_string(), backend), None).await;
        assert!(matches!(second, Err(StartError::Bind { .. })));
        running.shutdown(Duration::from_millis(100)).await;
    }
}
