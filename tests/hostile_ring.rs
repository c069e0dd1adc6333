//! A hostile peer corrupts the shared control area mid-stream (invariant I2: shared memory is
//! hostile input; I4: no hangs).
//!
//! The hostile peer is a real second process: this test binary started again in the role
//! `hostile_child_role` (the re-exec pattern). It makes an ordinary xway ring connection, moves
//! some bytes honestly, then finds its own mapping of the ring in `/proc/self/maps` (matched by
//! the connection's addresses in the ring header) and writes arbitrary values into the shared
//! words it can reach, exactly as a malicious process could: indexes, flags, notify bits,
//! the setup state, activity hints. It then rings the honest side's doorbell and stays alive,
//! so nothing but the honest side's own checks can end the connection.
//!
//! The honest side (this process) must get `InvalidData` or `ConnectionReset` on that
//! connection for every protocol violation, keep working for corrupted hints, never accept a
//! byte the peer did not write before the corruption, never hang or panic, and keep serving
//! other connections.

mod common;

use std::io::{self, BufRead, BufReader, ErrorKind};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::pattern;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xway_tokio::{XwayListener, XwayStream};

// ---- the ring layout, as a hostile process sees it (ring/layout.rs) -------------------------

const C2S: usize = 256;
const S2C: usize = 768;
const PROD: usize = 0;
const PROD_FLAGS: usize = 4;
const CONS: usize = 128;
const CONS_FLAGS: usize = 132;
const NOTIFY: usize = 256;
const STATE: usize = 128;
const CLIENT_ACTIVITY: usize = 1152;
const SERVER_ACTIVITY: usize = 1280;

/// Bytes each side moves honestly before the corruption.
const PHASE: u64 = 256 * 1024;
/// How long the honest side may take to notice.
const NOTICE: Duration = Duration::from_secs(2);

/// This process's mapping of one connection's ring.
struct Mapped {
    base: usize,
}

impl Mapped {
    /// Finds the mapping whose header names exactly the addresses `a` and `b`.
    fn find(a: SocketAddr, b: SocketAddr) -> Option<Mapped> {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        for line in maps.lines().filter(|l| l.contains("memfd:xway-ring")) {
            let range = line.split_whitespace().next()?;
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            if end - start < 4096 {
                continue;
            }
            let m = Mapped { base: start };
            let (client, server) = (m.bytes(40, 20), m.bytes(60, 20));
            let (ea, eb) = (encode_addr(a), encode_addr(b));
            if (client == ea && server == eb) || (client == eb && server == ea) {
                return Some(m);
            }
        }
        None
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is a 4-aligned offset inside the control page of a live shared mapping
        // (the connection is open for as long as this value is used); the library accesses
        // these words only atomically, so this is an ordinary cross-process atomic access.
        unsafe { AtomicU32::from_ptr((self.base + off) as *mut u32) }
    }

    fn get(&self, off: usize) -> u32 {
        self.word(off).load(Ordering::SeqCst)
    }

    fn set(&self, off: usize, v: u32) {
        self.word(off).store(v, Ordering::SeqCst)
    }

    fn bytes(&self, off: usize, n: usize) -> Vec<u8> {
        (off..off + n)
            .step_by(4)
            .flat_map(|o| self.get(o).to_ne_bytes())
            .collect()
    }

    /// Size of the ring whose control block is at `ctl`.
    fn size(&self, ctl: usize) -> u32 {
        1 << self.get(if ctl == C2S { 12 } else { 16 })
    }
}

fn encode_addr(addr: SocketAddr) -> Vec<u8> {
    let mut b = vec![0u8; 20];
    b[2..4].copy_from_slice(&addr.port().to_be_bytes());
    match addr.ip().to_canonical() {
        std::net::IpAddr::V4(ip) => {
            b[0] = 4;
            b[4..8].copy_from_slice(&ip.octets());
        }
        std::net::IpAddr::V6(ip) => {
            b[0] = 6;
            b[4..20].copy_from_slice(&ip.octets());
        }
    }
    b
}

