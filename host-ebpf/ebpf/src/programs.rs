//! The two classifiers, their maps and helpers.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_DECAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO,
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
    },
    helpers::{bpf_ktime_get_ns, bpf_redirect, bpf_redirect_peer},
    macros::{classifier, map},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    programs::TcContext,
};
use talaria_common::{
    be::{Be16, Be32},
    drop::{DropReason, DROP_REASON_COUNT},
    maps::{
        node_stat, CookieEntry, FlowKey, NodeConfig, PodEntry, ReverseEntry, ServiceAddr,
        FIN_FROM_BACKEND, FIN_FROM_CLIENT,
    },
    net::{
        tcp_flags, EthHdr, Ipv4Hdr, ETH_HDR_LEN, ETH_P_IP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
        IPV4_HDR_LEN, UDP_HDR_LEN,
    },
    wire::{flags, TalariaEncap, ENCAP_OVERHEAD, GENEVE_UDP_PORT},
};

/// Client side cookie cache: the client pod's flow towards a VIP → the
/// service and backend id the switch chose (learned from the first reply).
/// LRU; the agent sets its size (default 1M).
#[map]
static NODE_COOKIES: LruHashMap<FlowKey, CookieEntry> = LruHashMap::pinned(1 << 20, 0);

/// Backend side reverse-flow entries: a backend pod's flow towards the
/// client → the VIP:port to restore and the ids to stamp on replies. LRU.
#[map]
static NODE_REVERSE: LruHashMap<FlowKey, ReverseEntry> = LruHashMap::pinned(1 << 20, 0);

/// Pods hosted on this node: pod IP → host-side veth and MACs.
#[map]
static NODE_PODS: HashMap<Be32, PodEntry> = HashMap::pinned(4096, 0);

/// Service CIDRs (LPM on the destination): traffic steered to the switch.
#[map]
static NODE_SVC_CIDRS: LpmTrie<Be32, u32> = LpmTrie::pinned(64, 0);

/// Services by id → VIP, port and protocol, to reverse-NAT replies.
#[map]
static NODE_SERVICES: HashMap<u32, ServiceAddr> = HashMap::pinned(65536, 0);

/// Node-wide settings, element 0. All zero = not configured: pass all.
#[map]
static NODE_CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

/// Per-CPU event counters, indexed by `node_stat`.
#[map]
static NODE_STATS: PerCpuArray<u64> = PerCpuArray::pinned(node_stat::COUNT, 0);

/// Per-CPU drop counters, indexed by `DropReason` code.
#[map]
static NODE_DROPS: PerCpuArray<u64> = PerCpuArray::pinned(DROP_REASON_COUNT, 0);

const IP_OFF: usize = ETH_HDR_LEN;
const L4_OFF: usize = IP_OFF + IPV4_HDR_LEN;
/// Offsets of a Talaria packet as received on the uplink.
const OUTER_UDP_OFF: usize = IP_OFF + IPV4_HDR_LEN;
const GENEVE_OFF: usize = OUTER_UDP_OFF + UDP_HDR_LEN;
const INNER_IP_OFF: usize = GENEVE_OFF + TalariaEncap::LEN;
const INNER_L4_OFF: usize = INNER_IP_OFF + IPV4_HDR_LEN;

const PASS: i32 = TC_ACT_OK;
const SHOT: i32 = TC_ACT_SHOT;
const REDIRECT: i32 = TC_ACT_REDIRECT;

/// Ingress of a pod's host-side veth = packets leaving the pod.
#[classifier]
pub fn node_pod_egress(ctx: TcContext) -> i32 {
    match try_pod_egress(&ctx) {
        Ok(a) | Err(a) => a,
    }
}

/// Ingress of the node uplink = packets arriving from the switch.
#[classifier]
pub fn node_uplink_ingress(ctx: TcContext) -> i32 {
    match try_uplink_ingress(&ctx) {
        Ok(a) | Err(a) => a,
    }
}

