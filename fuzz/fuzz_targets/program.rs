//! cargo-fuzz target: see lpu_core::fuzz::load_program.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lpu_core::fuzz::load_program(data));