/// Open doorbell descriptors (Unix datagram sockets) of this process.
fn doorbells() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&fd| {
            let mut ty: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: `ty` is valid for writes of `len` bytes; a non-socket fails with ENOTSOCK.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_TYPE,
                    (&mut ty as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            r == 0 && ty == libc::SOCK_DGRAM
        })
        .collect()
}

fn ring_bell(fd: i32) {
    // SAFETY: sends 1 valid byte on a descriptor this process owns, without blocking.
    unsafe {
        libc::send(
            fd,
            b"!".as_ptr().cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
}

// ---- the hostile process ----------------------------------------------------------------------

fn say(line: &str) {
    use std::io::Write;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "HOSTILE {line}");
    let _ = out.flush();
}

/// Entry point of the hostile child; a no-op in a normal test run.
#[test]
fn hostile_child_role() {
    let Ok(scenario) = std::env::var("XWAY_HOSTILE_SCENARIO") else {
        return;
    };
    let role = std::env::var("XWAY_HOSTILE_ROLE").unwrap();
    let addr = std::env::var("XWAY_HOSTILE_ADDR").ok();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let res = rt.block_on(hostile(&role, &scenario, addr));
    if let Err(e) = res {
        say(&format!("ERROR {e}"));
    }
    std::process::exit(0);
}

/// Reads `n` pattern bytes starting at `from`, checking them.
async fn read_pattern(rd: &mut (impl AsyncReadExt + Unpin), from: u64, n: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 16384];
    let mut at = from;
    while at < from + n {
        let want = ((from + n - at) as usize).min(buf.len());
        let got = rd.read(&mut buf[..want]).await?;
        if got == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        assert!(
            buf[..got] == pattern(at, got)[..],
            "hostile side got garbage"
        );
        at += got as u64;
    }
    Ok(())
}

async fn write_pattern(wr: &mut (impl AsyncWriteExt + Unpin), from: u64, n: u64) -> io::Result<()> {
    let mut at = from;
    while at < from + n {
        let len = ((from + n - at) as usize).min(16384);
        wr.write_all(&pattern(at, len)).await?;
        at += len as u64;
    }
    Ok(())
}

