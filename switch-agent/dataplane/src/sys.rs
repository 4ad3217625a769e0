//! The few bpf(2) commands used directly, with `&self`-friendly file
//! descriptors: map element operations with their flags (so each
//! check-and-write is one syscall), object get by pin path, object info,
//! and BPF_PROG_TEST_RUN, which aya 0.14 does not expose.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// Create a new element or update an existing one.
pub const BPF_ANY: u64 = 0;
/// Create a new element only.
pub const BPF_NOEXIST: u64 = 1;
/// Update an existing element only.
pub const BPF_EXIST: u64 = 2;

/// The `bpf_attr` union, large enough for every command used here.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }

    fn put_u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn put_u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn u32_at(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().unwrap())
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, zero-padded bpf_attr of the size passed.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn map_elem_attr(fd: BorrowedFd<'_>, key: &[u8], value: u64, flags: u64) -> Attr {
    let mut a = Attr::new();
    a.put_u32(0, fd.as_raw_fd() as u32)
        .put_u64(8, key.as_ptr() as u64)
        .put_u64(16, value)
        .put_u64(24, flags);
    a
}

/// BPF_MAP_UPDATE_ELEM with `flags` ([`BPF_ANY`], [`BPF_NOEXIST`], [`BPF_EXIST`]).
pub fn map_update(fd: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
    bpf(
        BPF_MAP_UPDATE_ELEM,
        &mut map_elem_attr(fd, key, value.as_ptr() as u64, flags),
    )
    .map(drop)
}

/// BPF_MAP_LOOKUP_ELEM into `value`; `Ok(false)` when the key is absent.
pub fn map_lookup(fd: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    match bpf(
        BPF_MAP_LOOKUP_ELEM,
        &mut map_elem_attr(fd, key, value.as_mut_ptr() as u64, 0),
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// BPF_MAP_DELETE_ELEM.
pub fn map_delete(fd: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    bpf(BPF_MAP_DELETE_ELEM, &mut map_elem_attr(fd, key, 0, 0)).map(drop)
}

/// BPF_MAP_GET_NEXT_KEY: the key after `key` (the first with `None`), or
/// `Ok(false)` at the end.
pub fn map_next_key(fd: BorrowedFd<'_>, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
    let mut a = Attr::new();
    a.put_u32(0, fd.as_raw_fd() as u32)
        .put_u64(8, key.map_or(0, |k| k.as_ptr() as u64))
        .put_u64(16, next.as_mut_ptr() as u64);
    match bpf(BPF_MAP_GET_NEXT_KEY, &mut a) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// BPF_OBJ_GET: opens a pinned map, program or link.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut a = Attr::new();
    a.put_u64(0, c.as_ptr() as u64);
    let fd = bpf(BPF_OBJ_GET, &mut a)?;
    // SAFETY: the kernel returned a new file descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The ifindex a TCX link is attached to (0 once its device is gone).
pub fn tcx_link_ifindex(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // struct bpf_link_info: type, id, prog_id, then a union aligned to 8
    // whose tcx member starts with the ifindex.
    let mut info = [0u8; 64];
    let mut a = Attr::new();
    a.put_u32(0, fd.as_raw_fd() as u32)
        .put_u32(4, info.len() as u32)
        .put_u64(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(u32::from_ne_bytes(info[16..20].try_into().unwrap()))
}

/// The result of one BPF_PROG_TEST_RUN.
#[derive(Clone, Debug)]
pub struct TestRunOutput {
    /// The program's return value (a TC action).
    pub retval: u32,
    /// Average run time per repetition, in ns, as the kernel measured it.
    pub duration_ns: u32,
    /// The packet after the program ran.
    pub data: Vec<u8>,
}

/// BPF_PROG_TEST_RUN of a TC program on `packet` (an Ethernet frame,
/// ≥ 14 bytes), `repeat` times on the same skb, as if received on
/// `ifindex` (0: the loopback device).
pub fn prog_test_run(
    prog: BorrowedFd<'_>,
    packet: &[u8],
    ifindex: u32,
    repeat: u32,
) -> io::Result<TestRunOutput> {
    let mut out = vec![0u8; packet.len() + 256];
    // A prefix of struct __sk_buff: ifindex is the 11th u32; every other
    // field stays 0, as the kernel requires for the ones it does not take.
    let mut ctx = [0u32; 12];
    ctx[10] = ifindex;
    let mut a = Attr::new();
    a.put_u32(0, prog.as_raw_fd() as u32)
        .put_u32(8, packet.len() as u32)
        .put_u32(12, out.len() as u32)
        .put_u64(16, packet.as_ptr() as u64)
        .put_u64(24, out.as_mut_ptr() as u64)
        .put_u32(32, repeat)
        .put_u32(40, std::mem::size_of_val(&ctx) as u32)
        .put_u64(48, ctx.as_ptr() as u64);
    bpf(BPF_PROG_TEST_RUN, &mut a)?;
    out.truncate(a.u32_at(12) as usize);
    Ok(TestRunOutput {
        retval: a.u32_at(4),
        duration_ns: a.u32_at(36),
        data: out,
    })
}

/// Key size, value size and max entries of a map.
pub fn map_layout(fd: BorrowedFd<'_>) -> io::Result<(u32, u32, u32)> {
    // struct bpf_map_info: type, id, key_size, value_size, max_entries, ...
    let mut info = [0u8; 96];
    let mut a = Attr::new();
    a.put_u32(0, fd.as_raw_fd() as u32)
        .put_u32(4, info.len() as u32)
        .put_u64(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    let at = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().unwrap());
    Ok((at(8), at(12), at(16)))
}

/// BPF_LINK_DETACH: detaches a link now, whoever else holds it.
pub fn link_detach(fd: BorrowedFd<'_>) -> io::Result<()> {
    const BPF_LINK_DETACH: libc::c_long = 34;
    let mut a = Attr::new();
    a.put_u32(0, fd.as_raw_fd() as u32);
    bpf(BPF_LINK_DETACH, &mut a).map(drop)
}
