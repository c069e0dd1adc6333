//! Invariant I4: descriptors and mappings are released on every path. 1,000 ring
//! connect/close cycles leave the process where it started.
//!
//! Descriptor counts are per process, so each resource test has a test binary of its own.

mod common;

use common::{fd_count, mapping_count};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xway_tokio::{XwayListener, XwayStream};

#[tokio::test]
async fn thousand_ring_connect_close_cycles_leak_no_fds_or_mappings() {
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
        }
    });
    // Warm up lazily created runtime and allocator state before taking the baseline.
    for _ in 0..20 {
        cycle(addr).await;
    }
    let (fds, maps) = (fd_count(), mapping_count());
    for _ in 0..1000 {
        cycle(addr).await;
    }
    // Let the server task finish dropping the last connection.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(fd_count(), fds, "descriptors leaked");
    let now = mapping_count();
    assert!(now <= maps + 2, "mappings grew from {maps} to {now}"); // allocator arenas may add one
                                                                    // Release everything before the next test takes its turn.
    server.abort();
    let _ = server.await;
}

async fn cycle(addr: std::net::SocketAddr) {
    let mut c = XwayStream::connect(addr).await.unwrap();
    assert!(c.transport().is_ring());
    c.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).await.unwrap();
}
