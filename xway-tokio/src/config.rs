//! Connection configuration.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use crate::provider::xen::DomId;
use crate::ring::layout::{MAX_ORDER, MIN_ORDER};

/// The environment variable that forces every xway connection in the process onto plain TCP
/// when set to anything but `0` or the empty string. Read once, at first use.
pub const FORCE_TCP_ENV: &str = "XWAY_FORCE_TCP";

/// The environment variable with operator-configured Xen peers: `IP=DOMID` pairs separated by
/// spaces or commas, e.g. `XWAY_XEN_PEERS="192.0.2.11=1 192.0.2.12=2"`. Read once, at first
/// use; if any pair is malformed the whole variable is ignored, with a warning (and `xway
/// doctor` says why). See [`XwayConfigBuilder::xen_peer`].
pub const XEN_PEERS_ENV: &str = "XWAY_XEN_PEERS";

/// Whether xway may, must, or must not use the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Use the ring when the peer is a co-resident xway peer, plain TCP otherwise (default).
    #[default]
    Auto,
    /// Always plain TCP; listeners do not advertise.
    TcpOnly,
    /// Only ring connections: `connect` fails with [`std::io::ErrorKind::Unsupported`] when the
    /// ring cannot be used, and listeners drop (and log) connections that did not set up a ring.
    RingRequired,
}

/// Which local users may be the other end of a ring (the local provider checks the peer with
/// `SO_PEERCRED` on the rendezvous socket).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UidPolicy {
    /// Only processes running as this process's user (default).
    #[default]
    SameUser,
    /// Only these user ids.
    Allow(Vec<u32>),
    /// Any local user. Only for hosts where every local user is trusted with the traffic.
    AnyUser,
}

impl UidPolicy {
    pub(crate) fn allows(&self, uid: u32, own_uid: u32) -> bool {
        match self {
            UidPolicy::SameUser => uid == own_uid,
            UidPolicy::Allow(list) => list.contains(&uid),
            UidPolicy::AnyUser => true,
        }
    }
}

/// Configuration for [`XwayStream::connect_with`](crate::XwayStream::connect_with) and
/// [`XwayListener::bind_with`](crate::XwayListener::bind_with).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use xway_tokio::{Mode, XwayConfig};
///
/// let config = XwayConfig::builder()
///     .ring_size(1 << 20)
///     .rendezvous_timeout(Duration::from_millis(500))
///     .mode(Mode::Auto)
///     .build();
/// assert_eq!(config.ring_size(), 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XwayConfig {
    mode: Mode,
    ring_order: u32,
    xen_ring_order: u32,
    rendezvous_timeout: Duration,
    uid_policy: UidPolicy,
    spin_budget: Duration,
    xen_peers: BTreeMap<IpAddr, u16>,
}

/// Default bytes per ring direction: 2 MiB.
///
/// A connection maps `2 * DEFAULT_RING_SIZE + 4 KiB` of shared memory (about 4 MiB of address
/// space), but memory is only allocated for pages that traffic touches: 12 KiB for a
/// connection that exchanges a few small messages, up to the whole 4 MiB once bulk transfers
/// have gone round both rings. On the 2-vCPU benchmark host, 2 MiB rings moved 64 KiB writes at
/// 10-28 GB/s, 1 MiB rings at 9-18 GB/s and 256-512 KiB rings at 3-8 GB/s (benches/README.md).
pub const DEFAULT_RING_SIZE: usize = 2 << 20;

impl Default for XwayConfig {
    fn default() -> XwayConfig {
        XwayConfig {
            mode: Mode::Auto,
            ring_order: DEFAULT_RING_SIZE.trailing_zeros(),
            xen_ring_order: DEFAULT_XEN_RING_SIZE.trailing_zeros(),
            rendezvous_timeout: Duration::from_millis(200),
            uid_policy: UidPolicy::SameUser,
            spin_budget: DEFAULT_SPIN_BUDGET,
            xen_peers: BTreeMap::new(),
        }
    }
}

/// Default bytes per ring direction between Xen guests: 16 pages. A connection grants
/// `2 * 16 + 1` pages, so the default gntalloc limit of a Linux guest (1,024 pages) allows 31
/// concurrent ring connections per guest; beyond that, connections use TCP and say why.
pub const DEFAULT_XEN_RING_SIZE: usize = 64 << 10;

/// Largest ring per direction between Xen guests: 256 KiB. The grant references of an offer
/// travel in one XenStore value, which holds about 2 KiB.
pub const MAX_XEN_RING_SIZE: usize = 256 << 10;

