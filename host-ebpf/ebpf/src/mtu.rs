//! Path MTU: the check before encapsulation and the ICMP
//! fragmentation-needed error sent back to a pod whose packet does not fit;
//! and the ICMP destination-unreachable errors the node answers a pod with
//! (also port unreachable, for a Service port without endpoints).

use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    bindings::BPF_F_INGRESS,
    helpers::{bpf_csum_diff, bpf_redirect, bpf_redirect_peer, bpf_skb_change_tail},
    programs::TcContext,
};
use talaria_common::{
    drop::DropReason,
    maps::{mtu, mtu_stat},
    net::{fold, sum16, Ipv4Hdr, ETH_HDR_LEN, ETH_P_IP, IPPROTO_ICMP, IPPROTO_TCP, IPV4_DF},
    net::{
        ICMPV6_DEST_UNREACH, ICMPV6_PKT_TOOBIG, ICMPV6_PORT_UNREACH, IPPROTO_ICMPV6, IPV4_HDR_LEN,
        IPV6_HDR_LEN, UDP_HDR_LEN,
    },
    net::{ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMP_PORT_UNREACH},
    wire::ENCAP_OVERHEAD,
};

use crate::{
    maps::{count_mtu, drop_pkt, NODE_MTU},
    skb::{skb_ifindex, skb_ingress_ifindex, IP_OFF, L4_OFF, REDIRECT, SHOT},
};

/// Path MTU check, before a pod's packet (`ip`, no options) is
/// encapsulated: the packet, or each GSO segment of it, plus the 48 bytes
/// of encapsulation must fit in the uplink MTU (`NODE_MTU`; 0 = no check).
/// `adjust_room` does no such check and veth drops oversize frames
/// silently, so without this a pod whose MTU is larger than uplink − 48
/// loses its full-size packets and never learns why.
///
/// Too big with DF set: the packet is rewritten into an ICMP
/// fragmentation-needed error to the pod ([`frag_needed`]), so its PMTU
/// discovery clamps to uplink − 48. Too big without DF, or an ICMP error
/// (`icmp_error`; no error about an error): dropped and counted.
/// `Err` carries the verdict.
#[inline(always)]
pub(crate) fn check_mtu(ctx: &TcContext, ip: &Ipv4Hdr, icmp_error: bool) -> Result<(), i32> {
    let uplink_mtu = match NODE_MTU.get(mtu::UPLINK_MTU) {
        Some(m) if *m != 0 => *m,
        _ => return Ok(()),
    };
    // SAFETY: the context pointer is valid for the program's run.
    let gso_size = unsafe { (*ctx.skb.skb).gso_size };
    let seg_len = if gso_size == 0 {
        ip.total_len.get() as u32
    } else {
        // A GSO packet: each segment carries the headers and gso_size
        // bytes of payload.
        let l4_hdr = if ip.proto == IPPROTO_TCP {
            let doff: u8 = ctx
                .load(L4_OFF + 12)
                .map_err(|_| drop_pkt(DropReason::Malformed))?;
            ((doff >> 4) as u32) * 4
        } else {
            UDP_HDR_LEN as u32
        };
        IPV4_HDR_LEN as u32 + l4_hdr + gso_size
    };
    if seg_len + ENCAP_OVERHEAD as u32 <= uplink_mtu {
        return Ok(());
    }
    if icmp_error {
        count_mtu(mtu_stat::TOO_BIG_ICMP);
        return Err(SHOT);
    }
    if ip.frag.get() & IPV4_DF == 0 {
        count_mtu(mtu_stat::TOO_BIG_NO_DF);
        return Err(SHOT);
    }
    let next_hop = uplink_mtu.saturating_sub(ENCAP_OVERHEAD as u32);
    let verdict = dest_unreachable(ctx, ip, ICMP_FRAG_NEEDED, next_hop as u16);
    if verdict == REDIRECT {
        count_mtu(mtu_stat::FRAG_NEEDED);
    }
    Err(verdict)
}

/// Answers a new flow to a Service port without a usable endpoint with
/// ICMP port unreachable from the VIP, at once, as kube-proxy's REJECT
/// rule does: the client's connect() or recv() fails with ECONNREFUSED
/// instead of waiting for its timeout.
#[inline(always)]
pub(crate) fn reject(ctx: &TcContext, ip: &Ipv4Hdr) -> i32 {
    dest_unreachable(ctx, ip, ICMP_PORT_UNREACH, 0)
}

