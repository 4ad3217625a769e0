//! IPv6 Services: an inner IPv6 packet in the same IPv4 Geneve tunnel,
//! Geneve protocol 0x86DD (docs/design.md, "IPv6 Services").
//!
//! The IPv4 path's core for TCP and UDP ClusterIP traffic: a client pod's
//! packets to an address in `NODE_SVC_CIDRS_V6` go to the switch with the
//! flow's cookie (`NODE_COOKIES_V6`) or as new; requests arriving for a
//! local backend pod record a reverse entry (`NODE_REVERSE_V6`) and are
//! delivered, from a substitute client port when another Service's flow
//! holds their 4-tuple (`NODE_PORT_SUBST_V6`, by IPv4's rules:
//! [`crate::subst`]); the backend's replies get VIP6:port (and the
//! client's own port) back and go to the switch flagged `REPLY |
//! COOKIE_VALID`; replies arriving for a local client teach its node the
//! cookie. Not here (IPv4 only): fragments, port policies (REJECT, Local,
//! preferred, affinity), one-way UDP notification, timestamp cookies,
//! nodePorts and external addresses, ICMPv6 errors (relayed from
//! backends; the node's own Packet Too Big is sent, see [`check_mtu6`]),
//! per-pod flow limits, simultaneous-close detection (a backend
//! FIN that crosses the client's counts as a passive close).

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use talaria_common::{
    be::Be16,
    drop::DropReason,
    maps::{
        finished, is_hairpin_source6, mtu, mtu_stat, node_flags, node_stat, BackendKey,
        CookieEntry, FlowKey6, PodEntry, ReverseEntry6, FIN_ACKED, FIN_BACKEND_FIRST,
        FIN_FROM_BACKEND, FIN_FROM_CLIENT, HAIRPIN_SOURCE6, PENDING_BACKEND,
    },
    net::{tcp_flags, Ipv6Hdr, IPPROTO_TCP, IPPROTO_UDP, IPV6_HDR_LEN, UDP_HDR_LEN},
    wire::{flags, TalariaEncap, TalariaOpt, ENCAP_OVERHEAD},
};

use crate::{
    encap::{decap6, encap_family},
    maps::{
        config, count_mtu, drop_pkt, stat, NODE_COOKIES_V6, NODE_FLAGS, NODE_MTU, NODE_PODS_V6,
        NODE_REVERSE_V6, NODE_SERVICES_V6, NODE_SVC_CIDRS_V6,
    },
    mtu::IPV6_MIN_MTU,
    nat::rewrite_port,
    skb::{
        now_ns, skb_ifindex, tcp_flags_at, GENEVE_OFF, INNER_IP_OFF, IP_OFF, PASS, REDIRECT, SHOT,
    },
    subst::{forget_substitute, Held, Keyed},
    uplink_ingress::tunnel_opt,
};

/// The L4 header of a pod's IPv6 packet (no extension headers).
const L4_OFF6: usize = IP_OFF + IPV6_HDR_LEN;
/// The inner L4 header of an IPv6 tunnel packet on the uplink.
const INNER_L4_OFF6: usize = INNER_IP_OFF + IPV6_HDR_LEN;
/// Offsets of the source and destination addresses in an IPv6 header.
const IP6_SRC: usize = 8;
const IP6_DST: usize = 24;

/// IPv6 next-header values that are extension headers talaria does not
/// walk (hop-by-hop, routing, destination options), and the fragment
/// header.
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;

/// The traffic class of `ip` (the outer IPv4 TOS copies it).
#[inline(always)]
fn traffic_class(ip: &Ipv6Hdr) -> u8 {
    let b = ip.version_class_flow.0;
    (b[0] << 4) | (b[1] >> 4)
}

/// Whether `a` is in the IPv6 Service CIDRs.
#[inline(always)]
fn is_service6(a: [u8; 16]) -> bool {
    NODE_SVC_CIDRS_V6.get(Key::new(128, a)).is_some()
}

