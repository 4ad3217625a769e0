//! What runs on the lab's switch ports: switch-agent (the default, and the
//! only choice on machines without bmv2), or bmv2's `simple_switch_grpc`
//! running the p4c build of `p4/talaria.p4`.
//!
//! The choice comes from the environment (`TALARIA_LAB_SWITCH`,
//! `TALARIA_BMV2_DIR`), which `talaria-lab --switch` sets, so every command
//! and test builds its labs the same way.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The software switch of a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchKind {
    /// talaria's eBPF switch.
    SwitchAgent,
    /// bmv2 `simple_switch_grpc`, with the pipeline p4c built.
    Bmv2(Bmv2Build),
}

/// p4c's output for `p4/talaria.p4` (`p4c --target bmv2 --arch v1model
/// --p4runtime-files DIR/talaria.p4info.txtpb -o DIR p4/talaria.p4`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmv2Build {
    /// The bmv2 JSON, pushed as the P4 device config.
    pub json: PathBuf,
    /// The P4Info p4c wrote (the controller uses it, not the hand-kept one,
    /// so a drift between the two shows up as a pipeline mismatch).
    pub p4info: PathBuf,
}

/// Environment variable naming the switch: `switch-agent` or `bmv2`.
pub const SWITCH_ENV: &str = "TALARIA_LAB_SWITCH";
/// Environment variable naming p4c's output directory, for bmv2.
pub const BMV2_DIR_ENV: &str = "TALARIA_BMV2_DIR";

impl SwitchKind {
    /// The switch the environment asks for.
    pub fn from_env() -> Result<Self> {
        let kind = std::env::var(SWITCH_ENV).unwrap_or_default();
        match kind.as_str() {
            "" | "switch-agent" => Ok(Self::SwitchAgent),
            "bmv2" => {
                let Some(dir) = std::env::var_os(BMV2_DIR_ENV) else {
                    bail!("{SWITCH_ENV}=bmv2 needs {BMV2_DIR_ENV} (p4c's output directory)");
                };
                Ok(Self::Bmv2(Bmv2Build::in_dir(Path::new(&dir))?))
            }
            other => bail!("{SWITCH_ENV}={other:?}: expected switch-agent or bmv2"),
        }
    }

    /// Name for results and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SwitchAgent => "switch-agent",
            Self::Bmv2(_) => "bmv2",
        }
    }
}

impl Bmv2Build {
    /// Finds p4c's output in `dir`, and `simple_switch_grpc` on PATH.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let b = Self {
            json: dir.join("talaria.json"),
            p4info: dir.join("talaria.p4info.txtpb"),
        };
        for f in [&b.json, &b.p4info] {
            if !f.is_file() {
                bail!(
                    "bmv2: {} missing (compile p4/talaria.p4 with p4c first: bmv2-testbed/run.sh)",
                    f.display()
                );
            }
        }
        if talaria_preflight::which(BMV2_BINARY).is_none() {
            bail!("bmv2: {BMV2_BINARY} is not installed");
        }
        Ok(b)
    }

    /// `simple_switch_grpc`'s command line for the lab's ports
    /// (`(p4 port, device)`), serving P4Runtime on `grpc_addr`. It starts
    /// with no program: the controller pushes the JSON.
    pub fn argv(&self, ports: &[(u16, String)], grpc_addr: &str) -> Vec<String> {
        let mut v = vec![BMV2_BINARY.to_string(), "--no-p4".into()];
        for (port, dev) in ports {
            v.push("-i".into());
            v.push(format!("{port}@{dev}"));
        }
        v.extend(["--".into(), "--grpc-server-addr".into(), grpc_addr.into()]);
        v
    }
}

/// bmv2's P4Runtime switch binary.
pub const BMV2_BINARY: &str = "simple_switch_grpc";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmv2_command_line() {
        let b = Bmv2Build {
            json: "/b/talaria.json".into(),
            p4info: "/b/talaria.p4info.txtpb".into(),
        };
        let argv = b.argv(&[(1, "p0".into()), (2, "p1".into())], "127.0.0.1:9559");
        assert_eq!(
            argv.join(" "),
            "simple_switch_grpc --no-p4 -i 1@p0 -i 2@p1 -- --grpc-server-addr 127.0.0.1:9559"
        );
    }

    #[test]
    fn bmv2_without_its_build_is_refused_with_the_reason() {
        let d = std::env::temp_dir().join(format!("talaria-lab-nobmv2-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let e = Bmv2Build::in_dir(&d).unwrap_err().to_string();
        std::fs::remove_dir_all(&d).unwrap();
        assert!(e.contains("talaria.json missing"), "{e}");
    }
}
