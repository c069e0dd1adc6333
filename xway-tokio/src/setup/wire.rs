//! The two setup messages, as bytes: the client's offer and the server's verdict.
//!
//! Both are fixed-size and decoded from private copies by pure functions (fuzzed in
//! `fuzz/`). Integers are little-endian.
//!
//! ```text
//! Offer (client -> listener, over the provider's rendezvous), 96 bytes
//!   0   8  magic "XWAYOFR1"
//!   8   4  protocol version (1)
//!   12  4  reserved (0)
//!   16  16 nonce
//!   32  20 client address (ring::layout::encode_addr)
//!   52  20 server address
//!   72  4  client->server ring order
//!   76  4  server->client ring order
//!   80  8  ring id on this rendezvous connection, or 0 (local provider: the listener may keep
//!          the region once the connection ends, for the client to offer again)
//!   88  4  1: the offer uses the region of that id again, kept by the listener, and carries no
//!          descriptors; 0: its region and doorbell come with it (SCM_RIGHTS)
//!   92  4  reserved (0)
//!
//! Verdict (server -> client, on the TCP connection itself), 32 bytes
//!   0   8  magic "XWAYVRD1"
//!   8   16 nonce of the offer it answers
//!   24  4  code: 1 accept, 2 decline
//!   28  4  decline reason (DeclineReason), 0 on accept
//! ```
//!
//! The verdict travels on the TCP connection because that connection authenticates it: only
//! the process that accepted this very connection can write into it, whoever else may have
//! seen the offer. It is written only to a client that sent an offer for this exact 4-tuple,
//! so a plain TCP peer never receives it (invariant I1).

use std::net::SocketAddr;
use std::num::NonZeroU64;

use crate::ring::layout::{decode_addr, encode_addr, Layout};

pub(crate) const OFFER_LEN: usize = 96;
pub(crate) const VERDICT_LEN: usize = 32;
const OFFER_MAGIC: [u8; 8] = *b"XWAYOFR1";
pub(crate) const VERDICT_MAGIC: [u8; 8] = *b"XWAYVRD1";
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// A client's proposal to carry one TCP connection over a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offer {
    pub(crate) nonce: [u8; 16],
    pub(crate) client: SocketAddr,
    pub(crate) server: SocketAddr,
    pub(crate) layout: Layout,
    /// The region's id on the rendezvous connection: the listener keeps the region under it
    /// for reuse. `None`: the region is used once.
    pub(crate) ring: Option<NonZeroU64>,
    /// The offer uses the region of id `ring` again: no descriptors come with it.
    pub(crate) reused: bool,
}

/// Why an offer could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OfferError {
    Length(usize),
    Magic,
    Version(u32),
    Reserved,
    Address,
    Order,
    /// It reuses a region without naming one.
    Reuse,
}

