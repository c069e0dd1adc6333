//! One async function per figure group. Each measures the run's transports against their own
//! already running server children and returns what it measured, one [`Out`] per transport;
//! the runner in `main.rs` stores them.
//!
//! Every function measures every transport the same way: the same stream type (`Conn`), the
//! same buffers, the same loop. Only the `connect` call differs.
//!
//! Given several transports, they take turns: a figure's timed work is cut into blocks
//! (ping-pong: 100 per message size; bulk: 16 per write size; 1,000 connections: 10 windows;
//! setup: one connection), and each transport runs one block in turn, the order rotating from
//! block to block, so every transport is measured across the same stretch of time. The host's
//! speed moves by tens of percent from one second to the next (see benches/README.md); measured
//! one after the other, two transports that cost the same differ by as much, measured in turns
//! they differ by a few percent. The runner uses turns for the TCP comparison pass (and for the
//! main pass with `--turns`).

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ceiling::Ceiling;
use crate::measure::{last_cpu, Usage, Who};
use crate::net::{connect, Conn, Kind};
use crate::Opts;

/// What one figure function measured for one transport.
#[derive(Debug, Default)]
pub(crate) struct Out {
    /// `(figure or detail id, value)`.
    pub(crate) vals: Vec<(String, f64)>,
    /// `(figure id, samples)`, latency samples in µs for the CDF plot.
    pub(crate) samples: Vec<(String, Vec<f64>)>,
    /// Anything the reader should know (a ring kind that did not get the ring, say).
    pub(crate) notes: Vec<String>,
}

impl Out {
    pub(crate) fn val(&mut self, id: impl Into<String>, v: f64) {
        self.vals.push((id.into(), v));
    }

    fn expect_ring(&mut self, kind: Kind, conn: &Conn, what: &str) {
        if (kind == Kind::Ring) != conn.is_ring() {
            self.notes.push(format!(
                "{what}: {} connection is {}",
                kind.name(),
                conn.describe()
            ));
        }
    }

    /// Records xway's own counters per message, if the library exposes any (see
    /// [`xway_census`]).
    fn census(&mut self, prefix: &str, tally: &Tally, messages: u64) {
        for (name, n) in tally.census.iter().flatten() {
            self.val(
                format!("{prefix}.census.{name}"),
                *n as f64 / messages.max(1) as f64,
            );
        }
    }

    /// Context switches and CPU time of both processes over the timed blocks, per `unit`
    /// (`{prefix}.cs`, and with `cpu`, `{prefix}.cpu_us`).
    fn usage_per(&mut self, prefix: &str, tally: &Tally, units: u64, cpu: bool) {
        let Some(usage) = tally.usage else { return };
        if let Some(cs) = usage.ctxsw_total() {
            self.val(format!("{prefix}.cs"), cs / units.max(1) as f64);
        }
        if let (true, Some((me, other))) = (cpu, usage.cpu_secs()) {
            self.val(
                format!("{prefix}.cpu_us"),
                (me + other) * 1e6 / units.max(1) as f64,
            );
        }
    }
}

/// A server child to measure against.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) kind: Kind,
    pub(crate) addr: String,
    pub(crate) pid: u32,
}

/// The order in which the transports take their turn in block `block`: rotated by one from
/// block to block, so that no transport always follows the same one.
fn turns(n: usize, block: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + block) % n)
}

/// `n` when several transports take turns; one transport alone runs one block (or window, or
/// connection) of everything, with no pauses in between.
fn in_turns(ts: &[Target], n: usize) -> usize {
    if ts.len() == 1 {
        1
    } else {
        n
    }
}

/// Block `block`'s share of `total` split into `blocks` nearly equal parts.
fn share(total: usize, blocks: usize, block: usize) -> usize {
    total / blocks + usize::from(block < total % blocks)
}

/// Names the transport in an error.
fn failed(kind: Kind) -> impl Fn(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", kind.name()))
}

