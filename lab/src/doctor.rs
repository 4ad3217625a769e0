//! `talaria-lab doctor`: everything the lab and its modes need from this
//! machine, each with what was found or how to get it.

use crate::components::Component;
use crate::modes::{ipvs_unavailable, Mode};
use crate::netns::LAB_NEEDS;
use std::fmt::Write as _;
use talaria_preflight::{commands, Need, Outcome};

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What is checked.
    pub what: String,
    /// Which lab features depend on it.
    pub needed_by: &'static str,
    /// Found, fixed, or missing with the fix.
    pub outcome: Outcome,
}

/// What the demo (`scripts/demo.sh`) cannot run without.
const DEMO: &str = "every lab";

/// Checks everything; with `fix`, also fixes what can be fixed (mounts
/// bpffs).
pub fn examine(fix: bool) -> Vec<Finding> {
    let look = |need: Need| {
        if fix {
            talaria_preflight::fix(need)
        } else {
            talaria_preflight::check(need)
        }
    };
    let mut v: Vec<Finding> = LAB_NEEDS
        .iter()
        .map(|n| Finding {
            what: n.to_string(),
            needed_by: DEMO,
            outcome: look(*n),
        })
        .collect();
    for c in Component::ALL {
        v.push(Finding {
            what: format!("talaria component {}", c.binary()),
            needed_by: if c == Component::NodeAgent {
                "talaria mode"
            } else {
                DEMO
            },
            outcome: match c.usable() {
                Ok(p) => Outcome::Met(p.display().to_string()),
                Err(problem) => Outcome::Unmet(talaria_preflight::Unmet {
                    need: Need::Command {
                        command: c.binary(),
                        package: c.package(),
                    },
                    problem,
                    fix: "scripts/demo.sh builds every component".into(),
                }),
            },
        });
    }
    for (mode, label) in [
        (Mode::Iptables, "iptables mode"),
        (Mode::Nftables, "nftables mode"),
        (Mode::Ipvs, "ipvs mode"),
    ] {
        for n in mode.needs() {
            v.push(Finding {
                what: n.to_string(),
                needed_by: label,
                outcome: look(*n),
            });
        }
    }
    v.push(Finding {
        what: "kernel IPVS".into(),
        needed_by: "ipvs mode",
        outcome: match ipvs_unavailable() {
            None => Outcome::Met("/proc/net/ip_vs".into()),
            Some(why) => Outcome::Unmet(talaria_preflight::Unmet {
                need: commands::IPVSADM,
                problem: why,
                fix: "use a kernel with CONFIG_IP_VS (the other modes do not need it)".into(),
            }),
        },
    });
    for (n, label) in [
        (Need::P4Toolchain, "--switch bmv2"),
        (commands::ETHTOOL, "--switch bmv2"),
        // The default switch, switch-agent, is started with it.
        (crate::switch::NSENTER, DEMO),
        (commands::MININET, "mininet/"),
    ] {
        v.push(Finding {
            what: n.to_string(),
            needed_by: label,
            outcome: look(n),
        });
    }
    v
}

/// The report, one line per finding.
pub fn report(findings: &[Finding]) -> String {
    let width = findings.iter().map(|f| f.what.len()).max().unwrap_or(0);
    let by_width = findings
        .iter()
        .map(|f| f.needed_by.len() + 2)
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    for f in findings {
        let (tag, detail) = match &f.outcome {
            Outcome::Met(d) => ("ok     ", d.clone()),
            Outcome::Fixed(d) => ("fixed  ", d.clone()),
            Outcome::Unmet(u) => ("MISSING", format!("{}; fix: {}", u.problem, u.fix)),
        };
        let by = format!("[{}]", f.needed_by);
        let _ = writeln!(s, "{tag}  {:width$}  {by:by_width$}  {detail}", f.what);
    }
    s
}

/// Whether the demo can run: nothing it needs is missing.
pub fn demo_ready(findings: &[Finding]) -> bool {
    findings
        .iter()
        .filter(|f| f.needed_by == DEMO || f.needed_by == "talaria mode")
        .all(|f| f.outcome.is_met())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_say_what_is_missing_and_how_to_fix_it() {
        let f = [
            Finding {
                what: "root".into(),
                needed_by: DEMO,
                outcome: Outcome::Met("uid 0".into()),
            },
            Finding {
                what: "bpffs on /sys/fs/bpf".into(),
                needed_by: DEMO,
                outcome: Outcome::Unmet(talaria_preflight::Unmet {
                    need: Need::Bpffs,
                    problem: "not mounted".into(),
                    fix: "mount it".into(),
                }),
            },
        ];
        let r = report(&f);
        assert!(r.contains("ok       root"), "{r}");
        assert!(
            r.contains("MISSING  bpffs on /sys/fs/bpf  [every lab]  not mounted; fix: mount it"),
            "{r}"
        );
        assert!(!demo_ready(&f));
        assert!(demo_ready(&f[..1]));
    }
}
