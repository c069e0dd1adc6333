//! A hostile client crafts its own offers (invariant I2 at setup; I5: anything wrong is TCP with
//! a reason, never a failed accept): unsealed, resized or foreign "memfds", a header that does
//! not match the offer, doorbells that are not Unix datagram sockets, a setup state that is not
//! `OFFERED`, missing descriptors, garbage bytes, two offers for one connection, and a flood of
//! offers. The honest listener in this process must answer each connection with TCP (and a
//! decline verdict where it can safely send one), keep its descriptor use bounded, and keep
//! serving ring clients.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use xway_tokio::{FallbackReason, XwayListener, XwayStream};

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn owned(fd: i32) -> OwnedFd {
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: a descriptor a syscall just returned, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn encode_addr(addr: SocketAddr) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[2..4].copy_from_slice(&addr.port().to_be_bytes());
    let std::net::IpAddr::V4(ip) = addr.ip() else {
        panic!("IPv4 only")
    };
    b[0] = 4;
    b[4..8].copy_from_slice(&ip.octets());
    b
}

/// What the hostile client gets wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lie {
    UnsealedMemfd,
    WrongSize,
    PipeForMemfd,
    HeaderNonce,
    BellNotSocket,
    StateClaimed,
    OneDescriptor,
    GarbageBytes,
    /// A second offer for the same connection: one of the two is not the TCP client's.
    DuplicateOffer,
}

const ORDER: u32 = 12;
const REGION: usize = 4096 + 2 * (1 << ORDER);

/// Sends a crafted offer for the connection `client -> server`, then connects from `client`.
async fn hostile_connect(server: SocketAddr, lie: Lie) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let client = socket.local_addr().unwrap();
    let nonce = [0x5a; 16];

    // SAFETY: plain syscalls on descriptors created here; the mapping is private
    // to this function and unmapped before it returns.
    let memfd = unsafe {
        let fd = owned(libc::memfd_create(
            c"hostile".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        ));
        let len = if lie == Lie::WrongSize {
            REGION * 2
        } else {
            REGION
        };
        assert_eq!(libc::ftruncate(fd.as_raw_fd(), len as libc::off_t), 0);
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let mut h = [0u8; 128];
        h[..8].copy_from_slice(b"XWAYRING");
        h[8..12].copy_from_slice(&1u32.to_ne_bytes());
        h[12..16].copy_from_slice(&ORDER.to_ne_bytes());
        h[16..20].copy_from_slice(&ORDER.to_ne_bytes());
        let hn = if lie == Lie::HeaderNonce {
            [0xa5; 16]
        } else {
            nonce
        };
        h[24..40].copy_from_slice(&hn);
        h[40..60].copy_from_slice(&encode_addr(client));
        h[60..80].copy_from_slice(&encode_addr(server));
        std::ptr::copy_nonoverlapping(h.as_ptr(), p.cast::<u8>(), 128);
        let state = if lie == Lie::StateClaimed { 2u32 } else { 1 };
        (*(p.cast::<u8>()
            .add(128)
            .cast::<std::sync::atomic::AtomicU32>()))
        .store(state, std::sync::atomic::Ordering::SeqCst);
        libc::munmap(p, len);
        if lie != Lie::UnsealedMemfd {
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            assert_eq!(libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals), 0);
        }
        fd
    };
    // SAFETY: plain syscalls creating descriptors that are owned at once.
    let (_bell_a, bell_b, pipe_r, _pipe_w) = unsafe {
        let mut p = [0i32; 2];
        assert_eq!(libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC), 0);
        let mut b = [0i32; 2];
        let ty = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        assert_eq!(libc::socketpair(libc::AF_UNIX, ty, 0, b.as_mut_ptr()), 0);
        (owned(b[0]), owned(b[1]), owned(p[0]), owned(p[1]))
    };

    let mut offer = vec![0u8; 96];
    offer[..8].copy_from_slice(b"XWAYOFR1");
    offer[8..12].copy_from_slice(&1u32.to_le_bytes());
    offer[16..32].copy_from_slice(&nonce);
    offer[32..52].copy_from_slice(&encode_addr(client));
    offer[52..72].copy_from_slice(&encode_addr(server));
    offer[72..76].copy_from_slice(&ORDER.to_le_bytes());
    offer[76..80].copy_from_slice(&ORDER.to_le_bytes());
    if lie == Lie::GarbageBytes {
        offer[0] = b'Y';
    }
    let first = if lie == Lie::PipeForMemfd {
        &pipe_r
    } else {
        &memfd
    };
    let server_bell = if lie == Lie::BellNotSocket {
        &memfd
    } else {
        &bell_b
    };
    let mut fds = vec![first.as_raw_fd(), server_bell.as_raw_fd()];
    if lie == Lie::OneDescriptor {
        fds.pop();
    }
    send_offer(server, &offer, &fds);
    if lie == Lie::DuplicateOffer {
        send_offer(server, &offer, &fds);
    }
    socket.connect(server).await.unwrap()
}

fn send_offer(server: SocketAddr, offer: &[u8], fds: &[i32]) {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("xway/3/127.0.0.1/{}", server.port());
    let conn = std::os::unix::net::UnixStream::connect_addr(
        &std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap(),
    )
    .unwrap();
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: offer.as_ptr() as *mut _,
        iov_len: offer.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call, and the
    // control buffer has room for CMSG_SPACE(4 descriptors).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE((fds.len() * 4) as u32) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as _;
        let data = libc::CMSG_DATA(c).cast::<i32>();
        for (i, fd) in fds.iter().enumerate() {
            data.add(i).write_unaligned(*fd);
        }
        assert_eq!(
            libc::sendmsg(conn.as_raw_fd(), &msg, libc::MSG_NOSIGNAL),
            offer.len() as isize
        );
    }
}

