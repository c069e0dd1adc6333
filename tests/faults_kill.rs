//! SIGKILL of either side at random points of setup and of transfer (invariant I4: a dead peer
//! turns into EOF or `ConnectionReset` promptly, after the bytes already in the ring; nothing is
//! leaked). 130 kills in all, a few seconds in a debug build.
//!
//! Every kill point is drawn from a seeded generator; the seed is printed, and
//! `XWAY_FAULT_SEED=<seed> cargo test --test faults_kill` replays a run. `XWAY_FAULT_SCALE=10`
//! multiplies the iteration counts (a longer soak).
//!
//! Descriptor and mapping counts are per process, so the tests of this binary run one at a
//! time (`SERIAL`) and each compares the counts before and after its iterations.

mod common;

use std::io::ErrorKind;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{fd_count, mapping_count, pattern, Peer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xway_tokio::{XwayConfig, XwayListener, XwayStream};

/// How long after a kill the survivor must have noticed.
const NOTICE: Duration = Duration::from_secs(1);

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs a test body alone, on a runtime created after taking the lock, so that no other test's
/// runtime or connections show up in the census.
fn serial(body: impl std::future::Future<Output = ()>) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body)
}

struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let seed = std::env::var("XWAY_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{test}: XWAY_FAULT_SEED={seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn iterations(n: usize) -> usize {
    n * std::env::var("XWAY_FAULT_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Resources of this process, compared before and after a test's iterations: descriptors,
/// ring mappings (`memfd:xway-ring`), and all mappings (for the record: glibc keeps the stacks
/// of exited helper threads cached, so the total may grow a little without any ring leaking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Census {
    fds: usize,
    rings: usize,
    maps: usize,
}

fn census() -> Census {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    Census {
        fds: fd_count(),
        rings: maps.lines().filter(|l| l.contains("xway-ring")).count(),
        maps: mapping_count(),
    }
}

fn open_fds() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            Some(
                std::fs::read_link(e.ok()?.path())
                    .ok()?
                    .display()
                    .to_string(),
            )
        })
        .collect()
}

