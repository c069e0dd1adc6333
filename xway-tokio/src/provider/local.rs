//! The local provider: two processes on one Linux kernel, in one network namespace.
//!
//! - **Region**: a sealed `memfd` (it cannot shrink, so a mapping can never fault).
//! - **Doorbells**: a connected pair of Unix datagram sockets, one end per side, registered
//!   with tokio through [`AsyncFd`]; a byte sent on one end wakes the other.
//! - **Rendezvous**: a listener bound to `ip:port` listens on the abstract Unix socket
//!   `xway/3/<ip>/<port>` (abstract names live in the network namespace, like the TCP port).
//!   A client connecting to `ip:port` looks for that name, checks the listener's user with
//!   `SO_PEERCRED`, and sends its offer with the memfd and the server's doorbell end (`SCM_RIGHTS`)
//!   *before* its TCP SYN. It keeps that rendezvous connection for its next connects (until it
//!   makes no offer for a second). The listener watches every rendezvous connection and opens
//!   each offer (checks, maps, registers the doorbell) as it arrives, while the client's TCP
//!   handshake is under way; when it accepts the TCP connection, it only looks the offer up.
//! - **Reuse**: when a small connection ends, both sides keep its ring (see [`Kept`]), and the
//!   client's next connect to the same listener offers it again, without descriptors: neither
//!   side then creates, passes, maps or unmaps anything to set a connection up.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::num::NonZeroU64;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Weak;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use super::Doorbell;
use crate::config::UidPolicy;
use crate::ring::layout::{canonical, Header, Layout, CONTROL_LEN, STATE_OFFSET};
use crate::ring::{layout::state, Region};
use crate::setup::wire::{Offer, OFFER_LEN};
use crate::sys;
use crate::transport::FallbackReason;

/// How long an offer waits on the listener side for its TCP connection.
const OFFER_TTL: Duration = Duration::from_secs(10);
/// At most this many offers (2 descriptors each) wait for their TCP connection; the oldest go
/// first. Bounds what a flood of offers can cost the listener.
const MAX_PENDING_OFFERS: usize = 256;

/// The rendezvous name of a listener bound to `addr`.
///
/// The version changes with anything a listener of the previous one would misread, so that
/// the two just do not meet and use TCP: version 2 kept a rendezvous connection for any
/// number of offers (a version-1 listener read one per connection and closed it, so a newer
/// client would lose the offers it sent meanwhile); version 3 offers kept rings again (a
/// version-2 listener rejects such offers and closes the connection).
fn rendezvous_name(ip: IpAddr, port: u16) -> Vec<u8> {
    format!("xway/3/{}/{}", ip.to_canonical(), port).into_bytes()
}

/// Most queued wake-ups consumed per wake. A peer that floods us can only make us poll again,
/// not loop forever, and not stall: whatever is left keeps our end readable.
const MAX_DRAIN: usize = 64;

/// This side's end of the doorbell pair: readable when the peer rang, and where we ring it.
#[derive(Debug)]
pub(crate) struct SocketDoorbell {
    end: AsyncFd<OwnedFd>,
}

impl SocketDoorbell {
    /// Registers our end with the current tokio runtime. Must be called within a runtime.
    fn new(end: OwnedFd) -> io::Result<SocketDoorbell> {
        Ok(SocketDoorbell {
            end: sys::register_readable(end)?,
        })
    }
}

