//! `Header::decode`, the server's parser for the ring header the client wrote into shared
//! memory: never panics, and the layout it accepts is bounded (no huge mapping from a header).
#![no_main]

use xway_tokio::fuzzing::{header_decode, RING_HEADER_LEN};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut header = [0u8; RING_HEADER_LEN];
    let n = data.len().min(RING_HEADER_LEN);
    header[..n].copy_from_slice(&data[..n]);
    if let Some(len) = header_decode(&header) {
        assert_eq!(&header[..8], b"XWAYRING");
        assert!((4096 + 2 * 4096..=4096 + 2 * (16 << 20)).contains(&len));
    }
});
