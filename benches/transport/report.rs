//! The figures, their targets, and the Markdown and JSON reports.

use std::fmt::Write as _;
use std::time::Duration;

use crate::measure::median;
use crate::net::{Kind, KINDS};
use crate::{Opts, Pin, Results};

/// A target from the issue, checked on the ring's value.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// `ring / kind` at most (lower-is-better figures) or at least (higher-is-better) this.
    Ratio(Kind, f64),
    /// The ring's own value at most this.
    AtMost(f64),
}

/// One row of the main table.
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) id: &'static str,
    pub(crate) label: &'static str,
    pub(crate) unit: &'static str,
    /// Displayed value = stored value × scale.
    scale: f64,
    pub(crate) higher_is_better: bool,
    targets: &'static [Target],
    /// The ring targets only hold for unpinned runs (`--pin none`).
    unpinned_targets: bool,
}

const fn spec(id: &'static str, label: &'static str, unit: &'static str, higher: bool) -> Spec {
    Spec {
        id,
        label,
        unit,
        scale: 1.0,
        higher_is_better: higher,
        targets: &[],
        unpinned_targets: false,
    }
}

use Kind::{Tcp, Unix};

pub(crate) const SPECS: &[Spec] = &[
    spec("pp1.p50", "ping-pong 1 B, p50", "µs", false),
    spec("pp1.p99", "ping-pong 1 B, p99", "µs", false),
    Spec {
        targets: &[Target::Ratio(Tcp, 0.05), Target::Ratio(Unix, 0.06)],
        unpinned_targets: true,
        ..spec("pp64.p50", "ping-pong 64 B, p50", "µs", false)
    },
    spec("pp64.p99", "ping-pong 64 B, p99", "µs", false),
    spec("pp4k.p50", "ping-pong 4 KiB, p50", "µs", false),
    spec("pp4k.p99", "ping-pong 4 KiB, p99", "µs", false),
    Spec {
        targets: &[Target::Ratio(Unix, 0.5)],
        ..spec(
            "pp64same.p50",
            "ping-pong 64 B, p50, both on one CPU",
            "µs",
            false,
        )
    },
    Spec {
        targets: &[Target::Ratio(Tcp, 6.0), Target::Ratio(Unix, 5.0)],
        ..spec("bulk64k.gbps", "bulk, 64 KiB writes", "GB/s", true)
    },
    spec("bulk1m.gbps", "bulk, 1 MiB writes", "GB/s", true),
    spec(
        "bulk64k.cpu",
        "CPU per GB, 64 KiB writes (both processes)",
        "s/GB",
        false,
    ),
    spec(
        "bulk1m.cpu",
        "CPU per GB, 1 MiB writes (both processes)",
        "s/GB",
        false,
    ),
    Spec {
        targets: &[Target::Ratio(Tcp, 1.2)],
        ..spec(
            "setup.p50",
            "connect + first byte each way, p50",
            "µs",
            false,
        )
    },
    Spec {
        scale: 1e-3,
        ..spec(
            "conc.rate",
            "1,000 connections, 64 B ping-pong, aggregate",
            "k RT/s",
            true,
        )
    },
    Spec {
        targets: &[Target::AtMost(2.0)],
        ..spec(
            "idle.cpu_ms",
            "idle ring connection, CPU of both processes",
            "ms",
            false,
        )
    },
];

/// Rows of the explanation table: `(id, label)`.
const DETAILS: &[(&str, &str)] = &[
    ("pp64.cs", "context switches per 64 B round trip (both)"),
    ("pp64.cpu_us", "CPU µs per 64 B round trip (both)"),
    (
        "pp64same.cs",
        "context switches per 64 B round trip, one CPU",
    ),
    ("bulk64k.cs", "context switches per 64 KiB write"),
    (
        "bulk64k.ceiling",
        "shared-memory copy ceiling, 64 KiB chunks, GB/s (2 pinned spinning threads, no tokio)",
    ),
    ("bulk64k.per_ceiling", "bulk, 64 KiB writes: ring / ceiling"),
    (
        "bulk64k.ceiling_stalled",
        "copy ceiling: share of its time in waits over 20 µs (high: its threads did not run side by side)",
    ),
    ("bulk64k.cpu_client", "CPU s/GB, 64 KiB writes, client"),
    ("bulk64k.cpu_server", "CPU s/GB, 64 KiB writes, server"),
    ("bulk1m.cpu_client", "CPU s/GB, 1 MiB writes, client"),
    ("bulk1m.cpu_server", "CPU s/GB, 1 MiB writes, server"),
    ("setup.p99", "setup p99 µs"),
    ("setup.ring", "share of setups on the ring"),
    ("conc.ring", "connections on the ring (of 1,000)"),
    ("conc.connect_s", "seconds to open the 1,000 connections"),
    ("conc.connect_max_ms", "slowest of the 1,000 connects, ms"),
    (
        "conc.cs",
        "context switches per round trip, 1,000 connections",
    ),
    ("idle.cpu_client_ms", "idle CPU ms, client"),
    ("idle.cpu_server_ms", "idle CPU ms, server"),
    ("idle.cs", "idle context switches (both)"),
];