impl Doorbell for SocketDoorbell {
    fn poll_wake(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.end.poll_read_ready(cx) {
            Poll::Ready(Ok(mut guard)) => {
                // Drain before clearing: with edge-triggered epoll, a datagram dropped on a full
                // queue would raise no edge, so the queue must not stay full. A ring after the
                // drain raises a new edge (and tokio keeps readiness that came after the guard).
                if sys::doorbell_drain(self.end.get_ref().as_fd(), MAX_DRAIN)? {
                    guard.clear_ready();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn ring_peer(&self) -> io::Result<()> {
        sys::doorbell_ring(self.end.get_ref().as_fd())
    }

    fn into_end(self: Box<Self>) -> Option<OwnedFd> {
        Some(self.end.into_inner())
    }
}

// ---- listener side ---------------------------------------------------------------------------

/// An offer that arrived on a rendezvous connection, already opened (validated and mapped),
/// waiting for its TCP connection.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) offer: Offer,
    pub(crate) opened: Opened,
    /// Where the ring is kept once its connection ends, if its client gave it an id.
    pub(crate) keep: Option<KeepIn>,
    received: Instant,
}

/// A client process's rendezvous connection: it stays open and carries one offer per connect.
#[derive(Debug)]
struct Channel {
    fd: OwnedFd,
    last_used: Instant,
    /// The rings of this client's finished connections, kept for it to offer again.
    kept: Arc<Mutex<Vec<Kept>>>,
}

/// Where the listener keeps a ring once its connection ends: with the client's other kept
/// rings, for as long as that client's rendezvous connection stays open.
#[derive(Debug)]
pub(crate) struct KeepIn {
    store: Weak<Mutex<Vec<Kept>>>,
    id: NonZeroU64,
}

impl KeepIn {
    /// What the server does with the ring once its stream is dropped: `CLAIMED -> POOLED`, and
    /// keep it (see [`Kept`]); a ring its client discarded, or whose client is gone, goes.
    pub(crate) fn release(self, layout: Layout, region: Region) -> crate::stream::ring_io::Release {
        crate::stream::ring_io::Release::new(move |doorbell, moved| {
            let Some(bell) = doorbell.into_end() else {
                return;
            };
            if moved > KEEP_AT_MOST {
                discard(&region, &[state::POOLED, state::CLAIMED]);
                return;
            }
            if region
                .compare_exchange(STATE_OFFSET, state::CLAIMED, state::POOLED)
                .is_err()
            {
                return;
            }
            let kept = Kept {
                id: self.id,
                layout,
                region,
                bell: Some(bell),
            };
            let Some(store) = self.store.upgrade() else {
                return;
            };
            let mut all = store.lock().unwrap_or_else(|e| e.into_inner());
            all.retain(|k| k.state() != state::DISCARDED);
            if all.len() >= MAX_KEPT {
                // Only one its client is not offering again right now.
                if let Some(i) = all.iter().position(|k| k.take_from_pool(state::DISCARDED)) {
                    all.remove(i);
                }
            }
            // A client that wins back every ring and never offers it could otherwise grow this
            // without bound; an honest one that reuses this one now waits for its verdict
            // until its deadline, then uses TCP.
            if all.len() < MAX_KEPT_BY_LISTENER {
                all.push(kept);
            }
        })
    }
}

#[derive(Debug, Default)]
struct Pending {
    /// Open rendezvous connections, by their descriptor number (their token in the epoll set).
    channels: HashMap<u64, Channel>,
    /// Offers by (client, server) address as each side sees them, canonicalised.
    offers: HashMap<(SocketAddr, SocketAddr), Prepared>,
    /// Offers received so far (for [`Advertisement::poll_offers`]'s answer).
    received: u64,
}

/// The token of the listening socket in the epoll set (descriptor numbers are smaller).
const LISTENING: u64 = u64::MAX;

/// A listener's advertisement: the abstract socket clients send offers to.
///
/// Clients keep their rendezvous connection open and send one offer per connect, before the
/// SYN. The listener watches the listening socket and every connection through one epoll set
/// registered with tokio, so that the task accepting connections is woken when an offer
/// arrives: it validates and maps the offer then, while the client's TCP handshake is under
/// way, and at accept time only looks it up.
#[derive(Debug)]
pub(crate) struct Advertisement {
    /// The epoll set's registration with tokio, made on the first poll (so that a listener can
    /// be built outside a runtime). Declared before `watch`: it is dropped first.
    registered: std::sync::OnceLock<AsyncFd<sys::FdNumber>>,
    /// The private epoll set: the listening socket and every rendezvous connection.
    watch: OwnedFd,
    socket: OwnedFd,
    name: String,
    uid_policy: UidPolicy,
    pending: Mutex<Pending>,
}

impl Advertisement {
    /// Advertises a listener bound to `local`. Fails with `AddrInUse` if another process holds
    /// the name (another listener on the same address with `SO_REUSEPORT`, or a squatter).
    pub(crate) fn bind(local: SocketAddr, uid_policy: UidPolicy) -> io::Result<Advertisement> {
        let name = rendezvous_name(local.ip(), local.port());
        let socket = sys::listen_abstract(&name)?;
        let watch = sys::epoll_set()?;
        sys::epoll_watch(watch.as_fd(), socket.as_fd(), LISTENING)?;
        Ok(Advertisement {
            registered: std::sync::OnceLock::new(),
            watch,
            socket,
            name: String::from_utf8_lossy(&name).into_owned(),
            uid_policy,
            pending: Mutex::new(Pending::default()),
        })
    }

    /// The abstract socket name, for diagnostics.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Every update leaves the maps consistent, so a panic elsewhere cannot poison them.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Receives and opens the offers that arrived since the last call, and registers `cx` to be
    /// woken when more arrive; true if any arrived. Never blocks; problems only ever mean TCP
    /// for their connection.
    pub(crate) fn poll_offers(&self, cx: &mut Context<'_>) -> bool {
        let before = self.lock().received;
        let arrived = || self.lock().received != before;
        let registered = match self.registered.get() {
            Some(registered) => registered,
            None => match sys::register_fd_number(self.watch.as_fd()) {
                Ok(registered) => self.registered.get_or_init(|| registered),
                Err(e) => {
                    // Offers are then received when connections are accepted (`take_offer`).
                    tracing::debug!(error = %e, "xway: cannot watch the rendezvous");
                    return false;
                }
            },
        };
        for _ in 0..MAX_ROUNDS {
            let mut ready = match registered.poll_read_ready(cx) {
                Poll::Ready(Ok(ready)) => ready,
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "xway: polling the rendezvous failed");
                    return arrived();
                }
                Poll::Pending => return arrived(),
            };
            if !self.receive(&mut self.lock(), Instant::now()) {
                // Nothing left: clearing makes the next poll register `cx` (readiness that
                // arrived meanwhile is kept by tokio).
                ready.clear_ready();
            }
        }
        // A flood of offers: come back after the other tasks had their turn.
        cx.waker().wake_by_ref();
        arrived()
    }

    /// Takes the offer made for the TCP connection `client -> server`, if any. Never blocks:
    /// an offer is sent before its TCP SYN, so when the connection is accepted the offer has
    /// arrived; if tokio has not told [`Advertisement::poll_offers`] yet, this receives it.
    pub(crate) fn take_offer(&self, client: SocketAddr, server: SocketAddr) -> Option<Prepared> {
        let key = (canonical(client), canonical(server));
        let mut pending = self.lock();
        if let Some(found) = pending.offers.remove(&key) {
            return Some(found);
        }
        let now = Instant::now();
        for _ in 0..MAX_ROUNDS {
            if !self.receive(&mut pending, now) {
                break;
            }
        }
        pending.offers.remove(&key)
    }

    /// One round of receiving: new connections, then the offers of the connections that have
    /// some. True if there may be more.
    fn receive(&self, p: &mut Pending, now: Instant) -> bool {
        let mut tokens = [0u64; 32];
        let n = match sys::epoll_ready(self.watch.as_fd(), &mut tokens) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "xway: reading the rendezvous epoll set failed");
                0
            }
        };
        let mut more = n == tokens.len();
        for &token in &tokens[..n] {
            more |= if token == LISTENING {
                self.accept_channels(p, now)
            } else {
                receive_offers(p, token, now)
            };
        }
        p.offers
            .retain(|_, o| now.duration_since(o.received) <= OFFER_TTL);
        more
    }

    /// Closes the rendezvous connection used least recently, without losing an offer: reading
    /// is shut down first, so that its client's next send fails and it reconnects, and what
    /// was sent before is received.
    fn evict_least_recently_used(&self, p: &mut Pending, now: Instant) {
        let Some(oldest) = p
            .channels
            .iter()
            .min_by_key(|(_, c)| c.last_used)
            .map(|(token, _)| *token)
        else {
            return;
        };
        if let Some(channel) = p.channels.get(&oldest) {
            if let Err(e) = sys::shutdown_read(channel.fd.as_fd()) {
                tracing::debug!(error = %e, "xway: shutting a rendezvous connection down failed");
            }
        }
        receive_offers(p, oldest, now);
        p.channels.remove(&oldest);
    }

    /// Accepts new rendezvous connections (at most [`MAX_DRAIN`]); true if there may be more
    /// to receive (a new connection's first offer is usually queued already).
    fn accept_channels(&self, p: &mut Pending, now: Instant) -> bool {
        let own_uid = sys::current_uid();
        let mut accepted = false;
        for _ in 0..MAX_DRAIN {
            let conn = match sys::accept_nonblocking(self.socket.as_fd()) {
                Ok(conn) => conn,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return accepted,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: the connection stays queued; its client falls
                    // back to TCP at its deadline (invariant I5).
                    tracing::debug!(error = %e, "xway: cannot accept rendezvous connection");
                    return accepted;
                }
            };
            match sys::peer_cred(conn.as_fd()) {
                Ok(cred) if self.uid_policy.allows(cred.uid, own_uid) => {}
                Ok(cred) => {
                    tracing::debug!(
                        uid = cred.uid,
                        pid = cred.pid,
                        "xway: rendezvous from a user the policy rejects, closed"
                    );
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "xway: SO_PEERCRED failed, rendezvous closed");
                    continue;
                }
            }
            if p.channels.len() >= MAX_CHANNELS {
                self.evict_least_recently_used(p, now);
            }
            let token = conn.as_raw_fd() as u64;
            match sys::epoll_watch(self.watch.as_fd(), conn.as_fd(), token) {
                Ok(()) => {
                    accepted = true;
                    p.channels.insert(
                        token,
                        Channel {
                            fd: conn,
                            last_used: now,
                            kept: Arc::default(),
                        },
                    );
                }
                Err(e) => tracing::debug!(error = %e, "xway: cannot watch rendezvous connection"),
            }
        }
        true
    }
}

