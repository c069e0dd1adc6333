//! The xen provider's rendezvous: how a listener advertises itself in XenStore, how a client
//! finds it and leaves an offer, and how the server authenticates and maps that offer.
//!
//! Nodes, under a guest's home `/local/domain/<domid>` (names of addresses as in
//! [`directory::entry_name`], e.g. `0-0-0-0-7000`):
//!
//! | node | permissions | what |
//! | --- | --- | --- |
//! | `data/xway/listen/<ip>-<port>` | `r<server>` (everybody reads) | the advertisement of a listener bound to `ip:port` |
//! | `data/xway/inbox/<ip>-<port>` | `w<server>` (everybody may create) | where its clients leave offers |
//! | `…/inbox/<ip>-<port>/<client ip>-<client port>` | `n<client>,b<server>` | one offer, created in one transaction with those permissions |
//! | `/xway/directory/<ip>` (dom0) | `r0` | the domain id of the guest that owns `ip` |
//!
//! Trust (invariant I3): the client grants its pages only to the domain id the dom0 directory
//! gives for the destination IP; the server maps an offer only from the domain xenstored
//! records as the offer node's owner (a guest cannot forge or give away ownership), and only
//! if the node's permissions are exactly `n<owner>,b<server>` (so nobody else could have
//! written it). The ring header then binds the region to the TCP connection (4-tuple and
//! nonce), and the verdict travels on that connection, as for the local provider.
//!
//! An offer is committed before its client sends the SYN, so the server finds it when it
//! accepts. It looks only for connections from other guests of this host (dom0's directory,
//! which the listener follows, or the configured peers): a client anywhere else gets plain TCP
//! at once, without a XenStore request (invariant I1). A plain client in another guest costs
//! one XenStore read before its connection is handed over; it sees nothing of it.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::directory;
use super::evtchn::EvtchnPort;
use super::gntalloc::{Gntalloc, PeerAccess};
use super::gntdev::Gntdev;
use super::xenstore::{xs_errno, Access, Perm, Tx, XenStore};
use super::{DomId, PAGE_SIZE};
use crate::config::XwayConfig;
use crate::ring::layout::{state, Header, Layout, MIN_ORDER, STATE_OFFSET};
use crate::ring::{check_header, Region};
use crate::setup::wire::DeclineReason;
use crate::transport::FallbackReason;

/// The value of a listener's advertisement node: the offer format it understands.
const ADVERTISEMENT: &[u8] = b"xway/1";

/// Largest ring order a Xen offer may carry: 256 KiB per direction keeps the grant refs of an
/// offer well inside one XenStore value (about 2 KiB), whoever sends it.
pub(crate) const MAX_XEN_ORDER: u32 = 18;

/// How long the listener's XenStore requests may take before the connection uses TCP.
const SERVER_XS_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a listener's directory task wakes without events (to end once its listener is
/// gone, and to re-read the directory in case an event was lost).
const DIRECTORY_RECHECK: Duration = Duration::from_secs(5);

fn listen_node(home: &str, name: &str) -> String {
    format!("{home}/data/xway/listen/{name}")
}

fn inbox_node(home: &str, name: &str) -> String {
    format!("{home}/data/xway/inbox/{name}")
}

fn home(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

/// The node name of a socket address: `<ip>-<port>`.
fn addr_name(addr: SocketAddr) -> String {
    format!("{}-{}", directory::entry_name(addr.ip()), addr.port())
}

fn not_found_or_denied(e: &io::Error) -> bool {
    matches!(xs_errno(e), Some(libc::ENOENT | libc::EACCES))
}

fn setup_failed(what: &str, e: impl std::fmt::Display) -> FallbackReason {
    FallbackReason::SetupFailed {
        error: format!("xen: {what}: {e}"),
    }
}

// ---- the offer value ---------------------------------------------------------------------------

/// An offer as it sits in XenStore:
/// `xway/1 <nonce, 32 hex digits> <c2s order> <s2c order> <event-channel port> <ref>,<ref>,…`,
/// one grant ref per page of the region, in order. The 4-tuple is in the node's name and in
/// the ring header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XenOffer {
    pub(crate) nonce: [u8; 16],
    pub(crate) layout: Layout,
    pub(crate) port: u32,
    pub(crate) refs: Vec<u32>,
}

