//! The benchmark between the two guests: xway as configured (the ring once the Xen provider is
//! in) against xway forced to TCP (`Mode::TcpOnly`), same guests, same boot, one after the other.
//!
//! Per mode and round ([`ROUNDS`], modes interleaved; figures are medians), two connections to
//! `bench-server` (and at the very end one `end <n>\n` connection, so that the server knows how
//! many to expect even when something failed):
//!
//! * `pingpong\n`, then 64 B messages echoed one at a time: `rtt-iters` round trips after
//!   [`WARMUP`] unmeasured ones; p50 and p99.
//! * `bulk <n>\n`, then `n` bytes in 64 KiB writes; the server counts them and answers
//!   `ok <n> <fnv>\n`: one-way throughput, from the first write to the answer.
//!
//! Lines: `XWAY-BENCH <role> bench:<mode>:<figure> <value> <unit> ...` with `mode` one of `xway`
//! (default configuration), `xway-256k` (`xen_ring_size` 256 KiB, the largest) and `tcp`;
//! `run.sh` turns them into a table. `XWAY-TEST` checks: every byte came back exactly, every
//! forced-TCP stream is TCP, and (`--expect-ring`) every xway stream is a ring.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::{
    io_err, net, pattern, retry_connect, usage, Args, Fnv, Report, XwayListener, OP_DEADLINE,
};

/// Unmeasured round trips before the measured ones.
const WARMUP: usize = 20;
/// Size of each write of the bulk run.
const BULK_WRITE: usize = 64 * 1024;

/// Serves benchmark connections (concurrently) until the client's `end <n>` connection, then
/// checks that it served the `n` connections the client opened.
pub(crate) async fn server(rep: &mut Report, a: &Args) {
    let listener = match XwayListener::bind(a.listen).await {
        Ok(l) => l,
        Err(e) => {
            return rep.check(
                "bench-server:listen",
                false,
                format_args!("XwayListener::bind({}): {e}", a.listen),
            )
        }
    };
    rep.info(format_args!("bench-server listening on {}", a.listen));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<Served, String>>();
    let (mut accepted, mut finished) = (0usize, 0usize);
    let mut done = Vec::new();
    let mut end: Option<usize> = None;
    // Until the end marker, and every connection accepted before it, are through.
    while end.is_none() || finished < accepted {
        tokio::select! {
            r = listener.accept(), if end.is_none() => match r {
                Ok((s, peer)) => {
                    accepted += 1;
                    rep.info(format_args!("bench-server: #{accepted} from {peer}: transport {}", s.transport()));
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(serve(s).await.map_err(|e| format!("from {peer}: {e}")));
                    });
                }
                Err(e) => return rep.check("bench-server:accept", false, e),
            },
            Some(r) = rx.recv() => {
                finished += 1;
                match r {
                    Ok(Served::Done(what)) => done.push(what),
                    Ok(Served::End(n)) => end = Some(n),
                    Err(e) => rep.check("bench-server:serve", false, e),
                }
            }
        }
    }
    let want = end.unwrap_or(0);
    rep.check(
        "bench-server:served",
        done.len() == want,
        format_args!(
            "{}/{want} connections the client opened: {}",
            done.len(),
            done.join(", ")
        ),
    );
}

/// What one benchmark connection was.
enum Served {
    Done(String),
    /// The client's last connection: it opened this many benchmark connections.
    End(usize),
}

async fn read_line<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 64 {
        if timeout(OP_DEADLINE, s.read(&mut b))
            .await
            .map_err(|e| io_err("read", e))??
            == 0
        {
            return Err(io_err("read", "EOF in the header line"));
        }
        if b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(b[0]);
    }
    Err(io_err("header", "no newline in 64 bytes"))
}

