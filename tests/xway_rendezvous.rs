//! The rendezvous connection a client process keeps to a listener: one for all its connects,
//! replaced when the listener goes away, and never a reason for a connect to wait.
//!
//! Descriptor counts are per process, so these tests have a test binary of their own.

mod common;

use std::time::Duration;

use common::fd_count;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xway_tokio::{XwayListener, XwayStream};

/// One byte there and back over a ring connection the listener accepted.
async fn ring_round_trip(listener: &XwayListener) {
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(XwayStream::connect(addr), listener.accept());
    let (mut client, (mut server, _)) = (client.unwrap(), server.unwrap());
    assert!(client.transport().is_ring(), "{}", client.transport());
    assert!(server.transport().is_ring(), "{}", server.transport());
    client.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    server.read_exact(&mut b).await.unwrap();
    server.write_all(&b).await.unwrap();
    client.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"x");
}

#[tokio::test]
async fn many_connects_share_one_rendezvous_connection() {
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    ring_round_trip(&listener).await;
    let after_first = fd_count();
    for _ in 0..50 {
        ring_round_trip(&listener).await;
    }
    assert_eq!(
        fd_count(),
        after_first,
        "later connects opened no descriptor that outlived them"
    );
}

#[tokio::test]
async fn a_listener_restarted_on_the_same_port_gets_rings_again() {
    let first = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let addr = first.local_addr().unwrap();
    ring_round_trip(&first).await;
    // The client's rendezvous connection now leads to a listener that is gone: the next offer
    // fails to send, and the client looks the new listener up instead of waiting for a
    // verdict that cannot come.
    drop(first);
    let second = XwayListener::bind(addr).await.unwrap();
    let started = std::time::Instant::now();
    ring_round_trip(&second).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the connect did not wait for a deadline"
    );
}

#[tokio::test]
async fn rendezvous_connections_close_once_the_process_stops_connecting() {
    let before = fd_count();
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let with_listener = fd_count();
    ring_round_trip(&listener).await;
    // The client's end closes after a second without offers; the listener closes its end when
    // it next polls for connections.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
    assert_eq!(
        fd_count(),
        with_listener,
        "only the listener's own descriptors remain"
    );
    drop(listener);
    assert_eq!(fd_count(), before);
}
