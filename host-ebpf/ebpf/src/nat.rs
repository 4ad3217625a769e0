//! Reverse NAT of backend replies and of the ICMP errors backends send
//! about Service flows; relay of the ICMP errors clients send about
//! replies.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use talaria_common::{
    be::{Be16, Be32},
    drop::DropReason,
    maps::{
        node_stat, FlowKey, FragEntry, FragKey, NodeConfig, PodEntry, ReverseEntry, HAIRPIN_SOURCE,
    },
    net::{Ipv4Hdr, IPPROTO_TCP, IPPROTO_UDP, IPV4_HDR_LEN},
    net::{ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED},
    wire::{flags, TalariaOpt},
};

use crate::{
    encap::{decap, encap, flow_sport},
    maps::{drop_pkt, stat, NODE_COOKIES, NODE_FRAGS, NODE_REVERSE},
    mtu::check_mtu,
    skb::{INNER_L4_OFF, IP_OFF, L4_OFF, PASS},
    subst::find_reverse,
};

/// The offset of the L4 checksum of a TCP or UDP header at `l4_off`, and
/// the flag that keeps a zero UDP checksum ("none") zero.
#[inline(always)]
fn l4_check(proto: u8, l4_off: usize) -> (usize, u64) {
    if proto == IPPROTO_TCP {
        (l4_off + 16, 0)
    } else {
        (l4_off + 6, BPF_F_MARK_MANGLED_0 as u64)
    }
}

/// Rewrites the TCP or UDP port at `l4_off + port_off` (0: source, 2:
/// destination) from `old` to `new`, fixing the L4 checksum
/// incrementally (CHECKSUM_PARTIAL and GSO packets included).
#[inline(always)]
pub(crate) fn rewrite_port(
    ctx: &TcContext,
    proto: u8,
    l4_off: usize,
    port_off: usize,
    old: Be16,
    new: Be16,
) -> Result<(), i32> {
    let err = |_| drop_pkt(DropReason::Malformed);
    let (check_off, mangled) = l4_check(proto, l4_off);
    let raw = |v: Be16| u16::from_ne_bytes(v.0) as u64;
    ctx.l4_csum_replace(check_off, raw(old), raw(new), mangled | 2)
        .map_err(err)?;
    ctx.store(l4_off + port_off, &new, 0).map_err(err)
}

/// Offsets of the addresses in an IPv4 header.
pub(crate) const IP_SRC: usize = 12;
const IP_DST: usize = 16;

/// Rewrites the IPv4 address at `ip_off + addr_off` ([`IP_SRC`] or the
/// destination) of a TCP or UDP packet from `old` to `new`, fixing the
/// IPv4 checksum and the L4 checksum (pseudo-header) at `l4_off`
/// incrementally (CHECKSUM_PARTIAL and GSO packets included).
#[inline(always)]
pub(crate) fn rewrite_addr(
    ctx: &TcContext,
    proto: u8,
    (ip_off, l4_off): (usize, usize),
    addr_off: usize,
    old: Be32,
    new: Be32,
) -> Result<(), i32> {
    let err = |_| drop_pkt(DropReason::Malformed);
    let (check_off, mangled) = l4_check(proto, l4_off);
    let raw = |v: Be32| u32::from_ne_bytes(v.0) as u64;
    ctx.l3_csum_replace(ip_off + 10, raw(old), raw(new), 4)
        .map_err(err)?;
    let pseudo = BPF_F_PSEUDO_HDR as u64 | mangled | 4;
    ctx.l4_csum_replace(check_off, raw(old), raw(new), pseudo)
        .map_err(err)?;
    ctx.store(ip_off + addr_off, &new, 0).map_err(err)
}

