//! What talaria needs from the machine, checked in one place.
//!
//! Every entry point (switch-agent, the node agent, `talaria-lab`) and every
//! root-only test names what it needs as a list of [`Need`]s:
//!
//! - [`ensure`] fixes what can be fixed (bpffs is mounted on
//!   `/sys/fs/bpf`, as Cilium's agent does) and otherwise fails with one
//!   line per missing precondition, saying how to fix it;
//! - [`check`] only looks, for `talaria-lab doctor`;
//! - [`require!`] is the test guard: a missing precondition skips the test
//!   with one line, except under `CI=true`, where it fails the test, so CI
//!   never passes a test that did not run.

use std::fmt;
use std::path::Path;

pub mod p4;
mod sys;

pub use p4::{Bmv2Build, P4Toolchain};
pub use sys::which;

/// Where bpffs must be mounted: aya, bpftool and every talaria pin
/// directory expect it there.
pub const BPFFS: &str = "/sys/fs/bpf";

/// TCX, the bpf_link attachment for TC programs that switch-agent and the
/// node agent use, first shipped in Linux 6.6.
pub const TCX_KERNEL: (u32, u32) = (6, 6);

/// What a process that loads, attaches and pins BPF programs needs:
/// switch-agent's eBPF data plane and the node agent.
pub const LOADS_BPF: [Need; 3] = [Need::Root, Need::Bpffs, Need::Tcx];

/// One thing the machine must provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Effective uid 0: network namespaces, BPF programs, mounts.
    Root,
    /// bpffs mounted on [`BPFFS`], for pinned maps and links. Fixable.
    Bpffs,
    /// TCX attachments (kernel 6.6 or later).
    Tcx,
    /// An executable on `PATH`, with the Debian package that provides it.
    Command {
        command: &'static str,
        package: &'static str,
    },
    /// Real p4c and bmv2's `simple_switch_grpc` ([`P4Toolchain::find`]).
    P4Toolchain,
}

/// The commands the lab drives, by the Debian package that has them.
pub mod commands {
    use super::Need;

    const fn command(command: &'static str, package: &'static str) -> Need {
        Need::Command { command, package }
    }

    /// `ip`: namespaces, links, addresses, routes.
    pub const IP: Need = command("ip", "iproute2");
    /// `ethtool`: offloads on the lab's veths.
    pub const ETHTOOL: Need = command("ethtool", "ethtool");
    /// `iptables-restore`: the iptables baseline.
    pub const IPTABLES: Need = command("iptables-restore", "iptables");
    /// `nft`: the nftables baseline.
    pub const NFT: Need = command("nft", "nftables");
    /// `ipvsadm`: the IPVS baseline.
    pub const IPVSADM: Need = command("ipvsadm", "ipvsadm");
    /// `mn`: the mininet topology.
    pub const MININET: Need = command("mn", "mininet");
    /// `unshare`: private mount namespaces.
    pub const UNSHARE: Need = command("unshare", "util-linux");
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root => f.write_str("root"),
            Self::Bpffs => write!(f, "bpffs on {BPFFS}"),
            Self::Tcx => write!(f, "TCX (Linux {}.{}+)", TCX_KERNEL.0, TCX_KERNEL.1),
            Self::Command { command, .. } => write!(f, "command {command}"),
            Self::P4Toolchain => f.write_str("p4c and simple_switch_grpc"),
        }
    }
}

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Present; what was found.
    Met(String),
    /// Was missing and has just been fixed; what was done.
    Fixed(String),
    /// Missing.
    Unmet(Unmet),
}

impl Outcome {
    /// Whether the need is satisfied now.
    pub fn is_met(&self) -> bool {
        !matches!(self, Self::Unmet(_))
    }
}

/// A missing precondition: what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmet {
    pub need: Need,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.need, self.problem, self.fix)
    }
}

/// Preconditions that are missing and could not be fixed, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", lines(.0))]
pub struct Error(pub Vec<Unmet>);

fn lines(unmet: &[Unmet]) -> String {
    let v: Vec<String> = unmet.iter().map(|u| format!("missing {u}")).collect();
    v.join("\n")
}

