//! The one door to the Xen devices: opening `/dev/xen/*`, their ioctls, and `mmap`/`munmap`
//! of granted pages. Elsewhere in the xen provider, `unsafe` appears only in the two
//! `unsafe impl SharedMemory` (gntalloc, gntdev), which state why their mappings qualify.
//!
//! Argument structs and request numbers come from `xway-sys` (bindgen output of the Linux UAPI
//! headers `xen/evtchn.h`, `xen/gntalloc.h`, `xen/gntdev.h`). Every function here is safe to
//! call with any arguments: a wrong descriptor or a bad value is an error from the kernel, never
//! undefined behaviour. Each `unsafe` block states the one thing it relies on.
//!
//! Reads and writes of pending ports (`/dev/xen/evtchn`) and of XenStore messages need no
//! `unsafe` and are done with `std::fs::File` in their modules.

use std::ffi::{c_int, c_void, CStr};
use std::fmt;
use std::fs::File;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::{addr_of, addr_of_mut, NonNull};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use xway_sys as x;

use super::PAGE_SIZE;

/// A Xen device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Device {
    Evtchn,
    Gntalloc,
    Gntdev,
    Xenbus,
}

impl Device {
    fn path(self) -> &'static CStr {
        match self {
            Device::Evtchn => c"/dev/xen/evtchn",
            Device::Gntalloc => c"/dev/xen/gntalloc",
            Device::Gntdev => c"/dev/xen/gntdev",
            Device::Xenbus => c"/dev/xen/xenbus",
        }
    }

    pub(crate) fn path_str(self) -> &'static str {
        match self {
            Device::Evtchn => "/dev/xen/evtchn",
            Device::Gntalloc => "/dev/xen/gntalloc",
            Device::Gntdev => "/dev/xen/gntdev",
            Device::Xenbus => "/dev/xen/xenbus",
        }
    }

    /// The kernel module (or configuration) that provides the node.
    fn provider(self) -> &'static str {
        match self {
            Device::Evtchn => "kernel module xen-evtchn",
            Device::Gntalloc => "kernel module xen-gntalloc",
            Device::Gntdev => "kernel module xen-gntdev",
            Device::Xenbus => "kernel's xenbus frontend (CONFIG_XEN_XENBUS_FRONTEND)",
        }
    }
}

/// A failed open of a Xen device: keeps the OS error's kind, says which device and why.
#[derive(Debug)]
struct OpenError {
    device: Device,
    source: io::Error,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.device.path_str();
        match self.source.kind() {
            io::ErrorKind::NotFound => write!(
                f,
                "{path}: not found (this is not a Xen guest, or the {} is not loaded)",
                self.device.provider()
            ),
            io::ErrorKind::PermissionDenied => write!(
                f,
                "{path}: permission denied (needs root, or a udev rule giving this user access)"
            ),
            _ => write!(f, "{path}: {}", self.source),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Turns `-1` into the thread's `errno`, retrying on `EINTR` (the Xen drivers act only after
/// their interruptible waits, so an interrupted call did nothing).
fn cvt(mut f: impl FnMut() -> c_int) -> io::Result<c_int> {
    loop {
        let r = f();
        if r != -1 {
            return Ok(r);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Opens a Xen device read-write, close-on-exec and non-blocking.
pub(crate) fn open_device(device: Device) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: the path is a valid NUL-terminated string; open has no other preconditions.
    let fd = cvt(|| unsafe { libc::open(device.path().as_ptr(), flags) }).map_err(|source| {
        let kind = source.kind();
        io::Error::new(kind, OpenError { device, source })
    })?;
    // SAFETY: `fd` was just returned by a successful open, so it is open and owned by nobody
    // else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The kernel's page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(0)
}

fn require_xen_pages() -> io::Result<()> {
    let page = page_size();
    if page == PAGE_SIZE {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("kernel page size {page} differs from the Xen page size {PAGE_SIZE}"),
        ))
    }
}

/// Issues a Xen ioctl whose argument is `arg`.
///
/// # Safety
///
/// `arg` must point to a value of the struct that `request` expects, valid for reads and
/// writes of the whole size the kernel uses for it (for the variable-length structs: the
/// element count they announce).
unsafe fn ioctl(fd: BorrowedFd<'_>, request: u32, arg: *mut c_void) -> io::Result<c_int> {
    // SAFETY: the caller guarantees `arg` matches `request`; the descriptor is borrowed, so
    // open for the call.
    cvt(|| unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) })
}

