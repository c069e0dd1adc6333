//! Connection setup: "publish before connect, the server decides alone, dual channel".
//!
//! **Client** ([`connect_addr`]), before its SYN:
//! 1. No listener advertised for the destination on this host: plain `connect`, nothing else.
//! 2. Otherwise bind the TCP socket (so the 4-tuple is known; the local provider's previous
//!    connect to the same destination bound one ahead), create the region, write its header
//!    (magic, version, 4-tuple, nonce) and the `OFFERED` state, send the offer through the
//!    provider's rendezvous, and only then `connect`.
//! 3. Wait, with a deadline, for the verdict on the TCP connection. Accept: use the ring.
//!    Decline, or bytes that are not a verdict: use the untouched TCP stream. Deadline: move the
//!    region's state `OFFERED -> ABANDONED` by compare-and-swap; if that wins, use TCP (the
//!    server will now stay silent); if the server won first, its verdict is on the way.
//!
//! **Server** ([`accept`]): the local provider validates and maps each offer as it arrives (see
//! [`crate::provider::local`]). When the TCP connection is accepted, look up the offer for
//! exactly this 4-tuple. None: plain TCP at once. Present: claim the region
//! (`OFFERED -> CLAIMED`) or decline it (`OFFERED -> DECLINED`), and only if the swap wins,
//! write the verdict on the TCP connection. A client that has abandoned never sees a byte.
//!
//! Exactly one compare-and-swap from `OFFERED` wins, so both sides always agree on the
//! transport, and the TCP stream never carries a verdict its client is not waiting for.
//!
//! The providers differ only in the rendezvous and in where the region comes from: the local
//! provider first (a listener on this kernel), then the xen provider (a listener in another
//! guest of this Xen host, found through dom0's directory in XenStore; see
//! [`crate::provider::xen::rendezvous`]). The region layout, the compare-and-swap and the
//! verdict are the same.

mod ports;
pub(crate) mod wire;

use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::{EffectiveMode, XwayConfig};
use crate::provider::local::{self, Advertisement, ClientRing, Opened};
use crate::provider::xen::rendezvous::{self as xen, XenAdvertisement};
use crate::provider::Doorbell;
use crate::ring::layout::{canonical, state, Header, Layout, STATE_OFFSET};
use crate::ring::{endpoints, Activity, Region, Role};
use crate::stream::ring_io::RingIo;
use crate::transport::{FallbackReason, Provider};
use crate::XwayStream;
use wire::{classify, Peeked, Verdict, VERDICT_LEN};

/// How much longer than the rendezvous deadline a client waits once a server has claimed its
/// region: the verdict is written right after the claim, so only a frozen server takes this long.
const CLAIMED_GRACE: Duration = Duration::from_secs(5);

/// Connects to one resolved address, choosing the transport.
pub(crate) async fn connect_addr(addr: SocketAddr, config: &XwayConfig) -> io::Result<XwayStream> {
    let required = match config.effective_mode() {
        EffectiveMode::TcpByConfig => {
            return tcp(
                TcpStream::connect(addr).await?,
                FallbackReason::DisabledByConfig,
                false,
            )
        }
        EffectiveMode::TcpByEnv => {
            return tcp(
                TcpStream::connect(addr).await?,
                FallbackReason::DisabledByEnv,
                false,
            )
        }
        EffectiveMode::Ring { required } => required,
    };
    let rendezvous = match local::find_listener(addr, config.uid_policy()) {
        Ok(Some(sock)) => sock,
        Ok(None) => return connect_xen(addr, config, required).await,
        Err(reason) => return tcp(TcpStream::connect(addr).await?, reason, required),
    };
    let (socket, client) = match rendezvous.take_bound_socket() {
        Some(bound) => bound,
        None => match bound_socket(addr) {
            Ok(bound) => bound,
            Err(reason) => return tcp(TcpStream::connect(addr).await?, reason, required),
        },
    };
    let offered = offer_ring(client, addr, config, rendezvous.clone());
    let mut stream = connect_bound(socket, addr).await?;
    let ring = match offered {
        Ok(ring) => ring,
        Err(reason) => return tcp(stream, reason, required),
    };
    let next = NextConnect {
        rendezvous: &rendezvous,
        dst: addr,
        socket_tried: std::cell::Cell::new(false),
    };
    let verdict = match verdict_without_sleeping(&stream, &ring.region, &ring.nonce, &next) {
        Some(decided) => decided?,
        None => {
            let timeout = config.rendezvous_timeout();
            await_verdict(&mut stream, &ring.region, &ring.nonce, timeout).await?
        }
    };
    match verdict {
        None => {
            let activity = Activity::new(ring.region.clone(), Role::Client);
            let (tx, rx, doorbell, release) = ring.into_parts();
            let io = RingIo::new(stream, tx, rx, activity, doorbell, config.spin_budget())
                .with_release(release);
            Ok(XwayStream::from_ring(io, Provider::Local))
        }
        Some(reason) => tcp(stream, reason, required),
    }
}

