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
//! cookie. ICMPv6 errors about a flow are relayed both ways: a backend
//! pod's goes back to its client as a reply does
//! ([`icmp6_error_reply`]), a client pod's about a reply goes to the
//! backend that sent it ([`icmp6_error_request`],
//! [`icmp6_error_to_backend`]); and the node answers a pod's too-big
//! packet with a Packet Too Big ([`check_mtu6`]). New flows follow their
//! port's policy ([`new_flow6`]: REJECT, session affinity, Local,
//! preferred backends). Not here (IPv4 only): fragments, endpoints
//! without an agent, one-way UDP notification, timestamp cookies,
//! nodePorts and external addresses,
//! per-pod flow limits, simultaneous-close detection (a backend FIN that
//! crosses the client's counts as a passive close).

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use talaria_common::{
    be::Be16,
    drop::DropReason,
    maps::{
        finished, is_hairpin_source6, mtu, mtu_stat, node_flags, node_stat, port_policy,
        AffinityKey6, BackendKey, CookieEntry, FlowKey6, PodEntry, PortPolicy, ReverseEntry6,
        ServiceAddr6, FIN_ACKED, FIN_BACKEND_FIRST, FIN_FROM_BACKEND, FIN_FROM_CLIENT,
        HAIRPIN_SOURCE6, PENDING_BACKEND,
    },
    net::{tcp_flags, Ipv6Hdr, IPPROTO_TCP, IPPROTO_UDP, IPV6_HDR_LEN, UDP_HDR_LEN},
    net::{ICMPV6_INFO_MIN, IPPROTO_ICMPV6},
    wire::{flags, TalariaEncap, TalariaOpt, ENCAP_OVERHEAD},
};

use crate::{
    encap::{decap6, encap_family},
    flows::{affinity_backend, remember_affinity},
    maps::{
        config, count_mtu, drop_pkt, stat, NODE_COOKIES_V6, NODE_FLAGS, NODE_MTU, NODE_PODS_V6,
        NODE_PORT_POLICY_V6, NODE_REVERSE_V6, NODE_SERVICES_V6, NODE_SVC_CIDRS_V6,
    },
    mtu::{port_unreachable6, IPV6_MIN_MTU},
    nat::rewrite_port,
    skb::{
        now_ns, skb_ifindex, tcp_flags_at, GENEVE_OFF, INNER_IP_OFF, IP_OFF, PASS, REDIRECT, SHOT,
    },
    subst::{find_reverse, forget_substitute, Held, Keyed},
    uplink_ingress::tunnel_opt,
};

/// The L4 header of a pod's IPv6 packet (no extension headers).
const L4_OFF6: usize = IP_OFF + IPV6_HDR_LEN;
/// The inner L4 header of an IPv6 tunnel packet on the uplink.
const INNER_L4_OFF6: usize = INNER_IP_OFF + IPV6_HDR_LEN;
/// Offsets of the source and destination addresses in an IPv6 header.
const IP6_SRC: usize = 8;
const IP6_DST: usize = 24;
/// An ICMPv6 error quotes the packet it is about after its header; here,
/// a pod's error.
const ICMP6_HDR_LEN: usize = 8;
const ICMP6_CHECK_OFF: usize = L4_OFF6 + 2;
const EMB6_OFF: usize = L4_OFF6 + ICMP6_HDR_LEN;

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
    traffic_class_of(&ip.version_class_flow.0)
}

/// The traffic class in the first bytes of an IPv6 header.
#[inline(always)]
fn traffic_class_of(head: &[u8; 4]) -> u8 {
    (head[0] << 4) | (head[1] >> 4)
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
/// a TCP or UDP reply of a local backend pod, or its ICMPv6 error about a
/// Service flow, reverse-NATed and steered; anything else passes (pod to
/// pod, neighbour discovery).
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
    } else if ip.next_hdr == IPPROTO_ICMPV6 {
        return icmp6_error_reply(ctx);
    } else {
        return PASS;
    };
    // Answered from here, the shallowest subprogram: below `steer6` or
    // `reply6` the answer's frame would overflow the 512-byte stack the
    // call chain shares.
    match verdict {
        TOO_BIG6 => packet_too_big6(ctx),
        REJECT6 => port_unreachable6(ctx),
        _ => verdict,
    }
}

