//! Thin wrappers over crate internals for the fuzz targets in `fuzz/` (compiled only with
//! `--cfg fuzzing`, which `cargo fuzz` sets). Not part of the API: unstable, undocumented in
//! the crate docs, and absent from every normal build.
//!
//! The wrappers add nothing to the code under test: each forwards to the real parser or ring
//! endpoint and flattens its result into plain values the targets can check.

use std::sync::atomic::Ordering::Relaxed;

use crate::ring::layout::{
    self, Layout, C2S_CONTROL, CLIENT_ACTIVITY, CONS, CONS_FLAGS, HEADER_LEN, NOTIFY, PROD,
    PROD_FLAGS, SERVER_ACTIVITY, STATE_OFFSET,
};
use crate::ring::{Consumer, HeapMemory, PeerReader, Producer, Read, Region};
use crate::setup::wire;

/// Length of an offer message.
pub const OFFER_LEN: usize = wire::OFFER_LEN;
/// Length of a verdict message.
pub const VERDICT_LEN: usize = wire::VERDICT_LEN;

/// `Offer::decode`; on success, the canonical re-encoding of what was decoded.
pub fn offer_decode(bytes: &[u8]) -> Option<[u8; OFFER_LEN]> {
    wire::Offer::decode(bytes).ok().map(|o| {
        let again = wire::Offer::decode(&o.encode()).expect("a re-encoded offer decodes");
        assert_eq!(again.nonce, o.nonce);
        assert_eq!(again.layout, o.layout);
        assert_eq!(again.client, layout::canonical(o.client));
        assert_eq!(again.server, layout::canonical(o.server));
        assert_eq!((again.ring, again.reused), (o.ring, o.reused));
        o.encode()
    })
}

/// What `classify` made of peeked bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// A complete accept verdict for the nonce.
    Accept,
    /// A complete decline verdict for the nonce, with its reason code.
    Decline,
    /// A prefix of a verdict for the nonce.
    Partial,
    /// Not a verdict for the nonce.
    NotAVerdict,
}

/// The verdict classifier (`setup::wire::classify`). A complete verdict is re-encoded and must
/// classify the same way.
///
/// # Panics
///
/// If `peeked` is empty: the caller (`await_verdict`) only classifies non-empty peeks, and the
/// target respects that precondition.
pub fn classify(peeked: &[u8], nonce: &[u8; 16]) -> Classified {
    match wire::classify(peeked, nonce) {
        wire::Peeked::Verdict(v) => {
            assert_eq!(
                wire::classify(&v.encode(nonce), nonce),
                wire::Peeked::Verdict(v)
            );
            assert!(peeked.len() >= VERDICT_LEN);
            match v {
                wire::Verdict::Accept => Classified::Accept,
                wire::Verdict::Decline(_) => Classified::Decline,
            }
        }
        wire::Peeked::Partial => {
            assert!(peeked.len() < VERDICT_LEN);
            Classified::Partial
        }
        wire::Peeked::NotAVerdict => Classified::NotAVerdict,
    }
}

/// Encodes a verdict for the nonce: `accept` or a decline with `reason`.
pub fn encode_verdict(accept: bool, reason: u32, nonce: &[u8; 16]) -> [u8; VERDICT_LEN] {
    let v = if accept {
        wire::Verdict::Accept
    } else {
        wire::Verdict::Decline(match reason {
            1 => wire::DeclineReason::InvalidRegion,
            2 => wire::DeclineReason::Resources,
            c => wire::DeclineReason::Other(c),
        })
    };
    v.encode(nonce)
}

/// Length of the ring header.
pub const RING_HEADER_LEN: usize = HEADER_LEN;

