//! Packet builders and parsers for the `BPF_PROG_TEST_RUN` scenarios and
//! the bench: Ethernet + IPv4 + TCP/UDP, optionally inside the Talaria
//! encapsulation, with real checksums.

use std::net::Ipv4Addr;

use talaria_common::{
    be::{Be16, Be32},
    maps::FlowKey,
    net::{fold, IPPROTO_TCP, IPPROTO_UDP},
    wire::{TalariaEncap, GENEVE_UDP_PORT},
};

/// An IPv4 5-tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl Tuple {
    pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Self {
            src,
            dst,
            sport,
            dport,
            proto: IPPROTO_TCP,
        }
    }

    pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Self {
            src,
            dst,
            sport,
            dport,
            proto: IPPROTO_UDP,
        }
    }

    /// The other direction.
    pub fn reversed(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }

    /// As a node map key.
    pub fn key(self) -> FlowKey {
        FlowKey {
            src: Be32(self.src.octets()),
            dst: Be32(self.dst.octets()),
            src_port: Be16::new(self.sport),
            dst_port: Be16::new(self.dport),
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// Internet checksum of an IPv4 header.
pub fn ip_checksum(hdr: &[u8]) -> u16 {
    !fold(sum16(hdr))
}

/// Whether the L4 checksum of an IPv4 packet (no Ethernet) verifies.
/// UDP checksum 0 counts as valid (not computed).
pub fn l4_checksum_ok(ip: &[u8]) -> bool {
    let hl = usize::from(ip[0] & 0xf) * 4;
    let l4 = &ip[hl..usize::from(u16::from_be_bytes([ip[2], ip[3]]))];
    if ip[9] == IPPROTO_UDP && l4[6..8] == [0, 0] {
        return true;
    }
    let pseudo = sum16(&ip[12..20]) + u32::from(ip[9]) + l4.len() as u32;
    fold(pseudo + sum16(l4)) == 0xffff
}

/// Whether the IPv4 header checksum verifies.
pub fn ip_checksum_ok(ip: &[u8]) -> bool {
    let hl = usize::from(ip[0] & 0xf) * 4;
    fold(sum16(&ip[..hl])) == 0xffff
}

/// An IPv4 packet (no Ethernet) carrying TCP (with `tcp_flags`, sequence
/// number 1000, acknowledgment 0) or UDP.
pub fn ipv4(t: Tuple, tcp_flags: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_tcp(t, tcp_flags, (1000, 0), payload)
}

/// [`ipv4`] with the TCP sequence and acknowledgment numbers `seq_ack`.
pub fn ipv4_tcp(t: Tuple, tcp_flags: u8, seq_ack: (u32, u32), payload: &[u8]) -> Vec<u8> {
    ipv4_tcp_opts(t, tcp_flags, seq_ack, &[], payload)
}

/// [`ipv4_tcp`] with TCP options `opts` (a multiple of 4 bytes, at most
/// 40; ignored for UDP).
pub fn ipv4_tcp_opts(
    t: Tuple,
    tcp_flags: u8,
    seq_ack: (u32, u32),
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let opts = if t.proto == IPPROTO_TCP { opts } else { &[] };
    assert!(
        opts.len().is_multiple_of(4) && opts.len() <= 40,
        "TCP options"
    );
    let payload = &[opts, payload].concat();
    let l4_len = if t.proto == IPPROTO_TCP { 20 } else { 8 } + payload.len();
    let total = 20 + l4_len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = t.proto;
    p[12..16].copy_from_slice(&t.src.octets());
    p[16..20].copy_from_slice(&t.dst.octets());
    let c = ip_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let l4 = &mut p[20..];
    l4[0..2].copy_from_slice(&t.sport.to_be_bytes());
    l4[2..4].copy_from_slice(&t.dport.to_be_bytes());
    let check_at = if t.proto == IPPROTO_TCP {
        l4[4..8].copy_from_slice(&seq_ack.0.to_be_bytes());
        l4[8..12].copy_from_slice(&seq_ack.1.to_be_bytes());
        l4[12] = ((5 + opts.len() / 4) as u8) << 4;
        l4[13] = tcp_flags;
        l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
        l4[20..].copy_from_slice(payload);
        16
    } else {
        l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        l4[8..].copy_from_slice(payload);
        6
    };
    let pseudo =
        sum16(&t.src.octets()) + sum16(&t.dst.octets()) + u32::from(t.proto) + l4_len as u32;
    let mut c = !fold(pseudo + sum16(l4));
    if c == 0 && t.proto == IPPROTO_UDP {
        c = 0xffff;
    }
    l4[check_at..check_at + 2].copy_from_slice(&c.to_be_bytes());
    p
}

/// Splits an unfragmented IPv4 packet (no options) into fragments of at
/// most `max` payload bytes (a multiple of 8), as a sender does for a
/// datagram bigger than its MTU: same id, DF clear, MF on all but the
/// last, offsets in 8-byte units, fresh header checksums.
pub fn fragments(ip: &[u8], id: u16, max: usize) -> Vec<Vec<u8>> {
    assert!(
        max.is_multiple_of(8) && max > 0,
        "fragment payloads are multiples of 8"
    );
    let payload = &ip[20..];
    let chunks: Vec<&[u8]> = payload.chunks(max).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut f = ip[..20].to_vec();
            f.extend_from_slice(c);
            let total = f.len() as u16;
            f[2..4].copy_from_slice(&total.to_be_bytes());
            f[4..6].copy_from_slice(&id.to_be_bytes());
            let mf = if i + 1 < chunks.len() { 0x2000 } else { 0 };
            let frag = mf | ((i * max / 8) as u16);
            f[6..8].copy_from_slice(&frag.to_be_bytes());
            f[10..12].copy_from_slice(&[0, 0]);
            let c = ip_checksum(&f[..20]);
            f[10..12].copy_from_slice(&c.to_be_bytes());
            f
        })
        .collect()
}

