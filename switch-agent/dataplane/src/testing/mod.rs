//! Support for the root-only tests and the bench: a network namespace
//! guard, veth pairs, and builders and checkers for talaria packets; and
//! [`scenarios`], the packet scenarios every implementation of the switch
//! pipeline must pass. Nothing here is needed to run the switch.

pub mod scenarios;

use std::{
    fs::File,
    io,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use talaria_common::{
    be::{Be16, Be32},
    net::{fold, Ipv4Hdr, ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP},
    wire::{TalariaEncap, GENEVE_UDP_PORT},
};

/// Runs `ip` with `args`, panicking on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A uniquely named network namespace that the *calling thread* enters on
/// creation and leaves, and deletes, on drop (panics included).
pub struct NetNs {
    pub name: String,
    orig: File,
}

impl NetNs {
    /// Creates `tlr-<tag>-<pid>-<n>` and enters it.
    pub fn enter(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tlr-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        // No IPv6 on the test links: its router and neighbour solicitations
        // would be traffic of the namespace's own, in a switch's counters.
        for conf in ["all", "default"] {
            let key = format!("net.ipv6.conf.{conf}.disable_ipv6=1");
            let out = Command::new("ip")
                .args(["netns", "exec", &name, "sysctl", "-qw", &key])
                .output()
                .expect("running sysctl");
            assert!(out.status.success(), "{key}: {out:?}");
        }
        let orig = File::open("/proc/thread-self/ns/net").expect("own netns");
        let ns = Self { name, orig };
        ns.enter_again();
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Creates a namespace without entering it.
    pub fn create(tag: &str) -> Self {
        let ns = Self::enter(tag);
        ns.leave();
        ns
    }

    /// Makes the calling thread enter this namespace.
    pub fn enter_again(&self) {
        let f = File::open(format!("/var/run/netns/{}", self.name)).expect("netns file");
        // SAFETY: setns on a valid namespace fd.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {}: {}", self.name, io::Error::last_os_error());
    }

    /// Returns the calling thread to the namespace it came from.
    pub fn leave(&self) {
        // SAFETY: setns on a valid namespace fd.
        unsafe { libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.leave();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A MAC address with the locally administered bit, numbered.
pub const fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

/// An inner L4 header to build.
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    Tcp {
        src: u16,
        dst: u16,
    },
    /// UDP; `csum: false` sends a zero checksum.
    Udp {
        src: u16,
        dst: u16,
        csum: bool,
    },
    /// Another protocol with 8 bytes of payload.
    Other(u8),
}

/// An inner IPv4 packet to build.
#[derive(Clone, Debug)]
pub struct Inner {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub l4: L4,
    /// IPv4 options (a multiple of 4 bytes).
    pub options: Vec<u8>,
    /// The flags/fragment-offset field.
    pub frag: u16,
    pub payload: Vec<u8>,
}

impl Inner {
    pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Self {
            src,
            dst,
            l4: L4::Tcp {
                src: sport,
                dst: dport,
            },
            options: vec![],
            frag: 0x4000,
            payload: b"hello".to_vec(),
        }
    }

    pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Self {
            src,
            dst,
            l4: L4::Udp {
                src: sport,
                dst: dport,
                csum: true,
            },
            options: vec![],
            frag: 0,
            payload: b"query".to_vec(),
        }
    }

    /// The IPv4 packet bytes with correct checksums.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (proto, mut l4) = match self.l4 {
            L4::Tcp { src, dst } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&src.to_be_bytes());
                h[2..4].copy_from_slice(&dst.to_be_bytes());
                h[4..8].copy_from_slice(&1u32.to_be_bytes());
                h[12] = 5 << 4;
                h[13] = 0x18;
                h[14..16].copy_from_slice(&512u16.to_be_bytes());
                (IPPROTO_TCP, h)
            }
            L4::Udp { src, dst, .. } => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&src.to_be_bytes());
                h[2..4].copy_from_slice(&dst.to_be_bytes());
                h[4..6].copy_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                (IPPROTO_UDP, h)
            }
            L4::Other(p) => (p, vec![]),
        };
        l4.extend_from_slice(&self.payload);
        let hdr_len = 20 + self.options.len();
        let mut ip = Ipv4Hdr {
            version_ihl: 0x40 | (hdr_len / 4) as u8,
            total_len: Be16::new((hdr_len + l4.len()) as u16),
            id: Be16::new(0x1234),
            frag: Be16::new(self.frag),
            ttl: 64,
            proto,
            src: Be32(self.src.octets()),
            dst: Be32(self.dst.octets()),
            ..Default::default()
        };
        let mut out = ip.to_bytes().to_vec();
        out.extend_from_slice(&self.options);
        ip.check = Be16::new(ipv4_checksum(&out));
        out[10..12].copy_from_slice(&ip.check.0);
        match self.l4 {
            L4::Tcp { .. } => {
                let c = l4_checksum(self.src, self.dst, proto, &l4);
                l4[16..18].copy_from_slice(&c.to_be_bytes());
            }
            L4::Udp { csum: true, .. } => {
                let c = match l4_checksum(self.src, self.dst, proto, &l4) {
                    0 => 0xffff,
                    c => c,
                };
                l4[6..8].copy_from_slice(&c.to_be_bytes());
            }
            _ => {}
        }
        out.extend_from_slice(&l4);
        out
    }
}

