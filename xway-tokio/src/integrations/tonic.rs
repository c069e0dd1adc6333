//! tonic 0.14 (feature `tonic014`): [`Connected`] for [`XwayStream`], so that
//! `Server::serve_with_incoming(listener.incoming())` accepts xway connections.
//!
//! The client side needs nothing from here beyond [`XwayConnector`](crate::XwayConnector)
//! (feature `hyper1`): `Endpoint::connect_with_connector(XwayConnector::new())`.

use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::XwayStream;

impl Connected for XwayStream {
    /// tonic's own [`TcpConnectInfo`], so that `Request::remote_addr()` and
    /// `Request::local_addr()` work as they do for a `TcpStream` (tonic looks up exactly this
    /// type). On the ring path the addresses are those of the TCP control connection, which
    /// are the addresses the peer connected from and to.
    type ConnectInfo = TcpConnectInfo;

    /// # Examples
    ///
    /// ```no_run
    /// use tonic::transport::server::Connected;
    ///
    /// # async fn f() -> std::io::Result<()> {
    /// let listener = xway_tokio::XwayListener::bind("127.0.0.1:50051").await?;
    /// let (stream, peer) = listener.accept().await?;
    /// assert_eq!(stream.connect_info().remote_addr(), Some(peer));
    /// # Ok(()) }
    /// ```
    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.local_addr().ok(),
            remote_addr: self.peer_addr().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::XwayListener;

    #[tokio::test]
    async fn connect_info_reports_both_ends_of_a_ring_connection() {
        let listener = XwayListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(XwayStream::connect(addr), listener.accept());
        let (client, (server, peer)) = (client.unwrap(), accepted.unwrap());
        assert!(server.transport().is_ring(), "{}", server.transport());
        let info = server.connect_info();
        assert_eq!(info.local_addr(), Some(addr));
        assert_eq!(info.remote_addr(), Some(peer));
        assert_eq!(info.remote_addr(), client.local_addr().ok());
    }
}
