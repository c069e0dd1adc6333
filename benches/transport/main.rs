//! Transport benchmark: the xway ring against xway forced to TCP, tokio `TcpStream` (loopback,
//! `TCP_NODELAY`) and tokio `UnixStream`, measured in the same run and the same way, between
//! two real processes with tokio current-thread runtimes.
//!
//! # Running it
//!
//! ```text
//! cargo bench --bench transport                                # full run, 3 repetitions (~1-2 min)
//! XWAY_BENCH_QUICK=1 cargo bench --bench transport             # smoke run (< 20 s)
//! cargo bench --bench transport -- --quick --pin same --only pp,bulk --reps 5
//! ```
//!
//! Options, as environment variables or as arguments after `--` (arguments win):
//!
//! | variable | argument | meaning |
//! |---|---|---|
//! | `XWAY_BENCH_QUICK=1` | `--quick` | short counts, 1 repetition (CI smoke) |
//! | `XWAY_BENCH_REPS=N` | `--reps N` | repetitions (default 3, quick 1) |
//! | `XWAY_BENCH_PIN=none\|same\|apart` | `--pin P` | placement of both processes for all figures (default `none`): `same` pins both to the first allowed CPU, `apart` the client to the first and the server to the second |
//! | `XWAY_BENCH_ONLY=a,b` | `--only a,b` | figure groups: `pp`, `pp-same`, `bulk`, `setup`, `conc`, `idle` |
//! | `XWAY_BENCH_KINDS=a,b` | `--kinds a,b` | transports: `ring`, `xway-tcp`, `tcp`, `unix` (default: all; ratios need both sides) |
//! | `XWAY_BENCH_TURNS=1` | `--turns` | the main pass measures the transports in turns, block by block (see below) |
//! | `XWAY_BENCH_TCP_PAIR=0` | `--no-tcp-pair` | skip the TCP pair pass (see below) |
//! | `XWAY_BENCH_RING_SIZE=N` | | ring bytes per direction for the xway clients (default: the library's default); for experiments, the targets assume the default |
//!
//! `cargo bench` passes `--bench` to the binary; without it (`cargo test --all-targets`) the
//! binary only prints how to run it. To run the built binary by hand, pass `--bench` or set
//! `XWAY_BENCH_RUN=1`.
//!
//! Output: a Markdown table on stdout (also `target/xway-bench/results.md`), JSON in
//! `target/xway-bench/results.json`, an SVG plot in `target/xway-bench/plot.svg`. To look at
//! the plot as an image: `rsvg-convert target/xway-bench/plot.svg -o plot.png`.
//!
//! # How it measures
//!
//! - The parent (this process) is always the measuring client. For each figure and transport
//!   it starts itself again as the server child (`current_exe --xway-bench-child KIND CPU`),
//!   which echoes (ping-pong), sinks with a 1-byte acknowledgement (bulk) or answers the first
//!   byte (setup); see `net.rs`.
//! - Each repetition has two passes. The main pass measures every transport for every figure,
//!   one transport after the other, placed as `--pin` says, rotating the transport order from
//!   one repetition to the next. The table shows medians over repetitions; ratios are computed
//!   inside each repetition and then their median is taken (the host is noisy).
//! - The TCP pair pass measures xway forced to TCP against tokio TCP again, the two taking
//!   turns block by block (`figures.rs`), the client pinned to the first CPU and both servers
//!   to the second. One after the other and unpinned, the two differ by more than the 5% the
//!   target allows from the host's drift and from where the scheduler puts the processes
//!   alone: one TCP pair on one CPU does a 64 B round trip in 17 µs, across CPUs in 57 µs.
//!   In turns and pinned, tokio TCP against itself (a throwaway build) gave medians over five
//!   repetitions within 3.5% on every figure. The xway-tcp/tcp target is judged on this pass.
//! - `--turns` measures the main pass in turns as well. Then the scheduler tends to leave each
//!   client and server pair on one CPU after the pauses between its blocks, so unpinned
//!   figures become one-CPU figures; that is why the main pass does not use turns.
//! - Ping-pong: `write_all` + `read_exact`, each round trip timed with `Instant`, after a
//!   warm-up. Bulk: time from the first write to the acknowledgement, after a warm-up
//!   transfer on the same connection; CPU time of both processes from their CPU-time clocks
//!   around the timed transfer. Setup: connect + `TCP_NODELAY` + one byte each way, one
//!   connection at a time, teardown untimed. The 1,000-connection figure counts round trips
//!   (one 64 B message each way) of all connections together.
//! - Right after the ring's 64 KiB bulk figure, the same byte counts go through a "shared-memory
//!   copy ceiling" (`ceiling.rs`): two threads pinned where the client and the server ran, a
//!   plain spinning ring of the same size in shared memory, `memcpy` in and out in 64 KiB chunks, nothing else. The details show it,
//!   "ring / ceiling" (within each repetition: how much of what the host allowed at that moment
//!   the ring got, since the host's cross-CPU copy speed moves a lot) and how stalled the probe
//!   was (a stalled probe is no ceiling).
//! - "pp-same" pins both processes to one CPU (`sched_setaffinity`) for one 64 B ping-pong,
//!   whatever `--pin` says for the rest.
//! - xway's own counters (doorbells, sleeps, spins per message) are printed when the library
//!   exposes them; see `xway_census` in `figures.rs`.
//!
//! No figure is asserted on: targets are reported as PASS/MISS, never fail the run.

