//! tokio `TcpStream` behaviours that must hold for `XwayStream` on both paths: EOF,
//! half-close, drop of either half, readiness and `try_*`, peek, vectored writes.
//!
//! Every test runs twice, over the ring and over TCP, with both ends in this process (the ring
//! path is the same as between processes; `xway_two_processes.rs` covers that).

mod common;

use std::io::{ErrorKind, IoSlice};
use std::task::Poll;
use std::time::Duration;

use common::{pair, pattern};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio_test::{assert_pending, assert_ready, task};

macro_rules! both_paths {
    ($($name:ident),* $(,)?) => {
        mod ring { $( #[tokio::test] async fn $name() { super::$name(true).await } )* }
        mod tcp { $( #[tokio::test] async fn $name() { super::$name(false).await } )* }
    };
}

both_paths!(
    read_returns_zero_after_peer_shutdown_and_every_byte,
    half_close_leaves_the_other_direction_open,
    shutdown_is_idempotent,
    write_after_own_shutdown_is_broken_pipe,
    dropping_the_peer_gives_eof_to_reads,
    writes_to_a_dropped_peer_fail,
    dropping_owned_write_half_shuts_down_writing,
    forgotten_write_half_does_not_shut_down,
    reunite_gives_back_the_stream_and_rejects_strangers,
    try_read_would_block_until_data_arrives,
    readable_is_pending_until_data_then_ready,
    try_write_fills_then_would_block_then_writable_after_drain,
    ready_reports_read_closed_at_eof,
    peek_does_not_consume,
    vectored_write_gathers_all_slices,
    writes_larger_than_the_buffers_reach_a_slow_reader_whole,
    borrowed_split_halves_work_concurrently,
    set_nodelay_and_addresses_work,
);

async fn read_returns_zero_after_peer_shutdown_and_every_byte(ring: bool) {
    let (mut c, mut s) = pair(ring).await;
    c.write_all(b"last words").await.unwrap();
    c.shutdown().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last words");
    assert_eq!(s.read(&mut [0u8; 8]).await.unwrap(), 0, "EOF is sticky");
}

async fn half_close_leaves_the_other_direction_open(ring: bool) {
    let (mut c, mut s) = pair(ring).await;
    c.shutdown().await.unwrap();
    assert_eq!(s.read(&mut [0u8; 8]).await.unwrap(), 0);
    s.write_all(b"still talking").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"still talking");
}

async fn shutdown_is_idempotent(ring: bool) {
    let (mut c, _s) = pair(ring).await;
    for _ in 0..3 {
        c.shutdown().await.unwrap();
    }
}

async fn write_after_own_shutdown_is_broken_pipe(ring: bool) {
    let (mut c, _s) = pair(ring).await;
    c.shutdown().await.unwrap();
    let err = c.write_all(b"x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
}

async fn dropping_the_peer_gives_eof_to_reads(ring: bool) {
    let (mut c, mut s) = pair(ring).await;
    s.write_all(b"bye").await.unwrap();
    drop(s);
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"bye");
}

async fn writes_to_a_dropped_peer_fail(ring: bool) {
    let (mut c, s) = pair(ring).await;
    drop(s);
    let chunk = vec![7u8; 64 * 1024];
    let res = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Err(e) = c.write_all(&chunk).await {
                return e;
            }
        }
    })
    .await
    .expect("writing to a dropped peer must fail, not hang");
    assert!(
        matches!(
            res.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
        ),
        "{res}"
    );
}

async fn dropping_owned_write_half_shuts_down_writing(ring: bool) {
    let (c, mut s) = pair(ring).await;
    let (_rd, mut wr) = c.into_split();
    wr.write_all(b"half").await.unwrap();
    drop(wr);
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"half");
}

async fn forgotten_write_half_does_not_shut_down(ring: bool) {
    let (c, mut s) = pair(ring).await;
    let (rd, wr) = c.into_split();
    wr.forget();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
    assert!(
        read.is_err(),
        "no EOF may arrive while the read half lives: {read:?}"
    );
    drop(rd);
}

async fn reunite_gives_back_the_stream_and_rejects_strangers(ring: bool) {
    let (c1, _s1) = pair(ring).await;
    let (c2, _s2) = pair(ring).await;
    let (r1, w1) = c1.into_split();
    let (r2, w2) = c2.into_split();
    let err = r1.reunite(w2).unwrap_err();
    let (r1, w2) = (err.0, err.1);
    let c1 = r1.reunite(w1).expect("same stream");
    assert_eq!(c1.transport().is_ring(), ring);
    let _ = w2.reunite(r2).expect("same stream");
}

