//! What runs on the lab's switch ports: switch-agent (the default), or
//! bmv2's `simple_switch_grpc` running p4c's build of `p4/talaria.p4`.
//!
//! The choice is a value every [`crate::netns::Lab`] carries, not process
//! state, so one process (the end-to-end tests) can build labs on both
//! switches side by side. `talaria-lab --switch` picks it for a command,
//! with `TALARIA_LAB_SWITCH` and `TALARIA_BMV2_DIR` as the flags' defaults.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use talaria_preflight::{commands, Bmv2Build, Need, P4Toolchain};

/// The P4Runtime device id of the lab's switch: the controller's config
/// and `simple_switch_grpc --device-id` both take it from here (bmv2
/// refuses a pipeline for any other id).
pub const DEVICE_ID: u64 = 1;

/// `nsenter`: switch-agent is started in the switch netns alone (see
/// [`crate::netns::Lab::spawn_net`]).
pub const NSENTER: Need = Need::Command {
    command: "nsenter",
    package: "util-linux",
};

/// Environment variable naming the switch: `switch-agent` or `bmv2`.
pub const SWITCH_ENV: &str = "TALARIA_LAB_SWITCH";
/// Environment variable naming a p4c output directory, for bmv2.
pub const BMV2_DIR_ENV: &str = "TALARIA_BMV2_DIR";

/// The software switch of a lab.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SwitchKind {
    /// talaria's eBPF switch.
    #[default]
    SwitchAgent,
    /// bmv2 `simple_switch_grpc`.
    Bmv2 {
        /// p4c's output for `p4/talaria.p4` (`talaria.json`,
        /// `talaria.p4info.txtpb`) from the user's own build; `None`: the
        /// lab compiles the program itself with the toolchain it finds.
        build_dir: Option<PathBuf>,
    },
}

impl SwitchKind {
    /// bmv2 with the pipeline the lab compiles.
    pub fn bmv2() -> Self {
        Self::Bmv2 { build_dir: None }
    }

    /// The switch named `name` (`switch-agent` or `bmv2`); `bmv2_dir` is
    /// a prebuilt pipeline for bmv2.
    pub fn parse(name: &str, bmv2_dir: Option<PathBuf>) -> Result<Self> {
        match name {
            "" | "switch-agent" => Ok(Self::SwitchAgent),
            "bmv2" => Ok(Self::Bmv2 {
                build_dir: bmv2_dir,
            }),
            other => bail!("switch {other:?}: expected switch-agent or bmv2"),
        }
    }

    /// Name for results and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SwitchAgent => "switch-agent",
            Self::Bmv2 { .. } => "bmv2",
        }
    }

    /// What this switch needs from the machine beyond what every lab
    /// needs: switch-agent needs nsenter; bmv2 needs p4c (unless given a
    /// build) and `simple_switch_grpc`, and ethtool for the offloads.
    pub fn needs(&self) -> Vec<Need> {
        match self {
            Self::SwitchAgent => vec![NSENTER],
            Self::Bmv2 { build_dir: None } => vec![Need::P4Toolchain, commands::ETHTOOL],
            Self::Bmv2 { build_dir: Some(_) } => vec![commands::ETHTOOL],
        }
    }
}

/// A file of the repository (`p4/talaria.p4`, ...), found from the current
/// directory or any directory below the repository (tests run in `lab/`),
/// or from a binary inside the repository's target directory.
pub fn repo_file(rel: &str) -> Result<PathBuf> {
    let cwd = std::env::current_dir()?;
    let mut roots: Vec<PathBuf> = cwd.ancestors().map(Path::to_path_buf).collect();
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().map(Path::to_path_buf));
    }
    roots
        .into_iter()
        .map(|r| r.join(rel))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("{rel} not found (run from the repository)"))
}

