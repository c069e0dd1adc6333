//! [`XwayListener`]: a TCP listener that also offers co-resident xway clients a ring.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs};

use crate::config::{EffectiveMode, XwayConfig};
use crate::provider::local::Advertisement;
use crate::provider::xen::rendezvous::XenAdvertisement;
use crate::setup::Accepted;
use crate::transport::FallbackReason;
use crate::XwayStream;

/// A TCP listener whose accepted connections use a shared-memory ring when the client is a
/// co-resident xway client, and plain TCP otherwise.
///
/// `XwayListener` mirrors [`tokio::net::TcpListener`]. Binding also advertises the listener to
/// xway clients on this host: for the local provider, an abstract Unix socket named after the
/// bound address; in a Xen guest whose process can use XenStore, also a node under the guest's
/// home with an inbox for other guests' offers (only [`XwayListener::bind`] and
/// [`XwayListener::bind_with`] do this, since XenStore is asynchronous; if XenStore does not
/// answer in time, a background task retries for about 1.5 minutes). Plain TCP clients see
/// an ordinary listener: the server writes nothing to them and `accept` waits for nothing on
/// their behalf.
///
/// # Examples
///
/// ```no_run
/// use xway_tokio::XwayListener;
///
/// # async fn f() -> std::io::Result<()> {
/// let listener = XwayListener::bind("127.0.0.1:8080").await?;
/// loop {
///     let (mut stream, peer) = listener.accept().await?;
///     println!("{peer} over {}", stream.transport());
///     tokio::spawn(async move {
///         let (mut rd, mut wr) = stream.split();
///         let _ = tokio::io::copy(&mut rd, &mut wr).await;
///     });
/// }
/// # }
/// ```
pub struct XwayListener {
    tcp: TcpListener,
    advertisement: Option<Advertisement>,
    /// The XenStore advertisement, once made (possibly after listening, by a retry task).
    xen: Arc<OnceLock<Arc<XenAdvertisement>>>,
    /// Accepted connections whose xen offer is being read and mapped.
    pending: Mutex<Vec<PendingAccept>>,
    /// Why connections get TCP when there is no advertisement.
    not_advertised: FallbackReason,
    ring_required: bool,
    spin_budget: std::time::Duration,
    /// The address every connection is accepted on, if the listener is bound to one (not a
    /// wildcard): setup then needs no `getsockname` per connection.
    bound: Option<SocketAddr>,
    /// Every task waiting in `accept`; the wake sources inside (the TCP listener, the
    /// rendezvous, pending setups) keep one waker each, so they get [`AcceptWaiters`]'s.
    waiters: Arc<AcceptWaiters>,
    waiters_waker: Waker,
}

/// The tasks waiting to accept, all woken together: each wake source keeps only the waker it
/// was polled with last, and with that alone a task that polled before another would be left
/// waiting while connections queue up (`TcpListener::accept` wakes every waiting task).
#[derive(Debug, Default)]
struct AcceptWaiters {
    wakers: Mutex<Vec<Waker>>,
}

impl AcceptWaiters {
    fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }
}

impl Wake for AcceptWaiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
    }
}

impl XwayListener {
    /// Binds to `addr` with the default [`XwayConfig`], like [`TcpListener::bind`]: each
    /// resolved address is tried in turn and the last error is returned if all fail.
    ///
    /// # Errors
    ///
    /// The errors of [`TcpListener::bind`]. Failing to advertise is not an error: the listener
    /// then serves plain TCP and logs why.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes leaves nothing bound.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let listener = xway_tokio::XwayListener::bind("127.0.0.1:0").await?;
    /// println!("listening on {}", listener.local_addr()?);
    /// # Ok(()) }
    /// ```
    pub async fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<XwayListener> {
        XwayListener::bind_with(addr, XwayConfig::default()).await
    }

