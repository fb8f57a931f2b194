//! The async runtime around the pure core: one task owns the core and feeds
//! it events; switch sessions, control-node sessions and the admin servers
//! are tasks that talk to it through channels.

use std::collections::HashMap;
use std::future::Future;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovsdb::client::{SessionOptions, Transaction};
use tf_xmpp::enet::EnetEntry;
use tf_xmpp::io::{ClientOptions, ClientTls};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::admin;
use crate::admin::load::{CoreLoad, Work};
use crate::admin::status::AgentStatus;
use crate::config::{parse_cn, read_token, AgentConfig};
use crate::core::{Core, Input, Output, SessionId};
use crate::northbound::session::CnOptions;
use crate::reconcile::TxnId;

/// What the core task receives.
pub enum Event {
    Input(Input),
    Status(oneshot::Sender<AgentStatus>),
    Metrics(oneshot::Sender<String>),
}

/// What a switch session task is asked to do.
pub enum SessionCmd {
    Transact { id: TxnId, txn: Transaction },
    Close(String),
}

/// What a control-node task is asked to send.
#[derive(Debug)]
pub enum NbCmd {
    SubscribeConfig,
    Subscribe { vrf: String, instance_id: u32 },
    Unsubscribe { vrf: String },
    Publish { vrf: String, entry: EnetEntry },
    Withdraw { vrf: String, entry: EnetEntry },
    EndOfRib,
}

/// Live switch sessions, by id, for the core task to reach them.
#[derive(Clone, Default)]
pub struct SessionRegistry(Arc<Mutex<HashMap<SessionId, mpsc::UnboundedSender<SessionCmd>>>>);

impl SessionRegistry {
    pub fn insert(&self, id: SessionId, tx: mpsc::UnboundedSender<SessionCmd>) {
        self.lock().insert(id, tx);
    }
    pub fn remove(&self, id: SessionId) {
        self.lock().remove(&id);
    }
    fn send(&self, id: SessionId, cmd: SessionCmd) {
        if let Some(tx) = self.lock().get(&id) {
            let _ = tx.send(cmd);
        }
    }
    fn close_all(&self, reason: &str) {
        for tx in self.lock().values() {
            let _ = tx.send(SessionCmd::Close(reason.to_string()));
        }
    }
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SessionId, mpsc::UnboundedSender<SessionCmd>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Setup(String),
}

/// Handles to a running agent (for tests and embedding).
pub struct AgentHandle {
    pub events: mpsc::UnboundedSender<Event>,
    pub admin_addr: std::net::SocketAddr,
    pub readiness_addr: Option<std::net::SocketAddr>,
    pub southbound: Vec<ovsdb::transport::Target>,
}

impl AgentHandle {
    pub async fn status(&self) -> Option<AgentStatus> {
        let (tx, rx) = oneshot::channel();
        self.events.send(Event::Status(tx)).ok()?;
        rx.await.ok()
    }
}