/// Bytes of the offending packet quoted in an ICMP error: its IPv4 header
/// (never with options on this path) and the first 8 bytes of L4 (the
/// ports, and the TCP sequence number), which is what RFC 792 asks for and
/// all that Linux's `tcp_v4_err`/`__udp4_lib_err` read.
const FRAG_QUOTE_LEN: usize = IPV4_HDR_LEN + 8;

/// The ICMP destination-unreachable frame that replaces a pod's packet.
#[repr(C)]
struct DestUnreachable {
    macs: [u8; 12],
    ether_type: [u8; 2],
    ip: Ipv4Hdr,
    icmp: [u8; 8],
    quoted: [u8; FRAG_QUOTE_LEN],
}

/// Length of [`DestUnreachable`] on the wire (70 bytes).
const DEST_UNREACHABLE_LEN: usize = ETH_HDR_LEN + IPV4_HDR_LEN + 8 + FRAG_QUOTE_LEN;

/// Rewrites the pod's packet in place into ICMP destination unreachable
/// (type 3) with `code`: fragmentation needed (4) with next-hop MTU
/// `next_hop`, as a router on the path would, or port unreachable (3), as
/// the Service would if it had a port closed; and hands it straight back to
/// the pod or the node that sent it ([`answer`]).
///
/// - Addresses: source = the packet's destination (the VIP, or on the
///   backend side the client the reply was going to), destination = the
///   pod. Linux accepts these errors from any source; it matches the
///   quoted header to its socket (and TCP checks the quoted sequence
///   number), so the error needs no address of the node's, and the pod
///   sees it "from" the peer it was talking to, which also keeps it
///   RELATED to that flow for a conntrack inside the pod.
/// - MACs swapped: the pod's MAC becomes the destination.
/// - `bpf_skb_change_tail` trims the skb to 70 bytes and clears its GSO
///   state; every checksum is computed in full here. The skb keeps the
///   pod's CHECKSUM_PARTIAL mark if it had one; local delivery treats
///   that as verified and never completes it, so it does no harm.
#[inline(always)]
fn dest_unreachable(ctx: &TcContext, ip: &Ipv4Hdr, code: u8, next_hop: u16) -> i32 {
    let err = |_| drop_pkt(DropReason::Malformed);
    let macs: [u8; 12] = match ctx.load(0) {
        Ok(m) => m,
        Err(e) => return err(e),
    };
    let quoted: [u8; FRAG_QUOTE_LEN] = match ctx.load(IP_OFF) {
        Ok(q) => q,
        Err(e) => return err(e),
    };
    let total = (IPV4_HDR_LEN + 8 + FRAG_QUOTE_LEN) as u16;
    let mtu = next_hop.to_be_bytes();
    let mut out = DestUnreachable {
        macs: [
            macs[6], macs[7], macs[8], macs[9], macs[10], macs[11], macs[0], macs[1], macs[2],
            macs[3], macs[4], macs[5],
        ],
        ether_type: ETH_P_IP.to_be_bytes(),
        // IPTOS_PREC_INTERNETCONTROL, as Linux sends ICMP errors.
        ip: Ipv4Hdr::new(0xc0, total, false, IPPROTO_ICMP, ip.dst, ip.src),
        icmp: [ICMP_DEST_UNREACH, code, 0, 0, 0, 0, mtu[0], mtu[1]],
        quoted,
    };
    let check = !fold(sum16(&out.icmp) + sum16(&out.quoted));
    out.icmp[2..4].copy_from_slice(&check.to_be_bytes());
    // SAFETY: plain helper call on this program's skb.
    let rc = unsafe { bpf_skb_change_tail(ctx.skb.skb, DEST_UNREACHABLE_LEN as u32, 0) };
    if rc != 0 {
        return drop_pkt(DropReason::Malformed);
    }
    if let Err(e) = ctx.store(0, &out, 0) {
        return err(e);
    }
    answer(ctx)
}

/// Hands an answer built in place back to its sender: a pod (the peer of
/// its veth, whose packet entered the host there), or the node itself,
/// whose own packet entered nowhere (`node_host_egress`): in again through
/// the device it was leaving by.
#[inline(always)]
pub(crate) fn answer(ctx: &TcContext) -> i32 {
    let ifindex = skb_ifindex(ctx);
    if skb_ingress_ifindex(ctx) == 0 {
        // SAFETY: plain helper call.
        unsafe { bpf_redirect(ifindex, BPF_F_INGRESS as u64) };
    } else {
        // SAFETY: plain helper call. The peer of this veth is the pod.
        unsafe { bpf_redirect_peer(ifindex, 0) };
    }
    REDIRECT
}