mod ceiling;
mod figures;
mod measure;
mod net;
mod plot;
mod report;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ceiling::Ceiling;
use figures::{Out, Target};
use net::{Kind, Server, KINDS};

/// Placement of both processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pin {
    None,
    Same,
    Apart,
}

impl Pin {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Pin::None => "none",
            Pin::Same => "same",
            Pin::Apart => "apart",
        }
    }
}

/// Figure groups, in run order.
pub(crate) const GROUPS: [&str; 6] = ["pp", "pp-same", "bulk", "setup", "conc", "idle"];

/// The run's options and counts.
#[derive(Clone, Debug)]
pub(crate) struct Opts {
    pub(crate) quick: bool,
    pub(crate) reps: usize,
    pub(crate) pin: Pin,
    pub(crate) groups: Vec<&'static str>,
    /// The transports measured (all four unless `--kinds` says otherwise).
    pub(crate) kinds: Vec<Kind>,
    /// The main pass measures its transports in turns (`--turns`) rather than one after the
    /// other.
    pub(crate) turns: bool,
    /// Each repetition ends with the TCP comparison pass (`--no-tcp-pair` turns it off).
    pub(crate) tcp_pair: bool,
    pub(crate) pp_warm: usize,
    pub(crate) pp_n: usize,
    pub(crate) bulk_warm: u64,
    pub(crate) bulk_total: u64,
    pub(crate) setup_warm: usize,
    pub(crate) setup_n: usize,
    pub(crate) conc_conns: usize,
    pub(crate) conc_warm: Duration,
    pub(crate) conc_dur: Duration,
    pub(crate) idle: Duration,
}

