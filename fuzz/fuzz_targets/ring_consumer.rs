//! The ring consumer (and the honest producer beside it) while a hostile producer overwrites
//! `prod`, `prod_flags`, `notify`, the setup state, its activity word and data bytes between
//! operations. Every result is checked against the model in `ring_model/`.
#![no_main]

#[path = "../ring_model/mod.rs"]
mod ring_model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ring_model::run(data, ring_model::Hostile::Producer);
});
