//! Unit, property and hostile-peer tests of the ring core. Single-threaded: the "peer" is the
//! other endpoint of the same region, or the test poking control words directly.

use super::layout::{Layout, C2S_CONTROL, CONS, CONS_FLAGS, NOTIFY, PROD, PROD_FLAGS};
use super::*;
use proptest::prelude::*;
use std::collections::VecDeque;
use std::sync::Arc;

fn pair(order: u32) -> (Producer, Consumer, Region) {
    let layout = Layout::symmetric(order).unwrap();
    let region = Region::new(HeapMemory::new(layout.region_len()));
    let (tx, _) = endpoints(region.clone(), layout, Role::Client);
    let (_, rx) = endpoints(region.clone(), layout, Role::Server);
    (tx, rx, region)
}

fn read_all(rx: &mut Consumer) -> Vec<u8> {
    let mut out = vec![0u8; 1 << 16];
    match rx.read(&mut out).unwrap() {
        Read::Data { bytes, .. } => out.truncate(bytes),
        other => panic!("expected data, got {other:?}"),
    }
    out
}

#[test]
fn bytes_arrive_in_order_across_the_wrap() {
    let (mut tx, mut rx, _) = pair(12);
    let chunk: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    for _ in 0..10 {
        assert_eq!(tx.write(&[&chunk]).unwrap().bytes, 3000);
        assert_eq!(read_all(&mut rx), chunk);
    }
}

#[test]
fn byte_totals_keep_counting_past_4_gib() {
    let (mut tx, mut rx, region) = pair(12);
    // Both ends 100 bytes short of 4 GiB, as after a long connection.
    let start = u32::MAX - 99;
    tx.prod = start;
    tx.total = u64::from(start);
    rx.cons = start;
    rx.total = u64::from(start);
    region.store(C2S_CONTROL + PROD, start, Relaxed);
    region.store(C2S_CONTROL + CONS, start, Relaxed);
    assert_eq!(tx.write(&[&[7u8; 300]]).unwrap().bytes, 300);
    assert_eq!(tx.published(), (1 << 32) + 200);
    assert_eq!(rx.seen(), (1 << 32) + 200, "seen: consumed plus waiting");
    let mut b = [0u8; 300];
    assert!(matches!(
        rx.read(&mut b).unwrap(),
        Read::Data { bytes: 300, .. }
    ));
    assert_eq!(rx.seen(), (1 << 32) + 200);
}

#[test]
fn full_ring_accepts_nothing_until_read() {
    let (mut tx, mut rx, _) = pair(12);
    assert_eq!(tx.write(&[&[1u8; 5000]]).unwrap().bytes, 4096);
    assert_eq!(
        tx.write(&[b"x"]).unwrap(),
        Written {
            bytes: 0,
            wake_peer: false
        }
    );
    assert_eq!(tx.free_space().unwrap(), 0);
    let mut b = [0u8; 100];
    assert!(matches!(
        rx.read(&mut b).unwrap(),
        Read::Data { bytes: 100, .. }
    ));
    assert_eq!(tx.write(&[&[2u8; 200]]).unwrap().bytes, 100);
}

#[test]
fn vectored_write_gathers_slices_in_one_publish() {
    let (mut tx, mut rx, region) = pair(12);
    let w = tx.write(&[b"ab", b"", b"cde", b"f"]).unwrap();
    assert_eq!(w.bytes, 6);
    assert_eq!(region.load(C2S_CONTROL + PROD, Relaxed), 6);
    assert_eq!(read_all(&mut rx), b"abcdef");
}

#[test]
fn peek_does_not_consume() {
    let (mut tx, mut rx, _) = pair(12);
    tx.write(&[b"hello"]).unwrap();
    let mut b = [0u8; 3];
    assert!(matches!(
        rx.peek(&mut b).unwrap(),
        Read::Data { bytes: 3, .. }
    ));
    assert_eq!(&b, b"hel");
    assert_eq!(read_all(&mut rx), b"hello");
    assert_eq!(rx.peek(&mut b).unwrap(), Read::Empty);
}

#[test]
fn close_is_seen_after_the_last_byte() {
    let (mut tx, mut rx, _) = pair(12);
    tx.write(&[b"last"]).unwrap();
    assert!(tx.close());
    assert!(!tx.close(), "close is idempotent");
    assert_eq!(read_all(&mut rx), b"last");
    assert_eq!(rx.read(&mut [0u8; 8]).unwrap(), Read::Closed);
    assert_eq!(rx.read(&mut [0u8; 8]).unwrap(), Read::Closed);
}

