//! The local provider: two processes on one Linux kernel, in one network namespace.
//!
//! - **Region**: a sealed `memfd` (it cannot shrink, so a mapping can never fault).
//! - **Doorbells**: a connected pair of Unix datagram sockets, one end per side, registered
//!   with tokio through [`AsyncFd`]; a byte sent on one end wakes the other.
//! - **Rendezvous**: a listener bound to `ip:port` listens on the abstract Unix socket
//!   `xway/1/<ip>/<port>` (abstract names live in the network namespace, like the TCP port).
//!   A client connecting to `ip:port` looks for that name, checks the listener's user with
//!   `SO_PEERCRED`, and sends its offer with the memfd and the server's doorbell end (`SCM_RIGHTS`)
//!   *before* its TCP SYN. When the server accepts the TCP connection, the offer is therefore
//!   already queued on the rendezvous socket; the server drains it without waiting.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
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
/// At most this many rendezvous connections wait for their offer bytes.
const MAX_PENDING_CONNS: usize = 64;

/// The rendezvous name of a listener bound to `addr`.
fn rendezvous_name(ip: IpAddr, port: u16) -> Vec<u8> {
    format!("xway/1/{}/{}", ip.to_canonical(), port).into_bytes()
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
}

// ---- listener side ---------------------------------------------------------------------------

/// An offer received on the rendezvous socket, waiting for its TCP connection.
#[derive(Debug)]
pub(crate) struct ReceivedOffer {
    pub(crate) offer: Offer,
    fds: Vec<OwnedFd>,
    received: Instant,
}

#[derive(Debug, Default)]
struct Pending {
    /// Rendezvous connections whose offer has not arrived (yet).
    conns: Vec<(OwnedFd, Instant)>,
    /// Offers by (client, server) address as each side sees them, canonicalised.
    offers: HashMap<(SocketAddr, SocketAddr), ReceivedOffer>,
}