fn as_arg<T>(arg: &mut T) -> *mut c_void {
    (arg as *mut T).cast()
}

// ---- /dev/xen/evtchn -------------------------------------------------------------------------

/// Allocates a port that `remote` can bind to; returns the local port.
pub(crate) fn evtchn_bind_unbound_port(fd: BorrowedFd<'_>, remote: u16) -> io::Result<u32> {
    let mut arg = x::ioctl_evtchn_bind_unbound_port {
        remote_domain: remote.into(),
    };
    // SAFETY: `arg` is the struct IOCTL_EVTCHN_BIND_UNBOUND_PORT takes.
    let port = unsafe { ioctl(fd, x::IOCTL_EVTCHN_BIND_UNBOUND_PORT, as_arg(&mut arg)) }?;
    Ok(port as u32)
}

/// Connects to port `remote_port` of domain `remote`; returns the local port. Xen marks the
/// new local port pending (events on the remote end may have been lost before).
pub(crate) fn evtchn_bind_interdomain(
    fd: BorrowedFd<'_>,
    remote: u16,
    remote_port: u32,
) -> io::Result<u32> {
    let mut arg = x::ioctl_evtchn_bind_interdomain {
        remote_domain: remote.into(),
        remote_port,
    };
    // SAFETY: `arg` is the struct IOCTL_EVTCHN_BIND_INTERDOMAIN takes.
    let port = unsafe { ioctl(fd, x::IOCTL_EVTCHN_BIND_INTERDOMAIN, as_arg(&mut arg)) }?;
    Ok(port as u32)
}

/// Unbinds a port bound through `fd`.
pub(crate) fn evtchn_unbind(fd: BorrowedFd<'_>, port: u32) -> io::Result<()> {
    let mut arg = x::ioctl_evtchn_unbind { port };
    // SAFETY: `arg` is the struct IOCTL_EVTCHN_UNBIND takes.
    unsafe { ioctl(fd, x::IOCTL_EVTCHN_UNBIND, as_arg(&mut arg)) }.map(drop)
}

/// Sends an event on a port bound through `fd`.
pub(crate) fn evtchn_notify(fd: BorrowedFd<'_>, port: u32) -> io::Result<()> {
    let mut arg = x::ioctl_evtchn_notify { port };
    // SAFETY: `arg` is the struct IOCTL_EVTCHN_NOTIFY takes.
    unsafe { ioctl(fd, x::IOCTL_EVTCHN_NOTIFY, as_arg(&mut arg)) }.map(drop)
}

/// Empties the pending-port buffer and clears its overflow condition. Ports dropped by the
/// overflow stay masked: the caller unmasks every port it owns afterwards.
pub(crate) fn evtchn_reset(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: IOCTL_EVTCHN_RESET takes no argument; the kernel ignores the pointer.
    unsafe { ioctl(fd, x::IOCTL_EVTCHN_RESET, std::ptr::null_mut()) }.map(drop)
}

// ---- variable-length ioctl arguments ----------------------------------------------------------

/// An 8-byte aligned, zeroed buffer for a C struct that ends in a `[T; 1]` array really
/// holding `count` elements (see the `xway-sys` crate docs).
struct VarArg {
    words: Vec<u64>,
}

impl VarArg {
    /// Room for `S` with `count >= 1` elements of `E` in its trailing array.
    fn new<S, E>(count: usize) -> io::Result<VarArg> {
        let bytes = (count - 1)
            .checked_mul(size_of::<E>())
            .and_then(|b| b.checked_add(size_of::<S>()))
            .ok_or(io::ErrorKind::InvalidInput)?;
        Ok(VarArg {
            words: vec![0u64; bytes.div_ceil(8)],
        })
    }

    fn ptr<S>(&mut self) -> *mut S {
        self.words.as_mut_ptr().cast::<S>()
    }
}

fn check_count(count: usize) -> io::Result<u32> {
    if count == 0 || count > super::MAX_GRANT_PAGES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{count} pages: must be between 1 and {}",
                super::MAX_GRANT_PAGES
            ),
        ));
    }
    Ok(count as u32)
}

// ---- /dev/xen/gntalloc -------------------------------------------------------------------------