/// Most rounds of receiving per poll; beyond, the task yields and comes back.
const MAX_ROUNDS: usize = 4;
/// At most this many client processes keep a rendezvous connection open at once.
const MAX_CHANNELS: usize = 256;

/// Receives the offers queued on one connection (at most [`MAX_DRAIN`]) and opens them; true
/// if there may be more. The connection is closed at its end, and on anything that is not a
/// well-formed offer: an honest client never sends that, and it reconnects on its next offer.
fn receive_offers(p: &mut Pending, token: u64, now: Instant) -> bool {
    let Some(channel) = p.channels.get_mut(&token) else {
        return false;
    };
    channel.last_used = now;
    let mut received = Vec::new();
    let mut close = false;
    let mut more = true;
    for _ in 0..MAX_DRAIN {
        // Exactly one offer's bytes: a Unix stream socket never merges a message that carries
        // descriptors with the next one, so each receive returns one offer.
        let mut buf = [0u8; OFFER_LEN];
        match sys::recv_with_fds(channel.fd.as_fd(), &mut buf) {
            Ok((0, _)) => {
                close = true;
                break;
            }
            Ok((n, fds)) => match Offer::decode(&buf[..n]) {
                Ok(offer) if fds.len() == offer.descriptors() => received.push((offer, fds)),
                Ok(_) => {
                    tracing::debug!(fds = fds.len(), "xway: offer with wrong descriptor count");
                    close = true;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "xway: malformed offer");
                    close = true;
                    break;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                more = false;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "xway: rendezvous receive failed");
                close = true;
                break;
            }
        }
    }
    let store = Arc::clone(&channel.kept);
    if close {
        p.channels.remove(&token);
        more = false;
    }
    p.received += received.len() as u64;
    for (offer, fds) in received {
        if p.offers.len() >= MAX_PENDING_OFFERS {
            evict_oldest(&mut p.offers);
        }
        let key = (canonical(offer.client), canonical(offer.server));
        // Two offers for one 4-tuple: one of them is not the TCP client's. Neither is trusted;
        // that connection gets plain TCP.
        if p.offers.remove(&key).is_some() {
            tracing::debug!(client = %key.0, "xway: conflicting offers for one connection, both dropped");
            continue;
        }
        let opened = if offer.reused {
            let id = offer.ring.map_or(0, NonZeroU64::get);
            let kept = {
                let mut all = store.lock().unwrap_or_else(|e| e.into_inner());
                let i = all.iter().position(|k| k.id.get() == id);
                i.map(|i| all.remove(i))
            };
            match kept {
                Some(kept) if kept.layout == offer.layout => open_kept(&offer, kept),
                Some(_) => Opened::Unusable(invalid("offer's layout is not its kept ring's")),
                None => Opened::Unusable(invalid("offer names a ring that is not kept")),
            }
        } else {
            open_offer(&offer, fds)
        };
        let keep = offer.ring.map(|id| KeepIn {
            store: Arc::downgrade(&store),
            id,
        });
        p.offers.insert(
            key,
            Prepared {
                offer,
                opened,
                keep,
                received: now,
            },
        );
    }
    more
}

fn evict_oldest(offers: &mut HashMap<(SocketAddr, SocketAddr), Prepared>) {
    if let Some(key) = offers
        .iter()
        .min_by_key(|(_, o)| o.received)
        .map(|(k, _)| *k)
    {
        offers.remove(&key);
    }
}

/// What the server makes of an offer.
#[derive(Debug)]
pub(crate) enum Opened {
    /// Valid and ready; the caller claims it and sends the accept verdict.
    Ready {
        region: Region,
        doorbell: SocketDoorbell,
    },
    /// Mapped but unusable: the caller declines it (the region is needed to do so safely).
    Decline {
        region: Region,
        reason: crate::setup::wire::DeclineReason,
        detail: String,
    },
    /// Not even mappable: the caller stays silent and uses TCP.
    Unusable(FallbackReason),
}