/// Prepends an Ethernet header.
pub fn eth(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(14 + ip.len());
    p.extend_from_slice(&dst);
    p.extend_from_slice(&src);
    p.extend_from_slice(&0x0800u16.to_be_bytes());
    p.extend_from_slice(ip);
    p
}

/// An Ethernet frame with `inner` (an IPv4 packet) in Geneve/Talaria.
pub fn talaria(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    outer_src: Ipv4Addr,
    outer_dst: Ipv4Addr,
    enc: TalariaEncap,
    inner: &[u8],
) -> Vec<u8> {
    let total = 20 + 8 + TalariaEncap::LEN + inner.len();
    let mut ip = vec![0u8; total];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = IPPROTO_UDP;
    ip[12..16].copy_from_slice(&outer_src.octets());
    ip[16..20].copy_from_slice(&outer_dst.octets());
    let c = ip_checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip[20..22].copy_from_slice(&50000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&GENEVE_UDP_PORT.to_be_bytes());
    ip[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    ip[28..48].copy_from_slice(&enc.to_bytes());
    ip[48..].copy_from_slice(inner);
    eth(dst_mac, src_mac, &ip)
}

/// A received Ethernet frame taken apart.
#[derive(Clone, Debug)]
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// The IPv4 packet after the Ethernet header.
    pub ip: Vec<u8>,
}

impl Frame {
    pub fn parse(b: &[u8]) -> Self {
        Self {
            dst_mac: b[0..6].try_into().unwrap(),
            src_mac: b[6..12].try_into().unwrap(),
            ip: b[14..].to_vec(),
        }
    }

    pub fn ip_src(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.ip[12], self.ip[13], self.ip[14], self.ip[15])
    }

    pub fn ip_dst(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.ip[16], self.ip[17], self.ip[18], self.ip[19])
    }

    /// The 5-tuple of the (outer) IPv4 packet.
    pub fn tuple(&self) -> Tuple {
        let l4 = &self.ip[20..];
        Tuple {
            src: self.ip_src(),
            dst: self.ip_dst(),
            sport: u16::from_be_bytes([l4[0], l4[1]]),
            dport: u16::from_be_bytes([l4[2], l4[3]]),
            proto: self.ip[9],
        }
    }

    /// For a Talaria frame: the Geneve/Talaria header and the inner packet.
    pub fn talaria(&self) -> Option<(TalariaEncap, Vec<u8>)> {
        if self.ip[9] != IPPROTO_UDP
            || u16::from_be_bytes([self.ip[22], self.ip[23]]) != GENEVE_UDP_PORT
        {
            return None;
        }
        let parsed = talaria_common::wire::parse(&self.ip[28..]).ok()?;
        let enc = TalariaEncap {
            geneve: parsed.geneve,
            opt: parsed.opt,
        };
        Some((enc, self.ip[28 + parsed.inner_offset..].to_vec()))
    }
}

