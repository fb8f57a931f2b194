//! Active probes per backend, feeding the pure health machine ([`crate::health`]) and the
//! readiness state ([`readiness`]).
//!
//! - health check: a TCP connect (`check = "tcp"`) or a full TLS handshake (`"tls"`, the
//!   default) within `health.timeout`, at the interval the health machine asks for. A TLS
//!   handshake is what tells a hung agent (SIGSTOPped, or behind a dropped link) from a live
//!   one: the kernel of a stopped process still completes TCP handshakes from its backlog.
//! - readiness check: the agent's one-line status on its readiness port (see [`readiness`]).
//!
//! Both stop while the backend is in maintenance (as HAProxy's `maint`) and end when the
//! backend is removed by a reload.

pub mod readiness;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::debug;

use crate::backend::{unix_ms, AdminState, Backend, ProbeRecord};
use crate::config::CheckKind;
use crate::runtime::Runtime;
use crate::session::KillReason;

/// Starts the health and readiness tasks of a backend.
pub fn spawn(rt: Arc<Runtime>, b: Arc<Backend>) {
    tokio::spawn(health_loop(rt.clone(), b.clone()));
    tokio::spawn(readiness_loop(rt, b));
}

async fn wait(b: &Backend, notify: &tokio::sync::Notify, d: Duration) {
    let _ = b;
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = notify.notified() => {}
    }
}

async fn health_loop(rt: Arc<Runtime>, b: Arc<Backend>) {
    loop {
        if b.is_retired() || rt.stopping.load(Ordering::Relaxed) {
            return;
        }
        let s = rt.settings();
        let now = rt.pool.now();
        let (due, enabled, maint) = {
            let st = b.state();
            (
                st.health.next_due(now),
                st.checks_enabled,
                st.admin == AdminState::Maint,
            )
        };
        if !enabled || maint || s.health.check == CheckKind::None {
            wait(&b, &b.wake_check, s.health.interval).await;
            continue;
        }
        if due > now {
            wait(&b, &b.wake_check, due - now).await;
            continue;
        }
        let settings = b.settings();
        let addr = SocketAddr::new(
            settings.addr.ip(),
            settings.check_port.unwrap_or(settings.addr.port()),
        );
        let started = Instant::now();
        let started_clock = rt.pool.now();
        let result = match tokio::time::timeout(s.health.timeout, async {
            match s.health.check {
                CheckKind::Tls => {
                    let cfg = s
                        .backend_tls
                        .clone()
                        .ok_or_else(|| "no [backend_tls] for a TLS check".to_string())?;
                    let name = settings
                        .tls_server_name
                        .as_deref()
                        .or(s.backend_tls_server_name.as_deref());
                    tls_probe(addr, cfg, crate::tls::server_name(name, addr.ip())).await
                }
                _ => TcpStream::connect(addr)
                    .await
                    .map(|_| "connected".to_string())
                    .map_err(|e| format!("connect: {e}")),
            }
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(format!("timeout after {} ms", s.health.timeout.as_millis())),
        };
        let ok = result.is_ok();
        let detail = match result {
            Ok(d) | Err(d) => d,
        };
        b.checks_total.fetch_add(1, Ordering::Relaxed);
        if !ok {
            b.checks_failed.fetch_add(1, Ordering::Relaxed);
        }
        debug!(backend = %b.name, ok, %detail, "health check");
        let record = ProbeRecord {
            ok,
            detail: detail.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
            at_unix_ms: unix_ms(),
        };
        let why = format!("health check: {detail}");
        rt.update_backend(&b, &why, KillReason::BackendDown, |st| {
            st.last_check = Some(record);
            st.health.on_check(ok, started_clock)
        });
    }
}

async fn tls_probe(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    name: rustls_pki_types::ServerName<'static>,
) -> Result<String, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut tls = TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let version = tls
        .get_ref()
        .1
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
    Ok(format!("TLS handshake ok ({version})"))
}

async fn readiness_loop(rt: Arc<Runtime>, b: Arc<Backend>) {
    loop {
        if b.is_retired() || rt.stopping.load(Ordering::Relaxed) {
            return;
        }
        let s = rt.settings();
        let interval = s.health.readiness_interval.unwrap_or(s.health.interval);
        let settings = b.settings();
        let maint = b.state().admin == AdminState::Maint;
        let Some(port) = settings.readiness_port.filter(|_| !maint) else {
            wait(&b, &b.wake_readiness, interval).await;
            continue;
        };
        let addr = SocketAddr::new(settings.addr.ip(), port);
        let started = Instant::now();
        let result = match tokio::time::timeout(s.health.timeout, read_line(addr)).await {
            Ok(r) => r,
            Err(_) => Err(format!("timeout after {} ms", s.health.timeout.as_millis())),
        };
        let mut record = ProbeRecord {
            ok: false,
            detail: String::new(),
            duration_ms: started.elapsed().as_millis() as u64,
            at_unix_ms: unix_ms(),
        };
        match result {
            Ok(raw) => {
                let report = readiness::parse(&raw);
                let line = String::from_utf8_lossy(&raw);
                let line = line.lines().next().unwrap_or("").trim().to_string();
                record.ok = !report.is_empty();
                record.detail = if line.is_empty() {
                    "empty reply".into()
                } else {
                    line.clone()
                };
                if !record.ok {
                    b.readiness_failed.fetch_add(1, Ordering::Relaxed);
                }
                let why = format!("readiness: {line:?}");
                rt.update_backend(&b, &why, KillReason::BackendDown, |st| {
                    st.last_readiness = Some(record);
                    if let Some(a) = report.admin {
                        st.agent_admin = a;
                    }
                    if let Some(h) = report.health {
                        st.agent_health = h;
                    }
                    if let Some(p) = report.weight_percent {
                        st.weight_percent = p;
                    }
                });
            }
            Err(e) => {
                // No change: connectivity is the health check's job.
                b.readiness_failed.fetch_add(1, Ordering::Relaxed);
                record.detail = e;
                b.state().last_readiness = Some(record);
            }
        }
        wait(&b, &b.wake_readiness, interval).await;
    }
}

async fn read_line(addr: SocketAddr) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut buf = vec![0u8; readiness::MAX_LINE];
    let mut len = 0;
    while len < buf.len() {
        let chunk = buf.get_mut(len..).unwrap_or_default();
        let n = s.read(chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        len += n;
        if buf.get(..len).is_some_and(|b| b.contains(&b'\n')) {
            break;
        }
    }
    buf.truncate(len);
    Ok(buf)
}
