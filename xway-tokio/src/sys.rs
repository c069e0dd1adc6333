//! The one door to the operating system for the local provider: memfd, mmap, doorbell socket
//! pairs, abstract Unix sockets with `SCM_RIGHTS`, and `SO_PEERCRED`.
//!
//! Every libc call goes through [`syscall!`], the only place where `-1`/`errno` becomes an
//! [`io::Error`]; every new file descriptor is wrapped in an [`OwnedFd`] on the line that creates
//! it, with `CLOEXEC` (and `NONBLOCK` where it is polled) set atomically.

use std::ffi::c_void;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use crate::ring::SharedMemory;

/// Calls a libc function and turns `-1` into `io::Error::last_os_error()`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: each call site passes arguments that satisfy the libc contract of `$fn`, as
        // stated in the SAFETY comment around the macro invocation.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Takes ownership of a descriptor a syscall just returned.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful syscall that creates a descriptor, so it is
    // open and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Creates a sealable, close-on-exec memfd of `len` bytes and seals its size.
///
/// Sealing against shrinking is what makes the peer's mapping safe: without it, the creator could
/// truncate the file and turn the peer's next access into `SIGBUS`.
pub(crate) fn memfd_sealed(len: usize) -> io::Result<OwnedFd> {
    let name = c"xway-ring";
    // SAFETY: `name` is a valid NUL-terminated string; flags are valid.
    let fd = owned(syscall!(memfd_create(
        name.as_ptr(),
        libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING
    ))?);
    let len = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `fd` is an open memfd.
    syscall!(ftruncate(fd.as_raw_fd(), len))?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: `fd` is an open memfd created with MFD_ALLOW_SEALING.
    syscall!(fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals))?;
    Ok(fd)
}

/// Checks that `fd` is a memfd of exactly `len` bytes that can never shrink.
pub(crate) fn check_sealed_memfd(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    // SAFETY: F_GET_SEALS takes no argument; a non-memfd fails with EINVAL.
    let seals = syscall!(fcntl(fd.as_raw_fd(), libc::F_GET_SEALS)).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ring fd is not a memfd: {e}"),
        )
    })?;
    if seals & libc::F_SEAL_SHRINK == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "ring memfd is not sealed against shrinking",
        ));
    }
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is valid for writes of a `stat`.
    syscall!(fstat(fd.as_raw_fd(), st.as_mut_ptr()))?;
    // SAFETY: fstat succeeded, so it initialised `st`.
    let size = unsafe { st.assume_init() }.st_size;
    if usize::try_from(size).ok() != Some(len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ring memfd has {size} bytes, the offer says {len}"),
        ));
    }
    Ok(())
}

/// A shared, read-write mapping of a whole file, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory, accessed only through `Region` (atomics and raw copies),
// which is sound from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as for Send.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared and read-write.
    ///
    /// The caller must have made sure the file cannot shrink below `len` while mapped
    /// ([`memfd_sealed`] or [`check_sealed_memfd`]); that is what makes the mapping a valid
    /// [`SharedMemory`].
    pub(crate) fn map_sealed(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL) cannot alias existing memory;
        // fd and len are checked by the kernel.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe a mapping this value created and nobody else unmaps; all
        // `Region`s over it hold an Arc to this value, so none outlives it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}

// SAFETY: the mapping is page-aligned, fixed for the value's lifetime, valid for `len` bytes
// (the file is sealed against shrinking, see `map_sealed`), and no references into it exist.
unsafe impl SharedMemory for Mapping {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn len(&self) -> usize {
        self.len
    }
}

/// A doorbell pair: a connected pair of Unix datagram sockets, non-blocking and
/// close-on-exec. A byte sent on one end makes the other end readable.
///
/// Sockets rather than eventfds, because the peer shares every descriptor it receives,
/// including its `O_NONBLOCK` flag: it could make an eventfd blocking and fill its counter, and
/// our next doorbell `write` would freeze our thread. [`doorbell_ring`] passes
/// `MSG_DONTWAIT`, which holds per call whatever the peer does to the file.
pub(crate) fn doorbell_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    let ty = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    syscall!(socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()))?;
    Ok((owned(fds[0]), owned(fds[1])))
}