/// An ICMP error (`icmp_type`/`code`, e.g. 3/4 fragmentation needed with
/// `mtu`) from `src` to `dst` quoting the start of `quoted` (an IPv4
/// packet): its header and 8 bytes, as routers do.
pub fn icmp_error(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    icmp_type: u8,
    code: u8,
    mtu: u16,
    quoted: &[u8],
) -> Vec<u8> {
    let q = &quoted[..quoted.len().min(28)];
    let total = 20 + 8 + q.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = talaria_common::net::IPPROTO_ICMP;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = ip_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20] = icmp_type;
    p[21] = code;
    p[26..28].copy_from_slice(&mtu.to_be_bytes());
    p[28..].copy_from_slice(q);
    let c = !fold(sum16(&p[20..]));
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

/// Whether the ICMP checksum of an IPv4/ICMP packet (no Ethernet) verifies.
pub fn icmp_checksum_ok(ip: &[u8]) -> bool {
    fold(sum16(&ip[20..])) == 0xffff
}

/// An IPv6 5-tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple6 {
    pub src: std::net::Ipv6Addr,
    pub dst: std::net::Ipv6Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl Tuple6 {
    pub fn tcp(src: std::net::Ipv6Addr, sport: u16, dst: std::net::Ipv6Addr, dport: u16) -> Self {
        Self {
            src,
            dst,
            sport,
            dport,
            proto: IPPROTO_TCP,
        }
    }

    pub fn udp(src: std::net::Ipv6Addr, sport: u16, dst: std::net::Ipv6Addr, dport: u16) -> Self {
        Self {
            proto: IPPROTO_UDP,
            ..Self::tcp(src, sport, dst, dport)
        }
    }

    /// The other direction.
    pub fn reversed(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..self
        }
    }

    /// The flow key the node's IPv6 maps use.
    pub fn key(&self) -> talaria_common::maps::FlowKey6 {
        talaria_common::maps::FlowKey6 {
            src: self.src.octets(),
            dst: self.dst.octets(),
            src_port: Be16::new(self.sport),
            dst_port: Be16::new(self.dport),
            proto: self.proto,
            _pad: [0; 3],
        }
    }

    /// The tuple of an IPv6 TCP/UDP packet (no Ethernet, no extension
    /// headers).
    pub fn of(ip: &[u8]) -> Self {
        let a = |o: usize| std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&ip[o..o + 16]).unwrap());
        Self {
            src: a(8),
            dst: a(24),
            sport: u16::from_be_bytes([ip[40], ip[41]]),
            dport: u16::from_be_bytes([ip[42], ip[43]]),
            proto: ip[6],
        }
    }
}