async fn hostile(role: &str, scenario: &str, addr: Option<String>) -> io::Result<()> {
    let before = doorbells();
    let mut stream = if role == "client" {
        XwayStream::connect(addr.unwrap()).await?
    } else {
        let listener = XwayListener::bind("127.0.0.1:0").await?;
        say(&format!("LISTENING {}", listener.local_addr()?));
        listener.accept().await?.0
    };
    assert!(stream.transport().is_ring(), "{}", stream.transport());
    let bells: Vec<i32> = doorbells()
        .into_iter()
        .filter(|fd| !before.contains(fd))
        .collect();
    let ring = Mapped::find(stream.local_addr()?, stream.peer_addr()?).expect("own mapping");
    let (tx, rx) = if role == "client" {
        (C2S, S2C)
    } else {
        (S2C, C2S)
    };
    let activity = if role == "client" {
        CLIENT_ACTIVITY
    } else {
        SERVER_ACTIVITY
    };
    say("CONNECTED");

    // Honest phase: both directions, concurrently.
    {
        let (mut rd, mut wr) = stream.split();
        let (r, w) = tokio::join!(
            read_pattern(&mut rd, 0, PHASE),
            write_pattern(&mut wr, 0, PHASE)
        );
        r?;
        w?;
    }
    // Wait until the honest side consumed everything we wrote.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ring.get(tx + CONS) != ring.get(tx + PROD) {
        assert!(Instant::now() < deadline, "honest side stopped reading");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    say("PHASE1");

    let (tx_size, rx_size) = (ring.size(tx), ring.size(rx));
    let violation = match scenario {
        "prod-beyond" => {
            let p = ring.get(tx + PROD);
            ring.set(tx + PROD, p.wrapping_add(tx_size + 1));
            true
        }
        "prod-backwards" => {
            let p = ring.get(tx + PROD);
            ring.set(tx + PROD, p.wrapping_sub(1));
            true
        }
        "prod-huge" => {
            ring.set(tx + PROD, u32::MAX);
            true
        }
        "cons-ahead" => {
            let c = ring.get(rx + CONS);
            ring.set(rx + CONS, c.wrapping_add(rx_size + 1));
            true
        }
        "prod-aborted" => {
            ring.set(tx + PROD_FLAGS, 2);
            true
        }
        "cons-aborted" => {
            ring.set(rx + CONS_FLAGS, 2);
            true
        }
        "tcp-bytes" => {
            // SAFETY: writes one valid byte to the TCP socket this process owns.
            let n = unsafe { libc::write(stream.as_raw_fd(), b"!".as_ptr().cast(), 1) };
            assert_eq!(n, 1);
            true
        }
        "hints" => {
            ring.set(tx + PROD_FLAGS, 0xffff_fff0);
            ring.set(rx + CONS_FLAGS, 0xffff_fff0);
            ring.set(STATE, 0xdead_beef);
            false
        }
        "notify-storm" | "activity-liar" | "random-hints" => false,
        other => panic!("unknown scenario {other}"),
    };
    for &fd in &bells {
        ring_bell(fd);
    }
    say("CORRUPTED");
    if violation {
        // Stay alive and silent: only the honest side's own checks may end the connection.
        std::thread::sleep(Duration::from_secs(30));
        return Ok(());
    }

    // Hints only: the stream must go on, correct, while we keep scribbling on them.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scribbler = {
        let stop = stop.clone();
        let base = ring.base;
        let scenario = scenario.to_owned();
        std::thread::spawn(move || {
            let ring = Mapped { base };
            let mut x: u32 = 0x9e37_79b9;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                match scenario.as_str() {
                    "notify-storm" => {
                        ring.set(tx + NOTIFY, u32::MAX);
                        ring.set(rx + NOTIFY, if x & 1 == 0 { 0 } else { u32::MAX });
                    }
                    "activity-liar" => ring.set(activity, (1 << 31) | (x & 0xffff)),
                    "random-hints" => {
                        let off = [STATE, activity, tx + NOTIFY, rx + NOTIFY][(x % 4) as usize];
                        ring.set(off, x.rotate_left(7));
                        ring.set(tx + PROD_FLAGS, x & !3);
                        ring.set(rx + CONS_FLAGS, x & !3);
                    }
                    _ => {}
                }
                std::thread::yield_now();
            }
        })
    };
    let (mut rd, mut wr) = stream.split();
    let (r, w) = tokio::join!(
        read_pattern(&mut rd, PHASE, PHASE),
        write_pattern(&mut wr, PHASE, PHASE)
    );
    // Stop scribbling before our own FIN, or we would erase our own close flag.
    stop.store(true, Ordering::Relaxed);
    scribbler.join().unwrap();
    r?;
    w?;
    wr.shutdown().await?;
    let mut rest = [0u8; 1];
    assert_eq!(
        rd.read(&mut rest).await?,
        0,
        "EOF after the honest side's bytes"
    );
    say("DONE");
    Ok(())
}

// ---- the parent: an honest side and a bystander -------------------------------------------------