/// A pod's IPv6 packet (ingress of its host-side veth). Its source must be
/// an address of the pod behind this veth, the unspecified address
/// (duplicate address detection) or link-local (neighbour discovery with
/// its gateway; Linux forwards no link-local source, so such a packet
/// never leaves the node): those two pass untouched, whatever their
/// destination. Then: to an IPv6 Service address, steered to the switch;
/// a TCP or UDP reply of a local backend pod, reverse-NATed and steered;
/// anything else passes (pod to pod, neighbour discovery).
#[inline(never)]
pub(crate) fn pod_egress6(ctx: &TcContext) -> i32 {
    if config().is_none() {
        return PASS;
    }
    let Ok(ip) = ctx.load::<Ipv6Hdr>(IP_OFF) else {
        return drop_pkt(DropReason::Malformed);
    };
    if ip.src[0] == 0xfe && ip.src[1] & 0xc0 == 0x80 {
        return PASS;
    }
    // SAFETY: read-only use of a map value.
    match unsafe { NODE_PODS_V6.get(&ip.src) } {
        Some(pod) if pod.ifindex == skb_ifindex(ctx) => {}
        // As two words: a byte-array comparison would be a memcmp call.
        _ if u128::from_ne_bytes(ip.src) == 0 => return PASS,
        _ => return drop_pkt(DropReason::PodSpoof),
    }
    let verdict = if is_service6(ip.dst) {
        client_to_service6(ctx, ip.next_hdr)
    } else if ip.next_hdr == IPPROTO_TCP || ip.next_hdr == IPPROTO_UDP {
        reply6(ctx)
    } else {
        return PASS;
    };
    // Answered from here, the shallowest subprogram: below `steer6` or
    // `reply6` the Packet Too Big's frame would overflow the 512-byte
    // stack the call chain shares.
    if verdict == TOO_BIG6 {
        return packet_too_big6(ctx);
    }
    verdict
}

/// Not a TC verdict: what [`check_mtu6`] returns up to [`pod_egress6`]
/// for a packet to be answered with a Packet Too Big.
const TOO_BIG6: i32 = 0x100;

/// A TCP or UDP packet leaving a pod: if it is a reply of a local backend
/// pod (`NODE_REVERSE_V6`), its source becomes VIP6:port (and its
/// destination port the client's own, if the flow has a substitute) and
/// it is tunnelled to the switch with the flow's cookie; anything else
/// passes.
/// A subprogram of its own, as are [`steer6`] and [`encap6`]: inlined into
/// one, the IPv6 path's 16-byte addresses and headers overflow the stack.
#[inline(never)]
fn reply6(ctx: &TcContext) -> i32 {
    match try_reply6(ctx) {
        Ok(a) | Err(a) => a,
    }
}

#[inline(always)]
fn try_reply6(ctx: &TcContext) -> Result<i32, i32> {
    let ip: Ipv6Hdr = ctx
        .load(IP_OFF)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    let key = flow_key6(ctx, &ip, L4_OFF6)?;
    let Some(rev) = NODE_REVERSE_V6.get_ptr_mut(&key) else {
        return Ok(PASS);
    };
    check_mtu6(ctx, &ip)?;
    let tcp = tcp_flags_at(ctx, ip.next_hdr, L4_OFF6);
    // SAFETY: a map value pointer, valid during this run.
    let entry = unsafe { &mut *rev };
    let rev = *entry;
    if tcp & tcp_flags::RST != 0 {
        let _ = NODE_REVERSE_V6.remove(&key);
        forget_substitute(&key, &rev);
        stat(node_stat::FLOW_RESET);
    } else {
        entry.last_seen_ns = now_ns();
        if tcp & tcp_flags::FIN != 0 {
            entry.fin_seen = with_fin(entry.fin_seen, FIN_FROM_BACKEND);
        }
    }
    // The pod answers its own connection: the reply goes back to it.
    if !unhairpin6(ctx, ip.next_hdr) {
        return Err(SHOT);
    }
    rewrite_addr6(
        ctx,
        ip.next_hdr,
        L4_OFF6,
        IP_OFF + IP6_SRC,
        &ip.src,
        &rev.vip,
    )?;
    rewrite_port(ctx, ip.next_hdr, L4_OFF6, 0, key.src_port, rev.vip_port)?;

    if rev.client_port.get() != 0 {
        rewrite_port(ctx, ip.next_hdr, L4_OFF6, 2, key.dst_port, rev.client_port)?;
    }
    stat(node_stat::REVERSE_NAT);
    // The flow as the client sees it, from VIP6:port to its own port.
    let sport = rev.client_view(key).outer_sport();
    Ok(encap6(
        ctx,
        flags::REPLY | flags::COOKIE_VALID,
        rev.service_id,
        rev.backend_id,
        u32::from(sport) << 8 | u32::from(traffic_class(&ip)),
    ))
}

