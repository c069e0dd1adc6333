//! hyper 1 / hyper-util 0.1 (feature `hyper1`): [`Connection`] for [`XwayStream`] and
//! [`XwayConnector`], a client connector.
//!
//! The server side needs nothing from here: hyper serves any tokio stream wrapped in
//! [`TokioIo`], so `TokioIo::new(xway_stream)` goes to `hyper::server::conn` or
//! `hyper_util::server::conn::auto` as a `TcpStream` would.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::ReadBuf;

use super::XwayInfo;
use crate::{XwayConfig, XwayStream};

impl Connection for XwayStream {
    /// Describes the connection to hyper-util's client pool: an [`XwayInfo`] as `extra` (so
    /// every response carries it in its extensions), and the connection poisoned if its peer
    /// is already gone when it is handed over (closed, reset, or, on the ring, the peer process
    /// dead), so that the pool never keeps it.
    ///
    /// A peer that dies later is noticed by hyper itself: an idle pooled connection is
    /// watched for end of stream, and a ring stream reports its peer's death as a read error,
    /// like a reset TCP connection. The pool then drops it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use hyper_util::client::legacy::connect::Connection;
    /// use xway_tokio::XwayInfo;
    ///
    /// # async fn f() -> std::io::Result<()> {
    /// let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// let connected = stream.connected();
    /// let mut extensions = http::Extensions::new();
    /// connected.get_extras(&mut extensions);
    /// assert!(extensions.get::<XwayInfo>().is_some());
    /// # Ok(()) }
    /// ```
    fn connected(&self) -> Connected {
        let connected = Connected::new().extra(XwayInfo::new(self));
        if peer_gone(self) {
            connected.poison();
        }
        connected
    }
}

/// True if the stream is at end of stream or failed: a zero-length or failed peek, without
/// waiting. Unread data means the peer is there.
fn peer_gone(stream: &XwayStream) -> bool {
    let mut probe = [0u8; 1];
    let mut buf = ReadBuf::new(&mut probe);
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_peek(&mut cx, &mut buf) {
        Poll::Ready(Ok(n)) => n == 0,
        Poll::Ready(Err(_)) => true,
        Poll::Pending => false,
    }
}

/// A connector for hyper-util's client (and tonic's `Endpoint::connect_with_connector`) that
/// opens [`XwayStream`]s: the ring to co-resident xway servers, plain TCP to everyone else.
///
/// It is a [`tower_service::Service<Uri>`](tower_service::Service) like hyper-util's
/// `HttpConnector`: it takes the host and port of the URI (port 80 or 443 by scheme when
/// absent), resolves the host like [`XwayStream::connect`], and returns the stream wrapped in
/// [`TokioIo`]. Cloning is cheap and clones share the configuration.
///
/// Responses carry an [`XwayInfo`] in their extensions (see [`Connection`] for
/// `XwayStream`); hyper-util's `HttpInfo` is absent, since only hyper-util can make one.
///
/// # Errors
///
/// The connect future fails with [`io::ErrorKind::InvalidInput`] for a URI without a host, a
/// URI whose scheme is not `http` while [`enforce_http`](XwayConnector::enforce_http) is on
/// (the default), or one with neither a port nor an `http`/`https` scheme; otherwise with the
/// errors of [`XwayStream::connect_with`].
///
/// # Examples
///
/// ```no_run
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use xway_tokio::{XwayConnector, XwayInfo};
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let client: Client<XwayConnector, String> =
///     Client::builder(TokioExecutor::new()).build(XwayConnector::new());
/// let response = client.get("http://127.0.0.1:8080/".parse()?).await?;
/// if let Some(info) = response.extensions().get::<XwayInfo>() {
///     println!("{} over {}", response.status(), info.transport());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct XwayConnector {
    config: Arc<XwayConfig>,
    enforce_http: bool,
    nodelay: Option<bool>,
}

impl XwayConnector {
    /// A connector with the default [`XwayConfig`].
    ///
    /// # Examples
    ///
    /// ```
    /// let connector = xway_tokio::XwayConnector::new();
    /// ```
    pub fn new() -> XwayConnector {
        XwayConnector::with_config(XwayConfig::default())
    }