impl XenOffer {
    pub(crate) fn encode(&self) -> String {
        let nonce: String = self.nonce.iter().map(|b| format!("{b:02x}")).collect();
        let refs: Vec<String> = self.refs.iter().map(u32::to_string).collect();
        format!(
            "xway/1 {nonce} {} {} {} {}",
            self.layout.c2s_order,
            self.layout.s2c_order,
            self.port,
            refs.join(",")
        )
    }

    /// Parses a value read from XenStore, written by a peer (invariant I2): every field is
    /// checked, and the number of refs must be exactly the layout's page count before anything
    /// is allocated for them.
    pub(crate) fn parse(value: &[u8]) -> Result<XenOffer, String> {
        let text = std::str::from_utf8(value).map_err(|_| "offer is not text".to_owned())?;
        let fields: Vec<&str> = text.split(' ').collect();
        let [magic, nonce, c2s, s2c, port, refs] = fields[..] else {
            return Err(format!("offer has {} fields, expected 6", fields.len()));
        };
        if magic.as_bytes() != ADVERTISEMENT {
            return Err("offer is not in the xway/1 format".into());
        }
        let nonce = parse_nonce(nonce).ok_or("offer nonce is not 32 hex digits")?;
        let order = |s: &str| {
            s.parse::<u32>()
                .ok()
                .filter(|o| (MIN_ORDER..=MAX_XEN_ORDER).contains(o) && !s.starts_with('+'))
                .ok_or_else(|| {
                    format!("offer ring order {s:?} is not in {MIN_ORDER}..={MAX_XEN_ORDER}")
                })
        };
        let layout = Layout::new(order(c2s)?, order(s2c)?)
            .ok_or_else(|| "offer ring orders rejected by the layout".to_owned())?;
        let port = parse_u32(port).ok_or("offer event-channel port is not a number")?;
        let pages = layout.region_len() / PAGE_SIZE;
        if refs.split(',').count() != pages {
            return Err(format!(
                "offer lists {} grant refs; its layout needs {pages}",
                refs.split(',').count()
            ));
        }
        let refs = refs
            .split(',')
            .map(parse_u32)
            .collect::<Option<Vec<u32>>>()
            .ok_or("offer has a grant ref that is not a number")?;
        Ok(XenOffer {
            nonce,
            layout,
            port,
            refs,
        })
    }
}

