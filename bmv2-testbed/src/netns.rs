//! Network namespaces the testbed creates and removes, and the two-namespace
//! topology the switch runs in.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{io_err, Error, Result};

/// Runs a command, failing with its stderr.
pub(crate) fn command(argv: &[&str]) -> Result<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(io_err(format!("running {}", argv[0])))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: argv.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `tlr-<tag>-<pid>-<n>` with loopback up and IPv6 off on every
    /// interface it will ever hold: set as the default before any link
    /// exists, so no interface sends router solicitations, MLD reports or
    /// DAD probes that a test would see as switch traffic.
    pub fn create(tag: &str) -> Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tlr-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        command(&["ip", "netns", "add", &name])?;
        let ns = Self { name };
        ns.run(|| -> Result<()> {
            for conf in ["default", "all"] {
                let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                std::fs::write(&path, "1").map_err(io_err(path))?;
            }
            Ok(())
        })??;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, for `nsenter --net=` and `setns`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread of its own inside the namespace. Sockets it
    /// creates stay in the namespace wherever they are used later.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        enter_and_run(self.path(), f)
    }

    /// `ip -n <ns> args...`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut argv = vec!["ip", "-n", &self.name];
        argv.extend_from_slice(args);
        command(&argv)
    }

    /// A command run inside the namespace (through `nsenter`).
    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        let net = format!("--net={}", self.path().display());
        let mut full = vec!["nsenter", &net];
        full.extend_from_slice(argv);
        command(&full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs `f` on a new thread that has entered the network namespace at
/// `path`; the thread ends with `f`, so no pooled thread is left in it.
pub fn enter_and_run<T: Send>(path: PathBuf, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            let ns = File::open(&path).map_err(io_err(format!("{}", path.display())))?;
            // SAFETY: setns on a valid namespace fd, for this thread only.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io_err(format!("setns {}", path.display()))(
                    io::Error::last_os_error(),
                ));
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The switch's namespace, holding ports `p1..pN`, and a peer namespace
/// holding the other veth ends `q1..qN`, where the tests send and receive.
/// Offloads are off on both ends: bmv2 reads and writes finished frames and
/// completes no partial checksum. Both namespaces go on drop.
#[derive(Debug)]
pub struct Topology {
    pub switch: Netns,
    pub peers: Netns,
    pub ports: u16,
}

impl Topology {
    pub fn new(tag: &str, ports: u16) -> Result<Self> {
        let t = Self {
            switch: Netns::create(&format!("{tag}-sw"))?,
            peers: Netns::create(&format!("{tag}-pe"))?,
            ports,
        };
        for p in 1..=ports {
            let (a, b) = (Self::switch_port(p), Self::peer_port(p));
            t.switch.ip(&[
                "link",
                "add",
                &a,
                "type",
                "veth",
                "peer",
                "name",
                &b,
                "netns",
                t.peers.name(),
            ])?;
            for (ns, dev) in [(&t.switch, &a), (&t.peers, &b)] {
                ns.exec(&[
                    "ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off",
                    "gro", "off",
                ])?;
                ns.ip(&["link", "set", dev, "up"])?;
            }
        }
        Ok(t)
    }

    /// The switch-side interface of P4 port `p`.
    pub fn switch_port(p: u16) -> String {
        format!("p{p}")
    }

    /// The peer-side interface of P4 port `p`.
    pub fn peer_port(p: u16) -> String {
        format!("q{p}")
    }
}
