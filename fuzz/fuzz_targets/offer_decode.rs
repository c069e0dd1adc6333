//! `Offer::decode`, the listener's parser for what arrives on its rendezvous socket from any
//! local process: never panics, and whatever it accepts re-encodes canonically.
#![no_main]

use xway_tokio::fuzzing::{offer_decode, OFFER_LEN};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(encoded) = offer_decode(data) {
        assert_eq!(data.len(), OFFER_LEN);
        // Accepted offers have the fixed magic, version and zero reserved bytes.
        assert_eq!(&data[..16], &encoded[..16]);
        assert_eq!(&data[72..], &encoded[72..]);
    }
});
