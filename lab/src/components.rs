//! The talaria components the lab drives: switch-agent, the node agent
//! (`talaria-node`) and the controller (`talaria-controller`, `talariactl`).
//!
//! Binaries are looked up in `$TALARIA_BIN_DIR`, next to the running
//! `talaria-lab` (the same cargo target dir), then on `PATH`.

use crate::switch::SwitchKind;
use std::path::PathBuf;

/// A component binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The eBPF software switch with its P4Runtime server.
    SwitchAgent,
    /// The node agent (TC programs on pod veths and the uplink).
    NodeAgent,
    /// The controller.
    Controller,
    /// The controller's CLI.
    Talariactl,
}

impl Component {
    /// Every component.
    pub const ALL: [Component; 4] = [
        Self::SwitchAgent,
        Self::NodeAgent,
        Self::Controller,
        Self::Talariactl,
    ];

    /// Binary name.
    pub fn binary(self) -> &'static str {
        match self {
            Self::SwitchAgent => "switch-agent",
            Self::NodeAgent => "talaria-node",
            Self::Controller => "talaria-controller",
            Self::Talariactl => "talariactl",
        }
    }

    /// Cargo package that builds it.
    pub fn package(self) -> &'static str {
        match self {
            Self::SwitchAgent => "talaria-switch",
            Self::NodeAgent => "talaria-node",
            Self::Controller | Self::Talariactl => "talaria-controller",
        }
    }

    /// Finds the binary.
    pub fn find(self) -> Option<PathBuf> {
        let name = self.binary();
        let mut dirs = Vec::new();
        if let Some(d) = std::env::var_os("TALARIA_BIN_DIR") {
            dirs.push(PathBuf::from(d));
        }
        if let Some(d) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|p| p.to_path_buf()))
        {
            // Integration tests run from target/<profile>/deps.
            if d.ends_with("deps") {
                dirs.push(d.parent().unwrap().to_path_buf());
            }
            dirs.push(d);
        }
        dirs.into_iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .or_else(|| talaria_preflight::which(name))
    }

    /// Whether the binary exists and answers `--help` like the real thing
    /// (a placeholder `fn main() {}` prints nothing).
    pub fn usable(self) -> Result<PathBuf, String> {
        let Some(p) = self.find() else {
            return Err(format!(
                "{} not built (cargo build -p {})",
                self.binary(),
                self.package()
            ));
        };
        match std::process::Command::new(&p).arg("--help").output() {
            Ok(o) if o.status.success() && !o.stdout.is_empty() => Ok(p),
            Ok(_) => Err(format!(
                "{} at {} does not answer --help (not implemented yet?)",
                self.binary(),
                p.display()
            )),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }
}

/// What is missing for talaria mode on `switch`, one line per component.
pub fn talaria_missing(switch: &SwitchKind) -> Vec<String> {
    let mut v = fabric_missing(switch);
    v.extend(missing(&[Component::NodeAgent]));
    v
}

/// What is missing for the lab switch every mode forwards through (the
/// controller writing its routes, and switch-agent unless the switch is
/// bmv2).
pub fn fabric_missing(switch: &SwitchKind) -> Vec<String> {
    let mut c = vec![Component::Controller, Component::Talariactl];
    if *switch == SwitchKind::SwitchAgent {
        c.insert(0, Component::SwitchAgent);
    }
    missing(&c)
}

fn missing(components: &[Component]) -> Vec<String> {
    components.iter().filter_map(|c| c.usable().err()).collect()
}