impl Opts {
    /// Reads the environment, then the arguments (which win). Unknown arguments are ignored:
    /// `cargo bench` passes `--bench` and any filter words.
    fn parse() -> Result<Opts, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut quick = env("XWAY_BENCH_QUICK").is_some_and(|v| v != "0");
        let mut reps = env("XWAY_BENCH_REPS");
        let mut pin = env("XWAY_BENCH_PIN");
        let mut only = env("XWAY_BENCH_ONLY");
        let mut kinds = env("XWAY_BENCH_KINDS");
        let mut turns = env("XWAY_BENCH_TURNS").is_some_and(|v| v != "0");
        let mut tcp_pair = env("XWAY_BENCH_TCP_PAIR").is_none_or(|v| v != "0");
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => quick = true,
                "--reps" => reps = args.next(),
                "--pin" => pin = args.next(),
                "--only" => only = args.next(),
                "--kinds" => kinds = args.next(),
                "--turns" => turns = true,
                "--no-tcp-pair" => tcp_pair = false,
                _ => {}
            }
        }
        let pin = match pin.as_deref().unwrap_or("none") {
            "none" => Pin::None,
            "same" => Pin::Same,
            "apart" => Pin::Apart,
            p => return Err(format!("--pin {p}: expected none, same or apart")),
        };
        let groups = match only {
            None => GROUPS.to_vec(),
            Some(list) => {
                let mut g = Vec::new();
                for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    g.push(
                        *GROUPS
                            .iter()
                            .find(|x| **x == name)
                            .ok_or(format!("--only {name}: expected some of {GROUPS:?}"))?,
                    );
                }
                g
            }
        };
        let kinds = match kinds {
            None => KINDS.to_vec(),
            Some(list) => {
                let mut k = Vec::new();
                for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    k.push(*KINDS.iter().find(|x| x.name() == name).ok_or(format!(
                        "--kinds {name}: expected some of ring, xway-tcp, tcp, unix"
                    ))?);
                }
                k
            }
        };
        let tcp_pair = tcp_pair && kinds.contains(&Kind::XwayTcp) && kinds.contains(&Kind::Tcp);
        let reps = match reps {
            Some(r) => r.parse().map_err(|_| format!("--reps {r}: not a number"))?,
            None if quick => 1,
            None => 3,
        };
        let ms = Duration::from_millis;
        Ok(if quick {
            Opts {
                quick,
                reps,
                pin,
                groups,
                kinds: kinds.clone(),
                turns,
                tcp_pair,
                pp_warm: 200,
                pp_n: 2_000,
                bulk_warm: 16 << 20,
                bulk_total: 256 << 20,
                setup_warm: 20,
                setup_n: 200,
                conc_conns: 1_000,
                conc_warm: ms(100),
                conc_dur: ms(300),
                idle: ms(1_000),
            }
        } else {
            Opts {
                quick,
                reps,
                pin,
                groups,
                kinds,
                turns,
                tcp_pair,
                pp_warm: 1_000,
                pp_n: 10_000,
                bulk_warm: 64 << 20,
                bulk_total: 1 << 30,
                setup_warm: 100,
                setup_n: 1_000,
                conc_conns: 1_000,
                conc_warm: ms(300),
                conc_dur: ms(1_000),
                idle: ms(2_000),
            }
        })
    }
}

/// Everything measured: per id, per repetition, per transport.
#[derive(Debug, Default)]
pub(crate) struct Results {
    pub(crate) values: BTreeMap<String, Vec<[Option<f64>; 4]>>,
    /// The same, from the TCP comparison pass (xway-tcp and tcp only).
    pub(crate) tcp_pair: BTreeMap<String, Vec<[Option<f64>; 4]>>,
    /// Latency samples (µs) per figure id and transport, all repetitions pooled.
    pub(crate) samples: BTreeMap<(String, Kind), Vec<f64>>,
    /// The same, from the TCP comparison pass.
    pub(crate) tcp_pair_samples: BTreeMap<(String, Kind), Vec<f64>>,
    pub(crate) notes: Vec<String>,
}

impl Results {
    fn store(&mut self, reps: usize, rep: usize, kind: Kind, out: Out, pass: Pass) {
        let values = match pass {
            Pass::Main => &mut self.values,
            Pass::TcpPair => &mut self.tcp_pair,
        };
        for (id, v) in out.vals {
            let per_rep = values.entry(id).or_insert_with(|| vec![[None; 4]; reps]);
            per_rep[rep][kind.index()] = Some(v);
        }
        let samples = match pass {
            Pass::Main => &mut self.samples,
            Pass::TcpPair => &mut self.tcp_pair_samples,
        };
        for (id, s) in out.samples {
            samples.entry((id, kind)).or_default().extend(s);
        }
        self.notes.extend(
            out.notes
                .into_iter()
                .map(|n| format!("rep {}{}: {n}", rep + 1, pass.suffix())),
        );
    }
}

/// The two passes of a repetition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Every transport, placed as `--pin` says, one after the other (or in turns, `--turns`).
    Main,
    /// xway forced to TCP against tokio TCP, in turns, the client on the first CPU and both
    /// servers on the second: with placement and the host's drift the same for both, what is
    /// left of their difference is xway's.
    TcpPair,
}

