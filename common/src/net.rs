//! Plain Ethernet, IPv4, IPv6, UDP and TCP headers, and the Internet checksum.
//!
//! Fields are network byte order ([`Be16`], [`Be32`]); every type has
//! alignment 1 so eBPF code can overlay it at any packet offset.

use crate::be::{Be16, Be32};

pub const ETH_HDR_LEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const IPV4_HDR_LEN: usize = 20;
pub const ETH_P_IPV6: u16 = 0x86DD;
/// The fixed IPv6 header; extension headers follow it.
pub const IPV6_HDR_LEN: usize = 40;
pub const UDP_HDR_LEN: usize = 8;
pub const TCP_HDR_LEN: usize = 20;
/// The don't-fragment bit of [`Ipv4Hdr::frag`].
pub const IPV4_DF: u16 = 0x4000;
/// IPv4 `frag` field: the fragment offset bits.
pub const IPV4_FRAG_OFFSET: u16 = 0x1fff;
pub const IPPROTO_ICMP: u8 = 1;
/// ICMP type destination unreachable.
pub const ICMP_DEST_UNREACH: u8 = 3;
/// Destination unreachable code: fragmentation needed and DF set.
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// Destination unreachable code: port unreachable (kube-proxy's REJECT).
pub const ICMP_PORT_UNREACH: u8 = 3;
/// ICMP type time exceeded.
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: Be16,
}
crate::assert_size!(EthHdr, ETH_HDR_LEN);

/// IPv4 header without options.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len: Be16,
    pub id: Be16,
    /// Flags (3 bits) and fragment offset (13 bits).
    pub frag: Be16,
    pub ttl: u8,
    pub proto: u8,
    pub check: Be16,
    pub src: Be32,
    pub dst: Be32,
}
crate::assert_size!(Ipv4Hdr, IPV4_HDR_LEN);

/// The fixed IPv6 header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8), flow label (20).
    pub version_class_flow: Be32,
    pub payload_len: Be16,
    pub next_hdr: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}
crate::assert_size!(Ipv6Hdr, IPV6_HDR_LEN);

impl Ipv6Hdr {
    /// Offset of `hop_limit` in the header.
    pub const HOP_LIMIT_OFFSET: usize = 7;

    #[inline(always)]
    pub const fn version(&self) -> u8 {
        self.version_class_flow.0[0] >> 4
    }
}

impl Ipv4Hdr {
    /// Header length in bytes, options included.
    #[inline(always)]
    pub const fn header_len(&self) -> usize {
        (self.version_ihl & 0x0f) as usize * 4
    }

    /// Whether the header carries options.
    #[inline(always)]
    pub const fn has_options(&self) -> bool {
        self.version_ihl != 0x45
    }

    /// Whether this is a fragment: more-fragments set or a non-zero offset.
    /// (Don't-fragment alone is not.)
    #[inline(always)]
    pub const fn is_fragment(&self) -> bool {
        self.frag.get() & 0x3fff != 0
    }

    /// A header without options, as a host originates one: id 0, TTL 64,
    /// don't-fragment as given, checksum filled.
    #[inline(always)]
    pub fn new(
        tos: u8,
        total_len: u16,
        dont_fragment: bool,
        proto: u8,
        src: Be32,
        dst: Be32,
    ) -> Self {
        let mut h = Self {
            version_ihl: 0x45,
            tos,
            total_len: Be16::new(total_len),
            id: Be16::new(0),
            frag: Be16::new(if dont_fragment { IPV4_DF } else { 0 }),
            ttl: 64,
            proto,
            check: Be16::new(0),
            src,
            dst,
        };
        h.fill_checksum();
        h
    }

    /// Recomputes `check` from the other fields.
    #[inline(always)]
    pub fn fill_checksum(&mut self) {
        self.check = Be16::new(0);
        self.check = Be16::new(!fold(sum16(&self.to_bytes())));
    }

    /// The 20 wire bytes.
    #[inline(always)]
    pub fn to_bytes(&self) -> [u8; IPV4_HDR_LEN] {
        let mut b = [0u8; IPV4_HDR_LEN];
        b[0] = self.version_ihl;
        b[1] = self.tos;
        b[2..4].copy_from_slice(&self.total_len.0);
        b[4..6].copy_from_slice(&self.id.0);
        b[6..8].copy_from_slice(&self.frag.0);
        b[8] = self.ttl;
        b[9] = self.proto;
        b[10..12].copy_from_slice(&self.check.0);
        b[12..16].copy_from_slice(&self.src.0);
        b[16..20].copy_from_slice(&self.dst.0);
        b
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpHdr {
    pub src_port: Be16,
    pub dst_port: Be16,
    pub len: Be16,
    pub check: Be16,
}
crate::assert_size!(UdpHdr, UDP_HDR_LEN);

/// TCP header without options.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpHdr {
    pub src_port: Be16,
    pub dst_port: Be16,
    pub seq: Be32,
    pub ack: Be32,
    /// Data offset (4 bits) and reserved bits.
    pub data_off: u8,
    pub flags: u8,
    pub window: Be16,
    pub check: Be16,
    pub urgent: Be16,
}
crate::assert_size!(TcpHdr, TCP_HDR_LEN);

/// TCP flag bits in [`TcpHdr::flags`].
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// The one's-complement sum of `b`'s 16-bit big-endian words (an even
/// length; bounded by it, so the BPF verifier accepts the loop).
#[inline(always)]
pub fn sum16(b: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i + 1 < b.len() {
        sum += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// Folds a 32-bit one's-complement sum to 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624 incremental update: the checksum after a 32-bit field changes
/// from `old` to `new` (both host-order values of network-order fields).
#[inline(always)]
pub const fn csum_replace4(check: u16, old: u32, new: u32) -> u16 {
    let sum =
        (!check as u32) + (!(old >> 16) & 0xffff) + (!old & 0xffff) + (new >> 16) + (new & 0xffff);
    !fold(sum)
}

/// RFC 1624 incremental update for a 16-bit field.
#[inline(always)]
pub const fn csum_replace2(check: u16, old: u16, new: u16) -> u16 {
    !fold((!check as u32) + (!old as u32 & 0xffff) + new as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Ipv4Hdr {
        Ipv4Hdr {
            version_ihl: 0x45,
            total_len: Be16::new(60),
            id: Be16::new(0x1c46),
            frag: Be16::new(0x4000),
            ttl: 64,
            proto: IPPROTO_TCP,
            src: Be32([172, 16, 10, 99]),
            dst: Be32([172, 16, 10, 12]),
            ..Default::default()
        }
    }

    #[test]
    fn full_checksum_matches_a_known_header() {
        let mut h = header();
        h.fill_checksum();
        // Worked example: 4500 003c 1c46 4000 4006 ... ac10 0a63 ac10 0a0c.
        assert_eq!(h.check.get(), 0xb1e6);
        assert!(!h.is_fragment() && !h.has_options());
    }

    #[test]
    fn incremental_update_equals_recompute() {
        let mut h = header();
        h.fill_checksum();
        let old = h.dst.get();
        h.dst = Be32([10, 244, 1, 7]);
        let incremental = csum_replace4(h.check.get(), old, h.dst.get());
        h.fill_checksum();
        assert_eq!(incremental, h.check.get());

        let old_ttl_word = u16::from_be_bytes([h.ttl, h.proto]);
        h.ttl -= 1;
        let incremental = csum_replace2(
            h.check.get(),
            old_ttl_word,
            u16::from_be_bytes([h.ttl, h.proto]),
        );
        h.fill_checksum();
        assert_eq!(incremental, h.check.get());
    }
}
