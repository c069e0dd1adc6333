//! The ring core: two single-producer/single-consumer byte rings in one shared region.
//!
//! This module knows nothing of tokio, file descriptors or clocks (the quinn-proto model): it
//! moves bytes through a [`Region`] and tells its caller when the peer must be woken. Waiting
//! and waking are the caller's business.
//!
//! # Protocol
//!
//! Each direction has a data ring of `2^order` bytes and a control block (see [`layout`]):
//!
//! - `prod` and `cons` are free-running `u32` byte counters; the bytes in flight are
//!   `prod - cons` (wrapping), never more than the ring size. Only the producer writes `prod`,
//!   only the consumer writes `cons`; each side keeps the authoritative value of its own counter
//!   privately and never reads it back from shared memory.
//! - `prod_flags` (producer): [`prod_flags::CLOSED`] after the producer's last byte (a FIN),
//!   [`prod_flags::ABORTED`] when it gives up on the connection.
//! - `cons_flags` (consumer): [`cons_flags::GONE`] when the consumer will read no more (writes
//!   then fail with `BrokenPipe`), [`cons_flags::ABORTED`] likewise for errors.
//! - `notify`: [`notify::DATA_WANTED`] is set by a consumer about to sleep on an empty ring,
//!   [`notify::SPACE_WANTED`] by a producer about to sleep on a full one. The other side rings
//!   the doorbell only if it finds the bit set, and clears it when it does (libxenvchan's notify
//!   bits). A side that sets a bit re-checks the ring afterwards, so a publish that raced with
//!   the request is never missed: both sides put a sequentially consistent fence between their
//!   store and their load (the store-buffering pattern), so at least one of them sees the other.
//!
//! # Hostile peers (invariant I2)
//!
//! Every value the peer can write is loaded once, validated, and then used: a `prod` that claims
//! more bytes than the ring holds, or a `cons` that claims to have read bytes never written,
//! yields [`RingError`]; the connection fails, nothing panics, nothing blocks forever. Peer flag
//! and notify words are hints: a wrong value can only cause a spurious or missing doorbell, which
//! the caller's liveness checks bound.

pub(crate) mod layout;
mod region;

use std::fmt;
use std::io;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

#[cfg(any(test, fuzzing))]
pub(crate) use region::HeapMemory;
pub(crate) use region::{as_uninit, Region, SharedMemory};
use std::mem::MaybeUninit;

#[cfg(xway_loom)]
use loom::sync::atomic::fence;
#[cfg(not(xway_loom))]
use std::sync::atomic::fence;

use layout::{CONS, CONS_FLAGS, NOTIFY, PROD, PROD_FLAGS};

/// Bits of a control block's `prod_flags` word.
pub(crate) mod prod_flags {
    /// The producer has written its last byte (shutdown of its write side).
    pub(crate) const CLOSED: u32 = 1;
    /// The producer failed the connection.
    pub(crate) const ABORTED: u32 = 2;
}

/// Bits of a control block's `cons_flags` word.
pub(crate) mod cons_flags {
    /// The consumer will read no more bytes.
    pub(crate) const GONE: u32 = 1;
    /// The consumer failed the connection.
    pub(crate) const ABORTED: u32 = 2;
}

/// Bits of a control block's `notify` word.
pub(crate) mod notify {
    /// The consumer sleeps until data is published.
    pub(crate) const DATA_WANTED: u32 = 1;
    /// The producer sleeps until space is freed.
    pub(crate) const SPACE_WANTED: u32 = 2;
}

/// The peer broke the ring protocol. The connection cannot continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingError {
    /// Which counter was wrong.
    pub(crate) what: &'static str,
    /// The value the peer wrote.
    pub(crate) claimed: u32,
    /// Our own counter it was checked against.
    pub(crate) ours: u32,
    /// Ring size in bytes.
    pub(crate) size: u32,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "peer violated the ring protocol: {} = {} is inconsistent with our counter {} \
             for a ring of {} bytes",
            self.what, self.claimed, self.ours, self.size
        )
    }
}

impl std::error::Error for RingError {}

impl From<RingError> for io::Error {
    fn from(e: RingError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("xway: {e}"))
    }
}

/// One direction of the ring pair, as seen from either end.
#[derive(Debug, Clone)]
struct Pipe {
    region: Region,
    /// Offset of the control block.
    ctl: usize,
    /// Offset of the first data byte.
    data: usize,
    size: u32,
}