/// Xway's counters as `(name, count)` pairs.
type Census = Vec<(&'static str, u64)>;

/// The state of one transport at the start of one timed block.
struct Mark {
    usage: Usage,
    census: Option<Census>,
    started: Instant,
}

impl Mark {
    /// Takes the counters first and the time last, so reading them is not timed.
    fn now(conn: Option<&Conn>, pid: u32) -> Mark {
        Mark {
            usage: Usage::now(pid),
            census: conn.and_then(xway_census),
            started: Instant::now(),
        }
    }
}

/// One transport's timed blocks, added up.
#[derive(Debug, Default)]
struct Tally {
    secs: f64,
    usage: Option<Usage>,
    census: Option<Census>,
}

impl Tally {
    /// Adds the block that started at `mark` and ends now (the time is read first).
    fn add(&mut self, mark: Mark, conn: Option<&Conn>, pid: u32) {
        self.secs += mark.started.elapsed().as_secs_f64();
        let usage = mark.usage.delta(&Usage::now(pid));
        self.usage = Some(self.usage.map_or(usage, |u| u.plus(&usage)));
        if let (Some(before), Some(after)) = (mark.census, conn.and_then(xway_census)) {
            let sum = self
                .census
                .get_or_insert_with(|| before.iter().map(|&(name, _)| (name, 0)).collect());
            for ((_, total), ((_, a), (_, b))) in sum.iter_mut().zip(before.iter().zip(&after)) {
                *total += b.saturating_sub(*a);
            }
        }
    }
}

/// Connects once to every target and sends the server its mode byte.
async fn open(ts: &[Target], what: &str, mode: &[u8]) -> io::Result<(Vec<Out>, Vec<Conn>)> {
    let (mut outs, mut conns) = (Vec::new(), Vec::new());
    for t in ts {
        let mut out = Out::default();
        let mut c = connect(t.kind, &t.addr, None)
            .await
            .map_err(failed(t.kind))?;
        out.expect_ring(t.kind, &c, what);
        c.write_all(mode).await.map_err(failed(t.kind))?;
        outs.push(out);
        conns.push(c);
    }
    Ok((outs, conns))
}

/// Census: xway's per-connection counters (this end: the measuring process), as
/// `(name, cumulative count)` pairs; the figure functions snapshot them around each timed phase
/// and divide by messages.
fn xway_census(conn: &Conn) -> Option<Vec<(&'static str, u64)>> {
    let stats = conn.xway()?.ring_stats()?;
    Some(vec![
        ("doorbells", stats.doorbells),
        ("sleeps", stats.sleeps),
        ("spins_won", stats.spins_won),
        ("spins_lost", stats.spins_lost),
    ])
}

async fn round_trips(c: &mut Conn, msg: &[u8], back: &mut [u8], n: usize) -> io::Result<()> {
    for _ in 0..n {
        c.write_all(msg).await?;
        c.read_exact(back).await?;
    }
    Ok(())
}

/// `n` ping-pong round trips, each timed on its own; the samples (µs) go to `samples`.
async fn timed_round_trips(
    c: &mut Conn,
    msg: &[u8],
    back: &mut [u8],
    n: usize,
    samples: &mut Vec<f64>,
) -> io::Result<()> {
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(msg).await?;
        c.read_exact(back).await?;
        samples.push(t.elapsed().as_nanos() as f64 / 1e3);
    }
    Ok(())
}

fn latency(out: &mut Out, id: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    out.val(
        format!("{id}.p50"),
        crate::measure::quantile(&samples, 0.50),
    );
    out.val(
        format!("{id}.p99"),
        crate::measure::quantile(&samples, 0.99),
    );
    out.samples.push((id.to_owned(), samples));
}

/// Blocks of timed round trips per message size when transports take turns, short ones (100
/// round trips of 60 µs over TCP here): the host slows down for tens of milliseconds at a time,
/// and blocks much longer than that put one transport in a slow spell and the other out of it.
/// One transport alone runs one block: the pause between two blocks (reading the processes'
/// counters) outlasts the ring's spin, and its next round trip would then be a wake-up.
const PINGPONG_BLOCKS_IN_TURNS: usize = 100;