    /// A connector whose connections use `config` (ring size, mode, rendezvous deadline, uid
    /// policy).
    ///
    /// # Examples
    ///
    /// ```
    /// use xway_tokio::{Mode, XwayConfig, XwayConnector};
    ///
    /// let config = XwayConfig::builder().mode(Mode::RingRequired).build();
    /// let connector = XwayConnector::with_config(config);
    /// assert_eq!(connector.config().mode(), Mode::RingRequired);
    /// ```
    pub fn with_config(config: XwayConfig) -> XwayConnector {
        XwayConnector {
            config: Arc::new(config),
            enforce_http: true,
            nodelay: None,
        }
    }

    /// The configuration used for each connection.
    ///
    /// # Examples
    ///
    /// ```
    /// let connector = xway_tokio::XwayConnector::new();
    /// assert_eq!(connector.config(), &xway_tokio::XwayConfig::default());
    /// ```
    pub fn config(&self) -> &XwayConfig {
        &self.config
    }

    /// Whether URIs must have the `http` scheme (default: yes), as hyper-util's
    /// `HttpConnector::enforce_http`. Turn it off when a TLS connector (hyper-rustls'
    /// `HttpsConnector`, say) wraps this one and handles `https` URIs itself.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut connector = xway_tokio::XwayConnector::new();
    /// connector.enforce_http(false); // an HTTPS connector wraps it
    /// ```
    pub fn enforce_http(&mut self, is_enforced: bool) {
        self.enforce_http = is_enforced;
    }

    /// Sets `TCP_NODELAY` on every connection (default: the socket's default). It matters on
    /// TCP; on the ring it is harmless.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut connector = xway_tokio::XwayConnector::new();
    /// connector.set_nodelay(true);
    /// ```
    pub fn set_nodelay(&mut self, nodelay: bool) {
        self.nodelay = Some(nodelay);
    }
}

impl Default for XwayConnector {
    fn default() -> XwayConnector {
        XwayConnector::new()
    }
}

impl fmt::Debug for XwayConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XwayConnector")
            .field("config", &self.config)
            .field("enforce_http", &self.enforce_http)
            .field("nodelay", &self.nodelay)
            .finish()
    }
}

/// The `host:port` to connect to for `dst`.
fn destination(dst: &Uri, enforce_http: bool) -> io::Result<String> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let scheme = dst.scheme_str();
    if enforce_http && scheme != Some("http") {
        return Err(invalid(format!(
            "xway: {dst}: the URI scheme must be http (use a TLS connector around XwayConnector \
             with enforce_http(false) for https)"
        )));
    }
    let host = dst
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid(format!("xway: {dst}: the URI has no host")))?;
    let port = match (dst.port_u16(), scheme) {
        (Some(port), _) => port,
        (None, Some("http")) => 80,
        (None, Some("https")) => 443,
        (None, _) => {
            return Err(invalid(format!(
                "xway: {dst}: the URI has no port and no http or https scheme"
            )))
        }
    };
    // `Uri::host` keeps the brackets of an IPv6 literal, which is the form `host:port` needs.
    Ok(format!("{host}:{port}"))
}

impl tower_service::Service<Uri> for XwayConnector {
    type Response = TokioIo<XwayStream>;
    type Error = io::Error;
    type Future = XwayConnecting;

    /// Always ready: each call opens its own connection.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> XwayConnecting {
        let config = self.config.clone();
        let enforce_http = self.enforce_http;
        let nodelay = self.nodelay;
        XwayConnecting {
            inner: Box::pin(async move {
                let addr = destination(&dst, enforce_http)?;
                let stream = XwayStream::connect_with(addr.as_str(), &config).await?;
                if let Some(nodelay) = nodelay {
                    stream.set_nodelay(nodelay)?;
                }
                tracing::debug!(%dst, transport = %stream.transport(), "xway: connector connected");
                Ok(TokioIo::new(stream))
            }),
        }
    }
}