/// The xen provider's client: the same steps as the local one, with XenStore as the
/// rendezvous and granted pages for the region.
async fn connect_xen(
    addr: SocketAddr,
    config: &XwayConfig,
    required: bool,
) -> io::Result<XwayStream> {
    // One deadline for the whole lookup: a slow XenStore must not hold up connections to
    // peers that are not guests of this host for longer than a rendezvous may take.
    let lookup = tokio::time::timeout(
        config.rendezvous_timeout(),
        xen::find_listener(addr, config),
    );
    let lookup = lookup.await.unwrap_or_else(|_| {
        Err(FallbackReason::SetupFailed {
            error: "xen: the XenStore lookup outlasted the rendezvous deadline".into(),
        })
    });
    let target = match lookup {
        Ok(Some(target)) => target,
        Ok(None) => {
            return tcp(
                TcpStream::connect(addr).await?,
                FallbackReason::NotAdvertised,
                required,
            )
        }
        Err(reason) => return tcp(TcpStream::connect(addr).await?, reason, required),
    };
    let socket = new_socket(addr)?;
    // Guests of one host talk over a bridge, without NAT: the source address the kernel would
    // pick is the one the server sees, and binding to it fixes the 4-tuple the offer names.
    let client = match bind_client(&socket, source_ip(addr)) {
        Ok(client) => client,
        Err(reason) => return tcp(TcpStream::connect(addr).await?, reason, required),
    };
    let header = match new_nonce() {
        Ok(nonce) => Header {
            layout: Layout::symmetric(config.xen_ring_order()).expect("config clamps the order"),
            nonce,
            client,
            server: canonical(addr),
        },
        Err(reason) => return tcp(connect_bound(socket, addr).await?, reason, required),
    };
    let mut ring = match xen::offer(target, &header).await {
        Ok(ring) => ring,
        Err(reason) => return tcp(connect_bound(socket, addr).await?, reason, required),
    };
    let mut abandon = AbandonOnDrop {
        region: ring.region.clone(),
        armed: true,
    };
    let mut stream = connect_bound(socket, addr).await?;
    let timeout = config.rendezvous_timeout();
    match await_verdict(&mut stream, &ring.region, &header.nonce, timeout).await? {
        None => {
            abandon.armed = false;
            ring.node.disarm();
            watch_for_domain_death(&stream);
            let activity = Activity::new(ring.region.clone(), Role::Client);
            let (tx, rx) = endpoints(ring.region, header.layout, Role::Client);
            // CPU numbers of two guests say nothing about each other: never spin (see
            // `XwayConfig::spin_budget`); the event channel wakes us.
            let io = RingIo::new(
                stream,
                tx,
                rx,
                activity,
                Box::new(ring.port),
                Duration::ZERO,
            );
            Ok(XwayStream::from_ring(io, Provider::Xen))
        }
        Some(reason) => tcp(stream, reason, required),
    }
}

/// A non-blocking TCP socket for connecting to `addr`.
fn new_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.nonblocking().cloexec(),
        Some(socket2::Protocol::TCP),
    )
}

