//! A hand-written SVG: latency CDFs (log time axis) and bar charts, one panel per figure.

use std::fmt::Write as _;

use crate::measure::{median, quantile};
use crate::net::{Kind, KINDS};
use crate::report::{sig, Report};

const PANEL_W: f64 = 470.0;
const PANEL_H: f64 = 330.0;
const COLS: usize = 3;
/// Plot area inside a panel: left, top, right, bottom margins.
const MARGIN: (f64, f64, f64, f64) = (62.0, 34.0, 14.0, 46.0);

fn color(k: Kind) -> &'static str {
    match k {
        Kind::Ring => "#d62728",
        Kind::XwayTcp => "#ff7f0e",
        Kind::Tcp => "#1f77b4",
        Kind::Unix => "#2ca02c",
    }
}

enum Panel {
    /// Title, sample id.
    Cdf(String, &'static str),
    /// Title, unit, groups of (label, value per transport).
    Bars(String, Vec<(String, [Option<f64>; 4])>),
}

/// The whole picture.
pub(crate) fn svg(report: &Report<'_>) -> String {
    let medians = |id: &str, scale: f64| -> [Option<f64>; 4] {
        let Some(per_rep) = report.res.values.get(id) else {
            return [None; 4];
        };
        KINDS.map(|k| median(per_rep.iter().filter_map(|r| r[k.index()])).map(|v| v * scale))
    };
    let pin = report.opts.pin.name();
    let mut panels = vec![
        Panel::Cdf(format!("ping-pong 64 B, RTT CDF (pin={pin})"), "pp64"),
        Panel::Cdf(format!("ping-pong 4 KiB, RTT CDF (pin={pin})"), "pp4k"),
        Panel::Cdf(
            "ping-pong 64 B, RTT CDF, both on one CPU".into(),
            "pp64same",
        ),
        Panel::Bars(
            "bulk throughput, GB/s".into(),
            vec![
                ("64 KiB writes".into(), medians("bulk64k.gbps", 1.0)),
                ("1 MiB writes".into(), medians("bulk1m.gbps", 1.0)),
            ],
        ),
        Panel::Bars(
            "setup: connect + first byte each way, p50 µs".into(),
            vec![("p50".into(), medians("setup.p50", 1.0))],
        ),
        Panel::Bars(
            "1,000 connections, 64 B ping-pong, k RT/s".into(),
            vec![("aggregate".into(), medians("conc.rate", 1e-3))],
        ),
    ];
    panels.retain(|p| match p {
        Panel::Cdf(_, id) => KINDS
            .iter()
            .any(|&k| report.res.samples.contains_key(&((*id).to_owned(), k))),
        Panel::Bars(_, groups) => groups.iter().any(|g| g.1.iter().any(Option::is_some)),
    });

    let rows = panels.len().div_ceil(COLS).max(1);
    let (w, h) = (PANEL_W * COLS as f64, PANEL_H * rows as f64 + 60.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">xway transport benchmark — {}</text>"#,
        esc(&report.date)
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="38" fill="#444">{}</text>"##,
        esc(&report.machine)
    );
    // Legend.
    for (i, k) in KINDS.iter().enumerate() {
        let x = w - 4.0 * 95.0 + i as f64 * 95.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="12" width="14" height="10" fill="{}"/><text x="{}" y="21">{}</text>"#,
            color(*k),
            x + 18.0,
            k.name()
        );
    }
    for (i, p) in panels.iter().enumerate() {
        let (x0, y0) = (
            (i % COLS) as f64 * PANEL_W,
            50.0 + (i / COLS) as f64 * PANEL_H,
        );
        let _ = writeln!(s, r#"<g transform="translate({x0},{y0})">"#);
        match p {
            Panel::Cdf(title, id) => cdf_panel(&mut s, report, title, id),
            Panel::Bars(title, groups) => bar_panel(&mut s, title, groups),
        }
        s.push_str("</g>\n");
    }
    s.push_str("</svg>\n");
    s
}

/// `1`, `20`, `500`, `2k`, `10k`.
fn short(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", sig(v / 1000.0, 1))
    } else {
        sig(v, 1)
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The plot area: (left, top, width, height).
fn area() -> (f64, f64, f64, f64) {
    let (l, t, r, b) = MARGIN;
    (l, t, PANEL_W - l - r, PANEL_H - t - b)
}

fn frame(s: &mut String, title: &str) {
    let (l, t, pw, ph) = area();
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" font-size="12" font-weight="bold" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
    );
}

fn cdf_panel(s: &mut String, report: &Report<'_>, title: &str, id: &str) {
    let (l, t, pw, ph) = area();
    frame(s, title);
    let series: Vec<(Kind, Vec<f64>)> = KINDS
        .iter()
        .filter_map(|&k| {
            let mut v = report.res.samples.get(&(id.to_owned(), k))?.clone();
            v.retain(|x| x.is_finite() && *x > 0.0);
            v.sort_by(f64::total_cmp);
            (!v.is_empty()).then_some((k, v))
        })
        .collect();
    if series.is_empty() {
        return;
    }
    // Log axis from the smallest 0.1% quantile to the largest 99.9% quantile, whole decades
    // unless the data spans less than one.
    let lo = series
        .iter()
        .map(|(_, v)| quantile(v, 0.001))
        .fold(f64::INFINITY, f64::min);
    let hi = series
        .iter()
        .map(|(_, v)| quantile(v, 0.999))
        .fold(0.0, f64::max);
    let (mut a, mut b) = (lo.log10().floor(), hi.log10().ceil());
    if b - a < 1.0 {
        (a, b) = (lo.log10() - 0.05, hi.log10() + 0.05);
    }
    let x = |v: f64| l + (v.max(1e-9).log10().clamp(a, b) - a) / (b - a) * pw;
    // "Nines" scale: 0.9, 0.99 and 0.999 equally spaced, so p99 is as visible as p50.
    let y = |q: f64| t + (1.0 - (-(1.0 - q).max(1e-3).log10()) / 3.0) * ph;
    for q in [0.0, 0.5, 0.9, 0.99, 0.999] {
        let _ = writeln!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{yq}" y2="{yq}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{q}</text>"##,
            l + pw,
            l - 4.0,
            y(q) + 4.0,
            yq = y(q)
        );
    }
    // Decades labelled; 2x and 5x gridlines labelled only when the axis spans few decades.
    let few = b - a <= 2.5;
    let mut e = a.floor() as i32;
    while f64::from(e) <= b {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v.log10() < a || v.log10() > b {
                continue;
            }
            let xv = x(v);
            let stroke = if m == 1.0 { "#ccc" } else { "#eee" };
            let _ = writeln!(
                s,
                r#"<line x1="{xv}" x2="{xv}" y1="{t}" y2="{}" stroke="{stroke}"/>"#,
                t + ph
            );
            if m == 1.0 || few {
                let _ = writeln!(
                    s,
                    r#"<text x="{xv}" y="{}" text-anchor="middle">{}</text>"#,
                    t + ph + 14.0,
                    short(v)
                );
            }
        }
        e += 1;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">round-trip time, µs (log)</text>"#,
        l + pw / 2.0,
        t + ph + 32.0
    );
    let _ = writeln!(
        s,
        r#"<text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">fraction of round trips (nines scale)</text>"#,
        t + ph / 2.0,
        t + ph / 2.0
    );
    for (k, v) in &series {
        let mut pts = String::new();
        let n = 300;
        for i in 0..=n {
            let q = i as f64 / n as f64;
            let q = (1.0 - (1.0 - q) * 1e-3f64.powf(q)).min(0.999); // denser towards the tail
            let _ = write!(pts, "{:.1},{:.1} ", x(quantile(v, q.max(1e-6))), y(q));
        }
        let _ = writeln!(
            s,
            r#"<polyline points="{pts}" fill="none" stroke="{}" stroke-width="1.8"/>"#,
            color(*k)
        );
        let p50 = quantile(v, 0.5);
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"#,
            x(p50),
            y(0.5),
            color(*k)
        );
    }
}

