//! Paths shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

/// `p4/tiny/tiny.p4info.txtpb`, the hand-kept P4Info of `p4/tiny/tiny.p4`.
pub fn tiny_p4info_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../p4/tiny/tiny.p4info.txtpb")
}

/// `tests/data/full.p4info.txtpb`: a P4Info with every field set.
pub fn full_p4info_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/full.p4info.txtpb")
}

pub fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
