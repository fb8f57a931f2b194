//! One control node: connect, open the XMPP stream, keep it with keepalives
//! and the hold timer, and translate between stanzas and the core's inputs
//! and outputs. Reconnects with TF's backoff (0, 1, 2, 4 … 30 s, jittered,
//! reset after three keepalives).

use crate::hash::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tf_xmpp::config::decode_config_push;
use tf_xmpp::error::StanzaError;
use tf_xmpp::io::{client_open, ClientOptions};
use tf_xmpp::liveness::{random_jitter, ReconnectBackoff};
use tf_xmpp::route::{
    decode_cn_message, encode_agent_end_of_rib, encode_config_subscribe, encode_route_publish,
    encode_vrf_subscribe, encode_vrf_unsubscribe, CnMessage,
};
use tf_xmpp::session::{spawn_session, Incoming, SessionConfig};
use tf_xmpp::stanza::{Channel, Stanza, StanzaKind};
use tf_xmpp::{RouteDecoding, RouteStanza};
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use crate::core::Input;
use crate::northbound::routes::RouteKey;
use crate::runtime::{Event, NbCmd};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const SHUTDOWN: &str = "agent shutting down";
/// Stanzas gathered into one write.
const MAX_BATCH_BYTES: usize = 256 * 1024;

pub struct CnOptions {
    pub index: usize,
    pub addr: SocketAddr,
    pub client: ClientOptions,
    pub hold_time: Duration,
}

