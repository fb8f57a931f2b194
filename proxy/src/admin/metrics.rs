//! Prometheus text exposition (`GET /metrics` on the admin listener).

use std::fmt::Write;

use super::api::Show;

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn line(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

/// Renders every series from one consistent snapshot.
pub fn render(s: &Show) -> String {
    let mut o = Out(String::with_capacity(4096));
    o.head(
        "tor_proxy_up",
        "gauge",
        "1 while serving (0 while stopping).",
    );
    o.line("tor_proxy_up", &[("node", &s.node)], u8::from(!s.stopping));
    o.head("tor_proxy_uptime_seconds", "gauge", "Seconds since start.");
    o.line("tor_proxy_uptime_seconds", &[], s.uptime_ms as f64 / 1000.0);

    o.head(
        "tor_proxy_listener_accepted_total",
        "counter",
        "Connections accepted per listener.",
    );
    for l in &s.listeners {
        o.line(
            "tor_proxy_listener_accepted_total",
            &[("listener", &l.name), ("mode", &l.mode)],
            l.accepted,
        );
    }
    o.head(
        "tor_proxy_listener_handshake_failures_total",
        "counter",
        "Switch TLS handshakes that failed (terminate mode).",
    );
    for l in &s.listeners {
        o.line(
            "tor_proxy_listener_handshake_failures_total",
            &[("listener", &l.name)],
            l.handshake_failures,
        );
    }

    o.head(
        "tor_proxy_backend_up",
        "gauge",
        "1 when the backend is operational (health and readiness up, not in maintenance).",
    );
    for b in &s.backends {
        let up = !matches!(b.state.as_str(), "MAINT") && !b.state.starts_with("DOWN");
        o.line(
            "tor_proxy_backend_up",
            &[("backend", &b.name)],
            u8::from(up),
        );
    }
    o.head(
        "tor_proxy_backend_health_up",
        "gauge",
        "Active health check verdict (1 = up).",
    );
    for b in &s.backends {
        o.line(
            "tor_proxy_backend_health_up",
            &[("backend", &b.name)],
            u8::from(b.health_up),
        );
    }
    o.head(
        "tor_proxy_backend_usable",
        "gauge",
        "1 when the backend takes new sessions.",
    );
    for b in &s.backends {
        o.line(
            "tor_proxy_backend_usable",
            &[("backend", &b.name)],
            u8::from(b.usable),
        );
    }
    o.head(
        "tor_proxy_backend_state",
        "gauge",
        "1 for the backend's current state label.",
    );
    for b in &s.backends {
        o.line(
            "tor_proxy_backend_state",
            &[("backend", &b.name), ("state", &b.state)],
            1,
        );
    }
    o.head(
        "tor_proxy_backend_admin_state",
        "gauge",
        "1 for the operator-set admin state.",
    );
    for b in &s.backends {
        let a = format!("{:?}", b.admin).to_lowercase();
        o.line(
            "tor_proxy_backend_admin_state",
            &[("backend", &b.name), ("state", &a)],
            1,
        );
    }
    o.head(
        "tor_proxy_backend_readiness",
        "gauge",
        "1 for the agent's reported readiness (admin/health).",
    );
    for b in &s.backends {
        o.line(
            "tor_proxy_backend_readiness",
            &[("backend", &b.name), ("state", &b.readiness)],
            1,
        );
    }
    o.head(
        "tor_proxy_backend_weight",
        "gauge",
        "Effective weight (configured x readiness percentage).",
    );
    for b in &s.backends {
        o.line(
            "tor_proxy_backend_weight",
            &[("backend", &b.name)],
            b.effective_weight,
        );
    }
    type Get = fn(&super::api::BackendView) -> u64;
    let counters: [(&str, &str, Get); 8] = [
        (
            "tor_proxy_backend_current_sessions",
            "Sessions held now.",
            |b| u64::from(b.current),
        ),
        (
            "tor_proxy_backend_sessions_total",
            "Sessions ever assigned.",
            |b| b.total,
        ),
        (
            "tor_proxy_backend_connect_errors_total",
            "Failed connects from switches' sessions.",
            |b| b.connect_errors,
        ),
        (
            "tor_proxy_backend_checks_total",
            "Active health checks run.",
            |b| b.checks_total,
        ),
        (
            "tor_proxy_backend_check_failures_total",
            "Active health checks failed.",
            |b| b.checks_failed,
        ),
        (
            "tor_proxy_backend_readiness_failures_total",
            "Readiness probes without a usable line.",
            |b| b.readiness_failed,
        ),
        (
            "tor_proxy_backend_marked_down_total",
            "Times the backend was marked down.",
            |b| b.went_down,
        ),
        (
            "tor_proxy_backend_killed_sessions_total",
            "Sessions closed by mark-down or an operator.",
            |b| b.killed_sessions,
        ),
    ];
    for (name, help, get) in counters {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        o.head(name, kind, help);
        for b in &s.backends {
            o.line(name, &[("backend", &b.name)], get(b));
        }
    }

    o.head("tor_proxy_sessions", "gauge", "Live sessions.");
    o.line("tor_proxy_sessions", &[], s.sessions.len());
    o.head(
        "tor_proxy_sessions_terminated_total",
        "counter",
        "Ended sessions by HAProxy termination code.",
    );
    for (code, n) in &s.terminations {
        o.line("tor_proxy_sessions_terminated_total", &[("code", code)], n);
    }
    o.head(
        "tor_proxy_bytes_total",
        "counter",
        "Bytes relayed by ended sessions.",
    );
    o.line("tor_proxy_bytes_total", &[("direction", "up")], s.bytes_up);
    o.line(
        "tor_proxy_bytes_total",
        &[("direction", "down")],
        s.bytes_down,
    );
    o.head(
        "tor_proxy_affinity_entries",
        "gauge",
        "Switches with a remembered backend.",
    );
    o.line("tor_proxy_affinity_entries", &[], s.affinity_entries);

    o.head(
        "tor_proxy_peer_up",
        "gauge",
        "1 while the outgoing sync link to the peer is up.",
    );
    for p in &s.peers {
        o.line(
            "tor_proxy_peer_up",
            &[("peer", &p.name)],
            u8::from(p.state == "up"),
        );
    }
    o.head(
        "tor_proxy_peer_incoming_up",
        "gauge",
        "1 while the peer's link to us is up.",
    );
    for p in &s.peers {
        o.line(
            "tor_proxy_peer_incoming_up",
            &[("peer", &p.name)],
            u8::from(p.incoming),
        );
    }
    for (name, help, get) in [
        (
            "tor_proxy_peer_sent_total",
            "Affinity entries sent to the peer.",
            (|p| p.sent) as fn(&crate::affinity::peer::PeerView) -> u64,
        ),
        (
            "tor_proxy_peer_received_total",
            "Affinity entries received from the peer.",
            |p| p.received,
        ),
        ("tor_proxy_peer_errors_total", "Peer link errors.", |p| {
            p.errors
        }),
        (
            "tor_proxy_peer_resyncs_total",
            "Full resyncs sent to the peer.",
            |p| p.resyncs,
        ),
    ] {
        o.head(name, "counter", help);
        for p in &s.peers {
            o.line(name, &[("peer", &p.name)], get(p));
        }
    }
    o.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
