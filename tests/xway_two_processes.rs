//! Two real processes exchanging data, over the ring and over TCP (forced), in both roles.

mod common;

use common::{pattern, tcp_only, Peer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xway_tokio::{FallbackReason, Transport, XwayListener, XwayStream};

/// Sends `data` and reads the echo concurrently, so no buffer size can deadlock the exchange.
async fn echo_round_trip(stream: &mut XwayStream, data: &[u8]) -> Vec<u8> {
    let (mut rd, mut wr) = stream.split();
    let mut got = Vec::with_capacity(data.len());
    let write = async {
        wr.write_all(data).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let read = async { rd.read_to_end(&mut got).await.unwrap() };
    tokio::join!(write, read);
    got
}

#[tokio::test]
async fn ring_carries_exact_bytes_both_ways_between_processes() {
    let mut peer = Peer::spawn(&["echo-server"]);
    let addr = peer.listening();
    let mut stream = XwayStream::connect(addr).await.unwrap();
    assert_eq!(
        stream.transport(),
        &Transport::Ring {
            provider: xway_tokio::Provider::Local
        }
    );
    assert_eq!(peer.expect("ACCEPTED"), "ring (local)");
    let data = pattern(0, 9 * 1024 * 1024 + 7); // several times the ring, odd length
    assert!(
        echo_round_trip(&mut stream, &data).await == data,
        "echoed bytes differ"
    );
    assert_eq!(peer.expect("ECHOED"), data.len().to_string());
}

#[tokio::test]
async fn many_small_messages_keep_their_order_over_the_ring() {
    let mut peer = Peer::spawn(&["echo-server"]);
    let mut stream = XwayStream::connect(peer.listening()).await.unwrap();
    assert!(stream.transport().is_ring());
    for i in 0..2000u64 {
        let msg = pattern(i, 1 + (i as usize % 97));
        stream.write_all(&msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg, "message {i}");
    }
}

#[tokio::test]
async fn ring_is_used_when_the_peer_process_is_the_client() {
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let mut peer = Peer::spawn(&["echo-client", &listener.local_addr().unwrap().to_string()]);
    let (mut stream, _) = listener.accept().await.unwrap();
    assert!(stream.transport().is_ring(), "{}", stream.transport());
    assert_eq!(peer.expect("CONNECTED"), "ring (local)");
    let data = pattern(3, 3 * 1024 * 1024);
    assert!(echo_round_trip(&mut stream, &data).await == data);
}

#[tokio::test]
async fn tcp_path_carries_exact_bytes_when_the_server_is_forced_to_tcp() {
    let mut peer = Peer::spawn_with_env(&["echo-server"], &[("XWAY_FORCE_TCP", "1")]);
    let addr = peer.listening();
    let mut stream = XwayStream::connect(addr).await.unwrap();
    assert_eq!(
        stream.transport().fallback_reason(),
        Some(&FallbackReason::NotAdvertised)
    );
    assert!(peer.expect("ACCEPTED").contains("XWAY_FORCE_TCP"));
    let data = pattern(1, 5 * 1024 * 1024 + 3);
    assert!(echo_round_trip(&mut stream, &data).await == data);
}

#[tokio::test]
async fn tcp_path_carries_exact_bytes_when_the_client_is_configured_tcp_only() {
    let mut peer = Peer::spawn(&["echo-server"]);
    let addr = peer.listening();
    let mut stream = XwayStream::connect_with(addr, &tcp_only()).await.unwrap();
    assert_eq!(
        stream.transport().fallback_reason(),
        Some(&FallbackReason::DisabledByConfig)
    );
    assert!(peer
        .expect("ACCEPTED")
        .starts_with("tcp (client made no ring offer"));
    let data = pattern(2, 2 * 1024 * 1024);
    assert!(echo_round_trip(&mut stream, &data).await == data);
}

#[tokio::test]
async fn tcp_path_when_the_peer_client_is_forced_to_tcp() {
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut peer = Peer::spawn_with_env(&["echo-client", &addr], &[("XWAY_FORCE_TCP", "1")]);
    let (mut stream, _) = listener.accept().await.unwrap();
    assert_eq!(
        stream.transport().fallback_reason(),
        Some(&FallbackReason::NoOffer)
    );
    assert!(peer.expect("CONNECTED").contains("XWAY_FORCE_TCP"));
    let data = pattern(4, 1024 * 1024);
    assert!(echo_round_trip(&mut stream, &data).await == data);
}