/// A decimal `u32` with digits only (no sign, no spaces).
fn parse_u32(s: &str) -> Option<u32> {
    (!s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn parse_nonce(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut nonce = [0u8; 16];
    for (i, b) in nonce.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(nonce)
}

// ---- XenStore access -------------------------------------------------------------------------

/// Set once opening XenStore failed in a way that will not change (no Xen, no permission), so
/// that connections on other hosts pay for the attempt once per process, not once per connect.
static XENSTORE_UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// A XenStore connection on the current runtime, or `None` where there is none to be had.
fn open_xenstore() -> Option<XenStore> {
    if XENSTORE_UNAVAILABLE.load(Ordering::Relaxed) {
        return None;
    }
    match XenStore::open() {
        Ok(xs) => Some(xs),
        Err(e) => {
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ) {
                XENSTORE_UNAVAILABLE.store(true, Ordering::Relaxed);
            }
            tracing::debug!(error = %e, "xway: no XenStore; the xen provider is off");
            None
        }
    }
}

/// This guest's domain id, read once per process (it changes only across a migration, which
/// no ring survives anyway).
async fn own_domid(xs: &XenStore) -> io::Result<DomId> {
    static OWN: std::sync::OnceLock<DomId> = std::sync::OnceLock::new();
    if let Some(me) = OWN.get() {
        return Ok(*me);
    }
    let me = xs.own_domid().await?;
    Ok(*OWN.get_or_init(|| me))
}

// ---- client side ------------------------------------------------------------------------------

/// An advertised listener in another guest of this host.
#[derive(Debug)]
pub(crate) struct Target {
    xs: XenStore,
    me: DomId,
    /// The server's domain, from dom0's directory (a trusted source, I3).
    pub(crate) server: DomId,
    inbox: String,
}

/// Looks up the listener for `dst` in another guest: the operator's configuration or dom0's
/// directory gives the domain that owns `dst`'s IP (the only trusted sources, I3), and that
/// domain's advertisement says an xway listener is there.
///
/// `Ok(None)`: no Xen here, or no co-resident xway listener for `dst`; plain TCP.
pub(crate) async fn find_listener(
    dst: SocketAddr,
    config: &XwayConfig,
) -> Result<Option<Target>, FallbackReason> {
    let Some(xs) = open_xenstore() else {
        return Ok(None);
    };
    let xs = xs.with_timeout(config.rendezvous_timeout());
    let ip = dst.ip().to_canonical();
    let server = match config.xen_peer(ip) {
        Some(domid) => DomId::new(domid).expect("the config refuses reserved ids"),
        None => match directory::lookup(&xs, ip).await {
            Ok(domid) => domid,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(setup_failed("reading the directory", e)),
        },
    };
    let me = own_domid(&xs)
        .await
        .map_err(|e| setup_failed("reading our domain id", e))?;
    if server == me {
        // Our own address: a listener here is the local provider's business.
        return Ok(None);
    }
    let wildcard = match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let server_home = home(server);
    for bound in [ip, wildcard] {
        let name = addr_name(SocketAddr::new(bound, dst.port()));
        match xs.read(Tx::NONE, &listen_node(&server_home, &name)).await {
            Ok(v) if v == ADVERTISEMENT => {
                return Ok(Some(Target {
                    xs,
                    me,
                    server,
                    inbox: inbox_node(&server_home, &name),
                }))
            }
            Ok(_) => return Err(setup_failed("advertisement", "unknown format")),
            Err(e) if not_found_or_denied(&e) => {}
            Err(e) => return Err(setup_failed("reading the advertisement", e)),
        }
    }
    Ok(None)
}

/// A client's ring, offered in the server's inbox.
#[derive(Debug)]
pub(crate) struct ClientRing {
    pub(crate) region: Region,
    /// The event channel, bound unbound for the server's domain.
    pub(crate) port: EvtchnPort,
    /// The offer node, removed when this is dropped unless the server took it.
    pub(crate) node: OfferNode,
}

/// Grants the region for `header` to the target's domain, writes the header and the `OFFERED`
/// state, binds an event channel for it, and publishes the offer.
pub(crate) async fn offer(target: Target, header: &Header) -> Result<ClientRing, FallbackReason> {
    let pages = header.layout.region_len() / PAGE_SIZE;
    let shared = Gntalloc::open()
        .and_then(|g| g.share(target.server, pages, PeerAccess::ReadWrite))
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) || e.to_string().contains("No space") {
                setup_failed(
                    "grant budget exhausted (this guest's xen_gntalloc limit)",
                    e,
                )
            } else {
                setup_failed("granting the ring", e)
            }
        })?;
    let refs = shared.grant_refs().to_vec();
    let region = Region::new(Arc::new(shared));
    region.write_bytes(0, &header.encode());
    region.store(STATE_OFFSET, state::OFFERED, Ordering::Release);
    let port = EvtchnPort::bind_unbound(target.server)
        .map_err(|e| setup_failed("binding an event channel", e))?;
    let value = XenOffer {
        nonce: header.nonce,
        layout: header.layout,
        port: port.port(),
        refs,
    }
    .encode();
    let path = format!("{}/{}", target.inbox, addr_name(header.client));
    let perms = [
        Perm::new(Access::None, target.me),
        Perm::new(Access::Both, target.server),
    ];
    let node = OfferNode {
        xs: target.xs,
        path,
        armed: true,
    };
    node.publish(value.as_bytes(), &perms).await?;
    Ok(ClientRing { region, port, node })
}