/// The future of [`XwayConnector`]'s `call`: resolves the destination and connects.
///
/// It is `Send` and `Unpin`, as hyper-util's client requires.
///
/// # Cancel safety
///
/// Dropping it abandons the connection attempt; nothing leaks (see [`XwayStream::connect`]).
///
/// # Examples
///
/// ```no_run
/// use tower_service::Service;
///
/// # async fn f() -> std::io::Result<()> {
/// let mut connector = xway_tokio::XwayConnector::new();
/// let io = connector.call(http::Uri::from_static("http://127.0.0.1:8080")).await?;
/// println!("{}", io.inner().transport());
/// # Ok(()) }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct XwayConnecting {
    inner: Pin<Box<dyn Future<Output = io::Result<TokioIo<XwayStream>>> + Send>>,
}

impl Future for XwayConnecting {
    type Output = io::Result<TokioIo<XwayStream>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for XwayConnecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XwayConnecting").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_service::Service;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn destination_takes_host_and_port_with_scheme_defaults() {
        assert_eq!(
            destination(&uri("http://example.com/x"), true).unwrap(),
            "example.com:80"
        );
        assert_eq!(
            destination(&uri("http://127.0.0.1:8080/"), true).unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            destination(&uri("http://[::1]:9000"), true).unwrap(),
            "[::1]:9000"
        );
        assert_eq!(
            destination(&uri("https://example.com"), false).unwrap(),
            "example.com:443"
        );
        assert_eq!(
            destination(&uri("127.0.0.1:7"), false).unwrap(),
            "127.0.0.1:7"
        );
    }

    #[test]
    fn destination_rejects_non_http_schemes_unless_told_otherwise() {
        for bad in ["https://example.com", "127.0.0.1:7", "/path/only"] {
            let e = destination(&uri(bad), true).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        let e = destination(&uri("ftp://example.com"), false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(destination(&uri("/path/only"), false).is_err());
    }

    fn assert_connector<T: Clone + Send + Sync + fmt::Debug + 'static>() {}
    fn assert_future<T: Future + Send + Unpin + fmt::Debug + 'static>() {}

    #[test]
    fn connector_and_future_have_the_bounds_hyper_util_requires() {
        assert_connector::<XwayConnector>();
        assert_future::<XwayConnecting>();
    }

    #[tokio::test]
    async fn connector_opens_a_ring_stream_and_describes_it() {
        let listener = crate::XwayListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connector = XwayConnector::new();
        connector.set_nodelay(true);
        let (io, accepted) = tokio::join!(
            connector.call(uri(&format!("http://{addr}/"))),
            listener.accept()
        );
        let (io, (server, _)) = (io.unwrap(), accepted.unwrap());
        let stream = io.inner();
        assert!(stream.transport().is_ring(), "{}", stream.transport());
        assert!(stream.nodelay().unwrap());

        let connected = stream.connected();
        let mut ext = http::Extensions::new();
        connected.get_extras(&mut ext);
        let info = ext.get::<XwayInfo>().expect("XwayInfo in the extras");
        assert!(info.transport().is_ring());
        assert_eq!(info.remote_addr(), Some(addr));
        assert_eq!(info.local_addr(), Some(server.peer_addr().unwrap()));
        assert!(!peer_gone(stream), "a live peer is not gone");

        drop(server);
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !peer_gone(stream) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("a closed peer is seen as gone");
    }

    #[tokio::test]
    async fn peer_gone_sees_a_closed_tcp_peer_but_not_unread_data() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(XwayStream::connect(addr), listener.accept());
        let (client, (mut server, _)) = (client.unwrap(), accepted.unwrap());
        assert!(!client.transport().is_ring());
        server.write_all(b"x").await.unwrap();
        client.readable().await.unwrap();
        assert!(!peer_gone(&client), "unread data means the peer is there");
        drop(server);
        let mut buf = [0u8; 1];
        client.readable().await.unwrap();
        assert_eq!(client.try_read(&mut buf).unwrap(), 1);
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !peer_gone(&client) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("end of stream is seen as gone");
    }
}
