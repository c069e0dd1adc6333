//! Where everything lives in a shared region, and the header that binds a region to one
//! connection.
//!
//! ```text
//! offset  size  field                         written by
//! 0       8     magic "XWAYRING"              creator (client), before sharing
//! 8       4     version                       creator
//! 12      4     client->server ring order     creator (log2 of the ring size in bytes)
//! 16      4     server->client ring order     creator
//! 20      4     reserved (0)
//! 24      16    connection nonce              creator
//! 40      20    client address (see below)    creator
//! 60      20    server address                creator
//! 128     4     setup state (atomic)          both, by compare-and-swap
//! 256     384   control block client->server  see `Producer` / `Consumer`
//! 768     384   control block server->client
//! 1152    4     client activity (hint)        client
//! 1280    4     server activity (hint)        server
//! 4096    2^n   client->server data
//! ...     2^m   server->client data
//! ```
//!
//! An address is `family: u8` (4 or 6), one zero byte, `port: u16` big-endian, then 16 bytes of
//! IP (IPv4 in the first four). The header page is read by the server exactly once, as a private
//! copy, and decoded with [`Header::decode`]; nothing in it is re-read afterwards.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Size of the control page that precedes the data rings.
pub(crate) const CONTROL_LEN: usize = 4096;
/// Bytes of the header that [`Header::decode`] looks at.
pub(crate) const HEADER_LEN: usize = 128;
/// Magic bytes at offset 0.
pub(crate) const MAGIC: [u8; 8] = *b"XWAYRING";
/// The only ring protocol version so far.
pub(crate) const VERSION: u32 = 1;
/// Smallest ring accepted from a peer: one page.
pub(crate) const MIN_ORDER: u32 = 12;
/// Largest ring accepted from a peer: 16 MiB.
pub(crate) const MAX_ORDER: u32 = 24;

// The control blocks fit in the control page.
const _: () = assert!(S2C_CONTROL + NOTIFY + 4 <= CONTROL_LEN);

/// Offset of the setup-state word.
pub(crate) const STATE_OFFSET: usize = 128;
/// Offset of the client-to-server control block.
pub(crate) const C2S_CONTROL: usize = 256;
/// Offset of the server-to-client control block.
pub(crate) const S2C_CONTROL: usize = 768;

/// Offsets of each side's activity word (see [`activity`]), each on its own cache line.
pub(crate) const CLIENT_ACTIVITY: usize = 1152;
pub(crate) const SERVER_ACTIVITY: usize = 1280;

/// A side's activity word: `RUNNING | cpu` while it is actively polling the ring on that CPU,
/// just `cpu` (its last CPU) once it waits on its doorbell. Only a hint for the other side's
/// decision to spin instead of sleeping; a wrong value costs a bounded spin, nothing else.
pub(crate) mod activity {
    pub(crate) const RUNNING: u32 = 1 << 31;
    pub(crate) const CPU_MASK: u32 = 0xffff;
}

// The activity words fit in the control page, after the control blocks.
const _: () =
    assert!(S2C_CONTROL + NOTIFY + 4 <= CLIENT_ACTIVITY && SERVER_ACTIVITY + 4 <= CONTROL_LEN);

/// Within a control block: fields written by the producer (own cache line pair).
pub(crate) const PROD: usize = 0;
pub(crate) const PROD_FLAGS: usize = 4;
/// Fields written by the consumer, 128 bytes further (adjacent-line prefetch would otherwise
/// make the two sides' lines ping-pong together).
pub(crate) const CONS: usize = 128;
pub(crate) const CONS_FLAGS: usize = 132;
/// Notification requests, written by both sides with atomic read-modify-write.
pub(crate) const NOTIFY: usize = 256;

/// Setup states stored at [`STATE_OFFSET`]. The creator writes `OFFERED`; afterwards exactly one
/// compare-and-swap from `OFFERED` wins, and that decides the connection's transport.
pub(crate) mod state {
    /// Written by the client when it creates the region.
    pub(crate) const OFFERED: u32 = 1;
    /// The server validated the region and will use it; a verdict is on its way over TCP.
    pub(crate) const CLAIMED: u32 = 2;
    /// The client stopped waiting for a verdict and uses TCP; the server must stay silent.
    pub(crate) const ABANDONED: u32 = 3;
    /// The server declined the offer; a verdict is on its way over TCP.
    pub(crate) const DECLINED: u32 = 4;
    /// The server's stream is gone and it keeps the region for its client to offer again
    /// (local provider, from `CLAIMED`).
    pub(crate) const POOLED: u32 = 5;
    /// The client won the region back from `POOLED` and is writing a new header; `OFFERED`
    /// follows.
    pub(crate) const REUSING: u32 = 6;
    /// One side threw the region away: nobody may offer or pool it again.
    pub(crate) const DISCARDED: u32 = 7;
}

/// Where the two rings of a region are, computed from (already validated) orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) c2s_order: u32,
    pub(crate) s2c_order: u32,
}

impl Layout {
    /// A layout with both rings of `1 << order` bytes.
    ///
    /// Returns `None` unless `MIN_ORDER <= order <= MAX_ORDER`.
    pub(crate) fn symmetric(order: u32) -> Option<Layout> {
        Layout::new(order, order)
    }

    pub(crate) fn new(c2s_order: u32, s2c_order: u32) -> Option<Layout> {
        let ok = |o: u32| (MIN_ORDER..=MAX_ORDER).contains(&o);
        (ok(c2s_order) && ok(s2c_order)).then_some(Layout {
            c2s_order,
            s2c_order,
        })
    }

