//! [`XwayIncoming`]: the accepted connections of an [`XwayListener`] as a
//! [`Stream`](futures_core::Stream), for servers that take one (tonic's
//! `serve_with_incoming`, hyper-util's accept loops built on streams).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::time::Sleep;

use super::{is_connection_error, DEFAULT_ACCEPT_BACKOFF};
use crate::{XwayListener, XwayStream};

/// The connections an [`XwayListener`] accepts, as an endless
/// [`Stream`](futures_core::Stream) that never yields an error.
///
/// Made by [`XwayListener::incoming`]. Each item is an accepted [`XwayStream`], on the ring or
/// on TCP as [`XwayListener::accept`] decided.
///
/// # Accept errors
///
/// The item type is `Result<XwayStream, Infallible>` (what tonic's `serve_with_incoming` and
/// similar loops want), and the error case cannot happen: a server fed by this stream is never
/// stopped by an accept error. Errors are handled here instead:
///
/// - an error about one connection (aborted or reset before it was accepted, an interrupted
///   call) is logged at `debug` level and the next connection is accepted at once;
/// - any other error (out of file descriptors, `ENFILE`, `ENOBUFS`, `ENOMEM`) is logged at
///   `error` level, and accepting pauses for the backoff (1 second unless
///   [`with_accept_backoff`](XwayIncoming::with_accept_backoff) says otherwise), so that the
///   loop does not spin while the condition lasts. Connections that arrive meanwhile wait in
///   the listen backlog.
///
/// A failed ring set-up is not an accept error at all: that connection uses TCP (see
/// [`XwayListener::accept`]).
///
/// # Examples
///
/// With tonic (feature `tonic014`), where `greeter` is a generated service:
///
/// ```text
/// let listener = xway_tokio::XwayListener::bind("127.0.0.1:50051").await?;
/// tonic::transport::Server::builder()
///     .add_service(GreeterServer::new(greeter))
///     .serve_with_incoming(listener.incoming())
///     .await?;
/// ```
///
/// By hand, with nothing but the standard library:
///
/// ```no_run
/// use std::pin::Pin;
/// use futures_core::Stream;
///
/// # async fn f() -> std::io::Result<()> {
/// let listener = xway_tokio::XwayListener::bind("127.0.0.1:8080").await?;
/// let mut incoming = listener.incoming();
/// while let Some(Ok(stream)) =
///     std::future::poll_fn(|cx| Pin::new(&mut incoming).poll_next(cx)).await
/// {
///     println!("accepted over {}", stream.transport());
/// }
/// # Ok(()) }
/// ```
pub struct XwayIncoming {
    listener: XwayListener,
    backoff: Duration,
    nodelay: Option<bool>,
    /// Set while pausing after an accept error.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl XwayListener {
    /// Turns the listener into a [`Stream`](futures_core::Stream) of accepted connections that
    /// never yields an error: see [`XwayIncoming`]. Requires the `stream` feature (implied by
    /// `tonic014`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let incoming = xway_tokio::XwayListener::bind("127.0.0.1:50051")
    ///     .await?
    ///     .incoming()
    ///     .with_nodelay(true);
    /// // tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming)
    /// # Ok(()) }
    /// ```
    pub fn incoming(self) -> XwayIncoming {
        XwayIncoming::new(self)
    }
}

impl XwayIncoming {
    /// Wraps `listener`; the same as [`XwayListener::incoming`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let listener = xway_tokio::XwayListener::bind("127.0.0.1:50051").await?;
    /// let incoming = xway_tokio::XwayIncoming::new(listener);
    /// # Ok(()) }
    /// ```
    pub fn new(listener: XwayListener) -> XwayIncoming {
        XwayIncoming {
            listener,
            backoff: DEFAULT_ACCEPT_BACKOFF,
            nodelay: None,
            sleep: None,
        }
    }

    /// How long to pause after an accept error that is not about a single connection (see
    /// [Accept errors](XwayIncoming#accept-errors)). Default: 1 second.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # async fn f() -> std::io::Result<()> {
    /// let listener = xway_tokio::XwayListener::bind("127.0.0.1:50051").await?;
    /// let incoming = listener.incoming().with_accept_backoff(Duration::from_millis(100));
    /// # Ok(()) }
    /// ```
    pub fn with_accept_backoff(mut self, backoff: Duration) -> XwayIncoming {
        self.backoff = backoff;
        self
    }