/// The note printed when xway exposes no counters of its own.
pub(crate) const NO_CENSUS: &str = "census: not exposed by this xway-tokio";

/// A computed row of the main table.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) spec: &'static Spec,
    /// Median over repetitions, per transport (already scaled).
    pub(crate) vals: [Option<f64>; 4],
    /// Medians of the within-repetition ratios ring/tcp, ring/unix, xway-tcp/tcp.
    pub(crate) ratios: [Option<f64>; 3],
    /// xway-tcp/tcp in the TCP comparison pass: for latency quantiles, the quantile of the
    /// samples of all repetitions pooled; otherwise the median of the within-repetition ratios.
    pub(crate) pair: Option<f64>,
    /// Per target: description, the value checked, pass.
    pub(crate) checks: Vec<(String, Option<f64>, bool)>,
}

#[derive(Debug)]
pub(crate) struct Report<'a> {
    pub(crate) opts: &'a Opts,
    pub(crate) res: &'a Results,
    pub(crate) rows: Vec<Row>,
    pub(crate) machine: String,
    pub(crate) elapsed: Duration,
    pub(crate) date: String,
    /// Load averages before and after the run (the host may be shared).
    pub(crate) load: (String, String),
}

fn ratio_median(per_rep: &[[Option<f64>; 4]], num: Kind, den: Kind) -> Option<f64> {
    median(
        per_rep
            .iter()
            .filter_map(|r| Some(r[num.index()]? / r[den.index()]?)),
    )
}

/// For a latency quantile (`<figure>.p50`, `<figure>.p99`): that quantile of xway-tcp's samples
/// of the TCP pair pass, all repetitions pooled, over tcp's. One repetition's p99 rests on its
/// 100 slowest round trips, and its ratio scatters by several percent even for two identical
/// transports; the pooled samples were taken in the same interleaved turns, so pooling loses
/// nothing of the pairing.
fn pooled_pair_ratio(res: &Results, id: &str) -> Option<f64> {
    let (figure, q) = match id.rsplit_once('.')? {
        (figure, "p50") => (figure, 0.50),
        (figure, "p99") => (figure, 0.99),
        _ => return None,
    };
    let quantile = |kind: Kind| {
        let mut v = res
            .tcp_pair_samples
            .get(&(figure.to_owned(), kind))?
            .clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(crate::measure::quantile(&v, q))
    };
    Some(quantile(Kind::XwayTcp)? / quantile(Tcp)?)
}

fn kind_median(per_rep: &[[Option<f64>; 4]], kind: Kind) -> Option<f64> {
    median(per_rep.iter().filter_map(|r| r[kind.index()]))
}