/// A new TCP socket for connecting to `addr` on this host, and its canonical address.
///
/// The listener is on this host, so the destination is one of our addresses: binding to it
/// fixes the source address and port, and the offer can name the exact 4-tuple.
fn bound_socket(addr: SocketAddr) -> Result<(socket2::Socket, SocketAddr), FallbackReason> {
    let socket = new_socket(addr).map_err(|e| FallbackReason::SetupFailed {
        error: format!("creating the client socket: {e}"),
    })?;
    let client = bind_client(&socket, Ok(addr.ip()))?;
    Ok((socket, client))
}

/// Binds `socket` to `ip` and a free ephemeral port (`ports.rs`), so that the offer can name
/// the connection's exact 4-tuple before the SYN; the canonical client address, or why not.
fn bind_client(
    socket: &socket2::Socket,
    ip: io::Result<std::net::IpAddr>,
) -> Result<SocketAddr, FallbackReason> {
    ip.and_then(|ip| ports::bind_ephemeral(socket, ip))
        .and_then(|()| socket.local_addr())
        .and_then(|a| {
            a.as_socket()
                .ok_or_else(|| io::Error::other("not an IP address"))
        })
        .map(canonical)
        .map_err(|e| FallbackReason::SetupFailed {
            error: format!("binding the client socket: {e}"),
        })
}

/// Connects a bound socket, like tokio's `connect`. To a listener on this host the loopback
/// handshake completes inside the `connect` call, so the socket is usually writable at once:
/// it is then handed to tokio without the reactor round trip (a yield and an `epoll_wait`)
/// that tokio's `connect` takes to learn that.
async fn connect_bound(socket: socket2::Socket, addr: SocketAddr) -> io::Result<TcpStream> {
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let done = crate::sys::is_writable_now(std::os::fd::AsFd::as_fd(&socket));
    let stream = TcpStream::from_std(socket.into())?;
    if !done {
        stream.writable().await?;
    }
    match stream.take_error()? {
        Some(e) => Err(e),
        None => Ok(stream),
    }
}

/// The source address the kernel picks for `dst` (a UDP `connect` sends nothing).
fn source_ip(dst: SocketAddr) -> io::Result<std::net::IpAddr> {
    let any: SocketAddr = if dst.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let probe = UdpSocket::bind(any)?;
    probe.connect(dst)?;
    Ok(probe.local_addr()?.ip())
}

fn new_nonce() -> Result<[u8; 16], FallbackReason> {
    let mut nonce = [0u8; 16];
    crate::sys::random_nonblocking(&mut nonce).map_err(|e| FallbackReason::SetupFailed {
        error: if e.kind() == io::ErrorKind::WouldBlock {
            "nonce: the kernel's random pool is not seeded yet (early boot)".into()
        } else {
            format!("nonce: {e}")
        },
    })?;
    Ok(nonce)
}

/// Between guests, a destroyed peer domain never closes its TCP connection: nothing is left to
/// send a FIN or RST. Keepalive probes on the (otherwise idle) dual-channel connection turn
/// that silence into `ETIMEDOUT` within about five seconds, which ends the ring stream like
/// any other death of its peer (invariant I4). A killed peer *process* is seen at once: its
/// kernel closes the connection.
fn watch_for_domain_death(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(2))
        .with_interval(Duration::from_secs(1))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "xway: TCP keepalive for the xen ring failed");
    }
}

/// A client's ring, offered and waiting for the verdict.
struct Offered {
    region: Region,
    nonce: [u8; 16],
    ring: ClientRing,
    /// The rendezvous connection it was offered on, where it is kept once the stream ends.
    rendezvous: Arc<local::Rendezvous>,
    tx: crate::ring::Producer,
    rx: crate::ring::Consumer,
    _abandon: AbandonOnDrop,
}

impl Offered {
    /// After an accept verdict: the client's endpoints and doorbell.
    fn into_parts(
        self,
    ) -> (
        crate::ring::Producer,
        crate::ring::Consumer,
        Box<dyn crate::provider::Doorbell>,
        crate::stream::ring_io::Release,
    ) {
        let Offered {
            ring,
            rendezvous,
            tx,
            rx,
            _abandon: mut guard,
            ..
        } = self;
        guard.armed = false;
        let release = local::keep_on(&rendezvous, &ring);
        (tx, rx, Box::new(ring.into_doorbell()), release)
    }
}