#[test]
fn abort_is_reported_after_published_bytes() {
    let (mut tx, mut rx, _) = pair(12);
    tx.write(&[b"partial"]).unwrap();
    tx.abort();
    assert_eq!(read_all(&mut rx), b"partial");
    assert_eq!(rx.read(&mut [0u8; 8]).unwrap(), Read::Aborted);
}

#[test]
fn reader_gone_is_visible_to_the_writer() {
    let (tx, mut rx, _) = pair(12);
    assert_eq!(tx.reader(), PeerReader::Open);
    rx.close();
    assert_eq!(tx.reader(), PeerReader::Gone);
    rx.abort();
    assert_eq!(tx.reader(), PeerReader::Aborted);
}

#[test]
fn sleeping_reader_is_woken_exactly_once() {
    let (mut tx, mut rx, _) = pair(12);
    assert!(rx.prepare_wait().unwrap(), "empty ring: may sleep");
    let w = tx.write(&[b"x"]).unwrap();
    assert!(w.wake_peer, "reader asked for a bell");
    assert!(
        !tx.write(&[b"y"]).unwrap().wake_peer,
        "request was consumed"
    );
    assert_eq!(read_all(&mut rx), b"xy");
}

#[test]
fn no_bell_when_nobody_sleeps() {
    let (mut tx, mut rx, _) = pair(12);
    assert!(!tx.write(&[b"x"]).unwrap().wake_peer);
    assert!(matches!(
        rx.read(&mut [0u8; 4]).unwrap(),
        Read::Data {
            wake_peer: false,
            ..
        }
    ));
}

#[test]
fn prepare_wait_sees_data_published_before_it_and_withdraws() {
    let (mut tx, rx, region) = pair(12);
    tx.write(&[b"x"]).unwrap();
    assert!(!rx.prepare_wait().unwrap());
    assert_eq!(
        region.load(C2S_CONTROL + NOTIFY, Relaxed) & notify::DATA_WANTED,
        0
    );
}

#[test]
fn sleeping_writer_is_woken_once_half_the_ring_is_free() {
    let (mut tx, mut rx, _) = pair(12);
    tx.write(&[&[0u8; 4096]]).unwrap();
    assert!(tx.prepare_wait().unwrap(), "full ring: may sleep");
    let mut buf = [0u8; 2048];
    assert_eq!(
        rx.read(&mut buf[..2047]).unwrap(),
        Read::Data {
            bytes: 2047,
            wake_peer: false
        },
        "less than half free: no doorbell yet"
    );
    assert_eq!(
        rx.read(&mut buf[..1]).unwrap(),
        Read::Data {
            bytes: 1,
            wake_peer: true
        }
    );
    assert!(!tx.prepare_wait().unwrap(), "space now");
}

#[test]
fn emptying_the_ring_always_wakes_a_sleeping_writer() {
    let (mut tx, mut rx, _) = pair(12);
    tx.write(&[&[0u8; 4096]]).unwrap();
    rx.read(&mut [0u8; 4000]).unwrap();
    tx.write(&[&[0u8; 4000]]).unwrap();
    assert!(tx.prepare_wait().unwrap());
    // The reader drains everything in one read: far more than half is free.
    assert_eq!(
        rx.read(&mut [0u8; 8192]).unwrap(),
        Read::Data {
            bytes: 4096,
            wake_peer: true
        }
    );
}

#[test]
fn writer_does_not_sleep_on_a_reader_that_is_gone() {
    let (mut tx, mut rx, _) = pair(12);
    tx.write(&[&[0u8; 4096]]).unwrap();
    rx.close();
    assert!(!tx.prepare_wait().unwrap());
}

// ---- hostile peer ----------------------------------------------------------------------------

#[test]
fn producer_index_beyond_ring_size_is_an_error_not_a_read() {
    let (_tx, mut rx, region) = pair(12);
    region.store(C2S_CONTROL + PROD, 4097, Relaxed);
    let err = rx.read(&mut [0u8; 16]).unwrap_err();
    assert_eq!(err.what, "producer index");
    assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidData);
    assert!(rx.peek(&mut [0u8; 1]).is_err());
    assert!(rx.prepare_wait().is_err());
}

