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
//! - Each repetition measures every transport for every figure, rotating the transport order
//!   from one repetition to the next. The table shows medians over repetitions; ratios are
//!   computed inside each repetition and then their median is taken (the host is noisy).
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

use figures::Out;
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
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => quick = true,
                "--reps" => reps = args.next(),
                "--pin" => pin = args.next(),
                "--only" => only = args.next(),
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
    /// Latency samples (µs) per figure id and transport, all repetitions pooled.
    pub(crate) samples: BTreeMap<(String, Kind), Vec<f64>>,
    pub(crate) notes: Vec<String>,
}

impl Results {
    fn store(&mut self, reps: usize, rep: usize, kind: Kind, out: Out) {
        for (id, v) in out.vals {
            let per_rep = self
                .values
                .entry(id)
                .or_insert_with(|| vec![[None; 4]; reps]);
            per_rep[rep][kind.index()] = Some(v);
        }
        for (id, s) in out.samples {
            self.samples.entry((id, kind)).or_default().extend(s);
        }
        self.notes.extend(
            out.notes
                .into_iter()
                .map(|n| format!("rep {}: {n}", rep + 1)),
        );
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
    fn child_cpu(&self, group: &str) -> Option<usize> {
        let second = *self.cpus.get(1).unwrap_or(&self.cpus[0]);
        match (group, self.opts.pin) {
            ("pp-same", _) | (_, Pin::Same) => Some(self.cpus[0]),
            (_, Pin::Apart) => Some(second),
            (_, Pin::None) => None,
        }
    }

    fn run_one(&mut self, group: &'static str, rep: usize, kind: Kind) -> io::Result<()> {
        let o = self.opts.clone();
        let saved = measure::get_affinity();
        if group == "pp-same" {
            measure::pin_to(self.cpus[0]);
        }
        let server = Server::spawn(kind, self.child_cpu(group))?;
        let (addr, pid) = (server.addr.as_str(), server.pid());
        let out = self.rt.block_on(async {
            match group {
                "pp" => figures::pingpong(kind, addr, pid, &o).await,
                "pp-same" => figures::pingpong_pinned(kind, addr, pid, &o).await,
                "bulk" => {
                    let mut a = figures::bulk(kind, addr, pid, "bulk64k", 64 << 10, &o).await?;
                    if kind == Kind::Ring {
                        self.copy_ceiling(&mut a);
                    }
                    let b = figures::bulk(kind, addr, pid, "bulk1m", 1 << 20, &o).await?;
                    a.vals.extend(b.vals);
                    a.notes.extend(b.notes);
                    Ok(a)
                }
                "setup" => figures::setup(kind, addr, &o).await,
                "conc" => figures::concurrent(kind, addr, pid, &o).await,
                "idle" => figures::idle(kind, addr, pid, &o).await,
                _ => unreachable!("unknown group {group}"),
            }
        });
        drop(server);
        let out = out?;
        if let Some(set) = saved {
            measure::set_affinity(&set);
        }
        self.res.store(self.opts.reps, rep, kind, out);
        Ok(())
    }

    /// The shared-memory copy ceiling (see `ceiling.rs`), right after the ring's 64 KiB figure,
    /// and the ring's 64 KiB figure as a share of it. The probe's writer and reader are placed
    /// as the client and the server ran (pinned, or, unpinned, where they were right after the
    /// timed transfer: the host's two vCPUs are often not alike, one way round up to 2x slower
    /// than the other); if that is unknown, both ways round, and the faster counts.
    fn copy_ceiling(&self, out: &mut Out) {
        let o = &self.opts;
        let (first, second) = (self.cpus[0], *self.cpus.get(1).unwrap_or(&self.cpus[0]));
        let placements = match (o.pin, out.placement) {
            (Pin::Same, _) => vec![(first, first)],
            (Pin::Apart, _) => vec![(first, second)],
            (Pin::None, Some(ran)) => vec![ran],
            (Pin::None, None) if first == second => vec![(first, first)],
            (Pin::None, None) => vec![(first, second), (second, first)],
        };
        let mut best: Option<ceiling::Ceiling> = None;
        for cpus in placements {
            match ceiling::measure(net::ring_size(), 64 << 10, o.bulk_warm, o.bulk_total, cpus) {
                Ok(c) if best.is_none_or(|b| c.gbps > b.gbps) => best = Some(c),
                Ok(_) => {}
                Err(e) => return out.notes.push(format!("copy ceiling: {e}")),
            }
        }
        let Some(c) = best else { return };
        let ring = out.vals.iter().find(|(id, _)| id == "bulk64k.gbps");
        let ring = ring.map(|&(_, v)| v);
        eprintln!(
            "xway-bench: copy ceiling {:.1} GB/s (writer on CPU {}, reader on CPU {}, {:.0}% stalled), ring / ceiling {:.2}",
            c.gbps,
            c.cpus.0,
            c.cpus.1,
            c.stalled * 100.0,
            ring.map_or(f64::NAN, |r| r / c.gbps)
        );
        if let Some(ring) = ring {
            out.val("bulk64k.per_ceiling", ring / c.gbps);
        }
        out.val("bulk64k.ceiling", c.gbps);
        out.val("bulk64k.ceiling_stalled", c.stalled);
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
                for kind in kinds {
                    let t = Instant::now();
                    if let Err(e) = self.run_one(group, rep, kind) {
                        let msg = format!("rep {}: {group} {}: error: {e}", rep + 1, kind.name());
                        eprintln!("xway-bench: {msg}");
                        self.res.notes.push(msg);
                    }
                    eprintln!(
                        "xway-bench: rep {}/{} {group:<7} {:<8} {:>6.2} s",
                        rep + 1,
                        self.opts.reps,
                        kind.name(),
                        t.elapsed().as_secs_f64()
                    );
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
