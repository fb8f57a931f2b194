//! Health state of one backend: HAProxy's rise/fall machine, pure and clock-free.
//!
//! The caller feeds check results and live errors with the current time (a `Duration` since any
//! fixed origin) and reads back transitions and when the next check is due. Semantics follow
//! HAProxy: a backend goes DOWN after `fall` consecutive failed checks and UP after `rise`
//! consecutive successes; checks run every `fast_interval` while a change is in progress (or
//! before the first result), every `down_interval` while fully down, else every `interval`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Timing and thresholds of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthParams {
    pub rise: u32,
    pub fall: u32,
    pub interval: Duration,
    pub fast_interval: Duration,
    pub down_interval: Duration,
}

/// State before the first check, as HAProxy's `init-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum InitState {
    /// Up; `fall` failures to go down.
    FullyUp,
    /// Up, but a single failed check marks it down (HAProxy's default).
    #[default]
    Up,
    /// Down, but a single successful check marks it up.
    Down,
    /// Down; `rise` successes to go up.
    FullyDown,
}

/// What a failed live connection (a switch's connect to this backend) does, as HAProxy's
/// `observe layer4` + `on-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Only run the next check at once.
    FastInter,
    /// Counts as a failed check and runs the next check at once.
    #[default]
    FailCheck,
    /// Leaves one failure before down, and runs the next check at once.
    SuddenDeath,
    /// Marks the backend down at once.
    MarkDown,
}

/// Up or down, with how far a change has progressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Phase {
    Up,
    /// Still up, with this many consecutive failures (< fall).
    GoingDown(u32),
    Down,
    /// Still down, with this many consecutive successes (< rise).
    GoingUp(u32),
}

/// A state change the caller must act on (e.g. close the backend's sessions on `WentDown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    WentUp,
    WentDown,
}

#[derive(Debug, Clone)]
pub struct HealthState {
    params: HealthParams,
    up: bool,
    /// Consecutive results against the current state.
    streak: u32,
    checked: bool,
    /// When the next check is due; `None` until the first check.
    next_due: Option<Duration>,
    /// When the last check started (expedited checks keep `fast_interval` from it).
    last_start: Option<Duration>,
}

