//! [`XwayStream`]: a TCP stream whose bytes take a shared-memory ring when the peer is a
//! co-resident xway peer.

pub(crate) mod ring_io;
mod split;
mod split_owned;

pub use ring_io::RingStats;
pub use split::{ReadHalf, WriteHalf};
pub use split_owned::{OwnedReadHalf, OwnedWriteHalf, ReuniteError};

use std::fmt;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, Ready};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::config::XwayConfig;
use crate::transport::{FallbackReason, Provider, Transport};
use ring_io::RingIo;

/// A connection to a peer, carried by shared-memory rings when the peer is a co-resident xway
/// peer and by plain TCP otherwise.
///
/// `XwayStream` mirrors [`tokio::net::TcpStream`]: the same method names and signatures, the
/// same [`AsyncRead`]/[`AsyncWrite`] behaviour, borrowed and owned split halves. Code written
/// for `TcpStream` compiles against it by changing the type name.
///
/// On the ring path the TCP connection stays open for the life of the stream: it provides the
/// addresses, the socket options, [`AsFd`], and the liveness signal (the kernel closes it when
/// the peer process dies). No application byte travels on it.
///
/// [`transport`](XwayStream::transport) tells which path is in use and, for TCP, why.
///
/// # Examples
///
/// ```no_run
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// use xway_tokio::XwayStream;
///
/// # async fn f() -> std::io::Result<()> {
/// let mut stream = XwayStream::connect("127.0.0.1:8080").await?;
/// println!("connected over {}", stream.transport());
/// stream.write_all(b"hello").await?;
/// let mut buf = [0u8; 5];
/// stream.read_exact(&mut buf).await?;
/// # Ok(()) }
/// ```
pub struct XwayStream {
    inner: Inner,
    transport: Transport,
    span: tracing::Span,
}

enum Inner {
    Tcp(TcpStream),
    // Boxed: a ring connection carries two ring endpoints and its doorbell, several times the
    // size of a TcpStream, and TCP-path streams should not pay for that.
    Ring(Box<RingIo>),
}

