//! cargo-fuzz target: see lpu_core::fuzz::run_program.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lpu_core::fuzz::run_program(data));