/// A listener's advertisement: the abstract socket clients send offers to.
#[derive(Debug)]
pub(crate) struct Advertisement {
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
        Ok(Advertisement {
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

    /// Takes the offer made for the TCP connection `client -> server`, if any. Never blocks:
    /// an offer is sent before its TCP SYN, so when the connection is accepted the offer is
    /// already queued.
    pub(crate) fn take_offer(
        &self,
        client: SocketAddr,
        server: SocketAddr,
        now: Instant,
    ) -> Option<ReceivedOffer> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.drain(&mut pending, now);
        pending
            .offers
            .remove(&(canonical(client), canonical(server)))
    }

    fn drain(&self, p: &mut Pending, now: Instant) {
        let own_uid = sys::current_uid();
        loop {
            match sys::accept_nonblocking(self.socket.as_fd()) {
                Ok(conn) => match sys::peer_cred(conn.as_fd()) {
                    Ok(cred) if self.uid_policy.allows(cred.uid, own_uid) => {
                        if p.conns.len() >= MAX_PENDING_CONNS {
                            p.conns.remove(0);
                        }
                        p.conns.push((conn, now));
                    }
                    Ok(cred) => {
                        tracing::debug!(
                            uid = cred.uid,
                            pid = cred.pid,
                            "xway: offer from a user the policy rejects, dropped"
                        );
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "xway: SO_PEERCRED failed, offer dropped")
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: the offer stays queued; its client falls back to
                    // TCP at its deadline (invariant I5).
                    tracing::debug!(error = %e, "xway: cannot accept rendezvous connection");
                    break;
                }
            }
        }
        let mut i = 0;
        while i < p.conns.len() {
            let mut buf = [0u8; OFFER_LEN + 1];
            let done = match sys::recv_with_fds(p.conns[i].0.as_fd(), &mut buf) {
                Ok((n, fds)) => {
                    match Offer::decode(&buf[..n]) {
                        Ok(offer) if fds.len() == 2 => {
                            if p.offers.len() >= MAX_PENDING_OFFERS {
                                evict_oldest(&mut p.offers);
                            }
                            let key = (canonical(offer.client), canonical(offer.server));
                            // Two offers for one 4-tuple: one of them is not the TCP client's.
                            // Neither is trusted; that connection gets plain TCP.
                            if p.offers.remove(&key).is_some() {
                                tracing::debug!(client = %key.0, "xway: conflicting offers for one connection, both dropped");
                            } else {
                                p.offers.insert(
                                    key,
                                    ReceivedOffer {
                                        offer,
                                        fds,
                                        received: now,
                                    },
                                );
                            }
                        }
                        Ok(_) => tracing::debug!(
                            fds = fds.len(),
                            "xway: offer with wrong descriptor count, dropped"
                        ),
                        Err(e) => tracing::debug!(error = %e, "xway: malformed offer, dropped"),
                    }
                    true
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    now.duration_since(p.conns[i].1) > OFFER_TTL
                }
                Err(e) => {
                    tracing::debug!(error = %e, "xway: rendezvous receive failed");
                    true
                }
            };
            if done {
                p.conns.swap_remove(i);
            } else {
                i += 1;
            }
        }
        p.offers
            .retain(|_, o| now.duration_since(o.received) <= OFFER_TTL);
    }
}

fn evict_oldest(offers: &mut HashMap<(SocketAddr, SocketAddr), ReceivedOffer>) {
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

/// Validates and maps an offer for the accepted connection `client -> server`.
pub(crate) fn open_offer(received: ReceivedOffer) -> Opened {
    use crate::setup::wire::DeclineReason;
    let ReceivedOffer { offer, fds, .. } = received;
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
    let expected = Header {
        layout: offer.layout,
        nonce: offer.nonce,
        client: offer.client,
        server: offer.server,
    };
    if let Err(detail) = crate::ring::check_header(&region, &expected) {
        return decline(region, DeclineReason::InvalidRegion, &detail);
    }
    if !sys::is_unix_dgram_socket(server_bell.as_fd()) {
        return decline(
            region,
            DeclineReason::InvalidRegion,
            "doorbell is not a Unix datagram socket",
        );
    }
    match SocketDoorbell::new(server_bell) {
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

/// Finds the rendezvous socket of an xway listener for `dst` on this host.
///
/// `Ok(None)`: nobody advertises it (plain TCP at the cost of one or two failed `connect`s on
/// abstract sockets, a few microseconds). `Err(reason)`: somebody does, but the ring must not
/// be used with them.
pub(crate) fn find_listener(
    dst: SocketAddr,
    policy: &UidPolicy,
) -> Result<Option<OwnedFd>, FallbackReason> {
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
        if !policy.allows(cred.uid, sys::current_uid()) {
            return Err(FallbackReason::PeerUidRejected { uid: cred.uid });
        }
        return Ok(Some(sock));
    }
    Ok(None)
}

/// The client's half of a ring before the offer is sent.
#[derive(Debug)]
pub(crate) struct ClientRing {
    pub(crate) region: Region,
    memfd: OwnedFd,
    /// The client's end of the doorbell pair, registered with tokio.
    doorbell: SocketDoorbell,
    /// The server's end, sent with the offer.
    server_bell: OwnedFd,
}

impl ClientRing {
    /// Creates the region for `header`, writes the header and the `OFFERED` state, and
    /// registers the client's doorbell (before anything is offered, so that accepting can no
    /// longer fail on this side).
    ///
    /// Takes a spare ring from this process's pool when one of the right layout is there (see
    /// [`prepare_spare_ring`]); creates one otherwise.
    pub(crate) fn create(header: &Header) -> io::Result<ClientRing> {
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
        region.write_bytes(0, &header.encode());
        region.store(
            STATE_OFFSET,
            state::OFFERED,
            std::sync::atomic::Ordering::Release,
        );
        let doorbell = SocketDoorbell::new(client_bell)?;
        Ok(ClientRing {
            region,
            memfd,
            doorbell,
            server_bell,
        })
    }

    /// Sends the offer with the region and the server's doorbell end on the rendezvous socket, then
    /// closes it: the listener reads the queued message whenever it accepts.
    pub(crate) fn send_offer(&self, rendezvous: OwnedFd, offer: &Offer) -> io::Result<()> {
        let bytes = offer.encode();
        let fds = [self.memfd.as_fd(), self.server_bell.as_fd()];
        let n = sys::send_with_fds(rendezvous.as_fd(), &bytes, &fds)?;
        if n != bytes.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "offer truncated"));
        }
        close_later(rendezvous);
        Ok(())
    }

