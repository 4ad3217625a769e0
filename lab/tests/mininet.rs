//! Root-only: `mininet/talaria_topo.py` with Debian's mininet, over
//! switch-agent and over bmv2 (routes written by the controller, which
//! also pushes bmv2's pipeline), and over a Linux bridge. The script builds
//! its own mininet with per-run names and removes it; it exits non-zero
//! unless every request of its load succeeded.
//!
//! Skipped (with one line) when not root, or when mininet, the talaria
//! binaries or (bmv2) p4c and `simple_switch_grpc` are missing, except
//! under `CI=true`, where that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use talaria_lab::switch::SwitchKind;
use talaria_preflight::{commands, require, Need, P4Toolchain};

const PYTHON: &str = "/usr/bin/python3";

/// Whether mininet's Python module and the components `switch` needs are
/// there (a skip, or a failure under CI, when not).
fn ready(switch: &SwitchKind) -> bool {
    let mininet = Command::new(PYTHON)
        .args(["-c", "import mininet.net"])
        .status()
        .is_ok_and(|s| s.success());
    let missing = talaria_lab::components::fabric_missing(switch);
    if mininet && missing.is_empty() {
        return true;
    }
    talaria_preflight::skip(&format!(
        "mininet importable: {mininet}; components missing: {missing:?}"
    ))
}

fn run(switch: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mininet/talaria_topo.py");
    // Where `ready` found the components: $TALARIA_BIN_DIR, else next to
    // this build's talaria-lab.
    let bin_dir = std::env::var_os("TALARIA_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = Path::new(env!("CARGO_BIN_EXE_talaria-lab"));
            exe.parent().unwrap().to_path_buf()
        });
    let mut cmd = Command::new("timeout");
    cmd.args(["300", PYTHON])
        .arg(&script)
        .args(["--switch", switch, "--hosts", "3", "--seconds", "1"])
        .env("TALARIA_BIN_DIR", &bin_dir);
    // The script looks where talaria_preflight looks; hand it the folder
    // the guard found, so both use the same toolchain.
    if let Some(folder) = P4Toolchain::find().ok().and_then(|t| t.folder) {
        cmd.env("TALARIA_P4_TOOLCHAIN", folder);
    }
    let out = cmd.output().expect("run the mininet script");
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
        .unwrap_or_else(|| panic!("{switch}: no JSON result (skipped?):\n{stdout}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["switch"], switch, "{v}");
    assert!(v["requests"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    // Both servers answered: the switch forwarded to every host.
    assert_eq!(v["backends"].as_object().unwrap().len(), 2, "{v}");
}

#[test]
fn mininet_over_switch_agent() {
    require!([Need::Root, commands::MININET]);
    if ready(&SwitchKind::SwitchAgent) {
        run("switch-agent");
    }
}

#[test]
fn mininet_over_bmv2() {
    require!([
        Need::Root,
        commands::MININET,
        commands::ETHTOOL,
        Need::P4Toolchain
    ]);
    if ready(&SwitchKind::bmv2()) {
        run("bmv2");
    }
}

#[test]
fn mininet_over_linux_bridge() {
    require!([Need::Root, commands::MININET]);
    if ready(&SwitchKind::SwitchAgent) {
        run("lxbr");
    }
}