/// Abandons an offer whose `connect` is dropped or fails before it is accepted, so that a
/// server accepting it later stays on TCP instead of claiming a ring nobody will use.
struct AbandonOnDrop {
    region: Region,
    armed: bool,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if self.armed {
            abandon(&self.region);
        }
    }
}

fn offer_ring(
    client: SocketAddr,
    server: SocketAddr,
    config: &XwayConfig,
    rendezvous: Arc<local::Rendezvous>,
) -> Result<Offered, FallbackReason> {
    let nonce = new_nonce()?;
    let layout = local::layout_for(config.ring_order());
    let header = Header {
        layout,
        nonce,
        client,
        server: canonical(server),
    };
    let (ring, rendezvous) = local::offer(rendezvous, config.uid_policy(), &header)?;
    let region = ring.region.clone();
    // This client will spin for the claim and use the ring right after it: saying so now lets
    // a server whose first read comes before our first write spin for it, instead of sleeping
    // and making our write ring its doorbell (two wake-ups in the first exchange).
    Activity::new(region.clone(), Role::Client).publish(true, crate::sys::current_cpu());
    let (tx, rx) = endpoints(region.clone(), layout, Role::Client);
    let _abandon = AbandonOnDrop {
        region: region.clone(),
        armed: true,
    };
    Ok(Offered {
        region,
        nonce,
        ring,
        rendezvous,
        tx,
        rx,
        _abandon,
    })
}

/// Waits for the server's verdict. `Ok(None)`: accepted, use the ring. `Ok(Some(reason))`: use
/// TCP. `Err`: the connection is unusable (a server claimed the ring and then went silent).
async fn await_verdict(
    tcp: &mut TcpStream,
    region: &Region,
    nonce: &[u8; 16],
    timeout: Duration,
) -> io::Result<Option<FallbackReason>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut limit = deadline;
    let mut claimed = false;
    let mut buf = [0u8; VERDICT_LEN];
    loop {
        match tokio::time::timeout_at(limit, tcp.peek(&mut buf)).await {
            Ok(Ok(0)) => {
                return Ok(Some(FallbackReason::SetupFailed {
                    error: "server closed the connection before its verdict".into(),
                }))
            }
            Ok(Ok(n)) => match classify(&buf[..n], nonce) {
                Peeked::Verdict(verdict) => {
                    tcp.read_exact(&mut buf).await?;
                    return Ok(transport_for(verdict));
                }
                Peeked::Partial => {
                    // A verdict arrives in one segment; a split one is rare enough to poll.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    if tokio::time::Instant::now() >= limit {
                        claimed |= !abandon(region);
                        if !claimed {
                            return Ok(Some(FallbackReason::RendezvousTimeout));
                        }
                    }
                }
                Peeked::NotAVerdict => {
                    // The TCP peer speaks its own protocol: it is not the process that holds the
                    // rendezvous endpoint. Whatever that process did with the region, nothing
                    // will ever be written to it.
                    abandon(region);
                    return Ok(Some(FallbackReason::InvalidOffer {
                        error: "the TCP peer is not the process that advertised the listener"
                            .into(),
                    }));
                }
            },
            Ok(Err(e)) => {
                return Ok(Some(FallbackReason::SetupFailed {
                    error: format!("waiting for the verdict: {e}"),
                }))
            }
            Err(_elapsed) if !claimed => {
                if abandon(region) {
                    return Ok(Some(FallbackReason::RendezvousTimeout));
                }
                claimed = true;
                limit = deadline + CLAIMED_GRACE;
            }
            Err(_elapsed) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "xway: the listener claimed the ring but sent no verdict",
                ))
            }
        }
    }
}

/// What a verdict means for the client: `None`, the ring; `Some(reason)`, TCP.
fn transport_for(verdict: Verdict) -> Option<FallbackReason> {
    match verdict {
        Verdict::Accept => None,
        Verdict::Decline(reason) => Some(FallbackReason::Declined {
            reason: reason.to_string(),
        }),
    }
}