impl std::fmt::Display for OfferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OfferError::Length(n) => write!(f, "offer has {n} bytes, expected {OFFER_LEN}"),
            OfferError::Magic => f.write_str("offer has the wrong magic"),
            OfferError::Version(v) => write!(f, "offer uses protocol version {v}"),
            OfferError::Reserved => f.write_str("offer has non-zero reserved bytes"),
            OfferError::Address => f.write_str("offer has a malformed address"),
            OfferError::Order => f.write_str("offer has a ring order out of range"),
            OfferError::Reuse => f.write_str("offer reuses a ring without naming one"),
        }
    }
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_le(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl Offer {
    pub(crate) fn encode(&self) -> [u8; OFFER_LEN] {
        let mut b = [0u8; OFFER_LEN];
        b[0..8].copy_from_slice(&OFFER_MAGIC);
        b[8..12].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        b[16..32].copy_from_slice(&self.nonce);
        b[32..52].copy_from_slice(&encode_addr(self.client));
        b[52..72].copy_from_slice(&encode_addr(self.server));
        b[72..76].copy_from_slice(&self.layout.c2s_order.to_le_bytes());
        b[76..80].copy_from_slice(&self.layout.s2c_order.to_le_bytes());
        b[80..88].copy_from_slice(&self.ring.map_or(0, NonZeroU64::get).to_le_bytes());
        b[88..92].copy_from_slice(&u32::from(self.reused).to_le_bytes());
        b
    }

    /// How many descriptors come with this offer: none for a region used again, else the
    /// region and the server's doorbell end.
    pub(crate) fn descriptors(&self) -> usize {
        if self.reused {
            0
        } else {
            2
        }
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Offer, OfferError> {
        if b.len() != OFFER_LEN {
            return Err(OfferError::Length(b.len()));
        }
        if b[0..8] != OFFER_MAGIC {
            return Err(OfferError::Magic);
        }
        let version = u32_le(b, 8);
        if version != PROTOCOL_VERSION {
            return Err(OfferError::Version(version));
        }
        if b[12..16].iter().chain(&b[92..96]).any(|&x| x != 0) {
            return Err(OfferError::Reserved);
        }
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&b[16..32]);
        let client = decode_addr(&b[32..52]).ok_or(OfferError::Address)?;
        let server = decode_addr(&b[52..72]).ok_or(OfferError::Address)?;
        let layout = Layout::new(u32_le(b, 72), u32_le(b, 76)).ok_or(OfferError::Order)?;
        let ring = NonZeroU64::new(u64_le(b, 80));
        let reused = match u32_le(b, 88) {
            0 => false,
            1 if ring.is_some() => true,
            1 => return Err(OfferError::Reuse),
            _ => return Err(OfferError::Reserved),
        };
        Ok(Offer {
            nonce,
            client,
            server,
            layout,
            ring,
            reused,
        })
    }
}

/// Why a server declined an offer (carried in the verdict, shown in `transport()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeclineReason {
    /// The region or its doorbells failed validation.
    InvalidRegion,
    /// The server ran out of a resource (descriptors, memory, mappings).
    Resources,
    /// A reason this version does not know.
    Other(u32),
}

impl DeclineReason {
    fn code(self) -> u32 {
        match self {
            DeclineReason::InvalidRegion => 1,
            DeclineReason::Resources => 2,
            DeclineReason::Other(c) => c,
        }
    }

    fn from_code(c: u32) -> DeclineReason {
        match c {
            1 => DeclineReason::InvalidRegion,
            2 => DeclineReason::Resources,
            c => DeclineReason::Other(c),
        }
    }
}

impl std::fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeclineReason::InvalidRegion => f.write_str("the offered region failed validation"),
            DeclineReason::Resources => f.write_str("the server is out of resources for rings"),
            DeclineReason::Other(c) => write!(f, "reason code {c}"),
        }
    }
}

/// The server's answer to an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accept,
    Decline(DeclineReason),
}

impl Verdict {
    pub(crate) fn encode(self, nonce: &[u8; 16]) -> [u8; VERDICT_LEN] {
        let mut b = [0u8; VERDICT_LEN];
        b[0..8].copy_from_slice(&VERDICT_MAGIC);
        b[8..24].copy_from_slice(nonce);
        let (code, reason) = match self {
            Verdict::Accept => (1u32, 0u32),
            Verdict::Decline(r) => (2, r.code()),
        };
        b[24..28].copy_from_slice(&code.to_le_bytes());
        b[28..32].copy_from_slice(&reason.to_le_bytes());
        b
    }
}

/// What the first bytes on a client's TCP connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peeked {
    /// A complete verdict for our nonce.
    Verdict(Verdict),
    /// A prefix of a verdict for our nonce: wait for the rest.
    Partial,
    /// Not a verdict for us: the peer is speaking its own protocol.
    NotAVerdict,
}

