//! One async function per figure. Each measures one transport against an already running
//! server child and returns what it measured; the runner in `main.rs` stores it.
//!
//! Every function measures every transport the same way: the same stream type (`Conn`), the
//! same buffers, the same loop. Only the `connect` call differs.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    /// Bulk: the CPUs the client and the server child last ran on, right after the timed
    /// transfer (where the copy ceiling is then measured).
    pub(crate) placement: Option<(usize, usize)>,
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
    fn census(
        &mut self,
        prefix: &str,
        before: Option<Vec<(&'static str, u64)>>,
        after: Option<Vec<(&'static str, u64)>>,
        messages: u64,
    ) {
        let (Some(before), Some(after)) = (before, after) else {
            return;
        };
        for ((name, a), (_, b)) in before.iter().zip(&after) {
            self.val(
                format!("{prefix}.census.{name}"),
                b.saturating_sub(*a) as f64 / messages.max(1) as f64,
            );
        }
    }
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

/// Ping-pong round trips of `size` bytes on an echo connection: `warm` untimed, then `n`
/// timed one by one. Returns the samples in µs.
async fn timed_round_trips(
    c: &mut Conn,
    size: usize,
    warm: usize,
    n: usize,
) -> io::Result<Vec<f64>> {
    let msg = vec![0x5a_u8; size];
    let mut back = vec![0u8; size];
    round_trips(c, &msg, &mut back, warm).await?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&msg).await?;
        c.read_exact(&mut back).await?;
        samples.push(t.elapsed().as_nanos() as f64 / 1e3);
    }
    Ok(samples)
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

/// Ping-pong, 1 B, 64 B and 4 KiB on one connection: p50 and p99 after warm-up, and for
/// 64 B the context switches and CPU per round trip (both processes).
pub(crate) async fn pingpong(kind: Kind, addr: &str, child: u32, o: &Opts) -> io::Result<Out> {
    let mut out = Out::default();
    let mut c = connect(kind, addr, None).await?;
    out.expect_ring(kind, &c, "ping-pong");
    c.write_all(b"E").await?;
    for (id, size) in [("pp1", 1), ("pp64", 64), ("pp4k", 4096)] {
        let (usage, census) = (Usage::now(child), xway_census(&c));
        let samples = timed_round_trips(&mut c, size, o.pp_warm, o.pp_n).await?;
        let usage = usage.delta(&Usage::now(child));
        out.census(id, census, xway_census(&c), o.pp_n as u64);
        if let Some(cs) = usage.ctxsw_total() {
            out.val(format!("{id}.cs"), cs / o.pp_n as f64);
        }
        if let Some((me, other)) = usage.cpu_secs() {
            out.val(format!("{id}.cpu_us"), (me + other) * 1e6 / o.pp_n as f64);
        }
        latency(&mut out, id, samples);
    }
    Ok(out)
}

/// Ping-pong, 64 B, with both processes pinned to one CPU by the runner.
pub(crate) async fn pingpong_pinned(
    kind: Kind,
    addr: &str,
    child: u32,
    o: &Opts,
) -> io::Result<Out> {
    let mut out = Out::default();
    let mut c = connect(kind, addr, None).await?;
    out.expect_ring(kind, &c, "ping-pong (pinned)");
    c.write_all(b"E").await?;
    let (usage, census) = (Usage::now(child), xway_census(&c));
    let samples = timed_round_trips(&mut c, 64, o.pp_warm, o.pp_n).await?;
    let usage = usage.delta(&Usage::now(child));
    out.census("pp64same", census, xway_census(&c), o.pp_n as u64);
    if let Some(cs) = usage.ctxsw_total() {
        out.val("pp64same.cs", cs / o.pp_n as f64);
    }
    latency(&mut out, "pp64same", samples);
    Ok(out)
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

/// One-way bulk throughput with `chunk`-byte writes into a sink that reads with a buffer of
/// the same size and acknowledges the end with one byte: GB/s (10^9 B/s), CPU seconds per GB
/// (both processes, and each), context switches per write.
pub(crate) async fn bulk(
    kind: Kind,
    addr: &str,
    child: u32,
    id: &str,
    chunk: usize,
    o: &Opts,
) -> io::Result<Out> {
    let mut out = Out::default();
    let mut c = connect(kind, addr, None).await?;
    out.expect_ring(kind, &c, "bulk");
    c.write_all(b"S").await?;
    let data: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8).collect();
    sink_transfer(&mut c, &data, o.bulk_warm).await?;

    let (usage, census) = (Usage::now(child), xway_census(&c));
    let t = Instant::now();
    sink_transfer(&mut c, &data, o.bulk_total).await?;
    let secs = t.elapsed().as_secs_f64();
    let usage = usage.delta(&Usage::now(child));
    out.placement = Some((last_cpu(Who::Me), last_cpu(Who::Pid(child))))
        .and_then(|(me, other)| Some((me?, other?)));
    let writes = o.bulk_total.div_ceil(chunk as u64);
    out.census(id, census, xway_census(&c), writes);

    let gb = o.bulk_total as f64 / 1e9;
    out.val(format!("{id}.gbps"), gb / secs);
    if let Some((me, other)) = usage.cpu_secs() {
        out.val(format!("{id}.cpu"), (me + other) / gb);
        out.val(format!("{id}.cpu_client"), me / gb);
        out.val(format!("{id}.cpu_server"), other / gb);
    }
    if let Some(cs) = usage.ctxsw_total() {
        out.val(format!("{id}.cs"), cs / writes as f64);
    }
    c.write_all(&[0u8; 16]).await?; // total 0: the sink is done
    Ok(out)
}

/// Connection setup: connect (with `TCP_NODELAY` where applicable) + one byte there and back,
/// `warm` untimed then `n` timed, one connection at a time. Teardown is not timed.
pub(crate) async fn setup(kind: Kind, addr: &str, o: &Opts) -> io::Result<Out> {
    let mut out = Out::default();
    let mut samples = Vec::with_capacity(o.setup_n);
    let mut on_ring = 0;
    for i in 0..o.setup_warm + o.setup_n {
        let t = Instant::now();
        let mut c = connect(kind, addr, None).await?;
        c.write_all(b"A").await?;
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await?;
        let us = t.elapsed().as_nanos() as f64 / 1e3;
        if i >= o.setup_warm {
            samples.push(us);
            on_ring += usize::from(c.is_ring());
        }
        if i == 0 {
            out.expect_ring(kind, &c, "setup");
        }
    }
    samples.sort_by(f64::total_cmp);
    out.val("setup.p50", crate::measure::quantile(&samples, 0.50));
    out.val("setup.p99", crate::measure::quantile(&samples, 0.99));
    out.val("setup.ring", on_ring as f64 / o.setup_n as f64);
    Ok(out)
}

/// `o.conc_conns` connections (set up `CONNECT_BATCH` at a time, each with a first round trip,
/// and with a generous rendezvous deadline), each one task doing 64 B ping-pong as fast as it can; after `o.conc_warm`, the
/// aggregate round trips per second over `o.conc_dur`.
pub(crate) async fn concurrent(kind: Kind, addr: &str, child: u32, o: &Opts) -> io::Result<Out> {
    const CONNECT_BATCH: usize = 50;
    const RENDEZVOUS: Duration = Duration::from_secs(10);
    let mut out = Out::default();

    let t = Instant::now();
    let mut conns = Vec::with_capacity(o.conc_conns);
    let mut slowest = Duration::ZERO;
    while conns.len() < o.conc_conns {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..CONNECT_BATCH.min(o.conc_conns - conns.len()) {
            let addr = addr.to_owned();
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
    out.val("conc.connect_s", t.elapsed().as_secs_f64());
    out.val("conc.connect_max_ms", slowest.as_secs_f64() * 1e3);
    out.val(
        "conc.ring",
        conns.iter().filter(|c| c.is_ring()).count() as f64,
    );

    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in conns {
        let (count, stop) = (count.clone(), stop.clone());
        tasks.spawn(async move {
            let (msg, mut back) = ([0x5a_u8; 64], [0u8; 64]);
            while !stop.load(Ordering::Relaxed) {
                c.write_all(&msg).await?;
                c.read_exact(&mut back).await?;
                count.fetch_add(1, Ordering::Relaxed);
            }
            io::Result::Ok(())
        });
    }
    tokio::time::sleep(o.conc_warm).await;
    let (n0, t0, usage) = (
        count.load(Ordering::Relaxed),
        Instant::now(),
        Usage::now(child),
    );
    tokio::time::sleep(o.conc_dur).await;
    let (n1, secs) = (count.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
    let usage = usage.delta(&Usage::now(child));
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        r.map_err(io::Error::other)??;
    }
    out.val("conc.rate", (n1 - n0) as f64 / secs);
    if let Some(cs) = usage.ctxsw_total() {
        out.val("conc.cs", cs / (n1 - n0).max(1) as f64);
    }
    Ok(out)
}

/// An idle ring connection: after a few round trips, both processes' CPU time over
/// `o.idle` of doing nothing (should be ~0: nobody may poll an idle ring).
pub(crate) async fn idle(kind: Kind, addr: &str, child: u32, o: &Opts) -> io::Result<Out> {
    let mut out = Out::default();
    let mut c = connect(kind, addr, None).await?;
    out.expect_ring(kind, &c, "idle");
    c.write_all(b"E").await?;
    round_trips(&mut c, &[1; 64], &mut [0; 64], 100).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let usage = Usage::now(child);
    tokio::time::sleep(o.idle).await;
    let usage = usage.delta(&Usage::now(child));
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