impl Pipe {
    fn new(region: Region, ctl: usize, data: usize, order: u32) -> Pipe {
        assert!(order < 31, "xway bug: ring order {order} too large");
        let size = 1u32 << order;
        assert!(
            data + size as usize <= region.len() && ctl + NOTIFY + 4 <= region.len(),
            "xway bug: ring outside its region"
        );
        Pipe {
            region,
            ctl,
            data,
            size,
        }
    }

    fn load(&self, field: usize, order: std::sync::atomic::Ordering) -> u32 {
        self.region.load(self.ctl + field, order)
    }

    /// Copies `src` into the ring at stream position `pos`, wrapping at the end.
    fn copy_in(&self, pos: u32, src: &[u8]) {
        let off = (pos & (self.size - 1)) as usize;
        let first = src.len().min(self.size as usize - off);
        self.region.write_bytes(self.data + off, &src[..first]);
        self.region.write_bytes(self.data, &src[first..]);
    }

    /// Copies from stream position `pos` into `dst`, wrapping at the end.
    fn copy_out(&self, pos: u32, dst: &mut [MaybeUninit<u8>]) {
        let off = (pos & (self.size - 1)) as usize;
        let first = dst.len().min(self.size as usize - off);
        let (a, b) = dst.split_at_mut(first);
        self.region.read_bytes(self.data + off, a);
        self.region.read_bytes(self.data, b);
    }

    /// Clears `bit` in the notify word if it is set; true if this call cleared it, i.e. the
    /// other side asked to be woken and must now be.
    fn take_request(&self, bit: u32) -> bool {
        // Publish /before/ looking for a request: pairs with the fence in `request`.
        fence(SeqCst);
        self.load(NOTIFY, Relaxed) & bit != 0
            && self.region.fetch_and(self.ctl + NOTIFY, !bit, SeqCst) & bit != 0
    }

    /// Sets `bit` in the notify word; the caller re-checks the ring afterwards.
    fn request(&self, bit: u32) {
        self.region.fetch_or(self.ctl + NOTIFY, bit, SeqCst);
        // Request /before/ re-checking the ring: pairs with the fence in `take_request`.
        fence(SeqCst);
    }

    /// Adds `flag` to this side's flags word `field` (whose authoritative copy is `flags`).
    /// Returns true the first time.
    fn set_own_flag(&self, field: usize, flags: &mut u32, flag: u32) -> bool {
        if *flags & flag != 0 {
            return false;
        }
        *flags |= flag;
        // Release: everything this side published /before/ the flag (a producer's last bytes,
        // a consumer's last index).
        self.region.store(self.ctl + field, *flags, Release);
        fence(SeqCst);
        true
    }

    fn cancel_request(&self, bit: u32) {
        self.region.fetch_and(self.ctl + NOTIFY, !bit, Relaxed);
    }
}

/// Result of [`Producer::write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    /// Bytes copied into the ring (0 if it was full).
    pub(crate) bytes: usize,
    /// The consumer asked to be woken: ring its doorbell.
    pub(crate) wake_peer: bool,
}

/// State of the consumer as seen by the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerReader {
    /// Reading normally.
    Open,
    /// Will read no more: further writes fail.
    Gone,
    /// Failed the connection.
    Aborted,
}

/// The writing end of one direction.
#[derive(Debug)]
pub(crate) struct Producer {
    pipe: Pipe,
    /// Authoritative count of bytes published; never read back from shared memory.
    prod: u32,
    /// Bytes published since this producer was created, not wrapped.
    total: u64,
    flags: u32,
}

impl Producer {
    /// Takes the producer role of the ring whose control block is at `ctl` and data at `data`.
    ///
    /// Resets the producer's own shared fields; the caller must be the only producer.
    pub(crate) fn new(region: Region, ctl: usize, data: usize, order: u32) -> Producer {
        let pipe = Pipe::new(region, ctl, data, order);
        pipe.region.store(ctl + PROD, 0, Relaxed);
        pipe.region.store(ctl + PROD_FLAGS, 0, Release);
        Producer {
            pipe,
            prod: 0,
            total: 0,
            flags: 0,
        }
    }

