//! The switch under test as a process in the switch namespace: bmv2's
//! `simple_switch_grpc` with no program (the test pushes p4c's build), or
//! the real `switch-agent` binary on its eBPF data plane.

use std::{
    fmt,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use talaria_p4rt::p4::config::v1::P4Info;
use talaria_preflight::{commands, Need, P4Toolchain, LOADS_BPF};

use crate::{io_err, netns::Topology, Error, Result, NSENTER};

/// Where the P4Runtime server listens inside the switch namespace: the
/// P4Runtime port, free in a namespace of our own.
pub const GRPC_ADDR: &str = "127.0.0.1:9559";

/// The device id our clients use.
pub const DEVICE_ID: u64 = 1;

/// How long a switch may take to listen: loading the eBPF program, or
/// bmv2 starting its gRPC server, on a busy two-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Which switch runs the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchKind {
    /// talaria's eBPF switch, the `switch-agent` binary.
    SwitchAgent,
    /// bmv2 `simple_switch_grpc` running p4c's build of `p4/talaria.p4`.
    Bmv2,
}

impl SwitchKind {
    pub const ALL: [SwitchKind; 2] = [Self::SwitchAgent, Self::Bmv2];

    pub fn name(self) -> &'static str {
        match self {
            Self::SwitchAgent => "switch-agent",
            Self::Bmv2 => "bmv2",
        }
    }

    /// The test guard's second half, after `require!(kind.needs())`: the
    /// switch-agent binary must be built (`cargo test` of the workspace
    /// builds it); otherwise [`talaria_preflight::skip`], which fails the
    /// test under `CI=true`.
    #[track_caller]
    pub fn built(self) -> bool {
        match self {
            Self::SwitchAgent => match switch_agent_binary() {
                Ok(_) => true,
                Err(why) => talaria_preflight::skip(&why),
            },
            Self::Bmv2 => true,
        }
    }

    /// What the machine must provide to run this switch in the testbed.
    pub fn needs(self) -> Vec<Need> {
        let mut v = vec![Need::Root, commands::IP, commands::ETHTOOL, NSENTER];
        match self {
            Self::SwitchAgent => v.extend(LOADS_BPF),
            Self::Bmv2 => v.push(Need::P4Toolchain),
        }
        v
    }
}

impl fmt::Display for SwitchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `switch-agent` binary: `$TALARIA_SWITCH_AGENT` (scripts/test.sh sets
/// it), else the one in this test's target directory.
pub fn switch_agent_binary() -> std::result::Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TALARIA_SWITCH_AGENT") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("switch-agent"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "switch-agent is not built: cargo build -p talaria-switch, or set TALARIA_SWITCH_AGENT"
                .into()
        })
}

/// A pipeline to push: the P4Info and the device config (bmv2's JSON).
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub p4info: P4Info,
    pub device_config: Vec<u8>,
}

/// p4c's build of `p4/talaria.p4` (`--Werror`), compiled once per process
/// into a temporary directory that is removed as soon as it is read.
pub fn talaria_pipeline() -> Result<&'static Pipeline> {
    static BUILD: OnceLock<std::result::Result<Pipeline, String>> = OnceLock::new();
    BUILD
        .get_or_init(|| {
            let toolchain = P4Toolchain::find()?;
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("../p4/talaria.p4");
            let build = toolchain.compile(&program, dir.path(), &["--Werror"])?;
            let text = std::fs::read_to_string(&build.p4info).map_err(|e| e.to_string())?;
            Ok(Pipeline {
                p4info: talaria_p4rt::p4info::parse_text(&text).map_err(|e| e.to_string())?,
                device_config: std::fs::read(&build.json).map_err(|e| e.to_string())?,
            })
        })
        .as_ref()
        .map_err(|e| Error::Toolchain(e.clone()))
}

