//! A fresh machine where bpffs is not mounted on /sys/fs/bpf (a VM without
//! systemd): in a private mount namespace with bpffs unmounted, `talaria-lab
//! doctor` names the missing mount and its fix, and `talaria-lab run` brings
//! up a talaria-mode lab anyway (it mounts bpffs itself, before creating its
//! pin directory), serves traffic and tears the lab down.
//!
//! Root only; the unmount is private to the child's mount namespace.

use std::process::Command;
use talaria_lab::netns::LAB_NEEDS;
use talaria_lab::switch::SwitchKind;
use talaria_preflight::commands;

#[test]
fn a_lab_comes_up_where_bpffs_is_not_mounted() {
    let mut needs = LAB_NEEDS.to_vec();
    needs.push(commands::UNSHARE);
    if !talaria_preflight::test_ready(&needs) {
        return;
    }
    let missing = talaria_lab::components::talaria_missing(&SwitchKind::SwitchAgent);
    if !missing.is_empty() && !talaria_preflight::skip(&format!("components missing: {missing:?}"))
    {
        return;
    }
    let lab = env!("CARGO_BIN_EXE_talaria-lab");
    let topology = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/small.yaml");
    // Unmount every bpffs stacked on /sys/fs/bpf (bounded), prove it is
    // gone, then run the two commands a new user would.
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8; do umount /sys/fs/bpf 2>/dev/null || break; done
         [ \"$(stat -f -c %T /sys/fs/bpf)\" != bpf_fs ] || {{ echo 'bpffs still mounted'; exit 97; }}
         {lab} doctor; echo \"doctor exit $?\"
         exec {lab} run --mode talaria --proto udp --seconds 1 --concurrency 2 --topology {topology}"
    );
    let out = Command::new("timeout")
        .args([
            "240",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ])
        .env("TALARIA_LAB_STATE_DIR", "/run/talaria-lab-test")
        .env("TALARIA_LAB_EXE", lab)
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("MISSING  bpffs on /sys/fs/bpf")
                && l.contains("fix: run as root and talaria mounts it")),
        "doctor did not report bpffs:\n{stdout}"
    );
    assert!(stdout.contains("doctor exit 1"), "{stdout}");
    let json = &stdout[stdout.find('{').expect("run printed its result")..];
    let row: serde_json::Value = serde_json::from_str(json).expect("result JSON");
    assert!(row["requests"].as_u64().unwrap() > 0, "{row}");
    assert_eq!(row["errors"].as_u64(), Some(0), "{row}");
}