/// Not TC verdicts: what [`check_mtu6`] returns up to [`pod_egress6`] for
/// a packet to be answered with a Packet Too Big, and [`new_flow6`] for
/// one to be refused with a port unreachable.
const TOO_BIG6: i32 = 0x100;
const REJECT6: i32 = 0x103;

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
    Ok(tunnel_reply6(ctx, &key, &rev, traffic_class(&ip)))
}

/// Tunnels a reverse-NATed packet of the flow `key` (the backend's view)
/// to the switch as a reply, with the flow's cookie and the outer source
/// port of the flow as the client sees it, from VIP6:port to its own
/// port.
#[inline(always)]
fn tunnel_reply6(ctx: &TcContext, key: &FlowKey6, rev: &ReverseEntry6, tos: u8) -> i32 {
    stat(node_stat::REVERSE_NAT);
    let sport = rev.client_view(*key).outer_sport();
    encap6(
        ctx,
        flags::REPLY | flags::COOKIE_VALID,
        rev.service_id,
        rev.backend_id,
        u32::from(sport) << 8 | u32::from(tos),
    )
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

/// A local backend pod's ICMPv6 error (any error type, RFC 4443 §2.1:
/// destination unreachable, Packet Too Big, time exceeded, parameter
/// problem) about a Service flow, as IPv4's
/// [`crate::nat::icmp_error_reply`]: the quoted packet went client →
/// backend, so it is matched to the flow's reverse entry and rewritten as
/// the client must see it, from and about VIP6:port (outer source, quoted
/// destination address and port, the quoted client port if the flow has a
/// substitute; the ICMPv6 checksum covers them all, the outer source
/// through the pseudo-header), then tunnelled like a reply. Only the
/// backend the quoted packet was addressed to may send it (the spoof
/// check vouches for the source): `icmp_spoof` otherwise. One that does
/// not fit the tunnel is dropped (`too_big_icmp`: no error about an
/// error). The quoted L4 checksum stays, as receivers do not check it.
/// Anything else (informational messages, neighbour discovery, errors
/// about other traffic) passes.
#[inline(never)]
fn icmp6_error_reply(ctx: &TcContext) -> i32 {
    match try_icmp6_error_reply(ctx) {
        Ok(a) | Err(a) => a,
    }
}

#[inline(always)]
fn try_icmp6_error_reply(ctx: &TcContext) -> Result<i32, i32> {
    // The quoted packet went client → backend; keyed from the backend's
    // side, as the reverse entry is.
    let Some(key) = quoted_flow6(ctx, L4_OFF6).map(|q| q.reversed()) else {
        return Ok(PASS);
    };
    // SAFETY: read-only use of a map value, valid during this run.
    let Some(rev) = (unsafe { NODE_REVERSE_V6.get(&key) }) else {
        return Ok(PASS);
    };
    // Of the outer header only what is needed, not all of it: this frame
    // is on the pod hook's deepest call chain.
    let (Ok(head), Ok(payload_len), Ok(src)) = (
        ctx.load::<[u8; 4]>(IP_OFF),
        ctx.load::<Be16>(IP_OFF + 4),
        ctx.load::<[u8; 16]>(IP_OFF + IP6_SRC),
    ) else {
        return Err(drop_pkt(DropReason::Malformed));
    };
    // The source, the backend pod (the spoof check vouched for it), must
    // be the quoted packet's destination.
    if u128::from_ne_bytes(src) != u128::from_ne_bytes(key.src) {
        return Err(drop_pkt(DropReason::IcmpSpoof));
    }
    icmp6_fits(payload_len)?;
    let err = |_| drop_pkt(DropReason::Malformed);
    let pseudo = aya_ebpf::bindings::BPF_F_PSEUDO_HDR as u64;
    csum_replace16(ctx, ICMP6_CHECK_OFF, pseudo, &key.src, &rev.vip)?;
    ctx.store(IP_OFF + IP6_SRC, &rev.vip, 0).map_err(err)?;
    csum_replace16(ctx, ICMP6_CHECK_OFF, 0, &key.src, &rev.vip)?;
    ctx.store(EMB6_OFF + IP6_DST, &rev.vip, 0).map_err(err)?;
    rewrite_quoted_port(ctx, L4_OFF6, 2, key.src_port, rev.vip_port)?;
    if rev.client_port.get() != 0 {
        // The quoted packet came from the substitute port; the client
        // knows only its own.
        rewrite_quoted_port(ctx, L4_OFF6, 0, key.dst_port, rev.client_port)?;
    }
    Ok(tunnel_reply6(ctx, &key, rev, traffic_class_of(&head)))
}

/// Rewrites a port of the packet an ICMPv6 error at `icmp_off` quotes (at
/// `at` in its L4 header: 0 the source, 2 the destination) from `old` to
/// `new`, with the ICMPv6 checksum.
#[inline(always)]
fn rewrite_quoted_port(
    ctx: &TcContext,
    icmp_off: usize,
    at: usize,
    old: Be16,
    new: Be16,
) -> Result<(), i32> {
    let err = |_| drop_pkt(DropReason::Malformed);
    let raw16 = |v: Be16| u64::from(u16::from_ne_bytes(v.0));
    ctx.l4_csum_replace(icmp_off + 2, raw16(old), raw16(new), 2)
        .map_err(err)?;
    ctx.store(icmp_off + ICMP6_HDR_LEN + IPV6_HDR_LEN + at, &new, 0)
        .map_err(err)
}

/// The flow an ICMPv6 error at `icmp_off` quotes, keyed as its quoted
/// packet's sender saw it, if it is one talaria relays: an error (type
/// below 128) about a TCP or UDP packet without extension headers.
#[inline(always)]
fn quoted_flow6(ctx: &TcContext, icmp_off: usize) -> Option<FlowKey6> {
    // The type first: most ICMPv6 a pod sends (neighbour discovery, echo)
    // is no error, and its quote need not be read.
    let icmp_type: u8 = ctx.load(icmp_off).ok()?;
    if icmp_type >= ICMPV6_INFO_MIN {
        return None;
    }
    let emb: Ipv6Hdr = ctx.load(icmp_off + ICMP6_HDR_LEN).ok()?;
    if emb.next_hdr != IPPROTO_TCP && emb.next_hdr != IPPROTO_UDP {
        return None;
    }
    let [src_port, dst_port]: [Be16; 2] = ctx.load(icmp_off + ICMP6_HDR_LEN + IPV6_HDR_LEN).ok()?;
    Some(FlowKey6 {
        src: emb.src,
        dst: emb.dst,
        src_port,
        dst_port,
        proto: emb.next_hdr,
        _pad: [0; 3],
    })
}

/// The reply a client's ICMPv6 error at `icmp_off` quotes (the packet
/// from `ip_off`'s destination to its source), as its sender saw it.
/// Anything else is not relayed: no quoted ports (`unsupported_protocol`,
/// an echo request among them), or someone else's reply (`icmp_spoof`).
#[inline(always)]
fn quoted_reply6(ctx: &TcContext, ip_off: usize, icmp_off: usize) -> Result<FlowKey6, i32> {
    let quoted =
        quoted_flow6(ctx, icmp_off).ok_or_else(|| drop_pkt(DropReason::UnsupportedProtocol))?;
    let [src, dst]: [[u8; 16]; 2] = ctx
        .load(ip_off + IP6_SRC)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    let same = |a: &[u8; 16], b: &[u8; 16]| u128::from_ne_bytes(*a) == u128::from_ne_bytes(*b);
    if !same(&quoted.src, &dst) || !same(&quoted.dst, &src) {
        return Err(drop_pkt(DropReason::IcmpSpoof));
    }
    Ok(quoted)
}

/// A client pod's ICMPv6 error to a VIP6 about a reply it got from it
/// (port unreachable from a closed socket, Packet Too Big), as IPv4's
/// [`crate::nat::icmp_error_request`]: the quoted packet is VIP6:port →
/// the pod, a flow of the pod's cookie cache, whose cookie takes the
/// error through the switch to the backend that sent the reply (the
/// switch rewrites the destination and the quoted source to that
/// backend). An error about no flow of the pod is `icmp_spoof`; a
/// message that is no error (an echo request) is not served
/// (`unsupported_protocol`), as with kube-proxy.
#[inline(never)]
fn icmp6_error_request(ctx: &TcContext) -> i32 {
    match try_icmp6_error_request(ctx) {
        Ok(a) | Err(a) => a,
    }
}

#[inline(always)]
fn try_icmp6_error_request(ctx: &TcContext) -> Result<i32, i32> {
    // The reply went from the VIP6 to the pod: the flow is the reverse.
    let key = quoted_reply6(ctx, IP_OFF, L4_OFF6)?.reversed();
    // SAFETY: read-only use of a map value, valid during this run.
    let Some(flow) = (unsafe { NODE_COOKIES_V6.get(&key) }) else {
        return Err(drop_pkt(DropReason::IcmpSpoof));
    };
    let (Ok(head), Ok(payload_len)) = (ctx.load::<[u8; 4]>(IP_OFF), ctx.load::<Be16>(IP_OFF + 4))
    else {
        return Err(drop_pkt(DropReason::Malformed));
    };
    icmp6_fits(payload_len)?;
    stat(node_stat::ICMP_RELAY);
    Ok(encap6(
        ctx,
        flags::COOKIE_VALID,
        flow.service_id,
        flow.backend_id,
        u32::from(key.outer_sport()) << 8 | u32::from(traffic_class_of(&head)),
    ))
}

/// An ICMPv6 error of `payload_len` bytes after its IPv6 header fits the
/// tunnel; one that does not is dropped (`too_big_icmp`: no error about
/// an error).
#[inline(always)]
fn icmp6_fits(payload_len: Be16) -> Result<(), i32> {
    let len = IPV6_HDR_LEN as u32 + u32::from(payload_len.get());
    if NODE_MTU
        .get(mtu::UPLINK_MTU)
        .is_some_and(|m| *m != 0 && len + ENCAP_OVERHEAD as u32 > *m)
    {
        count_mtu(mtu_stat::TOO_BIG_ICMP);
        return Err(SHOT);
    }
    Ok(())
}

/// Not a TC verdict: what [`uplink_ingress6`] returns for a client's
/// ICMPv6 error relayed by the switch, which the uplink hook then hands to
/// [`icmp6_error_to_backend`] (as [`REQUEST6`], for the stack).
pub(crate) const ERROR_TO_BACKEND6: i32 = 0x102;

/// The switch's relay of a client's ICMPv6 error ([`icmp6_error_request`])
/// to a local backend pod, as IPv4's [`crate::nat::icmp_error_to_backend`]:
/// the quoted packet is now backend → client as the backend sent it. It
/// is delivered only if it belongs to the backend's flow that the cookie
/// names (`icmp_spoof` otherwise), with the quoted client port turned
/// into the substitute the backend knows the client by, if the flow has
/// one.
#[inline(never)]
pub(crate) fn icmp6_error_to_backend(ctx: &TcContext) -> i32 {
    match try_icmp6_error_to_backend(ctx) {
        Ok(a) | Err(a) => a,
    }
}

#[inline(always)]
fn try_icmp6_error_to_backend(ctx: &TcContext) -> Result<i32, i32> {
    let err = |_| drop_pkt(DropReason::Malformed);
    let opt = ctx.load::<TalariaEncap>(GENEVE_OFF).map_err(err)?.opt;
    let dst: [u8; 16] = ctx.load(INNER_IP_OFF + IP6_DST).map_err(err)?;
    // SAFETY: read-only copy of a map value.
    let Some(pod) = (unsafe { NODE_PODS_V6.get(&dst) }).copied() else {
        return Err(drop_pkt(DropReason::UnknownPod));
    };
    // The backend's view of its flow, as its reply left it.
    let key = quoted_reply6(ctx, INNER_IP_OFF, INNER_L4_OFF6)?;
    let (port, _) = find_reverse(&key, opt.service_id.get())
        .filter(|(_, e)| e.backend_id == opt.backend_id.get())
        .ok_or_else(|| drop_pkt(DropReason::IcmpSpoof))?;
    if port != key.dst_port {
        rewrite_quoted_port(ctx, INNER_L4_OFF6, 2, key.dst_port, port)?;
    }
    stat(node_stat::ICMP_RELAY);
    decap6(ctx, &pod)
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
/// extension headers are tunnelled, and so is an ICMPv6 error about a
/// reply ([`icmp6_error_request`]); anything else is dropped and counted
/// (the VIP is reachable only through the switch, so passing it would
/// only send it to be dropped there): a fragment header `fragment`, the
/// other extension headers `ip_options` (as IPv4 options are), other
/// protocols `unsupported_protocol`.
#[inline(always)]
fn client_to_service6(ctx: &TcContext, next_hdr: u8) -> i32 {
    match next_hdr {
        IPPROTO_TCP | IPPROTO_UDP => steer6(ctx),
        IPPROTO_ICMPV6 => icmp6_error_request(ctx),
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
            new_flow6(&key)?
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

/// A new flow's option (flags, service id, backend id), by its port's
/// policy (`NODE_PORT_POLICY_V6`), as IPv4's: refused (`Err(REJECT6)`, which
/// [`pod_egress6`] answers), sent with the client's session affinity's
/// backend or a preferred backend picked by the flow's hash as its cookie
/// (`internalTrafficPolicy: Local`, topology hints), dropped (Local
/// without a local endpoint, `no_local_endpoint`), or left to the switch's
/// bucket hash.
#[inline(always)]
fn new_flow6(key: &FlowKey6) -> Result<(u8, u16, u32), i32> {
    let Some(policy) = port_policy6(key) else {
        return Ok((flags::NEW_FLOW, 0, 0));
    };
    if policy.flags & port_policy::REJECT != 0 {
        stat(node_stat::REJECTED);
        return Err(REJECT6);
    }
    let client = AffinityKey6 {
        client: key.src,
        service_id: policy.service_id,
        _pad: 0,
    };
    if let Some(backend_id) = affinity_backend(client, policy) {
        stat(node_stat::AFFINITY);
        return Ok((flags::COOKIE_VALID, policy.service_id, backend_id));
    }
    if policy.count > 0 {
        let i = usize::from(key.outer_sport()) % usize::from(policy.count);
        if let Some(backend_id) = policy.preferred.get(i) {
            stat(node_stat::PREFERRED);
            return Ok((flags::COOKIE_VALID, policy.service_id, *backend_id));
        }
    } else if policy.flags & port_policy::LOCAL_ONLY != 0 {
        return Err(drop_pkt(DropReason::NoLocalEndpoint));
    }
    Ok((flags::NEW_FLOW, 0, 0))
}

/// The policy of the port a client's flow `key` goes to, if it has one.
#[inline(always)]
fn port_policy6(key: &FlowKey6) -> Option<&'static PortPolicy> {
    let port = ServiceAddr6 {
        vip: key.dst,
        port: key.dst_port,
        proto: key.proto,
        _pad: 0,
    };
    // SAFETY: read-only use of a map value, valid during this run.
    unsafe { NODE_PORT_POLICY_V6.get(&port) }
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
    let (check_off, mangled) = if proto == IPPROTO_TCP {
        (l4_off + 16, 0)
    } else {
        (l4_off + 6, aya_ebpf::bindings::BPF_F_MARK_MANGLED_0 as u64)
    };
    let pseudo = aya_ebpf::bindings::BPF_F_PSEUDO_HDR as u64;
    csum_replace16(ctx, check_off, pseudo | mangled, old, new)?;
    ctx.store(addr_off, new, 0)
        .map_err(|_| drop_pkt(DropReason::Malformed))
}

/// Updates the checksum at `check_off` for 16 bytes (an IPv6 address)
/// going from `old` to `new`, one 32-bit word at a time; `flags`: those of
/// `l4_csum_replace` besides the size (`BPF_F_PSEUDO_HDR` for an address
/// of the pseudo-header).
#[inline(always)]
fn csum_replace16(
    ctx: &TcContext,
    check_off: usize,
    flags: u64,
    old: &[u8; 16],
    new: &[u8; 16],
) -> Result<(), i32> {
    let word =
        |a: &[u8; 16], i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]) as u64;
    for i in [0, 4, 8, 12] {
        let (o, n) = (word(old, i), word(new, i));
        if o != n {
            ctx.l4_csum_replace(check_off, o, n, flags | 4)
                .map_err(|_| drop_pkt(DropReason::Malformed))?;
        }
    }
    Ok(())
}

/// A Talaria packet from the switch whose inner packet is IPv6 (Geneve
/// protocol 0x86DD; the outer headers and the option are checked): a
/// request for a local backend pod records the flow's reverse entry, a
/// reply for a local client pod teaches the node its cookie; both are
/// decapsulated and delivered to the pod. Only TCP and UDP without
/// extension headers, and ICMPv6 (errors about a flow, either way), to a
/// local pod's IPv6 address.
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
    let reply = opt.flags & flags::REPLY != 0;
    match inner.next_hdr {
        IPPROTO_TCP | IPPROTO_UDP => {}
        // An error about a flow: a backend's, reverse-NATed by its node,
        // or a client's, relayed by the switch.
        IPPROTO_ICMPV6 => {}
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
    if !reply {
        return Ok(if inner.next_hdr == IPPROTO_ICMPV6 {
            ERROR_TO_BACKEND6
        } else {
            REQUEST6
        });
    }
    if inner.next_hdr == IPPROTO_ICMPV6 {
        // Nothing to learn from an error: delivered as it is.
        return decap6(ctx, &pod);
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
        let client = AffinityKey6 {
            client: key.src,
            service_id,
            _pad: 0,
        };
        remember_affinity(client, port_policy6(key), backend_id);
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
