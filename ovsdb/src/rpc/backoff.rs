//! Reconnect backoff as OVS's `reconnect` module does it: 1, 2, 4, 8 s…
//! doubling up to `max_backoff`, reset once a connection has stayed up.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// OVS defaults: first retry after 1 s, capped at 8 s.
    pub fn ovs_default() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(8))
    }

    pub fn new(min: Duration, max: Duration) -> Backoff {
        let max = max.max(min);
        Backoff {
            min,
            max,
            next: min,
        }
    }

    pub fn set_max(&mut self, max: Duration) {
        self.max = max.max(self.min);
        self.next = self.next.min(self.max);
    }

    /// The delay before the next attempt; doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// A connection succeeded and stayed up: start again from the minimum.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::ovs_default();
        let got: Vec<u64> = (0..6).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 8, 8]);
        b.reset();
        assert_eq!(b.next_delay().as_secs(), 1);
    }
}