/// Validates and maps an offer as it arrives (see [`Advertisement`]).
fn open_offer(offer: &Offer, fds: Vec<OwnedFd>) -> Opened {
    use crate::setup::wire::DeclineReason;
    let [memfd, server_bell]: [OwnedFd; 2] = match fds.try_into() {
        Ok(fds) => fds,
        Err(_) => return Opened::Unusable(invalid("wrong number of descriptors")),
    };
    let len = offer.layout.region_len();
    if let Err(e) = sys::check_sealed_memfd(memfd.as_fd(), len) {
        return Opened::Unusable(invalid(&e.to_string()));
    }
    let mapping = match sys::Mapping::map_sealed(memfd.as_fd(), len) {
        Ok(m) => m,
        Err(e) => {
            return Opened::Unusable(FallbackReason::SetupFailed {
                error: format!("mmap of ring: {e}"),
            })
        }
    };
    let region = Region::new(Arc::new(mapping));
    if !sys::is_unix_dgram_socket(server_bell.as_fd()) {
        return decline(
            region,
            DeclineReason::InvalidRegion,
            "doorbell is not a Unix datagram socket",
        );
    }
    check_and_register(offer, region, server_bell)
}

/// Validates a ring kept from an earlier connection with this client (see [`Kept`]) for a new
/// offer: it is mapped and was checked then; its header must now name this connection.
fn open_kept(offer: &Offer, mut kept: Kept) -> Opened {
    let bell = kept.bell.take().expect("a kept ring has its doorbell end");
    check_and_register(offer, kept.region.clone(), bell)
}

/// The last steps of opening a mapped region for `offer`: its header must name exactly this
/// offer's connection, and the server's doorbell end is registered with tokio.
fn check_and_register(offer: &Offer, region: Region, bell: OwnedFd) -> Opened {
    use crate::setup::wire::DeclineReason;
    let expected = Header {
        layout: offer.layout,
        nonce: offer.nonce,
        client: offer.client,
        server: offer.server,
    };
    if let Err(detail) = crate::ring::check_header(&region, &expected) {
        return decline(region, DeclineReason::InvalidRegion, &detail);
    }
    match SocketDoorbell::new(bell) {
        Ok(doorbell) => Opened::Ready { region, doorbell },
        Err(e) => decline(
            region,
            DeclineReason::Resources,
            &format!("registering doorbell: {e}"),
        ),
    }
}

fn decline(region: Region, reason: crate::setup::wire::DeclineReason, detail: &str) -> Opened {
    Opened::Decline {
        region,
        reason,
        detail: detail.to_owned(),
    }
}

fn invalid(error: &str) -> FallbackReason {
    FallbackReason::InvalidOffer {
        error: error.to_owned(),
    }
}

// ---- client side -----------------------------------------------------------------------------