#[test]
fn producer_index_going_backwards_is_an_error() {
    let (mut tx, mut rx, region) = pair(12);
    tx.write(&[b"abc"]).unwrap();
    read_all(&mut rx);
    region.store(C2S_CONTROL + PROD, 1, Relaxed); // behind our consumer index of 3
    assert!(rx.read(&mut [0u8; 16]).is_err());
}

#[test]
fn consumer_index_ahead_of_producer_is_an_error() {
    let (mut tx, _rx, region) = pair(12);
    tx.write(&[b"abc"]).unwrap();
    region.store(C2S_CONTROL + CONS, 10, Relaxed);
    let err = tx.write(&[b"x"]).unwrap_err();
    assert_eq!(err.what, "consumer index");
    assert!(tx.free_space().is_err());
}

#[test]
fn peer_cannot_move_our_own_counters() {
    let (mut tx, mut rx, region) = pair(12);
    tx.write(&[b"abcd"]).unwrap();
    // The peer rewrites the fields that belong to us; we never read them back.
    region.store(C2S_CONTROL + CONS, 2, Relaxed); // consumer field, as the producer would see it
    assert_eq!(tx.free_space().unwrap(), 4096 - 2); // only the producer is misled, within bounds
    let mut b = [0u8; 8];
    assert!(matches!(
        rx.read(&mut b).unwrap(),
        Read::Data { bytes: 4, .. }
    ));
    assert_eq!(&b[..4], b"abcd");
}

#[test]
fn stray_flags_are_only_hints() {
    let (mut tx, mut rx, region) = pair(12);
    region.store(C2S_CONTROL + NOTIFY, u32::MAX, Relaxed);
    region.store(C2S_CONTROL + CONS_FLAGS, 0xffff_fff0, Relaxed);
    assert!(tx.write(&[b"x"]).unwrap().wake_peer);
    region.store(C2S_CONTROL + PROD_FLAGS, 0xffff_fff0, Relaxed);
    assert!(matches!(
        rx.read(&mut [0u8; 4]).unwrap(),
        Read::Data { bytes: 1, .. }
    ));
    assert_eq!(rx.read(&mut [0u8; 4]).unwrap(), Read::Empty);
}

// ---- properties ------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<usize>),
    Read(usize),
    Peek(usize),
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0usize..3000, 0..4).prop_map(Op::Write),
        4 => (0usize..5000).prop_map(Op::Read),
        1 => (0usize..100).prop_map(Op::Peek),
        1 => Just(Op::Close),
    ]
}