impl XwayStream {
    /// Opens a connection to `addr` with the default [`XwayConfig`].
    ///
    /// `addr` is anything [`tokio::net::ToSocketAddrs`] accepts; each resolved address is tried
    /// in turn, as `TcpStream::connect` does, and the last error is returned if all fail.
    ///
    /// For each address, xway looks for an xway listener advertised for it on this host. If
    /// there is none, this is exactly `TcpStream::connect` (plus a failed connect on an abstract
    /// Unix socket or two, a few microseconds). If there is one, the ring is offered before the
    /// TCP handshake and used if the listener accepts it; otherwise the connection is plain TCP.
    ///
    /// # Errors
    ///
    /// The errors of `TcpStream::connect`. With [`Mode::RingRequired`](crate::Mode), also
    /// [`io::ErrorKind::Unsupported`] when the ring cannot be used, and
    /// [`io::ErrorKind::TimedOut`] if a listener claimed the ring and then went silent.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes leaves no connection: descriptors, mappings and
    /// the socket are released, and an offer already sent is abandoned, so the listener gives
    /// that connection plain TCP (and sees it closed).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let stream = xway_tokio::XwayStream::connect("localhost:8080").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<XwayStream> {
        XwayStream::connect_with(addr, &XwayConfig::default()).await
    }

    /// Opens a connection to `addr` with the given configuration. See [`XwayStream::connect`].
    ///
    /// # Cancel safety
    ///
    /// As for [`XwayStream::connect`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use xway_tokio::{Mode, XwayConfig, XwayStream};
    /// # async fn f() -> std::io::Result<()> {
    /// let config = XwayConfig::builder().mode(Mode::RingRequired).build();
    /// let stream = XwayStream::connect_with("127.0.0.1:8080", &config).await?;
    /// assert!(stream.transport().is_ring());
    /// # Ok(()) }
    /// ```
    pub async fn connect_with<A: ToSocketAddrs>(
        addr: A,
        config: &XwayConfig,
    ) -> io::Result<XwayStream> {
        let mut last_err = None;
        for addr in tokio::net::lookup_host(addr).await? {
            match crate::setup::connect_addr(addr, config).await {
                Ok(stream) => return Ok(stream),
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

    pub(crate) fn from_tcp_with_reason(stream: TcpStream, reason: FallbackReason) -> XwayStream {
        XwayStream::new(Inner::Tcp(stream), Transport::Tcp { reason })
    }

    pub(crate) fn from_ring(io: RingIo, provider: Provider) -> XwayStream {
        XwayStream::new(Inner::Ring(Box::new(io)), Transport::Ring { provider })
    }

    fn new(inner: Inner, transport: Transport) -> XwayStream {
        let tcp = match &inner {
            Inner::Tcp(t) => t,
            Inner::Ring(r) => r.tcp(),
        };
        let peer = tcp.peer_addr().ok();
        let span = tracing::debug_span!("xway_conn", transport = %transport, peer = ?peer);
        span.in_scope(|| tracing::debug!("xway: connection established"));
        XwayStream {
            inner,
            transport,
            span,
        }
    }

    /// Wraps an existing tokio TCP stream. Its transport is TCP
    /// ([`FallbackReason::ExistingSocket`]): a ring can only be set up before the handshake.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let tcp = tokio::net::TcpStream::connect("127.0.0.1:8080").await?;
    /// let stream = xway_tokio::XwayStream::from_tcp(tcp);
    /// assert!(!stream.transport().is_ring());
    /// # Ok(()) }
    /// ```
    pub fn from_tcp(stream: TcpStream) -> XwayStream {
        XwayStream::from_tcp_with_reason(stream, FallbackReason::ExistingSocket)
    }

    /// Wraps a connected std TCP stream, like [`TcpStream::from_std`]: the socket must already
    /// be in non-blocking mode, and this must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// The errors of [`TcpStream::from_std`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`TcpStream::from_std`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let std_stream = std::net::TcpStream::connect("127.0.0.1:8080")?;
    /// std_stream.set_nonblocking(true)?;
    /// let stream = xway_tokio::XwayStream::from_std(std_stream)?;
    /// # Ok(()) }
    /// ```
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<XwayStream> {
        Ok(XwayStream::from_tcp(TcpStream::from_std(stream)?))
    }

    /// Turns a TCP-path stream back into a std stream (in non-blocking mode), like
    /// [`TcpStream::into_std`].
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] on the ring path: the bytes are not on the socket.
    /// Otherwise the errors of [`TcpStream::into_std`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let tcp = tokio::net::TcpStream::connect("127.0.0.1:8080").await?;
    /// let std_stream = xway_tokio::XwayStream::from_tcp(tcp).into_std()?;
    /// # Ok(()) }
    /// ```
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        match self.inner {
            Inner::Tcp(t) => t.into_std(),
            Inner::Ring(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "xway: a ring stream cannot become a std TcpStream",
            )),
        }
    }

    /// Which path this connection's bytes take, and for TCP why not the ring.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// if let Some(reason) = stream.transport().fallback_reason() {
    ///     eprintln!("using TCP: {reason}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Counters of the ring (doorbells, sleeps, spins), or `None` on the TCP path.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// if let Some(stats) = stream.ring_stats() {
    ///     println!("{} doorbells, {} sleeps", stats.doorbells, stats.sleeps);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn ring_stats(&self) -> Option<RingStats> {
        match &self.inner {
            Inner::Tcp(_) => None,
            Inner::Ring(r) => Some(r.stats()),
        }
    }

    /// The connection's `tracing` span (`xway_conn`, with the transport and peer address).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The TCP connection: the data path for TCP, the control and liveness channel for the ring.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match &self.inner {
            Inner::Tcp(t) => t,
            Inner::Ring(r) => r.tcp(),
        }
    }

    /// The local address of the connection.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// println!("{:?}", stream.local_addr()?);
    /// # Ok(()) }
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// The remote address of the connection.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// assert_eq!(stream.peer_addr()?.port(), 8080);
    /// # Ok(()) }
    /// ```
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// Returns and clears the TCP socket's pending error (`SO_ERROR`).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.tcp().take_error()
    }

    /// Whether `TCP_NODELAY` is set. On the ring path it is the TCP socket's setting, which has
    /// no effect on the ring (the ring never delays bytes).
    pub fn nodelay(&self) -> io::Result<bool> {
        self.tcp().nodelay()
    }

    /// Sets `TCP_NODELAY`. Never fails because of the ring: on the ring path it applies to the
    /// control socket, where it is harmless.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// stream.set_nodelay(true)?;
    /// # Ok(()) }
    /// ```
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.tcp().set_nodelay(nodelay)
    }

    /// The `IP_TTL` of the TCP socket.
    pub fn ttl(&self) -> io::Result<u32> {
        self.tcp().ttl()
    }

    /// Sets the `IP_TTL` of the TCP socket.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.tcp().set_ttl(ttl)
    }

    /// The `SO_LINGER` of the TCP socket.
    pub fn linger(&self) -> io::Result<Option<Duration>> {
        self.tcp().linger()
    }

    /// Makes dropping the stream reset the TCP connection instead of closing it gracefully
    /// (`SO_LINGER` with a zero timeout). On the ring path the peer then sees
    /// `ConnectionReset` after the bytes already in the ring, unless this side had shut down
    /// writing.
    pub fn set_zero_linger(&self) -> io::Result<()> {
        socket2::SockRef::from(self.tcp()).set_linger(Some(Duration::ZERO))
    }

    // ---- readiness ---------------------------------------------------------------------------

    /// Waits for any of the requested readiness, like [`TcpStream::ready`].
    ///
    /// May complete spuriously: a following `try_read`/`try_write` can still return
    /// `WouldBlock`. On the ring path `READ_CLOSED` is reported at end of stream or when the
    /// peer process is gone, `WRITE_CLOSED` when writing can no longer succeed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no readiness is consumed by a cancelled call.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use tokio::io::Interest;
    /// # async fn f() -> std::io::Result<()> {
    /// let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// let ready = stream.ready(Interest::READABLE | Interest::WRITABLE).await?;
    /// if ready.is_readable() {
    ///     let mut buf = [0u8; 1024];
    ///     match stream.try_read(&mut buf) {
    ///         Ok(n) => println!("read {n} bytes"),
    ///         Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn ready(&self, interest: Interest) -> io::Result<Ready> {
        match &self.inner {
            Inner::Tcp(t) => t.ready(interest).await,
            Inner::Ring(r) => std::future::poll_fn(|cx| r.poll_ready(cx, interest)).await,
        }
    }

    /// Waits until the stream is readable (data, end of stream, or an error to report).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// let mut buf = [0u8; 4096];
    /// loop {
    ///     stream.readable().await?;
    ///     match stream.try_read(&mut buf) {
    ///         Ok(0) => break,
    ///         Ok(n) => println!("read {n} bytes"),
    ///         Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_read_ready(cx)).await
    }

    /// Waits until the stream is writable (space in the ring or socket, or an error to report).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// stream.writable().await?;
    /// let n = stream.try_write(b"hello")?;
    /// # Ok(()) }
    /// ```
    pub async fn writable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_ready(cx)).await
    }

    /// Polls for read readiness, like [`TcpStream::poll_read_ready`]: only the most recent
    /// task's waker is kept.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.inner {
            Inner::Tcp(t) => t.poll_read_ready(cx),
            Inner::Ring(r) => r.poll_read_ready(cx),
        }
    }

    /// Polls for write readiness, like [`TcpStream::poll_write_ready`]: only the most recent
    /// task's waker is kept.
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.inner {
            Inner::Tcp(t) => t.poll_write_ready(cx),
            Inner::Ring(r) => r.poll_write_ready(cx),
        }
    }

    /// Reads without waiting. `Ok(0)` is end of stream (or an empty `buf`); `WouldBlock` means
    /// nothing is available yet.
    ///
    /// # Examples
    ///
    /// See [`XwayStream::readable`].
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.inner {
            Inner::Tcp(t) => t.try_read(buf),
            Inner::Ring(r) => r.try_read(buf),
        }
    }

    /// Like [`XwayStream::try_read`], into several buffers.
    pub fn try_read_vectored(&self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        match &self.inner {
            Inner::Tcp(t) => t.try_read_vectored(bufs),
            Inner::Ring(r) => {
                let mut total = 0;
                for buf in bufs.iter_mut().filter(|b| !b.is_empty()) {
                    match r.try_read(buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            total += n;
                            if n < buf.len() {
                                break;
                            }
                        }
                        Err(e) if total > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(total)
            }
        }
    }

    /// Writes without waiting; `WouldBlock` if the ring or socket is full.
    ///
    /// # Examples
    ///
    /// See [`XwayStream::writable`].
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match &self.inner {
            Inner::Tcp(t) => t.try_write(buf),
            Inner::Ring(r) => r.try_write_vectored(&[buf]),
        }
    }

    /// Like [`XwayStream::try_write`], gathering several buffers into one write.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &self.inner {
            Inner::Tcp(t) => t.try_write_vectored(bufs),
            Inner::Ring(r) => with_slices(bufs, |s| r.try_write_vectored(s)),
        }
    }

    /// Receives data without consuming it, waiting until some is available. Returns the number
    /// of bytes peeked; 0 at end of stream.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is consumed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// let mut first = [0u8; 3];
    /// let n = stream.peek(&mut first).await?;
    /// println!("the peer starts with {:?}", &first[..n]);
    /// # Ok(()) }
    /// ```
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rb = ReadBuf::new(buf);
        std::future::poll_fn(|cx| self.poll_peek(cx, &mut rb)).await
    }

    /// Polls to receive data without consuming it, like [`TcpStream::poll_peek`]; the peeked
    /// bytes are appended to `buf`.
    pub fn poll_peek(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        match &self.inner {
            Inner::Tcp(t) => t.poll_peek(cx, buf),
            Inner::Ring(r) => r.poll_peek(cx, buf),
        }
    }

    // ---- splitting ---------------------------------------------------------------------------

    /// Splits into a borrowed read half and write half, which can be used concurrently (for
    /// example in `tokio::join!`). Zero cost, like [`TcpStream::split`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let mut stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// let (mut rd, mut wr) = stream.split();
    /// tokio::io::copy(&mut rd, &mut wr).await?; // echo
    /// # Ok(()) }
    /// ```
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        split::split(self)
    }

    /// Splits into owned halves that can move to different tasks, like
    /// [`TcpStream::into_split`]. Dropping the [`OwnedWriteHalf`] shuts down writing (unless
    /// [`OwnedWriteHalf::forget`] is used); [`OwnedReadHalf::reunite`] puts them back together.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use tokio::io::AsyncWriteExt;
    /// # async fn f() -> std::io::Result<()> {
    /// let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// let (mut rd, mut wr) = stream.into_split();
    /// tokio::spawn(async move { wr.write_all(b"ping").await });
    /// let mut out = tokio::io::stdout();
    /// tokio::io::copy(&mut rd, &mut out).await?;
    /// # Ok(()) }
    /// ```
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        split_owned::split_owned(self)
    }

    // ---- shared implementations for the halves -------------------------------------------------

    pub(crate) fn poll_read_priv(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &self.inner {
            Inner::Tcp(t) => {
                let offered = buf.remaining();
                let n = ready!(poll_tcp_transfer(
                    t,
                    cx,
                    Interest::READABLE,
                    offered,
                    || {
                        // SAFETY: `recv` only writes initialised bytes; `assume_init` below covers
                        // exactly the bytes it reported.
                        let dst: &mut [MaybeUninit<u8>] = unsafe { buf.unfilled_mut() };
                        socket2::SockRef::from(t).recv(dst)
                    }
                ))?;
                // SAFETY: the kernel initialised `n` bytes of the unfilled part.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Inner::Ring(r) => r.poll_read(cx, buf),
        }
    }

    pub(crate) fn poll_write_priv(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &self.inner {
            Inner::Tcp(t) => {
                let offered = bufs.iter().map(|b| b.len()).sum();
                poll_tcp_transfer(t, cx, Interest::WRITABLE, offered, || {
                    let socket = socket2::SockRef::from(t);
                    // One buffer (every `poll_write`): `send`, as tokio's own `TcpStream` does,
                    // not `sendmsg`, which first copies the vector in. `MSG_NOSIGNAL`: a closed
                    // peer is an error, never a SIGPIPE.
                    match bufs {
                        [one] => socket.send_with_flags(one, libc::MSG_NOSIGNAL),
                        _ => socket.send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL),
                    }
                })
            }
            Inner::Ring(r) => with_slices(bufs, |s| r.poll_write_vectored(cx, s)),
        }
    }

    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match &self.inner {
            Inner::Tcp(t) => match socket2::SockRef::from(t).shutdown(std::net::Shutdown::Write) {
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                other => other,
            },
            Inner::Ring(r) => {
                r.shutdown_write();
                Ok(())
            }
        }
    }
}

