//! Event channels: the xen provider's [`Doorbell`].
//!
//! One `/dev/xen/evtchn` descriptor serves every port of the process (libxenevtchn warns that
//! sharing one handle between readers does not work, so there is exactly one reader). It is
//! registered with tokio, and a small driver task demultiplexes it:
//!
//! 1. wait until the descriptor is readable (or reports `EPOLLERR`: buffer overflow);
//! 2. read pending ports, 4 bytes each;
//! 3. write them back: the kernel masks a port when it queues it, and writing the number
//!    unmasks it (without this, a port fires once and never again);
//! 4. set each port's pending flag and wake its waker ([`EvtchnPort::poll_wake`]).
//!
//! Events are hints, never data: Xen marks a port pending when it is bound with
//! `bind_interdomain`, a port starts out pending here too (a new connection checks its ring
//! once), and ports the driver does not know (just bound, or just dropped) are unmasked and
//! ignored. A lost event would be a hang, so every doubtful case wakes instead: an overflowed
//! buffer is reset, every known port unmasked and every waiter woken.
//!
//! The driver task runs on the runtime of the first port bound while no demultiplexer is alive,
//! and stops when the last port is dropped (which closes the descriptor). If that runtime shuts
//! down first, the ports bound through it fail with an error on their next poll instead of
//! hanging, and the next bind opens a new descriptor.

use std::collections::HashMap;
use std::fs::File;
use std::future::{poll_fn, Future};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use tokio::io::unix::AsyncFd;
use tokio::io::{Interest, Ready};

use super::sys::{self, Device};
use super::DomId;
use crate::provider::Doorbell;