/// Rewrites the source of a backend reply back to VIP:port, and its
/// destination port back to the client's own when the flow had a
/// substitute (`client_port` non-zero), and a hairpin reply's destination
/// back to the pod itself, fixing the IPv4 and L4 checksums incrementally
/// (works on CHECKSUM_PARTIAL/GSO packets).
#[inline(always)]
pub(crate) fn reverse_nat(
    ctx: &TcContext,
    ip: &Ipv4Hdr,
    ports: [Be16; 2],
    rev: &ReverseEntry,
) -> Result<(), i32> {
    let offs = (IP_OFF, L4_OFF);
    rewrite_addr(ctx, ip.proto, offs, IP_SRC, ip.src, rev.vip)?;
    if ip.dst == HAIRPIN_SOURCE {
        rewrite_addr(ctx, ip.proto, offs, IP_DST, ip.dst, ip.src)?;
    }
    rewrite_port(ctx, ip.proto, L4_OFF, 0, ports[0], rev.vip_port)?;
    if rev.client_port.get() != 0 {
        rewrite_port(ctx, ip.proto, L4_OFF, 2, ports[1], rev.client_port)?;
    }
    Ok(())
}

/// [`rewrite_addr`] for a later fragment: no L4 header here, the first
/// fragment's checksum covered the address.
#[inline(always)]
pub(crate) fn rewrite_fragment_addr(
    ctx: &TcContext,
    ip_off: usize,
    addr_off: usize,
    old: Be32,
    new: Be32,
) -> Result<(), i32> {
    let err = |_| drop_pkt(DropReason::Malformed);
    let raw = |v: Be32| u32::from_ne_bytes(v.0) as u64;
    ctx.l3_csum_replace(ip_off + 10, raw(old), raw(new), 4)
        .map_err(err)?;
    ctx.store(ip_off + addr_off, &new, 0).map_err(err)
}

/// A non-first fragment of a reply datagram whose first fragment was
/// reverse-NATed (`NODE_FRAGS`): its source becomes the VIP (it has no L4
/// header to rewrite) and it is tunnelled to the switch like the first.
/// Fragments of anything else pass.
#[inline(always)]
pub(crate) fn fragment_reply(ctx: &TcContext, cfg: &NodeConfig, ip: &Ipv4Hdr) -> Result<i32, i32> {
    let key = FragKey::of(ip);
    // SAFETY: read-only copy of a map value.
    let Some(f) = (unsafe { NODE_FRAGS.get(&key) }).copied() else {
        return Ok(PASS);
    };
    rewrite_fragment_addr(ctx, IP_OFF, IP_SRC, ip.src, f.vip)?;
    if ip.dst == HAIRPIN_SOURCE {
        rewrite_fragment_addr(ctx, IP_OFF, IP_DST, ip.dst, ip.src)?;
    }
    stat(node_stat::FRAGMENT_NAT);
    encap(
        ctx,
        cfg,
        flags::REPLY | flags::COOKIE_VALID,
        f.service_id,
        f.backend_id,
        f.outer_sport,
        ip.tos,
    )
}

/// Remembers the reverse NAT of a reply's first fragment for the others.
#[inline(always)]
pub(crate) fn note_first_fragment(ip: &Ipv4Hdr, rev: &ReverseEntry, outer_sport: u16) {
    let key = FragKey::of(ip);
    let entry = FragEntry {
        vip: rev.vip,
        service_id: rev.service_id,
        outer_sport,
        backend_id: rev.backend_id,
    };
    let _ = NODE_FRAGS.insert(&key, &entry, 0);
}

const ICMP_OFF: usize = L4_OFF;
/// The packet an ICMP error is about is quoted after the ICMP header.
const ICMP_HDR_LEN: usize = 8;
const EMB_IP_OFF: usize = ICMP_OFF + ICMP_HDR_LEN;
const EMB_L4_OFF: usize = EMB_IP_OFF + IPV4_HDR_LEN;

/// What an ICMP error at `icmp_off` quotes, if it is one talaria relays: a
/// destination-unreachable or time-exceeded error about a TCP or UDP
/// packet, quoted with its ports (no options, not a later fragment).
#[inline(always)]
fn quoted_flow(ctx: &TcContext, icmp_off: usize) -> Option<(Ipv4Hdr, [Be16; 2])> {
    let icmp: [u8; 2] = ctx.load(icmp_off).ok()?;
    if icmp[0] != ICMP_DEST_UNREACH && icmp[0] != ICMP_TIME_EXCEEDED {
        return None;
    }
    let emb: Ipv4Hdr = ctx.load(icmp_off + ICMP_HDR_LEN).ok()?;
    if emb.has_options()
        || emb.frag.get() & 0x1fff != 0
        || (emb.proto != IPPROTO_TCP && emb.proto != IPPROTO_UDP)
    {
        return None;
    }
    let ports = ctx.load(icmp_off + ICMP_HDR_LEN + IPV4_HDR_LEN).ok()?;
    Some((emb, ports))
}