impl Pass {
    fn suffix(self) -> &'static str {
        match self {
            Pass::Main => "",
            Pass::TcpPair => " (TCP pair)",
        }
    }
}

/// Runs the figures, starting a server child per figure and transport.
struct Runner {
    rt: tokio::runtime::Runtime,
    opts: Opts,
    cpus: Vec<usize>,
    res: Results,
}

impl Runner {
    /// The CPU for the child under the run's placement (`None`: inherit, unpinned).
    fn child_cpu(&self, group: &str, pass: Pass) -> Option<usize> {
        let second = *self.cpus.get(1).unwrap_or(&self.cpus[0]);
        match (group, self.placement(pass)) {
            ("pp-same", _) | (_, Pin::Same) => Some(self.cpus[0]),
            (_, Pin::Apart) => Some(second),
            (_, Pin::None) => None,
        }
    }

    fn placement(&self, pass: Pass) -> Pin {
        match pass {
            Pass::Main => self.opts.pin,
            Pass::TcpPair => Pin::Apart,
        }
    }

    /// Measures one figure group for `kinds`, each against its own server child, the
    /// transports taking turns if there are several (see `figures.rs`), and stores the results.
    fn run_group(&mut self, group: &'static str, rep: usize, kinds: &[Kind], pass: Pass) {
        let o = self.opts.clone();
        let t = Instant::now();
        let saved = measure::get_affinity();
        if group == "pp-same" || self.placement(pass) != Pin::None {
            measure::pin_to(self.cpus[0]);
        }
        let outs = self.measure_group(group, kinds, pass, &o);
        if let Some(set) = saved {
            measure::set_affinity(&set);
        }
        let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        let names = names.join(if kinds.len() > 1 { "+" } else { "" });
        match outs {
            Ok(outs) => {
                for (&kind, out) in kinds.iter().zip(outs) {
                    self.res.store(o.reps, rep, kind, out, pass);
                }
            }
            Err(e) => {
                let msg = format!(
                    "rep {}{}: {group} {names}: error: {e}",
                    rep + 1,
                    pass.suffix()
                );
                eprintln!("xway-bench: {msg}");
                self.res.notes.push(msg);
            }
        }
        eprintln!(
            "xway-bench: rep {}/{}{} {group:<7} {names:<21} {:>6.2} s",
            rep + 1,
            o.reps,
            pass.suffix(),
            t.elapsed().as_secs_f64()
        );
    }

    fn measure_group(
        &self,
        group: &str,
        kinds: &[Kind],
        pass: Pass,
        o: &Opts,
    ) -> io::Result<Vec<Out>> {
        let servers = kinds
            .iter()
            .map(|&kind| Server::spawn(kind, self.child_cpu(group, pass)))
            .collect::<io::Result<Vec<Server>>>()?;
        let ts: Vec<Target> = kinds
            .iter()
            .zip(&servers)
            .map(|(&kind, s)| Target {
                kind,
                addr: s.addr.clone(),
                pid: s.pid(),
            })
            .collect();
        let probe = |ran, warm, total| self.copy_ceiling(ran, warm, total);
        let probe: Option<figures::CeilingProbe<'_>> = Some(&probe);
        self.rt.block_on(async {
            match group {
                "pp" => figures::pingpong(&ts, o).await,
                "pp-same" => figures::pingpong_pinned(&ts, o).await,
                "bulk" => figures::bulk(&ts, o, probe).await,
                "setup" => figures::setup(&ts, o).await,
                "conc" => figures::concurrent(&ts, o).await,
                "idle" => {
                    let mut outs = Vec::new();
                    for t in &ts {
                        outs.push(figures::idle(t, o).await?);
                    }
                    Ok(outs)
                }
                _ => unreachable!("unknown group {group}"),
            }
        })
    }