/// True if `ip` is an address of this host (so a wildcard listener here would receive a
/// connection to it).
fn is_local_address(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// A rendezvous connection to a listener, kept open by this process for its later connects.
#[derive(Debug)]
pub(crate) struct Rendezvous {
    /// Offers are sent under this lock, so that two connects never interleave their bytes.
    fd: Mutex<OwnedFd>,
    dst: SocketAddr,
    /// The listener's user, as `SO_PEERCRED` said when the connection was made: each connect
    /// checks it against its own uid policy.
    uid: u32,
    /// A TCP socket bound for the next connect to `dst`, and its canonical address (see
    /// [`Rendezvous::take_bound_socket`]).
    bound: Mutex<Option<(socket2::Socket, SocketAddr)>>,
    /// Rings of finished connections made over this rendezvous connection, oldest first, kept
    /// to be offered again (see [`Kept`]).
    kept: Mutex<Vec<Kept>>,
    /// The id of the next new ring offered on this connection (ids start at 1).
    next_id: std::sync::atomic::AtomicU64,
}

/// A ring of a finished connection, kept by the side that holds it to be used again by the
/// same two processes: a new connection then costs neither side a memfd, a mapping or passing
/// descriptors.
///
/// The region's setup word says where it is: a side that is done with it keeps it (the server
/// moves `CLAIMED -> POOLED`); only the client offers it again, after it wins
/// `POOLED -> REUSING`; either side that throws it away first wins `-> DISCARDED`. So a ring
/// is offered again only when both sides are done with it, and never after either has let it
/// go. A side that lies in that word can only spoil connections with itself.
#[derive(Debug)]
struct Kept {
    id: NonZeroU64,
    layout: Layout,
    region: Region,
    /// This side's doorbell end; taken when the ring is used again.
    bell: Option<OwnedFd>,
}

impl Kept {
    /// The region's setup state, as the other side may have left it.
    fn state(&self) -> u32 {
        self.region
            .load(STATE_OFFSET, std::sync::atomic::Ordering::Acquire)
    }

    /// Moves the region out of `POOLED` (to `REUSING` to offer it again, to `DISCARDED` to let
    /// it go); false if it is not there (in use, or the other side got there first).
    fn take_from_pool(&self, to: u32) -> bool {
        self.region
            .compare_exchange(STATE_OFFSET, state::POOLED, to)
            .is_ok()
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if self.bell.is_some() {
            discard(&self.region, &[state::POOLED, state::CLAIMED]);
        }
    }
}

/// Tells the other side that this one threw the ring away, by moving its setup state from the
/// first of `from` it is in to `DISCARDED`: the other side then never keeps or offers it.
fn discard(region: &Region, from: &[u32]) {
    for &from in from {
        if region
            .compare_exchange(STATE_OFFSET, from, state::DISCARDED)
            .is_ok()
        {
            return;
        }
    }
}

/// Rings a client keeps per rendezvous connection, and a listener per client connection.
const MAX_KEPT: usize = 2;
/// Only the ring of a connection that moved at most this many bytes each way is kept: a kept
/// ring holds the memory its connections touched (at most this much per direction, plus the
/// control page), and a connection that moves more pays for a new ring in its transfer time
/// anyway.
const KEEP_AT_MOST: u64 = 64 << 10;
/// A listener keeps more only while its client is offering them again (they cannot be
/// evicted then), and never more than this.
const MAX_KEPT_BY_LISTENER: usize = 8;

impl Rendezvous {
    /// The socket a connect prepared for the next one to this destination, already bound, so
    /// that the next connect can name its 4-tuple in its offer without a `bind` first.
    pub(crate) fn take_bound_socket(&self) -> Option<(socket2::Socket, SocketAddr)> {
        self.bound.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// True if no bound socket waits for the next connect.
    pub(crate) fn wants_bound_socket(&self) -> bool {
        self.bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Keeps `socket`, bound to `client`, for the next connect (it replaces any other).
    pub(crate) fn keep_bound_socket(&self, socket: socket2::Socket, client: SocketAddr) {
        *self.bound.lock().unwrap_or_else(|e| e.into_inner()) = Some((socket, client));
    }
}

/// This process's rendezvous connections, by destination.
#[derive(Debug, Default)]
struct RendezvousCache {
    pid: u32,
    /// Few entries (at most [`MAX_RENDEZVOUS`]): a list is enough.
    by_dst: Vec<Arc<Rendezvous>>,
}

impl RendezvousCache {
    fn get(&self, dst: SocketAddr) -> Option<&Arc<Rendezvous>> {
        self.by_dst.iter().find(|r| r.dst == dst)
    }
}

static RENDEZVOUS: Mutex<RendezvousCache> = Mutex::new(RendezvousCache {
    pid: 0,
    by_dst: Vec::new(),
});

/// At most this many destinations keep a rendezvous connection open in one process.
const MAX_RENDEZVOUS: usize = 32;

fn rendezvous_cache() -> std::sync::MutexGuard<'static, RendezvousCache> {
    let mut cache = RENDEZVOUS.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if cache.pid != pid {
        // A forked child sends its own offers on connections of its own.
        cache.by_dst.clear();
        cache.pid = pid;
    }
    cache
}

/// Finds the rendezvous of an xway listener for `dst` on this host: the connection this
/// process already has, or a new one (see [`lookup`]).
pub(crate) fn find_listener(
    dst: SocketAddr,
    policy: &UidPolicy,
) -> Result<Option<Arc<Rendezvous>>, FallbackReason> {
    let dst = canonical(dst);
    let cached = rendezvous_cache().get(dst).cloned();
    if let Some(found) = cached {
        check_listener_user(policy, found.uid)?;
        return Ok(Some(found));
    }
    let Some((fd, uid)) = lookup(dst, policy)? else {
        return Ok(None);
    };
    let rendezvous = Arc::new(Rendezvous {
        fd: Mutex::new(fd),
        dst,
        uid,
        bound: Mutex::new(None),
        kept: Mutex::new(Vec::new()),
        next_id: std::sync::atomic::AtomicU64::new(1),
    });
    let mut cache = rendezvous_cache();
    cache.by_dst.retain(|r| r.dst != dst);
    if cache.by_dst.len() >= MAX_RENDEZVOUS {
        cache.by_dst.remove(0);
    }
    cache.by_dst.push(rendezvous.clone());
    drop(cache);
    start_reaper();
    Ok(Some(rendezvous))
}

/// Makes the ring for the connection `header` names and offers it on `rendezvous`; the ring
/// and the rendezvous connection it was offered on (where it is kept once the connection ends,
/// see [`keep_on`]).
///
/// The ring is one kept from a finished connection to this listener if there is one (see
/// [`Kept`]), else a spare or a new one, sent with the offer. A connection the listener has
/// closed (it was dropped or restarted, or it found the connection misbehaving) is replaced
/// once by a new lookup, with a new ring.
pub(crate) fn offer(
    mut rendezvous: Arc<Rendezvous>,
    policy: &UidPolicy,
    header: &Header,
) -> Result<(ClientRing, Arc<Rendezvous>), FallbackReason> {
    let failed = |e: io::Error| FallbackReason::SetupFailed {
        error: format!("sending the offer: {e}"),
    };
    let mut fresh = false;
    loop {
        let ring = rendezvous
            .ring_for(header)
            .map_err(|e| FallbackReason::SetupFailed {
                error: format!("creating the ring: {e}"),
            })?;
        let e = match ring.send_offer_on(&rendezvous, header) {
            Ok(()) => return Ok((ring, rendezvous)),
            Err(e) => e,
        };
        // Nobody will claim it: a kept ring must not stay offered in the listener's keeping.
        discard(&ring.region, &[state::OFFERED]);
        // The listener is not keeping up: TCP now, the connection stays.
        if e.kind() == io::ErrorKind::WouldBlock {
            return Err(failed(e));
        }
        forget(&rendezvous);
        let gone = matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::NotConnected
        );
        if fresh || !gone {
            return Err(failed(e));
        }
        fresh = true;
        rendezvous = match find_listener(rendezvous.dst, policy)? {
            Some(again) => again,
            None => return Err(FallbackReason::NotAdvertised),
        };
    }
}

/// What the client does with its ring once its connection ends: keep it on `rendezvous` to
/// be offered again (see [`Kept`]).
pub(crate) fn keep_on(
    rendezvous: &Arc<Rendezvous>,
    ring: &ClientRing,
) -> crate::stream::ring_io::Release {
    let rendezvous = Arc::downgrade(rendezvous);
    let (id, layout, region) = (ring.id, ring.layout, ring.region.clone());
    crate::stream::ring_io::Release::new(move |doorbell, moved| {
        let kept = Kept {
            id,
            layout,
            region,
            bell: doorbell.into_end(),
        };
        // Dropped instead, it tells the listener to let it go too.
        if kept.bell.is_none() || moved > KEEP_AT_MOST {
            return;
        }
        if let Some(rendezvous) = rendezvous.upgrade() {
            let mut all = rendezvous.kept.lock().unwrap_or_else(|e| e.into_inner());
            if all.len() >= MAX_KEPT {
                all.remove(0);
            }
            all.push(kept);
        }
    })
}

impl Rendezvous {
    /// The setup states of the rings this client keeps, oldest first.
    #[cfg(test)]
    pub(crate) fn kept_states(&self) -> Vec<u32> {
        let all = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().map(Kept::state).collect()
    }

    /// A ring kept from a finished connection to this listener, won back from it, or else a
    /// spare or a new one; its header and `OFFERED` state written.
    fn ring_for(&self, header: &Header) -> io::Result<ClientRing> {
        let kept = {
            let mut all = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            // What the listener threw away, so do we.
            all.retain(|k| k.state() != state::DISCARDED);
            // The oldest first: it is the likeliest to be done with on the listener's side.
            let i = all
                .iter()
                .position(|k| k.layout == header.layout && k.take_from_pool(state::REUSING));
            i.map(|i| all.remove(i))
        };
        match kept {
            Some(kept) => ClientRing::reuse(kept, header),
            None => {
                let id = self
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ClientRing::create(header, NonZeroU64::new(id).unwrap_or(NonZeroU64::MIN))
            }
        }
    }
}

/// Whether this connect's uid policy allows a listener run by `uid`.
fn check_listener_user(policy: &UidPolicy, uid: u32) -> Result<(), FallbackReason> {
    if policy.allows(uid, sys::current_uid()) {
        Ok(())
    } else {
        Err(FallbackReason::PeerUidRejected { uid })
    }
}

/// Drops a rendezvous connection from the cache (the next connect looks the listener up anew).
fn forget(rendezvous: &Arc<Rendezvous>) {
    rendezvous_cache()
        .by_dst
        .retain(|r| !Arc::ptr_eq(r, rendezvous));
}

/// Looks for the rendezvous socket of an xway listener for `dst` on this host and connects.
///
/// `Ok(None)`: nobody advertises it (plain TCP at the cost of one or two failed `connect`s on
/// abstract sockets, a few microseconds). `Err(reason)`: somebody does, but the ring must not
/// be used with them.
fn lookup(dst: SocketAddr, policy: &UidPolicy) -> Result<Option<(OwnedFd, u32)>, FallbackReason> {
    let ip = dst.ip().to_canonical();
    let mut names = vec![rendezvous_name(ip, dst.port())];
    let wildcards: &[IpAddr] = match ip {
        IpAddr::V4(_) => &[
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ],
        IpAddr::V6(_) => &[IpAddr::V6(Ipv6Addr::UNSPECIFIED)],
    };
    names.extend(wildcards.iter().map(|w| rendezvous_name(*w, dst.port())));
    for (i, name) in names.iter().enumerate() {
        let sock = match sys::connect_abstract(name) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(FallbackReason::SetupFailed {
                    error: "listener's rendezvous backlog is full".into(),
                })
            }
            Err(e) => {
                return Err(FallbackReason::SetupFailed {
                    error: format!("rendezvous connect: {e}"),
                })
            }
        };
        // A wildcard listener here only receives our TCP connection if the destination is an
        // address of this host.
        if i > 0 && !is_local_address(ip) {
            return Ok(None);
        }
        let cred = sys::peer_cred(sock.as_fd()).map_err(|e| FallbackReason::SetupFailed {
            error: format!("SO_PEERCRED: {e}"),
        })?;
        check_listener_user(policy, cred.uid)?;
        return Ok(Some((sock, cred.uid)));
    }
    Ok(None)
}

