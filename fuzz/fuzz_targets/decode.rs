//! cargo-fuzz target: see lpu_core::fuzz::decode_words.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lpu_core::fuzz::decode_words(data));