    /// Loads and validates the consumer's counter; returns the free space.
    fn free(&self) -> Result<u32, RingError> {
        // Acquire: the consumer's reads of the bytes we are about to overwrite happened before.
        let cons = self.pipe.load(CONS, Acquire);
        let used = self.prod.wrapping_sub(cons);
        if used > self.pipe.size {
            return Err(RingError {
                what: "consumer index",
                claimed: cons,
                ours: self.prod,
                size: self.pipe.size,
            });
        }
        Ok(self.pipe.size - used)
    }

    /// Bytes published since this producer was created.
    pub(crate) fn published(&self) -> u64 {
        self.total
    }

    /// Free space now, validated.
    pub(crate) fn free_space(&self) -> Result<usize, RingError> {
        self.free().map(|f| f as usize)
    }

    /// Gathers as much of `bufs` as fits into the ring and publishes it in one step.
    pub(crate) fn write(&mut self, bufs: &[&[u8]]) -> Result<Written, RingError> {
        debug_assert!(
            self.flags & prod_flags::CLOSED == 0,
            "xway bug: write after close"
        );
        let free = self.free()? as usize;
        let mut n = 0usize;
        for buf in bufs {
            let take = buf.len().min(free - n);
            self.pipe
                .copy_in(self.prod.wrapping_add(n as u32), &buf[..take]);
            n += take;
            if n == free {
                break;
            }
        }
        if n == 0 {
            return Ok(Written {
                bytes: 0,
                wake_peer: false,
            });
        }
        self.prod = self.prod.wrapping_add(n as u32);
        self.total += n as u64;
        // Release: the bytes copied above /before/ the new index.
        self.pipe
            .region
            .store(self.pipe.ctl + PROD, self.prod, Release);
        Ok(Written {
            bytes: n,
            wake_peer: self.pipe.take_request(notify::DATA_WANTED),
        })
    }

    /// Asks to be woken when space is freed, then re-checks.
    ///
    /// Returns `Ok(true)` if the ring is still full and the caller may sleep until the doorbell
    /// rings; `Ok(false)` if space appeared meanwhile (the request is withdrawn).
    pub(crate) fn prepare_wait(&self) -> Result<bool, RingError> {
        self.pipe.request(notify::SPACE_WANTED);
        if self.free()? > 0 || self.reader() != PeerReader::Open {
            self.pipe.cancel_request(notify::SPACE_WANTED);
            return Ok(false);
        }
        Ok(true)
    }

    /// What the consumer has said about itself.
    pub(crate) fn reader(&self) -> PeerReader {
        let f = self.pipe.load(CONS_FLAGS, Acquire);
        if f & cons_flags::ABORTED != 0 {
            PeerReader::Aborted
        } else if f & cons_flags::GONE != 0 {
            PeerReader::Gone
        } else {
            PeerReader::Open
        }
    }

    fn set_flag(&mut self, flag: u32) -> bool {
        self.pipe.set_own_flag(PROD_FLAGS, &mut self.flags, flag)
    }

    /// Marks the end of the stream (a FIN). Returns true the first time; the caller then rings
    /// the peer's doorbell unconditionally so a sleeping reader sees the end.
    pub(crate) fn close(&mut self) -> bool {
        self.set_flag(prod_flags::CLOSED)
    }

    /// Whether [`Producer::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.flags & prod_flags::CLOSED != 0
    }

    /// Tells the peer this side failed the connection. Returns true the first time.
    pub(crate) fn abort(&mut self) -> bool {
        self.set_flag(prod_flags::ABORTED)
    }
}

/// Result of [`Consumer::read`] and [`Consumer::peek`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// Bytes were copied out.
    Data {
        bytes: usize,
        /// The producer asked to be woken when space is freed: ring its doorbell.
        wake_peer: bool,
    },
    /// Nothing to read yet.
    Empty,
    /// The producer closed its side and every byte has been read.
    Closed,
    /// The producer aborted the connection and every byte it published has been read.
    Aborted,
}

/// The reading end of one direction.
#[derive(Debug)]
pub(crate) struct Consumer {
    pipe: Pipe,
    /// Authoritative count of bytes consumed; never read back from shared memory.
    cons: u32,
    /// Bytes consumed since this consumer was created, not wrapped.
    total: u64,
    flags: u32,
}