pub async fn run(
    opts: CnOptions,
    core: mpsc::UnboundedSender<Event>,
    mut cmds: mpsc::UnboundedReceiver<NbCmd>,
) {
    let span = tracing::info_span!("control_node", cn = opts.index, addr = %opts.addr);
    async move {
        let mut backoff = ReconnectBackoff::new();
        loop {
            let reason = session(&opts, &core, &mut cmds, &mut backoff).await;
            if reason == SHUTDOWN {
                info!("control node session closed: agent shutting down");
                return;
            }
            warn!(%reason, "control node session ended");
            let delay = backoff.next_delay(random_jitter());
            // Commands meant for the old session are moot: the core resends
            // everything when the next one comes up.
            while cmds.try_recv().is_ok() {}
            // Sleep, but leave at once if the agent stops meanwhile.
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    cmd = cmds.recv() => if cmd.is_none() { return },
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// One session; returns why it ended.
async fn session(
    opts: &CnOptions,
    core: &mpsc::UnboundedSender<Event>,
    cmds: &mut mpsc::UnboundedReceiver<NbCmd>,
    backoff: &mut ReconnectBackoff,
) -> String {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(opts.addr))
        .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return format!("connect: {e}"),
        Err(_) => return "connect timed out".into(),
    };
    let _ = tcp.set_nodelay(true);
    let (stream, header) = match client_open(tcp, &opts.client).await {
        Ok(x) => x,
        Err(e) => return format!("stream open: {e}"),
    };
    info!(
        from = header.from().unwrap_or("-"),
        "XMPP session established"
    );
    let config = SessionConfig {
        hold_time: opts.hold_time,
        // Route messages arrive decoded, without an element tree (tf_xmpp::fast).
        route_decoding: RouteDecoding::CnMessages,
        ..SessionConfig::agent()
    };
    let (handle, mut incoming, _task) = spawn_session(stream, config);
    while cmds.try_recv().is_ok() {}
    let cn = opts.index;
    let agent = opts.client.agent_name.clone();
    let _ = core.send(Event::Input(Input::CnUp { cn }));
    let mut subscribed: HashMap<String, u32> = HashMap::default();
    let mut config_subscribed = false;
    let mut seq: u64 = 0;
    let reason = loop {
        tokio::select! {
            biased;
            ev = incoming.recv() => match ev {
                Some(Incoming::Stanza(el)) => {
                    if let Some(st) = Stanza::from_element(el) {
                        handle_stanza(cn, &st, core);
                    }
                }
                Some(Incoming::Route(RouteStanza::Cn(msg))) => handle_cn_message(cn, Ok(msg), core),
                // Only a control node's session decodes agent iqs.
                Some(Incoming::Route(RouteStanza::Agent(_))) => {}
                Some(Incoming::Keepalive) => backoff.on_keepalive_received(),
                Some(Incoming::Closed(r)) => break r.to_string(),
                None => break "session task ended".into(),
            },
            cmd = cmds.recv() => {
                let Some(first) = cmd else { break SHUTDOWN.into() };
                let mut out = String::new();
                let mut next = Some(first);
                while let Some(c) = next.take() {
                    seq += 1;
                    encode(c, &agent, seq, &mut subscribed, &mut config_subscribed, &mut out);
                    if out.len() >= MAX_BATCH_BYTES {
                        break;
                    }
                    next = cmds.try_recv().ok();
                }
                if !out.is_empty() && handle.send_wait(out.into_bytes()).await.is_err() {
                    break "session closed while sending".into();
                }
            }
        }
    };
    handle.close(reason.clone());
    let _ = core.send(Event::Input(Input::CnDown {
        cn,
        reason: reason.clone(),
    }));
    reason
}

fn encode(
    cmd: NbCmd,
    agent: &str,
    seq: u64,
    subscribed: &mut HashMap<String, u32>,
    config_subscribed: &mut bool,
    out: &mut String,
) {
    match cmd {
        NbCmd::SubscribeConfig => {
            if !*config_subscribed {
                *config_subscribed = true;
                out.push_str(&encode_config_subscribe(agent));
            }
        }
        NbCmd::Subscribe { vrf, instance_id } => {
            if let std::collections::hash_map::Entry::Vacant(slot) = subscribed.entry(vrf) {
                out.push_str(&encode_vrf_subscribe(agent, slot.key(), instance_id, seq));
                slot.insert(instance_id);
            }
        }
        NbCmd::Unsubscribe { vrf } => {
            if let Some(id) = subscribed.remove(&vrf) {
                out.push_str(&encode_vrf_unsubscribe(agent, &vrf, id, seq));
            }
        }
        // Never publish into a VRF this session has not subscribed to: the
        // control node would close the session (XMPP.md §4.1).
        NbCmd::Publish { vrf, entry } => {
            if subscribed.contains_key(&vrf) {
                out.push_str(&encode_route_publish(agent, &vrf, &entry, true, seq));
            }
        }
        NbCmd::Withdraw { vrf, entry } => {
            if subscribed.contains_key(&vrf) {
                out.push_str(&encode_route_publish(agent, &vrf, &entry, false, seq));
            }
        }
        NbCmd::EndOfRib => out.push_str(&encode_agent_end_of_rib(agent)),
    }
}

fn handle_stanza(cn: usize, st: &Stanza, core: &mpsc::UnboundedSender<Event>) {
    if st.is_ignorable_iq() {
        return;
    }
    match st.channel() {
        Channel::Config => match decode_config_push(st) {
            Ok(sections) => {
                let _ = core.send(Event::Input(Input::ConfigPush { cn, sections }));
            }
            Err(e) => warn!(error = %e, "bad config stanza ignored"),
        },
        Channel::BgpPeer => {
            if st.kind != StanzaKind::Message {
                return;
            }
            handle_cn_message(cn, decode_cn_message(st), core);
        }
        Channel::Other => debug!(to = st.to(), "stanza for no channel ignored"),
    }
}

/// A route message from the control node (a bgp-peer `message`), decoded.
fn handle_cn_message(
    cn: usize,
    msg: Result<CnMessage, StanzaError>,
    core: &mpsc::UnboundedSender<Event>,
) {
    match msg {
        Ok(CnMessage::RouteUpdate { vrf, items }) => {
            let entries = items.into_iter().map(|i| i.entry).collect();
            let _ = core.send(Event::Input(Input::Routes { cn, vrf, entries }));
        }
        Ok(CnMessage::RouteRetract { vrf, routes }) => {
            let keys = routes
                .into_iter()
                .filter_map(|r| {
                    Some(RouteKey {
                        tag: r.key.ethernet_tag,
                        mac: r.key.mac.parse().ok()?,
                        address: r.key.address,
                    })
                })
                .collect();
            let _ = core.send(Event::Input(Input::Withdrawals { cn, vrf, keys }));
        }
        Ok(CnMessage::EndOfRib) => {
            let _ = core.send(Event::Input(Input::EndOfRib { cn }));
        }
        Ok(CnMessage::OtherFamily { node }) => debug!(%node, "route family ignored"),
        Err(e) => warn!(error = %e, "bad route message ignored"),
    }
}
