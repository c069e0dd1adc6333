//! Optional integrations with the tokio ecosystem's frameworks, one module per framework, each
//! behind a cargo feature of its own (see the crate's `Cargo.toml`).
//!
//! Nothing here is needed for the frameworks that only ask for [`AsyncRead`] + [`AsyncWrite`]
//! (tokio-util's `Framed`, tokio-rustls, hyper's server through `hyper_util::rt::TokioIo`):
//! [`XwayStream`] works with them as it is. What lives here is the glue that names a concrete
//! type: hyper-util's client `Connection` and a connector, tonic's `Connected`, axum's
//! `Listener`, and an accept [`Stream`](futures_core::Stream) for servers that take one.
//!
//! [`AsyncRead`]: tokio::io::AsyncRead
//! [`AsyncWrite`]: tokio::io::AsyncWrite

use std::net::SocketAddr;

use crate::{Transport, XwayStream};

#[cfg(feature = "axum08")]
mod axum;
#[cfg(feature = "hyper1")]
pub(crate) mod hyper;
#[cfg(feature = "stream")]
pub(crate) mod incoming;
#[cfg(feature = "tonic014")]
mod tonic;

/// What a framework can tell a handler about an xway connection: the [`Transport`] it uses and
/// its addresses.
///
/// Frameworks carry it where they carry per-connection data:
///
/// - hyper-util's client ([`XwayConnector`](crate::XwayConnector), feature `hyper1`): in the
///   extensions of every response, `response.extensions().get::<XwayInfo>()`. (hyper-util's own
///   `HttpInfo` cannot be built outside hyper-util, so it is absent from responses that came
///   through xway.)
/// - axum (feature `axum08`): as `ConnectInfo<XwayInfo>`, with
///   `Router::into_make_service_with_connect_info::<XwayInfo>()`.
///
/// # Examples
///
/// ```no_run
/// use xway_tokio::{XwayInfo, XwayStream};
///
/// # async fn f() -> std::io::Result<()> {
/// let stream = XwayStream::connect("127.0.0.1:8080").await?;
/// let info = XwayInfo::new(&stream);
/// println!("{:?} -> {:?} over {}", info.local_addr(), info.remote_addr(), info.transport());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XwayInfo {
    transport: Transport,
    local_addr: Option<SocketAddr>,
    remote_addr: Option<SocketAddr>,
}

impl XwayInfo {
    /// Takes the transport and addresses of `stream`. An address the socket can no longer
    /// report (the connection was reset) is `None`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// let info = xway_tokio::XwayInfo::new(&stream);
    /// assert_eq!(info.transport(), stream.transport());
    /// # Ok(()) }
    /// ```
    pub fn new(stream: &XwayStream) -> XwayInfo {
        XwayInfo {
            transport: stream.transport().clone(),
            local_addr: stream.local_addr().ok(),
            remote_addr: stream.peer_addr().ok(),
        }
    }

    /// The path the connection's bytes take, as [`XwayStream::transport`] said when the
    /// connection was handed to the framework.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// # let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// let info = xway_tokio::XwayInfo::new(&stream);
    /// if !info.transport().is_ring() {
    ///     eprintln!("plain TCP: {}", info.transport());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// This end's address of the TCP connection (on the ring path too: the TCP connection
    /// stays open as the control channel).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// # let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// let info = xway_tokio::XwayInfo::new(&stream);
    /// assert_eq!(info.local_addr(), stream.local_addr().ok());
    /// # Ok(()) }
    /// ```
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The other end's address of the TCP connection.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// # let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
    /// let info = xway_tokio::XwayInfo::new(&stream);
    /// assert_eq!(info.remote_addr().map(|a| a.port()), Some(8080));
    /// # Ok(()) }
    /// ```
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }
}

impl From<&XwayStream> for XwayInfo {
    fn from(stream: &XwayStream) -> XwayInfo {
        XwayInfo::new(stream)
    }
}

/// How long a server loop waits after an accept error that is not about one connection
/// (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) before trying again: the same second hyper 0.14
/// and axum wait. Retrying at once would spin while the condition lasts.
#[cfg(any(feature = "stream", feature = "axum08"))]
pub(crate) const DEFAULT_ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

/// True for accept errors that concern one connection only (it was aborted or reset before
/// `accept` took it, or the call was interrupted): the next `accept` may succeed at once.
/// Every other error is about the process or the host, and is worth a pause.
#[cfg(any(feature = "stream", feature = "axum08"))]
pub(crate) fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::TimedOut
    )
}

#[cfg(all(test, any(feature = "stream", feature = "axum08")))]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn per_connection_accept_errors_are_told_apart_from_resource_exhaustion() {
        assert!(is_connection_error(
            &io::ErrorKind::ConnectionAborted.into()
        ));
        assert!(is_connection_error(&io::ErrorKind::ConnectionReset.into()));
        assert!(!is_connection_error(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!is_connection_error(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!is_connection_error(&io::Error::from_raw_os_error(
            libc::ENOBUFS
        )));
    }
}