/// An offer node in a server's inbox; removed when dropped while armed.
#[derive(Debug)]
pub(crate) struct OfferNode {
    xs: XenStore,
    path: String,
    armed: bool,
}

impl OfferNode {
    /// Creates the node with its final permissions in one transaction (xenstore-perms.md 4t:
    /// it never exists with the inherited, world-writable ones). Retried on `EAGAIN`.
    async fn publish(&self, value: &[u8], perms: &[Perm]) -> Result<(), FallbackReason> {
        let (xs, path) = (&self.xs, self.path.as_str());
        let result = in_transaction(xs, |tx| async move {
            xs.write(tx, path, value).await?;
            xs.set_perms(tx, path, perms).await
        })
        .await;
        match result {
            Ok(()) => Ok(()),
            Err(e) if xs_errno(&e) == Some(libc::EACCES) => {
                // Another domain created the name first (squatting): DoS only, it cannot
                // pass for us. Give up on the ring for this connection.
                Err(setup_failed("offer node is held by another domain", e))
            }
            Err(e) if xs_errno(&e) == Some(libc::ENOSPC) => {
                Err(setup_failed("the listener's inbox or our quota is full", e))
            }
            Err(e) => Err(setup_failed("publishing the offer", e)),
        }
    }

    /// The server has taken the offer (and removes the node itself).
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for OfferNode {
    fn drop(&mut self) {
        if self.armed {
            remove_later(&self.xs, std::mem::take(&mut self.path));
        }
    }
}

/// Removes `path` in the background: drops and accept paths must not wait for XenStore. If
/// the runtime is gone the node stays until its owner domain dies (xenstored then removes it).
fn remove_later(xs: &XenStore, path: String) {
    let xs = xs.clone();
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            if let Err(e) = xs.rm(Tx::NONE, &path).await {
                if xs_errno(&e) != Some(libc::ENOENT) {
                    tracing::debug!(%path, error = %e, "xway: removing a XenStore node failed");
                }
            }
        });
    }
}

// ---- listener side ----------------------------------------------------------------------------

/// A listener's advertisement in XenStore and its inbox of offers.
#[derive(Debug)]
pub(crate) struct XenAdvertisement {
    xs: XenStore,
    me: DomId,
    listen: String,
    inbox: String,
    /// The addresses of this host's guests, from dom0's directory, kept current by a task.
    guests: Arc<Mutex<HashSet<IpAddr>>>,
    /// Peers the operator configured (they count as guests of this host).
    config: XwayConfig,
}

impl XenAdvertisement {
    /// Advertises a listener about to listen on `local` in this guest's XenStore home.
    /// `Ok(None)` where there is no XenStore.
    pub(crate) async fn bind(
        local: SocketAddr,
        config: &XwayConfig,
    ) -> io::Result<Option<XenAdvertisement>> {
        let Some(xs) = open_xenstore() else {
            return Ok(None);
        };
        let xs = xs.with_timeout(SERVER_XS_TIMEOUT);
        let me = own_domid(&xs).await?;
        let name = addr_name(SocketAddr::new(local.ip().to_canonical(), local.port()));
        let (listen, inbox) = (listen_node(&home(me), &name), inbox_node(&home(me), &name));
        // A previous listener's leftovers (offers for connections long gone) go first.
        match xs.rm(Tx::NONE, &inbox).await {
            Err(e) if xs_errno(&e) != Some(libc::ENOENT) => return Err(e),
            _ => {}
        }
        xs.mkdir(Tx::NONE, &inbox).await?;
        xs.set_perms(Tx::NONE, &inbox, &[Perm::new(Access::Write, me)])
            .await?;
        let guests = Arc::new(Mutex::new(HashSet::new()));
        follow_directory(&xs, &guests).await;
        // The advertisement last: a client that sees it finds the inbox ready.
        xs.write(Tx::NONE, &listen, ADVERTISEMENT).await?;
        xs.set_perms(Tx::NONE, &listen, &[Perm::new(Access::Read, me)])
            .await?;
        Ok(Some(XenAdvertisement {
            xs,
            me,
            listen,
            inbox,
            guests,
            config: config.clone(),
        }))
    }

