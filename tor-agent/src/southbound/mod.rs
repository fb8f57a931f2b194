//! Southbound: switch sessions over OVSDB. The switches dial the agent
//! (passive `pssl:`/`ptcp:`, many switches on one listener, through the
//! proxy) or the agent dials each switch (active `ssl:`/`tcp:`).

pub mod session;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ovsdb::client::SessionOptions;
use ovsdb::rpc::Backoff;
use ovsdb::transport::{connect, Listener, Target, TlsFiles};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::runtime::{Event, SessionRegistry};

/// Session ids, unique for the life of the process.
pub static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Accepts switch connections on a passive target, one session each.
pub async fn listen(
    listener: Listener,
    options: SessionOptions,
    core: mpsc::UnboundedSender<Event>,
    registry: SessionRegistry,
    mut stop: watch::Receiver<bool>,
) {
    let listener = Arc::new(listener);
    info!(target = %listener.target(), "listening for switches");
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = accepted.peer.clone();
        let core = core.clone();
        let registry = registry.clone();
        let options = options.clone();
        tokio::spawn(async move {
            // The TLS handshake runs here, not in the accept loop.
            match accepted.finish().await {
                Ok(stream) => {
                    let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
                    session::run(id, stream, options, core, registry).await;
                }
                Err(e) => {
                    warn!(%peer, error = %e, "switch connection failed before the session started")
                }
            }
        });
    }
}

/// Dials one switch and keeps a session to it, with OVS's backoff.
pub async fn dial(
    target: Target,
    tls: Option<TlsFiles>,
    options: SessionOptions,
    core: mpsc::UnboundedSender<Event>,
    registry: SessionRegistry,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::ovs_default();
    loop {
        if *stop.borrow() {
            return;
        }
        match connect(&target, tls.as_ref()).await {
            Ok(stream) => {
                let started = tokio::time::Instant::now();
                let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
                session::run(id, stream, options.clone(), core.clone(), registry.clone()).await;
                if started.elapsed() > Duration::from_secs(8) {
                    backoff.reset();
                }
            }
            Err(e) => warn!(%target, error = %e, "cannot reach switch"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.changed() => return,
        }
    }
}