    pub(crate) fn c2s_data(&self) -> usize {
        CONTROL_LEN
    }

    pub(crate) fn s2c_data(&self) -> usize {
        CONTROL_LEN + (1usize << self.c2s_order)
    }

    /// Total bytes of the region.
    pub(crate) fn region_len(&self) -> usize {
        CONTROL_LEN + (1usize << self.c2s_order) + (1usize << self.s2c_order)
    }
}

/// The identity of a connection, written into the region by its creator and checked by the
/// other side before it uses the region (invariant I3: the right peer, or nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) layout: Layout,
    pub(crate) nonce: [u8; 16],
    pub(crate) client: SocketAddr,
    pub(crate) server: SocketAddr,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    BadMagic,
    UnsupportedVersion(u32),
    BadOrder(u32),
    BadAddress,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::BadMagic => f.write_str("region header has the wrong magic"),
            HeaderError::UnsupportedVersion(v) => write!(f, "unsupported ring version {v}"),
            HeaderError::BadOrder(o) => {
                write!(f, "ring order {o} outside {MIN_ORDER}..={MAX_ORDER}")
            }
            HeaderError::BadAddress => f.write_str("malformed socket address in header"),
        }
    }
}

impl Header {
    /// Encodes the header into its first [`HEADER_LEN`] bytes.
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_ne_bytes());
        b[12..16].copy_from_slice(&self.layout.c2s_order.to_ne_bytes());
        b[16..20].copy_from_slice(&self.layout.s2c_order.to_ne_bytes());
        b[24..40].copy_from_slice(&self.nonce);
        b[40..60].copy_from_slice(&encode_addr(self.client));
        b[60..80].copy_from_slice(&encode_addr(self.server));
        b
    }

    /// Decodes and validates a private copy of the header bytes.
    pub(crate) fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
        if b[0..8] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = u32_at(b, 8);
        if version != VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let (c2s, s2c) = (u32_at(b, 12), u32_at(b, 16));
        let layout = Layout::new(c2s, s2c).ok_or(HeaderError::BadOrder(
            if Layout::new(c2s, MIN_ORDER).is_none() {
                c2s
            } else {
                s2c
            },
        ))?;
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&b[24..40]);
        let client = decode_addr(&b[40..60]).ok_or(HeaderError::BadAddress)?;
        let server = decode_addr(&b[60..80]).ok_or(HeaderError::BadAddress)?;
        Ok(Header {
            layout,
            nonce,
            client,
            server,
        })
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Encodes a socket address as 20 bytes (see the module docs). IPv4-mapped IPv6 addresses are
/// stored as IPv4, so both ends agree however their sockets were bound.
pub(crate) fn encode_addr(addr: SocketAddr) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[2..4].copy_from_slice(&addr.port().to_be_bytes());
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => {
            b[0] = 4;
            b[4..8].copy_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            b[0] = 6;
            b[4..20].copy_from_slice(&ip.octets());
        }
    }
    b
}

/// Decodes an address written by [`encode_addr`]; `None` for anything malformed.
pub(crate) fn decode_addr(b: &[u8]) -> Option<SocketAddr> {
    if b.len() != 20 || b[1] != 0 {
        return None;
    }
    let port = u16::from_be_bytes([b[2], b[3]]);
    let ip = match b[0] {
        4 if b[8..20].iter().all(|&x| x == 0) => IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7])),
        6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[4..20]);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Normalises an address for comparisons between what each side observed (an IPv4 peer of a
/// dual-stack listener shows up as `::ffff:a.b.c.d`).
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            layout: Layout::new(12, 16).unwrap(),
            nonce: [7; 16],
            client: "127.0.0.1:40000".parse().unwrap(),
            server: "[::1]:8080".parse().unwrap(),
        }
    }

    #[test]
    fn header_round_trips() {
        let h = header();
        assert_eq!(Header::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn header_rejects_wrong_magic_version_and_orders() {
        let mut b = header().encode();
        b[0] ^= 1;
        assert_eq!(Header::decode(&b), Err(HeaderError::BadMagic));
        let mut b = header().encode();
        b[8..12].copy_from_slice(&2u32.to_ne_bytes());
        assert_eq!(Header::decode(&b), Err(HeaderError::UnsupportedVersion(2)));
        for bad in [0, 11, 25, u32::MAX] {
            let mut b = header().encode();
            b[16..20].copy_from_slice(&bad.to_ne_bytes());
            assert_eq!(Header::decode(&b), Err(HeaderError::BadOrder(bad)));
        }
    }

    #[test]
    fn mapped_ipv4_is_stored_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9".parse().unwrap();
        let plain: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(encode_addr(mapped), encode_addr(plain));
        assert_eq!(decode_addr(&encode_addr(mapped)), Some(plain));
    }

    #[test]
    fn malformed_addresses_are_refused() {
        let mut b = encode_addr("127.0.0.1:1".parse().unwrap());
        b[0] = 5;
        assert_eq!(decode_addr(&b), None);
        let mut b = encode_addr("127.0.0.1:1".parse().unwrap());
        b[12] = 1; // junk after an IPv4 address
        assert_eq!(decode_addr(&b), None);
    }

    #[test]
    fn layout_places_rings_after_the_control_page() {
        let l = Layout::new(12, 13).unwrap();
        assert_eq!(l.c2s_data(), 4096);
        assert_eq!(l.s2c_data(), 8192);
        assert_eq!(l.region_len(), 4096 + 4096 + 8192);
        assert!(Layout::symmetric(MAX_ORDER + 1).is_none());
    }
}