/// Rings the peer: sends one byte on our end of a doorbell pair, never blocking.
///
/// A full queue (`WouldBlock`) means the peer has wake-ups it has not consumed yet: it is awake
/// already, so that is success.
pub(crate) fn doorbell_ring(fd: BorrowedFd<'_>) -> io::Result<()> {
    let byte = [1u8];
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: the buffer is one valid byte.
    match syscall!(send(
        fd.as_raw_fd(),
        byte.as_ptr().cast::<c_void>(),
        1,
        flags
    )) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// Consumes the wake-ups queued on our end of a doorbell pair, at most `max` of them.
/// Returns true if the queue is now empty.
pub(crate) fn doorbell_drain(fd: BorrowedFd<'_>, max: usize) -> io::Result<bool> {
    let mut buf = [0u8; 16];
    for _ in 0..max {
        // SAFETY: the buffer is valid for writes of its length.
        match syscall!(recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast::<c_void>(),
            buf.len(),
            libc::MSG_DONTWAIT
        )) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// True if `fd` is a Unix datagram socket (a peer could pass anything as its doorbell).
pub(crate) fn is_unix_dgram_socket(fd: BorrowedFd<'_>) -> bool {
    let int_opt = |opt| {
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` is valid for writes of `len` bytes.
        syscall!(getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast::<c_void>(),
            &mut len
        ))
        .map(|_| v)
    };
    int_opt(libc::SO_DOMAIN).ok() == Some(libc::AF_UNIX)
        && int_opt(libc::SO_TYPE).ok() == Some(libc::SOCK_DGRAM)
}

fn abstract_addr(name: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // Abstract namespace: a leading NUL, then the name (not NUL-terminated).
    if name.len() + 1 > addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "abstract socket name too long",
        ));
    }
    for (dst, src) in addr.sun_path[1..].iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + 1 + name.len();
    Ok((addr, len as libc::socklen_t))
}

fn unix_stream_socket() -> io::Result<OwnedFd> {
    let ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: no pointers.
    Ok(owned(syscall!(socket(libc::AF_UNIX, ty, 0))?))
}

/// Binds and listens on an abstract Unix socket (non-blocking).
pub(crate) fn listen_abstract(name: &[u8]) -> io::Result<OwnedFd> {
    let fd = unix_stream_socket()?;
    let (addr, len) = abstract_addr(name)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    syscall!(bind(
        fd.as_raw_fd(),
        (&addr as *const libc::sockaddr_un).cast(),
        len
    ))?;
    // SAFETY: no pointers.
    syscall!(listen(fd.as_raw_fd(), 1024))?;
    Ok(fd)
}

/// Connects to an abstract Unix socket without blocking: a full backlog is `WouldBlock`, a
/// missing name `ConnectionRefused`.
pub(crate) fn connect_abstract(name: &[u8]) -> io::Result<OwnedFd> {
    let fd = unix_stream_socket()?;
    let (addr, len) = abstract_addr(name)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    syscall!(connect(
        fd.as_raw_fd(),
        (&addr as *const libc::sockaddr_un).cast(),
        len
    ))?;
    Ok(fd)
}

/// Shuts a socket down for reading: the peer's further sends fail (`EPIPE`); what it sent
/// before can still be received.
pub(crate) fn shutdown_read(sock: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: no pointers.
    syscall!(shutdown(sock.as_raw_fd(), libc::SHUT_RD)).map(drop)
}

/// Accepts one pending connection without blocking.
pub(crate) fn accept_nonblocking(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: NULL address pointers are allowed by accept4.
    Ok(owned(syscall!(accept4(
        listener.as_raw_fd(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        flags
    ))?))
}

/// Credentials of the process at the other end of a Unix socket, as the kernel recorded them
/// when the connection was made (or the listening socket created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerCred {
    pub(crate) pid: i32,
    pub(crate) uid: u32,
}

pub(crate) fn peer_cred(sock: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let mut cred = MaybeUninit::<libc::ucred>::zeroed();
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is valid for writes of `len` bytes.
    syscall!(getsockopt(
        sock.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_PEERCRED,
        cred.as_mut_ptr().cast::<c_void>(),
        &mut len
    ))?;
    // SAFETY: zero-initialised and filled in by the kernel.
    let cred = unsafe { cred.assume_init() };
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
    })
}

/// This process's real user id.
pub(crate) fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The CPU this thread is running on (`sched_getcpu`, served by the vDSO: no system call).
/// `u32::MAX` if unknown, which never equals a peer's CPU.
pub(crate) fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).unwrap_or(u32::MAX)
}

/// Pins the calling thread to the CPU it is running on and returns that CPU (tests that need
/// "the peer shares our CPU" to stay true).
#[cfg(test)]
pub(crate) fn pin_to_current_cpu() -> u32 {
    let cpu = current_cpu();
    // SAFETY: an all-zero `cpu_set_t` is the empty set; `set` is a valid, initialised set for
    // the duration of the calls, which only read and write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        let pinned = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            pinned,
            0,
            "sched_setaffinity: {}",
            io::Error::last_os_error()
        );
    }
    cpu
}

/// True if `fd` polls writable (or failed, which a write would then report) right now.
pub(crate) fn is_writable_now(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the duration of the call; a zero timeout never
    // blocks.
    let polled = syscall!(poll(&mut pfd, 1, 0));
    matches!(polled, Ok(1)) && pfd.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0
}

/// Gives the CPU to another runnable thread, if any (`sched_yield`).
pub(crate) fn yield_cpu() {
    // SAFETY: sched_yield has no preconditions; it cannot fail on Linux.
    unsafe { libc::sched_yield() };
}

/// Room for this many descriptors in one message.
const MAX_FDS: usize = 4;
const CMSG_SPACE: usize = 64; // >= CMSG_SPACE(MAX_FDS * 4), checked in `cmsg_space_is_enough`

#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_SPACE]);

/// Sends `data` and `fds` (at most four, perhaps none) in one message, without blocking and
/// without `SIGPIPE`.
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    assert!(fds.len() <= MAX_FDS);
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    if fds.is_empty() {
        // SAFETY: `data` is valid for reads of its length for the duration of the call.
        let n = syscall!(send(
            sock.as_raw_fd(),
            data.as_ptr().cast::<c_void>(),
            data.len(),
            flags
        ))?;
        return Ok(n as usize);
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut c_void,
        iov_len: data.len(),
    };
    let mut cbuf = CmsgBuf([0; CMSG_SPACE]);
    let fd_bytes = fds.len() * size_of::<RawFd>();
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast::<c_void>();
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as _;
    // SAFETY: msg_control points to a buffer of at least msg_controllen bytes (asserted by the
    // test `cmsg_space_is_enough`), so CMSG_FIRSTHDR returns a valid, aligned header pointer and
    // CMSG_DATA a pointer with room for `fd_bytes`.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
        for (i, fd) in fds.iter().enumerate() {
            data.add(i).write_unaligned(fd.as_raw_fd());
        }
    }
    // SAFETY: msg and everything it points to are valid for the call.
    let n = syscall!(sendmsg(sock.as_raw_fd(), &msg, flags))?;
    Ok(n as usize)
}

/// Receives one message and up to four descriptors without blocking. Descriptors arrive
/// close-on-exec; if the kernel had to drop some (`MSG_CTRUNC`), the ones received are closed
/// and the call fails.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    data: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast::<c_void>(),
        iov_len: data.len(),
    };
    let mut cbuf = CmsgBuf([0; CMSG_SPACE]);
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast::<c_void>();
    msg.msg_controllen = CMSG_SPACE as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    // SAFETY: msg and the buffers it points to are valid for writes for the call.
    let n = syscall!(recvmsg(sock.as_raw_fd(), &mut msg, flags))? as usize;
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with well-formed cmsg headers within msg_controllen;
    // CMSG_FIRSTHDR/CMSG_NXTHDR walk them within that bound, and each SCM_RIGHTS payload holds
    // (cmsg_len - CMSG_LEN(0)) / 4 descriptors that now belong to this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..payload / size_of::<RawFd>() {
                    fds.push(owned(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too many descriptors in offer",
        ));
    }
    Ok((n, fds))
}

/// A private epoll set (close-on-exec), for a listener that watches many rendezvous
/// connections through one descriptor registered with tokio.
pub(crate) fn epoll_set() -> io::Result<OwnedFd> {
    // SAFETY: no pointers.
    Ok(owned(syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?))
}

/// Adds `fd` to the epoll set `ep`, level-triggered, for input and hang-up, tagged `token`.
/// Closing `fd` (its only descriptor) removes it again.
pub(crate) fn epoll_watch(ep: BorrowedFd<'_>, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
        u64: token,
    };
    // SAFETY: `event` is a valid epoll_event for the duration of the call.
    syscall!(epoll_ctl(
        ep.as_raw_fd(),
        libc::EPOLL_CTL_ADD,
        fd.as_raw_fd(),
        &mut event
    ))
    .map(drop)
}

/// The tokens of the descriptors in `ep` that are ready now, at most `tokens.len()` of them;
/// never waits.
pub(crate) fn epoll_ready(ep: BorrowedFd<'_>, tokens: &mut [u64]) -> io::Result<usize> {
    const MAX: usize = 32;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX];
    let max = tokens.len().min(MAX);
    // SAFETY: `events` has room for `max` entries; a zero timeout never blocks.
    let n = loop {
        match syscall!(epoll_wait(
            ep.as_raw_fd(),
            events.as_mut_ptr(),
            max as i32,
            0
        )) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other? as usize,
        }
    };
    for (token, event) in tokens.iter_mut().zip(&events[..n]) {
        *token = event.u64;
    }
    Ok(n)
}

/// A descriptor's number, for a tokio registration of a descriptor owned elsewhere (see
/// [`register_fd_number`]).
#[derive(Debug)]
pub(crate) struct FdNumber(RawFd);

impl AsRawFd for FdNumber {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Registers `fd` with the current tokio reactor for readability, without taking it over.
///
/// The caller keeps `fd` open for as long as the returned registration lives (drop the
/// registration first); that is what makes the registration sound.
///
/// # Panics
///
/// Outside a tokio runtime (tokio's rule).
pub(crate) fn register_fd_number(
    fd: BorrowedFd<'_>,
) -> io::Result<tokio::io::unix::AsyncFd<FdNumber>> {
    // SAFETY: the caller keeps the descriptor open, referring to the same file description,
    // until the registration is dropped (see the function docs), so `as_raw_fd` names the
    // registered descriptor for the registration's whole lifetime.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            FdNumber(fd.as_raw_fd()),
            tokio::io::Interest::READABLE,
        )
    }
    .map_err(|e| e.into_parts().1)
}

/// Registers a descriptor this process owns with the current tokio reactor for readability.
///
/// # Panics
///
/// Outside a tokio runtime (tokio's rule); every caller runs inside `connect` or `accept`.
pub(crate) fn register_readable(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open until dropped, and the AsyncFd owns it from here on, so the
    // descriptor stays valid, refers to the same file description, and `as_raw_fd` returns the
    // same number for the AsyncFd's whole lifetime.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Fills `buf` from the kernel's CRNG without waiting: `WouldBlock` while it is not seeded
/// yet. `getrandom()` would instead block the runtime thread until it is, which on a fresh VM
/// without a hardware RNG can take minutes (seen in the Xen test bed).
pub(crate) fn random_nonblocking(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, private memory the kernel may write.
        match syscall!(getrandom(
            rest.as_mut_ptr().cast(),
            rest.len(),
            libc::GRND_NONBLOCK
        )) {
            Ok(n) => filled += n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn random_bytes_come_without_waiting_once_the_pool_is_seeded() {
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        random_nonblocking(&mut a).unwrap();
        random_nonblocking(&mut b).unwrap();
        assert_ne!(a, b);
        random_nonblocking(&mut []).unwrap();
    }

    #[test]
    fn cmsg_space_is_enough() {
        // SAFETY: pure computation.
        let need = unsafe { libc::CMSG_SPACE((MAX_FDS * size_of::<RawFd>()) as u32) } as usize;
        assert!(need <= CMSG_SPACE);
    }

    #[test]
    fn sealed_memfd_passes_its_own_check_and_rejects_other_sizes() {
        let fd = memfd_sealed(8192).unwrap();
        check_sealed_memfd(fd.as_fd(), 8192).unwrap();
        assert!(check_sealed_memfd(fd.as_fd(), 4096).is_err());
        // SAFETY: fd is open.
        let r = unsafe { libc::ftruncate(fd.as_raw_fd(), 4096) };
        assert_eq!(r, -1, "shrinking a sealed memfd must fail");
    }

    #[test]
    fn unsealed_or_foreign_fds_are_rejected() {
        let (a, _b) = doorbell_pair().unwrap();
        assert!(check_sealed_memfd(a.as_fd(), 8).is_err());
        assert!(is_unix_dgram_socket(a.as_fd()));
        let m = memfd_sealed(4096).unwrap();
        assert!(!is_unix_dgram_socket(m.as_fd()));
        let l =
            listen_abstract(format!("xway-test/dgram/{}", std::process::id()).as_bytes()).unwrap();
        assert!(
            !is_unix_dgram_socket(l.as_fd()),
            "a stream socket is not a doorbell"
        );
    }

    #[test]
    fn doorbell_rings_reach_the_other_end_and_drain() {
        let (a, b) = doorbell_pair().unwrap();
        assert!(doorbell_drain(b.as_fd(), 8).unwrap(), "nothing queued yet");
        doorbell_ring(a.as_fd()).unwrap();
        doorbell_ring(a.as_fd()).unwrap();
        assert!(
            !doorbell_drain(b.as_fd(), 1).unwrap(),
            "one of two consumed"
        );
        assert!(doorbell_drain(b.as_fd(), 8).unwrap());
    }

    #[test]
    fn ringing_never_blocks_even_if_the_peer_makes_the_socket_blocking_and_full() {
        let (a, b) = doorbell_pair().unwrap();
        // What a hostile peer can do to the shared file: clear O_NONBLOCK, never read.
        // SAFETY: plain fcntl calls on a descriptor this test owns.
        unsafe {
            let flags = libc::fcntl(a.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(a.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
        for _ in 0..100_000 {
            doorbell_ring(a.as_fd()).unwrap();
        }
        drop(b);
    }

    #[test]
    fn fds_travel_over_an_abstract_socket_with_credentials() {
        let name = format!("xway-test/sys/{}", std::process::id());
        let l = listen_abstract(name.as_bytes()).unwrap();
        let c = connect_abstract(name.as_bytes()).unwrap();
        assert_eq!(peer_cred(c.as_fd()).unwrap().uid, current_uid());
        let (efd, _other) = doorbell_pair().unwrap();
        send_with_fds(c.as_fd(), b"hi", &[efd.as_fd(), efd.as_fd()]).unwrap();
        let s = accept_nonblocking(l.as_fd()).unwrap();
        assert_eq!(peer_cred(s.as_fd()).unwrap().pid, std::process::id() as i32);
        let mut buf = [0u8; 8];
        let (n, fds) = recv_with_fds(s.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(fds.len(), 2);
        assert!(is_unix_dgram_socket(fds[0].as_fd()));
        assert_eq!(
            recv_with_fds(s.as_fd(), &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn a_connection_shut_down_for_reading_still_delivers_what_came_before_and_refuses_more() {
        let name = format!("xway-test/sys/shut/{}", std::process::id());
        let l = listen_abstract(name.as_bytes()).unwrap();
        let c = connect_abstract(name.as_bytes()).unwrap();
        let s = accept_nonblocking(l.as_fd()).unwrap();
        let (bell, _other) = doorbell_pair().unwrap();
        send_with_fds(c.as_fd(), b"first", &[bell.as_fd()]).unwrap();
        shutdown_read(s.as_fd()).unwrap();
        let err = send_with_fds(c.as_fd(), b"second", &[bell.as_fd()]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let mut buf = [0u8; 8];
        let (n, fds) = recv_with_fds(s.as_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"first"[..], 1));
        assert_eq!(recv_with_fds(s.as_fd(), &mut buf).unwrap().0, 0);
    }

    #[test]
    fn connecting_to_a_missing_name_is_refused_at_once() {
        let err = connect_abstract(b"xway-test/nobody-here").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn mapping_is_shared_between_two_maps() {
        let fd = memfd_sealed(4096).unwrap();
        let a = Mapping::map_sealed(fd.as_fd(), 4096).unwrap();
        let b = Mapping::map_sealed(fd.as_fd(), 4096).unwrap();
        let (ra, rb) = (
            crate::ring::Region::new(std::sync::Arc::new(a)),
            crate::ring::Region::new(std::sync::Arc::new(b)),
        );
        ra.write_bytes(100, b"shared");
        let mut out = [0u8; 6];
        rb.read_bytes(100, crate::ring::as_uninit(&mut out));
        assert_eq!(&out, b"shared");
    }
}