/// Ping-pong on one echo connection per transport, for each `(id, size)`: `o.pp_warm` untimed
/// round trips, then `o.pp_n` timed one by one (in [`PINGPONG_BLOCKS_IN_TURNS`] turns if there
/// are several transports); p50 and p99, context switches and CPU per round trip (both
/// processes).
async fn pingpong_sizes(
    ts: &[Target],
    o: &Opts,
    what: &str,
    sizes: &[(&str, usize)],
) -> io::Result<Vec<Out>> {
    let (mut outs, mut conns) = open(ts, what, b"E").await?;
    for &(id, size) in sizes {
        let msg = vec![0x5a_u8; size];
        let mut back = vec![0u8; size];
        for (t, c) in ts.iter().zip(&mut conns) {
            round_trips(c, &msg, &mut back, o.pp_warm)
                .await
                .map_err(failed(t.kind))?;
        }
        let mut tallies: Vec<Tally> = ts.iter().map(|_| Tally::default()).collect();
        let mut samples = vec![Vec::with_capacity(o.pp_n); ts.len()];
        let blocks = in_turns(ts, PINGPONG_BLOCKS_IN_TURNS);
        for block in 0..blocks {
            let n = share(o.pp_n, blocks, block);
            for i in turns(ts.len(), block) {
                let (t, c) = (&ts[i], &mut conns[i]);
                let mark = Mark::now(Some(c), t.pid);
                timed_round_trips(c, &msg, &mut back, n, &mut samples[i])
                    .await
                    .map_err(failed(t.kind))?;
                tallies[i].add(mark, Some(c), t.pid);
            }
        }
        for ((out, tally), samples) in outs.iter_mut().zip(&tallies).zip(samples) {
            out.census(id, tally, o.pp_n as u64);
            out.usage_per(id, tally, o.pp_n as u64, true);
            latency(out, id, samples);
        }
    }
    Ok(outs)
}

/// Ping-pong, 1 B, 64 B and 4 KiB (see [`pingpong_sizes`]).
pub(crate) async fn pingpong(ts: &[Target], o: &Opts) -> io::Result<Vec<Out>> {
    let sizes = [("pp1", 1), ("pp64", 64), ("pp4k", 4096)];
    pingpong_sizes(ts, o, "ping-pong", &sizes).await
}

/// Ping-pong, 64 B, with every process pinned to one CPU by the runner.
pub(crate) async fn pingpong_pinned(ts: &[Target], o: &Opts) -> io::Result<Vec<Out>> {
    pingpong_sizes(ts, o, "ping-pong (pinned)", &[("pp64same", 64)]).await
}