/// A hairpin reply (to [`HAIRPIN_SOURCE6`]) gets the pod's own address,
/// its source, as destination; anything else is left alone. False when
/// the packet could not be read or rewritten (counted `malformed`). A
/// subprogram reading the addresses from the packet itself, the check
/// included: even the comparison alone, in `reply6`'s frame, takes the
/// pod hook's call chain past 512 bytes (528 with it, 560 with the
/// addresses).
#[inline(never)]
fn unhairpin6(ctx: &TcContext, proto: u8) -> bool {
    let Ok([src, dst]) = ctx.load::<[[u8; 16]; 2]>(IP_OFF + IP6_SRC) else {
        drop_pkt(DropReason::Malformed);
        return false;
    };
    if !is_hairpin_source6(&dst) {
        return true;
    }
    rewrite_addr6(ctx, proto, L4_OFF6, IP_OFF + IP6_DST, &dst, &src).is_ok()
}

/// Tunnels the IPv6 packet to the switch ([`encap_family`]); `sport_tos`:
/// the outer UDP source port << 8 | the outer TOS.
#[inline(never)]
fn encap6(ctx: &TcContext, fl: u8, service_id: u16, backend_id: u32, sport_tos: u32) -> i32 {
    let Some(cfg) = config() else {
        return PASS;
    };
    let (sport, tos) = ((sport_tos >> 8) as u16, sport_tos as u8);
    match encap_family(ctx, cfg, (fl, service_id, backend_id), sport, tos, true) {
        Ok(a) | Err(a) => a,
    }
}

/// A pod's IPv6 packet to a Service address: TCP and UDP without
/// extension headers are tunnelled; anything else is dropped and counted
/// (the VIP is reachable only through the switch, so passing it would
/// only send it to be dropped there): a fragment header `fragment`, the
/// other extension headers `ip_options` (as IPv4 options are), ICMPv6 and
/// other protocols `unsupported_protocol`.
#[inline(always)]
fn client_to_service6(ctx: &TcContext, next_hdr: u8) -> i32 {
    match next_hdr {
        IPPROTO_TCP | IPPROTO_UDP => steer6(ctx),
        NEXTHDR_FRAGMENT => drop_pkt(DropReason::Fragment),
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => drop_pkt(DropReason::IpOptions),
        _ => drop_pkt(DropReason::UnsupportedProtocol),
    }
}

/// The flow of a TCP or UDP packet whose L4 header is at `l4_off`, keyed
/// as its sender sees it.
#[inline(always)]
fn flow_key6(ctx: &TcContext, ip: &Ipv6Hdr, l4_off: usize) -> Result<FlowKey6, i32> {
    let [src_port, dst_port]: [Be16; 2] = ctx
        .load(l4_off)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    Ok(FlowKey6 {
        src: ip.src,
        dst: ip.dst,
        src_port,
        dst_port,
        proto: ip.next_hdr,
        _pad: [0; 3],
    })
}

/// `fin_seen` with FIN `bit` added; a backend's FIN before the client's
/// marks the backend's active close (it holds TIME_WAIT).
#[inline(always)]
fn with_fin(fin_seen: u8, bit: u8) -> u8 {
    let mut f = fin_seen | bit;
    if bit & FIN_FROM_BACKEND != 0 && fin_seen & FIN_FROM_CLIENT == 0 {
        f |= FIN_BACKEND_FIRST;
    }
    f
}

/// A client pod's TCP or UDP packet to an IPv6 Service: tunnelled with
/// the flow's cookie, or as a new flow for the switch's hash.
#[inline(never)]
fn steer6(ctx: &TcContext) -> i32 {
    match try_steer6(ctx) {
        Ok(a) | Err(a) => a,
    }
}