/// Ports read per `read` (the kernel returns at most a page, 1024 ports).
const READ_BATCH: usize = 256;
/// Reads per wake-up of the driver before it yields to other tasks.
const DRAIN_BUDGET: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A one-waiter wake-up slot with a sticky pending flag (an `AtomicWaker` plus a bit).
#[derive(Debug, Default)]
struct Slot {
    pending: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Slot {
    fn new(pending: bool) -> Slot {
        Slot {
            pending: AtomicBool::new(pending),
            waker: Mutex::new(None),
        }
    }

    /// Marks the slot pending and wakes its waiter, if any.
    fn fire(&self) {
        // pending=true /before/ taking the waker: a poller that registers after we looked
        // finds the flag on its re-check.
        self.pending.store(true, Ordering::Release);
        let waker = lock(&self.waker).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// `Ready` (consuming the pending flag) if fired since the last `Ready`; otherwise
    /// registers `cx`'s waker.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        {
            let mut w = lock(&self.waker);
            match &*w {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        // Re-check after registering: a `fire` between the first check and the registration
        // found no waker to wake.
        if self.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The ports bound on one descriptor. Pure bookkeeping: no I/O.
#[derive(Debug, Default)]
struct PortTable {
    slots: Mutex<HashMap<u32, Arc<Slot>>>,
}

impl PortTable {
    /// A new slot for `port`, pending (so its owner checks its ring once).
    fn insert(&self, port: u32) -> Arc<Slot> {
        let slot = Arc::new(Slot::new(true));
        let old = lock(&self.slots).insert(port, slot.clone());
        if let Some(old) = old {
            // Cannot happen (the kernel does not hand out a bound port twice); wake the old
            // owner rather than leave it waiting.
            old.fire();
        }
        slot
    }

    /// Removes `port` if it still belongs to `slot`.
    fn remove(&self, port: u32, slot: &Arc<Slot>) {
        let mut slots = lock(&self.slots);
        if slots.get(&port).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(&port);
        }
    }

    /// Fires `port`'s slot; false if the port is unknown.
    fn fire(&self, port: u32) -> bool {
        let slot = lock(&self.slots).get(&port).cloned();
        match slot {
            Some(s) => {
                s.fire();
                true
            }
            None => false,
        }
    }

    fn fire_all(&self) {
        let all: Vec<_> = lock(&self.slots).values().cloned().collect();
        for s in all {
            s.fire();
        }
    }

    fn ports(&self) -> Vec<u32> {
        lock(&self.slots).keys().copied().collect()
    }

    fn len(&self) -> usize {
        lock(&self.slots).len()
    }
}

/// What the demultiplexer reads pending ports from: `/dev/xen/evtchn`, or a fake in tests.
trait PortSource {
    /// Reads pending ports into `buf`; `WouldBlock` when there are none, `EFBIG` after an
    /// overflow.
    fn read_ports(&self, buf: &mut [u32]) -> io::Result<usize>;
    /// Unmasks `ports` (ports not bound here are ignored by the kernel).
    fn unmask(&self, ports: &[u32]) -> io::Result<()>;
    /// Clears the pending-port buffer and its overflow condition.
    fn reset(&self) -> io::Result<()>;
}

/// `/dev/xen/evtchn` (or, in tests, a datagram socket standing in for it).
struct DevSource<'a>(&'a File);

impl PortSource for DevSource<'_> {
    fn read_ports(&self, buf: &mut [u32]) -> io::Result<usize> {
        let mut bytes = [0u8; 4 * READ_BATCH];
        let want = 4 * buf.len().min(READ_BATCH);
        let mut file: &File = self.0;
        let n = file.read(&mut bytes[..want])? / 4;
        for (dst, b) in buf.iter_mut().zip(bytes[..4 * n].chunks_exact(4)) {
            *dst = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(n)
    }

    fn unmask(&self, ports: &[u32]) -> io::Result<()> {
        let bytes: Vec<u8> = ports.iter().flat_map(|p| p.to_ne_bytes()).collect();
        let mut file: &File = self.0;
        file.write_all(&bytes)
    }

    fn reset(&self) -> io::Result<()> {
        sys::evtchn_reset(self.0.as_fd())
    }
}

/// How a [`drain`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Drained {
    /// The source said `WouldBlock`: readiness may be cleared.
    Empty,
    /// The budget ran out with ports possibly still pending: yield, then drain again.
    MoreLater,
}

/// Reads pending ports until there are none (or the budget is spent), unmasking them and
/// waking their owners. Unknown ports are unmasked and ignored.
fn drain(src: &dyn PortSource, table: &PortTable) -> io::Result<Drained> {
    let mut buf = [0u32; READ_BATCH];
    for _ in 0..DRAIN_BUDGET {
        match src.read_ports(&mut buf) {
            Ok(0) => return Ok(Drained::Empty),
            Ok(n) => {
                let ports = &buf[..n];
                // Unmask /before/ waking: an event raised while the owner runs is queued again,
                // at worst a spurious wake-up, never a lost one.
                src.unmask(ports)?;
                for &p in ports {
                    if !table.fire(p) {
                        tracing::trace!(port = p, "xway: event on a port that is not ours (yet)");
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Drained::Empty),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EFBIG) => recover_overflow(src, table)?,
            Err(e) => return Err(e),
        }
    }
    Ok(Drained::MoreLater)
}

/// After an overflow some events are lost and their ports stay masked: reset the buffer,
/// unmask every known port, and wake everyone to re-check.
fn recover_overflow(src: &dyn PortSource, table: &PortTable) -> io::Result<()> {
    tracing::debug!("xway: event channel buffer overflowed; resetting it");
    src.reset()?;
    let ports = table.ports();
    if !ports.is_empty() {
        src.unmask(&ports)?;
    }
    table.fire_all();
    Ok(())
}

/// The descriptor, its ports, and the driver's state.
#[derive(Debug)]
struct Demux {
    fd: AsyncFd<File>,
    table: PortTable,
    /// Fired when the last [`Evtchn`] handle goes: the driver exits.
    stop: Slot,
    dead: AtomicBool,
    /// Why the driver stopped, once `dead`.
    why: Mutex<String>,
}

impl Demux {
    fn dead_error(&self) -> Option<io::Error> {
        self.dead.load(Ordering::Acquire).then(|| {
            io::Error::other(format!(
                "xway: the event channel demultiplexer stopped: {}",
                lock(&self.why)
            ))
        })
    }

    fn die(&self, why: String) {
        {
            let mut w = lock(&self.why);
            if w.is_empty() {
                *w = why;
            }
        }
        // dead /before/ waking: a woken port sees the error on its next poll.
        self.dead.store(true, Ordering::Release);
        self.table.fire_all();
    }
}

/// Marks the demultiplexer dead when the driver future goes away, whether it returned or was
/// dropped unpolled by a runtime shutting down.
struct DeadOnDrop(Arc<Demux>);

impl Drop for DeadOnDrop {
    fn drop(&mut self) {
        self.0
            .die("its tokio runtime shut down, or its last port was dropped".into());
    }
}

async fn drive(demux: Arc<Demux>) {
    let why = loop {
        let ready = {
            let ready = demux.fd.ready(Interest::READABLE | Interest::ERROR);
            let mut ready = pin!(ready);
            poll_fn(|cx| {
                if demux.stop.poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                ready.as_mut().poll(cx).map(Some)
            })
            .await
        };
        let mut guard = match ready {
            None => return,
            Some(Ok(g)) => g,
            Some(Err(e)) => break format!("tokio reactor: {e}"),
        };
        let src = DevSource(demux.fd.get_ref());
        if guard.ready().is_error() {
            if let Err(e) = recover_overflow(&src, &demux.table) {
                break format!("resetting /dev/xen/evtchn after an overflow: {e}");
            }
            guard.clear_ready_matching(Ready::ERROR);
        }
        match drain(&src, &demux.table) {
            // Clears only the readiness this guard observed: a later event raises it again.
            Ok(Drained::Empty) => guard.clear_ready(),
            Ok(Drained::MoreLater) => {
                drop(guard);
                tokio::task::yield_now().await;
            }
            Err(e) => break format!("reading /dev/xen/evtchn: {e}"),
        }
    };
    tracing::warn!(reason = %why, "xway: event channel demultiplexer failed");
    demux.die(why);
}

/// The process's event-channel device: the shared descriptor and its driver task.
///
/// Held by every [`EvtchnPort`]; when the last one goes, the driver stops and the descriptor
/// is closed.
#[derive(Debug)]
pub(crate) struct Evtchn {
    demux: Arc<Demux>,
}

impl Drop for Evtchn {
    fn drop(&mut self) {
        self.demux.stop.fire();
    }
}

/// The live demultiplexer, if any (weak: it lives as long as its ports).
static CURRENT: Mutex<Weak<Evtchn>> = Mutex::new(Weak::new());

impl Evtchn {
    /// The process's demultiplexer; opens `/dev/xen/evtchn` and starts the driver on the current
    /// tokio runtime if none is alive.
    ///
    /// # Errors
    ///
    /// The device's open error (`NotFound` without Xen, with the device and the likely cause in
    /// the message), or an error when a new driver is needed outside a tokio runtime.
    pub(crate) fn get() -> io::Result<Arc<Evtchn>> {
        let mut current = lock(&CURRENT);
        if let Some(e) = current.upgrade() {
            if !e.demux.dead.load(Ordering::Acquire) {
                return Ok(e);
            }
        }
        let evtchn = Evtchn::start(File::from(sys::open_device(Device::Evtchn)?))?;
        *current = Arc::downgrade(&evtchn);
        Ok(evtchn)
    }

    /// Registers `file` (non-blocking) and spawns the driver on the current runtime.
    fn start(file: File) -> io::Result<Arc<Evtchn>> {
        let fd = sys::register(file, Interest::READABLE)?;
        let demux = Arc::new(Demux {
            fd,
            table: PortTable::default(),
            stop: Slot::new(false),
            dead: AtomicBool::new(false),
            why: Mutex::new(String::new()),
        });
        let guard = DeadOnDrop(demux.clone());
        let task_demux = demux.clone();
        // `guard` is moved into the future, so it drops with it even if it is never polled.
        drop(tokio::spawn(async move {
            let _guard = guard;
            drive(task_demux).await;
        }));
        Ok(Arc::new(Evtchn { demux }))
    }

    fn attach(self: &Arc<Self>, port: u32) -> EvtchnPort {
        EvtchnPort {
            port,
            slot: self.demux.table.insert(port),
            evtchn: self.clone(),
        }
    }

    /// Allocates a port that domain `remote` may bind to (the offering side).
    pub(crate) fn bind_unbound(self: &Arc<Self>, remote: DomId) -> io::Result<EvtchnPort> {
        let port = sys::evtchn_bind_unbound_port(self.demux.fd.get_ref().as_fd(), remote.get())
            .map_err(|e| context(e, format!("binding an unbound port for domain {remote}")))?;
        Ok(self.attach(port))
    }

    /// Binds to port `remote_port` of domain `remote` (the accepting side). The new port starts
    /// pending (Xen raises it at bind time).
    pub(crate) fn bind_interdomain(
        self: &Arc<Self>,
        remote: DomId,
        remote_port: u32,
    ) -> io::Result<EvtchnPort> {
        let port = sys::evtchn_bind_interdomain(
            self.demux.fd.get_ref().as_fd(),
            remote.get(),
            remote_port,
        )
        .map_err(|e| {
            context(
                e,
                format!("binding to port {remote_port} of domain {remote}"),
            )
        })?;
        Ok(self.attach(port))
    }
}

fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("xway: {what}: {e}"))
}

