//! Invariant I4 under churn: 10,000 ring connect/close cycles (both ends in this process, so
//! both ends' resources are counted) leave descriptors, ring mappings, all mappings and RSS at
//! their baseline. The figures are printed (`--nocapture`) for docs/robustness.md.
//!
//! Descriptor counts are per process: this binary has a single test.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xway_tokio::{XwayConfig, XwayListener, XwayStream};

#[derive(Debug, Clone, Copy)]
struct Census {
    fds: usize,
    rings: usize,
    maps: usize,
    rss_kib: u64,
}

fn census() -> Census {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    Census {
        fds: std::fs::read_dir("/proc/self/fd").unwrap().count(),
        rings: maps.lines().filter(|l| l.contains("xway-ring")).count(),
        maps: maps.lines().count(),
        rss_kib,
    }
}

async fn cycle(addr: std::net::SocketAddr, config: &XwayConfig) {
    let mut c = XwayStream::connect_with(addr, config).await.unwrap();
    assert!(c.transport().is_ring(), "{}", c.transport());
    c.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).await.unwrap();
}

#[tokio::test]
async fn ten_thousand_ring_connect_close_cycles_stay_at_baseline() {
    let cycles: usize = std::env::var("XWAY_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    // A 64 KiB ring: every cycle touches its control page and one data page per direction.
    let config = XwayConfig::builder().ring_size(64 << 10).build();
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            assert!(s.transport().is_ring(), "{}", s.transport());
            let mut b = [0u8; 1];
            if s.read(&mut b).await.unwrap() == 1 {
                s.write_all(&b).await.unwrap();
            }
            // Wait for the client's close, so that both ends are gone before the next cycle.
            let _ = s.read(&mut b).await;
        }
    });
    // Warm up lazily created runtime and allocator state before taking the baseline.
    for _ in 0..200 {
        cycle(addr, &config).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let base = census();
    let started = Instant::now();
    let mut peak = base;
    for i in 0..cycles {
        cycle(addr, &config).await;
        if i % 1000 == 999 {
            let c = census();
            peak.fds = peak.fds.max(c.fds);
            peak.rings = peak.rings.max(c.rings);
            peak.maps = peak.maps.max(c.maps);
            peak.rss_kib = peak.rss_kib.max(c.rss_kib);
        }
    }
    let took = started.elapsed();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let end = census();
    eprintln!(
        "{cycles} cycles in {took:?} ({:.0}/s): baseline {base:?}, peak {peak:?}, end {end:?}",
        cycles as f64 / took.as_secs_f64()
    );
    assert_eq!(end.fds, base.fds, "descriptors leaked");
    // Both sides keep the rings of a few finished connections for the next ones (and the
    // client a few spares): as many after the cycles as before them.
    assert!(
        end.rings <= base.rings,
        "ring mappings leaked: {} before, {} after",
        base.rings,
        end.rings
    );
    assert!(
        end.maps <= base.maps + 4,
        "mappings grew from {} to {}",
        base.maps,
        end.maps
    );
    // RSS: allocator noise only (a leaked ring would be >= 132 KiB each, 10,000 of them).
    assert!(
        end.rss_kib <= base.rss_kib + 8 * 1024,
        "RSS grew from {} KiB to {} KiB",
        base.rss_kib,
        end.rss_kib
    );
    server.abort();
    let _ = server.await;
}
