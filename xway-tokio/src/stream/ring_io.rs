//! The runtime glue between the pure ring core and tokio: locks, wakers, doorbells, liveness.
//!
//! One `RingIo` per connection, shared by both halves of a split stream. Every method takes
//! `&self`, like tokio's `TcpStream`.
//!
//! # Waiting
//!
//! A side that finds the ring empty (reader) or full (writer) asks the peer for a doorbell
//! (`prepare_wait`), re-checks, and only then polls two wake sources: its own doorbell and the
//! TCP connection's readability (the liveness channel: the kernel closes it when the peer
//! process dies). Both are polled with one *fan-out* waker that wakes the reading and the writing
//! task alike, because tokio keeps a single waker per readiness direction and a split stream
//! has two tasks waiting on the same descriptors. A woken task always re-checks the ring, so a
//! wake meant for the other half costs a spurious poll, never a lost wake-up.

use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::io::{Interest, ReadBuf, Ready};
use tokio::net::TcpStream;

use crate::provider::Doorbell;
use crate::ring::{Activity, Consumer, PeerReader, Producer, Read, RingError};
use crate::sys;

/// Wakes both halves' tasks.
#[derive(Debug, Default)]
struct FanOut {
    read: Mutex<Option<Waker>>,
    write: Mutex<Option<Waker>>,
}

impl FanOut {
    fn register(slot: &Mutex<Option<Waker>>, waker: &Waker) {
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
}

impl Wake for FanOut {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        for slot in [&self.read, &self.write] {
            if let Some(w) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                w.wake();
            }
        }
    }
}

/// Why the connection can no longer be used; sticky once set.
#[derive(Debug, Clone)]
struct Failure {
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn to_error(&self) -> io::Error {
        io::Error::new(self.kind, self.message.clone())
    }
}

#[derive(Debug)]
pub(crate) struct RingIo {
    tcp: TcpStream,
    tx: Mutex<Producer>,
    rx: Mutex<Consumer>,
    doorbell: Box<dyn Doorbell>,
    fan_out: Arc<FanOut>,
    fan_out_waker: Waker,
    /// The TCP connection reported EOF or an error: the peer process is gone.
    peer_dead: AtomicBool,
    failure: Mutex<Option<Failure>>,
    activity: Activity,
    /// What this side's activity word says last: running (true) or waiting on the doorbell.
    running: AtomicBool,
    spinner: Spinner,
    counters: Counters,
    /// Called once this side has written to the region for the last time (see
    /// [`RingIo::with_release`]).
    release: Option<Release>,
}

/// What a provider does with a ring this side is done with: it gets the doorbell back, after
/// the last write of this side to the region, and the bytes that went through the ring's
/// busier direction (which says how many pages of the region the connection touched).
pub(crate) struct Release(Box<dyn FnOnce(Box<dyn Doorbell>, u64) + Send + Sync>);

impl Release {
    pub(crate) fn new(
        release: impl FnOnce(Box<dyn Doorbell>, u64) + Send + Sync + 'static,
    ) -> Release {
        Release(Box::new(release))
    }
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Release")
    }
}

/// The doorbell of a ring that was released: never used again.
#[derive(Debug)]
struct Released;

