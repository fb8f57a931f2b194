//! The control node's I/O: the XMPP listener, one task per session, a timer task, and the
//! [`ControlNodeHandle`] used in-process by tests, the scenario runner and the admin API.

use super::core::{AgentInfo, AgentInput, Core, CoreSettings, Counters, Output, PeerId};
use super::fabric::{Fabric, FabricError};
use super::route_table::{BestRoute, PathInfo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tf_xmpp::io::{server_accept, ServerOptions};
use tf_xmpp::session::{spawn_session, Incoming, SendError, SessionConfig, SessionHandle};
use tf_xmpp::{RouteDecoding, RouteStanza};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{info, info_span, warn, Instrument};

/// Everything the control node needs to run.
#[derive(Clone)]
pub struct ControlNodeConfig {
    /// XMPP listen address (TF: port 5269).
    pub listen: SocketAddr,
    /// `from` of our stream header.
    pub hostname: String,
    pub fabric: Fabric,
    /// Where `reload` re-reads the fabric from.
    pub fabric_path: Option<PathBuf>,
    pub hold_time: Duration,
    pub open_timeout: Duration,
    pub max_stanza: usize,
    pub tls: Option<Arc<tf_xmpp::tls::rustls::ServerConfig>>,
    pub subcluster: Option<String>,
    pub core: CoreSettings,
    /// Queued outgoing stanzas per session before the peer counts as too slow and is closed.
    pub outgoing_capacity: usize,
    /// Connections served at once (negotiating or established); more are closed at accept,
    /// so a flood of idle connections cannot exhaust the control node.
    pub max_connections: usize,
}

impl ControlNodeConfig {
    pub fn new(listen: SocketAddr, fabric: Fabric) -> Self {
        ControlNodeConfig {
            listen,
            hostname: "testbed-control-node".into(),
            fabric,
            fabric_path: None,
            hold_time: tf_xmpp::liveness::DEFAULT_HOLD_TIME,
            open_timeout: tf_xmpp::liveness::OPEN_TIMEOUT,
            max_stanza: tf_xmpp::framer::DEFAULT_MAX_STANZA,
            tls: None,
            subcluster: None,
            core: CoreSettings::default(),
            outgoing_capacity: 65536,
            max_connections: 1024,
        }
    }
}

/// Most stanzas of one session handled under one lock (bounds the lock hold time).
const MAX_BATCH: usize = 512;

struct State {
    core: Core,
    sessions: HashMap<PeerId, SessionHandle>,
}

struct Shared {
    state: Mutex<State>,
    next_id: AtomicU64,
    config: ControlNodeConfig,
    local_addr: SocketAddr,
    connections: Arc<tokio::sync::Semaphore>,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the pure core; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes the core's outputs. Runs under the state lock so that messages to one agent keep
/// the order in which the core produced them.
fn dispatch(state: &mut State, outputs: Vec<Output>) {
    let mut slow = Vec::new();
    for o in outputs {
        match o {
            Output::Send { peer, data } => {
                if let Some(s) = state.sessions.get(&peer) {
                    match s.send(data) {
                        Ok(()) => {}
                        Err(SendError::Full) => slow.push(peer),
                        Err(SendError::Closed) => {}
                    }
                }
            }
            Output::Close { peer, reason } => {
                if let Some(s) = state.sessions.remove(&peer) {
                    s.close(reason);
                }
            }
        }
    }
    for peer in slow {
        warn!(
            peer,
            "closing session: outgoing queue full (agent too slow)"
        );
        let out = state.core.disconnect(peer);
        if let Some(s) = state.sessions.remove(&peer) {
            s.close("outgoing queue full");
        }
        dispatch(state, out);
    }
}

/// A running control node. Cheap to clone.
#[derive(Clone)]
pub struct ControlNodeHandle {
    shared: Arc<Shared>,
}

/// Starts listening and serving. Returns once the listener is bound.
pub async fn start(config: ControlNodeConfig) -> std::io::Result<ControlNodeHandle> {
    let listener = TcpListener::bind(config.listen).await?;
    let local_addr = listener.local_addr()?;
    let (shutdown, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            core: Core::new(config.fabric.clone(), config.core.clone()),
            sessions: HashMap::new(),
        }),
        next_id: AtomicU64::new(1),
        connections: Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1))),
        config,
        local_addr,
        shutdown,
    });
    info!(%local_addr, hostname = %shared.config.hostname, "control node listening");
    tokio::spawn(accept_loop(shared.clone(), listener));
    tokio::spawn(timer_loop(shared.clone()));
    Ok(ControlNodeHandle { shared })
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut stop = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
                        warn!(%remote, limit = shared.config.max_connections, "connection refused: too many connections");
                        shared.lock().core.note_refused();
                        drop(tcp);
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                    let span = info_span!("xmpp_session", peer = id, %remote);
                    let shared = shared.clone();
                    tokio::spawn(
                        async move {
                            serve(shared, tcp, remote, id).await;
                            drop(permit);
                        }
                        .instrument(span),
                    );
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn timer_loop(shared: Arc<Shared>) {
    let mut stop = shared.shutdown.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                let mut st = shared.lock();
                let out = st.core.poll(Instant::now());
                dispatch(&mut st, out);
            }
        }
    }
}

