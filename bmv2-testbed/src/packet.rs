//! AF_PACKET sockets on the peer ends of the switch ports: raw Ethernet
//! frames in and out, with bounded waits.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Instant,
};

use crate::{io_err, Result};

/// A raw socket bound to one interface, seeing every frame it receives.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    pub ifname: String,
}

impl PacketSocket {
    /// Opens a socket on `ifname`. Must run in the interface's namespace
    /// ([`crate::netns::Netns::run`]); the socket stays bound to it.
    pub fn open(ifname: &str) -> Result<Self> {
        let ifindex = talaria_switch_dataplane::ifindex_of(ifname).map_err(io_err(ifname))?;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(io_err(format!("AF_PACKET socket on {ifname}"))(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: bind with a sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r != 0 {
            return Err(io_err(format!("binding to {ifname}"))(
                io::Error::last_os_error(),
            ));
        }
        Ok(Self {
            fd,
            ifname: ifname.into(),
        })
    }

    /// Sends one frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: send(2) from a valid buffer on a bound socket.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n != frame.len() as isize {
            return Err(io_err(format!(
                "sending {} bytes on {}",
                frame.len(),
                self.ifname
            ))(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// The next frame received (not one this host sent: PACKET_OUTGOING
    /// copies are skipped), or `None` if none is queued.
    pub fn try_recv(&self) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: recvfrom(2) into buffers of the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Ok(None);
                }
                return Err(io_err(format!("receiving on {}", self.ifname))(e));
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
    }
}

/// Waits until one of `sockets` has a frame queued or `deadline` passes;
/// returns the indexes of the ready ones (empty at the deadline).
pub fn wait_any(sockets: &[PacketSocket], deadline: Instant) -> Result<Vec<usize>> {
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: poll(2) on descriptors we own.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io_err("poll")(e));
        }
        return Ok(fds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.revents & libc::POLLIN != 0)
            .map(|(i, _)| i)
            .collect());
    }
}

/// Pins the calling thread to the CPU it is on until dropped, so that
/// frames it sends into a veth enter one CPU's backlog in order.
pub struct PinnedToCpu {
    old: libc::cpu_set_t,
}

impl PinnedToCpu {
    pub fn here() -> Result<Self> {
        // SAFETY: plain syscalls on this thread's own affinity mask.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut old) != 0 {
                return Err(io_err("sched_getaffinity")(io::Error::last_os_error()));
            }
            let cpu = libc::sched_getcpu();
            if cpu < 0 {
                return Err(io_err("sched_getcpu")(io::Error::last_os_error()));
            }
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one) != 0 {
                return Err(io_err("sched_setaffinity")(io::Error::last_os_error()));
            }
            Ok(Self { old })
        }
    }
}

impl Drop for PinnedToCpu {
    fn drop(&mut self) {
        // SAFETY: restores this thread's own affinity mask.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.old) };
    }
}