struct HostileChild {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl HostileChild {
    fn spawn(role: &str, scenario: &str, addr: Option<SocketAddr>) -> HostileChild {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "hostile_child_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("XWAY_HOSTILE_SCENARIO", scenario)
        .env("XWAY_HOSTILE_ROLE", role)
        .stdout(Stdio::piped())
        .stdin(Stdio::null());
        if let Some(a) = addr {
            cmd.env("XWAY_HOSTILE_ADDR", a.to_string());
        }
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // libtest may print "test hostile_child_role ... " before the first line.
                if let Some(at) = line.find("HOSTILE ") {
                    if tx.send(line[at + 8..].to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        HostileChild { child, lines }
    }

    /// Waits (without blocking the runtime) for the next line starting with `prefix`.
    async fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.lines.try_recv() {
                Ok(l) if l.starts_with(prefix) => return l[prefix.len()..].trim().to_owned(),
                Ok(l) if l.starts_with("ERROR") => panic!("hostile child: {l}"),
                Ok(_) => {}
                Err(mpsc::TryRecvError::Empty) => {
                    assert!(
                        Instant::now() < deadline,
                        "hostile child never said {prefix}"
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    panic!("hostile child exited before {prefix}")
                }
            }
        }
    }
}

impl Drop for HostileChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How one half of the honest connection ended.
#[derive(Debug)]
struct End {
    result: io::Result<u64>,
    at: Instant,
}

/// The honest side: reads and checks the pattern until EOF or an error, and writes the pattern
/// (`limit` bytes then a FIN, or until an error). Returns the reader's and the writer's task.
fn honest(
    stream: XwayStream,
    limit: Option<u64>,
) -> (tokio::task::JoinHandle<End>, tokio::task::JoinHandle<End>) {
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 16384];
        let mut at = 0u64;
        let result = loop {
            match rd.read(&mut buf).await {
                Ok(0) => break Ok(at),
                Ok(n) => {
                    assert!(
                        buf[..n] == pattern(at, n)[..],
                        "the honest side accepted bytes the peer never wrote (at {at})"
                    );
                    at += n as u64;
                }
                Err(e) => break Err(e),
            }
        };
        End {
            result,
            at: Instant::now(),
        }
    });
    let writer = tokio::spawn(async move {
        let mut at = 0u64;
        let result = loop {
            if limit.is_some_and(|l| at >= l) {
                break wr.shutdown().await.map(|()| at);
            }
            if let Err(e) = wr.write_all(&pattern(at, 16384)).await {
                break Err(e);
            }
            at += 16384;
        };
        End {
            result,
            at: Instant::now(),
        }
    });
    (reader, writer)
}

/// A connection that must be unaffected: an echo round trip of 64 KiB.
async fn bystander(addr: SocketAddr) {
    let mut s = XwayStream::connect(addr).await.unwrap();
    assert!(s.transport().is_ring(), "{}", s.transport());
    let data = pattern(7, 65536);
    let (mut rd, mut wr) = s.split();
    let mut back = vec![0u8; data.len()];
    let (w, r) = tokio::join!(wr.write_all(&data), rd.read_exact(&mut back));
    w.unwrap();
    r.unwrap();
    assert_eq!(back, data);
}

/// A listener that echoes every connection, except that with `hand_out` the first one is sent
/// to the test instead.
async fn listener_with_bystanders(
    hand_out: bool,
) -> (SocketAddr, tokio::sync::mpsc::Receiver<XwayStream>) {
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut first = hand_out;
        loop {
            let (mut s, _) = listener.accept().await.expect("accept never fails");
            if first {
                first = false;
                let _ = tx.send(s).await;
                continue;
            }
            tokio::spawn(async move {
                let (mut rd, mut wr) = s.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
            });
        }
    });
    (addr, rx)
}

fn is_violation_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::InvalidData | ErrorKind::ConnectionReset
    )
}

/// How a scenario ended on the honest side.
struct Ran {
    /// `None`: the half was still parked when the scenario's time was up.
    reader: Option<End>,
    writer: Option<End>,
    corrupted_at: Instant,
}

/// Runs one scenario with the hostile peer as `hostile_role` ("client": we accept, "server":
/// we connect), the honest side writing `limit` bytes (or until an error).
async fn run_scenario(scenario: &str, hostile_role: &str, limit: Option<u64>) -> Ran {
    let (bystander_addr, mut accepted) = listener_with_bystanders(hostile_role == "client").await;
    let (stream, mut child) = if hostile_role == "client" {
        let child = HostileChild::spawn("client", scenario, Some(bystander_addr));
        (accepted.recv().await.unwrap(), child)
    } else {
        let mut child = HostileChild::spawn("server", scenario, None);
        let addr: SocketAddr = child.expect("LISTENING").await.parse().unwrap();
        (XwayStream::connect(addr).await.unwrap(), child)
    };
    assert!(stream.transport().is_ring(), "{}", stream.transport());
    bystander(bystander_addr).await;
    let (reader, writer) = honest(stream, limit);
    child.expect("PHASE1").await;
    child.expect("CORRUPTED").await;
    let corrupted_at = Instant::now();
    // Other connections keep working while the hostile one is being torn down.
    bystander(bystander_addr).await;
    if limit.is_some() {
        child.expect("DONE").await;
    }
    let wait = if limit.is_some() {
        Duration::from_secs(10)
    } else {
        NOTICE + Duration::from_secs(3)
    };
    let (reader, writer) = (
        tokio::time::timeout(wait, reader),
        tokio::time::timeout(wait, writer),
    );
    let (reader, writer) = tokio::join!(reader, writer);
    let reader = reader.ok().map(|r| r.unwrap());
    let writer = writer.ok().map(|w| w.unwrap());
    bystander(bystander_addr).await;
    drop(child);
    Ran {
        reader,
        writer,
        corrupted_at,
    }
}