#[inline(always)]
fn stat(idx: u32) {
    if let Some(p) = NODE_STATS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn drop_pkt(reason: DropReason) -> i32 {
    if let Some(p) = NODE_DROPS.get_ptr_mut(reason.code() as u32) {
        // SAFETY: per-CPU slot.
        unsafe { *p += 1 };
    }
    SHOT
}

#[inline(always)]
fn config() -> Option<&'static NodeConfig> {
    let cfg = NODE_CONFIG.get(0)?;
    (cfg.node_ip.0 != [0; 4]).then_some(cfg)
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn skb_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context pointer is valid for the program's run.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// FIN/RST bits of a TCP segment whose header starts at `off` (0 for UDP).
#[inline(always)]
fn tcp_flags_at(ctx: &TcContext, proto: u8, off: usize) -> u8 {
    if proto != IPPROTO_TCP {
        return 0;
    }
    ctx.load::<u8>(off + 13).unwrap_or(0)
}

/// The outer UDP source port: the inner flow's hash folded into
/// 49152–65535, for ECMP entropy.
#[inline(always)]
fn flow_sport(k: &FlowKey) -> u16 {
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

fn try_pod_egress(ctx: &TcContext) -> Result<i32, i32> {
    let eth: EthHdr = ctx.load(0).map_err(|_| PASS)?;
    if eth.ether_type.get() != ETH_P_IP {
        return Ok(PASS);
    }
    let cfg = config().ok_or(PASS)?;
    let ip: Ipv4Hdr = ctx
        .load(IP_OFF)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    let l4_off = IP_OFF + ip.header_len();
    let first_fragment = ip.frag.get() & 0x1fff == 0;

    // A pod must never send the tunnel format itself.
    if ip.proto == IPPROTO_UDP && first_fragment {
        let dport: Be16 = ctx
            .load(l4_off + 2)
            .map_err(|_| drop_pkt(DropReason::Malformed))?;
        if dport.get() == GENEVE_UDP_PORT {
            return Err(drop_pkt(DropReason::PodEncap));
        }
    }
    // The source must be the address assigned to the pod behind this veth.
    // SAFETY: read-only use of a map value.
    match unsafe { NODE_PODS.get(ip.src) } {
        Some(pod) if pod.ifindex == skb_ifindex(ctx) => {}
        _ => return Err(drop_pkt(DropReason::PodSpoof)),
    }

    let to_service = NODE_SVC_CIDRS.get(Key::new(32, ip.dst)).is_some();
    if to_service {
        if ip.has_options() {
            return Err(drop_pkt(DropReason::IpOptions));
        }
        if ip.is_fragment() {
            return Err(drop_pkt(DropReason::Fragment));
        }
        if ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP {
            return Err(drop_pkt(DropReason::UnsupportedProtocol));
        }
    } else if ip.has_options() || ip.is_fragment() {
        return Ok(PASS);
    } else if ip.proto == IPPROTO_ICMP {
        return icmp_error_reply(ctx, cfg, &ip);
    } else if ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP {
        return Ok(PASS);
    }
    let ports: [Be16; 2] = ctx
        .load(L4_OFF)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    let key = FlowKey {
        src: ip.src,
        dst: ip.dst,
        src_port: ports[0],
        dst_port: ports[1],
        proto: ip.proto,
        _pad: [0; 3],
    };
    let tcp = tcp_flags_at(ctx, ip.proto, L4_OFF);

    if to_service {
        let (fl, service_id, backend_id) = match NODE_COOKIES.get_ptr_mut(key) {
            Some(e) => {
                // SAFETY: LRU value pointer, valid during this run; races
                // with other CPUs only lose a timestamp or a FIN bit.
                let e = unsafe { &mut *e };
                let found = (flags::COOKIE_VALID, e.service_id, e.backend_id);
                if tcp & tcp_flags::RST != 0 {
                    let _ = NODE_COOKIES.remove(key);
                    stat(node_stat::FLOW_RESET);
                } else {
                    e.last_seen_ns = now_ns();
                    if tcp & tcp_flags::FIN != 0 {
                        e.fin_seen |= FIN_FROM_CLIENT;
                    }
                }
                stat(node_stat::CACHE_HIT);
                found
            }
            None => {
                stat(node_stat::CACHE_MISS);
                (flags::NEW_FLOW, 0, 0)
            }
        };
        return encap(
            ctx,
            cfg,
            fl,
            service_id,
            backend_id,
            flow_sport(&key),
            ip.tos,
        );
    }

    // A reply from a local backend pod?
    let Some(rev) = NODE_REVERSE.get_ptr_mut(key) else {
        return Ok(PASS);
    };
    // SAFETY: as above.
    let rev = unsafe { &mut *rev };
    let (vip, vip_port, service_id, backend_id) =
        (rev.vip, rev.vip_port, rev.service_id, rev.backend_id);
    if tcp & tcp_flags::RST != 0 {
        let _ = NODE_REVERSE.remove(key);
        stat(node_stat::FLOW_RESET);
    } else {
        rev.last_seen_ns = now_ns();
        if tcp & tcp_flags::FIN != 0 {
            rev.fin_seen |= FIN_FROM_BACKEND;
        }
    }
    reverse_nat(ctx, &ip, ports[0], vip, vip_port)?;
    stat(node_stat::REVERSE_NAT);
    let nat_key = FlowKey {
        src: vip,
        src_port: vip_port,
        ..key
    };
    encap(
        ctx,
        cfg,
        flags::REPLY | flags::COOKIE_VALID,
        service_id,
        backend_id,
        flow_sport(&nat_key),
        ip.tos,
    )
}

/// Rewrites the source of a backend reply back to VIP:port, fixing the IPv4
/// and L4 checksums incrementally (works on CHECKSUM_PARTIAL/GSO packets).
#[inline(always)]
fn reverse_nat(
    ctx: &TcContext,
    ip: &Ipv4Hdr,
    sport: Be16,
    vip: Be32,
    vip_port: Be16,
) -> Result<(), i32> {
    let err = |_| drop_pkt(DropReason::Malformed);
    let (check_off, mangled) = if ip.proto == IPPROTO_TCP {
        (L4_OFF + 16, 0)
    } else {
        (L4_OFF + 6, BPF_F_MARK_MANGLED_0 as u64)
    };
    let old_ip = u32::from_ne_bytes(ip.src.0) as u64;
    let new_ip = u32::from_ne_bytes(vip.0) as u64;
    ctx.l3_csum_replace(IP_OFF + 10, old_ip, new_ip, 4)
        .map_err(err)?;
    ctx.l4_csum_replace(
        check_off,
        old_ip,
        new_ip,
        BPF_F_PSEUDO_HDR as u64 | mangled | 4,
    )
    .map_err(err)?;
    let old_port = u16::from_ne_bytes(sport.0) as u64;
    let new_port = u16::from_ne_bytes(vip_port.0) as u64;
    ctx.l4_csum_replace(check_off, old_port, new_port, mangled | 2)
        .map_err(err)?;
    ctx.store(IP_OFF + 12, &vip, 0).map_err(err)?;
    ctx.store(L4_OFF, &vip_port, 0).map_err(err)?;
    Ok(())
}

/// The 48 bytes inserted after the Ethernet header.
#[repr(C)]
struct OuterHdrs {
    ip: [u8; IPV4_HDR_LEN],
    udp: [u8; UDP_HDR_LEN],
    talaria: [u8; TalariaEncap::LEN],
}

/// Grows the packet by [`ENCAP_OVERHEAD`] at the MAC layer (the kernel
/// marks GSO packets as UDP tunnels), writes outer IPv4/UDP/Geneve/Talaria
/// towards the switch and redirects to the uplink.
#[inline(always)]
fn encap(
    ctx: &TcContext,
    cfg: &NodeConfig,
    fl: u8,
    service_id: u16,
    backend_id: u32,
    sport: u16,
    tos: u8,
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
    let t = total.to_be_bytes();
    let s = cfg.node_ip.0;
    let d = cfg.switch_ip.0;
    let mut ip = [
        0x45,
        tos,
        t[0],
        t[1],
        0,
        0,
        0x40,
        0,
        64,
        IPPROTO_UDP,
        0,
        0,
        s[0],
        s[1],
        s[2],
        s[3],
        d[0],
        d[1],
        d[2],
        d[3],
    ];
    let mut sum = 0u32;
    let mut i = 0;
    while i < IPV4_HDR_LEN {
        sum += u16::from_be_bytes([ip[i], ip[i + 1]]) as u32;
        i += 2;
    }
    let check = !talaria_common::net::fold(sum);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    let sp = sport.to_be_bytes();
    let dp = GENEVE_UDP_PORT.to_be_bytes();
    let ul = udp_len.to_be_bytes();
    let hdrs = OuterHdrs {
        ip,
        udp: [sp[0], sp[1], dp[0], dp[1], ul[0], ul[1], 0, 0],
        talaria: TalariaEncap::new(fl, service_id, backend_id).to_bytes(),
    };
    let err = |_| drop_pkt(DropReason::Malformed);
    ctx.store(IP_OFF, &hdrs, 0).map_err(err)?;
    let macs: [[u8; 6]; 2] = [cfg.switch_mac, cfg.node_mac];
    ctx.store(0, &macs, 0).map_err(err)?;
    stat(node_stat::ENCAP);
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(cfg.uplink_ifindex, 0) };
    Ok(REDIRECT)
}

fn try_uplink_ingress(ctx: &TcContext) -> Result<i32, i32> {
    let eth: EthHdr = ctx.load(0).map_err(|_| PASS)?;
    if eth.ether_type.get() != ETH_P_IP {
        return Ok(PASS);
    }
    let outer: Ipv4Hdr = ctx.load(IP_OFF).map_err(|_| PASS)?;
    if outer.proto != IPPROTO_UDP || outer.has_options() || outer.is_fragment() {
        return Ok(PASS);
    }
    let dport: Be16 = ctx.load(OUTER_UDP_OFF + 2).map_err(|_| PASS)?;
    if dport.get() != GENEVE_UDP_PORT {
        return Ok(PASS);
    }
    let cfg = config().ok_or(PASS)?;
    if outer.dst != cfg.node_ip {
        return Ok(PASS);
    }
    // Talaria packets are accepted from the switch only.
    if outer.src != cfg.switch_ip {
        return Err(drop_pkt(DropReason::TunnelSource));
    }
    let enc: TalariaEncap = ctx
        .load(GENEVE_OFF)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    enc.validate().map_err(|e| drop_pkt(e.drop_reason()))?;
    let inner: Ipv4Hdr = ctx
        .load(INNER_IP_OFF)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    if inner.has_options() {
        return Err(drop_pkt(DropReason::IpOptions));
    }
    if inner.is_fragment() {
        return Err(drop_pkt(DropReason::Fragment));
    }
    // SAFETY: read-only copy of a map value.
    let pod = match unsafe { NODE_PODS.get(inner.dst) } {
        Some(p) => *p,
        None => return Err(drop_pkt(DropReason::UnknownPod)),
    };
    let opt = &enc.opt;
    if inner.proto == IPPROTO_ICMP && opt.flags & flags::REPLY != 0 {
        // An ICMP error about a Service flow (reverse-NATed by the backend
        // node, e.g. frag-needed or port unreachable): nothing to learn.
        return decap_to_pod(ctx, &pod);
    }
    if inner.proto != IPPROTO_TCP && inner.proto != IPPROTO_UDP {
        return Err(drop_pkt(DropReason::UnsupportedProtocol));
    }
    let ports: [Be16; 2] = ctx
        .load(INNER_L4_OFF)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    let tcp = tcp_flags_at(ctx, inner.proto, INNER_L4_OFF);
    let fin = tcp & tcp_flags::FIN != 0;
    let rst = tcp & tcp_flags::RST != 0;
    // Keyed from the local pod's side: src = the pod, dst = the peer.
    let key = FlowKey {
        src: inner.dst,
        dst: inner.src,
        src_port: ports[1],
        dst_port: ports[0],
        proto: inner.proto,
        _pad: [0; 3],
    };
    if opt.flags & flags::REPLY != 0 {
        learn_cookie(
            &key,
            opt.flags,
            opt.service_id.get(),
            opt.backend_id.get(),
            fin,
            rst,
        );
    } else {
        learn_reverse(
            &key,
            opt.flags,
            opt.service_id.get(),
            opt.backend_id.get(),
            fin,
            rst,
        )?;
    }

    decap_to_pod(ctx, &pod)
}

/// Strips the outer headers and hands the inner packet to the pod.
///
/// The decap leaves `skb->encapsulation` and the UDP_TUNNEL gso type set.
/// Harmless for TCP; a UDP GSO skb would lose every datagram in the pod,
/// which is why the agent turns off `tx-udp-segmentation` on the uplinks:
/// UDP GSO is then segmented before the wire and never arrives here whole
/// (host-ebpf/README.md, "MTU and GSO").
#[inline(always)]
fn decap_to_pod(ctx: &TcContext, pod: &PodEntry) -> Result<i32, i32> {
    let room_flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_DECAP_L3_IPV4;
    ctx.adjust_room(
        -(ENCAP_OVERHEAD as i32),
        BPF_ADJ_ROOM_MAC,
        room_flags as u64,
    )
    .map_err(|_| drop_pkt(DropReason::Malformed))?;
    let macs: [[u8; 6]; 2] = [pod.mac, pod.host_mac];
    ctx.store(0, &macs, 0)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    stat(node_stat::DECAP);
    // SAFETY: plain helper call. Straight into the pod's namespace.
    unsafe { bpf_redirect_peer(pod.ifindex, 0) };
    Ok(REDIRECT)
}

/// ICMP error types reverse-NATed for Service flows.
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_OFF: usize = L4_OFF;
/// The packet the error is about, quoted after the 8-byte ICMP header.
const EMB_IP_OFF: usize = ICMP_OFF + 8;
const EMB_L4_OFF: usize = EMB_IP_OFF + IPV4_HDR_LEN;

/// A local backend pod's ICMP error (destination unreachable, including
/// fragmentation-needed, or time exceeded) about a Service flow: the
/// quoted packet is client → backend, so it is matched to the
/// reverse-flow entry and rewritten as the client must see it, from and
/// about VIP:port: outer source, quoted destination address and port, the
/// quoted IPv4 checksum and the ICMP checksum. Then it goes to the switch
/// like any reply. The quoted L4 checksum is left alone (receivers do not
/// check it). Anything else passes.
#[inline(always)]
fn icmp_error_reply(ctx: &TcContext, cfg: &NodeConfig, ip: &Ipv4Hdr) -> Result<i32, i32> {
    let icmp: [u8; 2] = ctx.load(ICMP_OFF).map_err(|_| PASS)?;
    if icmp[0] != ICMP_DEST_UNREACH && icmp[0] != ICMP_TIME_EXCEEDED {
        return Ok(PASS);
    }
    let emb: Ipv4Hdr = ctx.load(EMB_IP_OFF).map_err(|_| PASS)?;
    if emb.has_options() || (emb.proto != IPPROTO_TCP && emb.proto != IPPROTO_UDP) {
        return Ok(PASS);
    }
    let ports: [Be16; 2] = ctx.load(EMB_L4_OFF).map_err(|_| PASS)?;
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
    let err = |_| drop_pkt(DropReason::Malformed);
    let raw32 = |v: Be32| u32::from_ne_bytes(v.0) as u64;
    let raw16 = |v: Be16| u16::from_ne_bytes(v.0) as u64;
    // Outer source (the backend pod, or its node for a router-style error
    // from the pod itself) → VIP; ICMP has no pseudo-header.
    ctx.l3_csum_replace(IP_OFF + 10, raw32(ip.src), raw32(rev.vip), 4)
        .map_err(err)?;
    ctx.store(IP_OFF + 12, &rev.vip, 0).map_err(err)?;
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
    ctx.store(EMB_IP_OFF + 16, &rev.vip, 0).map_err(err)?;
    ctx.store(EMB_L4_OFF + 2, &rev.vip_port, 0).map_err(err)?;
    stat(node_stat::REVERSE_NAT);
    let nat_key = FlowKey {
        src: rev.vip,
        src_port: rev.vip_port,
        ..key
    };
    encap(
        ctx,
        cfg,
        flags::REPLY | flags::COOKIE_VALID,
        rev.service_id,
        rev.backend_id,
        flow_sport(&nat_key),
        ip.tos,
    )
}

/// Client side: remember which backend the switch chose for this flow.
#[inline(always)]
fn learn_cookie(key: &FlowKey, fl: u8, service_id: u16, backend_id: u32, fin: bool, rst: bool) {
    if rst {
        if NODE_COOKIES.remove(key).is_ok() {
            stat(node_stat::FLOW_RESET);
        }
        return;
    }
    if fl & flags::COOKIE_VALID == 0 {
        return;
    }
    let fin_bit = if fin { FIN_FROM_BACKEND } else { 0 };
    if let Some(e) = NODE_COOKIES.get_ptr_mut(key) {
        // SAFETY: LRU value pointer valid during this run.
        let e = unsafe { &mut *e };
        if e.backend_id == backend_id && e.service_id == service_id {
            e.last_seen_ns = now_ns();
            e.fin_seen |= fin_bit;
            return;
        }
    }
    let entry = CookieEntry {
        service_id,
        fin_seen: fin_bit,
        _pad: 0,
        backend_id,
        last_seen_ns: now_ns(),
    };
    if NODE_COOKIES.insert(key, entry, 0).is_ok() {
        stat(node_stat::COOKIE_LEARN);
    }
}

/// Backend side: remember how to send this flow's replies.
#[inline(always)]
fn learn_reverse(
    key: &FlowKey,
    fl: u8,
    service_id: u16,
    backend_id: u32,
    fin: bool,
    rst: bool,
) -> Result<(), i32> {
    if rst {
        if NODE_REVERSE.remove(key).is_ok() {
            stat(node_stat::FLOW_RESET);
        }
        return Ok(());
    }
    if fl & flags::COOKIE_VALID == 0 {
        return Err(drop_pkt(DropReason::NoBackend));
    }
    let fin_bit = if fin { FIN_FROM_CLIENT } else { 0 };
    if let Some(e) = NODE_REVERSE.get_ptr_mut(key) {
        // SAFETY: LRU value pointer valid during this run.
        let e = unsafe { &mut *e };
        if e.backend_id == backend_id && e.service_id == service_id {
            e.last_seen_ns = now_ns();
            e.fin_seen |= fin_bit;
            return Ok(());
        }
    }
    // SAFETY: read-only copy of a map value.
    let svc = match unsafe { NODE_SERVICES.get(service_id as u32) } {
        Some(s) => *s,
        None => return Err(drop_pkt(DropReason::NoService)),
    };
    let entry = ReverseEntry {
        vip: svc.vip,
        vip_port: svc.port,
        service_id,
        backend_id,
        fin_seen: fin_bit,
        _pad: [0; 3],
        last_seen_ns: now_ns(),
    };
    if NODE_REVERSE.insert(key, entry, 0).is_ok() {
        stat(node_stat::REVERSE_LEARN);
    }
    Ok(())
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