    /// The advertisement node, for diagnostics.
    pub(crate) fn node(&self) -> &str {
        &self.listen
    }

    /// True if the connection from `client` may come with an offer: the client is another
    /// guest of this host (dom0's directory or the configuration says so). Never waits.
    ///
    /// Anyone else (another host, dom0, this guest itself) gets plain TCP at once, without a
    /// XenStore request. A plain TCP client in another guest of this host costs one XenStore
    /// read (a round trip to dom0, not to the client) before its connection is handed over:
    /// an offer is committed before its SYN, but nothing tells the server about it sooner
    /// than reading it (a watch event may arrive after the SYN).
    pub(crate) fn may_have_offer(&self, client: SocketAddr, server: SocketAddr) -> bool {
        let ip = client.ip().to_canonical();
        if ip == server.ip().to_canonical() {
            return false;
        }
        self.config.xen_peer(ip).is_some() || lock(&self.guests).contains(&ip)
    }

    /// Reads, authenticates and maps the offer for the accepted connection `client -> server`.
    pub(crate) async fn open(&self, client: SocketAddr, server: SocketAddr) -> Opened {
        let path = format!("{}/{}", self.inbox, addr_name(client));
        let (value, perms) = match self.read_offer(&path).await {
            Ok(v) => v,
            Err(e) if not_found_or_denied(&e) => {
                // Withdrawn, or a node nobody narrowed for us: not an offer.
                return Opened::Unusable(FallbackReason::NoOffer);
            }
            Err(e) => return Opened::Unusable(setup_failed("reading the offer", e)),
        };
        // Handled from here on, whatever the outcome; the client cannot reuse it.
        remove_later(&self.xs, path);
        let owner = match offer_owner(&perms, self.me) {
            Ok(owner) => owner,
            Err(error) => return Opened::Unusable(FallbackReason::InvalidOffer { error }),
        };
        let offer = match XenOffer::parse(&value) {
            Ok(o) => o,
            Err(error) => return Opened::Unusable(FallbackReason::InvalidOffer { error }),
        };
        let pages = offer.refs.len();
        // The client's data ring is read-only here: we only ever read it (I2, defence in
        // depth: a bug of ours cannot scribble on what the client sends).
        let client_ring = offer.layout.c2s_data() / PAGE_SIZE..offer.layout.s2c_data() / PAGE_SIZE;
        let map = match Gntdev::open()
            .and_then(|g| g.map_with_read_only(owner, &offer.refs, client_ring, pages))
        {
            Ok(m) => m,
            Err(e) => return Opened::Unusable(setup_failed("mapping the offered grants", e)),
        };
        let region = Region::new(Arc::new(map));
        let expected = Header {
            layout: offer.layout,
            nonce: offer.nonce,
            client: crate::ring::layout::canonical(client),
            server: crate::ring::layout::canonical(server),
        };
        let decline = |reason, detail: String| Opened::Decline {
            region: region.clone(),
            nonce: offer.nonce,
            reason,
            detail,
        };
        if let Err(detail) = check_header(&region, &expected) {
            return decline(DeclineReason::InvalidRegion, detail);
        }
        match EvtchnPort::bind_interdomain(owner, offer.port) {
            Ok(port) => Opened::Ready {
                region,
                port,
                nonce: offer.nonce,
                layout: offer.layout,
                client_domain: owner,
            },
            Err(e) => decline(
                DeclineReason::Resources,
                format!("binding the offered event channel: {e}"),
            ),
        }
    }

    /// The offer's value and permissions, read in one transaction so that both come from the
    /// same node (not from one that was removed and re-created in between).
    async fn read_offer(&self, path: &str) -> io::Result<(Vec<u8>, Vec<Perm>)> {
        let xs = &self.xs;
        in_transaction(xs, |tx| async move {
            let value = xs.read(tx, path).await?;
            Ok((value, xs.get_perms(tx, path).await?))
        })
        .await
    }
}