async fn serve(shared: Arc<Shared>, tcp: TcpStream, remote: SocketAddr, id: PeerId) {
    let cfg = &shared.config;
    let mut opts = ServerOptions::new(cfg.hostname.clone());
    opts.tls = cfg.tls.clone();
    opts.subcluster = cfg.subcluster.clone();
    opts.max_stanza = cfg.max_stanza;
    opts.open_timeout = cfg.open_timeout;
    let (stream, header) = match server_accept(tcp, &opts).await {
        Ok(x) => x,
        Err(e) => {
            warn!(error = %e, "stream negotiation failed");
            shared.lock().core_refused();
            return;
        }
    };
    let name = header.from().unwrap_or_default().to_string();
    let mut scfg = SessionConfig::control_node();
    scfg.hold_time = cfg.hold_time;
    scfg.outgoing_capacity = cfg.outgoing_capacity;
    scfg.route_decoding = RouteDecoding::AgentIqs;
    let (handle, mut rx, _task) = spawn_session(stream, scfg);
    {
        let mut st = shared.lock();
        if let Err(why) = st.core.connect(id, &name, remote.ip(), Instant::now()) {
            warn!(agent = %name, %why, "session refused");
            handle.close(why);
            return;
        }
        st.sessions.insert(id, handle);
    }
    info!(agent = %name, tls = opts.tls.is_some(), "agent session established");
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let reason = loop {
        // Everything the session has already received is handled under one lock, so the
        // reflections of a burst of routes go out in full messages (see `Core::handle_batch`).
        let mut closed = None;
        let mut next = rx.recv().await;
        loop {
            match next {
                Some(Incoming::Stanza(el)) => batch.push(AgentInput::Stanza(el)),
                Some(Incoming::Route(RouteStanza::Agent(iq))) => batch.push(AgentInput::Iq(iq)),
                // Only an agent's session decodes CN messages.
                Some(Incoming::Route(RouteStanza::Cn(_))) | Some(Incoming::Keepalive) => {}
                Some(Incoming::Closed(reason)) => closed = Some(reason.to_string()),
                None => closed = Some("session task ended".to_string()),
            }
            if closed.is_some() || batch.len() >= MAX_BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(item) => next = Some(item),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let mut st = shared.lock();
            let out = st.core.handle_batch(id, batch.drain(..), Instant::now());
            dispatch(&mut st, out);
        }
        if let Some(reason) = closed {
            break reason;
        }
    };
    info!(agent = %name, %reason, "agent session closed");
    let mut st = shared.lock();
    st.sessions.remove(&id);
    let out = st.core.disconnect(id);
    dispatch(&mut st, out);
}

impl State {
    fn core_refused(&mut self) {
        self.core.note_refused();
    }
}

impl ControlNodeHandle {
    /// The bound XMPP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    pub fn hostname(&self) -> &str {
        &self.shared.config.hostname
    }

    pub fn agents(&self) -> Vec<AgentInfo> {
        self.shared.lock().core.agents()
    }

    /// Every path (which agent exports which route at which preference / sequence).
    pub fn paths(&self, vrf: Option<&str>) -> Vec<PathInfo> {
        self.shared.lock().core.paths(vrf)
    }

    /// The advertised best route per key.
    pub fn best_routes(&self, vrf: Option<&str>) -> Vec<BestRoute> {
        self.shared.lock().core.best_routes(vrf)
    }

    pub fn counters(&self) -> Counters {
        self.shared.lock().core.counters().clone()
    }

    pub fn fabric(&self) -> Fabric {
        self.shared.lock().core.fabric().clone()
    }

    /// Replaces the fabric (validated) and pushes the changes to subscribed agents.
    pub fn set_fabric(&self, fabric: Fabric) -> Result<(), FabricError> {
        let fabric = fabric.validated()?;
        let mut st = self.shared.lock();
        let out = st.core.set_fabric(fabric);
        dispatch(&mut st, out);
        Ok(())
    }

    /// Applies a change to a copy of the fabric, then [`ControlNodeHandle::set_fabric`].
    pub fn update_fabric(
        &self,
        change: impl FnOnce(&mut Fabric) -> Result<(), FabricError>,
    ) -> Result<(), FabricError> {
        let mut st = self.shared.lock();
        let mut f = st.core.fabric().clone();
        change(&mut f)?;
        let f = f.validated()?;
        let out = st.core.set_fabric(f);
        dispatch(&mut st, out);
        Ok(())
    }

    /// Re-reads the fabric file given at start.
    pub fn reload(&self) -> Result<(), FabricError> {
        let Some(path) = &self.shared.config.fabric_path else {
            return Err(FabricError::Invalid("no fabric file to reload from".into()));
        };
        let f = Fabric::load(path)?;
        self.set_fabric(f)
    }

    /// Closes an agent's session from our side (fault injection). Returns whether it existed.
    pub fn disconnect_agent(&self, name: &str) -> bool {
        let mut st = self.shared.lock();
        let out = st.core.kick(name, "disconnected by operator");
        let existed = !out.is_empty();
        dispatch(&mut st, out);
        existed
    }

    /// Stops accepting and closes every session.
    pub fn shutdown(&self) {
        let _ = self.shared.shutdown.send(true);
        let mut st = self.shared.lock();
        let names: Vec<String> = st.core.agents().into_iter().map(|a| a.name).collect();
        for n in names {
            let out = st.core.kick(&n, "control node shutting down");
            dispatch(&mut st, out);
        }
    }
}