#[inline(always)]
fn try_steer6(ctx: &TcContext) -> Result<i32, i32> {
    let ip: Ipv6Hdr = ctx
        .load(IP_OFF)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    let ip = &ip;
    let key = flow_key6(ctx, ip, L4_OFF6)?;
    let tcp = tcp_flags_at(ctx, ip.next_hdr, L4_OFF6);
    check_mtu6(ctx, ip)?;
    // A SYN opens a new connection, balanced afresh (as IPv4).
    if tcp & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN {
        let _ = NODE_COOKIES_V6.remove(&key);
    }
    let sent = match NODE_COOKIES_V6.get_ptr_mut(&key) {
        Some(e) => {
            // SAFETY: a map value pointer, valid during this run; races
            // with other CPUs only lose a timestamp or a FIN bit.
            let e = unsafe { &mut *e };
            let found = if e.backend_id == PENDING_BACKEND {
                (flags::NEW_FLOW, 0, 0)
            } else {
                (flags::COOKIE_VALID, e.service_id, e.backend_id)
            };
            if tcp & tcp_flags::RST != 0 {
                let _ = NODE_COOKIES_V6.remove(&key);
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
    let (fl, service_id, backend_id) = sent;
    Ok(encap6(
        ctx,
        fl,
        service_id,
        backend_id,
        u32::from(key.outer_sport()) << 8 | u32::from(traffic_class(ip)),
    ))
}

/// The path MTU check of an IPv6 packet to be tunnelled, as IPv4's
/// [`crate::mtu::check_mtu`]: the packet, or each GSO segment of it
/// (headers + `gso_size`), plus 48 bytes must fit the uplink MTU. Too big
/// (IPv6 routers never fragment, and every IPv6 packet is as if DF were
/// set): `Err(TOO_BIG6)`, on which [`pod_egress6`] answers the pod with
/// an ICMPv6 Packet Too Big ([`packet_too_big6`]), MTU = uplink − 48 but
/// never below 1280, so that its PMTU discovery clamps the route; counted
/// as `frag_needed`, the IPv4 answer's counter. A packet of at most 1280 bytes that still does not
/// fit (an uplink MTU below 1328, on which IPv6 cannot be tunnelled
/// whole) would get a Packet Too Big that lowers nothing: dropped and
/// counted `too_big_no_df`.
#[inline(always)]
fn check_mtu6(ctx: &TcContext, ip: &Ipv6Hdr) -> Result<(), i32> {
    let uplink_mtu = match NODE_MTU.get(mtu::UPLINK_MTU) {
        Some(m) if *m != 0 => *m,
        _ => return Ok(()),
    };
    // SAFETY: the context pointer is valid for the program's run.
    let gso_size = unsafe { (*ctx.skb.skb).gso_size };
    let seg_len = if gso_size == 0 {
        IPV6_HDR_LEN as u32 + u32::from(ip.payload_len.get())
    } else {
        let l4_hdr = if ip.next_hdr == IPPROTO_TCP {
            let doff: u8 = ctx
                .load(L4_OFF6 + 12)
                .map_err(|_| drop_pkt(DropReason::Malformed))?;
            u32::from(doff >> 4) * 4
        } else {
            UDP_HDR_LEN as u32
        };
        IPV6_HDR_LEN as u32 + l4_hdr + gso_size
    };
    if seg_len + ENCAP_OVERHEAD as u32 <= uplink_mtu {
        return Ok(());
    }
    if seg_len <= path_mtu6(uplink_mtu) {
        count_mtu(mtu_stat::TOO_BIG_NO_DF);
        return Err(SHOT);
    }
    Err(TOO_BIG6)
}

/// The MTU a Packet Too Big reports for an uplink MTU: the largest inner
/// packet that fits (uplink − 48), never below IPv6's 1280.
#[inline(always)]
fn path_mtu6(uplink_mtu: u32) -> u32 {
    let m = uplink_mtu.saturating_sub(ENCAP_OVERHEAD as u32);
    if m < IPV6_MIN_MTU {
        IPV6_MIN_MTU
    } else {
        m
    }
}

/// Answers the pod's too-big packet with a Packet Too Big
/// ([`crate::mtu::packet_too_big6`]) and counts it (`frag_needed`).
#[inline(always)]
fn packet_too_big6(ctx: &TcContext) -> i32 {
    let uplink_mtu = NODE_MTU.get(mtu::UPLINK_MTU).map_or(0, |m| *m);
    let verdict = crate::mtu::packet_too_big6(ctx, path_mtu6(uplink_mtu));
    if verdict == REDIRECT {
        count_mtu(mtu_stat::FRAG_NEEDED);
    }
    verdict
}

/// Rewrites the IPv6 address at `addr_off` from `old` to `new`, fixing the
/// TCP or UDP checksum at `l4_off` (pseudo-header) incrementally, one
/// 32-bit word at a time (CHECKSUM_PARTIAL and GSO packets included). IPv6
/// has no header checksum.
#[inline(always)]
fn rewrite_addr6(
    ctx: &TcContext,
    proto: u8,
    l4_off: usize,
    addr_off: usize,
    old: &[u8; 16],
    new: &[u8; 16],
) -> Result<(), i32> {
    let err = |_| drop_pkt(DropReason::Malformed);
    let (check_off, mangled) = if proto == IPPROTO_TCP {
        (l4_off + 16, 0)
    } else {
        (l4_off + 6, aya_ebpf::bindings::BPF_F_MARK_MANGLED_0 as u64)
    };
    let flags = aya_ebpf::bindings::BPF_F_PSEUDO_HDR as u64 | mangled | 4;
    let word =
        |a: &[u8; 16], i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]) as u64;
    for i in [0, 4, 8, 12] {
        let (o, n) = (word(old, i), word(new, i));
        if o != n {
            ctx.l4_csum_replace(check_off, o, n, flags).map_err(err)?;
        }
    }
    ctx.store(addr_off, new, 0).map_err(err)
}

/// A Talaria packet from the switch whose inner packet is IPv6 (Geneve
/// protocol 0x86DD; the outer headers and the option are checked): a
/// request for a local backend pod records the flow's reverse entry, a
/// reply for a local client pod teaches the node its cookie; both are
/// decapsulated and delivered to the pod. Only TCP and UDP without
/// extension headers, to a local pod's IPv6 address.
#[inline(never)]
pub(crate) fn uplink_ingress6(ctx: &TcContext) -> i32 {
    let opt = match tunnel_opt(ctx) {
        Ok((opt, true)) => opt,
        // Dispatched here by the same field: cannot be IPv4.
        Ok((_, false)) => return drop_pkt(DropReason::Malformed),
        Err(verdict) => return verdict,
    };
    match try_uplink_ingress6(ctx, &opt) {
        Ok(a) | Err(a) => a,
    }
}

#[inline(always)]
fn try_uplink_ingress6(ctx: &TcContext, opt: &TalariaOpt) -> Result<i32, i32> {
    let inner: Ipv6Hdr = ctx
        .load(INNER_IP_OFF)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    if inner.version() != 6 {
        return Err(drop_pkt(DropReason::Malformed));
    }
    match inner.next_hdr {
        IPPROTO_TCP | IPPROTO_UDP => {}
        NEXTHDR_FRAGMENT => return Err(drop_pkt(DropReason::Fragment)),
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
            return Err(drop_pkt(DropReason::IpOptions))
        }
        _ => return Err(drop_pkt(DropReason::UnsupportedProtocol)),
    }
    // SAFETY: read-only copy of a map value.
    let Some(pod) = (unsafe { NODE_PODS_V6.get(&inner.dst) }).copied() else {
        return Err(drop_pkt(DropReason::UnknownPod));
    };
    if opt.flags & flags::REPLY == 0 {
        return Ok(REQUEST6);
    }
    let tcp = tcp_flags_at(ctx, inner.next_hdr, INNER_L4_OFF6);
    // Keyed from the client pod's side: src = the pod, dst = the VIP6.
    let key = flow_key6(ctx, &inner, INNER_L4_OFF6)?.reversed();
    learn_cookie6(&key, opt, tcp);
    decap6(ctx, &pod)
}