/// The client's half of a ring before the offer is sent.
#[derive(Debug)]
pub(crate) struct ClientRing {
    pub(crate) region: Region,
    layout: Layout,
    /// Its id on the rendezvous connection it is offered on.
    id: NonZeroU64,
    /// The memfd and the server's doorbell end, sent with the offer; `None` for a ring the
    /// listener kept from an earlier connection.
    fds: Option<(OwnedFd, OwnedFd)>,
    /// The client's end of the doorbell pair, registered with tokio.
    doorbell: SocketDoorbell,
}

impl ClientRing {
    /// Creates the region for `header`, writes the header and the `OFFERED` state, and
    /// registers the client's doorbell (before anything is offered, so that accepting can no
    /// longer fail on this side).
    ///
    /// Takes a spare ring from this process's pool when one of the right layout is there (see
    /// [`build_spare_step`]); creates one otherwise.
    fn create(header: &Header, id: NonZeroU64) -> io::Result<ClientRing> {
        let spare = match take_spare(header.layout) {
            Some(spare) => spare,
            None => Spare::create(header.layout, false)?,
        };
        let Spare {
            memfd,
            region,
            client_bell,
            server_bell,
            ..
        } = spare;
        let region = match region {
            Some(region) => region,
            None => {
                let len = header.layout.region_len();
                Region::new(Arc::new(sys::Mapping::map_sealed(memfd.as_fd(), len)?))
            }
        };
        let doorbell = SocketDoorbell::new(client_bell)?;
        offer_region(&region, header);
        Ok(ClientRing {
            region,
            layout: header.layout,
            id,
            fds: Some((memfd, server_bell)),
            doorbell,
        })
    }

    /// Makes a ring won back from `POOLED` (see [`Kept`]) the ring for `header`: resets its
    /// control page (what the last connection left there), writes the header and `OFFERED`.
    fn reuse(mut kept: Kept, header: &Header) -> io::Result<ClientRing> {
        let bell = kept.bell.take().expect("a kept ring has its doorbell end");
        let doorbell = match SocketDoorbell::new(bell) {
            Ok(doorbell) => doorbell,
            Err(e) => {
                discard(&kept.region, &[state::REUSING]);
                return Err(e);
            }
        };
        static ZEROS: [u8; CONTROL_LEN] = [0; CONTROL_LEN];
        kept.region.write_bytes(0, &ZEROS[..STATE_OFFSET]);
        kept.region
            .write_bytes(STATE_OFFSET + 4, &ZEROS[STATE_OFFSET + 4..]);
        offer_region(&kept.region, header);
        Ok(ClientRing {
            region: kept.region.clone(),
            layout: kept.layout,
            id: kept.id,
            fds: None,
            doorbell,
        })
    }