/// A running switch. Dropping it stops the process (by PID) and removes
/// what it left behind.
#[derive(Debug)]
pub struct Switch {
    pub kind: SwitchKind,
    child: Child,
    /// Where the P4Runtime server listens, inside `netns`.
    pub grpc: SocketAddr,
    /// The switch namespace's path, to reach `grpc`.
    pub netns: PathBuf,
    /// switch-agent's private bpffs directory.
    pin_dir: Option<PathBuf>,
    /// Logs and state.
    dir: tempfile::TempDir,
}

impl Switch {
    /// Starts `kind` in `topology`'s switch namespace on all its ports and
    /// waits until its P4Runtime server accepts connections.
    pub fn start(kind: SwitchKind, topology: &Topology) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("talaria-{kind}-"))
            .tempdir()
            .map_err(io_err("temporary directory"))?;
        let ports: Vec<String> = (1..=topology.ports)
            .flat_map(|p| ["-i".into(), format!("{p}@{}", Topology::switch_port(p))])
            .collect();
        let net = format!("--net={}", topology.switch.path().display());
        let mut cmd = Command::new("nsenter");
        cmd.arg(&net);
        let mut pin_dir = None;
        match kind {
            SwitchKind::Bmv2 => {
                let t = P4Toolchain::find().map_err(Error::Toolchain)?;
                cmd.envs(t.env())
                    .arg(&t.simple_switch_grpc)
                    .args(["--no-p4", "--device-id", &DEVICE_ID.to_string()])
                    .args(&ports)
                    // The default notification socket is a fixed path under
                    // /tmp per device id, which two bmv2s would share.
                    .arg("--notifications-addr")
                    .arg(format!("ipc://{}/notifications.ipc", dir.path().display()))
                    .args(["--", "--grpc-server-addr", GRPC_ADDR]);
            }
            SwitchKind::SwitchAgent => {
                static N: AtomicU32 = AtomicU32::new(0);
                let pins = Path::new(talaria_preflight::BPFFS).join(format!(
                    "talaria-testbed-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                cmd.arg(switch_agent_binary().map_err(Error::Toolchain)?)
                    .args([
                        "--grpc-addr",
                        GRPC_ADDR,
                        "--device-id",
                        &DEVICE_ID.to_string(),
                    ])
                    .args(["--dataplane", "ebpf", "--no-metrics", "--log", "warn"])
                    .arg("--pin-dir")
                    .arg(&pins)
                    .arg("--state-dir")
                    .arg(dir.path().join("state"))
                    .args(&ports);
                pin_dir = Some(pins);
            }
        }
        let log = std::fs::File::create(dir.path().join("output.log"))
            .map_err(io_err("switch log file"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err("switch log file"))?)
            .stderr(log);
        let child = cmd.spawn().map_err(io_err(format!("starting {kind}")))?;
        let mut s = Self {
            kind,
            child,
            grpc: GRPC_ADDR.parse().expect("valid address"),
            netns: topology.switch.path(),
            pin_dir,
            dir,
        };
        s.wait_listening()?;
        Ok(s)
    }

    /// Bounded wait until the gRPC port accepts a connection.
    fn wait_listening(&mut self) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failed(format!("exited before listening ({status})")));
            }
            let addr = self.grpc;
            let up = crate::netns::enter_and_run(self.netns.clone(), move || {
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            })?;
            if up {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(self.failed(format!(
            "did not listen on {} within {START_TIMEOUT:?}",
            self.grpc
        )))
    }

    fn failed(&self, why: String) -> Error {
        Error::Switch {
            switch: self.kind.to_string(),
            why,
            log: self.output(),
        }
    }

    /// What the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("output.log")).unwrap_or_default()
    }

    /// The process id (nsenter execs the switch in its place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, up to 5 s for the exit, then SIGKILL; by PID, our own child.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop();
        // switch-agent leaves maps and TCX links pinned on exit; unpinning
        // the links detaches them, and the namespace goes next anyway.
        if let Some(dir) = &self.pin_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
