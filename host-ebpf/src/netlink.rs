//! Minimal rtnetlink over raw `libc` sockets: dump the links and IPv4 and
//! IPv6 routes of the calling thread's network namespace, and wait for link
//! and route events. Just enough for the agent to find pod veths (lab mode:
//! `/32 dev vethX` routes, and `/128`s for pods' IPv6 addresses; Kubernetes
//! mode: the route of each pod IP) and the uplink MTU; no crate of the
//! workspace speaks netlink yet.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use crate::{Error, Result};

/// One interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, …), empty for physical devices
    /// and loopback.
    pub kind: String,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// One IPv4 or IPv6 route of the main table: `dst/len` via `oif`, with
/// `gateway` if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpAddr,
    pub len: u8,
    pub oif: u32,
    pub gateway: Option<IpAddr>,
}

/// The links and main-table unicast routes at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// By ifindex.
    pub links: BTreeMap<u32, Link>,
    pub routes: Vec<Route>,
}

impl Snapshot {
    /// Dumps both tables.
    pub fn read() -> Result<Self> {
        let sock = Socket::open(0)?;
        let mut links = BTreeMap::new();
        sock.dump(libc::RTM_GETLINK, &[0u8; 16], |ty, body| {
            if ty == libc::RTM_NEWLINK {
                if let Some(l) = parse_link(body) {
                    links.insert(l.ifindex, l);
                }
            }
        })?;
        let mut routes = Vec::new();
        for family in [libc::AF_INET, libc::AF_INET6] {
            let mut rtmsg = [0u8; 12];
            rtmsg[0] = family as u8;
            sock.dump(libc::RTM_GETROUTE, &rtmsg, |ty, body| {
                if ty == libc::RTM_NEWROUTE {
                    if let Some(r) = parse_route(body) {
                        routes.push(r);
                    }
                }
            })?;
        }
        Ok(Self { links, routes })
    }

    /// A link by name.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.values().find(|l| l.name == name)
    }

    /// The device of the host route `ip/32` (no gateway), if any.
    pub fn host_route_dev(&self, ip: IpAddr) -> Option<&Link> {
        let host_len = if ip.is_ipv4() { 32 } else { 128 };
        self.routes
            .iter()
            .find(|r| r.len == host_len && r.dst == ip && r.gateway.is_none())
            .and_then(|r| self.links.get(&r.oif))
    }
}

/// Blocks on an rtnetlink socket subscribed to link and route events
/// in the calling thread's network namespace and calls `on_event` after
/// each batch of messages (and after lost events: the caller resyncs from
/// a fresh [`Snapshot`] anyway). Returns only on a socket error.
pub fn watch(mut on_event: impl FnMut()) -> Result<()> {
    let sock = Socket::open(
        (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_ROUTE | libc::RTMGRP_IPV6_ROUTE) as u32,
    )?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match sock.recv(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // ENOBUFS: events were lost; the resync covers them.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
            Err(e) => return Err(Error::io("netlink recv", e)),
        }
        on_event();
    }
}

struct Socket {
    fd: OwnedFd,
}

const NLMSG_HDRLEN: usize = 16;

impl Socket {
    fn open(groups: u32) -> Result<Self> {
        // SAFETY: plain socket(2); the fd is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(Error::io("netlink socket", std::io::Error::last_os_error()));
        }
        // SAFETY: we own the new fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_nl is valid.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = groups;
        // SAFETY: valid sockaddr_nl of the right size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc != 0 {
            return Err(Error::io("netlink bind", std::io::Error::last_os_error()));
        }
        Ok(Self { fd })
    }

    fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sends a `NLM_F_DUMP` request of type `ty` with `payload` and feeds
    /// every answer (type, body after the netlink header) to `each`.
    fn dump(&self, ty: u16, payload: &[u8], mut each: impl FnMut(u16, &[u8])) -> Result<()> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut req = Vec::with_capacity(len);
        req.extend_from_slice(&(len as u32).to_ne_bytes());
        req.extend_from_slice(&ty.to_ne_bytes());
        req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
        req.extend_from_slice(&1u32.to_ne_bytes()); // seq
        req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
        req.extend_from_slice(payload);
        // SAFETY: sending our buffer.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(Error::io("netlink send", std::io::Error::last_os_error()));
        }
        let mut buf = vec![0u8; 64 * 1024];
        // A dump ends with NLMSG_DONE; bounded anyway (a node has far fewer
        // than 100k links and routes).
        for _ in 0..100_000 {
            let n = self
                .recv(&mut buf)
                .map_err(|e| Error::io("netlink dump", e))?;
            let mut off = 0;
            while off + NLMSG_HDRLEN <= n {
                let mlen =
                    u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
                let mty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2 bytes"));
                if mlen < NLMSG_HDRLEN || off + mlen > n {
                    return Err(Error::Invalid("truncated netlink message".into()));
                }
                match mty as i32 {
                    libc::NLMSG_DONE => return Ok(()),
                    libc::NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(
                            buf[off + NLMSG_HDRLEN..off + NLMSG_HDRLEN + 4]
                                .try_into()
                                .expect("4 bytes"),
                        );
                        if code != 0 {
                            return Err(Error::io(
                                "netlink dump",
                                std::io::Error::from_raw_os_error(-code),
                            ));
                        }
                    }
                    _ => each(mty, &buf[off + NLMSG_HDRLEN..off + mlen]),
                }
                off += (mlen + 3) & !3;
            }
        }
        Err(Error::Invalid("netlink dump did not end".into()))
    }
}

