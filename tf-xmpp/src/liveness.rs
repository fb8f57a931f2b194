//! Pure liveness logic (XMPP.md §2, §1.7): keepalive and hold timers, reconnect backoff.
//! Time is passed in; nothing here sleeps.

use std::time::{Duration, Instant};

/// Default hold time on both sides.
pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);
/// How long a CN waits for the agent's stream header.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// The keepalive: U+0200 in UTF-8, as TF sends it.
pub const KEEPALIVE: &[u8] = b"\xC8\x80";

/// What the timers ask the session to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessAction {
    SendKeepalive,
    /// Nothing received for a whole hold time: close TCP (no `</stream:stream>`).
    HoldExpired,
}

/// Keepalive and hold timers of one established session.
#[derive(Debug, Clone)]
pub struct Liveness {
    hold: Duration,
    interval: Duration,
    last_received: Instant,
    next_keepalive: Instant,
    expired: bool,
}

impl Liveness {
    /// Starts both timers at `now`, the moment the session became Established. `send_now`
    /// (the agent's behaviour) makes the first keepalive due at once; otherwise the first
    /// one is due after hold/3.
    pub fn established(hold: Duration, now: Instant, send_now: bool) -> Self {
        let hold = hold.max(Duration::from_millis(3));
        let interval = hold / 3;
        Liveness {
            hold,
            interval,
            last_received: now,
            next_keepalive: if send_now { now } else { now + interval },
            expired: false,
        }
    }

    pub fn hold_time(&self) -> Duration {
        self.hold
    }

    pub fn keepalive_interval(&self) -> Duration {
        self.interval
    }

    /// A keepalive, an iq or a message arrived: restart the hold timer.
    pub fn on_received(&mut self, now: Instant) {
        if now > self.last_received {
            self.last_received = now;
        }
    }

    /// When the hold timer expires if nothing more arrives.
    pub fn hold_deadline(&self) -> Instant {
        self.last_received + self.hold
    }

    /// The earliest instant at which [`Liveness::poll`] has something to do.
    pub fn next_deadline(&self) -> Instant {
        self.next_keepalive.min(self.last_received + self.hold)
    }

    /// Hold expiry first (a dead session sends nothing more), then a due keepalive.
    pub fn poll(&mut self, now: Instant) -> Option<LivenessAction> {
        if self.expired || now >= self.last_received + self.hold {
            self.expired = true;
            return Some(LivenessAction::HoldExpired);
        }
        if now >= self.next_keepalive {
            // Skip missed intervals instead of bursting after a stall.
            while self.next_keepalive <= now {
                self.next_keepalive += self.interval;
            }
            return Some(LivenessAction::SendKeepalive);
        }
        None
    }
}

/// The agent's reconnect delay: min(2^(n-1), 30) s before attempt n (0 before the first),
/// with ±10% jitter; reset after 3 keepalives are received on an established session.
#[derive(Debug, Clone, Default)]
pub struct ReconnectBackoff {
    failures: u32,
    keepalives: u32,
}

/// The backoff cap.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Keepalives that prove a session healthy enough to reset the backoff.
pub const KEEPALIVES_TO_RESET: u32 = 3;

impl ReconnectBackoff {
    pub fn new() -> Self {
        Self::default()
    }

    /// Delay before the next attempt; `jitter` in [0, 1) picks a point within ±10%.
    /// Counts the attempt.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let n = self.failures;
        self.failures = self.failures.saturating_add(1);
        self.keepalives = 0;
        if n == 0 {
            return Duration::ZERO;
        }
        let base = if n > 5 {
            MAX_BACKOFF
        } else {
            Duration::from_secs(1 << (n - 1)).min(MAX_BACKOFF)
        };
        let j = jitter.clamp(0.0, 1.0);
        base.mul_f64(0.9 + 0.2 * j)
    }

    /// A keepalive arrived on the current session.
    pub fn on_keepalive_received(&mut self) {
        self.keepalives = self.keepalives.saturating_add(1);
        if self.keepalives >= KEEPALIVES_TO_RESET {
            self.failures = 0;
        }
    }

    /// Attempts counted since the last reset.
    pub fn attempts(&self) -> u32 {
        self.failures
    }
}

