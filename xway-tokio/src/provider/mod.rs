//! Co-residency providers: where shared memory and doorbells come from.
//!
//! A provider gives a ring connection
//! - a shared [`Region`] laid out as in [`crate::ring::layout`],
//! - a [`Doorbell`]: a wake source for this side that tokio can poll, and a way to wake the
//!   peer,
//! - and a rendezvous: how a listener advertises itself, how a client finds it and delivers an
//!   offer, and how the server picks up the offer for a connection it accepted.
//!
//! Liveness is common to all providers: every ring connection keeps its TCP connection open,
//! and the kernel closes it when the peer process dies. Providers may add faster signals (Xen's
//! unmap-notify clears a byte and fires the event channel when a domain goes away).
//!
//! There are two providers:
//! - [`local`]: two processes on one Linux kernel (a sealed memfd, a socket-pair doorbell, an
//!   abstract Unix socket as the rendezvous);
//! - [`xen`]: two guests of one Xen host (pages granted by the client's domain and mapped by
//!   the server's, an event channel per connection demultiplexed from one `/dev/xen/evtchn`
//!   descriptor, XenStore as the rendezvous and dom0's directory as the source of domain ids).
//!
//! [`SharedMemory`]: crate::ring::SharedMemory

pub(crate) mod local;
pub(crate) mod xen;

use std::fmt;
use std::io;
use std::task::{Context, Poll};

/// A connection's wake-up mechanism.
///
/// Wake-ups are hints: after every wake the ring must be re-checked (Xen even marks a freshly
/// bound event channel pending). Spurious wake-ups are allowed; lost ones are not.
pub(crate) trait Doorbell: Send + Sync + fmt::Debug {
    /// Polls for a wake-up from the peer.
    ///
    /// `Ready(Ok(()))` consumes the pending wake-up(s): the caller must re-check the ring before
    /// polling again. `Pending` registers `cx`'s waker, which is woken at the next ring.
    fn poll_wake(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Wakes the peer.
    fn ring_peer(&self) -> io::Result<()>;

    /// This side's end, deregistered, for a ring that is kept to be used again; `None` if the
    /// doorbell cannot be kept (only the local provider's can).
    fn into_end(self: Box<Self>) -> Option<std::os::fd::OwnedFd> {
        None
    }
}
