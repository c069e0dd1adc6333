//! An executable specification of one ring direction, checked step by step against the real
//! `Producer` and `Consumer` while the fuzz input plays a hostile peer that overwrites shared
//! control words (and data bytes) between operations.
//!
//! The ring's behaviour is fully determined by each endpoint's private counter and flags plus
//! the current values of the shared words, so the model predicts every result exactly: byte
//! counts, data contents, end-of-stream states, protocol violations (`InvalidData`), doorbell
//! requests and what each call leaves in the notify word. Any difference, any panic, and any
//! out-of-bounds access (the targets run under AddressSanitizer) is a crash.

#![allow(dead_code)] // each target uses one `Hostile` variant

use xway_tokio::fuzzing::{Field, ReadOutcome, RingPair};

const P_CLOSED: u32 = 1;
const P_ABORTED: u32 = 2;
const C_GONE: u32 = 1;
const C_ABORTED: u32 = 2;
const DATA_WANTED: u32 = 1;
const SPACE_WANTED: u32 = 2;

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.byte()?,
            self.byte()?,
            self.byte()?,
            self.byte()?,
        ]))
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// Which peer the input plays.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// A producer: overwrites `prod`, `prod_flags`, `notify` and data bytes.
    Producer,
    /// A consumer: overwrites `cons`, `cons_flags` and `notify`.
    Consumer,
}

struct Model {
    ring: RingPair,
    size: u32,
    /// What the ring's data area holds, byte for byte.
    shadow: Vec<u8>,
    /// The producer's and consumer's private counters and flags.
    prod: u32,
    cons: u32,
    pflags: u32,
    cflags: u32,
    next: u8,
}

impl Model {
    fn word(&self, f: Field) -> u32 {
        self.ring.peek_word(f)
    }

