//! Finding real p4c and bmv2's `simple_switch_grpc`.
//!
//! They are in no package registry, so they come either as a relocatable
//! toolchain folder (`bin/`, `lib/`, `share/p4c/`, as the project's CI
//! provides it in `../shared/p4-toolchain`) or from the user's own
//! installation on `PATH`. Looked for, in order:
//!
//! 1. `$TALARIA_P4_TOOLCHAIN` (a toolchain folder);
//! 2. `$P4_TOOLCHAIN` (set by the folder's own `env.sh`);
//! 3. `shared/p4-toolchain` next to the repository;
//! 4. both binaries on `PATH`.
//!
//! A toolchain that is found but cannot run (its shared libraries are not
//! installed) is reported as such, not skipped over.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sys::{is_executable, which};

/// How to get the toolchain, for error lines.
pub const HOW_TO_INSTALL: &str = "set TALARIA_P4_TOOLCHAIN to a p4-toolchain folder and run scripts/setup.sh \
     (it installs the folder's apt-runtime.txt), or install p4c and bmv2 from p4lang so both are on PATH";

/// Environment variable naming a toolchain folder.
pub const TOOLCHAIN_ENV: &str = "TALARIA_P4_TOOLCHAIN";

/// A usable p4c and `simple_switch_grpc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct P4Toolchain {
    /// The p4c driver.
    pub p4c: PathBuf,
    /// bmv2 with the P4Runtime server.
    pub simple_switch_grpc: PathBuf,
    /// A relocatable folder's `bin/` and `lib/`, which the binaries need on
    /// `PATH` (the driver runs `p4c-bm2-ss` and `cpp` from there) and
    /// `LD_LIBRARY_PATH`; none for binaries found on `PATH`.
    pub folder: Option<PathBuf>,
}

impl fmt::Display for P4Toolchain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.folder {
            Some(d) => write!(f, "{}", d.display()),
            None => write!(
                f,
                "{} and {} on PATH",
                self.p4c.display(),
                self.simple_switch_grpc.display()
            ),
        }
    }
}

/// The toolchain folder next to this repository, if the build knows where
/// the repository is.
fn beside_repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/p4-toolchain")
}

impl P4Toolchain {
    /// Finds the toolchain and checks that both binaries start; the error
    /// says what is missing.
    pub fn find() -> Result<Self, String> {
        let from_env = [TOOLCHAIN_ENV, "P4_TOOLCHAIN"]
            .iter()
            .find_map(|v| std::env::var_os(v).map(|d| (*v, PathBuf::from(d))));
        let t = match from_env {
            Some((var, dir)) => Self::in_folder(&dir).map_err(|e| format!("${var}: {e}"))?,
            None => match Self::in_folder(&beside_repository()) {
                Ok(t) => t,
                Err(_) => Self::on_path()?,
            },
        };
        t.runs()?;
        Ok(t)
    }

    /// A relocatable toolchain folder.
    pub fn in_folder(dir: &Path) -> Result<Self, String> {
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let t = Self {
            p4c: dir.join("bin/p4c"),
            simple_switch_grpc: dir.join("bin/simple_switch_grpc"),
            folder: Some(dir),
        };
        for b in [&t.p4c, &t.simple_switch_grpc] {
            if !is_executable(b) {
                return Err(format!("{} is missing", b.display()));
            }
        }
        Ok(t)
    }

    fn on_path() -> Result<Self, String> {
        match (which("p4c"), which("simple_switch_grpc")) {
            (Some(p4c), Some(simple_switch_grpc)) => Ok(Self {
                p4c,
                simple_switch_grpc,
                folder: None,
            }),
            (p4c, ssg) => {
                let missing: Vec<&str> = [
                    ("p4c", p4c.is_none()),
                    ("simple_switch_grpc", ssg.is_none()),
                ]
                .into_iter()
                .filter_map(|(n, m)| m.then_some(n))
                .collect();
                Err(format!(
                    "not installed: {} (no toolchain folder in ${TOOLCHAIN_ENV}, $P4_TOOLCHAIN or {})",
                    missing.join(" and "),
                    beside_repository().display()
                ))
            }
        }
    }

    /// Whether both binaries start (shared libraries present).
    fn runs(&self) -> Result<(), String> {
        for (bin, arg) in [
            (&self.p4c, "--version"),
            (&self.simple_switch_grpc, "--version"),
        ] {
            let out = self
                .command(bin)
                .arg(arg)
                .output()
                .map_err(|e| format!("{}: {e}", bin.display()))?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                let hint = match &self.folder {
                    Some(d) if err.contains("shared librar") => format!(
                        " (its runtime packages are missing: apt-get install $(cat {}/apt-runtime.txt), or scripts/setup.sh)",
                        d.display()
                    ),
                    _ => String::new(),
                };
                return Err(format!(
                    "{} {arg} failed: {}{hint}",
                    bin.display(),
                    err.trim()
                ));
            }
        }
        Ok(())
    }

    /// The environment the binaries need: `(PATH, LD_LIBRARY_PATH)` with
    /// the folder's `bin/` and `lib/` in front, or the current values.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        let Some(dir) = &self.folder else {
            return Vec::new();
        };
        let prepend = |var: &str, first: PathBuf| {
            let mut v = vec![first];
            if let Some(old) = std::env::var_os(var) {
                v.extend(std::env::split_paths(&old));
            }
            std::env::join_paths(v).unwrap_or_default()
        };
        vec![
            ("PATH", prepend("PATH", dir.join("bin"))),
            (
                "LD_LIBRARY_PATH",
                prepend("LD_LIBRARY_PATH", dir.join("lib")),
            ),
        ]
    }

    /// A command for one of the toolchain's binaries, with its environment.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.envs(self.env());
        c
    }

    /// `p4c --target bmv2 --arch v1model` compiling `program` into `out`
    /// (`<name>.json` and `<name>.p4info.txtpb`); extra flags go first.
    pub fn compile(&self, program: &Path, out: &Path, flags: &[&str]) -> Result<Bmv2Build, String> {
        let name = program
            .file_stem()
            .ok_or_else(|| format!("{}: no file name", program.display()))?
            .to_string_lossy()
            .into_owned();
        std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
        let build = Bmv2Build {
            json: out.join(format!("{name}.json")),
            p4info: out.join(format!("{name}.p4info.txtpb")),
        };
        let output = self
            .command(&self.p4c)
            .args(["--target", "bmv2", "--arch", "v1model"])
            .args(flags)
            .arg("--p4runtime-files")
            .arg(&build.p4info)
            .arg("-o")
            .arg(out)
            .arg(program)
            .output()
            .map_err(|e| format!("{}: {e}", self.p4c.display()))?;
        if !output.status.success() {
            return Err(format!(
                "p4c failed on {}:\n{}",
                program.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(build)
    }
}

/// p4c's output for bmv2: the JSON bmv2 runs and the P4Info.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bmv2Build {
    /// The bmv2 JSON, pushed as the P4Runtime device config.
    pub json: PathBuf,
    /// The P4Info p4c wrote.
    pub p4info: PathBuf,
}