    /// The shared-memory copy ceiling (see `ceiling.rs`) for `total` bytes after `warm`, placed
    /// as the ring's client and server ran (`ran`). The probe's writer and reader are placed as
    /// the run pinned them or, unpinned, where they were right after the ring's timed transfer
    /// (the host's two vCPUs are often not alike, one way round up to 2x slower than the
    /// other); if that is unknown, both ways round, and the faster counts.
    fn copy_ceiling(&self, ran: Option<(usize, usize)>, warm: u64, total: u64) -> Option<Ceiling> {
        let (first, second) = (self.cpus[0], *self.cpus.get(1).unwrap_or(&self.cpus[0]));
        let placements = match (self.opts.pin, ran) {
            (Pin::Same, _) => vec![(first, first)],
            (Pin::Apart, _) => vec![(first, second)],
            (Pin::None, Some(ran)) => vec![ran],
            (Pin::None, None) if first == second => vec![(first, first)],
            (Pin::None, None) => vec![(first, second), (second, first)],
        };
        let mut best: Option<Ceiling> = None;
        for cpus in placements {
            match ceiling::measure(net::ring_size(), 64 << 10, warm, total, cpus) {
                Ok(c) if best.is_none_or(|b| c.gbps > b.gbps) => best = Some(c),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("xway-bench: copy ceiling: {e}");
                    return None;
                }
            }
        }
        best
    }

    fn run(&mut self) {
        for rep in 0..self.opts.reps {
            for group in self.opts.groups.clone() {
                // The idle check concerns the ring only, and once is enough.
                let kinds: Vec<Kind> = if group == "idle" {
                    if rep > 0 {
                        continue;
                    }
                    vec![Kind::Ring]
                } else {
                    (0..4).map(|i| KINDS[(i + rep) % 4]).collect()
                };
                let kinds: Vec<Kind> = kinds
                    .into_iter()
                    .filter(|k| self.opts.kinds.contains(k))
                    .collect();
                if self.opts.turns {
                    self.run_group(group, rep, &kinds, Pass::Main);
                } else {
                    for kind in kinds {
                        self.run_group(group, rep, &[kind], Pass::Main);
                    }
                }
            }
            if self.opts.tcp_pair {
                let pair = if rep % 2 == 0 {
                    [Kind::XwayTcp, Kind::Tcp]
                } else {
                    [Kind::Tcp, Kind::XwayTcp]
                };
                for group in self.opts.groups.clone() {
                    if group != "idle" {
                        self.run_group(group, rep, &pair, Pass::TcpPair);
                    }
                }
            }
        }
    }
}

/// Where the outputs go: `$CARGO_TARGET_DIR/xway-bench`, else `<workspace>/target/xway-bench`.
fn out_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
        .join("xway-bench")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == net::CHILD_FLAG) {
        net::child_main(&args[i + 1..]);
    }
    if !args.iter().any(|a| a == "--bench") && std::env::var_os("XWAY_BENCH_RUN").is_none() {
        // Built as a test (`cargo test --all-targets`): nothing is timed in tests.
        println!("xway transport benchmark: run it with `cargo bench --bench transport`");
        return;
    }
    let opts = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("xway-bench: {e}");
            std::process::exit(2);
        }
    };
    measure::raise_nofile_limit();
    let cpus = measure::allowed_cpus();
    if opts.pin != Pin::None {
        measure::pin_to(cpus[0]);
    }
    let load_before = measure::loadavg();
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = Runner {
        rt,
        opts,
        cpus,
        res: Results::default(),
    };
    runner.run();
    let elapsed = started.elapsed();

    let report = report::Report::new(&runner.opts, &runner.res, elapsed, load_before);
    let markdown = report.markdown();
    println!("{markdown}");
    let dir = out_dir();
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("results.md"), &markdown))
        .and_then(|()| std::fs::write(dir.join("results.json"), report.json()))
        .and_then(|()| std::fs::write(dir.join("plot.svg"), plot::svg(&report)));
    match written {
        Ok(()) => eprintln!(
            "xway-bench: wrote {}/{{results.md,results.json,plot.svg}}",
            dir.display()
        ),
        Err(e) => eprintln!("xway-bench: writing {}: {e}", dir.display()),
    }
}