/// Iterates the `rtattr`s in `b`: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, payload))
    })
}

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;

fn u32_of(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}

fn cstr(p: &[u8]) -> String {
    let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

/// An `RTM_NEWLINK` body: `ifinfomsg` (16 bytes) then attributes.
pub fn parse_link(body: &[u8]) -> Option<Link> {
    let ifindex = i32::from_ne_bytes(body.get(4..8)?.try_into().ok()?) as u32;
    let mut l = Link {
        ifindex,
        ..Default::default()
    };
    for (ty, p) in attrs(body.get(16..)?) {
        match ty {
            IFLA_IFNAME => l.name = cstr(p),
            IFLA_ADDRESS if p.len() == 6 => l.mac.copy_from_slice(p),
            IFLA_MTU => l.mtu = u32_of(p)?,
            IFLA_LINKINFO => {
                for (t, q) in attrs(p) {
                    if t == IFLA_INFO_KIND {
                        l.kind = cstr(q);
                    }
                }
            }
            _ => {}
        }
    }
    Some(l)
}

/// An address attribute's payload: 4 bytes IPv4, 16 IPv6.
fn addr_of(p: &[u8]) -> Option<IpAddr> {
    match p.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(p).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(p).ok()?)),
        _ => None,
    }
}

/// An `RTM_NEWROUTE` body: `rtmsg` (12 bytes) then attributes. Only IPv4
/// and IPv6 unicast routes of the main table.
pub fn parse_route(body: &[u8]) -> Option<Route> {
    let (family, dst_len, mut table, ty) = (
        *body.first()?,
        *body.get(1)?,
        *body.get(4)? as u32,
        *body.get(7)?,
    );
    let any = match i32::from(family) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    if ty != libc::RTN_UNICAST {
        return None;
    }
    let mut r = Route {
        dst: any,
        len: dst_len,
        oif: 0,
        gateway: None,
    };
    for (t, p) in attrs(body.get(12..)?) {
        match t {
            RTA_DST => r.dst = addr_of(p)?,
            RTA_OIF => r.oif = u32_of(p)?,
            RTA_GATEWAY => r.gateway = Some(addr_of(p)?),
            RTA_TABLE => table = u32_of(p)?,
            _ => {}
        }
    }
    (table == libc::RT_TABLE_MAIN as u32).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, p: &[u8]) -> Vec<u8> {
        let mut v = ((4 + p.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(p);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    #[test]
    fn parses_link_and_route_messages() {
        let mut link = vec![0u8; 16];
        link[4..8].copy_from_slice(&7i32.to_ne_bytes());
        link.extend(attr(IFLA_IFNAME, b"vpa\0"));
        link.extend(attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 9]));
        link.extend(attr(IFLA_MTU, &1452u32.to_ne_bytes()));
        link.extend(attr(IFLA_LINKINFO, &attr(IFLA_INFO_KIND, b"veth\0")));
        assert_eq!(
            parse_link(&link),
            Some(Link {
                ifindex: 7,
                name: "vpa".into(),
                kind: "veth".into(),
                mac: [2, 0, 0, 0, 0, 9],
                mtu: 1452
            })
        );

        let route_msg = |table: u8, ty: u8, dst: IpAddr| {
            let (family, dst) = match dst {
                IpAddr::V4(a) => (libc::AF_INET, a.octets().to_vec()),
                IpAddr::V6(a) => (libc::AF_INET6, a.octets().to_vec()),
            };
            let len = dst.len() as u8 * 8;
            let mut m = vec![family as u8, len, 0, 0, table, 3, 253, ty, 0, 0, 0, 0];
            m.extend(attr(RTA_TABLE, &u32::from(table).to_ne_bytes()));
            m.extend(attr(RTA_DST, &dst));
            m.extend(attr(RTA_OIF, &7u32.to_ne_bytes()));
            m
        };
        let pod: IpAddr = Ipv4Addr::new(10, 244, 1, 2).into();
        assert_eq!(
            parse_route(&route_msg(libc::RT_TABLE_MAIN, libc::RTN_UNICAST, pod)),
            Some(Route {
                dst: pod,
                len: 32,
                oif: 7,
                gateway: None
            })
        );
        let pod_v6: IpAddr = "fd00:244:1::2".parse().unwrap();
        assert_eq!(
            parse_route(&route_msg(libc::RT_TABLE_MAIN, libc::RTN_UNICAST, pod_v6)),
            Some(Route {
                dst: pod_v6,
                len: 128,
                oif: 7,
                gateway: None
            })
        );
        // Local-table and non-unicast routes are not ours.
        assert_eq!(
            parse_route(&route_msg(libc::RT_TABLE_LOCAL, libc::RTN_UNICAST, pod)),
            None
        );
        assert_eq!(
            parse_route(&route_msg(libc::RT_TABLE_MAIN, libc::RTN_LOCAL, pod)),
            None
        );
    }
}
