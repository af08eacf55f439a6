//! Tells the module whether this build applied a profile-guided optimisation profile
//! (`lpu._core.build_pgo()`), and rebuilds it when that profile changes (cargo sees the
//! flag naming the file, not the file: see tools/pgo).

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let mut pgo = false;
    for profile in flags
        .split('\x1f')
        .filter_map(|f| f.split("profile-use=").nth(1))
    {
        println!("cargo:rerun-if-changed={profile}");
        pgo = true;
    }
    println!("cargo:rustc-env=LPU_BUILD_PGO={}", u8::from(pgo));
}