/// One bound event-channel port: a [`Doorbell`]. Dropping it unbinds the port.
#[derive(Debug)]
pub(crate) struct EvtchnPort {
    port: u32,
    slot: Arc<Slot>,
    evtchn: Arc<Evtchn>,
}

impl EvtchnPort {
    /// [`Evtchn::bind_unbound`] on the process's demultiplexer.
    pub(crate) fn bind_unbound(remote: DomId) -> io::Result<EvtchnPort> {
        Evtchn::get()?.bind_unbound(remote)
    }

    /// [`Evtchn::bind_interdomain`] on the process's demultiplexer.
    pub(crate) fn bind_interdomain(remote: DomId, remote_port: u32) -> io::Result<EvtchnPort> {
        Evtchn::get()?.bind_interdomain(remote, remote_port)
    }

    /// The local port number (what the peer binds to, for an unbound port).
    pub(crate) fn port(&self) -> u32 {
        self.port
    }

    /// Sends an event to the other end.
    pub(crate) fn notify(&self) -> io::Result<()> {
        sys::evtchn_notify(self.evtchn.demux.fd.get_ref().as_fd(), self.port)
    }
}

impl Doorbell for EvtchnPort {
    fn poll_wake(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.slot.poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        // After registering: a driver that dies from now on wakes us (`Demux::die`).
        match self.evtchn.demux.dead_error() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Pending,
        }
    }

    fn ring_peer(&self) -> io::Result<()> {
        self.notify()
    }
}

