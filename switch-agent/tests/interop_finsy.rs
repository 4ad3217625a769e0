//! Interop with finsy 0.30 (PyPI), a second third-party P4Runtime client,
//! against the real `switch-agent` binary: `tests/interop/finsy_interop.py`
//! connects over gRPC, arbitrates, pushes p4/talaria.p4info.txtpb, inserts
//! (three updates in one Write), reads back, modifies, provokes write
//! errors that must arrive as P4Runtime per-update details (a duplicate
//! INSERT → ALREADY_EXISTS at its index while its sibling lands, a MODIFY
//! of a missing key → NOT_FOUND), and deletes everything through a wildcard
//! read of every table.
//!
//! As root the agent runs on the eBPF data plane (no ports, a private pin
//! directory, detached afterwards, panics included); otherwise on the
//! in-memory store. Afterwards the agent's `/metrics` must count exactly
//! the updates the script made.
//!
//! Skips (with a message) only when the venv is missing and cannot be
//! created, e.g. with no network, and `CI` is unset.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{interop_python, workspace};
use talaria_preflight::{under_ci, LOADS_BPF};
use talaria_switch::entry::{Table, Target};
use talaria_switch_dataplane::Dataplane;

/// A loopback port that was free a moment ago.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The switch-agent process and what it leaves behind; stopped and
/// cleaned up on drop.
struct Agent {
    child: Child,
    grpc: SocketAddr,
    metrics: SocketAddr,
    /// The eBPF pin directory, when the agent runs on the eBPF data plane.
    pin_dir: Option<PathBuf>,
    _state: tempfile::TempDir,
}

impl Agent {
    fn start(ebpf: bool) -> Self {
        let (grpc, metrics) = (free_port(), free_port());
        let state = tempfile::tempdir().unwrap();
        let pin_dir = ebpf.then(|| {
            PathBuf::from(format!(
                "/sys/fs/bpf/talaria-finsy-test-{}",
                std::process::id()
            ))
        });
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switch-agent"));
        cmd.arg("--grpc-addr")
            .arg(grpc.to_string())
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .arg("--state-dir")
            .arg(state.path())
            .arg("--log")
            .arg("warn")
            .stdin(Stdio::null());
        match &pin_dir {
            Some(dir) => cmd.arg("--dataplane").arg("ebpf").arg("--pin-dir").arg(dir),
            None => cmd.arg("--dataplane").arg("memory"),
        };
        let child = cmd.spawn().expect("starting switch-agent");
        let mut agent = Self {
            child,
            grpc,
            metrics,
            pin_dir,
            _state: state,
        };
        // Up to 30 s for the server to listen (loading the eBPF program
        // takes a moment on a busy machine).
        for _ in 0..600 {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!("switch-agent exited before listening: {status}");
            }
            if TcpStream::connect(grpc).is_ok() {
                return agent;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("switch-agent did not listen on {grpc} within 30 s");
    }

    /// GET /metrics.
    fn metrics(&self) -> String {
        let mut s = TcpStream::connect(self.metrics).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// SIGTERM, then up to 5 s for a clean exit (SIGKILL after that).
    fn stop(&mut self) {
        if self.child.try_wait().unwrap().is_some() {
            return;
        }
        // SAFETY: signals our own child, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.pin_dir {
            // The agent leaves its maps pinned on exit; take them over and
            // remove them.
            match Dataplane::open(talaria_switch_dataplane::Config {
                pin_dir: dir.clone(),
                ports: Default::default(),
            }) {
                Ok(dp) => {
                    let _ = dp.detach();
                }
                Err(_) => {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
    }
}

#[test]
fn finsy_pushes_the_pipeline_manages_entries_and_decodes_write_errors() {
    let Some(py) = interop_python("finsy") else {
        return;
    };
    // Without root the gRPC side still runs, on the in-memory store; CI
    // must run the eBPF data plane.
    let ebpf = match talaria_preflight::ensure(&LOADS_BPF) {
        Ok(()) => true,
        Err(e) => {
            assert!(!under_ci(), "CI=true and {e}");
            eprintln!("{e}: running switch-agent on the in-memory data plane");
            false
        }
    };
    let mut agent = Agent::start(ebpf);
    let dir = tempfile::tempdir().unwrap();
    let device_config = dir.path().join("talaria.json");
    std::fs::write(&device_config, b"{\"program\": \"talaria\"}").unwrap();

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/finsy_interop.py");
    let mut child = Command::new(&py)
        .arg(&script)
        .arg(agent.grpc.to_string())
        .arg(workspace().join("p4/talaria.p4info.txtpb"))
        .arg(&device_config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting python");
    // Bounded wait: 60 s, then the script is killed (by its pid, via Child).
    let mut status = None;
    for _ in 0..600 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        status.is_some(),
        "finsy hung for 60 s\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        out.status.success(),
        "finsy failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for step in [
        "OK connected as primary and pushed the pipeline",
        "OK inserted 3 entries in one write",
        "OK read back 2 backends and 1 route",
        "OK modified",
        "OK duplicate insert -> ALREADY_EXISTS",
        "OK the other update of that batch was applied",
        "OK modify of a missing entry -> NOT_FOUND",
        "OK deleted one entry",
        "OK deleted everything",
        "OK done",
    ] {
        assert!(
            stdout.contains(step),
            "missing {step:?} in:\n{stdout}\nstderr:\n{stderr}"
        );
    }

    // The agent counted exactly the script's updates: inserts 7, 8, route,
    // 9 and the duplicate 8; modify 7 and the missing 99; deletes 7, then
    // 8, 9 and the route.
    let metrics = agent.metrics();
    for line in [
        "talaria_switch_pipeline_configured 1",
        "talaria_switch_p4rt_updates_total{type=\"insert\",result=\"ok\"} 4",
        "talaria_switch_p4rt_updates_total{type=\"insert\",result=\"error\"} 1",
        "talaria_switch_p4rt_updates_total{type=\"modify\",result=\"ok\"} 1",
        "talaria_switch_p4rt_updates_total{type=\"modify\",result=\"error\"} 1",
        "talaria_switch_p4rt_updates_total{type=\"delete\",result=\"ok\"} 4",
        "talaria_switch_p4rt_updates_total{type=\"delete\",result=\"error\"} 0",
        "talaria_switch_table_entries{table=\"backend\"} 0",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }

    // On eBPF, the kernel maps the agent left pinned are empty too.
    agent.stop();
    if let Some(pin_dir) = agent.pin_dir.clone() {
        let dp = Dataplane::open(talaria_switch_dataplane::Config {
            pin_dir: pin_dir.clone(),
            ports: Default::default(),
        })
        .unwrap();
        for table in [Table::Backend, Table::Ipv4Route] {
            assert_eq!(dp.entries(table).unwrap(), vec![], "{table:?}");
        }
        dp.detach().unwrap();
        agent.pin_dir = None;
        assert!(!pin_dir.exists());
    }
}
