//! Which path a connection's bytes take, and why.

use std::fmt;

/// The path an [`XwayStream`](crate::XwayStream)'s bytes take.
///
/// Decided once, when the connection is set up, and never changes afterwards.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let stream = xway_tokio::XwayStream::connect("127.0.0.1:8080").await?;
/// match stream.transport() {
///     xway_tokio::Transport::Ring { provider } => println!("shared-memory ring via {provider}"),
///     xway_tokio::Transport::Tcp { reason } => println!("plain TCP: {reason}"),
///     _ => {}
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Bytes travel through shared-memory rings; the TCP connection stays open as the
    /// connection's address, socket-option and liveness channel.
    Ring {
        /// Who provided the shared memory and doorbells.
        provider: Provider,
    },
    /// Bytes travel over the TCP connection, untouched.
    Tcp {
        /// Why the ring is not in use.
        reason: FallbackReason,
    },
}

impl Transport {
    /// True if the bytes travel through shared memory.
    pub fn is_ring(&self) -> bool {
        matches!(self, Transport::Ring { .. })
    }

    /// Why this connection uses TCP, or `None` if it uses the ring.
    pub fn fallback_reason(&self) -> Option<&FallbackReason> {
        match self {
            Transport::Tcp { reason } => Some(reason),
            Transport::Ring { .. } => None,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Ring { provider } => write!(f, "ring ({provider})"),
            Transport::Tcp { reason } => write!(f, "tcp ({reason})"),
        }
    }
}

/// The co-residency provider behind a ring connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Provider {
    /// Two processes on one Linux kernel: a sealed memfd and a socket-pair doorbell.
    Local,
    /// Two guest domains on one Xen host: pages granted by the client's domain and mapped by
    /// the server's, woken by an event channel, found through XenStore.
    Xen,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provider::Local => f.write_str("local"),
            Provider::Xen => f.write_str("xen"),
        }
    }
}

/// Why a connection uses plain TCP rather than the ring (invariant I5: fallback is silent and
/// explained).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FallbackReason {
    /// The configuration asked for TCP only ([`Mode::TcpOnly`](crate::Mode::TcpOnly)).
    DisabledByConfig,
    /// The `XWAY_FORCE_TCP` environment variable is set.
    DisabledByEnv,
    /// No xway listener advertises the destination on this host (the peer is remote, or not
    /// xway): the connection is plain TCP at no extra cost.
    NotAdvertised,
    /// The accepted client made no ring offer for this connection: it is a plain TCP client,
    /// or not on this host.
    NoOffer,
    /// The stream was built from an existing TCP socket.
    ExistingSocket,
    /// The process holding the rendezvous endpoint runs as a user the policy does not allow.
    PeerUidRejected {
        /// The user id the kernel reported for the peer.
        uid: u32,
    },
    /// The listener did not answer the offer before the rendezvous deadline.
    RendezvousTimeout,
    /// The client gave up waiting before the server could claim the ring.
    ClientAbandoned,
    /// The server declined the offer.
    Declined {
        /// What the server said.
        reason: String,
    },
    /// Setting up the ring failed locally (out of file descriptors or memory, a missing
    /// kernel feature, ...).
    SetupFailed {
        /// The error, with context.
        error: String,
    },
    /// The peer's offer or region failed validation (invariant I2/I3).
    InvalidOffer {
        /// What was wrong.
        error: String,
    },
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FallbackReason::DisabledByConfig => f.write_str("ring disabled by configuration"),
            FallbackReason::DisabledByEnv => f.write_str("ring disabled by XWAY_FORCE_TCP"),
            FallbackReason::NotAdvertised => {
                f.write_str("no xway listener advertised for the destination")
            }
            FallbackReason::NoOffer => f.write_str("client made no ring offer (plain TCP peer)"),
            FallbackReason::ExistingSocket => f.write_str("built from an existing TCP socket"),
            FallbackReason::PeerUidRejected { uid } => {
                write!(
                    f,
                    "rendezvous peer runs as uid {uid}, which the uid policy rejects"
                )
            }
            FallbackReason::RendezvousTimeout => {
                f.write_str("no verdict from the listener before the deadline")
            }
            FallbackReason::ClientAbandoned => {
                f.write_str("client stopped waiting before the offer was claimed")
            }
            FallbackReason::Declined { reason } => write!(f, "server declined the ring: {reason}"),
            FallbackReason::SetupFailed { error } => write!(f, "ring setup failed: {error}"),
            FallbackReason::InvalidOffer { error } => write!(f, "invalid ring offer: {error}"),
        }
    }
}