impl Drop for EvtchnPort {
    fn drop(&mut self) {
        let fd = self.evtchn.demux.fd.get_ref().as_fd();
        if let Err(e) = sys::evtchn_unbind(fd, self.port) {
            tracing::debug!(port = self.port, error = %e, "xway: unbinding event channel failed");
        }
        self.evtchn.demux.table.remove(self.port, &self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    // ---- the pure drain logic over a scripted source -------------------------------------------

    #[derive(Default)]
    struct Script {
        reads: Mutex<VecDeque<io::Result<Vec<u32>>>>,
        /// When the script is empty: `Some(ports)` repeats forever, `None` is WouldBlock.
        forever: Option<Vec<u32>>,
        unmasked: Mutex<Vec<u32>>,
        resets: AtomicUsize,
    }

    impl Script {
        fn new(reads: Vec<io::Result<Vec<u32>>>) -> Script {
            Script {
                reads: Mutex::new(reads.into()),
                ..Script::default()
            }
        }
    }

    impl PortSource for Script {
        fn read_ports(&self, buf: &mut [u32]) -> io::Result<usize> {
            let next = lock(&self.reads).pop_front();
            let ports = match next {
                Some(r) => r?,
                None => match &self.forever {
                    Some(p) => p.clone(),
                    None => return Err(io::ErrorKind::WouldBlock.into()),
                },
            };
            buf[..ports.len()].copy_from_slice(&ports);
            Ok(ports.len())
        }
        fn unmask(&self, ports: &[u32]) -> io::Result<()> {
            lock(&self.unmasked).extend_from_slice(ports);
            Ok(())
        }
        fn reset(&self) -> io::Result<()> {
            self.resets.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn fired(slot: &Slot) -> bool {
        slot.pending.swap(false, Ordering::SeqCst)
    }

    #[test]
    fn slots_start_pending_and_fire_once_per_event() {
        let table = PortTable::default();
        let a = table.insert(3);
        let mut t = tokio_test::task::spawn(());
        t.enter(|cx, _| assert!(a.poll(cx).is_ready()));
        t.enter(|cx, _| assert!(a.poll(cx).is_pending()));
        assert!(table.fire(3));
        assert!(t.is_woken());
        t.enter(|cx, _| assert!(a.poll(cx).is_ready()));
        t.enter(|cx, _| assert!(a.poll(cx).is_pending()));
        // Two events before a poll are one wake-up: events are hints.
        table.fire(3);
        table.fire(3);
        t.enter(|cx, _| assert!(a.poll(cx).is_ready()));
        t.enter(|cx, _| assert!(a.poll(cx).is_pending()));
    }

    #[test]
    fn drain_unmasks_everything_it_reads_and_wakes_only_known_ports() {
        let table = PortTable::default();
        let a = table.insert(5);
        let b = table.insert(6);
        fired(&a);
        fired(&b);
        let src = Script::new(vec![Ok(vec![5, 99]), Ok(vec![0, 5])]);
        assert_eq!(drain(&src, &table).unwrap(), Drained::Empty);
        assert_eq!(*lock(&src.unmasked), vec![5, 99, 0, 5]);
        assert!(fired(&a));
        assert!(!fired(&b));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn overflow_resets_unmasks_every_port_and_wakes_everyone() {
        let table = PortTable::default();
        let a = table.insert(5);
        let b = table.insert(6);
        fired(&a);
        fired(&b);
        let src = Script::new(vec![
            Err(io::Error::from_raw_os_error(libc::EFBIG)),
            Ok(vec![6]),
        ]);
        assert_eq!(drain(&src, &table).unwrap(), Drained::Empty);
        assert_eq!(src.resets.load(Ordering::SeqCst), 1);
        let mut unmasked = lock(&src.unmasked).clone();
        assert_eq!(unmasked.pop(), Some(6));
        unmasked.sort();
        assert_eq!(unmasked, vec![5, 6]);
        assert!(fired(&a) && fired(&b));
    }

    #[test]
    fn drain_is_bounded_and_survives_interrupts_but_not_real_errors() {
        let table = PortTable::default();
        let src = Script {
            forever: Some(vec![1; READ_BATCH]),
            ..Script::new(vec![Err(io::ErrorKind::Interrupted.into())])
        };
        assert_eq!(drain(&src, &table).unwrap(), Drained::MoreLater);
        assert_eq!(lock(&src.unmasked).len(), READ_BATCH * (DRAIN_BUDGET - 1));
        let src = Script::new(vec![Err(io::Error::from_raw_os_error(libc::EBADF))]);
        assert!(drain(&src, &table).is_err());
    }

    #[test]
    fn removing_a_port_spares_a_newer_owner_of_the_same_number() {
        let table = PortTable::default();
        let old = table.insert(7);
        let new = table.insert(7);
        table.remove(7, &old);
        assert_eq!(table.ports(), vec![7]);
        table.remove(7, &new);
        assert_eq!(table.len(), 0);
        assert!(!table.fire(7));
    }

    // ---- the driver over a datagram socket standing in for /dev/xen/evtchn -------------------

    /// A demultiplexer over one end of a datagram pair; the other end plays the kernel.
    fn fake() -> (Arc<Evtchn>, UnixDatagram) {
        let (ours, kernel) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        kernel.set_nonblocking(true).unwrap();
        let evtchn = Evtchn::start(File::from(OwnedFd::from(ours))).unwrap();
        (evtchn, kernel)
    }

    fn raise(kernel: &UnixDatagram, ports: &[u32]) {
        let bytes: Vec<u8> = ports.iter().flat_map(|p| p.to_ne_bytes()).collect();
        kernel.send(&bytes).unwrap();
    }

    /// The next unmask write, waiting without blocking the runtime the driver runs on.
    async fn unmasked(kernel: &UnixDatagram) -> Vec<u32> {
        let mut buf = [0u8; 4096];
        let mut n = None;
        until(|| {
            n = kernel.recv(&mut buf).ok();
            n.is_some()
        })
        .await;
        buf[..n.unwrap_or(0)]
            .chunks_exact(4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    async fn until(mut cond: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("condition not met within 5 s");
    }

    #[tokio::test]
    async fn driver_unmasks_and_wakes_the_right_port() {
        let (evtchn, kernel) = fake();
        let a = evtchn.attach(7);
        let b = evtchn.attach(8);
        let mut ta = tokio_test::task::spawn(());
        let mut tb = tokio_test::task::spawn(());
        // Fresh ports are pending once (Xen raises a port at bind_interdomain).
        ta.enter(|cx, _| assert!(a.poll_wake(cx).is_ready()));
        tb.enter(|cx, _| assert!(b.poll_wake(cx).is_ready()));
        ta.enter(|cx, _| assert!(a.poll_wake(cx).is_pending()));
        tb.enter(|cx, _| assert!(b.poll_wake(cx).is_pending()));

        raise(&kernel, &[7]);
        until(|| ta.is_woken()).await;
        // It is what the stream layer holds.
        let _: &dyn Doorbell = &a;
        assert_eq!(unmasked(&kernel).await, vec![7]);
        assert!(!tb.is_woken());
        ta.enter(|cx, _| assert!(matches!(a.poll_wake(cx), Poll::Ready(Ok(())))));
        ta.enter(|cx, _| assert!(a.poll_wake(cx).is_pending()));

        // Unknown ports are unmasked and ignored, and do not hide known ones.
        raise(&kernel, &[1000, 8]);
        until(|| tb.is_woken()).await;
        assert_eq!(unmasked(&kernel).await, vec![1000, 8]);
        assert!(!ta.is_woken());
    }

    #[tokio::test]
    async fn a_dropped_port_is_forgotten_and_its_events_still_unmasked() {
        let (evtchn, kernel) = fake();
        let a = evtchn.attach(7);
        drop(a); // unbind fails on the fake (not an evtchn device): logged, not fatal
        assert_eq!(evtchn.demux.table.len(), 0);
        raise(&kernel, &[7]);
        assert_eq!(unmasked(&kernel).await, vec![7]);
        assert!(evtchn.demux.dead_error().is_none());
    }

    #[tokio::test]
    async fn the_driver_stops_and_closes_the_descriptor_with_its_last_handle() {
        let (evtchn, kernel) = fake();
        let port = evtchn.attach(3);
        let demux = evtchn.demux.clone();
        drop(evtchn);
        assert!(demux.dead_error().is_none(), "a port still holds it");
        drop(port);
        until(|| demux.dead_error().is_some()).await;
        drop(demux);
        until(|| kernel.send(&[0; 4]).is_err()).await;
    }

    #[test]
    fn a_runtime_shutdown_turns_into_an_error_not_a_hang() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (evtchn, _kernel) = rt.block_on(async { fake() });
        let port = evtchn.attach(4);
        drop(rt);
        let mut t = tokio_test::task::spawn(());
        // Pending from the start (and woken by the shutdown): one Ready, then the error.
        t.enter(|cx, _| assert!(matches!(port.poll_wake(cx), Poll::Ready(Ok(())))));
        let err = t.enter(|cx, _| match port.poll_wake(cx) {
            Poll::Ready(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        });
        assert!(err.to_string().contains("demultiplexer stopped"), "{err}");
        assert!(port.ring_peer().is_err());
    }

    #[tokio::test]
    async fn binding_without_xen_fails_with_the_reason() {
        if std::path::Path::new("/dev/xen/evtchn").exists() {
            return;
        }
        let e = EvtchnPort::bind_unbound(DomId::DOM0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("/dev/xen/evtchn"), "{e}");
        let e = EvtchnPort::bind_interdomain(DomId::DOM0, 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