/// Grants `count` fresh zeroed pages to `domid`. Returns the file offset to `mmap` them at and
/// one grant ref per page.
pub(crate) fn gntalloc_alloc(
    fd: BorrowedFd<'_>,
    domid: u16,
    writable: bool,
    count: usize,
) -> io::Result<(u64, Vec<u32>)> {
    let n = check_count(count)?;
    let mut buf = VarArg::new::<x::ioctl_gntalloc_alloc_gref, u32>(count)?;
    let p = buf.ptr::<x::ioctl_gntalloc_alloc_gref>();
    // SAFETY: `p` is 8-aligned and the buffer holds at least one whole struct (VarArg::new).
    unsafe {
        p.write(x::ioctl_gntalloc_alloc_gref {
            domid,
            flags: if writable {
                x::GNTALLOC_FLAG_WRITABLE as u16
            } else {
                0
            },
            count: n,
            index: 0,
            gref_ids: [0],
        })
    };
    // SAFETY: the buffer is the struct IOCTL_GNTALLOC_ALLOC_GREF takes with room for `count`
    // refs, as its `count` field says.
    unsafe { ioctl(fd, x::IOCTL_GNTALLOC_ALLOC_GREF, p.cast()) }?;
    // SAFETY: `p` points to the initialised struct; the kernel wrote `index` and `count` refs,
    // all within the buffer, and the element pointers derive from the whole buffer.
    let (index, refs) = unsafe {
        let refs = addr_of!((*p).gref_ids).cast::<u32>();
        let refs = (0..count).map(|i| refs.add(i).read()).collect();
        (addr_of!((*p).index).read(), refs)
    };
    Ok((index, refs))
}

/// Drops this descriptor's hold on `count` grants starting at file offset `index`. The pages
/// and grants go away once they are also unmapped here and by the peer.
pub(crate) fn gntalloc_dealloc(fd: BorrowedFd<'_>, index: u64, count: usize) -> io::Result<()> {
    let mut arg = x::ioctl_gntalloc_dealloc_gref {
        index,
        count: check_count(count)?,
    };
    // SAFETY: `arg` is the struct IOCTL_GNTALLOC_DEALLOC_GREF takes.
    unsafe { ioctl(fd, x::IOCTL_GNTALLOC_DEALLOC_GREF, as_arg(&mut arg)) }.map(drop)
}

/// Sets the unmap notification of the page at file offset `index` (byte offset within the
/// page in the low bits). A `UNMAP_NOTIFY_SEND_EVENT` port must be bound in this process.
pub(crate) fn gntalloc_set_unmap_notify(
    fd: BorrowedFd<'_>,
    index: u64,
    action: u32,
    port: u32,
) -> io::Result<()> {
    let mut arg = x::ioctl_gntalloc_unmap_notify {
        index,
        action,
        event_channel_port: port,
    };
    // SAFETY: `arg` is the struct IOCTL_GNTALLOC_SET_UNMAP_NOTIFY takes.
    unsafe { ioctl(fd, x::IOCTL_GNTALLOC_SET_UNMAP_NOTIFY, as_arg(&mut arg)) }.map(drop)
}

// ---- /dev/xen/gntdev ----------------------------------------------------------------------------

/// Registers `refs` of domain `domid` for mapping; returns the file offset to `mmap` them at.
/// Nothing is mapped until the `mmap`.
pub(crate) fn gntdev_map(fd: BorrowedFd<'_>, domid: u16, refs: &[u32]) -> io::Result<u64> {
    let n = check_count(refs.len())?;
    let mut buf =
        VarArg::new::<x::ioctl_gntdev_map_grant_ref, x::ioctl_gntdev_grant_ref>(refs.len())?;
    let p = buf.ptr::<x::ioctl_gntdev_map_grant_ref>();
    // SAFETY: `p` is 8-aligned and the buffer holds the struct plus `refs.len() - 1` more
    // elements (VarArg::new); the element pointers derive from the whole buffer.
    unsafe {
        p.write(x::ioctl_gntdev_map_grant_ref {
            count: n,
            pad: 0,
            index: 0,
            refs: [x::ioctl_gntdev_grant_ref::default()],
        });
        let elems = addr_of_mut!((*p).refs).cast::<x::ioctl_gntdev_grant_ref>();
        for (i, r) in refs.iter().enumerate() {
            elems.add(i).write(x::ioctl_gntdev_grant_ref {
                domid: domid.into(),
                ref_: *r,
            });
        }
    }
    // SAFETY: the buffer is the struct IOCTL_GNTDEV_MAP_GRANT_REF takes with `count` refs.
    unsafe { ioctl(fd, x::IOCTL_GNTDEV_MAP_GRANT_REF, p.cast()) }?;
    // SAFETY: `p` points to the initialised struct, whose `index` the kernel wrote.
    Ok(unsafe { addr_of!((*p).index).read() })
}