impl Doorbell for Released {
    fn poll_wake(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::other("xway: doorbell of a released ring")))
    }

    fn ring_peer(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Which way a poll is waiting.
#[derive(Debug, Clone, Copy)]
enum Dir {
    Read,
    Write,
    Both,
}

#[derive(Debug, Default)]
struct Counters {
    doorbells: AtomicU64,
    sleeps: AtomicU64,
    spins_won: AtomicU64,
}

/// Counters of one ring connection, from [`XwayStream::ring_stats`](crate::XwayStream::ring_stats).
///
/// They explain benchmark results: a message that costs a doorbell and a sleep costs a
/// context switch or two; one caught by spinning costs neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RingStats {
    /// Doorbells rung for the peer (one datagram each).
    pub doorbells: u64,
    /// Times a poll went to sleep on the doorbell (returned `Pending`).
    pub sleeps: u64,
    /// Spins that saw the ring become ready before their budget ran out.
    pub spins_won: u64,
    /// Spins whose budget ran out (each shrinks the next budget).
    pub spins_lost: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded ring state is consistent at every await-free step, so a panic elsewhere
    // while holding the lock leaves nothing half-done.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RingIo {
    pub(crate) fn new(
        tcp: TcpStream,
        tx: Producer,
        rx: Consumer,
        activity: Activity,
        doorbell: Box<dyn Doorbell>,
        max_spin: Duration,
    ) -> RingIo {
        let fan_out = Arc::new(FanOut::default());
        // A connection that was just set up is about to be used: say so, so that the peer's
        // first wait for an answer spins instead of sleeping on a doorbell (the first exchange
        // would otherwise cost two cross-CPU wake-ups). A side that then waits says otherwise.
        activity.publish(true, sys::current_cpu());
        RingIo {
            tcp,
            tx: Mutex::new(tx),
            rx: Mutex::new(rx),
            doorbell,
            fan_out_waker: Waker::from(fan_out.clone()),
            fan_out,
            peer_dead: AtomicBool::new(false),
            failure: Mutex::new(None),
            activity,
            running: AtomicBool::new(true),
            spinner: Spinner::new(max_spin),
            counters: Counters::default(),
            release: None,
        }
    }

    /// Hands the region and doorbell to `release` once this stream is dropped, after its last
    /// write to the region (the provider may keep them for a later connection).
    pub(crate) fn with_release(mut self, release: Release) -> RingIo {
        self.release = Some(release);
        self
    }

    /// The TCP connection that carries addresses, options and liveness.
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    fn check_failed(&self) -> io::Result<()> {
        match &*lock(&self.failure) {
            Some(f) => Err(f.to_error()),
            None => Ok(()),
        }
    }

    /// Fails the connection: tells the peer (abort flags and a doorbell) and remembers why.
    fn fail(&self, kind: io::ErrorKind, message: String) -> io::Error {
        let mut failure = lock(&self.failure);
        let f = failure.get_or_insert_with(|| {
            tracing::warn!(%message, "xway: ring connection failed");
            Failure { kind, message }
        });
        let err = f.to_error();
        drop(failure);
        lock(&self.tx).abort();
        lock(&self.rx).abort();
        let _ = self.doorbell.ring_peer();
        // Wake a task parked in the other half: it must see the failure too (I4).
        self.fan_out.wake_by_ref();
        err
    }

    fn fail_ring(&self, e: RingError) -> io::Error {
        self.fail(io::ErrorKind::InvalidData, format!("xway: {e}"))
    }

    fn ring_peer(&self) {
        self.counters.doorbells.fetch_add(1, Ordering::Relaxed);
        self.spinner.note_peer_rung();
        if let Err(e) = self.doorbell.ring_peer() {
            // Only possible if our own descriptor broke; the peer's liveness check still ends
            // the connection if it matters.
            tracing::debug!(error = %e, "xway: doorbell write failed");
        }
    }

    /// Polls the wake sources with the fan-out waker. `Ready` means: re-check the ring.
    fn poll_wake_sources(&self) -> Poll<io::Result<()>> {
        let mut cx = Context::from_waker(&self.fan_out_waker);
        if let Poll::Ready(r) = self.doorbell.poll_wake(&mut cx) {
            return Poll::Ready(r);
        }
        self.poll_liveness(&mut cx)
    }

    /// Watches the TCP connection: after the verdict the peer never writes to it, so
    /// readability means the peer closed it (EOF) or it was reset.
    fn poll_liveness(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.peer_dead.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        loop {
            match self.tcp.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => {
                    self.peer_dead.store(true, Ordering::Release);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {}
            }
            let mut probe = [0u8; 1];
            match self.tcp.try_io(Interest::READABLE, || {
                socket2::SockRef::from(&self.tcp).peek(as_uninit1(&mut probe))
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue, // readiness cleared
                Ok(0) | Err(_) => {
                    self.peer_dead.store(true, Ordering::Release);
                    return Poll::Ready(Ok(()));
                }
                Ok(_) => {
                    return Poll::Ready(Err(self.fail(
                        io::ErrorKind::InvalidData,
                        "xway: peer sent bytes on the control connection of a ring stream".into(),
                    )))
                }
            }
        }
    }

    fn dead_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionReset,
            "xway: peer went away without closing the ring (process exited or was killed)",
        )
    }

    // ---- waiting -----------------------------------------------------------------------------

    /// The wait protocol every poll shares, once the ring said "not now" in direction `dir`:
    /// spin (at most once per poll call, see [`Spinner`]), then ask the peer for a doorbell and
    /// re-check, then sleep on the wake sources.
    ///
    /// `Ready(Ok(()))`: something may have changed, re-check the ring. `Pending`: the task's
    /// waker is registered with every wake source.
    fn poll_wait(&self, cx: &mut Context<'_>, dir: Dir, spun: &mut bool) -> Poll<io::Result<()>> {
        if !*spun {
            *spun = true;
            if self
                .spinner
                .spin_until(&self.activity, || self.would_not_block(dir))
            {
                self.counters.spins_won.fetch_add(1, Ordering::Relaxed);
                return Poll::Ready(Ok(()));
            }
        }
        let still_waiting = match dir {
            Dir::Read => {
                FanOut::register(&self.fan_out.read, cx.waker());
                lock(&self.rx).prepare_wait()
            }
            Dir::Write => {
                FanOut::register(&self.fan_out.write, cx.waker());
                lock(&self.tx).prepare_wait()
            }
            Dir::Both => {
                FanOut::register(&self.fan_out.read, cx.waker());
                FanOut::register(&self.fan_out.write, cx.waker());
                lock(&self.rx)
                    .prepare_wait()
                    .and_then(|r| Ok(r && lock(&self.tx).prepare_wait()?))
            }
        };
        match still_waiting {
            Ok(true) => {}
            Ok(false) => return Poll::Ready(Ok(())),
            Err(e) => return Poll::Ready(Err(self.fail_ring(e))),
        }
        let polled = self.poll_wake_sources();
        if polled.is_pending() {
            self.counters.sleeps.fetch_add(1, Ordering::Relaxed);
            self.running.store(false, Ordering::Relaxed);
            self.activity.publish(false, sys::current_cpu());
        }
        polled
    }

    /// Tells the peer this side is running again after it made progress (moved bytes).
    ///
    /// A side that streams data never waits, so without this its activity word would still say
    /// "waiting" from its last sleep, and the peer, finding the ring empty or full for a moment,
    /// would sleep at once instead of spinning: a doorbell and a wake-up for every few messages
    /// of a bulk transfer. Written only on the change, so a busy stream does not keep writing
    /// the shared cache line.
    fn note_running(&self) {
        if !self.running.load(Ordering::Relaxed) && !self.running.swap(true, Ordering::Relaxed) {
            self.activity.publish(true, sys::current_cpu());
        }
    }

    fn would_not_block(&self, dir: Dir) -> bool {
        match dir {
            Dir::Read => self.read_would_not_block(),
            Dir::Write => self.write_would_not_block(),
            Dir::Both => self.read_would_not_block() || self.write_would_not_block(),
        }
    }

    /// Counters for benchmarks and diagnostics.
    pub(crate) fn stats(&self) -> RingStats {
        let c = &self.counters;
        RingStats {
            doorbells: c.doorbells.load(Ordering::Relaxed),
            sleeps: c.sleeps.load(Ordering::Relaxed),
            spins_won: c.spins_won.load(Ordering::Relaxed),
            spins_lost: self.spinner.lost.load(Ordering::Relaxed),
        }
    }

    // ---- reading -----------------------------------------------------------------------------

    /// Reads into `buf`; `Ok(())` with nothing filled is end of stream.
    pub(crate) fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut spun = false;
        loop {
            match self.read_now(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
            ready!(self.poll_wait(cx, Dir::Read, &mut spun))?;
        }
    }

    /// One non-blocking read attempt; `WouldBlock` if the ring is empty and the peer alive.
    ///
    /// A large read is copied out in pieces of [`PIECE`] bytes, each consumed (and the writer
    /// woken, if it asked) before the next is copied: the writer refills behind us instead of
    /// waiting for the whole copy.
    fn read_now(&self, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        self.check_failed()?;
        let mut rx = lock(&self.rx);
        let mut got = 0;
        let outcome = loop {
            // SAFETY: the ring only writes initialised bytes into the slice, and `assume_init`
            // below covers exactly the bytes it reported as written.
            let dst: &mut [MaybeUninit<u8>] = unsafe { buf.unfilled_mut() };
            let piece = dst.len().min(PIECE);
            match rx.read_uninit(&mut dst[..piece]) {
                Ok(Read::Data { bytes, wake_peer }) => {
                    // SAFETY: `read_uninit` initialised the first `bytes` bytes of the slice.
                    unsafe { buf.assume_init(bytes) };
                    buf.advance(bytes);
                    got += bytes;
                    if wake_peer {
                        self.ring_peer();
                    }
                    if bytes < piece || buf.remaining() == 0 {
                        break Ok(Read::Data {
                            bytes: got,
                            wake_peer: false,
                        });
                    }
                }
                // What follows the bytes read (end, abort, a broken index) is seen again, and
                // reported, by the next call.
                _ if got > 0 => {
                    break Ok(Read::Data {
                        bytes: got,
                        wake_peer: false,
                    })
                }
                other => break other,
            }
        };
        drop(rx);
        match outcome {
            Ok(Read::Data { .. }) => {
                self.note_running();
                Ok(())
            }
            Ok(Read::Closed) => Ok(()),
            Ok(Read::Aborted) => Err(aborted()),
            Ok(Read::Empty) if self.peer_dead.load(Ordering::Acquire) => Err(self.dead_error()),
            Ok(Read::Empty) => Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => Err(self.fail_ring(e)),
        }
    }

    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rb = ReadBuf::new(buf);
        self.read_now(&mut rb)?;
        Ok(rb.filled().len())
    }

    /// Peeks into `buf`, waiting for data; returns the byte count (0 at end of stream).
    pub(crate) fn poll_peek(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut spun = false;
        loop {
            self.check_failed()?;
            let outcome = lock(&self.rx).peek(buf.initialize_unfilled());
            match outcome {
                Ok(Read::Data { bytes, .. }) => {
                    buf.advance(bytes);
                    return Poll::Ready(Ok(bytes));
                }
                Ok(Read::Closed) => return Poll::Ready(Ok(0)),
                Ok(Read::Aborted) => return Poll::Ready(Err(aborted())),
                Ok(Read::Empty) if self.peer_dead.load(Ordering::Acquire) => {
                    return Poll::Ready(Err(self.dead_error()))
                }
                Ok(Read::Empty) => {}
                Err(e) => return Poll::Ready(Err(self.fail_ring(e))),
            }
            ready!(self.poll_wait(cx, Dir::Read, &mut spun))?;
        }
    }

    /// Ready when a read would not block (data, end of stream, or an error to report).
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut spun = false;
        while !self.read_would_not_block() {
            ready!(self.poll_wait(cx, Dir::Read, &mut spun))?;
        }
        Poll::Ready(Ok(()))
    }

    fn read_would_not_block(&self) -> bool {
        self.check_failed().is_err()
            || self.peer_dead.load(Ordering::Acquire)
            || lock(&self.rx).is_ready().unwrap_or(true)
    }

    // ---- writing -----------------------------------------------------------------------------

    /// Writes as much of `bufs` as fits, gathering all slices into one publish.
    pub(crate) fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[&[u8]],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        let mut spun = false;
        loop {
            match self.write_now(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
            ready!(self.poll_wait(cx, Dir::Write, &mut spun))?;
        }
    }

    /// Why writing is impossible, if it is.
    fn write_blocker(&self, tx: &Producer) -> Option<io::Error> {
        if tx.is_closed() {
            return Some(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "xway: write after shutdown",
            ));
        }
        match tx.reader() {
            PeerReader::Open => {}
            PeerReader::Gone => {
                return Some(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "xway: peer closed the connection",
                ))
            }
            PeerReader::Aborted => return Some(aborted()),
        }
        if self.peer_dead.load(Ordering::Acquire) {
            return Some(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "xway: peer process went away",
            ));
        }
        None
    }

    /// One non-blocking write attempt; `WouldBlock` if the ring is full.
    ///
    /// A large single buffer is published in pieces of [`PIECE`] bytes (and the reader woken, if
    /// it asked, after the first): the reader copies out behind us instead of waiting for the
    /// whole copy. Vectored writes are gathered into one publish.
    fn write_now(&self, bufs: &[&[u8]]) -> io::Result<usize> {
        self.check_failed()?;
        let mut tx = lock(&self.tx);
        if let Some(e) = self.write_blocker(&tx) {
            return Err(e);
        }
        let written = match bufs {
            [one] if one.len() > PIECE => {
                let mut total = 0;
                loop {
                    let piece = &one[total..one.len().min(total + PIECE)];
                    match tx.write(&[piece]) {
                        Ok(w) => {
                            total += w.bytes;
                            if w.wake_peer {
                                self.ring_peer();
                            }
                            if w.bytes < piece.len() || total == one.len() {
                                break Ok(total);
                            }
                        }
                        // Report the bytes published; the next call meets the error again.
                        Err(_) if total > 0 => break Ok(total),
                        Err(e) => break Err(e),
                    }
                }
            }
            _ => tx.write(bufs).map(|w| {
                if w.wake_peer {
                    self.ring_peer();
                }
                w.bytes
            }),
        };
        drop(tx);
        match written {
            Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
            Ok(bytes) => {
                self.note_running();
                Ok(bytes)
            }
            Err(e) => Err(self.fail_ring(e)),
        }
    }

    pub(crate) fn try_write_vectored(&self, bufs: &[&[u8]]) -> io::Result<usize> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        self.write_now(bufs)
    }

    /// Ready when a write would not block (space, or an error to report).
    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut spun = false;
        while !self.write_would_not_block() {
            ready!(self.poll_wait(cx, Dir::Write, &mut spun))?;
        }
        Poll::Ready(Ok(()))
    }

    fn write_would_not_block(&self) -> bool {
        if self.check_failed().is_err() {
            return true;
        }
        let tx = lock(&self.tx);
        self.write_blocker(&tx).is_some() || tx.free_space().map_or(true, |n| n > 0)
    }

    /// The readiness `interest` asks for that is available now, without waiting.
    pub(crate) fn ready_now(&self, interest: Interest) -> Ready {
        let mut ready = Ready::EMPTY;
        if interest.is_readable() && self.read_would_not_block() {
            ready |= Ready::READABLE;
            if self.peer_dead.load(Ordering::Acquire)
                || matches!(lock(&self.rx).peek(&mut []), Ok(Read::Closed))
            {
                ready |= Ready::READ_CLOSED;
            }
        }
        if interest.is_writable() && self.write_would_not_block() {
            ready |= Ready::WRITABLE;
            if self.write_blocker(&lock(&self.tx)).is_some() {
                ready |= Ready::WRITE_CLOSED;
            }
        }
        ready
    }

    /// Waits until some of `interest` is ready.
    pub(crate) fn poll_ready(
        &self,
        cx: &mut Context<'_>,
        interest: Interest,
    ) -> Poll<io::Result<Ready>> {
        let dir = match (interest.is_readable(), interest.is_writable()) {
            (true, true) => Dir::Both,
            (false, true) => Dir::Write,
            _ => Dir::Read,
        };
        let mut spun = false;
        loop {
            let ready = self.ready_now(interest);
            if !ready.is_empty() {
                return Poll::Ready(Ok(ready));
            }
            ready!(self.poll_wait(cx, dir, &mut spun))?;
        }
    }

    // ---- closing -----------------------------------------------------------------------------

    /// Half-close: the peer reads the bytes written so far, then end of stream. Idempotent.
    pub(crate) fn shutdown_write(&self) {
        if lock(&self.tx).close() {
            self.ring_peer();
        }
    }
}

