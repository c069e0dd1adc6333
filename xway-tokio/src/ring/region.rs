//! Disciplined access to memory that another party can write.
//!
//! This is the only module of the ring core that contains `unsafe`. It follows two rules, in the
//! spirit of rust-vmm's `vm-memory`:
//!
//! 1. No `&` or `&mut` to plain data in the shared region is ever created. Bytes move in and out
//!    with raw-pointer copies into private buffers; 32-bit control words are reached only as
//!    atomics.
//! 2. Every offset is bounds-checked against the mapping. Offsets never come from the peer: they
//!    are computed from a layout that was validated before the region was used, so a failed check
//!    here is a bug in xway, not peer input, and it panics.
//!
//! The peer may change any byte at any time. Values loaded from here are therefore *claims*: the
//! callers load each one once, validate it, and only then act on it.
//!
//! Under `cfg(xway_loom)` the region is simulated by loom atomics and cells so that the model checker
//! sees every access the ring protocol makes (see `tests/loom_ring.rs`).

use std::fmt;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Memory shared with a peer: a memfd mapping, granted Xen pages, or (in tests) a heap buffer.
///
/// # Safety
///
/// Implementors guarantee, for as long as the value is alive:
/// - `as_ptr()` is non-null, 8-byte aligned, never changes, and is valid for reads of `len()`
///   bytes and for writes of every one of them outside `read_only()` (the mapping cannot
///   shrink or move under us, e.g. memfds are sealed);
/// - `read_only()` never changes and lies within `0..len()`;
/// - nothing else in this process holds a Rust reference into that memory.
///
/// The memory may be modified concurrently by another process or domain at any time; users of
/// [`Region`] account for that, implementors need not.
pub(crate) unsafe trait SharedMemory: Send + Sync + fmt::Debug {
    /// Start of the shared bytes.
    fn as_ptr(&self) -> *mut u8;
    /// Length of the shared bytes.
    fn len(&self) -> usize;
    /// Bytes this side may only read (the peer's data ring, where the provider can map it
    /// read-only). [`Region`] refuses, with a panic, to write there or to use it for control
    /// words: only a bug in xway could try, never peer input.
    fn read_only(&self) -> Range<usize> {
        0..0
    }
}

/// A cheaply clonable handle to a shared region, keeping the mapping alive.
#[cfg(not(xway_loom))]
#[derive(Clone)]
pub(crate) struct Region {
    base: *mut u8,
    len: usize,
    read_only: Range<usize>,
    _mem: Arc<dyn SharedMemory>,
}

// SAFETY: `Region` only reaches the memory through atomics and raw-pointer copies, which are
// sound to perform from any thread; the mapping is kept alive by `_mem`, which is Send + Sync.
#[cfg(not(xway_loom))]
unsafe impl Send for Region {}
// SAFETY: as for Send: no method hands out references, so shared use across threads is sound.
#[cfg(not(xway_loom))]
unsafe impl Sync for Region {}

#[cfg(not(xway_loom))]
impl Region {
    /// Wraps shared memory. The contract of [`SharedMemory`] is what every access below relies on.
    pub(crate) fn new(mem: Arc<dyn SharedMemory>) -> Region {
        let base = mem.as_ptr();
        let len = mem.len();
        let read_only = mem.read_only();
        assert!(
            !base.is_null() && base as usize % 8 == 0,
            "shared region must be 8-aligned"
        );
        assert!(
            read_only.start <= read_only.end && read_only.end <= len,
            "read-only range {read_only:?} outside region of {len} bytes"
        );
        Region {
            base,
            len,
            read_only,
            _mem: mem,
        }
    }

    /// Length of the region in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn word(&self, off: usize) -> &std::sync::atomic::AtomicU32 {
        assert!(
            off % 4 == 0 && off.checked_add(4).is_some_and(|end| end <= self.len),
            "xway bug: control word offset {off} outside region of {} bytes",
            self.len
        );
        self.check_writable(off, 4);
        // SAFETY: the offset is in bounds, 4-aligned (base is 8-aligned) and outside the
        // read-only range (checked above), the memory is valid for reads and writes for the
        // lifetime of `self` (SharedMemory contract), and it is only ever accessed
        // atomically by this process, so viewing it as an AtomicU32 is sound. The peer's
        // concurrent writes are the cross-process equivalent of another thread's atomic stores.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.base.add(off).cast::<u32>()) }
    }

    fn check_range(&self, off: usize, n: usize) {
        assert!(
            off.checked_add(n).is_some_and(|end| end <= self.len),
            "xway bug: byte range {off}+{n} outside region of {} bytes",
            self.len
        );
    }

    fn check_writable(&self, off: usize, n: usize) {
        let Range { start, end } = self.read_only;
        assert!(
            n == 0 || off + n <= start || off >= end,
            "xway bug: write of {off}+{n} into the read-only range {start}..{end}"
        );
    }

    /// Copies `src` into the region at `off`.
    pub(crate) fn write_bytes(&self, off: usize, src: &[u8]) {
        self.check_range(off, src.len());
        self.check_writable(off, src.len());
        // SAFETY: the destination range is in bounds and outside the read-only range (checked
        // above), so valid for writes (SharedMemory contract); `src` is private memory, so the
        // two cannot overlap. No reference into the region is created.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(off), src.len()) }
    }

    /// Copies bytes from the region at `off` into `dst`.
    ///
    /// The peer may be writing the same bytes concurrently (only if it breaks the protocol); the
    /// copy then yields some mix of old and new bytes, which is no worse than the peer sending
    /// garbage. Nothing is interpreted from data bytes, so this cannot cause undefined behaviour
    /// in xway's logic.
    pub(crate) fn read_bytes(&self, off: usize, dst: &mut [MaybeUninit<u8>]) {
        self.check_range(off, dst.len());
        // SAFETY: the source range is in bounds (checked above) and valid for reads
        // (SharedMemory contract); `dst` is private memory, so the two cannot overlap, and
        // writing initialised bytes into `MaybeUninit` storage is always allowed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.add(off),
                dst.as_mut_ptr().cast::<u8>(),
                dst.len(),
            )
        }
    }

    pub(crate) fn load(&self, off: usize, order: Ordering) -> u32 {
        self.word(off).load(order)
    }

    pub(crate) fn store(&self, off: usize, value: u32, order: Ordering) {
        self.word(off).store(value, order)
    }

    pub(crate) fn fetch_or(&self, off: usize, bits: u32, order: Ordering) -> u32 {
        self.word(off).fetch_or(bits, order)
    }

    pub(crate) fn fetch_and(&self, off: usize, bits: u32, order: Ordering) -> u32 {
        self.word(off).fetch_and(bits, order)
    }

    pub(crate) fn compare_exchange(&self, off: usize, current: u32, new: u32) -> Result<u32, u32> {
        self.word(off)
            .compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst)
    }
}

