//! [`XwayListener`]: a TCP listener that also offers co-resident xway clients a ring.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::task::{ready, Context, Poll};

use tokio::net::{TcpListener, ToSocketAddrs};

use crate::config::{EffectiveMode, XwayConfig};
use crate::provider::local::Advertisement;
use crate::transport::FallbackReason;
use crate::XwayStream;

/// A TCP listener whose accepted connections use a shared-memory ring when the client is a
/// co-resident xway client, and plain TCP otherwise.
///
/// `XwayListener` mirrors [`tokio::net::TcpListener`]. Binding also advertises the listener to
/// xway clients on this host (for the local provider: an abstract Unix socket named after the
/// bound address). Plain TCP clients see an ordinary listener: the server writes nothing to
/// them and `accept` waits for nothing on their behalf.
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
    /// Why connections get TCP when there is no advertisement.
    not_advertised: FallbackReason,
    ring_required: bool,
    spin_budget: std::time::Duration,
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
            match TcpListener::bind(addr).await {
                Ok(tcp) => return Ok(XwayListener::from_tcp_with(tcp, config)),
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
        XwayListener {
            tcp: listener,
            advertisement,
            not_advertised,
            ring_required,
            spin_budget: config.spin_budget(),
        }
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
        self.advertisement.is_some()
    }

    /// Accepts a connection, like [`TcpListener::accept`].
    ///
    /// The transport is decided before this returns and without waiting: a client that made
    /// a ring offer for this connection gets the ring (or a decline), any other client plain
    /// TCP. Problems with an offer never fail `accept`; they make that connection TCP, with
    /// the reason in [`XwayStream::transport`].
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
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(XwayStream, SocketAddr)>> {
        loop {
            let (tcp, peer) = ready!(self.tcp.poll_accept(cx))?;
            let stream = match &self.advertisement {
                Some(a) => crate::setup::accept_ring(tcp, a, self.spin_budget),
                None => XwayStream::from_tcp_with_reason(tcp, self.not_advertised.clone()),
            };
            if self.ring_required && !stream.transport().is_ring() {
                tracing::info!(%peer, transport = %stream.transport(), "xway: ring required; connection dropped");
                continue;
            }
            return Poll::Ready(Ok((stream, peer)));
        }
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
            .finish()
    }
}
