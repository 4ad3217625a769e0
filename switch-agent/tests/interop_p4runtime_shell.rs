//! Interop with a real third-party P4Runtime client: p4runtime-shell 0.0.6
//! from PyPI, in its own venv (`scripts/python-tools.sh`), drives the
//! server through `tests/interop/p4runtime_shell_interop.py`: arbitration,
//! SetForwardingPipelineConfig from p4/talaria.p4info.txtpb,
//! GetForwardingPipelineConfig (P4INFO_AND_COOKIE), insert, read, modify,
//! a duplicate insert decoded from grpc-status-details-bin, delete.
//!
//! Skips (with a message) only when the venv is missing and cannot be
//! created, e.g. with no network, and `CI` is unset.

mod common;

use std::{path::PathBuf, time::Duration};

use common::{interop_python, workspace, Server};
use talaria_switch::entry::Table;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4runtime_shell_pushes_the_pipeline_and_manages_entries() {
    let Some(py) = interop_python("p4runtime-shell") else {
        return;
    };
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let device_config = dir.path().join("talaria.json");
    std::fs::write(&device_config, b"{\"__meta__\": {\"version\": [2, 23]}}").unwrap();

    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/p4runtime_shell_interop.py");
    let child = tokio::process::Command::new(&py)
        .arg(&script)
        .arg(server.addr.to_string())
        .arg(workspace().join("p4/talaria.p4info.txtpb"))
        .arg(&device_config)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("p4runtime-shell hung")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "p4runtime-shell failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for step in [
        "OK connected and pushed the pipeline",
        "OK api version 1.3.0",
        "OK inserted 3 entries",
        "OK read back 2 backends and 1 route",
        "OK modified",
        "OK duplicate insert -> ALREADY_EXISTS",
        "OK deleted everything",
        "OK done",
    ] {
        assert!(
            stdout.contains(step),
            "missing {step:?} in:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    // The pushed device config is stored as given.
    assert!(server.switch.configured());
    assert_eq!(server.target.len(Table::Backend), 0);
    server.stop().await;
}