/// Runs the agent until `shutdown` completes. `started` receives the bound
/// addresses once listening (ports may have been 0).
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl Future<Output = ()>,
    started: Option<oneshot::Sender<AgentHandle>>,
) -> Result<(), RunError> {
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let (ready_tx, ready_rx) = watch::channel("drain");
    let registry = SessionRegistry::default();

    // Southbound.
    let options = SessionOptions {
        name: String::new(),
        probe_interval: cfg.keepalive(),
        max_message: cfg.southbound.max_message_bytes,
        max_in_flight: cfg.southbound.max_txn_in_flight * 4,
        keep_replica: false,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sb_targets = Vec::new();
    for target in cfg
        .southbound_targets()
        .map_err(|e| RunError::Setup(e.to_string()))?
    {
        let tls = if target.uses_tls() {
            cfg.southbound.tls.clone()
        } else {
            None
        };
        if target.is_passive() {
            let listener = ovsdb::transport::Listener::bind(&target, tls.as_ref())
                .await
                .map_err(|e| RunError::Setup(e.to_string()))?;
            sb_targets.push(listener.target().clone());
            tokio::spawn(crate::southbound::listen(
                listener,
                options.clone(),
                events_tx.clone(),
                registry.clone(),
                stop_rx.clone(),
            ));
        } else {
            sb_targets.push(target.clone());
            tokio::spawn(crate::southbound::dial(
                target,
                tls,
                options.clone(),
                events_tx.clone(),
                registry.clone(),
                stop_rx.clone(),
            ));
        }
    }

    // Northbound.
    let mut cn_tx = Vec::new();
    for (index, addr) in cfg.northbound.control_nodes.iter().enumerate() {
        let addr = parse_cn(addr).map_err(RunError::Setup)?;
        let mut client = ClientOptions::new(cfg.agent.name.clone());
        client.subcluster = cfg.northbound.subcluster.clone();
        if let Some(t) = &cfg.northbound.tls {
            let files = ovsdb::transport::TlsFiles {
                cert: t.cert.clone(),
                key: t.key.clone(),
                ca: t.ca.clone(),
            };
            let config = files
                .client_config()
                .map_err(|e| RunError::Setup(e.to_string()))?;
            let name = t
                .server_name
                .clone()
                .unwrap_or_else(|| addr.ip().to_string());
            let server_name = rustls_name(&name).map_err(RunError::Setup)?;
            client.tls = Some(ClientTls {
                config,
                server_name,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        cn_tx.push(tx);
        let opts = CnOptions {
            index,
            addr,
            client,
            hold_time: Duration::from_secs(cfg.northbound.hold_time_s),
        };
        tokio::spawn(crate::northbound::session::run(opts, events_tx.clone(), rx));
    }

    // Admin API, metrics, readiness.
    let token = match &cfg.admin.token_file {
        Some(p) => Some(read_token(p).map_err(RunError::Setup)?),
        None => None,
    };
    let admin_listener = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .map_err(|e| RunError::Setup(format!("admin.listen {}: {e}", cfg.admin.listen)))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| RunError::Setup(e.to_string()))?;
    tokio::spawn(admin::serve(
        events_tx.clone(),
        admin_listener,
        token,
        stop_rx.clone(),
    ));
    let mut readiness_addr = None;
    if let Some(addr) = cfg.admin.readiness_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RunError::Setup(format!("admin.readiness_listen {addr}: {e}")))?;
        readiness_addr = l.local_addr().ok();
        tokio::spawn(admin::readiness::serve(
            l,
            ready_rx.clone(),
            stop_rx.clone(),
        ));
    }
    info!(agent = %cfg.agent.name, admin = %admin_addr, "tor-agent running");
    if let Some(s) = started {
        let _ = s.send(AgentHandle {
            events: events_tx.clone(),
            admin_addr,
            readiness_addr,
            southbound: sb_targets,
        });
    }

    // The core.
    let mut core = Core::new(cfg.core_settings());
    let mut load = CoreLoad::default();
    let started_at = Instant::now();
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wake = core.next_wake().map(Instant::from_std);
        let sleep = async {
            match wake {
                Some(w) => tokio::time::sleep_until(w).await,
                None => std::future::pending().await,
            }
        };
        let now;
        let mut loop_ctx = LoopCtx {
            core: &mut core,
            load: &mut load,
            started: started_at.into_std(),
            queued: 0,
        };
        tokio::select! {
            ev = events.recv() => {
                now = Instant::now().into_std();
                match ev {
                    Some(ev) => {
                        loop_ctx.queued = events.len();
                        loop_ctx.handle_event(ev, now);
                    }
                    None => break,
                }
                // Take what else is waiting before doing the deferred work.
                for _ in 0..4096 {
                    match events.try_recv() {
                        Ok(ev) => {
                            loop_ctx.queued = events.len();
                            loop_ctx.handle_event(ev, now);
                        }
                        Err(_) => break,
                    }
                }
            }
            _ = sleep => { now = Instant::now().into_std(); loop_ctx.input(Input::Tick, now); }
            _ = tick.tick() => { now = Instant::now().into_std(); loop_ctx.input(Input::Tick, now); }
            _ = &mut shutdown => break,
        }
        // Switch transactions first: the switches work on them while the
        // core computes exports.
        let t0 = std::time::Instant::now();
        for out in core.flush_transactions(now) {
            dispatch(out, &registry, &cn_tx);
        }
        let t1 = std::time::Instant::now();
        load.record(Work::Audits, t1 - t0);
        for out in core.flush_exports(now) {
            dispatch(out, &registry, &cn_tx);
        }
        load.record(Work::Exports, t1.elapsed());
        let r = core.readiness();
        if *ready_tx.borrow() != r {
            info!(readiness = r, "readiness changed");
            let _ = ready_tx.send(r);
        }
    }
    // Shutdown: tell the proxy, close the switches (their routes drop to
    // HA-stale at the control node when its sessions close).
    let _ = ready_tx.send("down");
    info!("shutting down: closing switch and control node sessions");
    registry.close_all("agent shutting down");
    drop(cn_tx);
    let _ = stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

fn rustls_name(name: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| format!("northbound.tls.server_name {name}: {e}"))
}

/// What one turn of the core loop hands to the events it handles.
struct LoopCtx<'a> {
    core: &'a mut Core,
    load: &'a mut CoreLoad,
    started: std::time::Instant,
    /// Events still waiting behind the one being handled (for the metrics).
    queued: usize,
}

