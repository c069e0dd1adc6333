//! `decode_addr`, shared by the offer and header parsers: never panics, rejects every length
//! but 20, and round-trips through `encode_addr` (modulo IPv4-mapped canonicalisation).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(addr) = xway_tokio::fuzzing::decode_addr(data) {
        assert_eq!(data.len(), 20);
        assert!(matches!(data[0], 4 | 6));
        assert_eq!(data[1], 0);
        assert_eq!(addr.port(), u16::from_be_bytes([data[2], data[3]]));
    }
});