/// `ring::layout::Header::decode`; on success, the region length of the decoded layout (after
/// checking that the header re-encodes to something that decodes identically).
pub fn header_decode(bytes: &[u8; HEADER_LEN]) -> Option<usize> {
    let h = layout::Header::decode(bytes).ok()?;
    let again = layout::Header::decode(&h.encode()).expect("a re-encoded header decodes");
    assert_eq!(again.layout, h.layout);
    assert_eq!(again.nonce, h.nonce);
    assert_eq!(again.client, layout::canonical(h.client));
    assert_eq!(again.server, layout::canonical(h.server));
    let len = h.layout.region_len();
    assert!(len <= layout::CONTROL_LEN + 2 * (1 << layout::MAX_ORDER));
    Some(len)
}

/// The xen provider's offer parser (a value another guest wrote in XenStore); on success, the
/// number of grant refs, checked to be the layout's page count and to survive a re-encoding.
pub fn xen_offer_parse(bytes: &[u8]) -> Option<usize> {
    use crate::provider::xen::rendezvous::XenOffer;
    let o = XenOffer::parse(bytes).ok()?;
    assert_eq!(o.refs.len() * 4096, o.layout.region_len());
    assert_eq!(XenOffer::parse(o.encode().as_bytes()).as_ref(), Ok(&o));
    Some(o.refs.len())
}

/// `ring::layout::decode_addr`, checked against `encode_addr`.
pub fn decode_addr(bytes: &[u8]) -> Option<std::net::SocketAddr> {
    let a = layout::decode_addr(bytes)?;
    assert_eq!(bytes.len(), 20);
    assert_eq!(
        layout::decode_addr(&layout::encode_addr(a)),
        Some(layout::canonical(a))
    );
    Some(a)
}

/// A peer-writable word of the ring pair's shared control area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Producer index of the client-to-server ring.
    Prod,
    /// Producer flags.
    ProdFlags,
    /// Consumer index.
    Cons,
    /// Consumer flags.
    ConsFlags,
    /// Notify requests.
    Notify,
    /// Setup state.
    State,
    /// Client activity hint.
    ClientActivity,
    /// Server activity hint.
    ServerActivity,
}

impl Field {
    /// All fields, for indexing by a fuzz byte.
    pub const ALL: [Field; 8] = [
        Field::Prod,
        Field::ProdFlags,
        Field::Cons,
        Field::ConsFlags,
        Field::Notify,
        Field::State,
        Field::ClientActivity,
        Field::ServerActivity,
    ];

    fn offset(self) -> usize {
        match self {
            Field::Prod => C2S_CONTROL + PROD,
            Field::ProdFlags => C2S_CONTROL + PROD_FLAGS,
            Field::Cons => C2S_CONTROL + CONS,
            Field::ConsFlags => C2S_CONTROL + CONS_FLAGS,
            Field::Notify => C2S_CONTROL + NOTIFY,
            Field::State => STATE_OFFSET,
            Field::ClientActivity => CLIENT_ACTIVITY,
            Field::ServerActivity => SERVER_ACTIVITY,
        }
    }
}

/// Outcome of a ring read or peek, flattened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Bytes copied into the buffer, and whether the peer asked to be woken.
    Data(usize, bool),
    /// Nothing to read.
    Empty,
    /// End of stream.
    Closed,
    /// The producer aborted.
    Aborted,
    /// The ring protocol was violated (`InvalidData` on a stream).
    Violation,
}

fn flatten(r: Result<Read, crate::ring::RingError>) -> ReadOutcome {
    match r {
        Ok(Read::Data { bytes, wake_peer }) => ReadOutcome::Data(bytes, wake_peer),
        Ok(Read::Empty) => ReadOutcome::Empty,
        Ok(Read::Closed) => ReadOutcome::Closed,
        Ok(Read::Aborted) => ReadOutcome::Aborted,
        Err(_) => ReadOutcome::Violation,
    }
}

/// One direction of a ring over heap memory: the real [`Producer`] and [`Consumer`], plus
/// [`RingPair::poke`] for the hostile peer's writes.
#[derive(Debug)]
pub struct RingPair {
    region: Region,
    tx: Producer,
    rx: Consumer,
    size: usize,
}