/// The reply a client's ICMP error at `icmp_off` quotes, which must have
/// gone from `from` to `to`, as a flow key (src = `from`). Anything else
/// is not relayed: no quoted ports (`unsupported_protocol`, a ping among
/// them), or someone else's reply (`icmp_spoof`).
#[inline(always)]
fn quoted_reply(ctx: &TcContext, icmp_off: usize, from: Be32, to: Be32) -> Result<FlowKey, i32> {
    let (emb, ports) =
        quoted_flow(ctx, icmp_off).ok_or_else(|| drop_pkt(DropReason::UnsupportedProtocol))?;
    if emb.src != from || emb.dst != to {
        return Err(drop_pkt(DropReason::IcmpSpoof));
    }
    Ok(FlowKey {
        src: emb.src,
        dst: emb.dst,
        src_port: ports[0],
        dst_port: ports[1],
        proto: emb.proto,
        _pad: [0; 3],
    })
}

/// A client pod's ICMP error to a VIP about a reply it got from it (port
/// unreachable from a closed socket, fragmentation needed): the quoted
/// packet is VIP:port → the pod, a flow in the pod's cookie cache, whose
/// cookie takes the error through the switch to the backend that sent the
/// reply (the switch rewrites the quoted source to that backend; netfilter
/// calls this RELATED). An error about no flow of the pod is dropped as
/// spoofed; any other ICMP to a VIP (a ping) is not served, as with
/// kube-proxy.
#[inline(always)]
pub(crate) fn icmp_error_request(
    ctx: &TcContext,
    cfg: &NodeConfig,
    ip: &Ipv4Hdr,
) -> Result<i32, i32> {
    // The reply went from the VIP to the pod: the flow is the reverse.
    let key = quoted_reply(ctx, ICMP_OFF, ip.dst, ip.src)?.reversed();
    // SAFETY: read-only copy of a map value.
    let Some(flow) = (unsafe { NODE_COOKIES.get(&key) }).copied() else {
        return Err(drop_pkt(DropReason::IcmpSpoof));
    };
    check_mtu(ctx, ip, true)?;
    stat(node_stat::ICMP_RELAY);
    encap(
        ctx,
        cfg,
        flags::COOKIE_VALID,
        flow.service_id,
        flow.backend_id,
        flow_sport(&key),
        ip.tos,
    )
}

/// The switch's relay of a client's ICMP error (above) to a local backend
/// pod: the quoted packet is now backend → client as the backend sent it.
/// It is delivered only if it belongs to the backend's flow that the
/// cookie names, with the quoted client port turned into the substitute
/// the backend knows the client by, if the flow has one.
#[inline(always)]
pub(crate) fn icmp_error_to_backend(
    ctx: &TcContext,
    inner: &Ipv4Hdr,
    opt: &TalariaOpt,
    pod: &PodEntry,
) -> Result<i32, i32> {
    // The backend's view of its flow, as its reply left it.
    let key = quoted_reply(ctx, INNER_L4_OFF, inner.dst, inner.src)?;
    let (port, _) = find_reverse(&key, opt.service_id.get())
        .filter(|(_, e)| e.backend_id == opt.backend_id.get())
        .ok_or_else(|| drop_pkt(DropReason::IcmpSpoof))?;
    if port != key.dst_port {
        let err = |_| drop_pkt(DropReason::Malformed);
        let raw16 = |v: Be16| u16::from_ne_bytes(v.0) as u64;
        ctx.l4_csum_replace(INNER_L4_OFF + 2, raw16(key.dst_port), raw16(port), 2)
            .map_err(err)?;
        ctx.store(INNER_L4_OFF + ICMP_HDR_LEN + IPV4_HDR_LEN + 2, &port, 0)
            .map_err(err)?;
    }
    stat(node_stat::ICMP_RELAY);
    decap(ctx, Some(pod))
}

