//! The five-second tour of xway: two processes, three kinds of socket, one table.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! The demo starts a second copy of itself as a server process (the hidden `--server`
//! argument), which listens on an [`XwayListener`], a plain tokio `TcpListener` and a Unix
//! socket, and prints their addresses on its standard output. This process is the client: it
//! connects to all three and, on each connection, measures
//!
//! - bulk throughput: 512 MiB in 64 KiB writes, which the server reads and discards before
//!   answering with a one-byte acknowledgement;
//! - latency: 64-byte ping-pong round trips (2,000 warm-up, 20,000 timed), p50 and p99.
//!
//! The xway connection is expected to use the shared-memory ring (its transport is printed,
//! with the reason if it fell back to TCP); the TCP and Unix connections are the baselines.
//! Both processes use tokio `current_thread` runtimes. The server process is stopped at the end,
//! and killed if the client fails; it also exits on its own when the client goes away (its
//! standard input closes).
//!
//! Numbers on a shared or small machine are noisy; `cargo bench` gives the full comparison.

use std::fmt::{self, Display};
use std::io;
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::process::{Child, Command};
use xway_tokio::{FallbackReason, XwayListener, XwayStream};

/// The hidden argument that makes this program the server process.
const SERVER_ARG: &str = "--server";

/// Bytes per timed bulk transfer.
const BULK_BYTES: u64 = 512 << 20;
/// Bytes of the untimed bulk transfer that warms each connection up first.
const BULK_WARMUP_BYTES: u64 = 32 << 20;
/// Bytes per write (and per read on the server).
const CHUNK: usize = 64 << 10;
/// Bytes per ping and per pong.
const PING_LEN: usize = 64;
const PING_WARMUP: u64 = 2_000;
const PING_TIMED: u64 = 20_000;

/// Request header: one command byte and a little-endian `u64` argument.
const HEADER_LEN: usize = 9;
/// "Read and discard this many bytes, then answer with one byte."
const CMD_BULK: u8 = b'B';
/// "Echo this many `PING_LEN`-byte messages, one at a time."
const CMD_PING: u8 = b'P';

fn main() -> ExitCode {
    let server = std::env::args_os().nth(1).is_some_and(|a| a == SERVER_ARG);
    let role = if server { "demo server" } else { "demo" };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => {
            let result = if server {
                rt.block_on(server_main())
            } else {
                rt.block_on(client_main())
            };
            // The server may leave a read of its standard input blocked; do not wait for it.
            rt.shutdown_background();
            result
        }
        Err(e) => Err(e).context("starting the tokio runtime"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{role}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---- server process ----------------------------------------------------------------------

/// Listens on the three sockets, tells the client where, and serves until its standard input
/// closes (the client closed it, exited or died).
async fn server_main() -> io::Result<()> {
    let xway = XwayListener::bind("127.0.0.1:0")
        .await
        .context("binding the xway listener")?;
    let tcp = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the TCP listener")?;
    // An abstract Unix socket: nothing to clean up in the file system, even if killed.
    let unix_name = format!("xway-demo-{}", std::process::id());
    let unix = std::os::unix::net::SocketAddr::from_abstract_name(unix_name.as_bytes())
        .and_then(|a| std::os::unix::net::UnixListener::bind_addr(&a))
        .and_then(|l| {
            l.set_nonblocking(true)?;
            UnixListener::from_std(l)
        })
        .context(format_args!("binding the Unix listener @{unix_name}"))?;

    // One line on stdout (line-buffered, so it is flushed at the newline): the client's cue.
    println!(
        "{} {} {} {}",
        xway.local_addr().context("xway listener address")?,
        xway.is_advertised(),
        tcp.local_addr().context("TCP listener address")?,
        unix_name
    );

    let mut stdin = tokio::io::stdin();
    let mut byte = [0u8; 1];
    loop {
        tokio::select! {
            accepted = xway.accept() => {
                let (stream, _) = accepted.context("accepting on the xway listener")?;
                stream.set_nodelay(true).context("setting TCP_NODELAY")?;
                tokio::spawn(serve_logged("xway", stream));
            }
            accepted = tcp.accept() => {
                let (stream, _) = accepted.context("accepting on the TCP listener")?;
                stream.set_nodelay(true).context("setting TCP_NODELAY")?;
                tokio::spawn(serve_logged("tcp", stream));
            }
            accepted = unix.accept() => {
                let (stream, _) = accepted.context("accepting on the Unix listener")?;
                tokio::spawn(serve_logged("unix", stream));
            }
            // The client never writes to our stdin: anything but a pending read means it is
            // done (EOF) or gone.
            _ = stdin.read(&mut byte) => return Ok(()),
        }
    }
}

async fn serve_logged<S: AsyncRead + AsyncWrite + Unpin>(what: &'static str, stream: S) {
    if let Err(e) = serve(stream).await {
        eprintln!("demo server: {what} connection: {e}");
    }
}

/// Runs the client's requests on one connection until it closes.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut header = [0u8; HEADER_LEN];
        if s.read(&mut header[..1])
            .await
            .context("reading a request")?
            == 0
        {
            return Ok(()); // the client is done
        }
        s.read_exact(&mut header[1..])
            .await
            .context("reading a request")?;
        let arg = u64::from_le_bytes(header[1..].try_into().expect("8 bytes"));
        match header[0] {
            CMD_BULK => {
                let mut left = arg;
                while left > 0 {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = s.read(&mut buf[..want]).await.context("bulk receive")?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("bulk receive: end of stream with {left} bytes to go"),
                        ));
                    }
                    left -= n as u64;
                }
                s.write_all(&[1]).await.context("bulk acknowledgement")?;
            }
            CMD_PING => {
                let mut msg = [0u8; PING_LEN];
                for _ in 0..arg {
                    s.read_exact(&mut msg).await.context("ping receive")?;
                    s.write_all(&msg).await.context("pong send")?;
                }
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown request {other:#04x}"),
                ))
            }
        }
    }
}