/// One `recv` or `send` on a TCP stream once tokio reports it ready for `interest`, as tokio's
/// own `TcpStream` does it: a transfer that moved less than the `offered` bytes drained the
/// socket (or filled its send buffer), so the readiness it used is cleared now, by answering
/// "would block" for it, rather than by one more system call that would fail. Readiness that
/// arrived meanwhile is kept by tokio.
fn poll_tcp_transfer(
    t: &TcpStream,
    cx: &mut Context<'_>,
    interest: Interest,
    offered: usize,
    mut transfer: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        if interest.is_readable() {
            ready!(t.poll_read_ready(cx))?;
        } else {
            ready!(t.poll_write_ready(cx))?;
        }
        let mut moved = None;
        let res = t.try_io(interest, || {
            let n = transfer()?;
            moved = Some(n);
            if n > 0 && n < offered {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match (moved, res) {
            (Some(n), _) => return Poll::Ready(Ok(n)),
            (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
            (None, Err(e)) => return Poll::Ready(Err(e)),
            (None, Ok(())) => unreachable!("a successful transfer reports its length"),
        }
    }
}

/// Runs `f` over the byte slices of `bufs` without allocating (at most 64 slices at a time,
/// which is what a single `writev` would take in practice as well).
fn with_slices<R>(bufs: &[IoSlice<'_>], f: impl FnOnce(&[&[u8]]) -> R) -> R {
    const MAX: usize = 64;
    let mut slices: [&[u8]; MAX] = [&[]; MAX];
    let n = bufs.len().min(MAX);
    for (dst, src) in slices.iter_mut().zip(bufs) {
        *dst = src;
    }
    f(&slices[..n])
}

impl AsyncRead for XwayStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll_read_priv(cx, buf)
    }
}

impl AsyncWrite for XwayStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_priv(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_priv(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Always ready: writes are never buffered by xway.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shuts down the write direction (a FIN). Idempotent. The peer reads every byte written
    /// before it, then end of stream.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_write())
    }
}

impl AsFd for XwayStream {
    /// The TCP socket (the data path on TCP, the control channel on the ring).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tcp().as_fd()
    }
}

impl AsRawFd for XwayStream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

impl TryFrom<std::net::TcpStream> for XwayStream {
    type Error = io::Error;

    /// See [`XwayStream::from_std`].
    fn try_from(stream: std::net::TcpStream) -> io::Result<XwayStream> {
        XwayStream::from_std(stream)
    }
}

impl From<TcpStream> for XwayStream {
    fn from(stream: TcpStream) -> XwayStream {
        XwayStream::from_tcp(stream)
    }
}

impl AsRef<XwayStream> for XwayStream {
    fn as_ref(&self) -> &XwayStream {
        self
    }
}

impl fmt::Debug for XwayStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XwayStream")
            .field("transport", &self.transport)
            .field("local_addr", &self.local_addr().ok())
            .field("peer_addr", &self.peer_addr().ok())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_traits<T: Send + Sync + Unpin + fmt::Debug + 'static>() {}

    #[test]
    fn stream_and_halves_are_send_sync_unpin_debug() {
        assert_traits::<XwayStream>();
        assert_traits::<OwnedReadHalf>();
        assert_traits::<OwnedWriteHalf>();
        fn borrowed<'a, T: Send + Sync + Unpin + fmt::Debug + 'a>() {}
        borrowed::<ReadHalf<'_>>();
        borrowed::<WriteHalf<'_>>();
    }
}