impl Consumer {
    /// Takes the consumer role of the ring whose control block is at `ctl` and data at `data`.
    pub(crate) fn new(region: Region, ctl: usize, data: usize, order: u32) -> Consumer {
        let pipe = Pipe::new(region, ctl, data, order);
        pipe.region.store(ctl + CONS, 0, Relaxed);
        pipe.region.store(ctl + CONS_FLAGS, 0, Release);
        Consumer {
            pipe,
            cons: 0,
            total: 0,
            flags: 0,
        }
    }

    /// Loads and validates the producer's counter; returns the bytes available.
    fn available_from(&self, prod: u32) -> Result<u32, RingError> {
        let avail = prod.wrapping_sub(self.cons);
        if avail > self.pipe.size {
            return Err(RingError {
                what: "producer index",
                claimed: prod,
                ours: self.cons,
                size: self.pipe.size,
            });
        }
        Ok(avail)
    }

    /// Bytes available, or the end-of-stream state when there are none.
    fn poll_state(&self) -> Result<(u32, Read), RingError> {
        // Acquire: the producer's copies /before/ our reads of the bytes.
        let avail = self.available_from(self.pipe.load(PROD, Acquire))?;
        if avail > 0 {
            return Ok((avail, Read::Empty));
        }
        let flags = self.pipe.load(PROD_FLAGS, Acquire);
        if flags & (prod_flags::CLOSED | prod_flags::ABORTED) == 0 {
            return Ok((0, Read::Empty));
        }
        // The flag is set after the last publish, so this load sees the final index.
        let avail = self.available_from(self.pipe.load(PROD, Acquire))?;
        if avail > 0 {
            Ok((avail, Read::Empty))
        } else if flags & prod_flags::ABORTED != 0 {
            Ok((0, Read::Aborted))
        } else {
            Ok((0, Read::Closed))
        }
    }

    /// Bytes the producer published since this consumer was created, as far as this side has
    /// seen: consumed, plus those waiting (what a misbehaving producer claims counts as nothing
    /// more).
    pub(crate) fn seen(&self) -> u64 {
        let waiting = self.poll_state().map_or(0, |(n, _)| n);
        self.total + u64::from(waiting)
    }

    /// Bytes that can be read now without waiting.
    #[cfg(test)]
    pub(crate) fn available(&self) -> Result<usize, RingError> {
        self.poll_state().map(|(n, _)| n as usize)
    }

    /// True if a read would not return [`Read::Empty`].
    pub(crate) fn is_ready(&self) -> Result<bool, RingError> {
        self.poll_state().map(|(n, s)| n > 0 || s != Read::Empty)
    }

    /// Copies up to `dst.len()` bytes out of the ring and consumes them.
    #[cfg(any(test, xway_loom))]
    pub(crate) fn read(&mut self, dst: &mut [u8]) -> Result<Read, RingError> {
        self.read_uninit(as_uninit(dst))
    }

    /// Like [`Consumer::read`], into storage that may be uninitialised; on `Data { bytes, .. }`
    /// the first `bytes` elements of `dst` are initialised.
    pub(crate) fn read_uninit(&mut self, dst: &mut [MaybeUninit<u8>]) -> Result<Read, RingError> {
        let (avail, state) = self.poll_state()?;
        if avail == 0 {
            return Ok(state);
        }
        if dst.is_empty() {
            return Ok(Read::Data {
                bytes: 0,
                wake_peer: false,
            });
        }
        let n = dst.len().min(avail as usize);
        self.pipe.copy_out(self.cons, &mut dst[..n]);
        self.cons = self.cons.wrapping_add(n as u32);
        self.total += n as u64;
        // Release: our reads of the bytes /before/ the producer may overwrite them.
        self.pipe
            .region
            .store(self.pipe.ctl + CONS, self.cons, Release);
        // Wake a writer waiting for space only once half the ring is free (Xen's event
        // thresholds): it then refills in one go instead of a wake-up per chunk read. A reader
        // that empties the ring always frees more than half, so a writer is never left asleep.
        let free = self.pipe.size - (avail - n as u32);
        let wake_peer = free >= self.pipe.size / 2 && self.pipe.take_request(notify::SPACE_WANTED);
        Ok(Read::Data {
            bytes: n,
            wake_peer,
        })
    }

    /// Copies up to `dst.len()` bytes out of the ring without consuming them.
    pub(crate) fn peek(&self, dst: &mut [u8]) -> Result<Read, RingError> {
        let (avail, state) = self.poll_state()?;
        if avail == 0 {
            return Ok(state);
        }
        let n = dst.len().min(avail as usize);
        self.pipe.copy_out(self.cons, &mut as_uninit(dst)[..n]);
        Ok(Read::Data {
            bytes: n,
            wake_peer: false,
        })
    }

