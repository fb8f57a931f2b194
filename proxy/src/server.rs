//! Putting it together: bind listeners, start checks, admin API, peer links and maintenance,
//! then serve until SIGTERM; SIGHUP reloads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
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

    let mut listener_addrs = Vec::new();
    for l in &config.listeners {
        let socket = bind(&format!("listener {}", l.name), l.bind).await?;
        forward::prepare_listener(&socket, &config.keepalive).map_err(|source| {
            StartError::Bind {
                what: format!("listener {} socket options", l.name),
                addr: l.bind,
                source,
            }
        })?;
        let addr = socket.local_addr().map_err(|source| StartError::Bind {
            what: l.name.clone(),
            addr: l.bind,
            source,
        })?;
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
        rt.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(info.clone());
        info!(listener = %l.name, %addr, mode = ?l.mode, "listening");
        listener_addrs.push((l.name.clone(), addr));
        tokio::spawn(forward::serve(
            rt.clone(),
            Listener { info, socket, tls },
            limit.clone(),
            stop_rx.clone(),
        ));
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

    tokio::spawn(affinity_maintenance(rt.clone(), stop_rx));
    Ok(Running {
        rt,
        stop,
        admin_addr,
        listener_addrs,
        peer_addr,
    })
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
                rt.affinity.record(&switch, &backend, now);
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
        info!("stopped");
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