/// Longest a client spins for the server's claim: one cross-CPU wake-up of an idle listener
/// (20-40 us on small VMs) plus its validation of the offer, with room to spare.
const CLAIM_SPIN_MAX: Duration = Duration::from_micros(100);
/// Claim spins in a row that ran out (shared by the process).
static CLAIM_SPIN_MISSES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// After this many misses in a row, only one connect in [`CLAIM_SPIN_PROBE`] spins.
const CLAIM_SPIN_GIVE_UP: u32 = 3;
const CLAIM_SPIN_PROBE: u64 = 32;
/// Connects that skipped spinning since it was given up.
static CLAIM_SPIN_SKIPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// How long a client polls the TCP connection for a verdict it knows is on its way.
const VERDICT_POLL: Duration = Duration::from_micros(50);

/// The local provider's fast path before [`await_verdict`]: `None` if the verdict is not
/// decided after a short, bounded spin, and the caller waits for it as usual. (Between Xen
/// guests the listener's claim takes XenStore round trips, far longer than this spin; its
/// process-wide state and the local spare rings are the local provider's alone.)
///
/// Waiting for the verdict the usual way costs a sleep and a cross-process wake-up. But a
/// listener that is accepting decides within one wake-up of its own, and it writes the verdict
/// right after its compare-and-swap on the setup state. So the client
/// 1. gives its CPU away once: a listener woken on this very CPU (by the offer or the SYN)
///    runs now, before anything else this connect does;
/// 2. spins on the setup state until it leaves `OFFERED` (see [`spin_for_claim`]);
/// 3. then reads the verdict from the TCP connection without going through the reactor. The
///    verdict is still what decides (it authenticates the server, invariant I3); the state
///    word only says when to look.
///
/// While it waits in 2 and 3 it prepares what the next connect to this destination needs, a
/// few system calls at a time, instead of idling: a bound socket (kept by the rendezvous) and
/// the spare ring that replaces the one it used (`local::build_spare_step`).
fn verdict_without_sleeping(
    tcp: &TcpStream,
    region: &Region,
    nonce: &[u8; 16],
    next: &NextConnect<'_>,
) -> Option<io::Result<Option<FallbackReason>>> {
    crate::sys::yield_cpu();
    let claimed = spin_for_claim(region, next);
    local::note_claimed(claimed);
    if !claimed {
        return None;
    }
    read_verdict_now(tcp, nonce, next)
}

/// Spins until the setup state leaves `OFFERED`; true if it did.
///
/// Spins for at most [`CLAIM_SPIN_MAX`]. After [`CLAIM_SPIN_GIVE_UP`] spins in a row ran out,
/// only one connect in [`CLAIM_SPIN_PROBE`] spins until one sees its claim again: a listener
/// that is slow to accept (or that runs on this very thread) soon costs no spinning at all,
/// while one late claim among many prompt ones (a busy moment of the host) changes nothing.
/// Each round builds a step of the next spare ring or, with none to build, yields the CPU, so a
/// listener that needs this CPU to accept gets it at once.
fn spin_for_claim(region: &Region, next: &NextConnect<'_>) -> bool {
    use std::sync::atomic::Ordering;
    if CLAIM_SPIN_MISSES.load(Ordering::Relaxed) >= CLAIM_SPIN_GIVE_UP
        && CLAIM_SPIN_SKIPPED.fetch_add(1, Ordering::Relaxed) % CLAIM_SPIN_PROBE
            != CLAIM_SPIN_PROBE - 1
    {
        return false;
    }
    let start = Instant::now();
    loop {
        if region.load(STATE_OFFSET, Ordering::Acquire) != state::OFFERED {
            CLAIM_SPIN_MISSES.store(0, Ordering::Relaxed);
            return true;
        }
        if start.elapsed() >= CLAIM_SPIN_MAX {
            CLAIM_SPIN_MISSES.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        next.wait_a_little();
    }
}

/// Reads a verdict the server has decided (its compare-and-swap is done) straight from the
/// socket, polling for at most [`VERDICT_POLL`]. `None`: not there (or not a verdict); the
/// caller's slow path looks again and handles every case.
fn read_verdict_now(
    tcp: &TcpStream,
    nonce: &[u8; 16],
    next: &NextConnect<'_>,
) -> Option<io::Result<Option<FallbackReason>>> {
    let sock = socket2::SockRef::from(tcp);
    let start = Instant::now();
    let mut buf = [0u8; VERDICT_LEN];
    loop {
        match sock.peek(crate::ring::as_uninit(&mut buf)) {
            Ok(n) if n > 0 => match classify(&buf[..n], nonce) {
                Peeked::Verdict(verdict) => {
                    // The peek saw all of it and this is the only reader: one receive takes it.
                    return Some(match sock.recv(crate::ring::as_uninit(&mut buf)) {
                        Ok(VERDICT_LEN) => Ok(transport_for(verdict)),
                        Ok(_) => Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "xway: verdict shorter than it was",
                        )),
                        Err(e) => Err(e),
                    });
                }
                Peeked::Partial => {}
                Peeked::NotAVerdict => return None,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            _ => return None,
        }
        if start.elapsed() >= VERDICT_POLL {
            return None;
        }
        next.wait_a_little();
    }
}