/// The IPv6 minimum link MTU (RFC 8200 §5): no Packet Too Big reports
/// less, and an ICMPv6 error is at most this long (RFC 4443 §2.4(c)).
pub(crate) const IPV6_MIN_MTU: u32 = 1280;
/// Bytes of the offending packet a Packet Too Big quotes: as much as fits
/// in 1280 bytes after the IPv6 and ICMPv6 headers (1232). Sent only
/// about packets longer than 1280 bytes, so there always are that many.
const PTB_QUOTE_LEN: usize = IPV6_MIN_MTU as usize - IPV6_HDR_LEN - 8;
/// Bytes a port unreachable (REJECT) quotes: the IPv6 header and the
/// fixed TCP header, or the UDP header (the ports, and TCP's sequence
/// number, which Linux checks against the socket); every such packet has
/// that many. Not fewer for TCP: `bpf_skb_change_tail` will not trim a
/// CHECKSUM_PARTIAL skb (a pod's, with offloads) short of its L4 checksum
/// field, which is at byte 16 of TCP.
const REJECT_QUOTE_TCP: usize = IPV6_HDR_LEN + 20;
const REJECT_QUOTE_UDP: usize = IPV6_HDR_LEN + UDP_HDR_LEN;
/// The headers an ICMPv6 answer gets in front of its quote.
const ICMP6_HDRS_LEN: usize = IPV6_HDR_LEN + 8;

/// The ICMPv6 checksum's pseudo-header (RFC 8200 §8.1) followed by the
/// ICMPv6 header, summed in one go.
#[repr(C)]
struct Icmp6Pseudo {
    src: [u8; 16],
    dst: [u8; 16],
    len: [u8; 4],
    next: [u8; 4],
    icmp: [u8; 8],
}

/// Adds `len` bytes (a multiple of 4, at most 512: what every kernel's
/// `bpf_csum_diff` takes) at `p` to the one's complement sum `seed`.
#[inline(always)]
fn csum_add(p: *const u8, len: u32, seed: u32) -> Result<u32, i32> {
    // SAFETY: the verifier checks that `p` has `len` readable bytes.
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, len, seed) };
    if r < 0 {
        return Err(drop_pkt(DropReason::Malformed));
    }
    Ok(r as u32)
}

/// Answers a pod's too-big IPv6 packet (no extension headers, longer than
/// 1280 bytes) with an ICMPv6 Packet Too Big (type 2, code 0, MTU `mtu`;
/// RFC 8201, RFC 4443 §3.2), as [`dest_unreachable`] does for IPv4. It
/// quotes the first 1232 bytes of the packet, so that the message is 1280
/// bytes, the most RFC 4443 §2.4(c) allows. See [`answer6`].
#[inline(never)]
pub(crate) fn packet_too_big6(ctx: &TcContext, mtu: u32) -> i32 {
    let m = mtu.to_be_bytes();
    let icmp = [ICMPV6_PKT_TOOBIG, 0, 0, 0, m[0], m[1], m[2], m[3]];
    match answer6::<PTB_QUOTE_LEN>(ctx, icmp) {
        Ok(a) | Err(a) => a,
    }
}

/// Refuses a pod's new IPv6 flow to a port without a usable endpoint with
/// an ICMPv6 port unreachable (type 1, code 4) from the VIP6, as
/// kube-proxy's REJECT does (ip6tables' default answer, for TCP too). See
/// [`answer6`].
#[inline(never)]
pub(crate) fn port_unreachable6(ctx: &TcContext) -> i32 {
    let icmp = [ICMPV6_DEST_UNREACH, ICMPV6_PORT_UNREACH, 0, 0, 0, 0, 0, 0];
    let tcp = ctx.load::<u8>(IP_OFF + 6).is_ok_and(|p| p == IPPROTO_TCP);
    let answered = if tcp {
        answer6::<REJECT_QUOTE_TCP>(ctx, icmp)
    } else {
        answer6::<REJECT_QUOTE_UDP>(ctx, icmp)
    };
    match answered {
        Ok(a) | Err(a) => a,
    }
}

