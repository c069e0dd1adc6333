//! The xen provider's offer parser over arbitrary XenStore values: never panics, and whatever
//! it accepts has exactly one grant ref per page of its layout and round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xway_tokio::fuzzing::xen_offer_parse(data);
});