/// What a client prepares for its next connect to the same destination while it waits for
/// its claim and verdict.
struct NextConnect<'a> {
    rendezvous: &'a local::Rendezvous,
    dst: SocketAddr,
    /// Binding was tried once during this wait (a failure is not retried until next time).
    socket_tried: std::cell::Cell<bool>,
}

impl NextConnect<'_> {
    /// One round of a client's spin for its claim or verdict: a step of its next spare ring, or
    /// a bound socket for the next connect, or, with nothing to prepare, a yield of the CPU.
    /// Each is a few system calls, so the claim is looked at again soon. The ring comes first:
    /// making one on the critical path costs the most.
    fn wait_a_little(&self) {
        if local::build_spare_step() {
            return;
        }
        if !self.socket_tried.replace(true) && self.rendezvous.wants_bound_socket() {
            match bound_socket(self.dst) {
                Ok((socket, client)) => self.rendezvous.keep_bound_socket(socket, client),
                Err(reason) => tracing::debug!(%reason, "xway: binding a socket ahead failed"),
            }
            return;
        }
        crate::sys::yield_cpu();
    }
}

/// Tries `OFFERED -> ABANDONED`; true if the client may now use TCP without the server ever
/// writing a verdict.
fn abandon(region: &Region) -> bool {
    region
        .compare_exchange(STATE_OFFSET, state::OFFERED, state::ABANDONED)
        .is_ok()
}

fn tcp(stream: TcpStream, reason: FallbackReason, required: bool) -> io::Result<XwayStream> {
    if required {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("xway: ring required but unavailable: {reason}"),
        ));
    }
    Ok(XwayStream::from_tcp_with_reason(stream, reason))
}

/// A connection the listener accepted, with its transport decided now or after a rendezvous
/// in XenStore.
pub(crate) enum Accepted {
    Now(XwayStream),
    /// The xen provider has an offer to read and map; the listener polls this to completion
    /// (it never fails: problems mean TCP with a reason).
    Later(Pin<Box<dyn Future<Output = XwayStream> + Send>>),
}

/// Decides the transport of a connection the listener just accepted. Never blocks and never
/// fails: anything that goes wrong is TCP with a reason. A connection without an offer is
/// plain TCP at once, whatever the providers (invariant I1).
///
/// `client` is the address `accept` returned; `server`, the listener's address when it is
/// bound to one (otherwise the connection's is asked for).
pub(crate) fn accept(
    stream: TcpStream,
    client: SocketAddr,
    server: Option<SocketAddr>,
    local: Option<&Advertisement>,
    xen: Option<&Arc<XenAdvertisement>>,
    spin_budget: Duration,
) -> Accepted {
    let Some(server) = server.map_or_else(|| stream.local_addr().ok(), Some) else {
        return Accepted::Now(XwayStream::from_tcp_with_reason(
            stream,
            FallbackReason::NoOffer,
        ));
    };
    if let Some(prepared) = local.and_then(|a| a.take_offer(client, server)) {
        let (nonce, layout) = (prepared.offer.nonce, prepared.offer.layout);
        return Accepted::Now(match prepared.opened {
            Opened::Ready { region, doorbell } => claim(
                stream,
                Claim {
                    release: prepared.keep.map(|k| k.release(layout, region.clone())),
                    region,
                    layout,
                    nonce,
                    doorbell: Box::new(doorbell),
                    spin_budget,
                    provider: Provider::Local,
                },
            ),
            Opened::Decline {
                region,
                reason,
                detail,
            } => decline(stream, &region, &nonce, reason, detail),
            Opened::Unusable(reason) => XwayStream::from_tcp_with_reason(stream, reason),
        });
    }
    match xen {
        Some(xen) if xen.may_have_offer(client, server) => {
            let xen = xen.clone();
            Accepted::Later(Box::pin(async move {
                accept_xen(stream, &xen, client, server).await
            }))
        }
        _ => Accepted::Now(XwayStream::from_tcp_with_reason(
            stream,
            FallbackReason::NoOffer,
        )),
    }
}

