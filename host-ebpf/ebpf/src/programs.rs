//! The two classifiers, their maps and helpers.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_DECAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO,
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
    },
    helpers::{bpf_ktime_get_ns, bpf_redirect, bpf_redirect_peer, bpf_skb_change_tail},
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

use crate::abi::{mtu, mtu_stat, node_flags};

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

/// Path MTU settings, indexed by `abi::mtu` (the uplink MTU).
#[map]
static NODE_MTU: Array<u32> = Array::pinned(mtu::COUNT, 0);

/// Data path switches, indexed by `abi::node_flags`.
#[map]
static NODE_FLAGS: Array<u32> = Array::pinned(node_flags::COUNT, 0);

/// Per-CPU counters of the MTU check, indexed by `abi::mtu_stat`.
#[map]
static NODE_MTU_STATS: PerCpuArray<u64> = PerCpuArray::pinned(mtu_stat::COUNT, 0);

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
        check_mtu(ctx, &ip, false)?;
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
    check_mtu(ctx, &ip, false)?;
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

#[inline(always)]
fn mtu_stat(idx: u32) {
    if let Some(p) = NODE_MTU_STATS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot.
        unsafe { *p += 1 };
    }
}

/// IPv4 "don't fragment".
const IP_DF: u16 = 0x4000;

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
fn check_mtu(ctx: &TcContext, ip: &Ipv4Hdr, icmp_error: bool) -> Result<(), i32> {
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
        mtu_stat(mtu_stat::TOO_BIG_ICMP);
        return Err(SHOT);
    }
    if ip.frag.get() & IP_DF == 0 {
        mtu_stat(mtu_stat::TOO_BIG_NO_DF);
        return Err(SHOT);
    }
    let next_hop = uplink_mtu.saturating_sub(ENCAP_OVERHEAD as u32);
    Err(frag_needed(ctx, ip, next_hop as u16))
}

/// Bytes of the offending packet quoted in the ICMP error: its IPv4 header
/// (never with options on this path) and the first 8 bytes of L4 (the
/// ports, and the TCP sequence number), which is what RFC 792 asks for and
/// all that Linux's `tcp_v4_err`/`__udp4_lib_err` read.
const FRAG_QUOTE_LEN: usize = IPV4_HDR_LEN + 8;

/// The ICMP fragmentation-needed frame that replaces a too-big packet.
#[repr(C)]
struct FragNeeded {
    macs: [u8; 12],
    ether_type: [u8; 2],
    ip: [u8; IPV4_HDR_LEN],
    icmp: [u8; 8],
    quoted: [u8; FRAG_QUOTE_LEN],
}

/// Length of [`FragNeeded`] on the wire (70 bytes).
const FRAG_NEEDED_LEN: usize = ETH_HDR_LEN + IPV4_HDR_LEN + 8 + FRAG_QUOTE_LEN;

/// Internet checksum over an even number of bytes.
#[inline(always)]
fn csum16(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    let mut i = 0;
    while i + 1 < b.len() {
        sum += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    !talaria_common::net::fold(sum)
}

/// Rewrites the pod's packet in place into ICMP destination unreachable /
/// fragmentation needed (type 3 code 4) with next-hop MTU `next_hop`, as a
/// router on the path would, and hands it straight back to the pod
/// (`bpf_redirect_peer` to this veth's peer, i.e. the pod's ingress).
///
/// - Addresses: source = the packet's destination (the VIP, or on the
///   backend side the client the reply was going to), destination = the
///   pod. Linux accepts fragmentation-needed from any source; it matches
///   the quoted header to its socket (and TCP checks the quoted sequence
///   number), so the error needs no address of the node's, and the pod
///   sees it "from" the peer it was talking to, which also keeps it
///   RELATED to that flow for a conntrack inside the pod.
/// - MACs swapped: the pod's MAC becomes the destination.
/// - `bpf_skb_change_tail` trims the skb to 70 bytes and clears its GSO
///   state; every checksum is computed in full here. The skb keeps the
///   pod's CHECKSUM_PARTIAL mark if it had one; local delivery treats
///   that as verified and never completes it, so it does no harm.
#[inline(always)]
fn frag_needed(ctx: &TcContext, ip: &Ipv4Hdr, next_hop: u16) -> i32 {
    let err = |_| drop_pkt(DropReason::Malformed);
    let macs: [u8; 12] = match ctx.load(0) {
        Ok(m) => m,
        Err(e) => return err(e),
    };
    let quoted: [u8; FRAG_QUOTE_LEN] = match ctx.load(IP_OFF) {
        Ok(q) => q,
        Err(e) => return err(e),
    };
    let total = ((IPV4_HDR_LEN + 8 + FRAG_QUOTE_LEN) as u16).to_be_bytes();
    let (s, d) = (ip.dst.0, ip.src.0);
    let mut out = FragNeeded {
        macs: [
            macs[6], macs[7], macs[8], macs[9], macs[10], macs[11], macs[0], macs[1], macs[2],
            macs[3], macs[4], macs[5],
        ],
        ether_type: ETH_P_IP.to_be_bytes(),
        ip: [
            0x45,
            0xc0, // IPTOS_PREC_INTERNETCONTROL, as Linux sends ICMP errors
            total[0],
            total[1],
            0,
            0,
            0,
            0,
            64,
            IPPROTO_ICMP,
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
        ],
        icmp: [0; 8],
        quoted,
    };
    let check = csum16(&out.ip);
    out.ip[10..12].copy_from_slice(&check.to_be_bytes());
    let mtu = next_hop.to_be_bytes();
    out.icmp = [
        ICMP_DEST_UNREACH,
        ICMP_FRAG_NEEDED,
        0,
        0,
        0,
        0,
        mtu[0],
        mtu[1],
    ];
    let mut sum = 0u32;
    let mut i = 0;
    while i < 8 {
        sum += u16::from_be_bytes([out.icmp[i], out.icmp[i + 1]]) as u32;
        i += 2;
    }
    i = 0;
    while i < FRAG_QUOTE_LEN {
        sum += u16::from_be_bytes([out.quoted[i], out.quoted[i + 1]]) as u32;
        i += 2;
    }
    let check = !talaria_common::net::fold(sum);
    out.icmp[2..4].copy_from_slice(&check.to_be_bytes());
    // SAFETY: plain helper call on this program's skb.
    let rc = unsafe { bpf_skb_change_tail(ctx.skb.skb, FRAG_NEEDED_LEN as u32, 0) };
    if rc != 0 {
        return drop_pkt(DropReason::Malformed);
    }
    if let Err(e) = ctx.store(0, &out, 0) {
        return err(e);
    }
    mtu_stat(mtu_stat::FRAG_NEEDED);
    // SAFETY: plain helper call. The peer of this veth is the pod.
    unsafe { bpf_redirect_peer(skb_ifindex(ctx), 0) };
    REDIRECT
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
/// Destination unreachable code: fragmentation needed and DF set.
const ICMP_FRAG_NEEDED: u8 = 4;
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
    check_mtu(ctx, ip, true)?;
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
    if NODE_FLAGS
        .get(node_flags::IGNORE_COOKIES)
        .is_some_and(|v| *v != 0)
    {
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