    /// After an accept verdict: the client's doorbell. The memfd and our copy of the server's
    /// end are closed (the mapping keeps the memory, the server holds its end).
    pub(crate) fn into_doorbell(self) -> SocketDoorbell {
        self.doorbell
    }
}

// ---- spare rings -----------------------------------------------------------------------------

/// Most spare rings a process keeps. Each holds three descriptors (the memfd and both doorbell
/// ends), a mapping of the ring's size (address space only) and 12 KiB of memory (the three
/// pages the first exchange touches).
const MAX_SPARES: usize = 4;

/// A ring that no other process has ever seen: a sealed memfd whose first pages are already
/// allocated (and, for a prepared spare, mapped), and a fresh doorbell pair.
///
/// A spare is used for one offer only: once its memfd has been sent, the listener keeps it
/// mapped, so it is never pooled again.
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
    /// `prepare`: also allocate, map and touch what the first exchange uses, so that none of
    /// it is on the next connect's critical path (a connect that finds no spare skips this).
    fn create(layout: Layout, prepare: bool) -> io::Result<Spare> {
        let memfd = sys::memfd_sealed(layout.region_len())?;
        let region = if prepare {
            // Allocating (and zeroing) a page of shared memory at its first touch costs
            // microseconds; the first exchange touches the control page and the first page of
            // each ring, on both sides. Allocated here, those touches are minor faults, and
            // touched here through our mapping, not even that on this side.
            sys::memfd_allocate(memfd.as_fd(), 0, CONTROL_LEN + PAGE)?;
            sys::memfd_allocate(memfd.as_fd(), layout.s2c_data(), PAGE)?;
            let mapping = sys::Mapping::map_sealed(memfd.as_fd(), layout.region_len())?;
            let region = Region::new(Arc::new(mapping));
            // Nobody else has this memfd yet: these writes of zeros change nothing.
            region.write_bytes(0, &[0]);
            region.write_bytes(layout.c2s_data(), &[0]);
            region.read_bytes(layout.s2c_data(), &mut [std::mem::MaybeUninit::uninit()]);
            Some(region)
        } else {
            None
        };
        let (client_bell, server_bell) = sys::doorbell_pair()?;
        Ok(Spare {
            layout,
            memfd,
            region,
            client_bell,
            server_bell,
        })
    }
}

/// The page size the preallocation assumes (a larger one only allocates more at once).
const PAGE: usize = 4096;

/// This process's spare rings, and how many it used since the last refill.
#[derive(Debug, Default)]
struct Spares {
    /// The process that created the spares: a forked child must not offer its parent's memfds
    /// (both would write one ring), so it throws them away.
    pid: u32,
    rings: Vec<Spare>,
    /// Rings asked for (taken or missed) and not replaced yet, at most [`MAX_SPARES`].
    wanted: usize,
    /// The layout last asked for: what refills create.
    layout: Option<Layout>,
    /// When a ring was last asked for.
    last_wanted: Option<Instant>,
    /// A task that closes the spares once they sit unused (see [`SPARE_IDLE`]) is running.
    reaper: bool,
}

/// Spares nobody asked for during this long are closed, and so are the rendezvous sockets
/// still open: a process that stopped connecting holds no descriptors for either.
const SPARE_IDLE: Duration = Duration::from_secs(1);

static SPARES: Mutex<Spares> = Mutex::new(Spares {
    pid: 0,
    rings: Vec::new(),
    wanted: 0,
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
        spares.reaper = false;
        spares.pid = pid;
    }
    spares
}