async fn serve(mut s: net::XwayStream) -> io::Result<Served> {
    let head = read_line(&mut s).await?;
    if let Some(n) = head.strip_prefix("end ").and_then(|n| n.parse().ok()) {
        return Ok(Served::End(n));
    }
    let mut buf = vec![0u8; BULK_WRITE];
    if head == "pingpong" {
        let mut n = 0u64;
        loop {
            let got = timeout(OP_DEADLINE, s.read(&mut buf))
                .await
                .map_err(|e| io_err("read", e))??;
            if got == 0 {
                break;
            }
            timeout(OP_DEADLINE, s.write_all(&buf[..got]))
                .await
                .map_err(|e| io_err("write", e))??;
            n += got as u64;
        }
        s.shutdown().await?;
        return Ok(Served::Done(format!("pingpong {n} B echoed")));
    }
    let want: u64 = head
        .strip_prefix("bulk ")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io_err("header", format_args!("{head:?}")))?;
    let (mut got, mut hash) = (0u64, Fnv::new());
    while got < want {
        let max = buf.len().min((want - got) as usize);
        let n = timeout(OP_DEADLINE, s.read(&mut buf[..max]))
            .await
            .map_err(|e| io_err("read", e))??;
        if n == 0 {
            return Err(io_err("bulk", format_args!("EOF after {got} of {want} B")));
        }
        hash.update(&buf[..n]);
        got += n as u64;
    }
    s.write_all(format!("ok {got} {:016x}\n", hash.0).as_bytes())
        .await?;
    s.shutdown().await?;
    let mut rest = Vec::new();
    timeout(OP_DEADLINE, s.read_to_end(&mut rest))
        .await
        .map_err(|e| io_err("read", e))??;
    Ok(Served::Done(format!("bulk {got} B")))
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// The configurations compared, in the order each round runs them.
struct Mode {
    name: &'static str,
    tcp_only: bool,
    xen_ring: Option<usize>,
}

const MODES: [Mode; 3] = [
    Mode {
        name: "xway",
        tcp_only: false,
        xen_ring: None,
    },
    Mode {
        name: "xway-256k",
        tcp_only: false,
        xen_ring: Some(256 << 10),
    },
    Mode {
        name: "tcp",
        tcp_only: true,
        xen_ring: None,
    },
];

/// Rounds of all modes, interleaved so that a change of host load hits every mode alike; each
/// figure is the median over the rounds.
const ROUNDS: usize = 3;

