//! A peer killed with SIGKILL mid-transfer: the survivor gets every byte the peer's stream
//! accepted before the kill, then EOF or `ConnectionReset`, within a second (invariant I4).

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::{pattern, Peer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xway_tokio::{XwayListener, XwayStream};

/// How long after a kill the survivor must have noticed.
const NOTICE: Duration = Duration::from_secs(1);

/// The peer writes the test pattern and reports each chunk the stream accepted; we read part of
/// it, kill the peer, then read to the end.
async fn killed_writer(kill_after: usize) {
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut peer = Peer::spawn(&["source", &addr, "--chunk", "32768"]);
    let (mut stream, _) = listener.accept().await.unwrap();
    assert!(stream.transport().is_ring(), "{}", stream.transport());
    let mut received = Vec::new();
    let mut buf = vec![0u8; 8192];
    while received.len() < kill_after {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "EOF before the kill");
        received.extend_from_slice(&buf[..n]);
    }
    peer.kill9();
    let killed_at = Instant::now();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("hang after kill")
        {
            Ok(0) => break Ok(()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    let noticed = killed_at.elapsed();
    if let Err(e) = &end {
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    }
    assert!(noticed < NOTICE, "noticed the death after {noticed:?}");
    // Every byte the peer reported as written (its stream accepted them) has arrived, in order.
    let reported: u64 = peer
        .drain()
        .iter()
        .filter_map(|l| l.strip_prefix("WROTE ").and_then(|n| n.parse().ok()))
        .max()
        .unwrap_or(0);
    assert!(
        received.len() as u64 >= reported,
        "lost bytes: got {}, peer wrote {reported}",
        received.len()
    );
    assert!(
        received == pattern(0, received.len()),
        "received bytes are not the pattern"
    );
}

#[tokio::test]
async fn reader_gets_all_bytes_then_reset_when_writer_is_killed_early() {
    killed_writer(1).await;
}

#[tokio::test]
async fn reader_gets_all_bytes_then_reset_when_writer_is_killed_mid_stream() {
    killed_writer(5 << 20).await;
}

#[tokio::test]
async fn writer_gets_an_error_promptly_when_the_reader_is_killed() {
    let mut peer = Peer::spawn(&["sink-server"]);
    let addr = peer.listening();
    let mut stream = XwayStream::connect(addr).await.unwrap();
    assert!(stream.transport().is_ring());
    let chunk = pattern(0, 1 << 16);
    for _ in 0..64 {
        stream.write_all(&chunk).await.unwrap();
    }
    peer.kill9();
    let killed_at = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(e) = stream.write_all(&chunk).await {
                return e;
            }
        }
    })
    .await
    .expect("writes to a killed reader must fail, not hang");
    assert!(
        killed_at.elapsed() < NOTICE,
        "noticed after {:?}",
        killed_at.elapsed()
    );
    assert!(
        matches!(
            err.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
        ),
        "{err}"
    );
}

#[tokio::test]
async fn idle_reader_notices_a_killed_peer() {
    let mut peer = Peer::spawn(&["echo-server"]);
    let mut stream = XwayStream::connect(peer.listening()).await.unwrap();
    assert!(stream.transport().is_ring());
    stream.write_all(b"ping").await.unwrap();
    let mut four = [0u8; 4];
    stream.read_exact(&mut four).await.unwrap();
    peer.kill9();
    let killed_at = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut four))
        .await
        .expect("hang");
    assert!(killed_at.elapsed() < NOTICE);
    match res {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
}