/// Not a TC verdict: what [`uplink_ingress6`] returns for a request it
/// checked, which the uplink hook then hands to [`request6`]. Called from
/// below `uplink_ingress6`, request6's frame would overflow the 512 bytes
/// of stack the call chain shares.
pub(crate) const REQUEST6: i32 = 0x101;

/// A request [`uplink_ingress6`] checked (outer headers, option, inner
/// header, a local pod as its destination), for that backend pod: its
/// reverse entry is learned, its source becomes [`HAIRPIN_SOURCE6`] if
/// the pod is its own client and its source port the flow's substitute if
/// it has one, and it is delivered.
#[inline(never)]
pub(crate) fn request6(ctx: &TcContext) -> i32 {
    let err = |_| drop_pkt(DropReason::Malformed);
    let (Ok(enc), Ok(inner)) = (
        ctx.load::<TalariaEncap>(GENEVE_OFF).map_err(err),
        ctx.load::<Ipv6Hdr>(INNER_IP_OFF).map_err(err),
    ) else {
        return SHOT;
    };
    // SAFETY: read-only copy of a map value.
    let Some(pod) = (unsafe { NODE_PODS_V6.get(&inner.dst) }).copied() else {
        return drop_pkt(DropReason::UnknownPod);
    };
    match try_request6(ctx, &inner, &enc.opt, &pod) {
        Ok(a) | Err(a) => a,
    }
}