    /// Asks to be woken when data is published, then re-checks.
    ///
    /// Returns `Ok(true)` if the ring is still empty and open, so the caller may sleep until the
    /// doorbell rings; `Ok(false)` if data or an end of stream appeared meanwhile.
    pub(crate) fn prepare_wait(&self) -> Result<bool, RingError> {
        self.pipe.request(notify::DATA_WANTED);
        if self.is_ready()? {
            self.pipe.cancel_request(notify::DATA_WANTED);
            return Ok(false);
        }
        Ok(true)
    }

    fn set_flag(&mut self, flag: u32) -> bool {
        self.pipe.set_own_flag(CONS_FLAGS, &mut self.flags, flag)
    }

    /// Tells the producer no more bytes will be read. Returns true the first time.
    pub(crate) fn close(&mut self) -> bool {
        self.set_flag(cons_flags::GONE)
    }

    /// Tells the producer this side failed the connection. Returns true the first time.
    pub(crate) fn abort(&mut self) -> bool {
        self.set_flag(cons_flags::ABORTED)
    }
}

/// What the peer says it is doing (its activity word; a hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerActivity {
    /// Actively polling the ring rather than waiting on its doorbell.
    pub(crate) running: bool,
    /// The CPU it runs or last ran on.
    pub(crate) cpu: u32,
}

/// This side's and the peer's activity words.
#[derive(Debug)]
pub(crate) struct Activity {
    region: Region,
    own: usize,
    peer: usize,
}

impl Activity {
    pub(crate) fn new(region: Region, role: Role) -> Activity {
        use layout::{CLIENT_ACTIVITY, SERVER_ACTIVITY};
        let (own, peer) = match role {
            Role::Client => (CLIENT_ACTIVITY, SERVER_ACTIVITY),
            Role::Server => (SERVER_ACTIVITY, CLIENT_ACTIVITY),
        };
        Activity { region, own, peer }
    }

    /// Publishes that this side is polling the ring on `cpu` (`running`) or waiting.
    pub(crate) fn publish(&self, running: bool, cpu: u32) {
        let word = (cpu & layout::activity::CPU_MASK)
            | if running {
                layout::activity::RUNNING
            } else {
                0
            };
        self.region.store(self.own, word, Relaxed);
    }

    /// The peer's claim about itself.
    pub(crate) fn peer(&self) -> PeerActivity {
        let word = self.region.load(self.peer, Relaxed);
        PeerActivity {
            running: word & layout::activity::RUNNING != 0,
            cpu: word & layout::activity::CPU_MASK,
        }
    }
}

/// Which end of a connection a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Created the region and sent the offer.
    Client,
    /// Accepted the offer.
    Server,
}

/// Checks that `region` begins with exactly `expected`, from a private copy read once: what
/// every provider's server checks before it uses a region the client wrote (invariant I3).
/// The error says what is wrong.
pub(crate) fn check_header(region: &Region, expected: &layout::Header) -> Result<(), String> {
    let mut bytes = [0u8; layout::HEADER_LEN];
    region.read_bytes(0, as_uninit(&mut bytes));
    match layout::Header::decode(&bytes) {
        Ok(found) if found == *expected => Ok(()),
        Ok(_) => Err("region header does not match the offer and its connection".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// This process's producer and consumer over a region laid out as in [`layout`].
pub(crate) fn endpoints(
    region: Region,
    layout: layout::Layout,
    role: Role,
) -> (Producer, Consumer) {
    use layout::{C2S_CONTROL, S2C_CONTROL};
    let c2s = (C2S_CONTROL, layout.c2s_data(), layout.c2s_order);
    let s2c = (S2C_CONTROL, layout.s2c_data(), layout.s2c_order);
    let (tx, rx) = match role {
        Role::Client => (c2s, s2c),
        Role::Server => (s2c, c2s),
    };
    (
        Producer::new(region.clone(), tx.0, tx.1, tx.2),
        Consumer::new(region, rx.0, rx.1, rx.2),
    )
}

#[cfg(all(test, xway_loom))]
mod loom_tests;
#[cfg(all(test, not(xway_loom)))]
mod tests;
