//! Fast sockets between co-resident peers, with nothing to change but a type name.
//!
//! [`XwayStream`] and [`XwayListener`] are drop-ins for tokio's [`TcpStream`] and
//! [`TcpListener`]. When both ends of a connection use xway and run on the same host, the bytes
//! travel through shared-memory rings and a doorbell wakes the tokio reactor; with any other
//! peer the connection is plain TCP, byte for byte. The choice is made per connection, before
//! the TCP handshake, and [`XwayStream::transport`] says which path was taken and why.
//!
//! ```no_run
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use xway_tokio::{XwayListener, XwayStream};
//!
//! # async fn f() -> std::io::Result<()> {
//! let listener = XwayListener::bind("127.0.0.1:7000").await?;
//! tokio::spawn(async move {
//!     let (mut stream, _) = listener.accept().await?;
//!     let mut buf = [0u8; 5];
//!     stream.read_exact(&mut buf).await?;
//!     stream.write_all(&buf).await?;
//!     Ok::<_, std::io::Error>(())
//! });
//! let mut stream = XwayStream::connect("127.0.0.1:7000").await?;
//! stream.write_all(b"hello").await?;
//! println!("transport: {}", stream.transport()); // "ring (local)" in another process too
//! # Ok(()) }
//! ```
//!
//! # How the transport is chosen
//!
//! 1. A listener advertises itself on this host (local provider: an abstract Unix socket
//!    named after its address, in the listener's network namespace).
//! 2. A client connecting to an address nobody advertises does a plain TCP connect and nothing
//!    else: remote and non-xway servers never see anything unusual (invariant I1).
//! 3. Otherwise the client checks the listener's user (`SO_PEERCRED`, same user by default,
//!    see [`UidPolicy`]), creates the rings, sends an offer carrying them, and only then
//!    connects. The server, on `accept`, finds the offer for exactly that connection, checks
//!    it, and answers with a verdict on the TCP connection itself, which only the real server
//!    can write. The client writes application data only after an accept verdict.
//! 4. Anything that goes wrong (a missing kernel feature, descriptor or memory limits, a
//!    deadline, a peer that fails validation) leaves the connection on TCP, with the reason
//!    in [`XwayStream::transport`] and in `tracing` (invariant I5).
//!
//! The TCP connection stays open for the life of a ring stream: addresses, socket options and
//! [`AsFd`](std::os::fd::AsFd) refer to it, and its closing is how a peer's death is noticed.
//!
//! # Controls
//!
//! - [`XwayConfig`]: ring size, [`Mode`] (auto, TCP only, ring required), rendezvous
//!   deadline, uid policy.
//! - The environment variable [`XWAY_FORCE_TCP`](FORCE_TCP_ENV)`=1` forces TCP for every
//!   connection of the process.
//!
//! # Safety of shared memory
//!
//! The peer can write the shared region at any time. xway never forms Rust references to it,
//! reads each peer-written index once and validates it, and turns any violation into an
//! [`io::ErrorKind::InvalidData`](std::io::ErrorKind) error on that connection only.
//!
//! [`TcpStream`]: tokio::net::TcpStream
//! [`TcpListener`]: tokio::net::TcpListener

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings), allow(dead_code, unused_variables))))]

mod config;
pub mod doctor;
mod listener;
mod provider;
mod ring;
mod setup;
mod stream;
mod sys;
mod transport;

// Wrappers over internals for the fuzz targets in `fuzz/` (`cargo fuzz` sets `--cfg fuzzing`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;

#[cfg(any(
    feature = "stream",
    feature = "hyper1",
    feature = "tonic014",
    feature = "axum08"
))]
mod integrations;

pub use config::{
    Mode, UidPolicy, XwayConfig, XwayConfigBuilder, DEFAULT_RING_SIZE, DEFAULT_SPIN_BUDGET,
    DEFAULT_XEN_RING_SIZE, FORCE_TCP_ENV, MAX_XEN_RING_SIZE, XEN_PEERS_ENV,
};
pub use listener::XwayListener;
pub use stream::{
    OwnedReadHalf, OwnedWriteHalf, ReadHalf, ReuniteError, RingStats, WriteHalf, XwayStream,
};
pub use transport::{FallbackReason, Provider, Transport};

#[cfg(feature = "hyper1")]
pub use integrations::hyper::{XwayConnecting, XwayConnector};
#[cfg(feature = "stream")]
pub use integrations::incoming::XwayIncoming;
#[cfg(any(
    feature = "stream",
    feature = "hyper1",
    feature = "tonic014",
    feature = "axum08"
))]
pub use integrations::XwayInfo;

/// Names under which xway mirrors `tokio::net`, for `use xway_tokio::net::TcpStream`-style
/// drop-in replacement.
pub mod net {
    pub use crate::listener::XwayListener as TcpListener;
    pub use crate::stream::XwayStream as TcpStream;
}