impl Drop for RingIo {
    fn drop(&mut self) {
        // Tell the peer both directions are finished, then let the TCP connection close. The
        // peer still reads whatever we wrote: its mapping stays valid until it drops its side.
        let closed_tx = lock(&self.tx).close();
        let closed_rx = lock(&self.rx).close();
        if closed_tx || closed_rx {
            self.ring_peer();
        }
        // Nothing writes to the region after this point (the endpoints have no drop of their
        // own), so the provider may hand it on.
        if let Some(Release(release)) = self.release.take() {
            let moved = lock(&self.tx).published().max(lock(&self.rx).seen());
            release(
                std::mem::replace(&mut self.doorbell, Box::new(Released)),
                moved,
            );
        }
    }
}

fn as_uninit1(b: &mut [u8; 1]) -> &mut [MaybeUninit<u8>] {
    crate::ring::as_uninit(b)
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "xway: peer aborted the connection",
    )
}

/// Adaptive spinning before sleeping.
///
/// A sleep on the doorbell costs a wake-up (tens of microseconds across CPUs on small VMs);
/// polling the ring for a while costs CPU. The spinner polls only when that can pay: when the
/// peer says it is running on another CPU, or was just rung (and so is waking up), and never
/// when the peer shares our CPU (it could not run while we spin); then it yields the CPU a few
/// times to a peer that says it is running or that it just rang, whatever the budget. Per
/// connection, a spin that
/// succeeds restores the full budget and one that fails divides it by four; below a
/// microsecond the connection stops spinning and only probes briefly every 32 waits, so idle
/// connections and busy many-connection servers stop burning CPU on their own.
#[derive(Debug)]
struct Spinner {
    max_ns: u64,
    budget_ns: AtomicU64,
    skipped: AtomicU64,
    lost: AtomicU64,
    epoch: Instant,
    rung_at_ns: AtomicU64,
}

