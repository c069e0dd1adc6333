//! 1,000 concurrent ring connections with traffic, across two processes: an `xway-peer
//! echo-server` holds all of them (one tokio thread), this process opens them and then pushes
//! 64 KiB through every one at the same time, checking every echoed byte. Afterwards both
//! processes are back at their baseline (this one measured, the server by its exit).
//!
//! `XWAY_LOAD_CONNS` changes the count.

mod common;

use std::time::{Duration, Instant};

use common::{pattern, Peer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xway_tokio::{XwayConfig, XwayStream};

/// Raises this process's descriptor limit to its hard limit (children inherit it).
fn raise_nofile(need: u64) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is valid for writes.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if lim.rlim_max < need {
        return false;
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: lim is a valid rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 }
}

fn ring_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("xway-ring"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_ring_connections_with_traffic() {
    let conns: usize = std::env::var("XWAY_LOAD_CONNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    // Three descriptors per ring connection on each side, plus headroom.
    if !raise_nofile(3 * conns as u64 + 256) {
        eprintln!("skipped: RLIMIT_NOFILE hard limit too low for {conns} connections");
        return;
    }
    let fds_before = common::fd_count();
    let mut server = Peer::spawn(&["echo-server"]);
    let addr = server.listening();
    // Small rings: 1,000 connections then share 36 MiB of rings, not 2 GiB.
    let config = XwayConfig::builder().ring_size(16 << 10).build();

    let started = Instant::now();
    let mut streams = Vec::with_capacity(conns);
    // Connect in waves of 32: a burst of thousands of simultaneous offers would (correctly)
    // overflow the listener's rendezvous backlog and fall back to TCP.
    while streams.len() < conns {
        let wave = (conns - streams.len()).min(32);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..wave {
            let config = config.clone();
            set.spawn(async move { XwayStream::connect_with(addr, &config).await.unwrap() });
        }
        while let Some(s) = set.join_next().await {
            streams.push(s.unwrap());
        }
    }
    let connected = started.elapsed();
    let rings = streams.iter().filter(|s| s.transport().is_ring()).count();
    assert_eq!(rings, conns, "every connection should get the ring");
    // Plus the spare rings this process keeps mapped for its next connects (at most 4).
    let mapped = ring_mappings();
    assert!(
        (conns..=conns + 4).contains(&mapped),
        "{mapped} ring mappings for {conns} connections"
    );

    // Traffic on all of them at once.
    const BYTES: usize = 64 << 10;
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, mut s) in streams.into_iter().enumerate() {
        set.spawn(async move {
            let data = pattern(i as u64, BYTES);
            let (mut rd, mut wr) = s.split();
            let mut back = vec![0u8; BYTES];
            let (w, r) = tokio::join!(
                async {
                    wr.write_all(&data).await?;
                    wr.shutdown().await
                },
                rd.read_exact(&mut back)
            );
            w.unwrap();
            r.unwrap();
            assert!(back == data, "connection {i}: echo differs");
            let mut rest = [0u8; 1];
            assert_eq!(rd.read(&mut rest).await.unwrap(), 0, "EOF after the echo");
        });
    }
    let res = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    })
    .await;
    res.expect("traffic on 1,000 connections must finish");
    let moved = started.elapsed();
    eprintln!(
        "{conns} ring connections: connected in {connected:?}, {} MiB echoed concurrently in \
         {moved:?} ({:.0} MiB/s each way)",
        (conns * BYTES) >> 20,
        (conns * BYTES) as f64 / 1048576.0 / moved.as_secs_f64()
    );
    // All closed (spares too: they go after a second without connects): nothing left here.
    let deadline = Instant::now() + Duration::from_secs(5);
    while (common::fd_count() > fds_before + 1 || ring_mappings() > 0) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ring_mappings(), 0, "ring mappings left");
    // The server's stdout pipe is the one extra descriptor.
    assert!(common::fd_count() <= fds_before + 1, "descriptors left");
    for _ in 0..conns {
        server.expect("ECHOED"); // the server finished every connection
    }
}