/// A local backend pod's ICMP error (destination unreachable, including
/// fragmentation-needed, or time exceeded) about a Service flow: the
/// quoted packet is client → backend, so it is matched to the
/// reverse-flow entry and rewritten as the client must see it, from and
/// about VIP:port: outer source, quoted destination address and port, the
/// quoted IPv4 checksum and the ICMP checksum. Then it goes to the switch
/// like any reply. The quoted L4 checksum is left alone (receivers do not
/// check it). Anything else passes.
#[inline(always)]
pub(crate) fn icmp_error_reply(
    ctx: &TcContext,
    cfg: &NodeConfig,
    ip: &Ipv4Hdr,
) -> Result<i32, i32> {
    let Some((emb, ports)) = quoted_flow(ctx, ICMP_OFF) else {
        return Ok(PASS);
    };
    // The quoted packet went client → backend: the reverse flow is the
    // other way round.
    let key = FlowKey {
        src: emb.dst,
        dst: emb.src,
        src_port: ports[1],
        dst_port: ports[0],
        proto: emb.proto,
        _pad: [0; 3],
    };
    // SAFETY: read-only copy of a map value.
    let rev = match unsafe { NODE_REVERSE.get(key) } {
        Some(r) => *r,
        None => return Ok(PASS),
    };
    // Only a party of the flow may speak about it: the backend the quoted
    // packet was addressed to (the pod spoof check vouches for the
    // source). Another pod on the node could otherwise inject errors into
    // this flow's client.
    if ip.src != emb.dst {
        return Err(drop_pkt(DropReason::IcmpSpoof));
    }
    check_mtu(ctx, ip, true)?;
    let err = |_| drop_pkt(DropReason::Malformed);
    let raw32 = |v: Be32| u32::from_ne_bytes(v.0) as u64;
    let raw16 = |v: Be16| u16::from_ne_bytes(v.0) as u64;
    // Outer source (the backend pod) → VIP; ICMP has no pseudo-header.
    ctx.l3_csum_replace(IP_OFF + 10, raw32(ip.src), raw32(rev.vip), 4)
        .map_err(err)?;
    ctx.store(IP_OFF + IP_SRC, &rev.vip, 0).map_err(err)?;
    // Quoted destination → VIP, with the quoted header checksum; the ICMP
    // checksum covers both.
    let new_emb_check = Be16::new(talaria_common::net::csum_replace4(
        emb.check.get(),
        emb.dst.get(),
        rev.vip.get(),
    ));
    ctx.l4_csum_replace(ICMP_OFF + 2, raw32(emb.dst), raw32(rev.vip), 4)
        .map_err(err)?;
    ctx.l4_csum_replace(ICMP_OFF + 2, raw16(emb.check), raw16(new_emb_check), 2)
        .map_err(err)?;
    ctx.l4_csum_replace(ICMP_OFF + 2, raw16(ports[1]), raw16(rev.vip_port), 2)
        .map_err(err)?;
    ctx.store(EMB_IP_OFF + 10, &new_emb_check, 0).map_err(err)?;
    ctx.store(EMB_IP_OFF + IP_DST, &rev.vip, 0).map_err(err)?;
    ctx.store(EMB_L4_OFF + 2, &rev.vip_port, 0).map_err(err)?;
    if rev.client_port.get() != 0 {
        // The quoted packet came from the substitute port; the client
        // knows only its own.
        ctx.l4_csum_replace(ICMP_OFF + 2, raw16(ports[0]), raw16(rev.client_port), 2)
            .map_err(err)?;
        ctx.store(EMB_L4_OFF, &rev.client_port, 0).map_err(err)?;
    }
    stat(node_stat::REVERSE_NAT);
    encap(
        ctx,
        cfg,
        flags::REPLY | flags::COOKIE_VALID,
        rev.service_id,
        rev.backend_id,
        flow_sport(&rev.client_view(key)),
        ip.tos,
    )
}