impl LoopCtx<'_> {
    fn input(&mut self, input: Input, now: std::time::Instant) {
        let work = Work::of(&input);
        let t0 = std::time::Instant::now();
        self.core.handle(input, now);
        self.load.record(work, t0.elapsed());
    }

    fn handle_event(&mut self, ev: Event, now: std::time::Instant) {
        match ev {
            Event::Input(i) => self.input(i, now),
            Event::Status(tx) => {
                let t0 = std::time::Instant::now();
                let mut status = self.core.status(now);
                status.core_busy_ms = Work::ALL
                    .iter()
                    .map(|w| (w.label().to_string(), self.load.busy(*w).as_millis() as u64))
                    .collect();
                let _ = tx.send(status);
                self.load.record(Work::Admin, t0.elapsed());
            }
            Event::Metrics(tx) => {
                let t0 = std::time::Instant::now();
                let core = admin::metrics::CoreView {
                    load: self.load,
                    queued: self.queued,
                };
                let _ = tx.send(admin::metrics::render(self.core, &core, now, self.started));
                self.load.record(Work::Admin, t0.elapsed());
            }
        }
    }
}

fn dispatch(out: Output, registry: &SessionRegistry, cns: &[mpsc::UnboundedSender<NbCmd>]) {
    let to = |cn: Option<usize>, cmd: NbCmd| match cn {
        Some(i) => {
            if let Some(tx) = cns.get(i) {
                let _ = tx.send(cmd);
            }
        }
        None => {
            for tx in cns {
                let _ = tx.send(clone_cmd(&cmd));
            }
        }
    };
    match out {
        Output::Transact { session, id, txn } => {
            registry.send(session, SessionCmd::Transact { id, txn })
        }
        Output::CloseSession { session, reason } => {
            warn!(session, %reason, "closing switch session");
            registry.send(session, SessionCmd::Close(reason));
        }
        Output::SubscribeConfig { cn } => to(Some(cn), NbCmd::SubscribeConfig),
        Output::Subscribe {
            cn,
            vrf,
            instance_id,
        } => to(cn, NbCmd::Subscribe { vrf, instance_id }),
        Output::Unsubscribe { cn, vrf } => to(cn, NbCmd::Unsubscribe { vrf }),
        Output::Publish { cn, vrf, entry } => to(cn, NbCmd::Publish { vrf, entry }),
        Output::Withdraw { cn, vrf, entry } => to(cn, NbCmd::Withdraw { vrf, entry }),
        Output::EndOfRib { cn } => to(Some(cn), NbCmd::EndOfRib),
    }
}

fn clone_cmd(c: &NbCmd) -> NbCmd {
    match c {
        NbCmd::SubscribeConfig => NbCmd::SubscribeConfig,
        NbCmd::Subscribe { vrf, instance_id } => NbCmd::Subscribe {
            vrf: vrf.clone(),
            instance_id: *instance_id,
        },
        NbCmd::Unsubscribe { vrf } => NbCmd::Unsubscribe { vrf: vrf.clone() },
        NbCmd::Publish { vrf, entry } => NbCmd::Publish {
            vrf: vrf.clone(),
            entry: entry.clone(),
        },
        NbCmd::Withdraw { vrf, entry } => NbCmd::Withdraw {
            vrf: vrf.clone(),
            entry: entry.clone(),
        },
        NbCmd::EndOfRib => NbCmd::EndOfRib,
    }
}

/// Logs a fatal setup error the way `main` reports it.
pub fn report(e: &RunError) {
    error!(error = %e, "tor-agent cannot start");
}

/// Logs to stderr as text or JSON lines; `RUST_LOG` overrides the `info` default.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Runs the agent as its process does (logging from the config, until SIGTERM or Ctrl-C):
/// `tor-agent run` and the scenario runner's agent processes share it.
pub fn run_blocking(cfg: AgentConfig, rt: &tokio::runtime::Runtime) -> ExitCode {
    init_logging(cfg.agent.log_format == "json");
    rt.block_on(async {
        match run(cfg, shutdown_signal(), None).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report(&e);
                eprintln!("tor-agent: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Loads the configuration, starts the runtime and runs: `tor-agent --config FILE`.
pub fn run_from_file(path: &std::path::Path) -> ExitCode {
    let cfg = match AgentConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tor-agent: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match build_runtime() {
        Ok(rt) => run_blocking(cfg, &rt),
        Err(e) => {
            eprintln!("tor-agent: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The agent's multi-threaded runtime.
pub fn build_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