/// Internet checksum of `bytes` (the value to store in a zeroed field).
pub fn checksum(bytes: &[u8], init: u32) -> u16 {
    let mut sum = init;
    for c in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    !fold(sum)
}

/// Whether an IPv4 header (options included) carries a correct checksum.
pub fn ipv4_header_ok(header: &[u8]) -> bool {
    checksum(header, 0) == 0
}

/// The checksum to store in an IPv4 header (whatever its field holds now).
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut h = header.to_vec();
    h[10] = 0;
    h[11] = 0;
    checksum(&h, 0)
}

/// TCP/UDP checksum over the pseudo-header and `segment` (checksum field
/// zeroed first).
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut seg = segment.to_vec();
    let off = if proto == IPPROTO_TCP { 16 } else { 6 };
    seg[off] = 0;
    seg[off + 1] = 0;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    let init: u32 = pseudo
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    checksum(&seg, init)
}

/// An outer IPv4 header (no options) around `payload`, with checksum.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, proto: u8, payload: &[u8]) -> Vec<u8> {
    let ip = Ipv4Hdr {
        version_ihl: 0x45,
        total_len: Be16::new((20 + payload.len()) as u16),
        id: Be16::new(0x4321),
        frag: Be16::new(0x4000),
        ttl,
        proto,
        src: Be32(src.octets()),
        dst: Be32(dst.octets()),
        ..Default::default()
    };
    let mut out = ip.to_bytes().to_vec();
    let c = ipv4_checksum(&out);
    out[10..12].copy_from_slice(&c.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An Ethernet frame carrying IPv4.
pub fn eth(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + payload.len());
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    out.extend_from_slice(&ETH_P_IP.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A UDP header (checksum 0) around `payload`.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    out
}

/// A whole talaria frame: Ethernet, outer IPv4, UDP to 6081 (checksum 0),
/// `geneve` (Geneve header and options, raw) and the inner packet.
pub fn tunnel_frame(
    outer_src: Ipv4Addr,
    outer_dst: Ipv4Addr,
    ttl: u8,
    geneve: &[u8],
    inner: &[u8],
) -> Vec<u8> {
    let mut g = geneve.to_vec();
    g.extend_from_slice(inner);
    eth(
        mac(0xaa),
        mac(0x01),
        &ipv4(
            outer_src,
            outer_dst,
            ttl,
            IPPROTO_UDP,
            &udp(50000, GENEVE_UDP_PORT, &g),
        ),
    )
}

/// The standard Geneve + Talaria option bytes.
pub fn talaria(flags: u8, service_id: u16, backend_id: u32) -> Vec<u8> {
    TalariaEncap::new(flags, service_id, backend_id)
        .to_bytes()
        .to_vec()
}

/// Offsets in a frame built by [`tunnel_frame`] with the standard option.
pub mod off {
    pub const OUTER_IP: usize = 14;
    pub const OUTER_UDP: usize = 34;
    pub const GENEVE: usize = 42;
    pub const OPT: usize = 50;
    pub const INNER_IP: usize = 62;
    pub const INNER_L4: usize = 82;
}

/// A switch in its own namespace with `ports` veth ports (`sw1`, `sw2`,
/// ... as P4 ports 1, 2, ..., their peers `peer1`, ... in the same
/// namespace), pinned under a unique bpffs directory. Dropping it detaches
/// and unpins everything and deletes the namespace, also on panic. The
/// creating thread stays inside the namespace while the switch lives.
pub struct TestSwitch {
    pub dp: Option<crate::Dataplane>,
    pub ns: NetNs,
}

impl TestSwitch {
    pub fn new(tag: &str, ports: u16) -> Self {
        let ns = NetNs::enter(tag);
        let mut config = crate::Config {
            pin_dir: std::path::Path::new(crate::BPFFS)
                .join("talaria-test")
                .join(&ns.name),
            ports: Default::default(),
        };
        for p in 1..=ports {
            let (a, b) = (format!("sw{p}"), format!("peer{p}"));
            ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
            ip(&["link", "set", &a, "up"]);
            ip(&["link", "set", &b, "up"]);
            config.ports.insert(p, a);
        }
        let dp = crate::Dataplane::open(config).expect("open data plane");
        Self { dp: Some(dp), ns }
    }

    pub fn dp(&self) -> &crate::Dataplane {
        self.dp.as_ref().expect("open")
    }
}

impl Drop for TestSwitch {
    fn drop(&mut self) {
        if let Some(dp) = self.dp.take() {
            let dir = dp.pin_dir().to_path_buf();
            if dp.detach().is_err() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            // The shared parent goes once the last test switch is gone.
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}
