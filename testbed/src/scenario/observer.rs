//! Watches a control node's route table change by change: an XMPP peer (named
//! [`OBSERVER_NAME`], publishing nothing) that subscribes to every VRF and records each
//! advertisement and withdrawal the control node reflects, with its arrival time. This is
//! how HA-stale continuity is checked: a MAC route absent from the control node for any
//! moment shows up as a withdrawal here, however short, with no sampling gap.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tf_xmpp::enet::{preference, EnetNlri};
use tf_xmpp::io::{client_open, ClientOptions};
use tf_xmpp::route::{decode_cn_message, encode_vrf_subscribe, CnMessage};
use tf_xmpp::session::{spawn_session, Incoming, SessionConfig};
use tf_xmpp::stanza::{Channel, Stanza};
use tf_xmpp::{RouteDecoding, RouteStanza};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::clock::unix_ms;

/// The observer's XMPP name (not a virtual router: it gets no config, only routes).
pub const OBSERVER_NAME: &str = "scenario-observer";

/// A route key as the control node sends it (MAC lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObservedKey {
    pub vrf: String,
    pub tag: u32,
    pub mac: String,
    pub address: String,
}

impl ObservedKey {
    pub fn is_broadcast(&self) -> bool {
        self.mac == tf_xmpp::enet::BROADCAST_MAC
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteState {
    Absent,
    /// Selected path at HA-stale (or any below live) preference.
    Stale,
    Live,
}

/// One change of one key, at a UNIX time in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteEvent {
    pub at_ms: u64,
    pub key: u32,
    pub to: RouteState,
}

#[derive(Default)]
struct State {
    ids: HashMap<ObservedKey, u32>,
    keys: Vec<ObservedKey>,
    current: Vec<RouteState>,
    events: Vec<RouteEvent>,
    /// MAC keys (not broadcast) present / live now.
    present: usize,
    live: usize,
    connected: bool,
    sessions: u64,
    vrfs: BTreeSet<(String, u32)>,
}

impl State {
    fn id(&mut self, k: ObservedKey) -> u32 {
        if let Some(id) = self.ids.get(&k) {
            return *id;
        }
        let id = self.keys.len() as u32;
        self.ids.insert(k.clone(), id);
        self.keys.push(k);
        self.current.push(RouteState::Absent);
        id
    }

    fn set(&mut self, k: ObservedKey, to: RouteState, at_ms: u64) {
        let mac = !k.is_broadcast();
        let id = self.id(k);
        let Some(slot) = self.current.get_mut(id as usize) else {
            return;
        };
        let from = *slot;
        if from == to {
            return;
        }
        *slot = to;
        if mac {
            let was_present = from != RouteState::Absent;
            let is_present = to != RouteState::Absent;
            match (was_present, is_present) {
                (false, true) => self.present += 1,
                (true, false) => self.present -= 1,
                _ => {}
            }
            match (from == RouteState::Live, to == RouteState::Live) {
                (false, true) => self.live += 1,
                (true, false) => self.live -= 1,
                _ => {}
            }
        }
        self.events.push(RouteEvent { at_ms, key: id, to });
    }
}

/// Counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObservedCounts {
    pub present: usize,
    pub live: usize,
    pub connected: bool,
    pub events: usize,
}

pub struct Observer {
    state: Arc<Mutex<State>>,
    subscribe: mpsc::UnboundedSender<(String, u32)>,
    addr: watch::Sender<SocketAddr>,
    task: JoinHandle<()>,
}