proptest! {
    /// The ring behaves like a bounded FIFO of bytes, whatever the sizes, wraps and closes.
    #[test]
    fn ring_matches_a_bounded_fifo(order in 12u32..14, ops in prop::collection::vec(op(), 1..200)) {
        let (mut tx, mut rx, _) = pair(order);
        let cap = 1usize << order;
        let mut model: VecDeque<u8> = VecDeque::new();
        let mut closed = false;
        let mut next = 0u8;
        for op in ops {
            match op {
                Op::Write(sizes) if !closed => {
                    let bufs: Vec<Vec<u8>> = sizes.iter().map(|&n| {
                        (0..n).map(|_| { next = next.wrapping_add(1); next }).collect()
                    }).collect();
                    let slices: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
                    let n = tx.write(&slices).unwrap().bytes;
                    let total: usize = sizes.iter().sum();
                    prop_assert_eq!(n, total.min(cap - model.len()));
                    model.extend(bufs.concat().into_iter().take(n));
                    // Bytes that did not fit are dropped from the model's input stream.
                }
                Op::Write(_) => {}
                Op::Read(len) => {
                    let mut b = vec![0u8; len];
                    match rx.read(&mut b).unwrap() {
                        Read::Data { bytes, .. } => {
                            prop_assert_eq!(bytes, len.min(model.len()));
                            let want: Vec<u8> = model.drain(..bytes).collect();
                            prop_assert_eq!(&b[..bytes], &want[..]);
                        }
                        Read::Empty => prop_assert!(model.is_empty() && !closed),
                        Read::Closed => prop_assert!(model.is_empty() && closed),
                        Read::Aborted => prop_assert!(false, "never aborted"),
                    }
                }
                Op::Peek(len) => {
                    let mut b = vec![0u8; len];
                    if let Read::Data { bytes, .. } = rx.peek(&mut b).unwrap() {
                        let want: Vec<u8> = model.iter().take(bytes).copied().collect();
                        prop_assert_eq!(&b[..bytes], &want[..]);
                    }
                }
                Op::Close => { tx.close(); closed = true; }
            }
            prop_assert_eq!(tx.free_space().unwrap(), cap - model.len());
            prop_assert_eq!(rx.available().unwrap(), model.len());
        }
    }

    /// Whatever a hostile peer writes into the control words, the ring never panics and never
    /// reports more bytes than the caller's buffer or the ring can hold.
    #[test]
    fn arbitrary_control_words_never_panic(
        words in prop::collection::vec((0usize..6, any::<u32>()), 1..40),
        reads in prop::collection::vec(0usize..6000, 1..40),
    ) {
        let (mut tx, mut rx, region) = pair(12);
        let fields = [PROD, PROD_FLAGS, CONS, CONS_FLAGS, NOTIFY, PROD];
        for ((field, value), len) in words.into_iter().zip(reads.into_iter().cycle()) {
            region.store(C2S_CONTROL + fields[field], value, Relaxed);
            let mut b = vec![0u8; len];
            if let Ok(Read::Data { bytes, .. }) = rx.read(&mut b) {
                prop_assert!(bytes <= len && bytes <= 4096);
            }
            if let Ok(w) = tx.write(&[&b]) {
                prop_assert!(w.bytes <= len && w.bytes <= 4096);
            }
            let _ = rx.prepare_wait();
            let _ = tx.prepare_wait();
            let _ = rx.peek(&mut b);
        }
    }
}

#[test]
fn heap_memory_is_aligned_and_sized() {
    let m = HeapMemory::new(100);
    assert!(m.len() >= 100);
    assert_eq!(m.as_ptr() as usize % 8, 0);
    let _ = Region::new(Arc::clone(&m) as Arc<dyn SharedMemory>);
}

/// The server's view of a region whose client data ring is mapped read-only (as the xen
/// provider maps it): the same memory as the client's view, with that range declared.
#[derive(Debug)]
struct ServerView(Arc<HeapMemory>, std::ops::Range<usize>);

// SAFETY: forwards to a live HeapMemory (which satisfies the contract); the read-only range lies
// within it, and the memory stays writable there, so declaring it read-only only narrows what
// `Region` may do.
unsafe impl SharedMemory for ServerView {
    fn as_ptr(&self) -> *mut u8 {
        self.0.as_ptr()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn read_only(&self) -> std::ops::Range<usize> {
        self.1.clone()
    }
}

#[test]
fn a_server_never_writes_into_the_clients_data_ring() {
    let layout = Layout::symmetric(12).unwrap();
    let mem = HeapMemory::new(layout.region_len());
    let c2s = layout.c2s_data()..layout.s2c_data();
    let client = Region::new(mem.clone());
    let server = Region::new(Arc::new(ServerView(mem, c2s)));
    let (mut ctx, mut crx) = endpoints(client, layout, Role::Client);
    let (mut stx, mut srx) = endpoints(server, layout, Role::Server);
    let chunk: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    for _ in 0..10 {
        assert_eq!(ctx.write(&[&chunk]).unwrap().bytes, 3000);
        let mut peeked = [0u8; 16];
        srx.peek(&mut peeked).unwrap();
        assert_eq!(read_all(&mut srx), chunk);
        assert_eq!(stx.write(&[&chunk]).unwrap().bytes, 3000);
        assert_eq!(read_all(&mut crx), chunk);
    }
    assert!(stx.close() && srx.close());
    assert!(ctx.close() && crx.close());
}

#[test]
#[should_panic(expected = "read-only range")]
fn writing_into_a_read_only_range_is_refused() {
    let region = Region::new(HeapMemory::with_read_only(8192, 4096..8192));
    region.write_bytes(4096 - 2, &[1, 2, 3]);
}

#[test]
#[should_panic(expected = "read-only range")]
fn control_words_in_a_read_only_range_are_refused() {
    let region = Region::new(HeapMemory::with_read_only(8192, 4096..8192));
    region.load(4096, std::sync::atomic::Ordering::Relaxed);
}