/// Closes the spares once nobody asked for one during [`SPARE_IDLE`], then ends.
async fn reap_idle_spares() {
    /// Lets the next refill start a new reaper, however this one ends (the runtime may drop it).
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            spares().reaper = false;
        }
    }
    let _disarm = Disarm;
    loop {
        tokio::time::sleep(SPARE_IDLE).await;
        let mut spares = spares();
        if spares.last_wanted.is_none_or(|t| t.elapsed() >= SPARE_IDLE) {
            let idle = std::mem::take(&mut spares.rings);
            spares.wanted = 0;
            drop(spares);
            drop(idle);
            close_rendezvous_sockets(Which::All);
            return;
        }
    }
}

/// Rendezvous sockets whose offer may still be queued, closed by [`close_rendezvous_sockets`].
///
/// Closing a Unix socket while descriptors of Unix sockets are in flight (our offer carries the
/// server's doorbell end) runs the kernel's descriptor garbage collector: about 10 us, on the
/// connect's critical path. Once the listener has taken the offer, closing is cheap.
static CLOSE_LATER: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());
/// Most rendezvous sockets waiting in [`CLOSE_LATER`]; beyond, the oldest is closed at once.
const MAX_CLOSE_LATER: usize = 16;

fn close_later(fd: OwnedFd) {
    let mut later = CLOSE_LATER.lock().unwrap_or_else(|e| e.into_inner());
    if later.len() >= MAX_CLOSE_LATER {
        later.remove(0);
    }
    later.push(fd);
}

/// Which rendezvous sockets [`close_rendezvous_sockets`] closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// All but the newest: a client calls this while its own offer (the newest) may still be
    /// in flight, and the earlier ones have been taken (or given up on) by then.
    Earlier,
    /// All of them: a client that stops waiting for its claim, and the idle reaper.
    All,
}

/// Closes rendezvous sockets of offers sent so far (see [`Which`]). The newest one stays open
/// until the next connect, or until the process stops connecting (the spare reaper).
pub(crate) fn close_rendezvous_sockets(which: Which) {
    let closing = {
        let mut later = CLOSE_LATER.lock().unwrap_or_else(|e| e.into_inner());
        let keep = usize::from(which == Which::Earlier).min(later.len());
        let split = later.len() - keep;
        let newest = later.split_off(split);
        std::mem::replace(&mut *later, newest)
    };
    drop(closing);
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

/// Creates at most one spare ring, if this process used one since the last refill.
///
/// A client calls this while it waits for its verdict (see `setup::verdict_without_sleeping`),
/// so that the next connection's memfd, page allocations and doorbell pair cost nothing on its
/// critical path; only a process whose listeners claim its offers builds spares. A process
/// that never offers a local ring never creates one; one that stops connecting closes its
/// spares after [`SPARE_IDLE`].
pub(crate) fn prepare_spare_ring() {
    let layout = {
        let mut spares = spares();
        match spares.layout {
            Some(layout) if spares.wanted > 0 => {
                spares.wanted -= 1;
                layout
            }
            _ => return,
        }
    };
    // Created outside the lock: other connects go on meanwhile.
    match Spare::create(layout, true) {
        Ok(spare) => {
            let mut spares = spares();
            if spares.rings.len() >= MAX_SPARES {
                spares.rings.remove(0);
            }
            spares.rings.push(spare);
            if !spares.reaper {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    spares.reaper = true;
                    runtime.spawn(reap_idle_spares());
                }
            }
        }
        // Out of descriptors or memory: the next connect creates its ring itself, and fails
        // over to TCP there if it must.
        Err(e) => tracing::debug!(error = %e, "xway: creating a spare ring failed"),
    }
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
        assert!(allocated >= 3 * PAGE as u64, "{allocated} bytes allocated");
        assert!(
            allocated < layout.region_len() as u64,
            "{allocated} bytes allocated"
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
