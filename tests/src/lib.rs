//! Helpers for talaria's cross-crate tests (the tests live in `tests/`).
//!
//! - [`p4src`]: a small scanner of the P4 sources in `p4/`.
//! - [`consistency`]: the P4 source ↔ P4Info ↔ Rust constants check.

pub mod consistency;
pub mod p4src;

use std::path::PathBuf;

/// The repository's `p4/` directory.
pub fn p4_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("p4")
}