    /// Sets `TCP_NODELAY` on every accepted connection (tonic's `TcpIncoming::with_nodelay`,
    /// which `serve_with_incoming` does not apply by itself). It matters for connections on
    /// TCP; on the ring it is harmless. Default: the socket's default (Nagle's algorithm on).
    /// A failure to set it is logged and the connection is kept.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let listener = xway_tokio::XwayListener::bind("127.0.0.1:50051").await?;
    /// let incoming = listener.incoming().with_nodelay(true);
    /// # Ok(()) }
    /// ```
    pub fn with_nodelay(mut self, nodelay: bool) -> XwayIncoming {
        self.nodelay = Some(nodelay);
        self
    }

    /// The listener.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let incoming = xway_tokio::XwayListener::bind("127.0.0.1:0").await?.incoming();
    /// println!("serving on {}", incoming.get_ref().local_addr()?);
    /// # Ok(()) }
    /// ```
    pub fn get_ref(&self) -> &XwayListener {
        &self.listener
    }

    /// Gives the listener back.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let incoming = xway_tokio::XwayListener::bind("127.0.0.1:0").await?.incoming();
    /// let listener = incoming.into_inner();
    /// # Ok(()) }
    /// ```
    pub fn into_inner(self) -> XwayListener {
        self.listener
    }

    /// Polls for the next connection, handling accept errors as described under
    /// [Accept errors](XwayIncoming#accept-errors). Never returns an error.
    ///
    /// Cancel safe in the sense of [`XwayListener::poll_accept`]: no connection is lost
    /// between polls.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let mut incoming = xway_tokio::XwayListener::bind("127.0.0.1:8080").await?.incoming();
    /// let stream = std::future::poll_fn(|cx| incoming.poll_accept(cx)).await;
    /// # Ok(()) }
    /// ```
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<XwayStream> {
        loop {
            if let Some(sleep) = &mut self.sleep {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            match ready!(self.listener.poll_accept(cx)) {
                Ok((stream, _peer)) => {
                    if let Some(nodelay) = self.nodelay {
                        if let Err(e) = stream.set_nodelay(nodelay) {
                            tracing::debug!(error = %e, "xway: could not set TCP_NODELAY on an accepted connection");
                        }
                    }
                    return Poll::Ready(stream);
                }
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "xway: accept failed for one connection; accepting the next");
                }
                Err(e) => {
                    tracing::error!(error = %e, backoff = ?self.backoff, "xway: accept error; pausing before the next accept");
                    self.sleep = Some(Box::pin(tokio::time::sleep(self.backoff)));
                }
            }
        }
    }
}

impl Stream for XwayIncoming {
    type Item = Result<XwayStream, Infallible>;

    /// Never `Ready(None)`, never `Ready(Some(Err(_)))`: see [`XwayIncoming`].
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_accept(cx).map(|s| Some(Ok(s)))
    }
}

impl From<XwayListener> for XwayIncoming {
    fn from(listener: XwayListener) -> XwayIncoming {
        XwayIncoming::new(listener)
    }
}

impl fmt::Debug for XwayIncoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XwayIncoming")
            .field("listener", &self.listener)
            .field("backoff", &self.backoff)
            .field("nodelay", &self.nodelay)
            .field("pausing", &self.sleep.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_traits<T: Send + Sync + Unpin + fmt::Debug + 'static>() {}

    #[test]
    fn incoming_is_send_sync_unpin_debug() {
        assert_traits::<XwayIncoming>();
    }

    #[tokio::test]
    async fn incoming_yields_ring_connections_with_nodelay_applied() {
        let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = listener.incoming().with_nodelay(true);
        let (client, item) = tokio::join!(
            crate::XwayStream::connect(addr),
            std::future::poll_fn(|cx| Pin::new(&mut incoming).poll_next(cx))
        );
        let client = client.unwrap();
        let Some(Ok(server)) = item else {
            panic!("the stream ended")
        };
        assert!(client.transport().is_ring(), "{}", client.transport());
        assert!(server.transport().is_ring(), "{}", server.transport());
        assert!(server.nodelay().unwrap());
        assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
    }
}