async fn try_read_would_block_until_data_arrives(ring: bool) {
    let (c, s) = pair(ring).await;
    let mut buf = [0u8; 16];
    assert_eq!(
        s.try_read(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    c.try_write(b"now").unwrap();
    let n = loop {
        s.readable().await.unwrap();
        match s.try_read(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(&buf[..n], b"now");
}

async fn readable_is_pending_until_data_then_ready(ring: bool) {
    let (c, s) = pair(ring).await;
    // Readiness may be reported spuriously (tokio's rule); a WouldBlock clears it.
    assert_eq!(
        s.try_read(&mut [0u8; 1]).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    let mut readable = task::spawn(s.readable());
    assert_pending!(readable.poll());
    c.try_write(b"x").unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !readable.is_woken() {
            // Sleeping (not yielding) lets the current-thread runtime poll its I/O driver.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the readable future must be woken");
    assert_ready!(readable.poll()).unwrap();
}

async fn try_write_fills_then_would_block_then_writable_after_drain(ring: bool) {
    let (c, mut s) = pair(ring).await;
    let chunk = vec![1u8; 64 * 1024];
    let mut written = 0usize;
    loop {
        match c.try_write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(written < 1 << 30, "never filled");
    }
    let mut writable = task::spawn(c.writable());
    assert_pending!(writable.poll());
    let mut buf = vec![0u8; 256 * 1024];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Poll::Ready(r) = writable.poll() {
                return r;
            }
            // Drain what is there; a short timeout, because TCP may have delivered everything
            // before the writer's readiness comes back.
            let _ = tokio::time::timeout(Duration::from_millis(10), s.read(&mut buf)).await;
        }
    })
    .await
    .expect("writable after the reader drains")
    .unwrap();
    assert!(c.try_write(&chunk).unwrap() > 0);
}

async fn ready_reports_read_closed_at_eof(ring: bool) {
    let (mut c, s) = pair(ring).await;
    c.shutdown().await.unwrap();
    let ready = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = s.ready(Interest::READABLE).await.unwrap();
            if r.is_read_closed() {
                return r;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("read-closed readiness");
    assert!(ready.is_readable());
    assert_eq!(s.try_read(&mut [0u8; 4]).unwrap(), 0);
}

async fn peek_does_not_consume(ring: bool) {
    let (mut c, mut s) = pair(ring).await;
    c.write_all(b"abcdef").await.unwrap();
    let mut p = [0u8; 3];
    let n = s.peek(&mut p).await.unwrap();
    assert!(n >= 1 && p[..n] == b"abc"[..n]);
    let mut all = [0u8; 6];
    s.read_exact(&mut all).await.unwrap();
    assert_eq!(&all, b"abcdef");
}

async fn vectored_write_gathers_all_slices(ring: bool) {
    let (mut c, mut s) = pair(ring).await;
    assert!(c.is_write_vectored());
    let parts = [IoSlice::new(b"ab"), IoSlice::new(b""), IoSlice::new(b"cde")];
    let n = c.write_vectored(&parts).await.unwrap();
    if ring {
        assert_eq!(n, 5, "the ring gathers every slice in one write");
    }
    c.write_all(&b"abcde"[n..]).await.unwrap();
    let mut got = [0u8; 5];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"abcde");
}

async fn writes_larger_than_the_buffers_reach_a_slow_reader_whole(ring: bool) {
    // Every write takes part of what it is offered and then waits for room (on TCP, a send
    // that took less than offered clears the write readiness at once, as tokio's own stream
    // does): nothing may be lost, repeated or left waiting.
    let (mut c, mut s) = pair(ring).await;
    const TOTAL: usize = 24 << 20;
    let data = pattern(0, TOTAL);
    let writer = async {
        for piece in data.chunks(3 << 20) {
            let (a, b) = piece.split_at(piece.len() / 3);
            let mut parts = [IoSlice::new(a), IoSlice::new(b)];
            let mut parts = &mut parts[..];
            while !parts.is_empty() {
                let n = c.write_vectored(parts).await.unwrap();
                IoSlice::advance_slices(&mut parts, n);
            }
        }
        c.shutdown().await.unwrap();
    };
    let reader = async {
        let mut got = Vec::with_capacity(TOTAL);
        let mut buf = vec![0u8; 7 * 1024];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() % 5 == 0 {
                tokio::task::yield_now().await;
            }
        }
    };
    let ((), got) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("no hang");
    assert!(
        got == data,
        "{} bytes of {TOTAL} arrived, not all in order",
        got.len()
    );
}

async fn borrowed_split_halves_work_concurrently(ring: bool) {
    let (mut c, mut s) = pair(ring).await;
    let data = pattern(0, 3 << 20);
    let server = async {
        let (mut rd, mut wr) = s.split();
        tokio::io::copy(&mut rd, &mut wr).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let client = async {
        let (mut rd, mut wr) = c.split();
        let mut got = Vec::new();
        let w = async {
            wr.write_all(&data).await.unwrap();
            wr.shutdown().await.unwrap();
        };
        let r = async { rd.read_to_end(&mut got).await.unwrap() };
        tokio::join!(w, r);
        got
    };
    let ((), got) = tokio::join!(server, client);
    assert!(got == data);
}

async fn set_nodelay_and_addresses_work(ring: bool) {
    let (c, s) = pair(ring).await;
    c.set_nodelay(true).unwrap();
    assert!(c.nodelay().unwrap());
    assert_eq!(c.local_addr().unwrap(), s.peer_addr().unwrap());
    assert_eq!(c.peer_addr().unwrap(), s.local_addr().unwrap());
    assert_eq!(
        c.into_std().is_ok(),
        !ring,
        "a ring stream cannot become a std socket"
    );
}
