//! One switch session: schema, one monitor of every table the agent needs,
//! decoded updates forwarded in order, transactions run as the core plans
//! them. The session's updates always reach the core before the reply of
//! the transaction that caused them.

use std::time::Duration;

use ovsdb::client::{Client, ClientError, MonitorSpec, SessionEvent, SessionOptions, TableMonitor};
use ovsdb::transport::Stream;
use ovsdb::vtep::DATABASE;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn, Instrument};

use crate::core::{Input, SessionId};
use crate::reconcile::{TxnId, MONITORED};
use crate::runtime::{Event, SessionCmd, SessionRegistry};

const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

fn monitor_spec() -> MonitorSpec {
    MONITORED.iter().fold(MonitorSpec::new(), |spec, t| {
        spec.table(*t, TableMonitor::all())
    })
}

pub async fn run(
    id: SessionId,
    stream: Stream,
    options: SessionOptions,
    core: mpsc::UnboundedSender<Event>,
    registry: SessionRegistry,
) {
    let peer = stream.peer().to_string();
    let cert_name = stream.peer_common_name();
    let span = tracing::info_span!("switch_session", session = id, %peer);
    async move {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        registry.insert(id, cmd_tx);
        let _ = core.send(Event::Input(Input::SessionOpened {
            id,
            peer: peer.clone(),
            cert_name,
        }));
        let reason = drive(id, stream, options, &core, cmd_rx).await;
        registry.remove(id);
        info!(%reason, "switch session ended");
        let _ = core.send(Event::Input(Input::SessionClosed { id, reason }));
    }
    .instrument(span)
    .await
}

async fn drive(
    id: SessionId,
    stream: Stream,
    options: SessionOptions,
    core: &mpsc::UnboundedSender<Event>,
    mut cmds: mpsc::UnboundedReceiver<SessionCmd>,
) -> String {
    let options = SessionOptions {
        keep_replica: false,
        ..options
    };
    let (client, mut events) = Client::start(stream, options);
    let schema = match tokio::time::timeout(SETUP_TIMEOUT, client.get_schema(DATABASE)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            client.close();
            return format!("get_schema {DATABASE} failed: {e}");
        }
        Err(_) => {
            client.close();
            return "no schema within the setup timeout".into();
        }
    };
    if !schema.version.starts_with("1.") {
        warn!(version = %schema.version, "unexpected hardware_vtep schema version; continuing");
    }
    let _ = core.send(Event::Input(Input::SessionSchema { id, schema }));
    // The monitor reply streams in as updates; forward them while waiting.
    let monitor = {
        let client = client.clone();
        async move {
            match client.monitor_cond(DATABASE, &monitor_spec()).await {
                Err(ClientError::Rpc { .. }) => client.monitor(DATABASE, &monitor_spec()).await,
                other => other,
            }
        }
    };
    tokio::pin!(monitor);
    let mut monitor_done = false;
    let mut txns: JoinSet<(TxnId, Result<ovsdb::client::TransactOutcome, String>)> = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            ev = events.recv() => match ev {
                Some(SessionEvent::Updates { updates, .. }) => {
                    let _ = core.send(Event::Input(Input::SessionUpdates { id, updates }));
                }
                Some(SessionEvent::Closed { reason }) => return reason,
                Some(_) => {}
                None => return "session driver gone".into(),
            },
            r = &mut monitor, if !monitor_done => {
                monitor_done = true;
                match r {
                    Ok(m) => {
                        info!(rows = m.initial_rows, "initial dump received");
                        let _ = core.send(Event::Input(Input::MonitorReady { id }));
                    }
                    Err(e) => {
                        client.close();
                        return format!("monitor failed: {e}");
                    }
                }
            }
            Some(done) = txns.join_next(), if !txns.is_empty() => {
                if let Ok((txn, result)) = done {
                    let _ = core.send(Event::Input(Input::TxnDone { id, txn, result }));
                }
            }
            cmd = cmds.recv() => match cmd {
                Some(SessionCmd::Transact { id: txn, txn: t }) => {
                    let client = client.clone();
                    txns.spawn(async move {
                        (txn, client.transact(&t).await.map_err(|e| e.to_string()))
                    });
                }
                Some(SessionCmd::Close(reason)) => {
                    client.close();
                    return reason;
                }
                None => {
                    client.close();
                    return "agent shutting down".into();
                }
            },
        }
    }
}