/// An honest ring round trip through `listener`, served by `serve_one`.
async fn honest_round_trip(addr: SocketAddr, listener: &XwayListener) {
    let (c, s) = tokio::join!(XwayStream::connect(addr), listener.accept());
    let (mut c, (mut s, _)) = (c.unwrap(), s.unwrap());
    assert!(c.transport().is_ring() && s.transport().is_ring());
    c.write_all(b"ok?").await.unwrap();
    let mut b = [0u8; 3];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"ok?");
}

#[tokio::test]
async fn crafted_offers_get_tcp_with_a_reason_and_never_fail_accept() {
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    honest_round_trip(addr, &listener).await;
    let base = fd_count();
    for lie in [
        Lie::UnsealedMemfd,
        Lie::WrongSize,
        Lie::PipeForMemfd,
        Lie::HeaderNonce,
        Lie::BellNotSocket,
        Lie::StateClaimed,
        Lie::OneDescriptor,
        Lie::GarbageBytes,
        Lie::DuplicateOffer,
    ] {
        let mut hostile = hostile_connect(addr, lie).await;
        let (mut server, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("accept must not stall")
            .expect("accept must not fail");
        let reason = server.transport().fallback_reason().cloned();
        let want_decline = matches!(lie, Lie::HeaderNonce | Lie::BellNotSocket);
        match (&reason, lie) {
            (Some(FallbackReason::InvalidOffer { error }), _) => {
                eprintln!("{lie:?}: tcp ({error})");
            }
            (
                Some(FallbackReason::NoOffer),
                Lie::OneDescriptor | Lie::GarbageBytes | Lie::DuplicateOffer,
            ) => {
                eprintln!("{lie:?}: tcp (offer dropped: no offer)");
            }
            other => panic!("{lie:?}: unexpected transport {other:?}"),
        }
        // A decline verdict only where the server could safely claim the region's state.
        let mut verdict = [0u8; 32];
        let got = tokio::time::timeout(Duration::from_millis(100), hostile.peek(&mut verdict))
            .await
            .map(|r| r.unwrap())
            .unwrap_or(0);
        if want_decline {
            assert_eq!(got, 32, "{lie:?}: expected a decline verdict");
            assert_eq!(&verdict[..8], b"XWAYVRD1");
            assert_eq!(u32::from_le_bytes(verdict[24..28].try_into().unwrap()), 2);
            hostile.read_exact(&mut verdict).await.unwrap();
        } else {
            assert_eq!(got, 0, "{lie:?}: the server wrote to an unverified client");
        }
        // Whatever the setup did, the TCP connection carries the application's bytes exactly.
        hostile.write_all(b"plain").await.unwrap();
        let mut b = [0u8; 5];
        server.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"plain");
        drop((hostile, server));
        honest_round_trip(addr, &listener).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        fd_count() <= base,
        "descriptors leaked: {} -> {}",
        base,
        fd_count()
    );
}

/// Offers with two descriptors each, sent without ever connecting: the listener keeps at most
/// `MAX_PENDING_OFFERS` (256) of them, and the honest client after the flood still gets a ring.
#[tokio::test]
async fn a_flood_of_offers_costs_a_bounded_number_of_descriptors() {
    let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    honest_round_trip(addr, &listener).await;
    let base = fd_count();
    let mut peak = base;
    for i in 0..1000u32 {
        // Every offer names a different (fake) client port, and is never followed by a SYN.
        // SAFETY: plain syscalls; descriptors owned at once and closed after sending.
        let (m, a) = unsafe {
            let m = owned(libc::memfd_create(c"flood".as_ptr(), libc::MFD_CLOEXEC));
            let mut b = [0i32; 2];
            let ty = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC;
            assert_eq!(libc::socketpair(libc::AF_UNIX, ty, 0, b.as_mut_ptr()), 0);
            libc::close(b[1]);
            (m, owned(b[0]))
        };
        let mut offer = vec![0u8; 96];
        offer[..8].copy_from_slice(b"XWAYOFR1");
        offer[8..12].copy_from_slice(&1u32.to_le_bytes());
        let fake = SocketAddr::from(([127, 0, 0, 1], 1024 + (i as u16)));
        offer[32..52].copy_from_slice(&encode_addr(fake));
        offer[52..72].copy_from_slice(&encode_addr(addr));
        offer[72..76].copy_from_slice(&ORDER.to_le_bytes());
        offer[76..80].copy_from_slice(&ORDER.to_le_bytes());
        send_offer(addr, &offer, &[m.as_raw_fd(), a.as_raw_fd()]);
        drop((m, a));
        if i % 50 == 49 {
            // The listener receives (and opens) offers as they arrive and on every accept.
            honest_round_trip(addr, &listener).await;
            peak = peak.max(fd_count());
        }
    }
    eprintln!("offer flood: descriptors {base} before, peak {peak} (bound 256 x 2 + 64)");
    assert!(
        peak <= base + 256 * 2 + 64 + 8,
        "unbounded: {base} -> {peak}"
    );
}