    /// Binds to `addr` with the given configuration. See [`XwayListener::bind`].
    ///
    /// In a Xen guest, this also advertises the listener to the other guests of the host (see
    /// the type's documentation); failing to do so is logged, not an error.
    ///
    /// # Cancel safety
    ///
    /// As for [`XwayListener::bind`].
    ///
    /// # Examples
    ///
    /// ```
    /// use xway_tokio::{Mode, XwayConfig, XwayListener};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let config = XwayConfig::builder().mode(Mode::TcpOnly).build();
    /// let listener = XwayListener::bind_with("127.0.0.1:0", config).await?;
    /// assert!(!listener.is_advertised());
    /// # Ok(()) }
    /// ```
    pub async fn bind_with<A: ToSocketAddrs>(
        addr: A,
        config: XwayConfig,
    ) -> io::Result<XwayListener> {
        let mut last_err = None;
        for addr in tokio::net::lookup_host(addr).await? {
            match XwayListener::bind_one(addr, &config).await {
                Ok(listener) => return Ok(listener),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "could not resolve to any address",
            )
        }))
    }

    /// Wraps a bound tokio listener with the default configuration, advertising it.
    pub fn from_tcp(listener: TcpListener) -> XwayListener {
        XwayListener::from_tcp_with(listener, XwayConfig::default())
    }

    /// Wraps a bound tokio listener with the given configuration, advertising it unless the
    /// configuration says TCP only.
    pub fn from_tcp_with(listener: TcpListener, config: XwayConfig) -> XwayListener {
        let (advertisement, not_advertised, ring_required) = match config.effective_mode() {
            EffectiveMode::TcpByConfig => (None, FallbackReason::DisabledByConfig, false),
            EffectiveMode::TcpByEnv => (None, FallbackReason::DisabledByEnv, false),
            EffectiveMode::Ring { required } => {
                let advertised = listener
                    .local_addr()
                    .and_then(|addr| Advertisement::bind(addr, config.uid_policy().clone()));
                match advertised {
                    Ok(a) => {
                        tracing::debug!(name = a.name(), "xway: listener advertised");
                        (Some(a), FallbackReason::NoOffer, required)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "xway: listener could not advertise; serving plain TCP");
                        let error = format!("listener could not advertise: {e}");
                        (None, FallbackReason::SetupFailed { error }, required)
                    }
                }
            }
        };
        let bound = listener
            .local_addr()
            .ok()
            .filter(|a| !a.ip().is_unspecified());
        let waiters = Arc::new(AcceptWaiters::default());
        XwayListener {
            tcp: listener,
            bound,
            advertisement,
            xen: Arc::new(OnceLock::new()),
            pending: Mutex::new(Vec::new()),
            not_advertised,
            ring_required,
            spin_budget: config.spin_budget(),
            waiters: Arc::clone(&waiters),
            waiters_waker: Waker::from(waiters),
        }
    }

    /// Binds one address as `TcpListener::bind` does (`SO_REUSEADDR`, backlog 1024), but
    /// advertises in XenStore between `bind` and `listen`: a client in another guest that can
    /// connect finds the advertisement (one that finds it first is refused and retries, as it
    /// would be without xway).
    async fn bind_one(addr: SocketAddr, config: &XwayConfig) -> io::Result<XwayListener> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let local = socket.local_addr()?;
        let xen = match config.effective_mode() {
            EffectiveMode::Ring { .. } => advertise_xen(local, config).await,
            EffectiveMode::TcpByConfig | EffectiveMode::TcpByEnv => Advertised::No,
        };
        let listener = XwayListener::from_tcp_with(socket.listen(1024)?, config.clone());
        match xen {
            Advertised::Yes(xen) => {
                let _ = listener.xen.set(xen);
            }
            Advertised::No => {}
            Advertised::Failed => {
                tokio::spawn(retry_advertise_xen(
                    local,
                    config.clone(),
                    Arc::downgrade(&listener.xen),
                ));
            }
        }
        Ok(listener)
    }

    /// Wraps a bound std listener, like [`TcpListener::from_std`]: it must be in non-blocking
    /// mode, and this must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// The errors of [`TcpListener::from_std`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<XwayListener> {
        Ok(XwayListener::from_tcp(TcpListener::from_std(listener)?))
    }

    /// Turns the listener back into a std listener; the advertisement is withdrawn.
    ///
    /// # Errors
    ///
    /// The errors of [`TcpListener::into_std`].
    pub fn into_std(self) -> io::Result<std::net::TcpListener> {
        self.tcp.into_std()
    }

    /// True if xway clients on this host can find this listener and offer it a ring.
    pub fn is_advertised(&self) -> bool {
        self.advertisement.is_some() || self.xen.get().is_some()
    }

    /// Accepts a connection, like [`TcpListener::accept`].
    ///
    /// The transport is decided before this returns: a client that made a ring offer for this
    /// connection gets the ring (or a decline), any other client plain TCP, at once. (An offer
    /// from another Xen guest is read from XenStore and mapped first; meanwhile other
    /// connections are accepted.) Problems with an offer never fail `accept`; they make that
    /// connection TCP, with the reason in [`XwayStream::transport`].
    ///
    /// # Errors
    ///
    /// The errors of [`TcpListener::accept`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before completing, no connection is lost.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let listener = xway_tokio::XwayListener::bind("127.0.0.1:8080").await?;
    /// let (stream, peer) = listener.accept().await?;
    /// println!("{peer}: {}", stream.transport());
    /// # Ok(()) }
    /// ```
    pub async fn accept(&self) -> io::Result<(XwayStream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls to accept a connection, like [`TcpListener::poll_accept`]. See
    /// [`XwayListener::accept`].
    ///
    /// Unlike `TcpListener::poll_accept`, every task that polled and got `Pending` is woken
    /// when a connection may be ready, not only the last one.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(XwayStream, SocketAddr)>> {
        // Registered before the wake sources are polled, so a wake-up between the two is not
        // lost.
        self.waiters.register(cx.waker());
        self.poll_accept_for_waiters(&mut Context::from_waker(&self.waiters_waker))
    }

    fn poll_accept_for_waiters(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(XwayStream, SocketAddr)>> {
        loop {
            let (stream, peer) = match self.poll_pending(cx) {
                Poll::Ready(done) => done,
                Poll::Pending => {
                    // Offers are opened as they arrive, while their clients' SYNs are on the
                    // way; this also registers `cx` for the next ones.
                    let offered = self
                        .advertisement
                        .as_ref()
                        .is_some_and(|a| a.poll_offers(cx));
                    // A client sends its SYN right after its offer: its connection is
                    // probably queued already, though tokio has not heard of it yet.
                    let now = if offered { self.accept_now()? } else { None };
                    let (tcp, peer) = match now {
                        Some(accepted) => accepted,
                        None => ready!(self.tcp.poll_accept(cx))?,
                    };
                    let accepted = if self.advertisement.is_none() && self.xen.get().is_none() {
                        Accepted::Now(XwayStream::from_tcp_with_reason(
                            tcp,
                            self.not_advertised.clone(),
                        ))
                    } else {
                        crate::setup::accept(
                            tcp,
                            peer,
                            self.bound,
                            self.advertisement.as_ref(),
                            self.xen.get(),
                            self.spin_budget,
                        )
                    };
                    match accepted {
                        Accepted::Now(stream) => (stream, peer),
                        Accepted::Later(setup) => {
                            self.lock_pending().push(PendingAccept { setup, peer });
                            continue;
                        }
                    }
                }
            };
            if self.ring_required && !stream.transport().is_ring() {
                tracing::info!(%peer, transport = %stream.transport(), "xway: ring required; connection dropped");
                continue;
            }
            return Poll::Ready(Ok((stream, peer)));
        }
    }

    /// Accepts a queued connection without waiting for tokio to report one; `None` if there is
    /// none yet.
    fn accept_now(&self) -> io::Result<Option<(TcpStream, SocketAddr)>> {
        let (socket, peer) = match socket2::SockRef::from(&self.tcp).accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        socket.set_nonblocking(true)?;
        let peer = peer
            .as_socket()
            .ok_or_else(|| io::Error::other("accepted a connection that is not TCP/IP"))?;
        Ok(Some((TcpStream::from_std(socket.into())?, peer)))
    }

    /// Polls the connections whose setup is still running; the first one done, if any.
    fn poll_pending(&self, cx: &mut Context<'_>) -> Poll<(XwayStream, SocketAddr)> {
        let mut pending = self.lock_pending();
        for i in 0..pending.len() {
            if let Poll::Ready(stream) = pending[i].setup.as_mut().poll(cx) {
                let done = pending.swap_remove(i);
                return Poll::Ready((stream, done.peer));
            }
        }
        Poll::Pending
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<PendingAccept>> {
        // A panic while holding the lock leaves the list consistent (push and swap_remove).
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The local address the listener is bound to.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let listener = xway_tokio::XwayListener::bind("127.0.0.1:0").await?;
    /// assert_ne!(listener.local_addr()?.port(), 0);
    /// # Ok(()) }
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The `IP_TTL` of the listening socket.
    pub fn ttl(&self) -> io::Result<u32> {
        self.tcp.ttl()
    }

    /// Sets the `IP_TTL` of the listening socket.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.tcp.set_ttl(ttl)
    }
}

/// What advertising in XenStore gave.
enum Advertised {
    Yes(Arc<XenAdvertisement>),
    /// No XenStore here: nothing to advertise in.
    No,
    /// XenStore is there but did not cooperate (a timeout under load, say): retry later.
    Failed,
}

/// Advertises a listener in XenStore, where there is one; failing is logged, not an error.
async fn advertise_xen(local: SocketAddr, config: &XwayConfig) -> Advertised {
    match XenAdvertisement::bind(local, config).await {
        Ok(Some(xen)) => {
            tracing::debug!(node = xen.node(), "xway: listener advertised in XenStore");
            Advertised::Yes(Arc::new(xen))
        }
        Ok(None) => Advertised::No,
        Err(e) => {
            tracing::warn!(error = %e, "xway: listener could not advertise in XenStore yet; other guests get plain TCP until a retry succeeds");
            Advertised::Failed
        }
    }
}

/// Retries a failed XenStore advertisement in the background (a transient failure must not
/// cost a long-lived listener the ring for its whole life), with growing pauses, until it
/// succeeds, the listener is gone, or [`ADVERTISE_RETRIES`] attempts have failed.
async fn retry_advertise_xen(
    local: SocketAddr,
    config: XwayConfig,
    cell: std::sync::Weak<OnceLock<Arc<XenAdvertisement>>>,
) {
    let mut pause = Duration::from_millis(500);
    for _ in 0..ADVERTISE_RETRIES {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
        if cell.strong_count() == 0 {
            return;
        }
        match advertise_xen(local, &config).await {
            Advertised::Yes(xen) => {
                // If the listener went away meanwhile, dropping `xen` withdraws it again.
                if let Some(cell) = cell.upgrade() {
                    let _ = cell.set(xen);
                }
                return;
            }
            Advertised::No => return,
            Advertised::Failed => {}
        }
    }
    tracing::warn!(%local, "xway: giving up advertising the listener in XenStore");
}

/// Attempts after a failed XenStore advertisement (about 1.5 minutes in all).
const ADVERTISE_RETRIES: usize = 12;

impl AsFd for XwayListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tcp.as_fd()
    }
}

impl AsRawFd for XwayListener {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

impl TryFrom<std::net::TcpListener> for XwayListener {
    type Error = io::Error;

    /// See [`XwayListener::from_std`].
    fn try_from(listener: std::net::TcpListener) -> io::Result<XwayListener> {
        XwayListener::from_std(listener)
    }
}

impl fmt::Debug for XwayListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XwayListener")
            .field("local_addr", &self.local_addr().ok())
            .field("advertised", &self.advertisement.as_ref().map(|a| a.name()))
            .field("xen", &self.xen.get().map(|x| x.node()))
            .finish()
    }
}

/// An accepted connection whose transport is being decided (a xen offer being mapped).
struct PendingAccept {
    setup: Pin<Box<dyn Future<Output = XwayStream> + Send>>,
    peer: SocketAddr,
}