/// The most a read or write copies before it publishes its progress to the peer: small enough
/// that the two sides of a large transfer copy at the same time, large enough that publishing
/// (a few atomics) costs nothing next to the copy.
const PIECE: usize = 64 << 10;

/// How many times a waiting side hands its CPU to a peer it just rang on the same CPU.
const SAME_CPU_YIELDS: usize = 8;

/// A probe spin when the budget has decayed to zero.
const PROBE_NS: u64 = 2_000;

/// With a decayed budget, one wait in this many right after ringing the peer spins the whole
/// budget (see [`Spinner::spin_until`]).
const WAKING_PROBE: u64 = 8;

impl Spinner {
    fn new(max: Duration) -> Spinner {
        let max_ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Spinner {
            max_ns,
            budget_ns: AtomicU64::new(max_ns),
            skipped: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            epoch: Instant::now(),
            rung_at_ns: AtomicU64::new(u64::MAX),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn note_peer_rung(&self) {
        if self.max_ns > 0 {
            self.rung_at_ns.store(self.now_ns(), Ordering::Relaxed);
        }
    }

    /// Polls `ready` until it is true or the budget runs out; true if it became ready.
    fn spin_until(&self, activity: &Activity, mut ready: impl FnMut() -> bool) -> bool {
        if self.max_ns == 0 {
            return false;
        }
        let start = self.now_ns();
        // Rung within two budgets, or never (`u64::MAX`: the subtraction saturates to 0): a
        // peer on a new connection starts out as if it had just been rung, which is what lets
        // two sides sharing one CPU hand it to each other from the first message on.
        let peer_waking =
            start.saturating_sub(self.rung_at_ns.load(Ordering::Relaxed)) < 2 * self.max_ns;
        let cpu = sys::current_cpu();
        let peer = activity.peer();
        if peer.cpu == cpu {
            // Spinning on the CPU the peer needs would only delay it. But a peer that is
            // runnable here (it says it is running, or we just rang it) usually answers within
            // its time slice if we hand it the CPU, without either side sleeping on a doorbell.
            // Not gated by the budget: yielding burns no CPU the peer could use, and a budget
            // that decayed while the connection was idle would otherwise keep both sides
            // ringing each other for every message once it is busy again.
            return (peer.running || peer_waking)
                && (0..SAME_CPU_YIELDS).any(|_| {
                    sys::yield_cpu();
                    ready()
                });
        }
        let mut budget = self.budget_ns.load(Ordering::Relaxed);
        if budget == 0 {
            // Spins lost in a row decayed the budget: only probe now and then. A short probe
            // finds a peer that spins again; but two sides that both decayed sleep in turn,
            // and each wakes to find the other asleep. So a wait right after ringing the peer
            // sometimes spins the whole budget, long enough for the peer's wake-up and answer:
            // once that wins, the budget is back and the peer soon sees us running.
            let probe = self.skipped.fetch_add(1, Ordering::Relaxed);
            budget = if peer_waking && probe % WAKING_PROBE == WAKING_PROBE - 1 {
                self.max_ns
            } else if probe % 32 == 31 {
                PROBE_NS.min(self.max_ns)
            } else {
                return false;
            };
        }
        if !(peer.running || peer_waking) {
            return false;
        }
        activity.publish(true, cpu);
        loop {
            for _ in 0..32 {
                if ready() {
                    self.budget_ns.store(self.max_ns, Ordering::Relaxed);
                    return true;
                }
                std::hint::spin_loop();
            }
            if self.now_ns().saturating_sub(start) >= budget {
                let next = budget / 4;
                self.budget_ns
                    .store(if next < 1_000 { 0 } else { next }, Ordering::Relaxed);
                self.lost.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Region, Role};
    use std::os::fd::AsFd;
    use std::sync::Arc;

    /// Our activity word, with the peer's saying it is asleep on a CPU that is not ours, and a
    /// spinner of budget `max` whose spinning has decayed (three lost spins in a row).
    fn decayed_spinner(max: Duration) -> (Activity, Spinner) {
        decayed_spinner_with_peer(max, false, 0xfffe)
    }

    /// The same, with the peer's activity word saying `running` on `cpu`.
    fn decayed_spinner_with_peer(max: Duration, running: bool, cpu: u32) -> (Activity, Spinner) {
        let len = crate::ring::layout::CONTROL_LEN;
        let memfd = sys::memfd_sealed(len).unwrap();
        let region = Region::new(Arc::new(
            sys::Mapping::map_sealed(memfd.as_fd(), len).unwrap(),
        ));
        Activity::new(region.clone(), Role::Server).publish(running, cpu);
        let spinner = Spinner::new(max);
        spinner.budget_ns.store(0, Ordering::Relaxed);
        (Activity::new(region, Role::Client), spinner)
    }

    #[test]
    fn a_decayed_spinner_gets_its_budget_back_from_a_peer_that_answers_after_its_wake_up() {
        let (ours, spinner) = decayed_spinner(Duration::from_micros(200));
        // Each time, we rang the peer and it answers 20 us later (its wake-up): a short probe
        // never sees that, a whole budget does.
        let won = (0..WAKING_PROBE).any(|_| {
            spinner.note_peer_rung();
            let rung = Instant::now();
            spinner.spin_until(&ours, || rung.elapsed() >= Duration::from_micros(20))
        });
        assert!(won, "one of {WAKING_PROBE} waits spun long enough");
        assert_eq!(spinner.budget_ns.load(Ordering::Relaxed), spinner.max_ns);
    }

    #[test]
    fn a_decayed_spinner_hands_its_cpu_to_a_running_peer_on_the_same_cpu() {
        // A connection that was idle (its budget decayed) and is busy again, both sides on one
        // CPU, the peer running and not rung lately: handing it the CPU gets the answer, where
        // sleeping would cost a doorbell per message from then on.
        std::thread::spawn(|| {
            let cpu = sys::pin_to_current_cpu();
            let (ours, spinner) = decayed_spinner_with_peer(Duration::from_micros(50), true, cpu);
            spinner.note_peer_rung();
            std::thread::sleep(Duration::from_millis(1));
            let mut polls = 0;
            let answered = spinner.spin_until(&ours, || {
                polls += 1;
                polls >= 2
            });
            assert!(answered, "yielded to the peer until it answered");
            assert_eq!(polls, 2);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_spinner_does_not_yield_to_a_sleeping_peer_on_the_same_cpu() {
        std::thread::spawn(|| {
            let cpu = sys::pin_to_current_cpu();
            let (ours, spinner) = decayed_spinner_with_peer(Duration::from_micros(50), false, cpu);
            spinner.budget_ns.store(spinner.max_ns, Ordering::Relaxed);
            spinner.note_peer_rung();
            std::thread::sleep(Duration::from_millis(1));
            let mut polls = 0;
            assert!(!spinner.spin_until(&ours, || {
                polls += 1;
                false
            }));
            assert_eq!(polls, 0, "went to sleep without looking at the ring");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_decayed_spinner_does_not_spin_for_a_peer_it_rang_long_ago() {
        let (ours, spinner) = decayed_spinner(Duration::from_micros(50));
        spinner.note_peer_rung();
        std::thread::sleep(Duration::from_millis(1));
        let mut polls = 0;
        for _ in 0..31 {
            assert!(!spinner.spin_until(&ours, || {
                polls += 1;
                false
            }));
        }
        assert_eq!(polls, 0, "skipped without looking at the ring");
    }
}