/// A jitter value in [0, 1) from the std hasher's per-process random keys (no extra crate).
pub fn random_jitter() -> f64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn agent_sends_a_keepalive_at_once_then_every_hold_over_3() {
        let t0 = Instant::now();
        let mut l = Liveness::established(DEFAULT_HOLD_TIME, t0, true);
        assert_eq!(l.poll(t0), Some(LivenessAction::SendKeepalive));
        assert_eq!(l.poll(t0), None);
        assert_eq!(l.next_deadline(), t0 + 30 * S);
        assert_eq!(l.poll(t0 + 29 * S), None);
        l.on_received(t0 + 29 * S);
        assert_eq!(l.poll(t0 + 30 * S), Some(LivenessAction::SendKeepalive));
        assert_eq!(l.poll(t0 + 59 * S), None);
        assert_eq!(l.poll(t0 + 60 * S), Some(LivenessAction::SendKeepalive));
    }

    #[test]
    fn cn_waits_one_interval_before_its_first_keepalive() {
        let t0 = Instant::now();
        let mut l = Liveness::established(DEFAULT_HOLD_TIME, t0, false);
        assert_eq!(l.poll(t0), None);
        assert_eq!(l.poll(t0 + 30 * S), Some(LivenessAction::SendKeepalive));
    }

    #[test]
    fn hold_timer_restarts_on_receive_and_expires_after_silence() {
        let t0 = Instant::now();
        let mut l = Liveness::established(DEFAULT_HOLD_TIME, t0, false);
        for k in 1..=5u32 {
            let t = t0 + k * 80 * S;
            assert_ne!(l.poll(t), Some(LivenessAction::HoldExpired));
            l.on_received(t);
        }
        let last = t0 + 400 * S;
        assert_eq!(l.next_deadline().min(last + 90 * S), l.next_deadline());
        assert_ne!(l.poll(last + 89 * S), Some(LivenessAction::HoldExpired));
        assert_eq!(l.poll(last + 90 * S), Some(LivenessAction::HoldExpired));
        // Expiry is sticky.
        l.on_received(last + 91 * S);
        assert_eq!(l.poll(last + 91 * S), Some(LivenessAction::HoldExpired));
    }

    #[test]
    fn missed_keepalives_do_not_burst() {
        let t0 = Instant::now();
        let mut l = Liveness::established(Duration::from_secs(9), t0, false);
        l.on_received(t0 + 8 * S);
        assert_eq!(l.poll(t0 + 8 * S), Some(LivenessAction::SendKeepalive));
        assert_eq!(l.poll(t0 + 8 * S), None);
        assert_eq!(l.next_deadline(), t0 + 9 * S);
    }

    #[test]
    fn backoff_sequence_cap_jitter_and_reset() {
        let mut b = ReconnectBackoff::new();
        let got: Vec<u64> = (0..9).map(|_| b.next_delay(0.5).as_secs()).collect();
        assert_eq!(got, vec![0, 1, 2, 4, 8, 16, 30, 30, 30]);
        let lo = b.next_delay(0.0);
        let hi = b.next_delay(0.999_999);
        assert_eq!(lo, Duration::from_secs(27));
        assert!(hi > Duration::from_millis(32_990) && hi <= Duration::from_secs(33));
        b.on_keepalive_received();
        b.on_keepalive_received();
        assert!(b.attempts() > 0);
        b.on_keepalive_received();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next_delay(0.5), Duration::ZERO);
        // Keepalives from an earlier session do not count towards the next one.
        b.on_keepalive_received();
        b.on_keepalive_received();
        assert_eq!(b.next_delay(0.5), Duration::from_secs(1));
        b.on_keepalive_received();
        assert_eq!(b.attempts(), 2);
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..100 {
            let j = random_jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