/// Forgets the `count` grants registered at file offset `index`; they are unmapped from Xen
/// when the last `mmap` of them goes away.
pub(crate) fn gntdev_unmap(fd: BorrowedFd<'_>, index: u64, count: usize) -> io::Result<()> {
    let mut arg = x::ioctl_gntdev_unmap_grant_ref {
        index,
        count: check_count(count)?,
        pad: 0,
    };
    // SAFETY: `arg` is the struct IOCTL_GNTDEV_UNMAP_GRANT_REF takes.
    unsafe { ioctl(fd, x::IOCTL_GNTDEV_UNMAP_GRANT_REF, as_arg(&mut arg)) }.map(drop)
}

/// Sets the unmap notification of a mapping; `index` is the mapping's file offset plus the
/// byte offset. `UNMAP_NOTIFY_CLEAR_BYTE` needs a writable mapping, `UNMAP_NOTIFY_SEND_EVENT` a
/// port bound in this process.
pub(crate) fn gntdev_set_unmap_notify(
    fd: BorrowedFd<'_>,
    index: u64,
    action: u32,
    port: u32,
) -> io::Result<()> {
    let mut arg = x::ioctl_gntdev_unmap_notify {
        index,
        action,
        event_channel_port: port,
    };
    // SAFETY: `arg` is the struct IOCTL_GNTDEV_SET_UNMAP_NOTIFY takes.
    unsafe { ioctl(fd, x::IOCTL_GNTDEV_SET_UNMAP_NOTIFY, as_arg(&mut arg)) }.map(drop)
}

// ---- mappings -----------------------------------------------------------------------------------

/// A shared mapping of `pages` pages of a gntalloc or gntdev descriptor, unmapped on drop.
#[derive(Debug)]
pub(crate) struct PageMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; it is reached only through raw
// pointers by its owners (gntalloc/gntdev wrappers and `Region`), which is sound from any
// thread.
unsafe impl Send for PageMapping {}
// SAFETY: as for Send: no references into the mapping are handed out.
unsafe impl Sync for PageMapping {}

/// The protection and `mmap` offset of a shared device mapping.
fn prot_and_offset(writable: bool, offset: u64) -> io::Result<(libc::c_int, libc::off_t)> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    Ok((prot, offset))
}

impl PageMapping {
    /// Maps `pages` pages at file offset `offset` of `fd`, shared, read-only or read-write.
    ///
    /// A grant mapping never shrinks or moves while mapped: Xen keeps a granted page alive while
    /// any domain maps it, even after the granting domain has died.
    pub(crate) fn map(
        fd: BorrowedFd<'_>,
        offset: u64,
        pages: usize,
        writable: bool,
    ) -> io::Result<PageMapping> {
        check_count(pages)?;
        require_xen_pages()?;
        let len = pages * PAGE_SIZE;
        let (prot, offset) = prot_and_offset(writable, offset)?;
        // SAFETY: a fresh mapping placed by the kernel (addr NULL) cannot alias existing memory;
        // descriptor, length and offset are checked by the kernel.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(PageMapping { ptr, len })
    }

    /// Reserves `pages` pages of address space, inaccessible until [`PageMapping::map_fixed`]
    /// puts a device mapping over a part of it: pieces mapped separately (with different
    /// protections) then form one contiguous range.
    pub(crate) fn reserve(pages: usize) -> io::Result<PageMapping> {
        check_count(pages)?;
        require_xen_pages()?;
        let len = pages * PAGE_SIZE;
        // SAFETY: a fresh anonymous mapping placed by the kernel (addr NULL) cannot alias
        // existing memory; PROT_NONE makes any stray access fault instead of reading zeroes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(PageMapping { ptr, len })
    }

