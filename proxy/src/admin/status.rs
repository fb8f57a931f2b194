//! The tables `tor-proxy status` prints: one glance tells which agent holds which switch.

use std::fmt::Write;

use super::api::Show;
use crate::backend::unix_ms;

fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..=9_999 => format!("{n}B"),
        10_000..=9_999_999 => format!("{}KiB", n / 1024),
        _ => format!("{}MiB", n / (1024 * 1024)),
    }
}

/// Left-aligned columns sized to their widest cell.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let _ = write!(s, "{c:<w$}  ");
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

pub fn render(s: &Show) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tor-proxy {}  up {}  sessions {}  affinity entries {}{}",
        s.node,
        age(s.uptime_ms),
        s.sessions.len(),
        s.affinity_entries,
        if s.stopping { "  STOPPING" } else { "" }
    );
    let _ = writeln!(out, "\nLISTENERS");
    let rows: Vec<Vec<String>> = s
        .listeners
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.addr.clone(),
                l.mode.clone(),
                l.accepted.to_string(),
                l.handshake_failures.to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        &["NAME", "ADDRESS", "MODE", "ACCEPTED", "TLS-FAIL"],
        &rows,
    );

    let _ = writeln!(out, "\nBACKENDS");
    let now = unix_ms();
    let rows: Vec<Vec<String>> = s
        .backends
        .iter()
        .map(|b| {
            let check = b
                .last_check
                .as_ref()
                .map(|c| {
                    format!(
                        "{} {}ms {}",
                        if c.ok { "OK" } else { "FAIL" },
                        c.duration_ms,
                        c.detail
                    )
                })
                .unwrap_or_else(|| "-".into());
            let ready = b
                .last_readiness
                .as_ref()
                .map(|c| c.detail.clone())
                .unwrap_or_else(|| "-".into());
            vec![
                b.name.clone(),
                b.address.clone(),
                b.state.clone(),
                format!("{:?}", b.admin).to_lowercase(),
                format!("{}/{}", b.effective_weight, b.weight),
                format!(
                    "{}/{}",
                    b.current,
                    if b.max_conn == 0 {
                        "-".into()
                    } else {
                        b.max_conn.to_string()
                    }
                ),
                b.total.to_string(),
                format!("{}/{}", b.checks_failed, b.checks_total),
                b.connect_errors.to_string(),
                age(now.saturating_sub(b.last_change_unix_ms)),
                check,
                ready,
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "NAME",
            "ADDRESS",
            "STATE",
            "ADMIN",
            "WEIGHT",
            "CUR/MAX",
            "TOTAL",
            "CHK-FAIL",
            "CONN-ERR",
            "SINCE",
            "LAST-CHECK",
            "READINESS",
        ],
        &rows,
    );

    let _ = writeln!(out, "\nSESSIONS");
    let rows: Vec<Vec<String>> = s
        .sessions
        .iter()
        .map(|x| {
            vec![
                x.switch.clone(),
                x.client.clone(),
                x.backend.clone(),
                x.listener.clone(),
                age(x.age_ms),
                age(x.idle_ms),
                bytes(x.bytes_up),
                bytes(x.bytes_down),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "SWITCH", "CLIENT", "BACKEND", "LISTENER", "AGE", "IDLE", "UP", "DOWN",
        ],
        &rows,
    );

    if !s.peers.is_empty() {
        let _ = writeln!(out, "\nPEERS");
        let rows: Vec<Vec<String>> = s
            .peers
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.current.clone().unwrap_or_else(|| p.addresses.join(",")),
                    p.state.clone(),
                    if p.incoming {
                        "up".into()
                    } else {
                        "down".into()
                    },
                    p.sent.to_string(),
                    p.received.to_string(),
                    p.errors.to_string(),
                    p.resyncs.to_string(),
                    p.last_error.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "PEER",
                "ADDRESS",
                "OUT",
                "IN",
                "SENT",
                "RECEIVED",
                "ERRORS",
                "RESYNCS",
                "LAST-ERROR",
            ],
            &rows,
        );
    }
    if !s.terminations.is_empty() {
        let _ = writeln!(out, "\nTERMINATIONS");
        let line: Vec<String> = s
            .terminations
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  "));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(super::age(5_000), "5s");
        assert_eq!(super::age(125_000), "2m05s");
        assert_eq!(super::age(7_300_000), "2h01m");
        assert_eq!(super::age(90_000_000), "1d01h");
    }
}
