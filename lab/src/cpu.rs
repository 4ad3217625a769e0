//! Host CPU accounting.
//!
//! Network namespaces do not partition CPU time, and every lab node shares
//! one kernel, so "CPU per request" is measured host-wide: the non-idle
//! jiffies of `/proc/stat` (user + nice + system + irq + softirq + steal)
//! during a run, divided by the requests completed. It is split into
//! *application* CPU (utime + stime of the lab's own load generator and
//! server processes, from `/proc/<pid>/stat`) and the *rest*, which is the
//! kernel's packet path (softirq, netfilter, eBPF, the switch) plus anything
//! else running on the machine. The client-node and backend-node shares
//! cannot be separated on one kernel; the kernel-path figure is what differs
//! between modes.

use serde::{Deserialize, Serialize};

/// Aggregate CPU counters from the first line of `/proc/stat`, in jiffies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTimes {
    /// user + nice.
    pub user: u64,
    /// system.
    pub system: u64,
    /// irq + softirq.
    pub irq: u64,
    /// idle + iowait.
    pub idle: u64,
    /// steal.
    pub steal: u64,
}

impl CpuTimes {
    /// Parses the `cpu ` line of `/proc/stat`.
    pub fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() < 8 {
            return None;
        }
        Some(Self {
            user: v[0] + v[1],
            system: v[2],
            idle: v[3] + v[4],
            irq: v[5] + v[6],
            steal: v[7],
        })
    }

    /// Reads `/proc/stat` now.
    pub fn now() -> Self {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| Self::parse(&s))
            .unwrap_or_default()
    }

    /// Non-idle jiffies.
    pub fn busy(&self) -> u64 {
        self.user + self.system + self.irq + self.steal
    }

    /// Counter difference `self - earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            irq: self.irq.saturating_sub(earlier.irq),
            idle: self.idle.saturating_sub(earlier.idle),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }
}

/// Jiffies per second.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime + stime of a process, in jiffies (0 if it is gone).
pub fn process_jiffies(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    parse_process_jiffies(&s).unwrap_or(0)
}

/// Parses utime + stime (fields 14 and 15) out of a `/proc/<pid>/stat` line.
pub fn parse_process_jiffies(stat: &str) -> Option<u64> {
    // The command name may contain spaces: fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Process start time (field 22) in jiffies since boot, to recognise a PID
/// that has been reused. `None` for a zombie (it has exited).
pub fn process_start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    if rest.starts_with('Z') || rest.starts_with('X') {
        return None;
    }
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let s = "cpu  100 5 50 1000 10 1 20 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let c = CpuTimes::parse(s).unwrap();
        assert_eq!(
            c,
            CpuTimes {
                user: 105,
                system: 50,
                irq: 21,
                idle: 1010,
                steal: 3
            }
        );
        assert_eq!(c.busy(), 179);
        let later = CpuTimes { user: 205, ..c };
        assert_eq!(later.since(&c).busy(), 100);
    }

    #[test]
    fn parses_process_stat_with_spaces_in_name() {
        let s = "1234 (talaria lab) S 1 1234 1234 0 -1 4194304 100 0 0 0 17 4 0 0 20 0 1 0 5555 1000 10";
        assert_eq!(parse_process_jiffies(s), Some(21));
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(process_start_time(me).is_some());
        assert!(CpuTimes::now().busy() > 0);
    }
}
