//! Invariant I4: offers that a client abandoned (its listener was slow to accept) release their
//! descriptors on the listener side.
//!
//! Descriptor counts are per process, so each resource test has a test binary of its own.

mod common;

use common::fd_count;
use xway_tokio::{XwayListener, XwayStream};

#[tokio::test]
async fn abandoned_offers_release_their_descriptors() {
    use std::time::Duration;
    use xway_tokio::XwayConfig;
    // A listener whose application never calls accept: clients abandon their offers.
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = XwayConfig::builder()
        .rendezvous_timeout(Duration::from_millis(20))
        .build();
    // A first connect opens this process's rendezvous connection to the listener (both of its
    // ends are in this process); it stays open for the next connects and is not an offer's.
    let first = XwayStream::connect_with(addr, &config).await.unwrap();
    drop(listener.accept().await.unwrap());
    drop(first);
    let before = fd_count();

    for _ in 0..20 {
        let c = XwayStream::connect_with(addr, &config).await.unwrap();
        assert_eq!(
            c.transport().fallback_reason(),
            Some(&xway_tokio::FallbackReason::RendezvousTimeout)
        );
    }
    // Now accept them all: each offer is found abandoned, and its descriptors are closed.
    for _ in 0..20 {
        let (s, _) = listener.accept().await.unwrap();
        assert_eq!(
            s.transport().fallback_reason(),
            Some(&xway_tokio::FallbackReason::ClientAbandoned)
        );
    }
    // At most one fewer: a connect binds the socket of the next one to the same listener
    // ahead (while it waits for its claim), and the last of these connects may not have.
    let after = fd_count();
    assert!(
        after <= before && before - after <= 1,
        "every offer's descriptors were closed: {before} before, {after} after"
    );
}