    /// Maps `pages` pages at file offset `offset` of `fd` over pages `at..at + pages` of this
    /// mapping (shared, read-only or read-write), replacing what was there.
    pub(crate) fn map_fixed(
        &self,
        at: usize,
        fd: BorrowedFd<'_>,
        offset: u64,
        pages: usize,
        writable: bool,
    ) -> io::Result<()> {
        check_count(pages)?;
        if at
            .checked_add(pages)
            .is_none_or(|end| end * PAGE_SIZE > self.len)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pages {at}+{pages} outside a mapping of {} bytes", self.len),
            ));
        }
        let (prot, offset) = prot_and_offset(writable, offset)?;
        // SAFETY: the target range lies within this mapping (checked above), which this value
        // owns: MAP_FIXED can only replace our own pages. The caller builds the mapping before
        // anything reads or writes it (no Rust reference into it exists in any case).
        let ptr = unsafe {
            libc::mmap(
                self.ptr.as_ptr().add(at * PAGE_SIZE).cast::<c_void>(),
                pages * PAGE_SIZE,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Start of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for PageMapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe a mapping this value created and nobody else unmaps; its
        // owners keep it alive for as long as any pointer into it is used.
        unsafe { libc::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}

// ---- tokio ----------------------------------------------------------------------------------------

/// Registers an open file with the current tokio reactor.
///
/// Fails (instead of panicking, as tokio would) outside a runtime.
pub(crate) fn register(file: File, interest: Interest) -> io::Result<AsyncFd<File>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other(
            "xway: the xen provider needs a tokio runtime (called outside one)",
        ));
    }
    // SAFETY: a File owns its descriptor until dropped, and the AsyncFd owns the File from here
    // on, so the descriptor stays open, refers to the same file description, and `as_raw_fd`
    // returns the same number for the AsyncFd's whole lifetime.
    unsafe { AsyncFd::register_with_interest(file, interest) }.map_err(|e| e.into_parts().1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn var_arg_buffers_have_the_documented_sizes() {
        // 20 + 4n rounded up to 8, and 16 + 8n (xway-sys crate docs).
        for n in [1usize, 2, 3, 512, 8193] {
            let a = VarArg::new::<x::ioctl_gntalloc_alloc_gref, u32>(n).unwrap();
            assert!(a.words.len() * 8 >= size_of::<x::ioctl_gntalloc_alloc_gref>());
            assert!(a.words.len() * 8 >= 20 + 4 * n);
            let m =
                VarArg::new::<x::ioctl_gntdev_map_grant_ref, x::ioctl_gntdev_grant_ref>(n).unwrap();
            assert_eq!(m.words.len() * 8, 16 + 8 * n);
        }
    }

    #[test]
    fn counts_are_bounded_before_anything_reaches_the_kernel() {
        // Any descriptor will do: the count check comes first.
        let f = File::open("/dev/null").unwrap();
        for bad in [0, super::super::MAX_GRANT_PAGES + 1] {
            let e = gntalloc_alloc(f.as_fd(), 0, true, bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            let refs = vec![1u32; bad];
            let e = gntdev_map(f.as_fd(), 0, &refs).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            let e = PageMapping::map(f.as_fd(), 0, bad, true).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        }
    }

    #[test]
    fn ioctls_on_a_non_xen_descriptor_fail_cleanly() {
        let f = File::open("/dev/null").unwrap();
        let fd = f.as_fd();
        assert!(evtchn_bind_unbound_port(fd, 0).is_err());
        assert!(evtchn_bind_interdomain(fd, 0, 1).is_err());
        assert!(evtchn_unbind(fd, 1).is_err());
        assert!(evtchn_notify(fd, 1).is_err());
        assert!(evtchn_reset(fd).is_err());
        assert!(gntalloc_alloc(fd, 0, true, 2).is_err());
        assert!(gntalloc_dealloc(fd, 0, 2).is_err());
        assert!(gntalloc_set_unmap_notify(fd, 0, 1, 0).is_err());
        assert!(gntdev_map(fd, 0, &[8, 9]).is_err());
        assert!(gntdev_unmap(fd, 0, 2).is_err());
        assert!(gntdev_set_unmap_notify(fd, 0, 1, 0).is_err());
    }

    #[test]
    fn missing_devices_say_which_and_why() {
        if std::path::Path::new("/dev/xen").exists() {
            return;
        }
        for d in [
            Device::Evtchn,
            Device::Gntalloc,
            Device::Gntdev,
            Device::Xenbus,
        ] {
            let e = open_device(d).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
            let msg = e.to_string();
            assert!(msg.starts_with(d.path_str()), "{msg}");
            assert!(msg.contains("not a Xen guest"), "{msg}");
        }
    }

    #[test]
    fn register_outside_a_runtime_is_an_error_not_a_panic() {
        let f = File::open("/dev/null").unwrap();
        let e = register(f, Interest::READABLE).unwrap_err();
        assert!(e.to_string().contains("tokio runtime"), "{e}");
    }
}
