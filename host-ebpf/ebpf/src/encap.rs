//! Geneve/Talaria encapsulation towards the switch and decapsulation to a
//! pod.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_DECAP_L3_IPV4,
        BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_INGRESS,
    },
    helpers::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use talaria_common::{
    be::Be16,
    drop::DropReason,
    maps::{node_stat, FlowKey, NodeConfig, PodEntry},
    net::{
        EthHdr, Ipv4Hdr, ETH_HDR_LEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP, IPV4_HDR_LEN, UDP_HDR_LEN,
    },
    wire::{TalariaEncap, ENCAP_OVERHEAD, GENEVE_PROTO_IPV6, GENEVE_UDP_PORT},
};

use crate::{
    maps::{config, drop_pkt, stat},
    skb::{IP_OFF, PASS, REDIRECT},
};

/// The outer UDP source port: the inner flow's hash folded into
/// 49152–65535, for ECMP entropy.
#[inline(always)]
pub(crate) fn flow_sport(k: &FlowKey) -> u16 {
    let ports = u32::from_ne_bytes([
        k.src_port.0[0],
        k.src_port.0[1],
        k.dst_port.0[0],
        k.dst_port.0[1],
    ]);
    let mut h = u32::from_ne_bytes(k.src.0)
        ^ u32::from_ne_bytes(k.dst.0).rotate_left(16)
        ^ ports
        ^ k.proto as u32;
    h = h.wrapping_mul(0x9e37_79b1);
    h ^= h >> 15;
    0xc000 | (h >> 18) as u16
}

/// The 48 bytes inserted after the Ethernet header.
#[repr(C)]
struct OuterHdrs {
    ip: Ipv4Hdr,
    udp: [u8; UDP_HDR_LEN],
    talaria: [u8; TalariaEncap::LEN],
}

/// Grows the packet by [`ENCAP_OVERHEAD`] at the MAC layer (the kernel
/// marks GSO packets as UDP tunnels), writes outer IPv4/UDP/Geneve/Talaria
/// towards the switch and redirects to the uplink.
#[inline(always)]
pub(crate) fn encap(
    ctx: &TcContext,
    cfg: &NodeConfig,
    fl: u8,
    service_id: u16,
    backend_id: u32,
    sport: u16,
    tos: u8,
) -> Result<i32, i32> {
    encap_family(ctx, cfg, (fl, service_id, backend_id), sport, tos, false)
}

/// [`encap`] of an inner IPv4 (`ipv6` false) or IPv6 packet: the Geneve
/// protocol field says which, and an IPv6 packet's EtherType becomes the
/// outer IPv4's (adjust_room sets `skb->protocol`, not the header).
#[inline(always)]
pub(crate) fn encap_family(
    ctx: &TcContext,
    cfg: &NodeConfig,
    (fl, service_id, backend_id): (u8, u16, u32),
    sport: u16,
    tos: u8,
    ipv6: bool,
) -> Result<i32, i32> {
    // FIXED_GSO: gso_size stays the inner MSS (pod MTU = uplink MTU − 48);
    // it is also mandatory for UDP GSO (UDP_SEGMENT) packets.
    let room_flags =
        BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP;
    ctx.adjust_room(ENCAP_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, room_flags as u64)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    let len = ctx.len() as usize - ETH_HDR_LEN;
    let total = if len > 0xffff { 0xffff } else { len as u16 };
    let udp_len = total - IPV4_HDR_LEN as u16;
    let sp = sport.to_be_bytes();
    let dp = GENEVE_UDP_PORT.to_be_bytes();
    let ul = udp_len.to_be_bytes();
    let mut talaria = TalariaEncap::new(fl, service_id, backend_id);
    if ipv6 {
        talaria.geneve.protocol = Be16::new(GENEVE_PROTO_IPV6);
    }
    let hdrs = OuterHdrs {
        ip: Ipv4Hdr::new(tos, total, true, IPPROTO_UDP, cfg.node_ip, cfg.switch_ip),
        udp: [sp[0], sp[1], dp[0], dp[1], ul[0], ul[1], 0, 0],
        talaria: talaria.to_bytes(),
    };
    let err = |_| drop_pkt(DropReason::Malformed);
    ctx.store(IP_OFF, &hdrs, 0).map_err(err)?;
    let macs: [[u8; 6]; 2] = [cfg.switch_mac, cfg.node_mac];
    ctx.store(0, &macs, 0).map_err(err)?;
    if ipv6 {
        ctx.store(12, &Be16::new(ETH_P_IP), 0).map_err(err)?;
    }
    stat(node_stat::ENCAP);
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(cfg.uplink_ifindex, 0) };
    Ok(REDIRECT)
}