impl RingPair {
    /// A client-to-server ring of `1 << order` bytes (`order` is clamped to 12..=16).
    pub fn new(order: u32) -> RingPair {
        let order = order.clamp(layout::MIN_ORDER, 16);
        let layout = Layout::symmetric(order).expect("valid order");
        let region = Region::new(HeapMemory::new(layout.region_len()));
        let tx = Producer::new(region.clone(), C2S_CONTROL, layout.c2s_data(), order);
        let rx = Consumer::new(region.clone(), C2S_CONTROL, layout.c2s_data(), order);
        RingPair {
            region,
            tx,
            rx,
            size: 1 << order,
        }
    }

    /// Ring size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The hostile peer writes `value` into `field`.
    pub fn poke(&self, field: Field, value: u32) {
        self.region.store(field.offset(), value, Relaxed);
    }

    /// The hostile peer writes raw bytes into the ring's data area at `offset` (modulo size).
    pub fn scribble(&self, offset: usize, bytes: &[u8]) {
        let off = offset % self.size;
        let n = bytes.len().min(self.size - off);
        self.region
            .write_bytes(layout::CONTROL_LEN + off, &bytes[..n]);
    }

    /// Reads a control word as the peer would see it.
    pub fn peek_word(&self, field: Field) -> u32 {
        self.region.load(field.offset(), Relaxed)
    }

    /// `Producer::write`; `Err(())` on a protocol violation, else (bytes, wake_peer).
    #[allow(clippy::result_unit_err)]
    pub fn write(&mut self, bufs: &[&[u8]]) -> Result<(usize, bool), ()> {
        if self.tx.is_closed() {
            return Ok((0, false));
        }
        self.tx
            .write(bufs)
            .map(|w| (w.bytes, w.wake_peer))
            .map_err(|_| ())
    }

    /// `Producer::free_space`.
    #[allow(clippy::result_unit_err)]
    pub fn free_space(&self) -> Result<usize, ()> {
        self.tx.free_space().map_err(|_| ())
    }

    /// `Producer::prepare_wait`.
    #[allow(clippy::result_unit_err)]
    pub fn producer_prepare_wait(&self) -> Result<bool, ()> {
        self.tx.prepare_wait().map_err(|_| ())
    }

    /// `Producer::reader`: 0 open, 1 gone, 2 aborted.
    pub fn reader(&self) -> u8 {
        match self.tx.reader() {
            PeerReader::Open => 0,
            PeerReader::Gone => 1,
            PeerReader::Aborted => 2,
        }
    }

    /// `Producer::close`.
    pub fn close(&mut self) -> bool {
        self.tx.close()
    }

    /// `Producer::abort`.
    pub fn producer_abort(&mut self) -> bool {
        self.tx.abort()
    }

    /// `Consumer::read_uninit` into `dst`.
    pub fn read(&mut self, dst: &mut [u8]) -> ReadOutcome {
        flatten(self.rx.read_uninit(crate::ring::as_uninit(dst)))
    }

    /// `Consumer::peek`.
    pub fn peek(&self, dst: &mut [u8]) -> ReadOutcome {
        flatten(self.rx.peek(dst))
    }

    /// `Consumer::is_ready`.
    #[allow(clippy::result_unit_err)]
    pub fn is_ready(&self) -> Result<bool, ()> {
        self.rx.is_ready().map_err(|_| ())
    }

    /// `Consumer::prepare_wait`.
    #[allow(clippy::result_unit_err)]
    pub fn consumer_prepare_wait(&self) -> Result<bool, ()> {
        self.rx.prepare_wait().map_err(|_| ())
    }

    /// `Consumer::close`.
    pub fn consumer_close(&mut self) -> bool {
        self.rx.close()
    }

    /// `Consumer::abort`.
    pub fn consumer_abort(&mut self) -> bool {
        self.rx.abort()
    }
}
