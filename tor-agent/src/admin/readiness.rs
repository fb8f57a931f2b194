//! The readiness port for the proxy's agent check: each connection gets one
//! line — `ready`, `drain` (no control node, or config not complete yet: no
//! new switches please) or `down` (shutting down) — and is closed.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

pub async fn serve(
    listener: TcpListener,
    state: watch::Receiver<&'static str>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((mut s, peer)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let line = format!("{}\n", *state.borrow());
        tokio::spawn(async move {
            if let Err(e) = s.write_all(line.as_bytes()).await {
                debug!(%peer, error = %e, "readiness reply not sent");
            }
            let _ = s.shutdown().await;
        });
    }
}