impl HealthState {
    pub fn new(params: HealthParams, init: InitState) -> HealthState {
        let params = HealthParams {
            rise: params.rise.max(1),
            fall: params.fall.max(1),
            ..params
        };
        let (up, streak) = match init {
            InitState::FullyUp => (true, 0),
            InitState::Up => (true, params.fall - 1),
            InitState::Down => (false, params.rise - 1),
            InitState::FullyDown => (false, 0),
        };
        HealthState {
            params,
            up,
            streak,
            checked: false,
            next_due: None,
            last_start: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn params(&self) -> HealthParams {
        self.params
    }

    /// New timing/thresholds (config reload): keeps the current state, clamps the streak.
    pub fn set_params(&mut self, params: HealthParams) {
        self.params = HealthParams {
            rise: params.rise.max(1),
            fall: params.fall.max(1),
            ..params
        };
        let limit = if self.up {
            self.params.fall
        } else {
            self.params.rise
        };
        self.streak = self.streak.min(limit - 1);
    }

    pub fn phase(&self) -> Phase {
        match (self.up, self.streak) {
            (true, 0) => Phase::Up,
            (true, n) => Phase::GoingDown(n),
            (false, 0) => Phase::Down,
            (false, n) => Phase::GoingUp(n),
        }
    }

    /// The interval to wait after a check, given the state it left.
    pub fn interval(&self) -> Duration {
        if !self.checked || self.streak > 0 {
            self.params.fast_interval
        } else if self.up {
            self.params.interval
        } else {
            self.params.down_interval
        }
    }

    /// When the next check is due (first check: at once).
    pub fn next_due(&self, now: Duration) -> Duration {
        self.next_due.unwrap_or(now)
    }

    /// Records one active check result and schedules the next one. `started` is when that
    /// check began: checks are spaced start to start, so a hung backend is marked down within
    /// `interval + fall * timeout` (at most `interval * fall + timeout` while timeout <= interval).
    pub fn on_check(&mut self, ok: bool, started: Duration) -> Option<Transition> {
        self.checked = true;
        self.last_start = Some(started);
        let t = self.count(ok);
        self.next_due = Some(started + self.interval());
        t
    }

    /// A live connection to the backend failed (connect error or timeout).
    pub fn on_live_error(&mut self, policy: OnError, now: Duration) -> Option<Transition> {
        let t = match policy {
            OnError::FastInter => None,
            OnError::FailCheck => self.count(false),
            OnError::SuddenDeath => {
                if self.up && self.streak + 1 < self.params.fall {
                    self.streak = self.params.fall - 1;
                    None
                } else {
                    self.count(false)
                }
            }
            OnError::MarkDown => {
                if self.up {
                    self.up = false;
                    self.streak = 0;
                    Some(Transition::WentDown)
                } else {
                    self.streak = 0;
                    None
                }
            }
        };
        self.expedite(now);
        t
    }

    /// Something looks wrong (e.g. a session ended with a reset): check again now, but never
    /// sooner than `fast_interval` after the previous check started, so that a burst of errors
    /// (a thousand switches reset at once) costs one check, not a thousand.
    pub fn expedite(&mut self, now: Duration) {
        let soonest = self
            .last_start
            .map_or(now, |s| (s + self.params.fast_interval).max(now));
        if self.next_due(now) > soonest {
            self.next_due = Some(soonest);
        }
    }

    fn count(&mut self, ok: bool) -> Option<Transition> {
        match (self.up, ok) {
            (true, true) | (false, false) => {
                self.streak = 0;
                None
            }
            (true, false) => {
                self.streak += 1;
                if self.streak >= self.params.fall {
                    self.up = false;
                    self.streak = 0;
                    Some(Transition::WentDown)
                } else {
                    None
                }
            }
            (false, true) => {
                self.streak += 1;
                if self.streak >= self.params.rise {
                    self.up = true;
                    self.streak = 0;
                    Some(Transition::WentUp)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(rise: u32, fall: u32) -> HealthParams {
        HealthParams {
            rise,
            fall,
            interval: Duration::from_millis(2000),
            fast_interval: Duration::from_millis(500),
            down_interval: Duration::from_millis(4000),
        }
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_successes() {
        let mut h = HealthState::new(params(2, 3), InitState::FullyUp);
        assert_eq!(h.on_check(false, MS(0)), None);
        assert_eq!(h.phase(), Phase::GoingDown(1));
        assert_eq!(h.on_check(false, MS(500)), None);
        assert_eq!(h.on_check(false, MS(1000)), Some(Transition::WentDown));
        assert_eq!(h.phase(), Phase::Down);
        assert_eq!(h.on_check(true, MS(5000)), None);
        assert_eq!(h.phase(), Phase::GoingUp(1));
        assert_eq!(h.on_check(true, MS(5500)), Some(Transition::WentUp));
        assert!(h.is_up());
    }

    #[test]
    fn hung_backend_is_down_within_interval_times_fall_plus_timeout() {
        // Every check times out (1 s, = interval); the backend hung right after a good check.
        let p = HealthParams {
            rise: 2,
            fall: 3,
            interval: MS(1000),
            fast_interval: MS(200),
            down_interval: MS(1000),
        };
        let mut h = HealthState::new(p, InitState::FullyUp);
        h.on_check(true, MS(0));
        let hung_at = MS(1);
        let timeout = MS(1000);
        let mut now = hung_at;
        loop {
            let start = h.next_due(now).max(now);
            now = start + timeout;
            if h.on_check(false, start) == Some(Transition::WentDown) {
                break;
            }
        }
        assert!(
            now - hung_at <= p.interval * p.fall + timeout,
            "{:?}",
            now - hung_at
        );
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let mut h = HealthState::new(params(2, 3), InitState::FullyUp);
        h.on_check(false, MS(0));
        h.on_check(false, MS(500));
        h.on_check(true, MS(1000));
        assert_eq!(h.phase(), Phase::Up);
        assert_eq!(h.on_check(false, MS(3000)), None);
        assert_eq!(h.on_check(false, MS(3500)), None);
        assert_eq!(h.on_check(false, MS(4000)), Some(Transition::WentDown));
    }

    #[test]
    fn intervals_follow_the_phase() {
        let mut h = HealthState::new(params(2, 3), InitState::FullyUp);
        assert_eq!(h.next_due(MS(7)), MS(7), "first check at once");
        assert_eq!(h.interval(), MS(500), "fast until first result");
        h.on_check(true, MS(0));
        assert_eq!(h.next_due(MS(0)), MS(2000));
        h.on_check(false, MS(2000));
        assert_eq!(h.next_due(MS(2000)), MS(2500), "fast while going down");
        h.on_check(false, MS(2500));
        h.on_check(false, MS(3000));
        assert_eq!(
            h.next_due(MS(3000)),
            MS(7000),
            "down interval while fully down"
        );
        h.on_check(true, MS(7000));
        assert_eq!(h.next_due(MS(7000)), MS(7500), "fast while going up");
    }

    #[test]
    fn init_states_match_haproxy() {
        let mut up = HealthState::new(params(2, 3), InitState::Up);
        assert!(up.is_up());
        assert_eq!(up.on_check(false, MS(0)), Some(Transition::WentDown));
        let mut down = HealthState::new(params(2, 3), InitState::Down);
        assert!(!down.is_up());
        assert_eq!(down.on_check(true, MS(0)), Some(Transition::WentUp));
        let mut fd = HealthState::new(params(2, 3), InitState::FullyDown);
        assert_eq!(fd.on_check(true, MS(0)), None);
        assert_eq!(fd.on_check(true, MS(1)), Some(Transition::WentUp));
    }

    #[test]
    fn live_errors_follow_the_policy() {
        let mut h = HealthState::new(params(2, 3), InitState::FullyUp);
        h.on_check(true, MS(0));
        assert_eq!(h.on_live_error(OnError::FailCheck, MS(100)), None);
        assert_eq!(
            h.next_due(MS(100)),
            MS(500),
            "expedited to fast_interval after the last check"
        );
        assert_eq!(h.phase(), Phase::GoingDown(1));

        let mut h = HealthState::new(params(2, 3), InitState::FullyUp);
        assert_eq!(h.on_live_error(OnError::SuddenDeath, MS(0)), None);
        assert_eq!(h.phase(), Phase::GoingDown(2));
        assert_eq!(h.on_check(false, MS(1)), Some(Transition::WentDown));

        let mut h = HealthState::new(params(2, 3), InitState::FullyUp);
        assert_eq!(
            h.on_live_error(OnError::MarkDown, MS(0)),
            Some(Transition::WentDown)
        );

        let mut h = HealthState::new(params(2, 3), InitState::FullyUp);
        h.on_check(true, MS(0));
        assert_eq!(h.on_live_error(OnError::FastInter, MS(10)), None);
        assert_eq!(h.phase(), Phase::Up);
        assert_eq!(h.next_due(MS(10)), MS(500));
    }

    #[test]
    fn expedited_checks_are_rate_limited_to_fast_interval() {
        let mut h = HealthState::new(params(2, 3), InitState::FullyUp);
        h.on_check(true, MS(1000));
        assert_eq!(h.next_due(MS(1000)), MS(3000));
        h.expedite(MS(1100));
        assert_eq!(
            h.next_due(MS(1100)),
            MS(1500),
            "not before fast_interval after the last start"
        );
        h.expedite(MS(1200));
        assert_eq!(h.next_due(MS(1200)), MS(1500));
        h.expedite(MS(2000));
        assert_eq!(h.next_due(MS(2000)), MS(1500), "already due: stays due");
        h.on_check(true, MS(2000));
        h.expedite(MS(2600));
        assert_eq!(h.next_due(MS(2600)), MS(2600));
    }

    #[test]
    fn reload_keeps_state_and_clamps_streak() {
        let mut h = HealthState::new(params(2, 5), InitState::FullyUp);
        for i in 0..4 {
            h.on_check(false, MS(i));
        }
        assert_eq!(h.phase(), Phase::GoingDown(4));
        h.set_params(params(2, 2));
        assert_eq!(h.phase(), Phase::GoingDown(1));
        assert_eq!(h.on_check(false, MS(10)), Some(Transition::WentDown));
    }

    proptest! {
        /// Whatever the sequence, a state change needs exactly `fall` (or `rise`) identical
        /// results in a row, and transitions alternate.
        #[test]
        fn transitions_need_full_streaks(rise in 1u32..5, fall in 1u32..5,
                                         results in proptest::collection::vec(any::<bool>(), 0..200)) {
            let mut h = HealthState::new(params(rise, fall), InitState::FullyUp);
            let mut run_ok = 0u32;
            let mut run_fail = 0u32;
            let mut up = true;
            for (i, ok) in results.into_iter().enumerate() {
                if ok { run_ok += 1; run_fail = 0 } else { run_fail += 1; run_ok = 0 }
                let t = h.on_check(ok, MS(i as u64));
                match t {
                    Some(Transition::WentDown) => { prop_assert!(up); prop_assert!(run_fail >= fall); up = false; run_fail = 0; }
                    Some(Transition::WentUp) => { prop_assert!(!up); prop_assert!(run_ok >= rise); up = true; run_ok = 0; }
                    None => {
                        if up { prop_assert!(run_fail < fall) } else { prop_assert!(run_ok < rise) }
                    }
                }
                prop_assert_eq!(h.is_up(), up);
            }
        }
    }
}
