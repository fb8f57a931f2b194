//! A small hand-written SVG chart of one or more fault windows: MAC routes at the control
//! node (present and live) and switches held per agent over time, with the fault, detection
//! and convergence marked. Pure string building, no dependencies.

use std::fmt::Write;

use serde::Serialize;

/// One sample of the series, `t_ms` from the start of the chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    pub t_ms: i64,
    /// Per agent: switches it reports active (None: did not answer).
    pub held: Vec<Option<usize>>,
    /// Per control node: MAC routes present / at live preference.
    pub routes: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Marker {
    pub t_ms: i64,
    pub label: String,
    /// `fault`, `detect` or `converged` (colours).
    pub kind: String,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub agents: &'a [String],
    pub control_nodes: usize,
    pub points: &'a [Point],
    pub markers: &'a [Marker],
}

const W: f64 = 960.0;
const PANEL_H: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 40.0;
const GAP: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Axis {
    t0: i64,
    t1: i64,
    y_max: f64,
    top: f64,
}

impl Axis {
    fn x(&self, t: i64) -> f64 {
        let span = (self.t1 - self.t0).max(1) as f64;
        LEFT + (t - self.t0) as f64 / span * (W - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        self.top + PANEL_H - v / self.y_max.max(1.0) * PANEL_H
    }
}

fn polyline(out: &mut String, a: &Axis, pts: &[(i64, f64)], color: &str, dash: bool) {
    if pts.is_empty() {
        return;
    }
    let mut d = String::new();
    for (i, (t, v)) in pts.iter().enumerate() {
        let _ = write!(
            d,
            "{}{:.1},{:.1}",
            if i == 0 { "M" } else { " L" },
            a.x(*t),
            a.y(*v)
        );
    }
    let _ = writeln!(
        out,
        r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="1.6"{}/>"#,
        if dash {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        }
    );
}

fn panel(out: &mut String, a: &Axis, title: &str) {
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{:.1}" width="{:.1}" height="{PANEL_H}" fill="none" stroke="#999"/>"##,
        a.top,
        W - LEFT - RIGHT
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{:.1}" font-size="13">{}</text>"#,
        a.top - 6.0,
        esc(title)
    );
    for i in 0..=4 {
        let v = a.y_max * f64::from(i) / 4.0;
        let y = a.y(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            y + 3.0,
            v.round()
        );
    }
}

fn legend(out: &mut String, a: &Axis, row: usize, color: &str, label: &str, dash: bool) {
    let y = a.top + 14.0 + row as f64 * 16.0;
    let x = W - RIGHT + 10.0;
    let _ = writeln!(
        out,
        r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"{}/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
        x + 18.0,
        if dash {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        },
        x + 22.0,
        y + 4.0,
        esc(label)
    );
}

/// Renders the chart as a standalone SVG document.
pub fn render(c: &Chart<'_>) -> String {
    let t0 = c
        .points
        .iter()
        .map(|p| p.t_ms)
        .chain(c.markers.iter().map(|m| m.t_ms))
        .min()
        .unwrap_or(0);
    let t1 = c
        .points
        .iter()
        .map(|p| p.t_ms)
        .chain(c.markers.iter().map(|m| m.t_ms))
        .max()
        .unwrap_or(1)
        .max(t0 + 1);
    let route_max = c
        .points
        .iter()
        .flat_map(|p| p.routes.iter().map(|r| r.0.max(r.1)))
        .max()
        .unwrap_or(1) as f64;
    let held_max = c
        .points
        .iter()
        .flat_map(|p| p.held.iter().flatten().copied())
        .max()
        .unwrap_or(1) as f64;
    let top = Axis {
        t0,
        t1,
        y_max: route_max * 1.05,
        top: TOP,
    };
    let bottom = Axis {
        t0,
        t1,
        y_max: held_max * 1.1,
        top: TOP + PANEL_H + GAP,
    };
    let height = TOP + 2.0 * PANEL_H + GAP + 50.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="15" font-weight="bold">{}</text>"#,
        esc(c.title)
    );
    panel(&mut out, &top, "MAC routes at the control node");
    panel(&mut out, &bottom, "switches held per agent");
    for cn in 0..c.control_nodes {
        let present: Vec<(i64, f64)> = c
            .points
            .iter()
            .filter_map(|p| p.routes.get(cn).map(|r| (p.t_ms, r.0 as f64)))
            .collect();
        let live: Vec<(i64, f64)> = c
            .points
            .iter()
            .filter_map(|p| p.routes.get(cn).map(|r| (p.t_ms, r.1 as f64)))
            .collect();
        let suffix = if c.control_nodes > 1 {
            format!(" (cn {cn})")
        } else {
            String::new()
        };
        polyline(&mut out, &top, &present, "#444", false);
        polyline(&mut out, &top, &live, "#2ca02c", true);
        legend(
            &mut out,
            &top,
            cn * 2,
            "#444",
            &format!("present{suffix}"),
            false,
        );
        legend(
            &mut out,
            &top,
            cn * 2 + 1,
            "#2ca02c",
            &format!("live{suffix}"),
            true,
        );
    }
    for (i, agent) in c.agents.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // Gaps (agent not answering) break the line.
        let mut run: Vec<(i64, f64)> = Vec::new();
        for p in c.points {
            match p.held.get(i).copied().flatten() {
                Some(v) => run.push((p.t_ms, v as f64)),
                None => {
                    polyline(&mut out, &bottom, &run, color, false);
                    run.clear();
                }
            }
        }
        polyline(&mut out, &bottom, &run, color, false);
        legend(&mut out, &bottom, i, color, agent, false);
    }
    for (i, m) in c.markers.iter().enumerate() {
        let color = match m.kind.as_str() {
            "fault" => "#d62728",
            "converged" => "#2ca02c",
            _ => "#ff7f0e",
        };
        let x = top.x(m.t_ms);
        let y2 = bottom.top + PANEL_H;
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{y2:.1}" stroke="{color}" stroke-dasharray="2,2"/><text x="{:.1}" y="{:.1}" font-size="10" fill="{color}">{}</text>"#,
            x + 2.0,
            y2 + 14.0 + (i % 3) as f64 * 11.0,
            esc(&m.label)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">ms ({} .. {})</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        height - 6.0,
        t0,
        t1
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_series_markers_and_escapes() {
        let points = vec![
            Point {
                t_ms: -100,
                held: vec![Some(3), Some(2)],
                routes: vec![(500, 500)],
            },
            Point {
                t_ms: 500,
                held: vec![None, Some(2)],
                routes: vec![(500, 200)],
            },
            Point {
                t_ms: 1500,
                held: vec![None, Some(5)],
                routes: vec![(500, 500)],
            },
        ];
        let markers = vec![
            Marker {
                t_ms: 0,
                label: "kill <agent-a>".into(),
                kind: "fault".into(),
            },
            Marker {
                t_ms: 1400,
                label: "converged".into(),
                kind: "converged".into(),
            },
        ];
        let agents = vec!["agent-a".to_string(), "agent-b".to_string()];
        let svg = render(&Chart {
            title: "demo & co",
            agents: &agents,
            control_nodes: 1,
            points: &points,
            markers: &markers,
        });
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("demo &amp; co"));
        assert!(svg.contains("kill &lt;agent-a&gt;"));
        // present, live, agent-a (one run: the gap ends it), agent-b.
        assert_eq!(svg.matches("<path ").count(), 4);
        assert_eq!(svg.matches("stroke-dasharray=\"2,2\"").count(), 2);
        assert!(svg.contains(">agent-b</text>"));
        assert!(svg.contains("ms (-100 .. 1500)"));
    }
}
