//! Inactivity probing as OVS does it (`jsonrpc_session`), as pure logic:
//! after `interval` with nothing received, send an `echo`; after another
//! `interval` still with nothing received, give up on the connection.
//! Any received byte counts as liveness, so a peer busy sending a 26 MB
//! reply is never declared dead halfway through it.

use std::time::{Duration, Instant};

/// What the connection driver should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeAction {
    /// Nothing to do before this instant.
    WaitUntil(Instant),
    /// Send an `echo` request now, then ask again.
    SendEcho,
    /// The peer has been silent for two intervals: close the connection.
    Close { silent_for: Duration },
    /// Probing is disabled (interval 0).
    Disabled,
}

#[derive(Clone, Debug)]
pub struct InactivityProbe {
    interval: Duration,
    last_received: Instant,
    echo_sent_at: Option<Instant>,
}

impl InactivityProbe {
    /// `interval` zero disables probing, as `inactivity_probe=0` does in OVS.
    pub fn new(interval: Duration, now: Instant) -> InactivityProbe {
        InactivityProbe {
            interval,
            last_received: now,
            echo_sent_at: None,
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// Call on every read that returned bytes.
    pub fn on_receive(&mut self, now: Instant) {
        self.last_received = now;
        self.echo_sent_at = None;
    }

    pub fn last_received(&self) -> Instant {
        self.last_received
    }

    /// Decides what to do at `now`. After `SendEcho` the caller must call
    /// `on_echo_sent`.
    pub fn poll(&self, now: Instant) -> ProbeAction {
        if self.interval.is_zero() {
            return ProbeAction::Disabled;
        }
        match self.echo_sent_at {
            None => {
                let due = self.last_received + self.interval;
                if now >= due {
                    ProbeAction::SendEcho
                } else {
                    ProbeAction::WaitUntil(due)
                }
            }
            Some(sent) => {
                let deadline = sent + self.interval;
                if now >= deadline {
                    ProbeAction::Close {
                        silent_for: now.saturating_duration_since(self.last_received),
                    }
                } else {
                    ProbeAction::WaitUntil(deadline)
                }
            }
        }
    }

    pub fn on_echo_sent(&mut self, now: Instant) {
        self.echo_sent_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_then_close_on_silence() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = InactivityProbe::new(5 * s, t0);
        assert_eq!(p.poll(t0 + 4 * s), ProbeAction::WaitUntil(t0 + 5 * s));
        assert_eq!(p.poll(t0 + 5 * s), ProbeAction::SendEcho);
        p.on_echo_sent(t0 + 5 * s);
        assert_eq!(p.poll(t0 + 7 * s), ProbeAction::WaitUntil(t0 + 10 * s));
        assert_eq!(
            p.poll(t0 + 10 * s),
            ProbeAction::Close { silent_for: 10 * s }
        );
    }

    #[test]
    fn any_byte_counts_as_liveness() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = InactivityProbe::new(5 * s, t0);
        p.on_echo_sent(t0 + 5 * s);
        // a chunk of a huge reply arrives just before the deadline
        p.on_receive(t0 + 9 * s);
        assert_eq!(p.poll(t0 + 10 * s), ProbeAction::WaitUntil(t0 + 14 * s));
    }

    #[test]
    fn zero_disables() {
        let t0 = Instant::now();
        let p = InactivityProbe::new(Duration::ZERO, t0);
        assert_eq!(
            p.poll(t0 + Duration::from_secs(3600)),
            ProbeAction::Disabled
        );
    }
}