// ---- client process ----------------------------------------------------------------------

/// Where the server process listens, as it reported on its stdout.
#[derive(Debug)]
struct ServerAddrs {
    xway: SocketAddr,
    xway_advertised: bool,
    tcp: SocketAddr,
    unix_name: String,
}

impl ServerAddrs {
    fn parse(line: &str) -> Option<ServerAddrs> {
        let mut parts = line.split_whitespace();
        let addrs = ServerAddrs {
            xway: parts.next()?.parse().ok()?,
            xway_advertised: parts.next()?.parse().ok()?,
            tcp: parts.next()?.parse().ok()?,
            unix_name: parts.next()?.to_owned(),
        };
        parts.next().is_none().then_some(addrs)
    }
}

async fn client_main() -> io::Result<()> {
    let started = Instant::now();
    println!("xway demo: this process (the client) talks to a server process it starts, over");
    println!("  an xway connection (shared-memory ring between co-resident xway processes),");
    println!("  plain TCP on loopback and a Unix socket, and compares throughput and latency.");
    println!();

    let exe = std::env::current_exe().context("finding this program's path")?;
    let mut child = Command::new(&exe)
        .arg(SERVER_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true) // even if we return early with an error, or panic
        .spawn()
        .context(format_args!(
            "starting the server process {}",
            exe.display()
        ))?;

    let result = run_client(&mut child).await;

    // Closing its stdin tells the server to exit; a server that does not is killed.
    drop(child.stdin.take());
    match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => eprintln!("demo: server process exited with {status}"),
        Ok(Err(e)) => eprintln!("demo: waiting for the server process: {e}"),
        Err(_) => {
            eprintln!("demo: server process did not exit; killing it");
            child.kill().await.context("killing the server process")?;
        }
    }
    result?;

    println!();
    println!("GB/s: higher is better; µs: lower is better. The xway/tcp and xway/unix columns");
    println!("  divide the xway number by the baseline's. Results on a shared 2-core VM are noisy");
    println!(
        "  (run it twice); `cargo bench` gives the full comparison. Done in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn run_client(child: &mut Child) -> io::Result<()> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("the server process has no stdout pipe"))?;
    let mut line = String::new();
    let n = tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the server process did not start"))?
    .context("reading the server process's addresses")?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server process exited before printing its addresses",
        ));
    }
    let addrs = ServerAddrs::parse(&line).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected line from the server process: {line:?}"),
        )
    })?;
    println!(
        "server process {}: xway {} (advertised: {}), tcp {}, unix @{}",
        child.id().map_or_else(|| "?".into(), |id| id.to_string()),
        addrs.xway,
        if addrs.xway_advertised { "yes" } else { "no" },
        addrs.tcp,
        addrs.unix_name
    );

    let mut xway = XwayStream::connect(addrs.xway)
        .await
        .context(format_args!("xway connect to {}", addrs.xway))?;
    xway.set_nodelay(true).context("setting TCP_NODELAY")?;
    let mut tcp = TcpStream::connect(addrs.tcp)
        .await
        .context(format_args!("TCP connect to {}", addrs.tcp))?;
    tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
    let unix_addr = std::os::unix::net::SocketAddr::from_abstract_name(addrs.unix_name.as_bytes())
        .context("Unix socket name")?;
    let mut unix = std::os::unix::net::UnixStream::connect_addr(&unix_addr)
        .and_then(|s| {
            s.set_nonblocking(true)?;
            UnixStream::from_std(s)
        })
        .context(format_args!("Unix connect to @{}", addrs.unix_name))?;

    match xway.transport().fallback_reason() {
        None => println!(
            "xway connection: {}  <- the shared-memory ring was chosen",
            xway.transport()
        ),
        Some(reason) => {
            println!();
            println!("!!! xway connection: plain TCP, NOT the ring");
            println!("!!!   reason: {reason}");
            if *reason == FallbackReason::DisabledByEnv {
                println!("!!!   unset XWAY_FORCE_TCP to see the ring");
            }
            println!("!!!   the xway column below measures TCP");
        }
    }
    println!();
    println!(
        "measuring: {} MiB bulk in {} KiB writes, then {} x {}-byte round trips, per socket...",
        BULK_BYTES >> 20,
        CHUNK >> 10,
        PING_TIMED,
        PING_LEN
    );

    let xway_r = measure(&mut xway).await.context("xway connection")?;
    let tcp_r = measure(&mut tcp).await.context("TCP connection")?;
    let unix_r = measure(&mut unix).await.context("Unix connection")?;

    println!();
    println!(
        "  {:<26} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "", "xway", "tcp", "unix", "xway/tcp", "xway/unix"
    );
    let row = |name: &str, get: fn(&Results) -> f64, decimals: usize| {
        let (x, t, u) = (get(&xway_r), get(&tcp_r), get(&unix_r));
        println!(
            "  {name:<26} {x:>10.decimals$} {t:>10.decimals$} {u:>10.decimals$} {:>10} {:>10}",
            Ratio(x / t),
            Ratio(x / u),
        );
    };
    row("bulk throughput (GB/s)", |r| r.gb_per_s, 2);
    row("64 B round trip p50 (µs)", |r| r.p50_us, 1);
    row("64 B round trip p99 (µs)", |r| r.p99_us, 1);
    Ok(())
}

