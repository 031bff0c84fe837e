//! Link settings for the shipped binary; it owns nothing else and must never
//! make a build depend on anything the machine may lack.
//!
//! On musl the binary is a static PIE (ASLR kept), so at every start musl's
//! `_dlstart_c` applies its relative relocations itself before `main`. As
//! RELA entries they are a 96 kB table, 24 pages read at each start; packed as
//! RELR (`-z pack-relative-relocs`, binutils 2.38 or later, applied by musl
//! 1.2.4 or later) the same relocations take about one kilobyte.
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let libc = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && libc == "musl" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
