//! axum 0.8 (feature `axum08`): [`Listener`] for [`XwayListener`], and [`XwayInfo`] as a
//! `ConnectInfo` type.

use std::io;
use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener, TapIo};

use super::{is_connection_error, XwayInfo, DEFAULT_ACCEPT_BACKOFF};
use crate::{XwayListener, XwayStream};

/// `axum::serve(listener, app)` with an [`XwayListener`].
///
/// `accept` cannot fail in axum's trait, so it retries by itself, as axum does for tokio's
/// `TcpListener`: an error about one connection (aborted or reset before it was accepted) is
/// logged at `debug` level and the next connection accepted at once; any other error (out of
/// file descriptors, say) is logged at `error` level and followed by a one-second pause.
///
/// # Connection info
///
/// `Addr` is [`SocketAddr`]. axum provides `ConnectInfo<SocketAddr>` only for its own
/// listener types, though, and the orphan rule keeps xway from adding it for
/// `XwayListener`. Two ways to get connection info:
///
/// - `ConnectInfo<XwayInfo>`: the remote address *and* the transport, with
///   `app.into_make_service_with_connect_info::<XwayInfo>()`;
/// - `ConnectInfo<SocketAddr>`: wrap the listener with
///   [`ListenerExt::tap_io`](axum::serve::ListenerExt::tap_io) (for example to set
///   `TCP_NODELAY`), for which axum provides it for any listener whose `Addr` is `SocketAddr`.
///
/// # Examples
///
/// ```no_run
/// use std::net::SocketAddr;
/// use axum::extract::ConnectInfo;
/// use axum::routing::get;
/// use axum::serve::ListenerExt;
/// use axum::Router;
/// use xway_tokio::{XwayInfo, XwayListener};
///
/// # async fn f() -> std::io::Result<()> {
/// // The transport of each request's connection:
/// let app = Router::new().route(
///     "/",
///     get(|ConnectInfo(info): ConnectInfo<XwayInfo>| async move {
///         format!("{:?} over {}\n", info.remote_addr(), info.transport())
///     }),
/// );
/// let listener = XwayListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app.into_make_service_with_connect_info::<XwayInfo>()).await?;
///
/// // The peer's address only, as with tokio's TcpListener:
/// let app = Router::new().route(
///     "/",
///     get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
/// );
/// let listener = XwayListener::bind("127.0.0.1:3001").await?.tap_io(|stream| {
///     let _ = stream.set_nodelay(true);
/// });
/// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
/// # Ok(()) }
/// ```
impl Listener for XwayListener {
    type Io = XwayStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (XwayStream, SocketAddr) {
        loop {
            match XwayListener::accept(self).await {
                Ok(accepted) => return accepted,
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "xway: accept failed for one connection; accepting the next");
                }
                Err(e) => {
                    tracing::error!(error = %e, backoff = ?DEFAULT_ACCEPT_BACKOFF, "xway: accept error; pausing before the next accept");
                    tokio::time::sleep(DEFAULT_ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        XwayListener::local_addr(self)
    }
}

/// `ConnectInfo<XwayInfo>` for `axum::serve(xway_listener, ...)`: see [`XwayListener`]'s
/// `Listener` implementation.
impl Connected<IncomingStream<'_, XwayListener>> for XwayInfo {
    fn connect_info(stream: IncomingStream<'_, XwayListener>) -> XwayInfo {
        incoming_info(stream.io(), *stream.remote_addr())
    }
}

/// `ConnectInfo<XwayInfo>` for `axum::serve(xway_listener.tap_io(...), ...)`.
impl<F> Connected<IncomingStream<'_, TapIo<XwayListener, F>>> for XwayInfo
where
    F: FnMut(&mut XwayStream) + Send + 'static,
{
    fn connect_info(stream: IncomingStream<'_, TapIo<XwayListener, F>>) -> XwayInfo {
        incoming_info(stream.io(), *stream.remote_addr())
    }
}

/// The info of an accepted stream, with the address `accept` returned as the remote address
/// in case the socket can no longer tell it.
fn incoming_info(stream: &XwayStream, remote_addr: SocketAddr) -> XwayInfo {
    let mut info = XwayInfo::new(stream);
    info.remote_addr.get_or_insert(remote_addr);
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listener_trait_accepts_ring_connections_and_reports_its_address() {
        let mut listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
        let addr = Listener::local_addr(&listener).unwrap();
        let (client, (server, peer)) =
            tokio::join!(XwayStream::connect(addr), Listener::accept(&mut listener));
        let client = client.unwrap();
        assert!(server.transport().is_ring(), "{}", server.transport());
        assert_eq!(peer, client.local_addr().unwrap());
        let info = incoming_info(&server, peer);
        assert!(info.transport().is_ring());
        assert_eq!(info.remote_addr(), Some(peer));
    }
}