    /// Sends the offer, with the region and the server's doorbell end for a new ring.
    fn send_offer_on(&self, rendezvous: &Rendezvous, header: &Header) -> io::Result<()> {
        let offer = Offer {
            nonce: header.nonce,
            client: header.client,
            server: header.server,
            layout: header.layout,
            ring: Some(self.id),
            reused: self.fds.is_none(),
        };
        let bytes = offer.encode();
        let fds = match &self.fds {
            Some((memfd, bell)) => vec![memfd.as_fd(), bell.as_fd()],
            None => Vec::new(),
        };
        let fd = rendezvous.fd.lock().unwrap_or_else(|e| e.into_inner());
        let n = sys::send_with_fds(fd.as_fd(), &bytes, &fds)?;
        if n != bytes.len() {
            // The next offer would start mid-message: this connection is unusable now.
            return Err(io::Error::new(io::ErrorKind::WriteZero, "offer truncated"));
        }
        Ok(())
    }

    /// After an accept verdict: the client's doorbell. The memfd and our copy of the server's
    /// end are closed (the mapping keeps the memory, the server holds its end).
    pub(crate) fn into_doorbell(self) -> SocketDoorbell {
        self.doorbell
    }
}

/// Writes the header naming the connection, then the `OFFERED` state: from here on, the
/// listener may claim the region.
fn offer_region(region: &Region, header: &Header) {
    region.write_bytes(0, &header.encode());
    region.store(
        STATE_OFFSET,
        state::OFFERED,
        std::sync::atomic::Ordering::Release,
    );
}

// ---- spare rings -----------------------------------------------------------------------------

/// Most spare rings a process keeps. Each holds three descriptors (the memfd and both doorbell
/// ends), a mapping of the ring's size (address space only) and 12 KiB of memory (the three
/// pages the first exchange touches).
const MAX_SPARES: usize = 4;

/// A ring that no other process has ever seen: a sealed memfd (for a prepared spare, mapped,
/// with the pages of the first exchange allocated and touched), and a fresh doorbell pair.
///
/// A spare is used for one offer only: once its memfd has been sent, the listener has it
/// mapped, so it is never a spare again (its connection's ring may be kept, see [`Kept`]).
#[derive(Debug)]
struct Spare {
    layout: Layout,
    memfd: OwnedFd,
    /// The client's mapping, with the pages of the first exchange already faulted in.
    region: Option<Region>,
    client_bell: OwnedFd,
    server_bell: OwnedFd,
}

impl Spare {
    /// A spare made in one go: see [`SpareBuild`] for what `prepare` adds.
    fn create(layout: Layout, prepare: bool) -> io::Result<Spare> {
        let mut build = SpareBuild::new(layout, prepare);
        loop {
            if let Some(spare) = build.step()? {
                return Ok(spare);
            }
        }
    }
}

/// A spare ring under construction, one step of a few system calls at a time.
///
/// A client builds its next spare while it waits for its listener's claim (see
/// [`build_spare_step`]): between steps it looks at the claim again, so building never delays
/// the connect that waits.
#[derive(Debug)]
struct SpareBuild {
    layout: Layout,
    /// Also map the region and touch what the first exchange uses, so that none of it is on
    /// the next connect's critical path (a connect that finds no spare skips this).
    prepare: bool,
    memfd: Option<OwnedFd>,
    region: Option<Region>,
    /// How many of [`SpareBuild::first_pages`] are touched.
    touched: usize,
}

impl SpareBuild {
    fn new(layout: Layout, prepare: bool) -> SpareBuild {
        SpareBuild {
            layout,
            prepare,
            memfd: None,
            region: None,
            touched: 0,
        }
    }

    /// The pages the first exchange touches, on both sides: the control page and the first
    /// page of each ring.
    fn first_pages(&self) -> [usize; 3] {
        [0, self.layout.c2s_data(), self.layout.s2c_data()]
    }

    /// Takes the next step (at most a few system calls or one page fault); the spare once the
    /// last one is done.
    fn step(&mut self) -> io::Result<Option<Spare>> {
        let layout = self.layout;
        let Some(memfd) = &self.memfd else {
            self.memfd = Some(sys::memfd_sealed(layout.region_len())?);
            return Ok(None);
        };
        if self.prepare {
            let Some(region) = &self.region else {
                let mapping = sys::Mapping::map_sealed(memfd.as_fd(), layout.region_len())?;
                self.region = Some(Region::new(Arc::new(mapping)));
                return Ok(None);
            };
            if let Some(&page) = self.first_pages().get(self.touched) {
                // Allocating (and zeroing) a page of shared memory at its first touch costs
                // microseconds: done here, the first exchange finds it allocated, and mapped
                // on this side. Nobody else has this memfd yet: writing a zero changes nothing.
                region.write_bytes(page, &[0]);
                self.touched += 1;
                return Ok(None);
            }
        }
        let (client_bell, server_bell) = sys::doorbell_pair()?;
        Ok(Some(Spare {
            layout,
            memfd: self.memfd.take().expect("made by the first step"),
            region: self.region.take(),
            client_bell,
            server_bell,
        }))
    }
}

/// This process's spare rings, and how many it used since the last refill.
#[derive(Debug, Default)]
struct Spares {
    /// The process that created the spares: a forked child must not offer its parent's memfds
    /// (both would write one ring), so it throws them away.
    pid: u32,
    rings: Vec<Spare>,
    /// Rings asked for (taken or missed) and not replaced yet, at most [`MAX_SPARES`].
    wanted: usize,
    /// The next spare, part built.
    building: Option<SpareBuild>,
    /// The layout last asked for: what refills create.
    layout: Option<Layout>,
    /// When a ring was last asked for.
    last_wanted: Option<Instant>,
    /// A task that closes the spares and rendezvous connections once they sit unused (see
    /// [`IDLE`]) is running.
    reaper: bool,
}

/// Spares nobody asked for during this long are closed, and so are the rendezvous
/// connections: a process that stopped connecting holds no descriptors for either.
const IDLE: Duration = Duration::from_secs(1);