impl Observer {
    /// Connects to the control node at `addr` (and again whenever the session ends), on
    /// the runtime `rt`.
    pub fn start(
        rt: &Handle,
        addr: SocketAddr,
        vrfs: impl IntoIterator<Item = (String, u32)>,
        hold_time: Duration,
    ) -> Observer {
        let state = Arc::new(Mutex::new(State {
            vrfs: vrfs.into_iter().collect(),
            ..State::default()
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        let (addr_tx, addr_rx) = watch::channel(addr);
        let task = rt.spawn(run(state.clone(), rx, addr_rx, hold_time));
        Observer {
            state,
            subscribe: tx,
            addr: addr_tx,
            task,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to one more VRF (a network added at run time).
    pub fn subscribe(&self, vrf: &str, instance_id: u32) {
        let _ = self.subscribe.send((vrf.to_string(), instance_id));
    }

    /// The control node moved (restarted elsewhere).
    pub fn set_addr(&self, addr: SocketAddr) {
        let _ = self.addr.send(addr);
    }

    pub fn counts(&self) -> ObservedCounts {
        let s = self.lock();
        ObservedCounts {
            present: s.present,
            live: s.live,
            connected: s.connected,
            events: s.events.len(),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.lock().connected
    }

    /// Events from index `from` on, and the key of each id they mention.
    pub fn events_since(&self, from: usize) -> Vec<RouteEvent> {
        let s = self.lock();
        s.events.get(from..).map(<[_]>::to_vec).unwrap_or_default()
    }

    pub fn key(&self, id: u32) -> Option<ObservedKey> {
        self.lock().keys.get(id as usize).cloned()
    }

    /// Every key with its current state.
    pub fn table(&self) -> Vec<(u32, ObservedKey, RouteState)> {
        let s = self.lock();
        s.keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| Some((i as u32, k.clone(), *s.current.get(i)?)))
            .collect()
    }

    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key_of(vrf: &str, n: &EnetNlri) -> ObservedKey {
    ObservedKey {
        vrf: vrf.to_string(),
        tag: n.ethernet_tag,
        mac: n.mac.to_ascii_lowercase(),
        address: n.address.clone(),
    }
}

async fn run(
    state: Arc<Mutex<State>>,
    mut subscribe: mpsc::UnboundedReceiver<(String, u32)>,
    mut addr: watch::Receiver<SocketAddr>,
    hold_time: Duration,
) {
    let mut seq: u64 = 0;
    loop {
        let target = *addr.borrow_and_update();
        let reason = session(&state, target, &mut subscribe, &mut seq, hold_time).await;
        {
            // The control node's table is gone from our view: every key is absent from now
            // until the next session's dump says otherwise.
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            if s.connected {
                let now = unix_ms();
                let keys: Vec<ObservedKey> = s.keys.clone();
                for k in keys {
                    s.set(k, RouteState::Absent, now);
                }
            }
            s.connected = false;
        }
        debug!(%reason, "observer session ended");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = addr.changed() => {}
        }
    }
}

async fn session(
    state: &Arc<Mutex<State>>,
    addr: SocketAddr,
    subscribe: &mut mpsc::UnboundedReceiver<(String, u32)>,
    seq: &mut u64,
    hold_time: Duration,
) -> String {
    let tcp = match tokio::net::TcpStream::connect(addr).await {
        Ok(t) => t,
        Err(e) => return format!("connect {addr}: {e}"),
    };
    let _ = tcp.set_nodelay(true);
    let (stream, _) = match client_open(tcp, &ClientOptions::new(OBSERVER_NAME)).await {
        Ok(x) => x,
        Err(e) => return format!("stream open: {e}"),
    };
    // The control node's hold time: it drops a peer that stays silent longer, and the
    // session's keepalives go out at a third of it (a longer default would see the
    // observer dropped and every route look absent for a moment).
    // Route messages come decoded in one pass: the observer shares the machine with the
    // system it measures, so it must not spend more per route than the agents do.
    let config = SessionConfig {
        hold_time,
        route_decoding: RouteDecoding::CnMessages,
        ..SessionConfig::agent()
    };
    let (handle, mut incoming, _task) = spawn_session(stream, config);
    let vrfs: Vec<(String, u32)> = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.connected = true;
        s.sessions += 1;
        s.vrfs.iter().cloned().collect()
    };
    info!(%addr, vrfs = vrfs.len(), "observer connected to the control node");
    let mut out = String::new();
    for (vrf, id) in &vrfs {
        *seq += 1;
        out.push_str(&encode_vrf_subscribe(OBSERVER_NAME, vrf, *id, *seq));
    }
    if !out.is_empty() && handle.send_wait(out.into_bytes()).await.is_err() {
        return "closed while subscribing".into();
    }
    loop {
        tokio::select! {
            ev = incoming.recv() => match ev {
                Some(Incoming::Route(RouteStanza::Cn(msg))) => record(state, msg),
                Some(Incoming::Stanza(el)) => {
                    let Some(st) = Stanza::from_element(el) else { continue };
                    if st.channel() != Channel::BgpPeer {
                        continue;
                    }
                    match decode_cn_message(&st) {
                        Ok(msg) => record(state, msg),
                        Err(e) => debug!(error = %e, "observer: route message not decoded"),
                    }
                }
                Some(Incoming::Closed(r)) => return r.to_string(),
                None => return "session task ended".into(),
                Some(_) => {}
            },
            sub = subscribe.recv() => {
                let Some((vrf, id)) = sub else { return "observer stopped".into() };
                let new = state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .vrfs
                    .insert((vrf.clone(), id));
                if new {
                    *seq += 1;
                    let msg = encode_vrf_subscribe(OBSERVER_NAME, &vrf, id, *seq);
                    if handle.send_wait(msg.into_bytes()).await.is_err() {
                        return "closed while subscribing".into();
                    }
                }
            }
        }
    }
}

/// Records what one control-node route message changed, stamped now.
fn record(state: &Mutex<State>, msg: CnMessage) {
    let now = unix_ms();
    match msg {
        CnMessage::RouteUpdate { vrf, items } => {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            for i in items {
                let to = if i.entry.local_preference >= preference::LOW {
                    RouteState::Live
                } else {
                    RouteState::Stale
                };
                s.set(key_of(&vrf, &i.entry.nlri), to, now);
            }
        }
        CnMessage::RouteRetract { vrf, routes } => {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            for r in routes {
                s.set(key_of(&vrf, &r.key), RouteState::Absent, now);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(mac: &str) -> ObservedKey {
        ObservedKey {
            vrf: "v".into(),
            tag: 1,
            mac: mac.into(),
            address: "0.0.0.0/32".into(),
        }
    }

    #[test]
    fn counts_follow_transitions_and_events_record_changes_only() {
        let mut s = State::default();
        s.set(k("02:00:00:00:00:01"), RouteState::Live, 10);
        s.set(k("02:00:00:00:00:02"), RouteState::Stale, 11);
        s.set(k("ff:ff:ff:ff:ff:ff"), RouteState::Live, 12);
        assert_eq!(
            (s.present, s.live),
            (2, 1),
            "broadcast routes are not counted"
        );
        s.set(k("02:00:00:00:00:01"), RouteState::Live, 13);
        assert_eq!(s.events.len(), 3, "no event without a change");
        s.set(k("02:00:00:00:00:01"), RouteState::Stale, 14);
        s.set(k("02:00:00:00:00:02"), RouteState::Absent, 15);
        assert_eq!((s.present, s.live), (1, 0));
        assert_eq!(
            s.events.last(),
            Some(&RouteEvent {
                at_ms: 15,
                key: 1,
                to: RouteState::Absent
            })
        );
    }
}
