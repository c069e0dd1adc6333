//! `XwayListener::accept` from several tasks at once, as `TcpListener::accept` allows: every
//! waiting task is woken for the connections that arrive, none is left waiting while a
//! connection is queued.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::tcp_only;
use xway_tokio::{XwayConfig, XwayListener, XwayStream};

/// Two tasks wait in `accept` on one listener; the one that polled last takes the first
/// connection and stops. The second connection must reach the task that polled first.
async fn a_task_that_polled_first_still_gets_a_connection(config: XwayConfig) {
    let listener = Arc::new(
        XwayListener::bind_with("127.0.0.1:0", config.clone())
            .await
            .unwrap(),
    );
    let addr = listener.local_addr().unwrap();
    let first = tokio::spawn({
        let listener = listener.clone();
        async move { listener.accept().await.map(|(s, _)| s) }
    });
    // Let the first task register before the second.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn({
        let listener = listener.clone();
        async move { listener.accept().await.map(|(s, _)| s) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let _c1 = XwayStream::connect_with(addr, &config).await.unwrap();
    let _c2 = XwayStream::connect_with(addr, &config).await.unwrap();
    let both = tokio::time::timeout(Duration::from_secs(5), async {
        (first.await.unwrap(), second.await.unwrap())
    })
    .await
    .expect("both accepting tasks got a connection");
    both.0.unwrap();
    both.1.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_accepts_each_get_a_connection_on_tcp() {
    a_task_that_polled_first_still_gets_a_connection(tcp_only()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_accepts_each_get_a_connection_on_the_ring() {
    a_task_that_polled_first_still_gets_a_connection(XwayConfig::default()).await;
}

#[tokio::test]
async fn concurrent_accepts_each_get_a_connection_on_one_thread() {
    a_task_that_polled_first_still_gets_a_connection(XwayConfig::default()).await;
}