/// bmv2 ready to start: its binary and environment, and the pipeline the
/// controller pushes.
#[derive(Debug, Clone)]
pub struct Bmv2 {
    /// `simple_switch_grpc`.
    pub binary: PathBuf,
    /// `PATH` and `LD_LIBRARY_PATH` a relocatable toolchain needs.
    pub env: Vec<(&'static str, OsString)>,
    /// p4c's JSON (the device config) and P4Info. The controller is given
    /// this P4Info, not the hand-kept one, so the switch and controller
    /// always agree on ids.
    pub build: Bmv2Build,
}

/// The bmv2 JSON and P4Info names p4c gives `talaria.p4`'s output.
const JSON: &str = "talaria.json";
const P4INFO: &str = "talaria.p4info.txtpb";

impl Bmv2 {
    /// Compiles `p4/talaria.p4` into `out` with the toolchain
    /// [`P4Toolchain::find`] finds, or, with `build_dir`, takes the user's
    /// build from there and `simple_switch_grpc` from the toolchain or
    /// `PATH`.
    pub fn prepare(build_dir: Option<&Path>, out: &Path) -> Result<Self> {
        let toolchain = P4Toolchain::find();
        let Some(dir) = build_dir else {
            let t = toolchain.map_err(|e| {
                anyhow::anyhow!("bmv2: {e} (fix: {})", talaria_preflight::p4::HOW_TO_INSTALL)
            })?;
            let program = repo_file("p4/talaria.p4")?;
            let build = t
                .compile(&program, out, &[])
                .map_err(|e| anyhow::anyhow!("bmv2: {e}"))?;
            return Ok(Self {
                binary: t.simple_switch_grpc.clone(),
                env: t.env(),
                build,
            });
        };
        let build = Bmv2Build {
            json: dir.join(JSON),
            p4info: dir.join(P4INFO),
        };
        for f in [&build.json, &build.p4info] {
            if !f.is_file() {
                bail!(
                    "bmv2: {} missing (p4c --target bmv2 --arch v1model --p4runtime-files {}/{P4INFO} -o {} p4/talaria.p4, \
                     or leave out --bmv2-dir and the lab compiles it)",
                    f.display(),
                    dir.display(),
                    dir.display()
                );
            }
        }
        let (binary, env) = match toolchain {
            Ok(t) => (t.simple_switch_grpc.clone(), t.env()),
            Err(e) => (
                talaria_preflight::which(BINARY)
                    .with_context(|| format!("bmv2: {e}; no {BINARY} on PATH either"))?,
                Vec::new(),
            ),
        };
        Ok(Self { binary, env, build })
    }

    /// `simple_switch_grpc`'s command line for the lab's ports
    /// (`(p4 port, device)`), serving P4Runtime on `grpc_addr` as device
    /// [`DEVICE_ID`]. It starts with no program: the controller pushes the
    /// JSON. `notifications` is its nanomsg socket: the default,
    /// `/tmp/bmv2-<device id>-notifications.ipc`, would be shared by every
    /// bmv2 on the machine with the same device id.
    pub fn argv(
        &self,
        ports: &[(u16, String)],
        grpc_addr: &str,
        notifications: &Path,
    ) -> Vec<String> {
        let mut v = vec![
            self.binary.to_string_lossy().into_owned(),
            "--no-p4".into(),
            "--device-id".into(),
            DEVICE_ID.to_string(),
            "--notifications-addr".into(),
            format!("ipc://{}", notifications.display()),
        ];
        for (port, dev) in ports {
            v.push("-i".into());
            v.push(format!("{port}@{dev}"));
        }
        v.extend(["--".into(), "--grpc-server-addr".into(), grpc_addr.into()]);
        v
    }
}

/// bmv2's P4Runtime switch binary.
pub const BINARY: &str = "simple_switch_grpc";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmv2_command_line_carries_the_device_id() {
        let b = Bmv2 {
            binary: "/tc/bin/simple_switch_grpc".into(),
            env: Vec::new(),
            build: Bmv2Build {
                json: "/b/talaria.json".into(),
                p4info: "/b/talaria.p4info.txtpb".into(),
            },
        };
        let argv = b.argv(
            &[(1, "p0".into()), (2, "p1".into())],
            "127.0.0.1:9559",
            Path::new("/run/l/bmv2.ipc"),
        );
        assert_eq!(
            argv.join(" "),
            format!(
                "/tc/bin/simple_switch_grpc --no-p4 --device-id {DEVICE_ID} \
                 --notifications-addr ipc:///run/l/bmv2.ipc -i 1@p0 -i 2@p1 \
                 -- --grpc-server-addr 127.0.0.1:9559"
            )
        );
    }

    #[test]
    fn a_given_bmv2_build_without_its_files_is_refused_with_the_reason() {
        let d = std::env::temp_dir().join(format!("talaria-lab-nobmv2-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let e = Bmv2::prepare(Some(&d), &d).unwrap_err().to_string();
        std::fs::remove_dir_all(&d).unwrap();
        assert!(e.contains("talaria.json missing"), "{e}");
    }

    #[test]
    fn switch_names() {
        assert_eq!(
            SwitchKind::parse("", None).unwrap(),
            SwitchKind::SwitchAgent
        );
        assert_eq!(SwitchKind::parse("bmv2", None).unwrap(), SwitchKind::bmv2());
        assert!(SwitchKind::parse("ovs", None).is_err());
        assert!(SwitchKind::bmv2().needs().contains(&Need::P4Toolchain));
        assert_eq!(SwitchKind::SwitchAgent.needs(), [NSENTER]);
    }
}
