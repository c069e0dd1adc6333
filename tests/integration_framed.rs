//! tokio-util's `Framed`/`FramedRead`/`FramedWrite` over `XwayStream` between two processes:
//! nothing in xway-tokio is specific to tokio-util, so this proves that `AsyncRead` +
//! `AsyncWrite` (and the owned split halves) are all a codec needs.

mod integration_support;

use futures_util::{SinkExt, StreamExt};
use integration_support::run_role_if_child;
use tokio_util::codec::{Framed, FramedRead, FramedWrite, LinesCodec};
use xway_tokio::{FallbackReason, XwayListener, XwayStream};

const MAX_LINE: usize = 16 << 20;

/// Not a test: the entry point of the child processes (see `integration_support`).
#[test]
fn child_process_role() {
    run_role_if_child(|role| async move {
        assert_eq!(role, "lines-server");
        // Answers each line with its upper-case form, as `examples/framed_lines.rs` does.
        let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
        println!("LISTENING {}", listener.local_addr().unwrap());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            println!("ACCEPTED {}", stream.transport());
            tokio::spawn(async move {
                let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE));
                while let Some(Ok(line)) = lines.next().await {
                    lines.send(line.to_uppercase()).await.unwrap();
                }
            });
        }
    });
}

/// Line `i` of the test: mostly short, every 250th larger than a ring.
fn line(i: usize) -> String {
    let len = if i % 250 == 249 { 3 << 20 } else { i % 300 };
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    (0..len)
        .map(|j| letters[(i + j) % letters.len()] as char)
        .collect()
}

/// Sends `count` lines through owned halves while reading the answers, so neither side waits
/// for the other; checks every answer.
async fn pipeline(stream: XwayStream, count: usize) {
    let (rd, wr) = stream.into_split();
    let mut answers = FramedRead::new(rd, LinesCodec::new_with_max_length(MAX_LINE));
    let mut requests = FramedWrite::new(wr, LinesCodec::new_with_max_length(MAX_LINE));
    let send = async move {
        for i in 0..count {
            requests.send(line(i)).await.unwrap();
        }
        requests
    };
    let check = async move {
        for i in 0..count {
            let answer = answers.next().await.expect("an answer per line").unwrap();
            assert!(answer == line(i).to_uppercase(), "answer {i} differs");
        }
    };
    let (_requests, ()) = tokio::join!(send, check);
}

#[tokio::test]
async fn framed_lines_cross_processes_over_the_ring_in_both_directions_at_once() {
    let mut server = integration_support::spawn_role("lines-server", &[]);
    let stream = XwayStream::connect(server.listening()).await.unwrap();
    assert!(stream.transport().is_ring(), "{}", stream.transport());
    assert_eq!(server.expect("ACCEPTED"), "ring (local)");
    pipeline(stream, 2000).await;
}

#[tokio::test]
async fn framed_request_response_works_line_by_line_over_the_ring() {
    let mut server = integration_support::spawn_role("lines-server", &[]);
    let stream = XwayStream::connect(server.listening()).await.unwrap();
    assert!(stream.transport().is_ring());
    let mut framed = Framed::new(stream, LinesCodec::new());
    for word in ["hello", "déjà vu", "", "xway"] {
        framed.send(word).await.unwrap();
        assert_eq!(framed.next().await.unwrap().unwrap(), word.to_uppercase());
    }
}

#[tokio::test]
async fn framed_lines_work_over_tcp_when_the_server_process_is_forced_to_tcp() {
    let mut server = integration_support::spawn_role("lines-server", &[("XWAY_FORCE_TCP", "1")]);
    let stream = XwayStream::connect(server.listening()).await.unwrap();
    assert_eq!(
        stream.transport().fallback_reason(),
        Some(&FallbackReason::NotAdvertised)
    );
    pipeline(stream, 600).await;
}
