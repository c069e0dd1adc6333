//! Model checking of the sleep/notify handshake and the close flags with loom.
//!
//! Run with `RUSTFLAGS="--cfg xway_loom" cargo test -p xway-tokio --release --lib loom`.
//! A lost wakeup shows up as a deadlock (every thread waiting), which loom reports.

use super::*;
use loom::sync::Notify;
use loom::thread;
use std::sync::Arc;

const CTL: usize = 0;
const DATA: usize = 384;
const ORDER: u32 = 1; // a 2-byte ring, so the writer must sleep on a full ring

/// Explores interleavings with at most `PREEMPTIONS` preemptions each: bounded model checking
/// (loom's recommended setting; 2-3 preemptions find almost all real bugs) keeps the run in
/// seconds instead of hours.
const PREEMPTIONS: usize = 3;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(PREEMPTIONS);
    builder.check(f);
}

fn model_transfer(message: &'static [u8], close: bool) {
    model(move || {
        let region = Region::new_simulated(512);
        let mut tx = Producer::new(region.clone(), CTL, DATA, ORDER);
        let mut rx = Consumer::new(region, CTL, DATA, ORDER);
        // One doorbell per side, like one doorbell socket per process.
        let reader_bell = Arc::new(Notify::new());
        let writer_bell = Arc::new(Notify::new());

        let (rb, wb) = (reader_bell.clone(), writer_bell.clone());
        let writer = thread::spawn(move || {
            let mut sent = 0;
            while sent < message.len() {
                let w = tx.write(&[&message[sent..]]).unwrap();
                if w.wake_peer {
                    rb.notify();
                }
                sent += w.bytes;
                if w.bytes == 0 && tx.prepare_wait().unwrap() {
                    wb.wait();
                }
            }
            if close && tx.close() {
                rb.notify();
            }
        });

        let mut got = Vec::new();
        let mut buf = [0u8; 2];
        loop {
            match rx.read(&mut buf).unwrap() {
                Read::Data { bytes, wake_peer } => {
                    got.extend_from_slice(&buf[..bytes]);
                    if wake_peer {
                        writer_bell.notify();
                    }
                    if !close && got.len() == message.len() {
                        break;
                    }
                }
                Read::Empty => {
                    if rx.prepare_wait().unwrap() {
                        reader_bell.wait();
                    }
                }
                Read::Closed => break,
                Read::Aborted => panic!("nobody aborts"),
            }
        }
        writer.join().unwrap();
        assert_eq!(got, message);
    });
}

#[test]
fn loom_no_lost_wakeup_when_ring_fills_and_drains() {
    model_transfer(b"abc", false);
}

#[test]
fn loom_close_after_last_byte_is_seen_after_the_byte() {
    model_transfer(b"ab", true);
}

#[test]
fn loom_double_close_rings_once() {
    model(|| {
        let region = Region::new_simulated(512);
        let mut tx = Producer::new(region.clone(), CTL, DATA, ORDER);
        let rx = Consumer::new(region, CTL, DATA, ORDER);
        let t = thread::spawn(move || {
            let first = tx.close();
            let second = tx.close();
            (first, second)
        });
        let ready = rx.is_ready().unwrap();
        let (first, second) = t.join().unwrap();
        assert!(first && !second);
        let _ = ready; // either order is fine; what matters is no race (loom checks the cells)
        assert!(rx.is_ready().unwrap());
    });
}

/// The producer's close races the consumer's `prepare_wait` on an empty ring: the close rings
/// the reader's bell unconditionally the first time (as `shutdown_write` and `Drop` do), so a
/// reader that decided to sleep just before the flag landed is still woken and sees the end.
#[test]
fn loom_close_racing_prepare_wait_is_never_a_lost_wake() {
    model_transfer(b"", true);
}

/// The producer aborts (as `RingIo::fail` does: abort flag, then an unconditional doorbell)
/// while the consumer is deciding to sleep: the consumer gets the byte published before the
/// abort, then `Aborted`, and never sleeps forever.
#[test]
fn loom_producer_abort_racing_prepare_wait_is_seen_after_the_data() {
    model(|| {
        let region = Region::new_simulated(512);
        let mut tx = Producer::new(region.clone(), CTL, DATA, ORDER);
        let mut rx = Consumer::new(region, CTL, DATA, ORDER);
        let reader_bell = Arc::new(Notify::new());
        let rb = reader_bell.clone();
        let writer = thread::spawn(move || {
            assert_eq!(tx.write(&[b"a"]).unwrap().bytes, 1);
            assert!(tx.abort());
            rb.notify();
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 2];
        loop {
            match rx.read(&mut buf).unwrap() {
                Read::Data { bytes, .. } => got.extend_from_slice(&buf[..bytes]),
                Read::Empty => {
                    if rx.prepare_wait().unwrap() {
                        reader_bell.wait();
                    }
                }
                Read::Aborted => break,
                Read::Closed => panic!("an abort is not a close"),
            }
        }
        writer.join().unwrap();
        assert_eq!(got, b"a");
    });
}

/// The consumer aborts (or closes) while the producer, facing a full ring, decides to sleep:
/// the consumer's flag plus its unconditional doorbell always reach the producer, which then
/// stops instead of waiting for space that will never come.
fn model_reader_leaves_full_ring(abort: bool) {
    model(move || {
        let region = Region::new_simulated(512);
        let mut tx = Producer::new(region.clone(), CTL, DATA, ORDER);
        let mut rx = Consumer::new(region, CTL, DATA, ORDER);
        let writer_bell = Arc::new(Notify::new());
        let wb = writer_bell.clone();
        let reader = thread::spawn(move || {
            let first = if abort { rx.abort() } else { rx.close() };
            assert!(first);
            wb.notify();
        });
        assert_eq!(tx.write(&[b"xy"]).unwrap().bytes, 2); // the ring is now full
        loop {
            match tx.reader() {
                PeerReader::Open => {}
                PeerReader::Gone => {
                    assert!(!abort);
                    break;
                }
                PeerReader::Aborted => {
                    assert!(abort);
                    break;
                }
            }
            assert_eq!(tx.write(&[b"z"]).unwrap().bytes, 0, "nobody reads");
            if tx.prepare_wait().unwrap() {
                writer_bell.wait();
            }
        }
        reader.join().unwrap();
    });
}

#[test]
fn loom_consumer_abort_racing_producer_prepare_wait_stops_the_writer() {
    model_reader_leaves_full_ring(true);
}

#[test]
fn loom_consumer_close_racing_producer_prepare_wait_stops_the_writer() {
    model_reader_leaves_full_ring(false);
}
