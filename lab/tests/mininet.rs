//! Root-only: `mininet/talaria_topo.py` with Debian's mininet, over
//! switch-agent (routes written by the controller) and over a Linux bridge.
//! The script builds its own mininet with per-run names and removes it;
//! it exits non-zero unless every request of its load succeeded.
//!
//! Skipped (with a message) when not root, or when mininet or the talaria
//! binaries are missing, except under `CI=true`, where that is a failure.

use std::path::Path;
use std::process::Command;
use talaria_preflight::{commands, Need};

const PYTHON: &str = "/usr/bin/python3";

fn ready() -> bool {
    if !talaria_preflight::test_ready(&[Need::Root, commands::MININET]) {
        return false;
    }
    let mininet = Command::new(PYTHON)
        .args(["-c", "import mininet.net"])
        .status()
        .is_ok_and(|s| s.success());
    let missing = talaria_lab::components::fabric_missing();
    if mininet && missing.is_empty() {
        return true;
    }
    talaria_preflight::skip(&format!(
        "mininet importable: {mininet}; components missing: {missing:?}"
    ))
}

fn run(switch: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mininet/talaria_topo.py");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_talaria-lab"))
        .parent()
        .unwrap();
    let out = Command::new("timeout")
        .args(["300", PYTHON])
        .arg(&script)
        .args(["--switch", switch, "--hosts", "3", "--seconds", "1"])
        .env("TALARIA_BIN_DIR", bin_dir)
        .output()
        .expect("run the mininet script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{switch}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON result");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(v["requests"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    // Both servers answered: the switch forwarded to every host.
    assert_eq!(v["backends"].as_object().unwrap().len(), 2, "{v}");
}

#[test]
fn mininet_over_switch_agent() {
    if ready() {
        run("talaria");
    }
}

#[test]
fn mininet_over_linux_bridge() {
    if ready() {
        run("lxbr");
    }
}