/// Default longest spin before sleeping on the doorbell. A little above the cost of one
/// cross-CPU wake-up measured on small VMs (about 22 µs), so that spinning can pay for itself.
pub const DEFAULT_SPIN_BUDGET: Duration = Duration::from_micros(40);

impl XwayConfig {
    /// Starts a builder from the defaults.
    pub fn builder() -> XwayConfigBuilder {
        XwayConfigBuilder {
            config: XwayConfig::default(),
        }
    }

    /// The mode as configured (the environment override is applied separately, see
    /// [`FORCE_TCP_ENV`]).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Bytes per ring direction. A connection uses `2 * ring_size() + 4 KiB` of shared memory
    /// (not all of it touched unless traffic needs it).
    pub fn ring_size(&self) -> usize {
        1 << self.ring_order
    }

    pub(crate) fn ring_order(&self) -> u32 {
        self.ring_order
    }

    /// Bytes per ring direction between two Xen guests (the xen provider). A connection grants
    /// `2 * xen_ring_size() / 4 KiB + 1` pages of the client's memory.
    pub fn xen_ring_size(&self) -> usize {
        1 << self.xen_ring_order
    }

    pub(crate) fn xen_ring_order(&self) -> u32 {
        self.xen_ring_order
    }

    /// How long a client waits for the listener's verdict on its offer before using TCP.
    pub fn rendezvous_timeout(&self) -> Duration {
        self.rendezvous_timeout
    }

    /// Which local users may be the other end of a ring.
    pub fn uid_policy(&self) -> &UidPolicy {
        &self.uid_policy
    }

    /// The longest a ring stream spins before sleeping on its doorbell.
    pub fn spin_budget(&self) -> Duration {
        self.spin_budget
    }

    /// The domain id an operator configured for a Xen guest at `ip` (this configuration first,
    /// then [`XEN_PEERS_ENV`]), if any.
    pub fn xen_peer(&self, ip: IpAddr) -> Option<u16> {
        let ip = ip.to_canonical();
        self.xen_peers
            .get(&ip)
            .or_else(|| env_xen_peers().get(&ip))
            .copied()
    }

    /// The mode after the environment override.
    pub(crate) fn effective_mode(&self) -> EffectiveMode {
        if self.mode == Mode::TcpOnly {
            EffectiveMode::TcpByConfig
        } else if forced_tcp_by_env() {
            EffectiveMode::TcpByEnv
        } else {
            EffectiveMode::Ring {
                required: self.mode == Mode::RingRequired,
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EffectiveMode {
    TcpByConfig,
    TcpByEnv,
    Ring { required: bool },
}

fn forced_tcp_by_env() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED
        .get_or_init(|| std::env::var_os(FORCE_TCP_ENV).is_some_and(|v| !v.is_empty() && v != "0"))
}

fn env_xen_peers() -> &'static BTreeMap<IpAddr, u16> {
    static PEERS: OnceLock<BTreeMap<IpAddr, u16>> = OnceLock::new();
    PEERS.get_or_init(|| {
        let Some(value) = std::env::var_os(XEN_PEERS_ENV) else {
            return BTreeMap::new();
        };
        match crate::provider::xen::directory::parse_peers(&value.to_string_lossy()) {
            Ok(peers) => peers.into_iter().map(|(ip, d)| (ip, d.get())).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "xway: ignoring {XEN_PEERS_ENV}");
                BTreeMap::new()
            }
        }
    })
}

/// Builds an [`XwayConfig`]. See [`XwayConfig::builder`].
#[derive(Debug, Clone)]
pub struct XwayConfigBuilder {
    config: XwayConfig,
}

impl XwayConfigBuilder {
    /// Whether the ring may, must, or must not be used. Default: [`Mode::Auto`].
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Bytes per ring direction, rounded up to a power of two and clamped to 4 KiB ..= 16 MiB.
    /// Default: [`DEFAULT_RING_SIZE`] (2 MiB). Larger rings move bulk data faster (fewer
    /// sleeps per byte); each connection costs twice this in shared memory. The server uses the
    /// sizes the client offered.
    pub fn ring_size(mut self, bytes: usize) -> Self {
        let order = bytes.max(1).next_power_of_two().trailing_zeros();
        self.config.ring_order = order.clamp(MIN_ORDER, MAX_ORDER);
        self
    }