async fn accept_xen(
    stream: TcpStream,
    xen: &XenAdvertisement,
    client: SocketAddr,
    server: SocketAddr,
) -> XwayStream {
    match xen.open(client, server).await {
        xen::Opened::Ready {
            region,
            port,
            nonce,
            layout,
            client_domain,
        } => {
            tracing::debug!(%client, domain = %client_domain, "xway: xen offer mapped");
            let stream = claim(
                stream,
                Claim {
                    region,
                    layout,
                    nonce,
                    doorbell: Box::new(port),
                    // See `connect_xen`: no spinning between guests.
                    spin_budget: Duration::ZERO,
                    provider: Provider::Xen,
                    release: None,
                },
            );
            if stream.transport().is_ring() {
                watch_for_domain_death(stream.tcp());
            }
            stream
        }
        xen::Opened::Decline {
            region,
            nonce,
            reason,
            detail,
        } => decline(stream, &region, &nonce, reason, detail),
        xen::Opened::Unusable(reason) => XwayStream::from_tcp_with_reason(stream, reason),
    }
}

/// A valid, mapped offer, ready to be claimed.
struct Claim {
    region: Region,
    layout: Layout,
    nonce: [u8; 16],
    doorbell: Box<dyn Doorbell>,
    spin_budget: Duration,
    provider: Provider,
    /// What the provider does with the ring once the stream ends (the local provider keeps
    /// it for its client to offer again).
    release: Option<crate::stream::ring_io::Release>,
}

/// Claims the region (`OFFERED -> CLAIMED`) and, only if that wins, sends the accept verdict.
fn claim(stream: TcpStream, c: Claim) -> XwayStream {
    match c
        .region
        .compare_exchange(STATE_OFFSET, state::OFFERED, state::CLAIMED)
    {
        Ok(_) => {
            let activity = Activity::new(c.region.clone(), Role::Server);
            let (tx, rx) = endpoints(c.region, c.layout, Role::Server);
            if let Err(e) = send_verdict(&stream, Verdict::Accept, &c.nonce) {
                // The connection is broken; the ring stream reports it on first use.
                tracing::debug!(error = %e, "xway: sending the accept verdict failed");
            }
            let mut io = RingIo::new(stream, tx, rx, activity, c.doorbell, c.spin_budget);
            if let Some(release) = c.release {
                io = io.with_release(release);
            }
            XwayStream::from_ring(io, c.provider)
        }
        Err(s) if s == state::ABANDONED => {
            XwayStream::from_tcp_with_reason(stream, FallbackReason::ClientAbandoned)
        }
        Err(s) => XwayStream::from_tcp_with_reason(
            stream,
            FallbackReason::InvalidOffer {
                error: format!("region in setup state {s}, expected offered"),
            },
        ),
    }
}

/// Declines a mapped offer (`OFFERED -> DECLINED`, and the verdict only if that wins).
fn decline(
    stream: TcpStream,
    region: &Region,
    nonce: &[u8; 16],
    reason: wire::DeclineReason,
    detail: String,
) -> XwayStream {
    if region
        .compare_exchange(STATE_OFFSET, state::OFFERED, state::DECLINED)
        .is_ok()
    {
        if let Err(e) = send_verdict(&stream, Verdict::Decline(reason), nonce) {
            tracing::debug!(error = %e, "xway: sending the decline verdict failed");
        }
    }
    XwayStream::from_tcp_with_reason(stream, FallbackReason::InvalidOffer { error: detail })
}