impl<'a> Report<'a> {
    pub(crate) fn new(
        opts: &'a Opts,
        res: &'a Results,
        elapsed: Duration,
        load_before: String,
    ) -> Report<'a> {
        let rows = SPECS
            .iter()
            .filter_map(|spec| {
                let per_rep = res.values.get(spec.id)?;
                let vals = KINDS.map(|k| kind_median(per_rep, k).map(|v| v * spec.scale));
                let ratios = [
                    ratio_median(per_rep, Kind::Ring, Tcp),
                    ratio_median(per_rep, Kind::Ring, Unix),
                    ratio_median(per_rep, Kind::XwayTcp, Tcp),
                ];
                let pair = pooled_pair_ratio(res, spec.id).or_else(|| {
                    let per_rep = res.tcp_pair.get(spec.id)?;
                    ratio_median(per_rep, Kind::XwayTcp, Tcp)
                });
                let (le, ge) = ("≤", "≥");
                let op = if spec.higher_is_better { ge } else { le };
                let ok = |v: f64, bound: f64| {
                    if spec.higher_is_better {
                        v >= bound
                    } else {
                        v <= bound
                    }
                };
                let mut checks = Vec::new();
                if !(spec.unpinned_targets && opts.pin != Pin::None) {
                    for t in spec.targets {
                        checks.push(match *t {
                            Target::Ratio(den, bound) => {
                                let v = ratio_median(per_rep, Kind::Ring, den);
                                let text = format!("ring/{} {op} {bound}", den.name());
                                (text, v, v.is_some_and(|v| ok(v, bound)))
                            }
                            Target::AtMost(bound) => {
                                let v = vals[0];
                                (
                                    format!("ring {le} {bound}"),
                                    v,
                                    v.is_some_and(|v| v <= bound),
                                )
                            }
                        });
                    }
                }
                // Judged on the TCP pair when there is one: one after the other, the two
                // differ by more than 5% from placement and the host's drift alone.
                let bound = if spec.higher_is_better { 0.95 } else { 1.05 };
                match (pair, ratios[2]) {
                    (Some(v), _) => checks.push((
                        format!("xway-tcp/tcp (pair) {op} {bound}"),
                        Some(v),
                        ok(v, bound),
                    )),
                    (None, Some(v)) => {
                        checks.push((format!("xway-tcp/tcp {op} {bound}"), Some(v), ok(v, bound)))
                    }
                    (None, None) => {}
                }
                Some(Row {
                    spec,
                    vals,
                    ratios,
                    pair,
                    checks,
                })
            })
            .collect();
        Report {
            opts,
            res,
            rows,
            machine: crate::measure::machine(),
            elapsed,
            date: utc_date(),
            load: (load_before, crate::measure::loadavg()),
        }
    }

    /// The command that reproduces this run.
    pub(crate) fn command(&self) -> String {
        let o = self.opts;
        let mut args = Vec::new();
        if o.quick {
            args.push("--quick".to_owned());
        }
        if o.reps != if o.quick { 1 } else { 3 } {
            args.push(format!("--reps {}", o.reps));
        }
        if o.pin != Pin::None {
            args.push(format!("--pin {}", o.pin.name()));
        }
        if o.groups.len() != crate::GROUPS.len() {
            args.push(format!("--only {}", o.groups.join(",")));
        }
        if o.kinds.len() != KINDS.len() {
            let names: Vec<&str> = o.kinds.iter().map(|k| k.name()).collect();
            args.push(format!("--kinds {}", names.join(",")));
        }
        if o.turns {
            args.push("--turns".to_owned());
        }
        if !o.tcp_pair && o.kinds.contains(&Kind::XwayTcp) && o.kinds.contains(&Tcp) {
            args.push("--no-tcp-pair".to_owned());
        }
        let mut cmd = "cargo bench --bench transport".to_owned();
        if !args.is_empty() {
            cmd = format!("{cmd} -- {}", args.join(" "));
        }
        cmd
    }

    fn detail_ids(&self) -> Vec<(String, String)> {
        let mut ids: Vec<(String, String)> = DETAILS
            .iter()
            .filter(|(id, _)| self.res.values.contains_key(*id))
            .map(|(id, l)| ((*id).to_owned(), (*l).to_owned()))
            .collect();
        for id in self.res.values.keys().filter(|k| k.contains(".census.")) {
            let (phase, name) = id.split_once(".census.").unwrap_or_default();
            ids.push((id.clone(), format!("xway {name} per message ({phase})")));
        }
        ids
    }

    fn has_census(&self) -> bool {
        self.res.values.keys().any(|k| k.contains(".census."))
    }

    pub(crate) fn markdown(&self) -> String {
        let o = self.opts;
        let mut s = String::new();
        let _ = writeln!(s, "### xway transport benchmark\n");
        let _ = writeln!(s, "- machine: {}", self.machine);
        let _ = writeln!(
            s,
            "- run: {}, {} repetition(s), pin={}, current-thread runtimes, {:.0} s",
            self.date,
            o.reps,
            o.pin.name(),
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "- load average before / after: {} / {}",
            self.load.0, self.load.1
        );
        let _ = writeln!(s, "- command: `{}`", self.command());
        let _ = writeln!(
            s,
            "- counts: ping-pong {} warm-up + {} timed round trips per size; bulk {} MiB after {} MiB warm-up; setup {} + {} connections; {} connections for {:.1} s after {:.1} s\n",
            o.pp_warm,
            o.pp_n,
            o.bulk_total >> 20,
            o.bulk_warm >> 20,
            o.setup_warm,
            o.setup_n,
            o.conc_conns,
            o.conc_dur.as_secs_f64(),
            o.conc_warm.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "Medians over repetitions; ratios are value ratios (latency, CPU: below 1 is better; throughput: above 1 is better) taken within each repetition, then the median.{}\n",
            if o.turns {
                " The transports took turns within each figure (`--turns`)."
            } else {
                " Each transport was measured on its own, one after the other."
            }
        );
        if o.tcp_pair {
            let _ = writeln!(
                s,
                "\"pair\": xway forced to TCP against tokio TCP in a second pass of each repetition, the two taking turns block by block, the client pinned to one CPU and both servers to the other (`figures.rs`), so that placement and the host's drift are the same for both; the xway-tcp/tcp target is judged on it. Latency quantiles of the pair are taken over the samples of all repetitions pooled.\n"
            );
        }
        let _ = writeln!(
            s,
            "| figure | unit | ring | xway-tcp | tcp | unix | ring/tcp | ring/unix | xway-tcp/tcp | xway-tcp/tcp, pair | target | result |"
        );
        let _ = writeln!(s, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|");
        for r in &self.rows {
            let targets: Vec<&str> = r.checks.iter().map(|c| c.0.as_str()).collect();
            let misses: Vec<String> = r
                .checks
                .iter()
                .filter(|c| !c.2)
                .map(|c| format!("{} is {}", c.0.split(' ').next().unwrap_or(""), opt(c.1, 3)))
                .collect();
            let result = match (r.checks.is_empty(), misses.is_empty()) {
                (true, _) => "–".to_owned(),
                (false, true) => "PASS".to_owned(),
                (false, false) => format!("MISS ({})", misses.join("; ")),
            };
            let label = if r.spec.id == "pp64.p50" && o.pin != Pin::None {
                format!("{} (pin={})", r.spec.label, o.pin.name())
            } else {
                r.spec.label.to_owned()
            };
            let _ = writeln!(
                s,
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {result} |",
                r.spec.unit,
                opt(r.vals[0], 3),
                opt(r.vals[1], 3),
                opt(r.vals[2], 3),
                opt(r.vals[3], 3),
                opt(r.ratios[0], 3),
                opt(r.ratios[1], 3),
                opt(r.ratios[2], 3),
                opt(r.pair, 3),
                if targets.is_empty() {
                    "–".to_owned()
                } else {
                    targets.join(", ")
                },
            );
        }

        let _ = writeln!(s, "\nTo explain the figures (medians):\n");
        let _ = writeln!(s, "| detail | ring | xway-tcp | tcp | unix |");
        let _ = writeln!(s, "|---|--:|--:|--:|--:|");
        for (id, label) in self.detail_ids() {
            let per_rep = &self.res.values[&id];
            let v = KINDS.map(|k| opt(kind_median(per_rep, k), 3));
            let _ = writeln!(s, "| {label} | {} | {} | {} | {} |", v[0], v[1], v[2], v[3]);
        }
        if !self.has_census() {
            let _ = writeln!(
                s,
                "\nxway doorbells / sleeps / spins per message: n/a ({NO_CENSUS})."
            );
        }
        if !self.res.notes.is_empty() {
            let _ = writeln!(s, "\nNotes:\n");
            for n in &self.res.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }

    pub(crate) fn json(&self) -> String {
        let o = self.opts;
        let mut s = String::from("{\n");
        let _ = writeln!(s, "  \"machine\": {},", jstr(&self.machine));
        let _ = writeln!(s, "  \"date\": {},", jstr(&self.date));
        let _ = writeln!(s, "  \"command\": {},", jstr(&self.command()));
        let _ = writeln!(
            s,
            "  \"loadavg\": {{\"before\": {}, \"after\": {}}},",
            jstr(&self.load.0),
            jstr(&self.load.1)
        );
        let _ = writeln!(
            s,
            "  \"elapsed_s\": {},",
            jnum(Some(self.elapsed.as_secs_f64()))
        );
        let _ = writeln!(
            s,
            "  \"options\": {{\"quick\": {}, \"reps\": {}, \"pin\": {}, \"groups\": [{}], \"pp_warm\": {}, \"pp_n\": {}, \"bulk_warm_bytes\": {}, \"bulk_total_bytes\": {}, \"setup_warm\": {}, \"setup_n\": {}, \"conc_conns\": {}, \"conc_warm_s\": {}, \"conc_dur_s\": {}, \"idle_s\": {}}},",
            o.quick,
            o.reps,
            jstr(o.pin.name()),
            o.groups.iter().map(|g| jstr(g)).collect::<Vec<_>>().join(", "),
            o.pp_warm,
            o.pp_n,
            o.bulk_warm,
            o.bulk_total,
            o.setup_warm,
            o.setup_n,
            o.conc_conns,
            o.conc_warm.as_secs_f64(),
            o.conc_dur.as_secs_f64(),
            o.idle.as_secs_f64()
        );
        s.push_str("  \"figures\": [\n");
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                let per_rep = &self.res.values[r.spec.id];
                let checks: Vec<String> = r
                    .checks
                    .iter()
                    .map(|(t, v, p)| format!("{{\"target\": {}, \"value\": {}, \"pass\": {p}}}", jstr(t), jnum(*v)))
                    .collect();
                format!(
                    "    {{\"id\": {}, \"label\": {}, \"unit\": {}, \"higher_is_better\": {}, \"median\": {}, \"per_rep\": {}, \"tcp_pair_per_rep\": {}, \"ratios\": {{\"ring/tcp\": {}, \"ring/unix\": {}, \"xway-tcp/tcp\": {}, \"xway-tcp/tcp pair\": {}}}, \"targets\": [{}]}}",
                    jstr(r.spec.id),
                    jstr(r.spec.label),
                    jstr(r.spec.unit),
                    r.spec.higher_is_better,
                    kinds_obj(|k| jnum(r.vals[k.index()])),
                    kinds_obj(|k| {
                        let v: Vec<String> =
                            per_rep.iter().map(|x| jnum(x[k.index()].map(|v| v * r.spec.scale))).collect();
                        format!("[{}]", v.join(", "))
                    }),
                    self.res.tcp_pair.get(r.spec.id).map_or("null".to_owned(), |pair| {
                        pair_obj(|k| {
                            let v: Vec<String> =
                                pair.iter().map(|x| jnum(x[k.index()].map(|v| v * r.spec.scale))).collect();
                            format!("[{}]", v.join(", "))
                        })
                    }),
                    jnum(r.ratios[0]),
                    jnum(r.ratios[1]),
                    jnum(r.ratios[2]),
                    jnum(r.pair),
                    checks.join(", ")
                )
            })
            .collect();
        s.push_str(&rows.join(",\n"));
        s.push_str("\n  ],\n  \"details\": {\n");
        let details: Vec<String> = self
            .detail_ids()
            .into_iter()
            .map(|(id, label)| {
                let per_rep = &self.res.values[&id];
                format!(
                    "    {}: {{\"label\": {}, \"median\": {}, \"per_rep\": {}}}",
                    jstr(&id),
                    jstr(&label),
                    kinds_obj(|k| jnum(kind_median(per_rep, k))),
                    kinds_obj(|k| {
                        let v: Vec<String> = per_rep.iter().map(|x| jnum(x[k.index()])).collect();
                        format!("[{}]", v.join(", "))
                    })
                )
            })
            .collect();
        s.push_str(&details.join(",\n"));
        s.push_str("\n  },\n");
        let census = if self.has_census() {
            "see details (*.census.*)"
        } else {
            NO_CENSUS
        };
        let _ = writeln!(s, "  \"census\": {},", jstr(census));
        let notes: Vec<String> = self.res.notes.iter().map(|n| jstr(n)).collect();
        let _ = writeln!(s, "  \"notes\": [{}]", notes.join(", "));
        s.push_str("}\n");
        s
    }
}

/// `{"xway-tcp": .., "tcp": ..}`.
fn pair_obj(f: impl Fn(Kind) -> String) -> String {
    format!(
        "{{{}: {}, {}: {}}}",
        jstr(Kind::XwayTcp.name()),
        f(Kind::XwayTcp),
        jstr(Tcp.name()),
        f(Tcp)
    )
}

fn kinds_obj(f: impl Fn(Kind) -> String) -> String {
    let parts: Vec<String> = KINDS
        .iter()
        .map(|&k| format!("{}: {}", jstr(k.name()), f(k)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// `v` with `digits` significant digits (at least), or "–".
pub(crate) fn opt(v: Option<f64>, digits: i32) -> String {
    match v {
        Some(v) if v.is_finite() => sig(v, digits),
        _ => "–".to_owned(),
    }
}

pub(crate) fn sig(v: f64, digits: i32) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    let decimals = (digits - 1 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

fn jnum(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".to_owned(),
    }
}

fn jstr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The current UTC date and time, `YYYY-MM-DD HH:MM UTC`.
fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}