/// Waits (bounded) for the census to come back to `base`: the last streams are being dropped
/// by tasks that are still finishing.
async fn assert_released(base: Census, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = census();
        if now.fds <= base.fds && now.rings <= base.rings {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: resources not released: before {base:?}, after {now:?}: {:?}",
            open_fds()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads to the end after a kill; returns the bytes and how the stream ended.
async fn read_to_end_after_kill(
    s: &mut XwayStream,
    received: &mut Vec<u8>,
    killed_at: Instant,
    what: &str,
) {
    let mut buf = vec![0u8; 65536];
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: hang after the kill"))
        {
            Ok(0) => break Ok(()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    let noticed = killed_at.elapsed();
    if let Err(e) = &end {
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{what}: {e}");
    }
    assert!(
        noticed < NOTICE,
        "{what}: noticed the death after {noticed:?}"
    );
}

/// The bytes the peer's stream accepted before it died (its last WROTE line).
fn reported(peer: &mut Peer) -> u64 {
    peer.drain()
        .iter()
        .filter_map(|l| l.strip_prefix("WROTE ").and_then(|n| n.parse().ok()))
        .max()
        .unwrap_or(0)
}

fn check_no_loss(received: &[u8], reported: u64, what: &str) {
    assert!(
        received.len() as u64 >= reported,
        "{what}: lost bytes: got {}, the peer's stream accepted {reported}",
        received.len()
    );
    assert!(
        received == &pattern(0, received.len())[..],
        "{what}: bytes out of order or corrupted"
    );
}

/// Transfer: the writing peer (a client) is killed after a random number of bytes.
#[test]
fn writer_client_killed_mid_transfer_loses_nothing() {
    serial(writer_client_killed_mid_transfer_loses_nothing_body());
}

async fn writer_client_killed_mid_transfer_loses_nothing_body() {
    let mut rng = Rng::new("writer_client_killed");
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let base = census();
    let (mut total_reported, mut total_received) = (0u64, 0u64);
    for i in 0..iterations(30) {
        let kill_after = rng.below(3 << 20) as usize;
        let chunk = [1024, 32768, 200_000][rng.below(3) as usize].to_string();
        let mut peer = Peer::spawn(&["source", &addr, "--chunk", &chunk]);
        let (mut s, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("accept")
            .unwrap();
        assert!(s.transport().is_ring(), "{}", s.transport());
        let mut received = Vec::new();
        let mut buf = vec![0u8; 65536];
        while received.len() < kill_after {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "EOF before the kill");
            received.extend_from_slice(&buf[..n]);
        }
        peer.kill9();
        let killed_at = Instant::now();
        let what = format!("iteration {i} (kill after {kill_after} B)");
        read_to_end_after_kill(&mut s, &mut received, killed_at, &what).await;
        let wrote = reported(&mut peer);
        check_no_loss(&received, wrote, &what);
        total_reported += wrote;
        total_received += received.len() as u64;
    }
    eprintln!("writer_client_killed: {total_reported} B reported written, {total_received} B received, 0 lost");
    // The listener closes a dead client's rendezvous connection when it next polls for
    // connections (it has nobody else to do it for it).
    let _ = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
    assert_released(base, "writer_client_killed").await;
}

/// Transfer: the writing peer is the server, killed after a random number of bytes.
#[test]
fn writer_server_killed_mid_transfer_loses_nothing() {
    serial(writer_server_killed_mid_transfer_loses_nothing_body());
}

async fn writer_server_killed_mid_transfer_loses_nothing_body() {
    let mut rng = Rng::new("writer_server_killed");
    let base = census();
    for i in 0..iterations(20) {
        let kill_after = rng.below(3 << 20) as usize;
        let mut peer = Peer::spawn(&["source-server", "--chunk", "32768"]);
        let addr = peer.listening();
        let mut s = XwayStream::connect(addr).await.unwrap();
        assert!(s.transport().is_ring(), "{}", s.transport());
        let mut received = Vec::new();
        let mut buf = vec![0u8; 65536];
        while received.len() < kill_after {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "EOF before the kill");
            received.extend_from_slice(&buf[..n]);
        }
        peer.kill9();
        let killed_at = Instant::now();
        let what = format!("iteration {i} (kill after {kill_after} B)");
        read_to_end_after_kill(&mut s, &mut received, killed_at, &what).await;
        check_no_loss(&received, reported(&mut peer), &what);
    }
    assert_released(base, "writer_server_killed").await;
}

/// Transfer: the reading peer (a server) is killed while we write; our writes fail promptly.
#[test]
fn reader_server_killed_mid_transfer_fails_our_writes_promptly() {
    serial(reader_server_killed_mid_transfer_fails_our_writes_promptly_body());
}

async fn reader_server_killed_mid_transfer_fails_our_writes_promptly_body() {
    let mut rng = Rng::new("reader_server_killed");
    let base = census();
    let chunk = pattern(0, 1 << 16);
    for i in 0..iterations(20) {
        let mut peer = Peer::spawn(&["sink-server"]);
        let mut s = XwayStream::connect(peer.listening()).await.unwrap();
        assert!(s.transport().is_ring());
        for _ in 0..rng.below(64) {
            s.write_all(&chunk).await.unwrap();
        }
        peer.kill9();
        let killed_at = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Err(e) = s.write_all(&chunk).await {
                    return e;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("iteration {i}: writes to a killed reader hang"));
        assert!(
            killed_at.elapsed() < NOTICE,
            "iteration {i}: noticed after {:?}",
            killed_at.elapsed()
        );
        assert!(
            matches!(
                err.kind(),
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
            ),
            "iteration {i}: {err}"
        );
    }
    assert_released(base, "reader_server_killed").await;
}

/// Setup: the client is killed at a random moment of its connect (before its offer, between
/// offer and SYN, while waiting for the verdict, or just after). The listener never fails,
/// every connection it accepted ends promptly, later clients are served, and the offers of the
/// dead clients are released (after the offer TTL, at the next accept).
#[test]
fn client_killed_during_setup_never_breaks_the_listener() {
    serial(client_killed_during_setup_never_breaks_the_listener_body());
}

async fn client_killed_during_setup_never_breaks_the_listener_body() {
    let mut rng = Rng::new("client_killed_during_setup");
    let base = census();
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ends_tx, mut ends) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let acceptor = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.expect("accept never fails");
            let ends_tx = ends_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) => {}
                        Err(_) => panic!("an accepted connection of a killed client hangs"),
                    }
                }
                let _ = ends_tx.send(Instant::now());
            });
        }
    });
    let addr_s = addr.to_string();
    let n = iterations(30);
    let mut last_kill = Instant::now();
    for _ in 0..n {
        let mut peer = Peer::spawn(&["source", &addr_s, "--chunk", "4096"]);
        // Process start-up plus connect takes a few milliseconds in a debug build: spread the
        // kills over it.
        tokio::time::sleep(Duration::from_micros(rng.below(15_000))).await;
        peer.kill9();
        last_kill = Instant::now();
    }
    // Every connection that got accepted ends within NOTICE of its client's death.
    tokio::time::sleep(NOTICE).await;
    let mut ended = 0;
    while let Ok(at) = ends.try_recv() {
        assert!(at <= last_kill + NOTICE, "a connection ended late");
        ended += 1;
    }
    eprintln!("client_killed_during_setup: {n} kills, {ended} connections had been accepted");
    // The listener still serves, on the ring.
    let mut c = XwayStream::connect(addr).await.unwrap();
    assert!(c.transport().is_ring(), "{}", c.transport());
    c.write_all(b"alive").await.unwrap();
    drop(c);
    // Offers of clients that died between their offer and their SYN wait for their TTL (10 s)
    // and are dropped at the next accept.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let c = XwayStream::connect(addr).await.unwrap();
    assert!(c.transport().is_ring());
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    acceptor.abort();
    let _ = acceptor.await;
    assert_released(base, "client_killed_during_setup").await;
}