    fn shadow_write(&mut self, pos: u32, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            let at = pos.wrapping_add(i as u32) & (self.size - 1);
            self.shadow[at as usize] = b;
        }
    }

    fn shadow_read(&self, pos: u32, n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| self.shadow[(pos.wrapping_add(i as u32) & (self.size - 1)) as usize])
            .collect()
    }

    fn write(&mut self, lens: &[usize]) {
        let bufs: Vec<Vec<u8>> = lens
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| {
                        self.next = self.next.wrapping_add(1);
                        self.next
                    })
                    .collect()
            })
            .collect();
        let slices: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
        let notify = self.word(Field::Notify);
        let cons_word = self.word(Field::Cons);
        let got = self.ring.write(&slices);
        if self.pflags & P_CLOSED != 0 {
            assert_eq!(got, Ok((0, false)), "the wrapper never writes after close");
            return;
        }
        let used = self.prod.wrapping_sub(cons_word);
        if used > self.size {
            assert_eq!(
                got,
                Err(()),
                "cons {cons_word} vs prod {} accepted",
                self.prod
            );
            assert_eq!(self.word(Field::Notify), notify);
            return;
        }
        let free = (self.size - used) as usize;
        let total: usize = lens.iter().sum();
        let n = total.min(free);
        if n == 0 {
            assert_eq!(got, Ok((0, false)));
            assert_eq!(self.word(Field::Notify), notify);
            return;
        }
        assert_eq!(got, Ok((n, notify & DATA_WANTED != 0)));
        let all = bufs.concat();
        self.shadow_write(self.prod, &all[..n]);
        self.prod = self.prod.wrapping_add(n as u32);
        assert_eq!(self.word(Field::Prod), self.prod, "published index");
        assert_eq!(self.word(Field::Notify), notify & !DATA_WANTED);
    }

    /// What the consumer must report, given the shared words now.
    fn expected_read(&self, len: usize, consume: bool) -> ReadOutcome {
        let p = self.word(Field::Prod);
        let f = self.word(Field::ProdFlags);
        let avail = p.wrapping_sub(self.cons);
        if avail > self.size {
            ReadOutcome::Violation
        } else if avail > 0 {
            let n = len.min(avail as usize);
            // A sleeping writer is woken once at least half the ring is free.
            let free_after = self.size - (avail - n as u32);
            let wake = consume
                && n > 0
                && free_after >= self.size / 2
                && self.word(Field::Notify) & SPACE_WANTED != 0;
            ReadOutcome::Data(n, wake)
        } else if f & (P_CLOSED | P_ABORTED) == 0 {
            ReadOutcome::Empty
        } else if f & P_ABORTED != 0 {
            ReadOutcome::Aborted
        } else {
            ReadOutcome::Closed
        }
    }

    fn read(&mut self, len: usize, consume: bool) {
        let want = self.expected_read(len, consume);
        let notify = self.word(Field::Notify);
        let mut buf = vec![0xA5u8; len];
        let got = if consume {
            self.ring.read(&mut buf)
        } else {
            self.ring.peek(&mut buf)
        };
        assert_eq!(got, want, "read of {len} (consume: {consume})");
        if let ReadOutcome::Data(n, wake) = got {
            assert!(n <= len && n <= self.size as usize);
            assert_eq!(
                buf[..n],
                self.shadow_read(self.cons, n)[..],
                "ring contents"
            );
            assert!(buf[n..].iter().all(|&b| b == 0xA5), "wrote past the count");
            if consume && n > 0 {
                self.cons = self.cons.wrapping_add(n as u32);
                assert_eq!(self.word(Field::Cons), self.cons, "published index");
                let free_after = self.producer_free_after_read();
                if wake || free_after >= self.size / 2 {
                    assert_eq!(self.word(Field::Notify), notify & !SPACE_WANTED);
                } else {
                    assert_eq!(self.word(Field::Notify), notify);
                }
                return;
            }
        }
        assert_eq!(
            self.word(Field::Notify),
            notify,
            "notify changed without data"
        );
    }

    /// Free space as the consumer computes it after a read: from the `prod` it loaded.
    fn producer_free_after_read(&self) -> u32 {
        self.size - self.word(Field::Prod).wrapping_sub(self.cons)
    }

    fn consumer_ready(&self) -> Result<bool, ()> {
        let avail = self.word(Field::Prod).wrapping_sub(self.cons);
        if avail > self.size {
            return Err(());
        }
        Ok(avail > 0 || self.word(Field::ProdFlags) & (P_CLOSED | P_ABORTED) != 0)
    }

    fn consumer_prepare_wait(&mut self) {
        let notify = self.word(Field::Notify);
        let ready = self.consumer_ready();
        let got = self.ring.consumer_prepare_wait();
        let after = self.word(Field::Notify);
        match ready {
            Err(()) => {
                assert_eq!(got, Err(()));
                assert_eq!(after, notify | DATA_WANTED);
            }
            Ok(true) => {
                assert_eq!(got, Ok(false));
                assert_eq!(after, notify & !DATA_WANTED);
            }
            Ok(false) => {
                assert_eq!(got, Ok(true));
                assert_eq!(after, notify | DATA_WANTED);
            }
        }
    }

    fn producer_free(&self) -> Result<u32, ()> {
        let used = self.prod.wrapping_sub(self.word(Field::Cons));
        if used > self.size {
            return Err(());
        }
        Ok(self.size - used)
    }

    fn reader(&self) -> u8 {
        let f = self.word(Field::ConsFlags);
        if f & C_ABORTED != 0 {
            2
        } else if f & C_GONE != 0 {
            1
        } else {
            0
        }
    }

    fn producer_prepare_wait(&mut self) {
        let notify = self.word(Field::Notify);
        let free = self.producer_free();
        let reader = self.reader();
        let got = self.ring.producer_prepare_wait();
        let after = self.word(Field::Notify);
        match free {
            Err(()) => {
                assert_eq!(got, Err(()));
                assert_eq!(after, notify | SPACE_WANTED);
            }
            Ok(f) if f > 0 || reader != 0 => {
                assert_eq!(got, Ok(false));
                assert_eq!(after, notify & !SPACE_WANTED);
            }
            Ok(_) => {
                assert_eq!(got, Ok(true));
                assert_eq!(after, notify | SPACE_WANTED);
            }
        }
    }

    fn queries(&self) {
        assert_eq!(self.ring.is_ready(), self.consumer_ready());
        assert_eq!(
            self.ring.free_space(),
            self.producer_free().map(|f| f as usize)
        );
        assert_eq!(self.ring.reader(), self.reader());
    }

    fn set_pflag(&mut self, flag: u32, first: bool) {
        if self.pflags & flag == 0 {
            assert!(first);
            self.pflags |= flag;
            assert_eq!(self.word(Field::ProdFlags), self.pflags);
        } else {
            assert!(!first);
        }
    }

    fn set_cflag(&mut self, flag: u32, first: bool) {
        if self.cflags & flag == 0 {
            assert!(first);
            self.cflags |= flag;
            assert_eq!(self.word(Field::ConsFlags), self.cflags);
        } else {
            assert!(!first);
        }
    }
}