#[inline(always)]
fn try_request6(
    ctx: &TcContext,
    inner: &Ipv6Hdr,
    opt: &TalariaOpt,
    pod: &PodEntry,
) -> Result<i32, i32> {
    let tcp = tcp_flags_at(ctx, inner.next_hdr, INNER_L4_OFF6);
    // Keyed from the backend pod's side: src = the pod, dst = the client.
    let key = flow_key6(ctx, inner, INNER_L4_OFF6)?.reversed();
    // Hairpin: the switch chose the client pod itself as the backend,
    // whose kernel would take a packet from its own address as its own
    // (the answer would never leave the pod): it comes from
    // HAIRPIN_SOURCE6 instead, and the flow is keyed on that.
    let hairpin = u128::from_ne_bytes(inner.src) == u128::from_ne_bytes(inner.dst);
    let key = if hairpin {
        FlowKey6 {
            dst: HAIRPIN_SOURCE6,
            ..key
        }
    } else {
        key
    };
    let port = learn_reverse6(&key, opt, tcp)?;
    if hairpin {
        rewrite_addr6(
            ctx,
            inner.next_hdr,
            INNER_L4_OFF6,
            INNER_IP_OFF + IP6_SRC,
            &inner.src,
            &HAIRPIN_SOURCE6,
        )?;
    }
    if port != key.dst_port {
        // The backend pod sees this flow from a substitute port.
        rewrite_port(ctx, inner.next_hdr, INNER_L4_OFF6, 0, key.dst_port, port)?;
    }
    decap6(ctx, pod)
}

/// Client side: remember which backend the switch chose for this flow
/// (`key`: client → VIP6). An RST forgets it.
#[inline(always)]
fn learn_cookie6(key: &FlowKey6, opt: &TalariaOpt, tcp: u8) {
    if tcp & tcp_flags::RST != 0 {
        if NODE_COOKIES_V6.remove(key).is_ok() {
            stat(node_stat::FLOW_RESET);
        }
        return;
    }
    if opt.flags & flags::COOKIE_VALID == 0
        || NODE_FLAGS
            .get(node_flags::IGNORE_COOKIES)
            .is_some_and(|v| *v != 0)
    {
        return;
    }
    let (service_id, backend_id) = (opt.service_id.get(), opt.backend_id.get());
    let syn = tcp & tcp_flags::SYN != 0;
    let fin_bit = if tcp & tcp_flags::FIN != 0 {
        FIN_FROM_BACKEND
    } else {
        0
    };
    if let Some(e) = NODE_COOKIES_V6.get_ptr_mut(key) {
        // SAFETY: a map value pointer, valid during this run.
        let e = unsafe { &mut *e };
        if e.backend_id == backend_id && e.service_id == service_id {
            e.last_seen_ns = now_ns();
            // A SYN-ACK answers a new connection on a reused 4-tuple: the
            // old connection's FINs must not end it in the GC.
            e.fin_seen = if syn { fin_bit } else { e.fin_seen | fin_bit };
            return;
        }
    }
    // Only flows this node steers carry a cookie.
    if !is_service6(key.dst) {
        return;
    }
    let entry = CookieEntry {
        service_id,
        fin_seen: fin_bit,
        _pad: 0,
        backend_id,
        last_seen_ns: now_ns(),
    };
    if NODE_COOKIES_V6.insert(key, &entry, 0).is_ok() {
        stat(node_stat::COOKIE_LEARN);
    } else {
        stat(node_stat::COOKIE_REFUSED);
    }
}

