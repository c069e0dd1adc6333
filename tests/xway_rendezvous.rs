//! The rendezvous connection a client process keeps to a listener: one for all its connects,
//! replaced when the listener goes away, and never a reason for a connect to wait.
//!
//! Descriptor counts are per process, so these tests have a test binary of their own and run
//! one at a time (`cargo test` runs a binary's tests on threads of one process).

mod common;

use std::os::linux::net::SocketAddrExt;
use std::time::Duration;

use common::fd_count;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xway_tokio::{XwayListener, XwayStream};

/// Held by every test of this file for its whole run.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    ring_round_trip(&listener).await;
    let after_first = fd_count();
    for _ in 0..50 {
        ring_round_trip(&listener).await;
    }
    // At most: what earlier tests of this process left may be closed meanwhile.
    assert!(
        fd_count() <= after_first,
        "later connects opened no descriptor that outlived them"
    );
}

#[tokio::test]
async fn a_listener_restarted_on_the_same_port_gets_rings_again() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
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
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let before = fd_count();
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let with_listener = fd_count();
    ring_round_trip(&listener).await;
    // The client's end closes after a second without offers; the listener closes its end when
    // it next polls for connections.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
    assert!(
        fd_count() <= with_listener,
        "only the listener's own descriptors remain"
    );
    drop(listener);
    assert!(fd_count() <= before);
}

#[tokio::test]
async fn each_connect_checks_the_listeners_user_even_on_a_kept_connection() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    ring_round_trip(&listener).await;
    // The rendezvous connection is kept, but this connect's policy excludes the listener's
    // user (ours): no offer may be sent.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let someone_else = unsafe { libc::geteuid() }.wrapping_add(1);
    let config = xway_tokio::XwayConfig::builder()
        .uid_policy(xway_tokio::UidPolicy::Allow(vec![someone_else]))
        .build();
    let (client, server) = tokio::join!(XwayStream::connect_with(addr, &config), listener.accept());
    let (client, (server, _)) = (client.unwrap(), server.unwrap());
    assert!(
        matches!(
            client.transport().fallback_reason(),
            Some(xway_tokio::FallbackReason::PeerUidRejected { .. })
        ),
        "{}",
        client.transport()
    );
    assert!(!server.transport().is_ring());
}

#[tokio::test]
async fn a_rendezvous_connection_closed_for_room_loses_no_offer() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    ring_round_trip(&listener).await;
    // Fill the listener's table of rendezvous connections (256) with idle ones, newer than ours.
    let name = format!("xway/3/127.0.0.1/{}", addr.port());
    let connect_raw = || {
        std::os::unix::net::UnixStream::connect_addr(
            &std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let mut idle: Vec<_> = (0..255).map(|_| connect_raw()).collect();
    let _ = tokio::time::timeout(Duration::from_millis(20), listener.accept()).await;
    // One more arrives, then our offer: the listener meets both in one round, and making room
    // for the newcomer closes our connection, the least recently used, with the offer queued.
    idle.push(connect_raw());
    let config = xway_tokio::XwayConfig::builder()
        .rendezvous_timeout(Duration::from_secs(5))
        .build();
    let started = std::time::Instant::now();
    let (client, server) = tokio::join!(XwayStream::connect_with(addr, &config), listener.accept());
    let (client, (server, _)) = (client.unwrap(), server.unwrap());
    assert!(client.transport().is_ring(), "{}", client.transport());
    assert!(server.transport().is_ring(), "{}", server.transport());
    assert!(started.elapsed() < Duration::from_secs(1));
    // And the next connect, whose kept connection is now closed, finds the listener again.
    drop(client);
    drop(server);
    ring_round_trip(&listener).await;
}