/// Asserts that a violation scenario ended the honest connection with a protocol error,
/// promptly, on the half that meets the violation first (`reader_fails`). With `both`, the other
/// half must end as well (see `a_failed_connection_wakes_its_other_half`).
async fn violation(scenario: &str, role: &str, reader_fails: bool, both: bool) {
    let ran = run_scenario(scenario, role, None).await;
    let (failing, other) = if reader_fails {
        (&ran.reader, &ran.writer)
    } else {
        (&ran.writer, &ran.reader)
    };
    let failing = failing
        .as_ref()
        .unwrap_or_else(|| panic!("{scenario}/{role}: the honest side hung after the corruption"));
    match &failing.result {
        Err(e) if is_violation_error(e) => {}
        other => {
            panic!("{scenario}/{role}: expected InvalidData or ConnectionReset, got {other:?}")
        }
    }
    let took = failing.at.saturating_duration_since(ran.corrupted_at);
    assert!(took < NOTICE, "{scenario}/{role}: noticed after {took:?}");
    if let Some(End { result: Ok(n), .. }) = &ran.reader {
        assert!(*n >= PHASE, "{scenario}/{role}: lost honest bytes ({n})");
    }
    if both {
        let other = other.as_ref().unwrap_or_else(|| {
            panic!("{scenario}/{role}: the other half stayed parked after the connection failed")
        });
        assert!(
            other.result.is_err(),
            "{scenario}/{role}: {:?}",
            other.result
        );
        let took = other.at.saturating_duration_since(ran.corrupted_at);
        assert!(
            took < NOTICE,
            "{scenario}/{role}: other half ended after {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_index_beyond_the_ring_fails_the_reader() {
    violation("prod-beyond", "client", true, false).await;
    violation("prod-beyond", "server", true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_index_moving_backwards_fails_the_reader() {
    violation("prod-backwards", "client", true, false).await;
    violation("prod-huge", "server", true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_index_ahead_of_our_writes_fails_the_writer() {
    violation("cons-ahead", "client", false, false).await;
    violation("cons-ahead", "server", false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_flags_reset_the_connection() {
    violation("prod-aborted", "client", true, false).await;
    violation("cons-aborted", "server", false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_on_the_control_connection_fail_the_stream() {
    violation("tcp-bytes", "client", true, false).await;
}

/// Garbage in the hint words (undefined flag bits, notify storms and clears, a peer claiming to
/// spin on some CPU, a rewritten setup state) must not break or stall the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_hints_leave_the_stream_correct() {
    for (scenario, role) in [
        ("hints", "client"),
        ("notify-storm", "client"),
        ("activity-liar", "server"),
        ("random-hints", "client"),
        ("random-hints", "server"),
    ] {
        let started = Instant::now();
        let ran = run_scenario(scenario, role, Some(2 * PHASE)).await;
        let reader = ran.reader.expect("reader finished");
        assert_eq!(reader.result.unwrap(), 2 * PHASE, "{scenario}/{role}");
        let writer = ran.writer.expect("writer finished");
        assert_eq!(writer.result.unwrap(), 2 * PHASE, "{scenario}/{role}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

/// Once one half of a ring stream has failed the connection (a protocol violation), a task
/// parked in the other half must be woken and get the error, as with a reset TCP socket, even
/// while the hostile peer stays alive and silent (invariant I4: every wait has a wake source).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connection_wakes_its_other_half() {
    // The reader meets the violation; the writer is parked on a ring the peer no longer reads.
    violation("prod-beyond", "client", true, true).await;
    // The writer meets the violation; the reader is parked on an empty ring.
    violation("cons-ahead", "server", false, true).await;
}