/// Most times a transaction is tried when other writers keep interfering.
const TRANSACTION_TRIES: usize = 3;

/// Runs `body` in a transaction and commits it, again if another writer interfered (`EAGAIN`),
/// at most [`TRANSACTION_TRIES`] times. An error of `body` aborts the transaction.
async fn in_transaction<T, F, Fut>(xs: &XenStore, mut body: F) -> io::Result<T>
where
    F: FnMut(Tx) -> Fut,
    Fut: std::future::Future<Output = io::Result<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let tx = xs.transaction().await?;
            let value = body(tx.id()).await?;
            tx.commit().await?;
            Ok(value)
        }
        .await;
        match result {
            Err(e) if xs_errno(&e) == Some(libc::EAGAIN) && attempt < TRANSACTION_TRIES => {}
            r => return r,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the set consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads dom0's directory into `guests`, then keeps it current from a task that watches it
/// (the directory changes when a guest starts or stops). The task ends soon after the
/// advertisement is dropped. Without a directory the set stays empty (configured peers still
/// count); failures are logged, not errors: they only cost those guests the ring.
async fn follow_directory(xs: &XenStore, guests: &Arc<Mutex<HashSet<IpAddr>>>) {
    /// The directory's entries; `None` if it could not be read (the caller keeps what it had:
    /// a slow xenstored must not make every guest look foreign).
    async fn list(xs: &XenStore) -> Option<HashSet<IpAddr>> {
        match xs.directory(Tx::NONE, directory::DIRECTORY).await {
            Ok(names) => Some(
                names
                    .iter()
                    .filter_map(|n| directory::parse_entry_name(n))
                    .collect(),
            ),
            Err(e) if not_found_or_denied(&e) => Some(HashSet::new()),
            Err(e) => {
                tracing::debug!(error = %e, "xway: listing the xen directory failed; keeping the last list");
                None
            }
        }
    }
    let mut watch = match xs.watch(directory::DIRECTORY).await {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::debug!(error = %e, "xway: cannot watch the xen directory; using a snapshot");
            None
        }
    };
    if let Some(now) = list(xs).await {
        *lock(guests) = now;
    }
    let Some(mut watch) = watch.take() else {
        return;
    };
    let (xs, guests) = (xs.clone(), Arc::downgrade(guests));
    tokio::spawn(async move {
        loop {
            match watch.next_event(DIRECTORY_RECHECK).await {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => return, // the connection died; the snapshot stays
            }
            let Some(guests) = guests.upgrade() else {
                return;
            };
            if let Some(now) = list(&xs).await {
                *lock(&guests) = now;
            }
        }
    });
}

impl Drop for XenAdvertisement {
    fn drop(&mut self) {
        remove_later(&self.xs, std::mem::take(&mut self.listen));
        remove_later(&self.xs, std::mem::take(&mut self.inbox));
    }
}

