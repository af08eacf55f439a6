//! Rebuilds the crate when the profile-guided optimisation profile it is built with
//! changes (cargo sees the flag naming the file, not the file: see tools/pgo).

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    for profile in flags
        .split('\x1f')
        .filter_map(|f| f.split("profile-use=").nth(1))
    {
        println!("cargo:rerun-if-changed={profile}");
    }
}