/// One mode's results over the rounds.
#[derive(Default)]
struct Tally {
    transport: String,
    on_ring: Vec<bool>,
    setup_ms: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    bulk_mbs: Vec<f64>,
    ping_pong_errors: Vec<String>,
    bulk_errors: Vec<String>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

fn list(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
    parts.join(", ")
}

/// [`ROUNDS`] rounds of every mode, then one check and one median per figure and mode.
pub(crate) async fn client(rep: &mut Report, a: &Args) {
    let peer = a.peer.unwrap_or_else(|| usage());
    let mut opened = 0;
    let mut tallies: Vec<Tally> = MODES.iter().map(|_| Tally::default()).collect();
    for _ in 0..ROUNDS {
        for (m, t) in MODES.iter().zip(tallies.iter_mut()) {
            opened += round(rep, a, peer, m, t).await;
        }
    }
    // Tell the server we are done (whatever failed above), so that it does not wait for more.
    let r = async {
        let mut s = timeout(OP_DEADLINE, net::connect(peer, true))
            .await
            .map_err(|e| io_err("connect", e))??;
        s.write_all(format!("end {opened}\n").as_bytes()).await?;
        s.shutdown().await
    }
    .await;
    if let Err(e) = r {
        rep.info(format_args!("bench: telling the server we are done: {e}"));
    }
    for (m, t) in MODES.iter().zip(&tallies) {
        summarize(rep, a, m, t);
    }
}

fn summarize(rep: &mut Report, a: &Args, m: &Mode, t: &Tally) {
    let p = format!("bench:{}", m.name);
    let transport = &t.transport;
    let rings = t.on_ring.iter().filter(|&&r| r).count();
    let streams = format!("{rings} of {} streams on a ring", t.on_ring.len());
    if m.tcp_only {
        rep.check(
            &format!("{p}:tcp-used"),
            rings == 0 && !t.on_ring.is_empty(),
            format_args!("{streams}; transport: {transport}"),
        );
    } else if a.expect_ring {
        rep.check(
            &format!("{p}:ring-used"),
            rings == t.on_ring.len() && rings > 0,
            format_args!("{streams}; transport: {transport}"),
        );
    }
    let ok = t.ping_pong_errors.is_empty() && t.p50_us.len() == ROUNDS;
    rep.check(
        &format!("{p}:ping-pong"),
        ok,
        format_args!(
            "{} rounds of {} x 64 B round trips echoed exactly{}; transport: {transport}",
            t.p50_us.len(),
            a.rtt_iters,
            if ok {
                String::new()
            } else {
                format!("; errors: {}", t.ping_pong_errors.join("; "))
            }
        ),
    );
    let ok = t.bulk_errors.is_empty() && t.bulk_mbs.len() == ROUNDS;
    rep.check(
        &format!("{p}:bulk"),
        ok,
        format_args!(
            "{} rounds of {} B in 64 KiB writes, count and hash confirmed by the server{}; transport: {transport}",
            t.bulk_mbs.len(),
            a.bytes,
            if ok { String::new() } else { format!("; errors: {}", t.bulk_errors.join("; ")) }
        ),
    );
    let figures: [(&str, &[f64], &str); 4] = [
        ("connect", &t.setup_ms, "ms"),
        ("rtt-64B-p50", &t.p50_us, "us"),
        ("rtt-64B-p99", &t.p99_us, "us"),
        ("bulk-64KiB", &t.bulk_mbs, "MB/s"),
    ];
    for (name, v, unit) in figures {
        if !v.is_empty() {
            rep.bench(
                &format!("{p}:{name}"),
                median(v),
                unit,
                format_args!("median of [{}]; transport: {transport}", list(v)),
            );
        }
    }
}

async fn connect(
    rep: &mut Report,
    peer: SocketAddr,
    m: &Mode,
) -> Option<(net::XwayStream, Duration)> {
    let t0 = Instant::now();
    let s = retry_connect(rep, &format!("bench {}", m.name), peer, || {
        net::connect_sized(peer, m.tcp_only, m.xen_ring)
    })
    .await?;
    Some((s, t0.elapsed()))
}

/// One round of one mode: a ping-pong connection and a bulk one. Returns how many connections
/// it opened.
async fn round(rep: &mut Report, a: &Args, peer: SocketAddr, m: &Mode, t: &mut Tally) -> usize {
    // Ping-pong.
    let Some((mut s, setup)) = connect(rep, peer, m).await else {
        t.ping_pong_errors.push("connect failed".into());
        return 0;
    };
    t.transport = s.transport().to_string();
    t.on_ring.push(s.transport().is_ring());
    t.setup_ms.push(setup.as_secs_f64() * 1e3);
    let r: io::Result<Vec<Duration>> = async {
        s.write_all(b"pingpong\n").await?;
        let mut msg = [0u8; 64];
        let mut back = [0u8; 64];
        let mut samples = Vec::with_capacity(a.rtt_iters);
        for i in 0..WARMUP + a.rtt_iters {
            for (j, b) in msg.iter_mut().enumerate() {
                *b = pattern((i * 64 + j) as u64);
            }
            let t = Instant::now();
            timeout(OP_DEADLINE, s.write_all(&msg))
                .await
                .map_err(|e| io_err("write", e))??;
            timeout(OP_DEADLINE, s.read_exact(&mut back))
                .await
                .map_err(|e| io_err("read", e))??;
            let rtt = t.elapsed();
            if back != msg {
                return Err(io_err(
                    "mismatch",
                    format_args!("round trip {i}: the echo differs"),
                ));
            }
            if i >= WARMUP {
                samples.push(rtt);
            }
        }
        s.shutdown().await?;
        let mut rest = Vec::new();
        timeout(OP_DEADLINE, s.read_to_end(&mut rest))
            .await
            .map_err(|e| io_err("read", e))??;
        Ok(samples)
    }
    .await;
    match r {
        Ok(mut samples) if !samples.is_empty() => {
            samples.sort();
            t.p50_us.push(percentile(&samples, 50).as_secs_f64() * 1e6);
            t.p99_us.push(percentile(&samples, 99).as_secs_f64() * 1e6);
        }
        Ok(_) => t.ping_pong_errors.push("no samples (--rtt-iters 0)".into()),
        Err(e) => t.ping_pong_errors.push(e.to_string()),
    }

    // Bulk, one way.
    let Some((mut s, _)) = connect(rep, peer, m).await else {
        t.bulk_errors.push("connect failed".into());
        return 1;
    };
    t.on_ring.push(s.transport().is_ring());
    let n = a.bytes as u64;
    let r: io::Result<f64> = async {
        s.write_all(format!("bulk {n}\n").as_bytes()).await?;
        let block: Vec<u8> = (0..BULK_WRITE as u64).map(pattern).collect();
        let mut hash = Fnv::new();
        let t0 = Instant::now();
        let mut off = 0u64;
        while off < n {
            let len = (BULK_WRITE as u64).min(n - off) as usize;
            timeout(OP_DEADLINE, s.write_all(&block[..len]))
                .await
                .map_err(|e| io_err("write", e))??;
            hash.update(&block[..len]);
            off += len as u64;
        }
        let answer = read_line(&mut s).await?;
        let secs = t0.elapsed().as_secs_f64();
        let want = format!("ok {n} {:016x}", hash.0);
        if answer != want {
            return Err(io_err(
                "bulk",
                format_args!("server answered {answer:?}, want {want:?}"),
            ));
        }
        s.shutdown().await?;
        Ok(secs)
    }
    .await;
    match r {
        Ok(secs) => t.bulk_mbs.push(n as f64 / secs / 1e6),
        Err(e) => t.bulk_errors.push(e.to_string()),
    }
    2
}
