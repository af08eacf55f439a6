//! Tells the module whether this build applied a profile-guided optimisation profile
//! (`lpu._core.build_pgo()`; see tools/pgo).

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let pgo = flags.split('\x1f').any(|f| f.contains("profile-use="));
    println!("cargo:rustc-env=LPU_BUILD_PGO={}", u8::from(pgo));
}