async fn sink_transfer(c: &mut Conn, chunk: &[u8], total: u64) -> io::Result<()> {
    let mut hdr = [0u8; 16];
    hdr[..8].copy_from_slice(&total.to_le_bytes());
    hdr[8..].copy_from_slice(&(chunk.len() as u64).to_le_bytes());
    c.write_all(&hdr).await?;
    let mut left = total;
    while left > 0 {
        let n = chunk.len().min(left as usize);
        c.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    let mut ack = [0u8; 1];
    c.read_exact(&mut ack).await.map(drop)
}

/// Blocks of a timed bulk transfer when transports take turns. Each block ends with an
/// acknowledgement (a round trip, and for the ring the wake-up of a parked server: under 2% of
/// a block at 30 GB/s); one transport alone sends its bytes in one block.
const BULK_BLOCKS_IN_TURNS: usize = 16;

/// Connections per transport whose turns the bulk blocks go round when transports take turns.
/// A TCP connection's speed depends on its own state (buffer sizes the kernel tuned for it,
/// congestion control), which differs from one connection to the next: several per transport
/// keep one connection's luck out of the comparison.
const BULK_CONNS_IN_TURNS: usize = 4;

/// The shared-memory copy ceiling, run by the bulk figure right after each of the ring's 64 KiB
/// blocks: `(where the client and the server ran, if known; warm-up bytes; timed bytes)`.
pub(crate) type CeilingProbe<'a> = &'a dyn Fn(Option<(usize, usize)>, u64, u64) -> Option<Ceiling>;

/// The copy ceiling's blocks, added up.
#[derive(Debug, Default)]
struct CeilingTally {
    bytes: u64,
    secs: f64,
    stalled_secs: f64,
    last: Option<Ceiling>,
}

impl CeilingTally {
    fn add(&mut self, c: Ceiling, bytes: u64) {
        let secs = bytes as f64 / 1e9 / c.gbps;
        self.bytes += bytes;
        self.secs += secs;
        self.stalled_secs += c.stalled * secs;
        self.last = Some(c);
    }

    /// The ceiling over all blocks, and the ring's 64 KiB figure as a share of it.
    fn report(&self, out: &mut Out, ring_gbps: f64) {
        let Some(last) = self.last else { return };
        let gbps = self.bytes as f64 / 1e9 / self.secs;
        let stalled = self.stalled_secs / self.secs;
        eprintln!(
            "xway-bench: copy ceiling {gbps:.1} GB/s (last writer on CPU {}, reader on CPU {}, {:.0}% stalled), ring / ceiling {:.2}",
            last.cpus.0,
            last.cpus.1,
            stalled * 100.0,
            ring_gbps / gbps
        );
        out.val("bulk64k.per_ceiling", ring_gbps / gbps);
        out.val("bulk64k.ceiling", gbps);
        out.val("bulk64k.ceiling_stalled", stalled);
    }
}

/// One-way bulk throughput with 64 KiB and 1 MiB writes into a sink that reads with a buffer of
/// the same size and acknowledges each transfer with one byte, on one connection per transport
/// (on [`BULK_CONNS_IN_TURNS`] if there are several transports): `o.bulk_warm` untimed on each,
/// then `o.bulk_total` (in [`BULK_BLOCKS_IN_TURNS`] turns if there are several transports).
/// GB/s (10^9 B/s), CPU seconds per GB (both processes, and each), context switches per write;
/// with `probe`, the copy ceiling after each of the ring's 64 KiB blocks.
pub(crate) async fn bulk(
    ts: &[Target],
    o: &Opts,
    probe: Option<CeilingProbe<'_>>,
) -> io::Result<Vec<Out>> {
    let lane_count = in_turns(ts, BULK_CONNS_IN_TURNS);
    // `lanes[lane][target]`: block `b` of every transport goes over lane `b % lane_count`.
    let (mut outs, first) = open(ts, "bulk", b"S").await?;
    let mut lanes = vec![first];
    while lanes.len() < lane_count {
        let (more_outs, conns) = open(ts, "bulk", b"S").await?;
        for (out, more) in outs.iter_mut().zip(more_outs) {
            out.notes.extend(more.notes);
        }
        lanes.push(conns);
    }
    for (id, chunk) in [("bulk64k", 64 << 10), ("bulk1m", 1 << 20)] {
        let data: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8).collect();
        for conns in &mut lanes {
            for (t, c) in ts.iter().zip(conns) {
                sink_transfer(c, &data, o.bulk_warm)
                    .await
                    .map_err(failed(t.kind))?;
            }
        }
        let mut tallies: Vec<Tally> = ts.iter().map(|_| Tally::default()).collect();
        let mut ceiling = CeilingTally::default();
        let blocks = in_turns(ts, BULK_BLOCKS_IN_TURNS) as u64;
        let block_bytes = o.bulk_total / blocks;
        for block in 0..blocks as usize {
            for i in turns(ts.len(), block) {
                let (t, c) = (&ts[i], &mut lanes[block % lane_count][i]);
                let mark = Mark::now(Some(c), t.pid);
                sink_transfer(c, &data, block_bytes)
                    .await
                    .map_err(failed(t.kind))?;
                tallies[i].add(mark, Some(c), t.pid);
                if let (Some(probe), Kind::Ring, "bulk64k") = (probe, t.kind, id) {
                    let ran = last_cpu(Who::Me).zip(last_cpu(Who::Pid(t.pid)));
                    if let Some(c) = probe(ran, o.bulk_warm / blocks, block_bytes) {
                        ceiling.add(c, block_bytes);
                    }
                }
            }
        }
        let total = block_bytes * blocks;
        let writes = total.div_ceil(chunk as u64);
        let gb = total as f64 / 1e9;
        for ((t, out), tally) in ts.iter().zip(&mut outs).zip(&tallies) {
            out.census(id, tally, writes);
            out.val(format!("{id}.gbps"), gb / tally.secs);
            if let Some((me, other)) = tally.usage.and_then(|u| u.cpu_secs()) {
                out.val(format!("{id}.cpu"), (me + other) / gb);
                out.val(format!("{id}.cpu_client"), me / gb);
                out.val(format!("{id}.cpu_server"), other / gb);
            }
            out.usage_per(id, tally, writes, false);
            if t.kind == Kind::Ring && id == "bulk64k" {
                ceiling.report(out, gb / tally.secs);
            }
        }
    }
    for conns in &mut lanes {
        for (t, c) in ts.iter().zip(conns) {
            // Total 0: the sink is done.
            c.write_all(&[0u8; 16]).await.map_err(failed(t.kind))?;
        }
    }
    Ok(outs)
}

