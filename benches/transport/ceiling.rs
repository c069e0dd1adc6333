//! The shared-memory copy ceiling: how fast this host moves bytes from one CPU to another
//! through a ring like xway's, with nothing else in the way.
//!
//! Two threads share a `memfd` mapping (the same kind of memory as an xway ring: shared 4 KiB
//! pages) holding a single-producer/single-consumer byte ring of the size the xway clients use
//! (2 MiB by default, `XWAY_BENCH_RING_SIZE` otherwise). One thread writes 64 KiB chunks into it
//! with `memcpy` from a private buffer, as the benchmark's client writes; the other copies out up
//! to 64 KiB at a time into a private buffer, as its sink reads. Each side publishes its
//! free-running byte counter with a Release store after its copy and loads the other's with
//! Acquire; the two counters are 128 bytes apart (separate cache lines, as in xway's layout).
//! Waiting is plain spinning (a `yield` only after 20 µs of it, so that a third busy process
//! cannot turn the probe into a 4 ms-per-chunk crawl). No tokio, no doorbells, no locks, no
//! validation of the other side's counter: what is left is the copies and the cache lines.
//!
//! It runs right after the ring's 64 KiB bulk figure, with the same byte counts (a warm-up,
//! drained, then the timed transfer), its writer and reader pinned where the client and the
//! server ran: as the run pinned them, or, unpinned, on the CPUs they were on right after the
//! timed transfer (both on one CPU if that is where the scheduler had put them). Which vCPU
//! writes matters: on the 2-vCPU VM where this was written, one way round was often 1.2-2x
//! faster than the other. Threads rather than processes: a process boundary changes page
//! tables, not how cache lines travel (a forked reader gave the same figures), and threads keep
//! the probe small.
//!
//! The host places the vCPUs differently from one moment to the next, and with that the cost of
//! moving cache lines between them changes by a factor of several (on the 2-vCPU VM where this
//! was written: 2-38 GB/s, and two measurements 30 ms apart could differ by 2x), so a bulk
//! figure alone cannot tell a slow host from a slow ring; "ring / ceiling", taken within a
//! repetition, can, though one repetition's ratio is noisy: read the median over repetitions.
//!
//! A spinning pair is only a ceiling while both threads really run at once. When the host runs
//! the two vCPUs in turn (or something else takes one of the CPUs), a spinning side waits for a
//! peer that is not running, and the probe falls far below what the copies can do, while xway,
//! which stops spinning and sleeps, keeps going: the ring then beats its "ceiling". So the probe
//! also reports the share of its threads' time spent in waits longer than 20 µs ("stalled"):
//! near 0, the ratio means what it says; at 30-50% (seen on the 2-vCPU VM where this was
//! written), it does not.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Offsets of the writer's and the reader's counters in the control page, and of the data.
const HEAD: usize = 0;
const TAIL: usize = 128;
const DATA: usize = 4096;

/// How long a waiting side spins before it starts yielding its CPU between polls (about the
/// cost of a cross-CPU wake-up here, as xway's own spin budget).
const MAX_SPIN: Duration = Duration::from_micros(20);

/// A `MAP_SHARED` mapping of a fresh memfd; unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; the threads that use it reach it only
// through raw-pointer copies and atomics, under the ring protocol below.
unsafe impl Send for Mapping {}
// SAFETY: as for Send.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: the name is a valid NUL-terminated string; the flags are valid.
        let fd = unsafe { libc::memfd_create(c"xway-bench-ceiling".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let size = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput);
        // SAFETY: `fd` is an open memfd owned here; the mapping is new, so it aliases nothing,
        // and it stays valid after the descriptor is closed.
        let ptr = unsafe {
            let ptr = match size {
                Ok(size) if libc::ftruncate(fd, size) == 0 => libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                ),
                _ => libc::MAP_FAILED,
            };
            let err = io::Error::last_os_error();
            libc::close(fd);
            if ptr == libc::MAP_FAILED {
                return Err(err);
            }
            ptr
        };
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).ok_or(io::ErrorKind::Other)?,
            len,
        })
    }

    fn counter(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= DATA);
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned), valid while `self`
        // lives, and only ever accessed atomically.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }

    /// The address of data byte `off`.
    fn data(&self, off: usize) -> *mut u8 {
        assert!(DATA + off < self.len);
        // SAFETY: in bounds (checked above).
        unsafe { self.ptr.as_ptr().add(DATA + off) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, and no borrow outlives self.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// How a side waits for the other: spin, or yield the CPU between polls once it has spun for
/// [`MAX_SPIN`] (at once if both sides share one CPU), and give up if the other side has stopped
/// (it can only have failed: the probe must not hang).
#[derive(Clone, Copy)]
struct Waiter<'a> {
    same_cpu: bool,
    /// Adds up the nanoseconds of the waits that outlasted [`MAX_SPIN`].
    long_waits: &'a AtomicU64,
    other_stopped: &'a AtomicBool,
}

impl Waiter<'_> {
    fn until(self, mut ready: impl FnMut() -> bool) -> io::Result<()> {
        let (mut spins, mut since, mut long) = (0u32, None, false);
        let result = loop {
            if ready() {
                break Ok(());
            }
            // Acquire: what the other side published before it stopped is seen by `ready`.
            if self.other_stopped.load(Ordering::Acquire) {
                break match ready() {
                    true => Ok(()),
                    false => Err(io::Error::other("copy ceiling: the other thread failed")),
                };
            }
            spins = spins.wrapping_add(1);
            if !long && spins % 64 == 0 {
                long = since.get_or_insert_with(Instant::now).elapsed() >= MAX_SPIN;
            }
            if self.same_cpu || long {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        };
        if let (true, Some(since)) = (long, since) {
            let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.long_waits.fetch_add(ns, Ordering::Relaxed);
        }
        result
    }
}

/// Sets its flag when dropped: how each thread tells the other it has stopped, even by panicking.
struct Stopped<'a>(&'a AtomicBool);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What [`measure`] measured.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ceiling {
    /// The timed transfer's speed, GB/s (10^9 B/s).
    pub(crate) gbps: f64,
    /// The writer's and the reader's CPU.
    pub(crate) cpus: (usize, usize),
    /// The share of the two threads' time spent in waits that outlasted [`MAX_SPIN`] (0 to 1).
    /// Near zero when both really ran side by side; high when they did not (another task on one
    /// of the CPUs, or the host running the two vCPUs in turn): a side spinning while the other
    /// is not running moves nothing, so the probe then understates what the copies could do.
    pub(crate) stalled: f64,
}