/// Classifies bytes peeked from the start of the TCP stream, expecting a verdict for `nonce`.
pub(crate) fn classify(peeked: &[u8], nonce: &[u8; 16]) -> Peeked {
    let mut expected_prefix = [0u8; 24];
    expected_prefix[..8].copy_from_slice(&VERDICT_MAGIC);
    expected_prefix[8..].copy_from_slice(nonce);
    let n = peeked.len().min(24);
    if peeked[..n] != expected_prefix[..n] {
        return Peeked::NotAVerdict;
    }
    if peeked.len() < VERDICT_LEN {
        return Peeked::Partial;
    }
    match u32_le(peeked, 24) {
        1 if u32_le(peeked, 28) == 0 => Peeked::Verdict(Verdict::Accept),
        2 => Peeked::Verdict(Verdict::Decline(DeclineReason::from_code(u32_le(
            peeked, 28,
        )))),
        _ => Peeked::NotAVerdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offer() -> Offer {
        Offer {
            nonce: [9; 16],
            client: "127.0.0.1:5000".parse().unwrap(),
            server: "127.0.0.1:80".parse().unwrap(),
            layout: Layout::symmetric(16).unwrap(),
            ring: None,
            reused: false,
        }
    }

    #[test]
    fn offer_round_trips() {
        assert_eq!(Offer::decode(&offer().encode()), Ok(offer()));
        let reusing = Offer {
            ring: NonZeroU64::new(u64::MAX),
            reused: true,
            ..offer()
        };
        assert_eq!(Offer::decode(&reusing.encode()), Ok(reusing));
        assert_eq!(reusing.descriptors(), 0);
        assert_eq!(offer().descriptors(), 2);
    }

    #[test]
    fn offer_rejects_each_kind_of_damage() {
        let good = offer().encode();
        assert_eq!(Offer::decode(&good[..95]), Err(OfferError::Length(95)));
        let mut b = good;
        b[3] = 0;
        assert_eq!(Offer::decode(&b), Err(OfferError::Magic));
        let mut b = good;
        b[8] = 9;
        assert_eq!(Offer::decode(&b), Err(OfferError::Version(9)));
        let mut b = good;
        b[93] = 1;
        assert_eq!(Offer::decode(&b), Err(OfferError::Reserved));
        let mut b = good;
        b[88] = 2;
        assert_eq!(Offer::decode(&b), Err(OfferError::Reserved));
        let mut b = good;
        b[88] = 1;
        assert_eq!(Offer::decode(&b), Err(OfferError::Reuse), "reuses no ring");
        let mut b = good;
        b[32] = 5;
        assert_eq!(Offer::decode(&b), Err(OfferError::Address));
        let mut b = good;
        b[72] = 40;
        assert_eq!(Offer::decode(&b), Err(OfferError::Order));
    }

    #[test]
    fn verdicts_are_recognised_only_with_our_nonce() {
        let nonce = [3u8; 16];
        let accept = Verdict::Accept.encode(&nonce);
        assert_eq!(classify(&accept, &nonce), Peeked::Verdict(Verdict::Accept));
        assert_eq!(classify(&accept[..10], &nonce), Peeked::Partial);
        assert_eq!(classify(&accept, &[4u8; 16]), Peeked::NotAVerdict);
        let decline = Verdict::Decline(DeclineReason::Resources).encode(&nonce);
        assert_eq!(
            classify(&decline, &nonce),
            Peeked::Verdict(Verdict::Decline(DeclineReason::Resources))
        );
        assert_eq!(
            classify(b"HTTP/1.1 200 OK\r\n", &nonce),
            Peeked::NotAVerdict
        );
        assert_eq!(
            classify(b"X", &nonce),
            Peeked::Partial,
            "a lone X could start a verdict"
        );
    }

    proptest! {
        #[test]
        fn offer_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = Offer::decode(&bytes);
        }

        #[test]
        fn classify_never_panics_and_random_bytes_are_never_a_verdict(
            bytes in prop::collection::vec(any::<u8>(), 1..64), nonce in any::<[u8; 16]>()
        ) {
            prop_assume!(bytes[0] != b'X');
            prop_assert_eq!(classify(&bytes, &nonce), Peeked::NotAVerdict);
        }
    }
}