/// Runs one fuzz input.
pub fn run(data: &[u8], hostile: Hostile) {
    let mut input = Input(data);
    let Some(order) = input.byte() else { return };
    let ring = RingPair::new(12 + u32::from(order % 3));
    let size = ring.size() as u32;
    let mut m = Model {
        ring,
        size,
        shadow: vec![0; size as usize],
        prod: 0,
        cons: 0,
        pflags: 0,
        cflags: 0,
        next: 0,
    };
    let pokable: &[Field] = match hostile {
        Hostile::Producer => &[
            Field::Prod,
            Field::Prod,
            Field::ProdFlags,
            Field::Notify,
            Field::State,
            Field::ClientActivity,
        ],
        Hostile::Consumer => &[
            Field::Cons,
            Field::Cons,
            Field::ConsFlags,
            Field::Notify,
            Field::State,
            Field::ServerActivity,
        ],
    };
    let mut steps = 0;
    while let Some(op) = input.byte() {
        steps += 1;
        if steps > 2000 {
            break;
        }
        match op % 18 {
            0..=2 => {
                let n = 1 + usize::from(op / 18 % 3);
                let mut lens = Vec::with_capacity(n);
                for _ in 0..n {
                    let Some(l) = input.u16() else { return };
                    lens.push(usize::from(l) % (2 * size as usize + 1));
                }
                m.write(&lens);
            }
            3..=5 => {
                let Some(l) = input.u16() else { return };
                m.read(usize::from(l) % (2 * size as usize + 1), true);
            }
            6 => {
                let Some(l) = input.u16() else { return };
                m.read(usize::from(l) % (size as usize + 1), false);
            }
            7 => m.consumer_prepare_wait(),
            8 => m.producer_prepare_wait(),
            9 => m.queries(),
            10 => {
                let first = m.ring.close();
                m.set_pflag(P_CLOSED, first);
            }
            11 => {
                let first = m.ring.producer_abort();
                m.set_pflag(P_ABORTED, first);
            }
            12 => {
                let first = m.ring.consumer_close();
                m.set_cflag(C_GONE, first);
            }
            13 => {
                let first = m.ring.consumer_abort();
                m.set_cflag(C_ABORTED, first);
            }
            14..=16 => {
                let Some(sel) = input.byte() else { return };
                let field = pokable[usize::from(sel) % pokable.len()];
                // Values relative to the honest counters reach the bounds checks' edges.
                let value = match sel / 64 {
                    0 => match input.u32() {
                        Some(v) => v,
                        None => return,
                    },
                    1 => match input.u16() {
                        Some(d) => m.cons.wrapping_add(i32::from(d as i16) as u32),
                        None => return,
                    },
                    2 => match input.u16() {
                        Some(d) => m.prod.wrapping_add(i32::from(d as i16) as u32),
                        None => return,
                    },
                    _ => match input.byte() {
                        Some(b) => [0, 1, 2, 3, size, size + 1, u32::MAX, 1 << 31]
                            [usize::from(b % 8)]
                        .wrapping_add(if b >= 128 { m.cons } else { 0 }),
                        None => return,
                    },
                };
                m.ring.poke(field, value);
            }
            _ => {
                if hostile == Hostile::Producer {
                    let Some(off) = input.u16() else { return };
                    let Some(len) = input.byte() else { return };
                    let bytes = input.bytes(usize::from(len));
                    let off = usize::from(off) % size as usize;
                    let n = bytes.len().min(size as usize - off);
                    m.ring.scribble(off, bytes);
                    m.shadow_write(off as u32, &bytes[..n]);
                }
            }
        }
    }
}