/// The client domain of an offer node with permissions `perms`, in the inbox of domain `me`:
/// its owner, if the permissions are exactly `n<owner>,b<me>` with `owner != me`. Anything
/// else may have been written by a third domain (xenstore-perms.md, 6b), or was not narrowed
/// for us.
fn offer_owner(perms: &[Perm], me: DomId) -> Result<DomId, String> {
    match perms {
        [Perm {
            access: Access::None,
            domid: owner,
        }, Perm {
            access: Access::Both,
            domid,
        }] if *domid == me && *owner != me => Ok(*owner),
        _ => Err(format!(
            "offer node has permissions {}, expected n<client>,b{me}",
            perms
                .iter()
                .map(Perm::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )),
    }
}

/// What the server made of an offer.
#[derive(Debug)]
pub(crate) enum Opened {
    /// Authentic, mapped, bound: the caller claims it and sends the accept verdict.
    Ready {
        region: Region,
        port: EvtchnPort,
        nonce: [u8; 16],
        layout: Layout,
        client_domain: DomId,
    },
    /// Mapped but unusable: the caller declines it.
    Decline {
        region: Region,
        nonce: [u8; 16],
        reason: DeclineReason,
        detail: String,
    },
    /// Not an offer we can answer: the caller stays silent and uses TCP.
    Unusable(FallbackReason),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(order: u32) -> XenOffer {
        let layout = Layout::symmetric(order).unwrap();
        XenOffer {
            nonce: *b"0123456789abcdef",
            layout,
            port: 42,
            refs: (0..(layout.region_len() / PAGE_SIZE) as u32)
                .map(|r| r + 8)
                .collect(),
        }
    }

    #[test]
    fn offers_round_trip() {
        for order in [MIN_ORDER, 16, MAX_XEN_ORDER] {
            let o = offer(order);
            assert_eq!(XenOffer::parse(o.encode().as_bytes()).unwrap(), o);
        }
    }

    #[test]
    fn the_largest_offer_fits_in_one_xenstore_value() {
        let mut o = offer(MAX_XEN_ORDER);
        o.port = u32::MAX;
        o.refs.iter_mut().for_each(|r| *r = u32::MAX);
        // xenstored refuses values of about 2,030 bytes and more (xenstore-perms.md, 10b).
        assert!(o.encode().len() < 1900, "{}", o.encode().len());
    }

    #[test]
    fn malformed_offers_are_rejected_with_a_reason() {
        let good = offer(16).encode();
        let bad = [
            String::new(),
            good.replacen("xway/1", "xway/2", 1),
            good.replacen(" 16 16 ", " 11 16 ", 1),
            good.replacen(" 16 16 ", " 19 16 ", 1),
            good.replacen(" 16 16 ", " +16 16 ", 1),
            good.replacen(" 42 ", " -1 ", 1),
            good.replacen(" 42 ", " 4294967296 ", 1),
            good.replacen("3031", "zz31", 1),
            format!("{good},9"),
            good.rsplit_once(',').unwrap().0.to_owned(),
            format!("{good} extra"),
            good.replacen(",9,", ",,", 1),
            good.replacen(",9,", ", 9,", 1),
        ];
        for b in bad {
            assert!(XenOffer::parse(b.as_bytes()).is_err(), "{b:?}");
        }
        assert!(XenOffer::parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn only_offers_narrowed_to_owner_and_server_are_authentic() {
        let me = DomId::new(1).unwrap();
        let perms = |s: &str| -> Vec<Perm> { s.split(',').map(|p| p.parse().unwrap()).collect() };
        assert_eq!(offer_owner(&perms("n2,b1"), me), Ok(DomId::new(2).unwrap()));
        for bad in [
            "w2",       // inherited: anybody could have written it
            "n2",       // not readable by us
            "n2,r1",    // we could not remove it
            "r2,b1",    // everybody may read it
            "b2,b1",    // everybody may write it
            "n1,b1",    // our own node
            "n2,b1,w3", // a third domain may write it
            "n2,b3",    // meant for another server
        ] {
            assert!(offer_owner(&perms(bad), me).is_err(), "{bad}");
        }
        assert!(offer_owner(&[], me).is_err());
    }

    #[test]
    fn node_names_are_valid_xenstore_names() {
        for addr in [
            "192.0.2.11:7000",
            "[::1]:80",
            "[fe80::1:2]:65535",
            "0.0.0.0:1",
        ] {
            let name = addr_name(addr.parse().unwrap());
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{name}"
            );
        }
        assert_eq!(
            addr_name("192.0.2.11:7000".parse().unwrap()),
            "192-0-2-11-7000"
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsing_any_value_never_panics(value in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = XenOffer::parse(&value);
        }

        #[test]
        fn parsing_near_misses_never_panics(text in "xway/1 [0-9a-f]{30,34} 1[0-9] 1[0-9] [0-9]{1,11} [0-9,]{0,200}") {
            if let Ok(offer) = XenOffer::parse(text.as_bytes()) {
                prop_assert_eq!(offer.refs.len(), offer.layout.region_len() / PAGE_SIZE);
            }
        }
    }
}