static SPARES: Mutex<Spares> = Mutex::new(Spares {
    pid: 0,
    rings: Vec::new(),
    wanted: 0,
    building: None,
    layout: None,
    last_wanted: None,
    reaper: false,
});

fn spares() -> std::sync::MutexGuard<'static, Spares> {
    let mut spares = SPARES.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if spares.pid != pid {
        spares.rings.clear();
        spares.wanted = 0;
        spares.building = None;
        spares.reaper = false;
        spares.pid = pid;
    }
    spares
}

/// Starts [`reap_idle`] unless it runs already (or there is no runtime to run it on).
fn start_reaper() {
    let mut spares = spares();
    if !spares.reaper {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            spares.reaper = true;
            runtime.spawn(reap_idle());
        }
    }
}

/// Closes the spares and the rendezvous connections once this process made no offer during
/// [`IDLE`], then ends.
async fn reap_idle() {
    /// Lets the next refill start a new reaper, however this one ends (the runtime may drop it).
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            spares().reaper = false;
        }
    }
    let _disarm = Disarm;
    loop {
        tokio::time::sleep(IDLE).await;
        let mut spares = spares();
        if spares.last_wanted.is_none_or(|t| t.elapsed() >= IDLE) {
            let idle = (std::mem::take(&mut spares.rings), spares.building.take());
            spares.wanted = 0;
            drop(spares);
            drop(idle);
            let idle = std::mem::take(&mut rendezvous_cache().by_dst);
            drop(idle);
            return;
        }
    }
}

/// Takes a spare ring of `layout`, and records the demand either way.
fn take_spare(layout: Layout) -> Option<Spare> {
    let mut spares = spares();
    spares.wanted = (spares.wanted + 1).min(MAX_SPARES);
    spares.layout = Some(layout);
    spares.last_wanted = Some(Instant::now());
    let i = spares.rings.iter().position(|s| s.layout == layout)?;
    Some(spares.rings.swap_remove(i))
}

/// Takes one step (a few system calls) towards replacing the spare ring this process used
/// last, if its listeners claim its offers; false if there is nothing to do.
///
/// A client calls this instead of idling while it waits for its listener's claim and verdict
/// (see `setup::spin_for_claim`), so that the next connection's memfd, page allocations,
/// mapping and doorbell pair cost nothing on its critical path, and looks at the claim between
/// steps. Only a process whose last offer was claimed builds spares, and one that stops
/// connecting closes them after [`IDLE`].
pub(crate) fn build_spare_step() -> bool {
    if !LAST_CLAIMED.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    let mut build = {
        let mut spares = spares();
        match (spares.building.take(), spares.layout) {
            (Some(build), _) => build,
            (None, Some(layout)) if spares.wanted > 0 => {
                spares.wanted -= 1;
                SpareBuild::new(layout, true)
            }
            _ => return false,
        }
    };
    // Outside the lock: other connects go on meanwhile.
    match build.step() {
        Ok(None) => spares().building = Some(build),
        Ok(Some(spare)) => {
            let mut spares = spares();
            if spares.rings.len() >= MAX_SPARES {
                spares.rings.remove(0);
            }
            spares.rings.push(spare);
            drop(spares);
            start_reaper();
        }
        // Out of descriptors or memory: the next connect creates its ring itself, and fails
        // over to TCP there if it must.
        Err(e) => tracing::debug!(error = %e, "xway: creating a spare ring failed"),
    }
    true
}

/// The last offer this process made was claimed by its listener.
static LAST_CLAIMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Records whether a listener claimed this process's offer (see [`build_spare_step`]).
pub(crate) fn note_claimed(claimed: bool) {
    LAST_CLAIMED.store(claimed, std::sync::atomic::Ordering::Relaxed);
}

/// The layout a client offers for a configured ring order.
pub(crate) fn layout_for(order: u32) -> Layout {
    Layout::symmetric(order).expect("config clamps the ring order")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_spare_ring_is_sealed_to_its_layout_with_only_its_first_pages_allocated() {
        let layout = Layout::symmetric(22).unwrap();
        let spare = Spare::create(layout, true).unwrap();
        sys::check_sealed_memfd(spare.memfd.as_fd(), layout.region_len()).unwrap();
        assert!(sys::is_unix_dgram_socket(spare.server_bell.as_fd()));
        let meta = std::fs::File::from(spare.memfd).metadata().unwrap();
        // Three pages (the control page and the first page of each ring), not the rings (a
        // system with huge pages for shared memory allocates more at once, still not all).
        let allocated = meta.blocks() * 512;
        assert!(allocated >= 3 * 4096, "{allocated} bytes allocated");
        assert!(
            allocated < layout.region_len() as u64,
            "{allocated} bytes allocated"
        );
    }

    #[tokio::test]
    async fn an_offer_reusing_a_ring_the_listener_does_not_keep_is_unusable() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = tcp.local_addr().unwrap();
        let advertisement = Advertisement::bind(server, UidPolicy::SameUser).unwrap();
        let rendezvous = find_listener(server, &UidPolicy::SameUser)
            .unwrap()
            .expect("advertised");
        let offer = Offer {
            nonce: [1; 16],
            client: SocketAddr::from(([127, 0, 0, 1], 40_000)),
            server,
            layout: Layout::symmetric(16).unwrap(),
            ring: NonZeroU64::new(99),
            reused: true,
        };
        let fd = rendezvous.fd.lock().unwrap();
        sys::send_with_fds(fd.as_fd(), &offer.encode(), &[]).unwrap();
        drop(fd);
        let prepared = advertisement.take_offer(offer.client, server).unwrap();
        assert!(
            matches!(prepared.opened, Opened::Unusable(_)),
            "{:?}",
            prepared.opened
        );
    }

    #[test]
    fn a_spare_ring_created_on_demand_allocates_nothing_yet() {
        let layout = Layout::symmetric(16).unwrap();
        let spare = Spare::create(layout, false).unwrap();
        let meta = std::fs::File::from(spare.memfd).metadata().unwrap();
        assert_eq!(meta.blocks(), 0);
    }
}