/// Connection setup: connect (with `TCP_NODELAY` where applicable) + one byte there and back,
/// `o.setup_warm` untimed then `o.setup_n` timed per transport, one connection at a time, the
/// transports taking turns connection by connection. Teardown is not timed.
pub(crate) async fn setup(ts: &[Target], o: &Opts) -> io::Result<Vec<Out>> {
    let mut outs: Vec<Out> = ts.iter().map(|_| Out::default()).collect();
    let mut samples = vec![Vec::with_capacity(o.setup_n); ts.len()];
    let mut on_ring = vec![0; ts.len()];
    for round in 0..o.setup_warm + o.setup_n {
        for i in turns(ts.len(), round) {
            let t = &ts[i];
            let started = Instant::now();
            let c = async {
                let mut c = connect(t.kind, &t.addr, None).await?;
                c.write_all(b"A").await?;
                c.read_exact(&mut [0u8; 1]).await?;
                io::Result::Ok(c)
            };
            let c = c.await.map_err(failed(t.kind))?;
            let us = started.elapsed().as_nanos() as f64 / 1e3;
            if round >= o.setup_warm {
                samples[i].push(us);
                on_ring[i] += usize::from(c.is_ring());
            }
            if round == 0 {
                outs[i].expect_ring(t.kind, &c, "setup");
            }
        }
    }
    for ((out, mut samples), on_ring) in outs.iter_mut().zip(samples).zip(on_ring) {
        samples.sort_by(f64::total_cmp);
        out.val("setup.p50", crate::measure::quantile(&samples, 0.50));
        out.val("setup.p99", crate::measure::quantile(&samples, 0.99));
        out.val("setup.ring", on_ring as f64 / o.setup_n as f64);
    }
    Ok(outs)
}

/// Timed windows per transport in the 1,000-connection figure when transports take turns (one
/// transport alone has one).
const CONC_WINDOWS_IN_TURNS: usize = 10;
/// Untimed time at the start of each window after the first: the connections of the previous
/// window finish their last round trip, and the new ones get going.
const CONC_SETTLE: Duration = Duration::from_millis(50);
/// "No transport's turn" and "stop", for the 1,000-connection tasks.
const NOBODY: usize = usize::MAX;
const STOP: usize = usize::MAX - 1;

/// Opens `o.conc_conns` connections to one target, `CONNECT_BATCH` at a time, each with a
/// first round trip, and with a generous rendezvous deadline.
async fn open_many(t: &Target, o: &Opts, out: &mut Out) -> io::Result<Vec<Conn>> {
    const CONNECT_BATCH: usize = 50;
    const RENDEZVOUS: Duration = Duration::from_secs(10);
    let started = Instant::now();
    let mut conns = Vec::with_capacity(o.conc_conns);
    let mut slowest = Duration::ZERO;
    while conns.len() < o.conc_conns {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..CONNECT_BATCH.min(o.conc_conns - conns.len()) {
            let (kind, addr) = (t.kind, t.addr.clone());
            batch.spawn(async move {
                let t = Instant::now();
                let mut c = connect(kind, &addr, Some(RENDEZVOUS)).await?;
                // One byte there and back: the server has accepted, so a burst of connects
                // cannot outrun its accept loop and overflow the listen backlog.
                c.write_all(b"E.").await?;
                c.read_exact(&mut [0u8; 1]).await?;
                io::Result::Ok((c, t.elapsed()))
            });
        }
        while let Some(r) = batch.join_next().await {
            let (c, took) = r.map_err(io::Error::other)??;
            slowest = slowest.max(took);
            conns.push(c);
        }
    }
    out.val("conc.connect_s", started.elapsed().as_secs_f64());
    out.val("conc.connect_max_ms", slowest.as_secs_f64() * 1e3);
    out.val(
        "conc.ring",
        conns.iter().filter(|c| c.is_ring()).count() as f64,
    );
    Ok(conns)
}