/// A ratio printed as `2.35x`.
#[derive(Debug, Clone, Copy)]
struct Ratio(f64);

impl Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format!("{:.2}x", self.0);
        f.pad(&s)
    }
}

#[derive(Debug)]
struct Results {
    gb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Both measurements on one connection.
async fn measure<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<Results> {
    bulk(s, BULK_WARMUP_BYTES).await.context("bulk warm-up")?;
    let elapsed = bulk(s, BULK_BYTES).await.context("bulk transfer")?;
    let mut rtts = ping_pong(s).await.context("ping-pong")?;
    rtts.sort_unstable();
    let percentile = |p: f64| {
        let i = ((rtts.len() - 1) as f64 * p).round() as usize;
        rtts[i].as_secs_f64() * 1e6
    };
    Ok(Results {
        gb_per_s: BULK_BYTES as f64 / elapsed.as_secs_f64() / 1e9,
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
    })
}

/// Sends `total` bytes in `CHUNK`-byte writes; the time until the server acknowledges them.
async fn bulk<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, total: u64) -> io::Result<Duration> {
    let data = vec![0xa5u8; CHUNK];
    let start = Instant::now();
    s.write_all(&request(CMD_BULK, total)).await?;
    let mut left = total;
    while left > 0 {
        let n = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        s.write_all(&data[..n]).await?;
        left -= n as u64;
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await?;
    Ok(start.elapsed())
}

/// `PING_WARMUP + PING_TIMED` round trips of `PING_LEN` bytes; the timed ones' durations.
async fn ping_pong<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<Vec<Duration>> {
    s.write_all(&request(CMD_PING, PING_WARMUP + PING_TIMED))
        .await?;
    let mut ping = [0u8; PING_LEN];
    let mut pong = [0u8; PING_LEN];
    let mut rtts = Vec::with_capacity(PING_TIMED as usize);
    for i in 0..PING_WARMUP + PING_TIMED {
        ping[..8].copy_from_slice(&i.to_le_bytes());
        let start = Instant::now();
        s.write_all(&ping).await?;
        s.read_exact(&mut pong).await?;
        let rtt = start.elapsed();
        if pong != ping {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("round trip {i}: the echo differs from what was sent"),
            ));
        }
        if i >= PING_WARMUP {
            rtts.push(rtt);
        }
    }
    Ok(rtts)
}

fn request(cmd: u8, arg: u64) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0] = cmd;
    header[1..].copy_from_slice(&arg.to_le_bytes());
    header
}

/// Adds what was being done to an I/O error, keeping its kind.
trait Context<T> {
    fn context(self, what: impl Display) -> io::Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, what: impl Display) -> io::Result<T> {
        self.map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}