/// Setup: the server is killed at a random moment while a client connects. The client gets an
/// error, or a stream (ring or TCP) that ends promptly; it never hangs and leaks nothing.
#[test]
fn server_killed_during_setup_never_hangs_the_client() {
    serial(server_killed_during_setup_never_hangs_the_client_body());
}

async fn server_killed_during_setup_never_hangs_the_client_body() {
    let mut rng = Rng::new("server_killed_during_setup");
    let base = census();
    let config = XwayConfig::builder()
        .rendezvous_timeout(Duration::from_millis(200))
        .build();
    let (mut errors, mut rings, mut tcps) = (0, 0, 0);
    for i in 0..iterations(30) {
        let mut peer = Peer::spawn(&["echo-server"]);
        let addr = peer.listening();
        let config = config.clone();
        let client = tokio::spawn(async move {
            let mut s = XwayStream::connect_with(addr, &config).await?;
            let ring = s.transport().is_ring();
            let _ = s.write_all(b"hello").await;
            let mut buf = [0u8; 16];
            // Until EOF or an error: the server is (about to be) dead.
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return Ok::<_, std::io::Error>((ring, Instant::now())),
                    Ok(_) => {}
                }
            }
        });
        tokio::time::sleep(Duration::from_micros(rng.below(3_000))).await;
        peer.kill9();
        let killed_at = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), client)
            .await
            .unwrap_or_else(|_| panic!("iteration {i}: the client hangs"))
            .unwrap()
        {
            Err(_) => errors += 1,
            Ok((ring, ended)) => {
                if ring {
                    rings += 1
                } else {
                    tcps += 1
                }
                let took = ended.saturating_duration_since(killed_at);
                assert!(
                    took < NOTICE,
                    "iteration {i}: ended {took:?} after the kill"
                );
            }
        }
    }
    eprintln!("server_killed_during_setup: {errors} connect errors, {rings} ring, {tcps} TCP");
    assert_released(base, "server_killed_during_setup").await;
}