/// Strips the outer headers and hands the inner packet to its local
/// destination: a pod, or (`None`) the node itself, through its host
/// device's ingress (`node_host_egress`), the device its route to the
/// VIP names, so a strict reverse-path filter accepts it.
///
/// The decap leaves `skb->encapsulation` and the UDP_TUNNEL gso type set.
/// Harmless for TCP; a UDP GSO skb would lose every datagram in the pod,
/// which is why the agent turns off `tx-udp-segmentation` on the uplinks:
/// UDP GSO is then segmented before the wire and never arrives here whole
/// (host-ebpf/README.md, "MTU and GSO").
#[inline(always)]
pub(crate) fn decap(ctx: &TcContext, to: Option<&PodEntry>) -> Result<i32, i32> {
    strip_tunnel(ctx, BPF_F_ADJ_ROOM_DECAP_L3_IPV4)?;
    let Some(pod) = to else {
        let host = config().map_or(0, |c| c.host_ifindex);
        if host == 0 {
            return Ok(PASS);
        }
        // SAFETY: plain helper call.
        unsafe { bpf_redirect(host, BPF_F_INGRESS as u64) };
        return Ok(REDIRECT);
    };
    let macs: [[u8; 6]; 2] = [pod.mac, pod.host_mac];
    ctx.store(0, &macs, 0)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    // SAFETY: plain helper call. Straight into the pod's namespace.
    unsafe { bpf_redirect_peer(pod.ifindex, 0) };
    Ok(REDIRECT)
}

/// [`decap`] of a tunnel whose inner packet is IPv6, to a local pod: the
/// kernel takes `skb->protocol` from the flag, the EtherType is rewritten
/// here (the Ethernet header stays, and it said IPv4).
#[inline(always)]
pub(crate) fn decap6(ctx: &TcContext, pod: &PodEntry) -> Result<i32, i32> {
    strip_tunnel(ctx, BPF_F_ADJ_ROOM_DECAP_L3_IPV6)?;
    let eth = EthHdr {
        dst: pod.mac,
        src: pod.host_mac,
        ether_type: Be16::new(ETH_P_IPV6),
    };
    ctx.store(0, &eth, 0)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    // SAFETY: plain helper call. Straight into the pod's namespace.
    unsafe { bpf_redirect_peer(pod.ifindex, 0) };
    Ok(REDIRECT)
}

/// Removes the outer IPv4, UDP, Geneve and option headers in front of the
/// inner packet, whose family `decap_l3` (`BPF_F_ADJ_ROOM_DECAP_L3_*`)
/// names; GSO sizes stay as they are.
#[inline(always)]
fn strip_tunnel(ctx: &TcContext, decap_l3: u32) -> Result<(), i32> {
    let room_flags = BPF_F_ADJ_ROOM_FIXED_GSO | decap_l3;
    ctx.adjust_room(
        -(ENCAP_OVERHEAD as i32),
        BPF_ADJ_ROOM_MAC,
        room_flags as u64,
    )
    .map_err(|_| drop_pkt(DropReason::Malformed))?;
    stat(node_stat::DECAP);
    Ok(())
}
