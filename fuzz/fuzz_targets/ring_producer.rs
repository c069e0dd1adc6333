//! The ring producer (and the honest consumer beside it) while a hostile consumer overwrites
//! `cons`, `cons_flags`, `notify`, the setup state and its activity word between operations.
//! Every result is checked against the model in `ring_model/`.
#![no_main]

#[path = "../ring_model/mod.rs"]
mod ring_model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ring_model::run(data, ring_model::Hostile::Consumer);
});