/// A "nice" axis maximum above `v`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn bar_panel(s: &mut String, title: &str, groups: &[(String, [Option<f64>; 4])]) {
    let (l, t, pw, ph) = area();
    frame(s, title);
    let max = groups
        .iter()
        .flat_map(|g| g.1.iter().flatten())
        .fold(0.0_f64, |a, &b| a.max(b));
    if max <= 0.0 {
        return;
    }
    let top = nice_ceiling(max * 1.12);
    let y = |v: f64| t + ph - v / top * ph;
    for i in 0..=4 {
        let v = top * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{yv}" y2="{yv}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            l + pw,
            l - 4.0,
            y(v) + 4.0,
            sig(v, 3),
            yv = y(v)
        );
    }
    let gw = pw / groups.len() as f64;
    let bw = gw * 0.8 / 4.0;
    for (gi, (label, vals)) in groups.iter().enumerate() {
        let gx = l + gi as f64 * gw + gw * 0.1;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            gx + 2.0 * bw,
            t + ph + 16.0,
            esc(label)
        );
        for (ki, k) in KINDS.iter().enumerate() {
            let Some(v) = vals[ki] else { continue };
            let bx = gx + ki as f64 * bw;
            let _ = writeln!(
                s,
                r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                y(v),
                bw - 3.0,
                t + ph - y(v),
                color(*k)
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                bx + (bw - 3.0) / 2.0,
                y(v) - 3.0,
                sig(v, 3)
            );
        }
    }
}