/// Looks at `need` without changing anything.
pub fn check(need: Need) -> Outcome {
    let unmet = |problem: String, fix: &str| {
        Outcome::Unmet(Unmet {
            need,
            problem,
            fix: fix.to_string(),
        })
    };
    match need {
        Need::Root => match sys::euid() {
            0 => Outcome::Met("uid 0".into()),
            uid => unmet(
                format!("running as uid {uid}"),
                "run as root (network namespaces, BPF and mounts need it)",
            ),
        },
        Need::Bpffs => match sys::is_bpffs(Path::new(BPFFS)) {
            Ok(true) => Outcome::Met(format!("mounted on {BPFFS}")),
            Ok(false) => unmet(
                format!("{BPFFS} is not a bpffs mount"),
                "run as root and talaria mounts it, or `mount -t bpf bpf /sys/fs/bpf`",
            ),
            Err(e) => unmet(
                format!("{BPFFS}: {e}"),
                "mount sysfs on /sys, then `mount -t bpf bpf /sys/fs/bpf`",
            ),
        },
        Need::Tcx => match sys::kernel_release() {
            Some((release, version)) if version >= TCX_KERNEL => {
                Outcome::Met(format!("Linux {release}"))
            }
            Some((release, _)) => unmet(
                format!("Linux {release}"),
                "use Linux 6.6 or later (TCX attachments)",
            ),
            None => unmet("cannot read the kernel release".into(), "check uname(2)"),
        },
        Need::Command { command, package } => match sys::which(command) {
            Some(p) => Outcome::Met(p.display().to_string()),
            None => unmet(
                "not on PATH".into(),
                &format!("apt-get install {package}, or run scripts/setup.sh"),
            ),
        },
        Need::P4Toolchain => match P4Toolchain::find() {
            Ok(t) => Outcome::Met(t.to_string()),
            Err(problem) => unmet(problem, p4::HOW_TO_INSTALL),
        },
    }
}

/// Checks `need` and fixes it if it is missing and fixable (only bpffs is:
/// it is mounted when running as root).
pub fn fix(need: Need) -> Outcome {
    match (need, check(need)) {
        (Need::Bpffs, Outcome::Unmet(u)) if sys::euid() == 0 => {
            match sys::mount_bpffs(Path::new(BPFFS)) {
                Ok(()) => Outcome::Fixed(format!("mounted bpffs on {BPFFS}")),
                Err(e) => Outcome::Unmet(Unmet {
                    problem: format!("{}; mounting it failed: {e}", u.problem),
                    ..u
                }),
            }
        }
        (_, outcome) => outcome,
    }
}

/// Makes sure every need is met, fixing what can be fixed; fails with one
/// line per need that is still missing.
pub fn ensure(needs: &[Need]) -> Result<(), Error> {
    let unmet: Vec<Unmet> = needs
        .iter()
        .filter_map(|n| match fix(*n) {
            Outcome::Unmet(u) => Some(u),
            _ => None,
        })
        .collect();
    if unmet.is_empty() {
        Ok(())
    } else {
        Err(Error(unmet))
    }
}

/// Whether this runs under CI (`CI` set to anything but empty, `0` or
/// `false`), where a test must not skip.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// The test guard's verdict on a missing precondition: outside CI, prints
/// one `skipped:` line and returns false (the test returns); under CI,
/// panics with the same line, so a skipped test is a failed test.
#[track_caller]
pub fn skip(why: &str) -> bool {
    if under_ci() {
        panic!("CI=true and a precondition is missing: {why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// The test guard behind [`require!`]: true when every need is met (after
/// fixing what can be fixed), otherwise [`skip`].
#[track_caller]
pub fn test_ready(needs: &[Need]) -> bool {
    match ensure(needs) {
        Ok(()) => true,
        Err(e) => skip(&e.to_string().replace('\n', "; ")),
    }
}

/// `require!([Need::Root, ...])` (or `require!(LOADS_BPF)`) at the top of
/// a test returns from it, with one `skipped:` line, when a need is
/// missing; under `CI=true` the test fails instead.
#[macro_export]
macro_rules! require {
    ($needs:expr) => {
        if !$crate::test_ready(&$needs) {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmet_lines_name_the_need_and_the_fix() {
        let e = Error(vec![Unmet {
            need: Need::Bpffs,
            problem: "/sys/fs/bpf is not a bpffs mount".into(),
            fix: "mount it".into(),
        }]);
        assert_eq!(
            e.to_string(),
            "missing bpffs on /sys/fs/bpf: /sys/fs/bpf is not a bpffs mount (fix: mount it)"
        );
    }

    #[test]
    fn a_command_that_does_not_exist_is_unmet_with_its_package() {
        let need = Need::Command {
            command: "talaria-no-such-command",
            package: "talaria-no-such-package",
        };
        match check(need) {
            Outcome::Unmet(u) => assert!(u.fix.contains("apt-get install talaria-no-such-package")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sh_is_found() {
        let need = Need::Command {
            command: "sh",
            package: "dash",
        };
        assert!(check(need).is_met());
    }
}