/// Backend side: remember how to send this flow's replies (`key`: backend
/// pod → client, as the request arrived); returns the client port the
/// backend pod must see. As IPv4's [`crate::flows::learn_reverse`]: the
/// first flow on a 4-tuple keeps it; another Service's flow on it (one
/// client reaching two Services that share this backend from one port)
/// gets a substitute client port ([`Held`]), and its entry is keyed on
/// the substitute with the client's own port in `client_port`. An RST
/// ends the flow's entry and its substitute.
#[inline(always)]
fn learn_reverse6(key: &FlowKey6, opt: &TalariaOpt, tcp: u8) -> Result<Be16, i32> {
    let (service_id, backend_id) = (opt.service_id.get(), opt.backend_id.get());
    let held = Held::of(key, service_id);
    if tcp & tcp_flags::RST != 0 {
        let Some(port) = held.reset(key, service_id) else {
            return Ok(key.dst_port);
        };
        if NODE_REVERSE_V6.remove(&key.with_client_port(port)).is_ok() {
            stat(node_stat::FLOW_RESET);
        }
        return Ok(port);
    }
    if opt.flags & flags::COOKIE_VALID == 0 {
        return Err(drop_pkt(DropReason::NoBackend));
    }
    let Keyed { port, client_port } = held.keyed(key, service_id)?;
    let k = key.with_client_port(port);
    let syn = tcp & tcp_flags::SYN != 0;
    let fin_bit = if tcp & tcp_flags::FIN != 0 {
        FIN_FROM_CLIENT
    } else {
        0
    };
    if let Some(e) = NODE_REVERSE_V6.get_ptr_mut(&k) {
        // SAFETY: a map value pointer, valid during this run.
        let e = unsafe { &mut *e };
        // This flow's entry, not another client port's that had this one
        // as its substitute.
        if e.service_id == service_id && e.backend_id == backend_id && e.client_port == client_port
        {
            e.last_seen_ns = now_ns();
            e.fin_seen = if syn {
                fin_bit
            } else {
                with_fin(e.fin_seen, fin_bit)
            };
            // After both FINs the client only acknowledges: the backend's
            // connection is closed, its 4-tuple free (`reusable`).
            if !syn && fin_bit == 0 && key.proto == IPPROTO_TCP && finished(e.fin_seen) {
                e.fin_seen |= FIN_ACKED;
            }
            return Ok(port);
        }
    }
    // SAFETY: read-only copy of a map value.
    let Some(svc) = (unsafe { NODE_SERVICES_V6.get(u32::from(service_id)) }).copied() else {
        return Err(drop_pkt(DropReason::NoService));
    };
    let entry = ReverseEntry6 {
        vip: svc.vip,
        vip_port: svc.port,
        service_id,
        backend_id,
        fin_seen: fin_bit,
        _pad: 0,
        client_port,
        _pad2: [0; 4],
        last_seen_ns: now_ns(),
    };
    if NODE_REVERSE_V6.insert(&k, &entry, 0).is_err() {
        // The table is full: a flow whose replies cannot be reverse-NATed
        // must not start.
        return Err(drop_pkt(DropReason::FlowLimit));
    }
    stat(node_stat::REVERSE_LEARN);
    Ok(port)
}