/// An IPv6 packet (no Ethernet, no extension headers) carrying TCP (with
/// `tcp_flags`, sequence number 1000) or UDP, with a real checksum.
pub fn ipv6(t: Tuple6, tcp_flags: u8, payload: &[u8]) -> Vec<u8> {
    let l4_len = if t.proto == IPPROTO_TCP { 20 } else { 8 } + payload.len();
    let mut p = vec![0u8; 40 + l4_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    p[6] = t.proto;
    p[7] = 64;
    p[8..24].copy_from_slice(&t.src.octets());
    p[24..40].copy_from_slice(&t.dst.octets());
    let l4 = &mut p[40..];
    l4[0..2].copy_from_slice(&t.sport.to_be_bytes());
    l4[2..4].copy_from_slice(&t.dport.to_be_bytes());
    let check_at = if t.proto == IPPROTO_TCP {
        l4[4..8].copy_from_slice(&1000u32.to_be_bytes());
        l4[12] = 5 << 4;
        l4[13] = tcp_flags;
        l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
        l4[20..].copy_from_slice(payload);
        16
    } else {
        l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        l4[8..].copy_from_slice(payload);
        6
    };
    let pseudo =
        sum16(&t.src.octets()) + sum16(&t.dst.octets()) + u32::from(t.proto) + l4_len as u32;
    let mut c = !fold(pseudo + sum16(l4));
    if c == 0 && t.proto == IPPROTO_UDP {
        c = 0xffff;
    }
    l4[check_at..check_at + 2].copy_from_slice(&c.to_be_bytes());
    p
}

/// Whether the TCP/UDP checksum of an IPv6 packet (no Ethernet, no
/// extension headers) verifies; a UDP checksum of 0 does not (IPv6
/// requires one).
pub fn l4_checksum6_ok(ip: &[u8]) -> bool {
    let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let l4 = &ip[40..40 + len];
    if ip[6] == IPPROTO_UDP && l4[6..8] == [0, 0] {
        return false;
    }
    let pseudo = sum16(&ip[8..40]) + u32::from(ip[6]) + len as u32;
    fold(pseudo + sum16(l4)) == 0xffff
}

/// An ICMPv6 error (`icmp_type`/`code`; `value`: the MTU of a Packet Too
/// Big, the pointer of a parameter problem, else 0) from `src` to `dst`
/// quoting `quoted` (an IPv6 packet) as far as the message stays within
/// 1280 bytes (RFC 4443 §2.4(c)), with a real checksum.
pub fn icmp6_error(
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    icmp_type: u8,
    code: u8,
    value: u32,
    quoted: &[u8],
) -> Vec<u8> {
    let q = &quoted[..quoted.len().min(1280 - 48)];
    let len = 8 + q.len();
    let mut p = vec![0u8; 40 + len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = talaria_common::net::IPPROTO_ICMPV6;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40] = icmp_type;
    p[41] = code;
    p[44..48].copy_from_slice(&value.to_be_bytes());
    p[48..].copy_from_slice(q);
    let c = !fold(icmp6_sum(&p));
    p[42..44].copy_from_slice(&c.to_be_bytes());
    p
}

/// The one's complement sum of an IPv6/ICMPv6 packet's message and its
/// pseudo-header.
fn icmp6_sum(ip: &[u8]) -> u32 {
    let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    sum16(&ip[8..40])
        + len as u32
        + u32::from(talaria_common::net::IPPROTO_ICMPV6)
        + sum16(&ip[40..40 + len])
}

/// Whether the ICMPv6 checksum of an IPv6/ICMPv6 packet (no Ethernet, no
/// extension headers) verifies.
pub fn icmp6_checksum_ok(ip: &[u8]) -> bool {
    fold(icmp6_sum(ip)) == 0xffff
}

/// Prepends an Ethernet header with EtherType IPv6.
pub fn eth6(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut p = eth(dst, src, ip);
    p[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    p
}

#[cfg(test)]
mod ipv6_tests {
    use super::*;

    #[test]
    fn ipv6_packets_have_valid_checksums_and_tuples() {
        let a = "fd00:244:1::2".parse().unwrap();
        let b = "fd00:96::a".parse().unwrap();
        for t in [Tuple6::tcp(a, 40000, b, 80), Tuple6::udp(a, 40000, b, 53)] {
            let p = ipv6(t, 0x02, b"hello");
            assert!(l4_checksum6_ok(&p), "{t:?}");
            assert_eq!(Tuple6::of(&p), t);
            assert_eq!(Tuple6::of(&ipv6(t.reversed(), 0, b"")), t.reversed());
            let mut bad = p.clone();
            bad[23] ^= 1;
            assert!(!l4_checksum6_ok(&bad), "the pseudo-header counts");
            assert_eq!(t.key().reversed(), t.reversed().key());
        }
        assert_eq!(&eth6([1; 6], [2; 6], &[0x60])[12..15], &[0x86, 0xdd, 0x60]);
        let udp = ipv6(Tuple6::udp(a, 40000, b, 53), 0, &[7; 2000]);
        let e = icmp6_error(b, a, 1, 4, 0, &udp);
        assert_eq!(e.len(), 1280, "quoted as far as 1280 bytes go");
        assert!(icmp6_checksum_ok(&e));
        assert_eq!(&e[48..88], &udp[..40]);
        let mut bad = e.clone();
        bad[9] ^= 1;
        assert!(!icmp6_checksum_ok(&bad), "the pseudo-header counts");
    }
}