#[cfg(not(xway_loom))]
impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region").field("len", &self.len).finish()
    }
}

/// A heap-backed region, for tests and fuzzing: the "peer" is the test itself.
#[cfg(any(test, fuzzing))]
#[derive(Debug)]
pub(crate) struct HeapMemory {
    words: Box<[u64]>,
    read_only: Range<usize>,
}

#[cfg(any(test, fuzzing))]
impl HeapMemory {
    pub(crate) fn new(len: usize) -> Arc<HeapMemory> {
        HeapMemory::with_read_only(len, 0..0)
    }

    /// A heap region that declares `read_only` as such (the heap stays writable: this tests
    /// that [`Region`] never writes there).
    pub(crate) fn with_read_only(len: usize, read_only: Range<usize>) -> Arc<HeapMemory> {
        Arc::new(HeapMemory {
            words: vec![0u64; len.div_ceil(8)].into_boxed_slice(),
            read_only,
        })
    }
}

// SAFETY: the boxed slice is 8-aligned, never moves or shrinks while the Arc lives, and is only
// reached through `Region` (no references are handed out). Writes through the raw pointer are
// the same interior mutability as a peer's writes.
#[cfg(any(test, fuzzing))]
unsafe impl SharedMemory for HeapMemory {
    fn as_ptr(&self) -> *mut u8 {
        self.words.as_ptr() as *mut u8
    }
    fn len(&self) -> usize {
        self.words.len() * 8
    }
    fn read_only(&self) -> Range<usize> {
        self.read_only.clone()
    }
}

// ---- loom simulation -------------------------------------------------------------------------

#[cfg(xway_loom)]
#[derive(Clone)]
pub(crate) struct Region {
    words: Arc<Vec<loom::sync::atomic::AtomicU32>>,
    bytes: Arc<Vec<loom::cell::UnsafeCell<u8>>>,
}

// SAFETY: the simulated region stands for memory shared with another process; loom checks
// every access to its cells for races while it explores interleavings, which is the point.
#[cfg(xway_loom)]
unsafe impl Send for Region {}
// SAFETY: as for Send.
#[cfg(xway_loom)]
unsafe impl Sync for Region {}

#[cfg(xway_loom)]
impl Region {
    /// Under the loom model the region is simulated and `mem` is not used: only the ring's
    /// model tests run in that configuration.
    pub(crate) fn new(mem: Arc<dyn SharedMemory>) -> Region {
        Region::new_simulated(mem.len())
    }

    pub(crate) fn new_simulated(len: usize) -> Region {
        Region {
            words: Arc::new(
                (0..len / 4)
                    .map(|_| loom::sync::atomic::AtomicU32::new(0))
                    .collect(),
            ),
            bytes: Arc::new((0..len).map(|_| loom::cell::UnsafeCell::new(0)).collect()),
        }
    }
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }
    pub(crate) fn write_bytes(&self, off: usize, src: &[u8]) {
        for (i, b) in src.iter().enumerate() {
            // SAFETY: loom checks that no other access to this cell races with this one.
            self.bytes[off + i].with_mut(|p| unsafe { *p = *b });
        }
    }
    pub(crate) fn read_bytes(&self, off: usize, dst: &mut [MaybeUninit<u8>]) {
        for (i, b) in dst.iter_mut().enumerate() {
            // SAFETY: loom checks that no other access to this cell races with this one.
            b.write(self.bytes[off + i].with(|p| unsafe { *p }));
        }
    }
    pub(crate) fn load(&self, off: usize, order: Ordering) -> u32 {
        self.words[off / 4].load(order)
    }
    pub(crate) fn store(&self, off: usize, value: u32, order: Ordering) {
        self.words[off / 4].store(value, order)
    }
    pub(crate) fn fetch_or(&self, off: usize, bits: u32, order: Ordering) -> u32 {
        self.words[off / 4].fetch_or(bits, order)
    }
    pub(crate) fn fetch_and(&self, off: usize, bits: u32, order: Ordering) -> u32 {
        self.words[off / 4].fetch_and(bits, order)
    }
    pub(crate) fn compare_exchange(&self, off: usize, current: u32, new: u32) -> Result<u32, u32> {
        self.words[off / 4].compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst)
    }
}

#[cfg(xway_loom)]
impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Views initialised bytes as possibly-uninitialised storage, for the copy routines.
///
/// Only the ring's copy routines use the view, and they store nothing but initialised bytes
/// through it, so the original slice stays initialised.
pub(crate) fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: MaybeUninit<u8> has the layout of u8; see the function docs for why de-initialising
    // writes cannot happen through the returned view.
    unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) }
}