/// `o.conc_conns` connections per transport, each one task doing 64 B ping-pong as fast as it
/// can while its transport has the turn: the transports take [`CONC_WINDOWS_IN_TURNS`] turns
/// each (one transport alone, one), the first after `o.conc_warm`, the others after
/// [`CONC_SETTLE`], and their aggregate round trips per second over `o.conc_dur` in all are
/// counted.
pub(crate) async fn concurrent(ts: &[Target], o: &Opts) -> io::Result<Vec<Out>> {
    let mut outs: Vec<Out> = ts.iter().map(|_| Out::default()).collect();
    let mut all = Vec::new();
    for (t, out) in ts.iter().zip(&mut outs) {
        all.push(open_many(t, o, out).await.map_err(failed(t.kind))?);
    }

    let turn = Arc::new(AtomicUsize::new(NOBODY));
    let (tell, told) = tokio::sync::watch::channel(NOBODY);
    let counts: Arc<Vec<AtomicU64>> = Arc::new(ts.iter().map(|_| AtomicU64::new(0)).collect());
    let mut tasks = tokio::task::JoinSet::new();
    for (me, conns) in all.into_iter().enumerate() {
        for mut c in conns {
            let (turn, mut told, counts) = (turn.clone(), told.clone(), counts.clone());
            tasks.spawn(async move {
                let (msg, mut back) = ([0x5a_u8; 64], [0u8; 64]);
                loop {
                    // The atomic is the fast check; the channel is where a task waits.
                    match turn.load(Ordering::Relaxed) {
                        STOP => return io::Result::Ok(()),
                        now if now != me => {
                            let now = *told.borrow_and_update();
                            if now == STOP {
                                return Ok(());
                            }
                            if now != me && told.changed().await.is_err() {
                                return Ok(());
                            }
                            continue;
                        }
                        _ => {}
                    }
                    c.write_all(&msg).await?;
                    c.read_exact(&mut back).await?;
                    counts[me].fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
    let give_turn = |to: usize| {
        turn.store(to, Ordering::Relaxed);
        tell.send_replace(to);
    };

    let mut tallies: Vec<Tally> = ts.iter().map(|_| Tally::default()).collect();
    let mut trips = vec![0u64; ts.len()];
    let windows = in_turns(ts, CONC_WINDOWS_IN_TURNS);
    for window in 0..windows {
        for i in turns(ts.len(), window) {
            give_turn(i);
            tokio::time::sleep(if window == 0 {
                o.conc_warm
            } else {
                CONC_SETTLE
            })
            .await;
            let (n0, mark) = (
                counts[i].load(Ordering::Relaxed),
                Mark::now(None, ts[i].pid),
            );
            tokio::time::sleep(o.conc_dur / windows as u32).await;
            let n1 = counts[i].load(Ordering::Relaxed);
            tallies[i].add(mark, None, ts[i].pid);
            trips[i] += n1 - n0;
        }
    }
    give_turn(STOP);
    while let Some(r) = tasks.join_next().await {
        r.map_err(io::Error::other)??;
    }
    for ((out, tally), trips) in outs.iter_mut().zip(&tallies).zip(trips) {
        out.val("conc.rate", trips as f64 / tally.secs);
        out.usage_per("conc", tally, trips, false);
    }
    Ok(outs)
}

/// An idle ring connection: after a few round trips, both processes' CPU time over
/// `o.idle` of doing nothing (should be ~0: nobody may poll an idle ring).
pub(crate) async fn idle(t: &Target, o: &Opts) -> io::Result<Out> {
    let (mut outs, mut conns) = open(std::slice::from_ref(t), "idle", b"E").await?;
    let (mut out, mut c) = (outs.remove(0), conns.remove(0));
    round_trips(&mut c, &[1; 64], &mut [0; 64], 100).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let usage = Usage::now(t.pid);
    tokio::time::sleep(o.idle).await;
    let usage = usage.delta(&Usage::now(t.pid));
    if let Some((me, other)) = usage.cpu_secs() {
        out.val("idle.cpu_ms", (me + other) * 1e3);
        out.val("idle.cpu_client_ms", me * 1e3);
        out.val("idle.cpu_server_ms", other * 1e3);
    }
    if let Some(cs) = usage.ctxsw_total() {
        out.val("idle.cs", cs);
    }
    // Still working afterwards.
    round_trips(&mut c, &[1; 64], &mut [0; 64], 1).await?;
    Ok(out)
}
