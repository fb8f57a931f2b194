//! Active connections with reconnect backoff, as OVS's `reconnect` does:
//! retry after 1, 2, 4, 8 s (capped), and start again from the minimum once
//! a session has stayed up longer than the cap.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::session::{Client, SessionEvent, SessionOptions};
use crate::rpc::Backoff;
use crate::transport::{connect, Target, TlsFiles};

pub struct Reconnector {
    target: Target,
    tls: Option<TlsFiles>,
    options: SessionOptions,
    backoff: Backoff,
    max_backoff: Duration,
    last_connect: Option<Instant>,
    attempts: u64,
}

impl Reconnector {
    pub fn new(
        target: Target,
        tls: Option<TlsFiles>,
        options: SessionOptions,
        max_backoff: Duration,
    ) -> Reconnector {
        Reconnector {
            target,
            tls,
            options,
            backoff: Backoff::new(Duration::from_secs(1), max_backoff),
            max_backoff,
            last_connect: None,
            attempts: 0,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Connects, waiting between failed attempts, and returns a new session.
    /// Call again after the previous session closed.
    pub async fn next_session(&mut self) -> (Client, mpsc::UnboundedReceiver<SessionEvent>) {
        if let Some(t) = self.last_connect.take() {
            if t.elapsed() >= self.max_backoff {
                self.backoff.reset();
            } else {
                // The last session died young: back off before redialling.
                tokio::time::sleep(self.backoff.next_delay()).await;
            }
        }
        loop {
            self.attempts += 1;
            match connect(&self.target, self.tls.as_ref()).await {
                Ok(stream) => {
                    info!(target = %self.target, "connected");
                    self.last_connect = Some(Instant::now());
                    return Client::start(stream, self.options.clone());
                }
                Err(e) => {
                    let delay = self.backoff.next_delay();
                    warn!(target = %self.target, error = %e, retry_in = ?delay, "connection attempt failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    pub fn attempts(&self) -> u64 {
        self.attempts
    }
}