    /// Bytes per ring direction between Xen guests, rounded up to a power of two and clamped to
    /// 4 KiB ..= [`MAX_XEN_RING_SIZE`]. Default: [`DEFAULT_XEN_RING_SIZE`] (64 KiB).
    ///
    /// Xen rings are granted pages of the client's guest, and a guest may grant only so many at
    /// once (`xen_gntalloc.limit`, 1,024 pages by default): larger rings mean faster bulk
    /// transfers but fewer concurrent ring connections. A connection that finds the limit
    /// reached uses TCP, with the reason in [`XwayStream::transport`](crate::XwayStream::transport).
    pub fn xen_ring_size(mut self, bytes: usize) -> Self {
        let order = bytes.max(1).next_power_of_two().trailing_zeros();
        self.config.xen_ring_order = order.clamp(MIN_ORDER, MAX_XEN_RING_SIZE.trailing_zeros());
        self
    }

    /// Declares that the Xen guest with address `ip` on this host is domain `domid`: an
    /// operator-configured peer, the alternative to dom0's directory (`xway xen-directory`).
    ///
    /// A client grants ring pages only to a domain id from one of these two trusted sources
    /// (never from the network or the peer); without either, connections between guests use
    /// TCP. Entries here come before [`XEN_PEERS_ENV`] and the directory. Ids of reserved
    /// domains (`0x7FF0` and above) are ignored.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::Ipv4Addr;
    /// use xway_tokio::XwayConfig;
    ///
    /// let config = XwayConfig::builder()
    ///     .xen_peer(Ipv4Addr::new(192, 0, 2, 11).into(), 1)
    ///     .build();
    /// assert_eq!(config.xen_peer(Ipv4Addr::new(192, 0, 2, 11).into()), Some(1));
    /// ```
    pub fn xen_peer(mut self, ip: IpAddr, domid: u16) -> Self {
        if DomId::new(domid).is_some() {
            self.config.xen_peers.insert(ip.to_canonical(), domid);
        }
        self
    }

    /// How long a client waits for the listener's verdict before using TCP. Default: 200 ms.
    /// A listener that accepts promptly answers in microseconds; the deadline only matters
    /// when the listening application is slow to call `accept`, or the rendezvous endpoint
    /// is held by something that is not an xway listener.
    pub fn rendezvous_timeout(mut self, timeout: Duration) -> Self {
        self.config.rendezvous_timeout = timeout;
        self
    }

    /// Which local users may be the other end of a ring. Default: [`UidPolicy::SameUser`].
    pub fn uid_policy(mut self, policy: UidPolicy) -> Self {
        self.config.uid_policy = policy;
        self
    }

    /// The longest a ring stream waiting for data or space polls the ring before it sleeps on
    /// its doorbell. Default: [`DEFAULT_SPIN_BUDGET`]; zero never spins.
    ///
    /// A wake-up through the doorbell costs a context switch and, across CPUs, an
    /// inter-processor interrupt: tens of microseconds on small VMs, the largest part of a
    /// round trip. Spinning avoids it when the answer comes soon. xway spins only when the
    /// peer reports it is running (or was just woken) on *another* CPU (spinning on the CPU the
    /// peer needs would only delay it), and adapts per connection: a spin that fails shrinks
    /// the next one, so idle or many-connection workloads soon stop spinning. While spinning,
    /// the runtime thread runs nothing else, at most this long.
    pub fn spin_budget(mut self, budget: Duration) -> Self {
        self.config.spin_budget = budget;
        self
    }

    /// Finishes the configuration.
    pub fn build(self) -> XwayConfig {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_size_rounds_up_and_clamps() {
        assert_eq!(
            XwayConfig::builder().ring_size(5000).build().ring_size(),
            8192
        );
        assert_eq!(XwayConfig::builder().ring_size(1).build().ring_size(), 4096);
        assert_eq!(
            XwayConfig::builder()
                .ring_size(usize::MAX / 2)
                .build()
                .ring_size(),
            16 << 20
        );
    }

    #[test]
    fn xen_ring_size_stays_within_one_xenstore_offer() {
        let size = |b| {
            XwayConfig::builder()
                .xen_ring_size(b)
                .build()
                .xen_ring_size()
        };
        assert_eq!(XwayConfig::default().xen_ring_size(), DEFAULT_XEN_RING_SIZE);
        assert_eq!(size(100_000), 128 << 10);
        assert_eq!(size(1), 4096);
        assert_eq!(size(16 << 20), MAX_XEN_RING_SIZE);
    }

    #[test]
    fn uid_policy_decides_by_uid() {
        assert!(UidPolicy::SameUser.allows(7, 7));
        assert!(!UidPolicy::SameUser.allows(8, 7));
        assert!(UidPolicy::Allow(vec![8]).allows(8, 7));
        assert!(UidPolicy::AnyUser.allows(0, 7));
    }

    #[test]
    fn tcp_only_mode_wins_over_everything() {
        let c = XwayConfig::builder().mode(Mode::TcpOnly).build();
        assert_eq!(c.effective_mode(), EffectiveMode::TcpByConfig);
    }
}
