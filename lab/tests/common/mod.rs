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

/// Short-connection errors allowed per worker in a faults phase: one
/// failed request, i.e. less than one request timeout (1 s) of lost
/// forwarding. A data plane that stopped while a component was down would
/// cost each worker a timeout per second of it, and break the long
/// connections.
pub const SHORT_ERRORS_PER_WORKER: u64 = 1;

/// Panics unless every long connection of a faults run survived and every
/// phase kept the switch as it was: the component came back, short errors
/// bounded, every table identical (ids included) and never read empty, the
/// same service ids, and nothing rewritten by the controller.
pub fn assert_survived(r: &talaria_lab::faults::Report, short_workers: u32) {
    assert_eq!(
        r.long.broken, 0,
        "long connections broke: {:#?}\n{:#?}",
        r.breaks, r.phases
    );
    for p in &r.phases {
        let table = format!("{p:#?}");
        assert!(p.back, "{} did not come back: {table}", p.phase);
        assert!(p.short_requests > 0, "no short requests: {table}");
        assert!(
            p.short_errors <= SHORT_ERRORS_PER_WORKER * u64::from(short_workers),
            "short-connection errors above the bound: {table}"
        );
        // Same entries, same ids, before and after; never read empty.
        assert!(p.tables_identical, "tables changed: {table}");
        assert!(p.service_ids_same, "service ids changed: {table}");
        assert!(p.reads_ok > 0, "no table read in the phase: {table}");
        assert!(!p.saw_empty_table(), "a table was read empty: {table}");
        assert!(!p.entries_before.contains('?'), "{table}");
        // Back in sync without rewriting: the controller wrote nothing.
        assert_eq!(p.controller_writes, 0, "controller rewrote: {table}");
        assert_eq!(p.controller_write_errors, 0, "{table}");
    }
    assert!(r.all_survived());
}
