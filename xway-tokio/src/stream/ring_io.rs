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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{Interest, ReadBuf, Ready};
use tokio::net::TcpStream;

use crate::provider::Doorbell;
use crate::ring::{Consumer, PeerReader, Producer, Read, RingError};

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
        doorbell: Box<dyn Doorbell>,
    ) -> RingIo {
        let fan_out = Arc::new(FanOut::default());
        RingIo {
            tcp,
            tx: Mutex::new(tx),
            rx: Mutex::new(rx),
            doorbell,
            fan_out_waker: Waker::from(fan_out.clone()),
            fan_out,
            peer_dead: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
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
        err
    }

    fn fail_ring(&self, e: RingError) -> io::Error {
        self.fail(io::ErrorKind::InvalidData, format!("xway: {e}"))
    }

    fn ring_peer(&self) {
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
        loop {
            match self.read_now(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
            FanOut::register(&self.fan_out.read, cx.waker());
            match lock(&self.rx).prepare_wait() {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return Poll::Ready(Err(self.fail_ring(e))),
            }
            match self.poll_wake_sources() {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// One non-blocking read attempt; `WouldBlock` if the ring is empty and the peer alive.
    fn read_now(&self, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        self.check_failed()?;
        // SAFETY: the ring only writes initialised bytes into the slice, and `assume_init` below
        // covers exactly the bytes it reported as written.
        let dst: &mut [MaybeUninit<u8>] = unsafe { buf.unfilled_mut() };
        let outcome = lock(&self.rx).read_uninit(dst);
        match outcome {
            Ok(Read::Data { bytes, wake_peer }) => {
                // SAFETY: `read_uninit` initialised the first `bytes` bytes of the unfilled part.
                unsafe { buf.assume_init(bytes) };
                buf.advance(bytes);
                if wake_peer {
                    self.ring_peer();
                }
                Ok(())
            }
            Ok(Read::Closed) => Ok(()),
            Ok(Read::Aborted) => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "xway: peer aborted the connection",
            )),
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
        loop {
            if let Err(e) = self.check_failed() {
                return Poll::Ready(Err(e));
            }
            let outcome = lock(&self.rx).peek(buf.initialize_unfilled());
            match outcome {
                Ok(Read::Data { bytes, .. }) => {
                    buf.advance(bytes);
                    return Poll::Ready(Ok(bytes));
                }
                Ok(Read::Closed) => return Poll::Ready(Ok(0)),
                Ok(Read::Aborted) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "xway: peer aborted the connection",
                    )))
                }
                Ok(Read::Empty) if self.peer_dead.load(Ordering::Acquire) => {
                    return Poll::Ready(Err(self.dead_error()))
                }
                Ok(Read::Empty) => {}
                Err(e) => return Poll::Ready(Err(self.fail_ring(e))),
            }
            if self.poll_read_ready(cx)?.is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Ready when a read would not block (data, end of stream, or an error to report).
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.read_would_not_block() {
                return Poll::Ready(Ok(()));
            }
            FanOut::register(&self.fan_out.read, cx.waker());
            match lock(&self.rx).prepare_wait() {
                Ok(true) => {}
                Ok(false) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(self.fail_ring(e))),
            }
            match self.poll_wake_sources() {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
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
        loop {
            match self.write_now(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
            FanOut::register(&self.fan_out.write, cx.waker());
            match lock(&self.tx).prepare_wait() {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return Poll::Ready(Err(self.fail_ring(e))),
            }
            match self.poll_wake_sources() {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
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
            PeerReader::Aborted => {
                return Some(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "xway: peer aborted the connection",
                ))
            }
        }
        if self.peer_dead.load(Ordering::Acquire) {
            return Some(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "xway: peer process went away",
            ));
        }
        None
    }

    fn write_now(&self, bufs: &[&[u8]]) -> io::Result<usize> {
        self.check_failed()?;
        let mut tx = lock(&self.tx);
        if let Some(e) = self.write_blocker(&tx) {
            return Err(e);
        }
        match tx.write(bufs) {
            Ok(w) if w.bytes == 0 => Err(io::ErrorKind::WouldBlock.into()),
            Ok(w) => {
                drop(tx);
                if w.wake_peer {
                    self.ring_peer();
                }
                Ok(w.bytes)
            }
            Err(e) => {
                drop(tx);
                Err(self.fail_ring(e))
            }
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
        loop {
            if self.write_would_not_block() {
                return Poll::Ready(Ok(()));
            }
            FanOut::register(&self.fan_out.write, cx.waker());
            match lock(&self.tx).prepare_wait() {
                Ok(true) => {}
                Ok(false) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(self.fail_ring(e))),
            }
            match self.poll_wake_sources() {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
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
        loop {
            let ready = self.ready_now(interest);
            if !ready.is_empty() {
                return Poll::Ready(Ok(ready));
            }
            if interest.is_readable() {
                FanOut::register(&self.fan_out.read, cx.waker());
                if !lock(&self.rx)
                    .prepare_wait()
                    .map_err(|e| self.fail_ring(e))?
                {
                    continue;
                }
            }
            if interest.is_writable() {
                FanOut::register(&self.fan_out.write, cx.waker());
                if !lock(&self.tx)
                    .prepare_wait()
                    .map_err(|e| self.fail_ring(e))?
                {
                    continue;
                }
            }
            match self.poll_wake_sources() {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
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
    }
}

fn as_uninit1(b: &mut [u8; 1]) -> &mut [MaybeUninit<u8>] {
    crate::ring::as_uninit(b)
}
