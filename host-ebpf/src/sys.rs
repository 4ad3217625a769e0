//! Small Linux helpers: interface facts from sysfs, bpffs, and network
//! namespaces (used by the lab mode, the tests and the bench).

use std::{fs, os::fd::AsRawFd, path::Path, process::Command};

use crate::{Error, Result};

/// The ifindex of `ifname` in the calling thread's network namespace
/// (ioctl-based, so unlike sysfs it follows `setns`).
pub fn ifindex(ifname: &str) -> Result<u32> {
    let c = std::ffi::CString::new(ifname)
        .map_err(|_| Error::Invalid(format!("interface {ifname:?}")))?;
    // SAFETY: NUL-terminated name.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(Error::io(
            format!("interface {ifname}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(idx)
}

/// Runs an interface ioctl (`SIOCGIF*`) on `ifname` in the calling
/// thread's network namespace and returns the filled `ifreq`.
fn ifreq_ioctl(ifname: &str, request: libc::c_ulong, what: &str) -> Result<libc::ifreq> {
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(Error::Invalid(format!("interface {ifname:?}")));
    }
    // SAFETY: a datagram socket for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::io("socket", std::io::Error::last_os_error()));
    }
    // SAFETY: zeroed ifreq with a NUL-terminated name that fits.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq for these get-requests.
    let rc = unsafe { libc::ioctl(fd, request, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(Error::io(format!("{what} {ifname}"), err));
    }
    Ok(req)
}

/// The MAC address of `ifname` in the calling thread's network namespace.
pub fn mac(ifname: &str) -> Result<[u8; 6]> {
    let req = ifreq_ioctl(ifname, libc::SIOCGIFHWADDR, "SIOCGIFHWADDR")?;
    // SAFETY: the kernel filled ifru_hwaddr.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(mac)
}

/// The L3 MTU of `ifname` in the calling thread's network namespace
/// (`SIOCGIFMTU`).
pub fn mtu(ifname: &str) -> Result<u32> {
    let req = ifreq_ioctl(ifname, libc::SIOCGIFMTU, "SIOCGIFMTU")?;
    // SAFETY: the kernel filled ifru_mtu.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(mtu.max(0) as u32)
}

/// Moves the calling thread (call it before spawning others) into the
/// network namespace `/var/run/netns/<name>`. Unlike `ip netns exec`, this
/// keeps the host's mount namespace, so the pins under /sys/fs/bpf stay
/// visible across agent restarts.
pub fn enter_netns(name: &str) -> Result<()> {
    let path = format!("/var/run/netns/{name}");
    let file = fs::File::open(&path).map_err(|e| Error::io(path.clone(), e))?;
    // SAFETY: valid netns fd.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(Error::io(
            format!("setns {path}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Makes sure bpffs is mounted (mounting it if not) and creates `dir`.
pub fn ensure_bpffs(dir: &Path) -> Result<()> {
    talaria_preflight::ensure(&[talaria_preflight::Need::Bpffs])?;
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))
}

/// Runs `ip`/`ethtool`/`iptables`-style commands; fails with their stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| Error::io(format!("spawn {cmd}"), e))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` on a new thread inside the network namespace `name` (created
/// with `ip netns add`), returning its result.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let path = format!("/var/run/netns/{name}");
    let file = fs::File::open(&path).map_err(|e| Error::io(path.clone(), e))?;
    in_netns_file(std::sync::Arc::new(file), f)
}

/// Runs `f` on a new thread inside the network namespace open as `netns`
/// (e.g. `/proc/thread-self/ns/net` opened earlier), returning its result.
pub fn in_netns_file<T: Send + 'static>(
    netns: std::sync::Arc<fs::File>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let handle = std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a valid netns fd.
        let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(Error::io("setns", std::io::Error::last_os_error()));
        }
        Ok(f())
    });
    handle
        .join()
        .map_err(|_| Error::Invalid("thread in a network namespace panicked".into()))?
}

/// Spawns `f` on a thread inside the network namespace `name` and returns
/// its join handle (for servers and long transfers).
pub fn spawn_in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>> {
    let path = format!("/var/run/netns/{name}");
    let file = fs::File::open(&path).map_err(|e| Error::io(path.clone(), e))?;
    Ok(std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a valid netns fd.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    }))
}

/// A network namespace that is deleted when dropped (also on panic).
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// `ip netns add name` with loopback up.
    pub fn new(name: &str) -> Result<Self> {
        let _ = run("ip", &["netns", "del", name]);
        run("ip", &["netns", "add", name])?;
        let ns = Self { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n name args…`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["-n", self.name.as_str()];
        v.extend_from_slice(args);
        run("ip", &v)
    }

    /// `ip netns exec name cmd args…`
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Result<String> {
        let mut v = vec!["netns", "exec", self.name.as_str(), cmd];
        v.extend_from_slice(args);
        run("ip", &v)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}