/// Writes the verdict straight to the socket: a fresh connection's send buffer is empty, so
/// 32 bytes always fit (tokio's readiness for the new socket may not be known yet).
fn send_verdict(stream: &TcpStream, verdict: Verdict, nonce: &[u8; 16]) -> io::Result<()> {
    let frame = verdict.encode(nonce);
    let n = socket2::SockRef::from(stream).send(&frame)?;
    if n != frame.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "verdict truncated",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UidPolicy;
    use crate::XwayListener;

    /// Sends `n` bytes each way over `a` and `b` at once and checks they arrive intact.
    async fn exchange(a: &mut XwayStream, b: &mut XwayStream, n: usize) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let data: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
        let (mut ar, mut aw) = a.split();
        let (mut br, mut bw) = b.split();
        let (mut got_a, mut got_b) = (vec![0u8; n], vec![0u8; n]);
        let (w1, w2, r1, r2) = tokio::join!(
            aw.write_all(&data),
            bw.write_all(&data),
            ar.read_exact(&mut got_a),
            br.read_exact(&mut got_b)
        );
        w1.unwrap();
        w2.unwrap();
        r1.unwrap();
        r2.unwrap();
        assert!(got_a == data && got_b == data, "bytes arrived intact");
    }

    #[tokio::test]
    async fn the_next_connect_between_two_processes_offers_a_finished_connections_ring_again() {
        let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rendezvous = || {
            local::find_listener(addr, &UidPolicy::SameUser)
                .unwrap()
                .expect("the rendezvous connection is kept")
        };
        for round in 0..4 {
            let (client, accepted) = tokio::join!(XwayStream::connect(addr), listener.accept());
            let (mut client, (mut server, _)) = (client.unwrap(), accepted.unwrap());
            assert!(client.transport().is_ring(), "round {round}");
            if round > 0 {
                assert_eq!(
                    rendezvous().kept_states(),
                    [],
                    "round {round} took the kept ring"
                );
            }
            // The counters of a reused ring start again from what the last connection left.
            exchange(&mut client, &mut server, 48 << 10).await;
            drop(client);
            drop(server);
            // Both sides are done: the client keeps the ring, which the listener kept too.
            assert_eq!(rendezvous().kept_states(), [state::POOLED], "round {round}");
        }
    }

    #[tokio::test]
    async fn the_ring_of_a_connection_that_moved_more_than_64_kib_is_not_kept() {
        let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(XwayStream::connect(addr), listener.accept());
        let (mut client, (mut server, _)) = (client.unwrap(), accepted.unwrap());
        exchange(&mut client, &mut server, (64 << 10) + 1).await;
        drop(client);
        drop(server);
        let rendezvous = local::find_listener(addr, &UidPolicy::SameUser)
            .unwrap()
            .unwrap();
        assert_eq!(
            rendezvous.kept_states(),
            [],
            "its pages are not held for later"
        );
    }

    #[tokio::test]
    async fn a_connect_uses_the_socket_its_predecessor_bound_ahead() {
        let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (first, accepted) = tokio::join!(XwayStream::connect(addr), listener.accept());
        assert!(first.unwrap().transport().is_ring());
        drop(accepted.unwrap());
        // The first connect bound the next one's socket if its wait for the claim left time;
        // waiting a little more makes sure.
        let rendezvous = local::find_listener(addr, &UidPolicy::SameUser)
            .unwrap()
            .expect("the rendezvous connection is kept");
        let next = NextConnect {
            rendezvous: &rendezvous,
            dst: addr,
            socket_tried: std::cell::Cell::new(false),
        };
        for _ in 0..64 {
            if !rendezvous.wants_bound_socket() {
                break;
            }
            next.wait_a_little();
        }
        let (socket, client) = rendezvous.take_bound_socket().expect("bound ahead");
        assert_eq!(client.ip(), addr.ip(), "bound to the destination's address");
        rendezvous.keep_bound_socket(socket, client);

        let (second, accepted) = tokio::join!(XwayStream::connect(addr), listener.accept());
        let second = second.unwrap();
        assert!(second.transport().is_ring());
        assert_eq!(second.local_addr().unwrap(), client);
        drop(accepted.unwrap());
    }
}