/// Moves `warm` then `total` bytes through a `ring`-byte shared ring in `chunk`-byte writes, the
/// writer on CPU `cpus.0` and the reader on `cpus.1`, and measures the timed transfer.
pub(crate) fn measure(
    ring: usize,
    chunk: usize,
    warm: u64,
    total: u64,
    cpus: (usize, usize),
) -> io::Result<Ceiling> {
    assert!(ring.is_power_of_two() && chunk > 0 && chunk <= ring);
    let map = Mapping::new(DATA + ring)?;
    let map = &map;
    // Where stream position `pos` lives, and how many bytes follow it before the ring wraps.
    let at = move |pos: u64| {
        let off = (pos % ring as u64) as usize;
        (map.data(off), ring - off)
    };
    let (head, tail) = (map.counter(HEAD), map.counter(TAIL));
    let end = warm + total;
    let (writer_stopped, reader_stopped) = (AtomicBool::new(false), AtomicBool::new(false));
    let same_cpu = cpus.0 == cpus.1;
    let long_waits = AtomicU64::new(0);
    std::thread::scope(|s| {
        let reader = s.spawn(|| -> io::Result<()> {
            let _stopped = Stopped(&reader_stopped);
            crate::measure::pin_to(cpus.1);
            let wait = Waiter {
                same_cpu,
                long_waits: &long_waits,
                other_stopped: &writer_stopped,
            };
            let mut buf = vec![0u8; chunk];
            let mut pos = 0u64;
            while pos < end {
                let mut avail = 0;
                wait.until(|| {
                    avail = head.load(Ordering::Acquire) - pos;
                    avail > 0
                })?;
                let n = avail.min(chunk as u64) as usize;
                let (src, contiguous) = at(pos);
                let first = n.min(contiguous);
                // SAFETY: the writer published bytes `pos..pos + n` (the Acquire load of
                // `head`) and writes them again only after `tail` has passed them; `first` bytes
                // at `src` and the rest at the ring's start lie inside the mapping; `buf` is
                // private and at least `n` long.
                unsafe {
                    std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), first);
                    std::ptr::copy_nonoverlapping(at(0).0, buf.as_mut_ptr().add(first), n - first);
                }
                pos += n as u64;
                tail.store(pos, Ordering::Release);
            }
            std::hint::black_box(&buf);
            Ok(())
        });
        let writer = s.spawn(|| -> io::Result<f64> {
            let _stopped = Stopped(&writer_stopped);
            crate::measure::pin_to(cpus.0);
            let wait = Waiter {
                same_cpu,
                long_waits: &long_waits,
                other_stopped: &reader_stopped,
            };
            let src: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8).collect();
            let mut pos = 0u64;
            let mut started = Instant::now();
            while pos < end {
                if pos == warm {
                    // As the benchmark does: the warm-up is all read before the timing starts.
                    wait.until(|| tail.load(Ordering::Acquire) == warm)?;
                    long_waits.store(0, Ordering::Relaxed);
                    started = Instant::now();
                }
                // Chunks end exactly at `warm`, so the timing starts there.
                let n = (chunk as u64).min(if pos < warm { warm } else { end } - pos) as usize;
                wait.until(|| ring as u64 - (pos - tail.load(Ordering::Acquire)) >= n as u64)?;
                let (dst, contiguous) = at(pos);
                let first = n.min(contiguous);
                // SAFETY: the reader is done with what these positions held (the Acquire load of
                // `tail`) and reads them only after `head` has passed them; the ranges lie
                // inside the mapping; `src` is private and at least `n` long.
                unsafe {
                    std::ptr::copy_nonoverlapping(src.as_ptr(), dst, first);
                    std::ptr::copy_nonoverlapping(src.as_ptr().add(first), at(0).0, n - first);
                }
                pos += n as u64;
                head.store(pos, Ordering::Release);
            }
            wait.until(|| tail.load(Ordering::Acquire) == end)?;
            Ok(started.elapsed().as_secs_f64())
        });
        let failed = || io::Error::other("copy ceiling: a thread panicked");
        let secs = writer.join().map_err(|_| failed())?;
        reader.join().map_err(|_| failed())??;
        let secs = secs?;
        Ok(Ceiling {
            gbps: total as f64 / 1e9 / secs,
            cpus,
            stalled: long_waits.load(Ordering::Relaxed) as f64 / 1e9 / (2.0 * secs),
        })
    })
}