/// Rewrites a pod's IPv6 packet (no extension headers, at least `QUOTE`
/// bytes long) in place into the ICMPv6 error `icmp` (its header, the
/// checksum left 0) quoting its first `QUOTE` bytes, and hands it straight
/// back to the pod ([`answer`]):
///
/// - Addresses: source = the packet's destination (the VIP6, or on the
///   backend side the client the reply was going to), destination = the
///   pod, for the reasons [`dest_unreachable`] gives: Linux takes these
///   errors from any source and matches the quoted header to its socket
///   (TCP also checks the quoted sequence number); the node has no IPv6
///   address a pod could reach anyway. Hop limit 64, as Linux's
///   `icmp6_send` and the IPv4 answer use (255 is for neighbour discovery,
///   whose receivers check it; no error receiver does). Traffic class 0,
///   flow label 0.
/// - How: `bpf_skb_change_tail` trims the skb to Ethernet + `QUOTE` bytes
///   (clearing its GSO state), `adjust_room(+48, MAC)` opens room for the
///   IPv6 and ICMPv6 headers after the Ethernet header (the network header
///   moves with it), and the checksum (pseudo-header, ICMPv6 header and
///   quote) is summed with `bpf_csum_diff` over the packet itself, in
///   pieces of at most 512 bytes: a 1232-byte quote would not fit the
///   stack. As with IPv4, a skb the pod marked CHECKSUM_PARTIAL keeps the
///   mark, and the pod's stack takes it as verified; otherwise
///   `adjust_room` leaves it CHECKSUM_NONE and the pod verifies the
///   checksum.
/// - Called from [`crate::v6::pod_egress6`] itself, not from below
///   `steer6`/`reply6`: there its frame would overflow the 512-byte stack
///   of the call chain.
#[inline(always)]
fn answer6<const QUOTE: usize>(ctx: &TcContext, icmp: [u8; 8]) -> Result<i32, i32> {
    let err = |_| drop_pkt(DropReason::Malformed);
    let macs: [u8; 12] = ctx.load(0).map_err(err)?;
    let mut ps = Icmp6Pseudo {
        // From the address the pod sent to, to the pod.
        src: ctx.load(IP_OFF + 24).map_err(err)?,
        dst: ctx.load(IP_OFF + 8).map_err(err)?,
        len: ((ICMP6_HDRS_LEN - IPV6_HDR_LEN + QUOTE) as u32).to_be_bytes(),
        next: [0, 0, 0, IPPROTO_ICMPV6],
        icmp,
    };
    // The quote, summed where it is: linear for its first bytes.
    let end = (IP_OFF + QUOTE) as u32;
    ctx.pull_data(end).map_err(err)?;
    let (data, data_end) = (ctx.data(), ctx.data_end());
    if data + IP_OFF + QUOTE > data_end {
        return Err(drop_pkt(DropReason::Malformed));
    }
    let q = (data + IP_OFF) as *const u8;
    let mut sum = csum_add((&raw const ps).cast(), size_of::<Icmp6Pseudo>() as u32, 0)?;
    let mut done = 0;
    while done < QUOTE {
        let piece = if QUOTE - done > 512 {
            512
        } else {
            QUOTE - done
        };
        // SAFETY: within the bytes checked against data_end above.
        sum = csum_add(unsafe { q.add(done) }, piece as u32, sum)?;
        done += piece;
    }
    let check = !fold(sum);
    ps.icmp[2..4].copy_from_slice(&check.to_ne_bytes());

    // SAFETY: plain helper call on this program's skb.
    let rc = unsafe { bpf_skb_change_tail(ctx.skb.skb, end, 0) };
    if rc != 0 {
        return Err(drop_pkt(DropReason::Malformed));
    }
    ctx.adjust_room(ICMP6_HDRS_LEN as i32, BPF_ADJ_ROOM_MAC, 0)
        .map_err(err)?;
    // Written piece by piece, to keep this subprogram's stack small: the
    // MACs swapped (the EtherType stays IPv6), the IPv6 header's first 8
    // bytes, its addresses, the ICMPv6 header.
    let swapped: [[u8; 6]; 2] = [
        [macs[6], macs[7], macs[8], macs[9], macs[10], macs[11]],
        [macs[0], macs[1], macs[2], macs[3], macs[4], macs[5]],
    ];
    ctx.store(0, &swapped, 0).map_err(err)?;
    let l = ((ICMP6_HDRS_LEN - IPV6_HDR_LEN + QUOTE) as u16).to_be_bytes();
    let first: [u8; 8] = [0x60, 0, 0, 0, l[0], l[1], IPPROTO_ICMPV6, 64];
    ctx.store(IP_OFF, &first, 0).map_err(err)?;
    ctx.store(IP_OFF + 8, &ps.src, 0).map_err(err)?;
    ctx.store(IP_OFF + 24, &ps.dst, 0).map_err(err)?;
    ctx.store(IP_OFF + IPV6_HDR_LEN, &ps.icmp, 0).map_err(err)?;
    Ok(answer(ctx))
}
