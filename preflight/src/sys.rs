//! The few system calls the checks need.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: libc::c_long = 0xcafe_4a11;

pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// Whether `path` is the root of a bpffs mount.
pub fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = c_path(path)?;
    // SAFETY: statfs into a zeroed struct with a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as libc::c_long == BPF_FS_MAGIC)
}

/// Mounts a bpffs on `path` unless one is there. Checking and mounting
/// happen under an exclusive lock on a file in /run, because two processes
/// that both saw no bpffs would otherwise stack two mounts, and the pins
/// made under the lower one would vanish from view.
pub fn mount_bpffs(path: &Path) -> io::Result<()> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_file())?;
    // SAFETY: flock on an open fd; released when `lock` is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if is_bpffs(path)? {
        return Ok(());
    }
    let target = c_path(path)?;
    // SAFETY: mount(2) with NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn lock_file() -> PathBuf {
    let run = Path::new("/run");
    let dir = if run.is_dir() {
        run.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join("talaria-bpffs.lock")
}

/// The kernel release string and its (major, minor) version.
pub fn kernel_release() -> Option<(String, (u32, u32))> {
    // SAFETY: uname into a zeroed struct.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates release.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let version = parse_version(&release)?;
    Some((release, version))
}

/// "6.18.0-1-amd64" -> (6, 18).
fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The first executable `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_version("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_version("5.15.167"), Some((5, 15)));
        assert_eq!(parse_version("6"), None);
    }
}
