//! What the lab's root-only tests share.
#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use talaria_lab::netns::{State, LAB_NEEDS};
use talaria_lab::switch::SwitchKind;

/// What a lab on `switch` needs from the machine.
pub fn lab_needs(switch: &SwitchKind) -> Vec<talaria_preflight::Need> {
    let mut v = LAB_NEEDS.to_vec();
    v.extend(switch.needs());
    v
}

/// Keeps test labs apart from interactive ones; their pods run this
/// build's talaria-lab.
pub fn use_test_labs() {
    std::env::set_var("TALARIA_LAB_STATE_DIR", "/run/talaria-lab-test");
    std::env::set_var("TALARIA_LAB_EXE", env!("CARGO_BIN_EXE_talaria-lab"));
}

/// [`use_test_labs`], then whether talaria's components for `switch` are
/// built (false after one skip line; under `CI=true` a failure instead).
pub fn talaria_ready(switch: &SwitchKind) -> bool {
    use_test_labs();
    let missing = talaria_lab::components::talaria_missing(switch);
    missing.is_empty() || talaria_preflight::skip(&format!("components missing: {missing:?}"))
}

/// Panics unless nothing of lab `prefix` is left: namespaces, state file,
/// pins.
pub fn assert_gone(prefix: &str) {
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!State::path(prefix).exists(), "state file left behind");
    let pins = Path::new("/sys/fs/bpf/talaria-lab").join(prefix);
    assert!(!pins.exists(), "pins left behind in {}", pins.display());
}
