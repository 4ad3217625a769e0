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
pub const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 type destination unreachable.
pub const ICMPV6_DEST_UNREACH: u8 = 1;
/// Destination unreachable code: port unreachable (kube-proxy's REJECT).
pub const ICMPV6_PORT_UNREACH: u8 = 4;
/// ICMPv6 type Packet Too Big.
pub const ICMPV6_PKT_TOOBIG: u8 = 2;
/// ICMPv6 types below this are errors, which quote the packet they are
/// about; the rest are informational (RFC 4443 §2.1).
pub const ICMPV6_INFO_MIN: u8 = 128;

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

/// TCP options (RFC 9293, section 3.2), as far as talaria reads them.
pub mod tcp_opt {
    /// The most option bytes a TCP header holds (data offset 15 words).
    pub const MAX_LEN: usize = 40;
    /// End of option list.
    pub const EOL: u8 = 0;
    /// No-operation (padding).
    pub const NOP: u8 = 1;
    /// Timestamps (RFC 7323): kind, length 10, TSval, TSecr.
    pub const TIMESTAMPS: u8 = 8;
    /// The length of the Timestamps option.
    pub const TIMESTAMPS_LEN: usize = 10;

    /// One step of the walk of an option list for its Timestamps option.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Step {
        /// The next option starts at this index.
        Next(usize),
        /// The Timestamps option starts at this index (its 10 bytes are
        /// inside the list).
        Found(usize),
        /// No Timestamps option: the list ended (its end, or an EOL), or
        /// is malformed (a length below 2, a Timestamps option whose length
        /// is not 10, or running past the end), or a byte was unreadable.
        End,
    }

    /// Looks at the option at index `i` of an option list of `len` bytes
    /// (at most [`MAX_LEN`]) whose `i`th byte is `byte(i)`. eBPF calls it
    /// once per `bpf_loop` iteration (an open loop of up to 40 steps,
    /// each of which may advance by 1 or by an unknown length, is more
    /// paths than the verifier explores), reading the packet a byte at a
    /// time: no buffer on the stack.
    #[inline(always)]
    pub fn step(len: usize, i: usize, byte: impl Fn(usize) -> Option<u8>) -> Step {
        let len = if len > MAX_LEN { MAX_LEN } else { len };
        if i >= len {
            return Step::End;
        }
        let Some(kind) = byte(i) else {
            return Step::End;
        };
        if kind == EOL {
            return Step::End;
        }
        if kind == NOP {
            return Step::Next(i + 1);
        }
        if i + 1 >= len {
            return Step::End;
        }
        let opt_len = match byte(i + 1) {
            Some(l) if l >= 2 => usize::from(l),
            _ => return Step::End,
        };
        if kind != TIMESTAMPS {
            return Step::Next(i + opt_len);
        }
        if opt_len == TIMESTAMPS_LEN && i + TIMESTAMPS_LEN <= len {
            Step::Found(i)
        } else {
            Step::End
        }
    }

    /// Where the Timestamps option starts in an option list of `len`
    /// bytes whose `i`th byte is `byte(i)`: [`step`] from the first
    /// option on, at most [`MAX_LEN`] times (each advances a byte at
    /// least).
    pub fn timestamps_at(len: usize, byte: impl Fn(usize) -> Option<u8>) -> Option<usize> {
        let mut i = 0;
        for _ in 0..MAX_LEN {
            match step(len, i, &byte) {
                Step::Next(next) => i = next,
                Step::Found(at) => return Some(at),
                Step::End => return None,
            }
        }
        None
    }
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

    /// Walks `opts`, with bytes after them (the payload) that must not be
    /// read as options.
    fn walk(opts: &[u8]) -> Option<usize> {
        let mut seg = [0xeeu8; tcp_opt::MAX_LEN + 12];
        seg[..opts.len()].copy_from_slice(opts);
        seg[opts.len()..opts.len() + 2].copy_from_slice(&[8, 10]);
        tcp_opt::timestamps_at(opts.len(), |i| seg.get(i).copied())
    }

    /// `parts` one after the other (at most [`tcp_opt::MAX_LEN`] bytes).
    fn cat(parts: &[&[u8]]) -> ([u8; tcp_opt::MAX_LEN], usize) {
        let mut b = [0u8; tcp_opt::MAX_LEN];
        let mut n = 0;
        for p in parts {
            b[n..n + p.len()].copy_from_slice(p);
            n += p.len();
        }
        (b, n)
    }

    fn walk_parts(parts: &[&[u8]]) -> Option<usize> {
        let (b, n) = cat(parts);
        walk(&b[..n])
    }

    #[test]
    fn timestamps_are_found_anywhere_in_a_well_formed_option_list() {
        let ts = [8, 10, 1, 2, 3, 4, 5, 6, 7, 8];
        // NOP NOP TS (every segment after the handshake).
        assert_eq!(walk_parts(&[&[1, 1], &ts]), Some(2));
        // A Linux SYN-ACK: MSS, SACK_PERM, TS, NOP, window scale.
        assert_eq!(
            walk_parts(&[&[2, 4, 5, 0xb4, 4, 2], &ts, &[1, 3, 3, 7]]),
            Some(6)
        );
        // MSS, NOP NOP TS, NOP window scale (SACK off).
        assert_eq!(
            walk_parts(&[&[2, 4, 5, 0xb4, 1, 1], &ts, &[1, 3, 3, 7]]),
            Some(6)
        );
        // TS at the very end, after SACK blocks.
        assert_eq!(
            walk_parts(&[&[1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2], &ts]),
            Some(12)
        );
        // The most option bytes there are: 30 bytes of NOPs, then TS.
        assert_eq!(walk_parts(&[&[1; 30], &ts]), Some(30));
    }

    #[test]
    fn malformed_option_lists_have_no_timestamps() {
        let ts = [8, 10, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(walk(&[]), None);
        assert_eq!(walk(&[1, 1, 1, 1]), None);
        // EOL before TS.
        assert_eq!(walk_parts(&[&[0, 1], &ts]), None);
        // Lengths 0 and 1 (a walk that would never advance, or by one).
        assert_eq!(walk_parts(&[&[2, 0, 1, 1], &ts]), None);
        assert_eq!(walk_parts(&[&[2, 1, 1, 1], &ts]), None);
        // An option running past the header hides the rest.
        assert_eq!(walk_parts(&[&[1, 1, 2, 40], &ts]), None);
        // TS truncated by the header's end, or with another length.
        assert_eq!(walk(&[1, 1, 8, 10, 0, 0, 0, 0]), None);
        assert_eq!(walk(&[1, 1, 8, 6, 0, 0, 0, 0]), None);
        // A kind with its length byte missing.
        assert_eq!(walk(&[1, 1, 1, 2]), None);
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
