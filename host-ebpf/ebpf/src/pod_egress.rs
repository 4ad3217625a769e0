//! The hook on the ingress of every pod's host-side veth: packets leaving
//! the pod. Service traffic is steered into Geneve towards the switch;
//! replies of local backend pods are reverse-NATed first.

use aya_ebpf::{macros::classifier, maps::lpm_trie::Key, programs::TcContext};
use talaria_common::{
    be::Be16,
    drop::DropReason,
    maps::{
        node_stat, port_policy, reverse_state, AffinityKey, CookieEntry, FlowKey, FragKey,
        NodeConfig, RequestFragEntry, ReverseEntry, FIN_BACKEND_FIRST, FIN_FROM_BACKEND,
        FIN_FROM_CLIENT, PENDING_BACKEND,
    },
    net::{
        tcp_flags, EthHdr, Ipv4Hdr, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
        IPV4_FRAG_OFFSET,
    },
    wire::{flags, GENEVE_UDP_PORT},
};

use crate::{
    encap::{encap, flow_sport},
    flows::{affinity_backend, is_own_node_port},
    maps::{
        add_fin, config, drop_pkt, release_flow_slot, remove_flow, stat, take_flow_slot, FlowTable,
        NODE_COOKIES, NODE_PODS, NODE_PORT_POLICY, NODE_REQUEST_FRAGS, NODE_REVERSE,
        NODE_SVC_CIDRS,
    },
    mtu::{check_mtu, reject},
    nat::{fragment_reply, icmp_error_reply, icmp_error_request, note_first_fragment, reverse_nat},
    skb::{now_ns, skb_ifindex, tcp_flags_at, IP_OFF, L4_OFF, PASS},
    subst::forget_substitute,
    tstamp::stamp_reply,
    v6::pod_egress6,
};

/// Ingress of a pod's host-side veth = packets leaving the pod. IPv4 and
/// IPv6 each in a BPF subprogram of their own: inlined together, their
/// frames would not fit the 512 bytes of stack.
#[classifier]
pub fn node_pod_egress(ctx: TcContext) -> i32 {
    let Ok(eth) = ctx.load::<EthHdr>(0) else {
        return PASS;
    };
    match eth.ether_type.get() {
        ETH_P_IP => pod_egress4(&ctx),
        ETH_P_IPV6 => pod_egress6(&ctx),
        _ => PASS,
    }
}

#[inline(never)]
fn pod_egress4(ctx: &TcContext) -> i32 {
    match try_pod_egress(ctx) {
        Ok(a) | Err(a) => a,
    }
}

#[inline(always)]
fn try_pod_egress(ctx: &TcContext) -> Result<i32, i32> {
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

    if NODE_SVC_CIDRS.get(Key::new(32, ip.dst)).is_some()
        || (ip.dst == cfg.node_ip && to_own_node_port(ctx, &ip))
    {
        return client_to_service(ctx, cfg, &ip);
    }
    if ip.has_options() {
        return Ok(PASS);
    } else if !first_fragment {
        // A reply datagram too big for the pod's MTU, or anything else.
        return fragment_reply(ctx, cfg, &ip);
    } else if ip.proto == IPPROTO_ICMP {
        return icmp_error_reply(ctx, cfg, &ip);
    } else if ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP {
        return Ok(PASS);
    }
    let key = flow_key(ctx, &ip)?;
    let tcp = tcp_flags_at(ctx, ip.proto, L4_OFF);

    // A reply from a local backend pod?
    let Some(rev) = NODE_REVERSE.get_ptr_mut(key) else {
        return Ok(PASS);
    };
    check_mtu(ctx, &ip, false)?;
    // SAFETY: a map value pointer, valid during this run.
    let entry = unsafe { &mut *rev };
    let rev = *entry;
    if tcp & tcp_flags::RST != 0 {
        remove_flow(&NODE_REVERSE, &key, rev.fin_seen, FlowTable::Reverse);
        forget_substitute(&key, &rev);
        stat(node_stat::FLOW_RESET);
    } else {
        entry.last_seen_ns = now_ns();
        if ip.proto == IPPROTO_UDP {
            // Its replies tell the client's node the cookie: no notification.
            entry.state |= reverse_state::REPLIED;
        }
        if tcp & tcp_flags::FIN != 0 {
            if backend_closes_with_client(ctx, entry) {
                // The client's FIN went by first, but the backend sent its
                // own before taking it in: both closed at once, and the
                // backend keeps TIME_WAIT as after an active close.
                entry.fin_seen |= FIN_BACKEND_FIRST;
            }
            add_fin(
                &mut entry.fin_seen,
                FIN_FROM_BACKEND,
                key.src,
                FlowTable::Reverse,
            );
        }
        if ip.proto == IPPROTO_TCP {
            // An outside client's flow: its cookie in the TSval.
            stamp_reply(ctx, L4_OFF, entry);
        }
    }
    reverse_nat(ctx, &ip, [key.src_port, key.dst_port], &rev)?;
    stat(node_stat::REVERSE_NAT);
    let outer_sport = flow_sport(&rev.client_view(key));
    if ip.is_fragment() {
        note_first_fragment(&ip, &rev, outer_sport);
    }
    encap(
        ctx,
        cfg,
        flags::REPLY | flags::COOKIE_VALID,
        rev.service_id,
        rev.backend_id,
        outer_sport,
        ip.tos,
    )
}

/// Whether a pod's packet to its node's own address is for one of the
/// node's nodePorts, where the node's stack would take it: a TCP or UDP
/// packet to one, or a later fragment of a datagram whose first fragment
/// was steered.
#[inline(always)]
fn to_own_node_port(ctx: &TcContext, ip: &Ipv4Hdr) -> bool {
    if ip.has_options() {
        return false;
    }
    if ip.frag.get() & IPV4_FRAG_OFFSET != 0 {
        // SAFETY: read-only lookup.
        return unsafe { NODE_REQUEST_FRAGS.get(&FragKey::of(ip)) }.is_some();
    }
    (ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP)
        && ctx
            .load::<Be16>(L4_OFF + 2)
            .is_ok_and(|dport| is_own_node_port(ip.dst, dport, ip.proto))
}

/// Whether the backend's FIN in this packet crosses the client's: the
/// client's went by (the flow's entry has its acknowledgment's low byte,
/// `ReverseEntry::state`) and this one does not acknowledge it.
#[inline(always)]
fn backend_closes_with_client(ctx: &TcContext, entry: &ReverseEntry) -> bool {
    if entry.fin_seen & (FIN_FROM_CLIENT | FIN_FROM_BACKEND) != FIN_FROM_CLIENT {
        return false;
    }
    // The low byte of the acknowledgment number (bytes 8–11).
    ctx.load::<u8>(L4_OFF + 11)
        .is_ok_and(|ack| ack != entry.state)
}

/// A client's packet to a Service address, from a pod or from the node
/// itself: TCP and UDP are tunnelled to the switch, fragments included;
/// ICMP errors about replies are relayed; nothing else is served.
#[inline(always)]
pub(crate) fn client_to_service(
    ctx: &TcContext,
    cfg: &NodeConfig,
    ip: &Ipv4Hdr,
) -> Result<i32, i32> {
    if ip.has_options() {
        return Err(drop_pkt(DropReason::IpOptions));
    }
    if ip.frag.get() & IPV4_FRAG_OFFSET != 0 {
        return later_request_fragment(ctx, cfg, ip);
    }
    match ip.proto {
        IPPROTO_TCP | IPPROTO_UDP => steer_to_service(ctx, cfg, ip),
        _ if ip.is_fragment() => Err(drop_pkt(DropReason::Fragment)),
        IPPROTO_ICMP => icmp_error_request(ctx, cfg, ip),
        _ => Err(drop_pkt(DropReason::UnsupportedProtocol)),
    }
}

/// A later fragment of a client's datagram to a VIP (it has no ports): as
/// its first fragment was sent, with that flow's cookie, or with the
/// datagram's ports in the option (`FRAG_PORTS`) for the switch to look
/// up and hash as it did the first. No first fragment seen (fragments out
/// of order, or its entry evicted): dropped, counted as `fragment`.
#[inline(always)]
fn later_request_fragment(ctx: &TcContext, cfg: &NodeConfig, ip: &Ipv4Hdr) -> Result<i32, i32> {
    // SAFETY: read-only copy of a map value.
    let Some(first) = (unsafe { NODE_REQUEST_FRAGS.get(&FragKey::of(ip)) }).copied() else {
        return Err(drop_pkt(DropReason::Fragment));
    };
    check_mtu(ctx, ip, false)?;
    stat(node_stat::REQUEST_FRAGMENT);
    encap(
        ctx,
        cfg,
        first.flags,
        first.service_id,
        first.word,
        first.outer_sport,
        ip.tos,
    )
}

/// Remembers how a request's first fragment went, for the later ones.
#[inline(always)]
fn note_request_fragment(ip: &Ipv4Hdr, key: &FlowKey, sent: (u8, u16, u32), sport: u16) {
    let (fl, service_id, backend_id) = sent;
    let entry = if fl & flags::COOKIE_VALID != 0 {
        RequestFragEntry {
            flags: flags::COOKIE_VALID,
            service_id,
            word: backend_id,
            outer_sport: sport,
            ..Default::default()
        }
    } else {
        RequestFragEntry {
            flags: fl | flags::FRAG_PORTS,
            word: u32::from(key.src_port.get()) << 16 | u32::from(key.dst_port.get()),
            outer_sport: sport,
            ..Default::default()
        }
    };
    let _ = NODE_REQUEST_FRAGS.insert(&FragKey::of(ip), &entry, 0);
}

/// The flow of a TCP or UDP packet leaving a pod (no IPv4 options).
#[inline(always)]
fn flow_key(ctx: &TcContext, ip: &Ipv4Hdr) -> Result<FlowKey, i32> {
    let [src_port, dst_port]: [Be16; 2] = ctx
        .load(L4_OFF)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    Ok(FlowKey {
        src: ip.src,
        dst: ip.dst,
        src_port,
        dst_port,
        proto: ip.proto,
        _pad: [0; 3],
    })
}

/// A client's TCP or UDP packet to a Service (no options, a first
/// fragment at most): tunnelled to the switch with the flow's cookie, or
/// as a new flow by its port's policy ([`new_flow`]).
#[inline(always)]
fn steer_to_service(ctx: &TcContext, cfg: &NodeConfig, ip: &Ipv4Hdr) -> Result<i32, i32> {
    let key = flow_key(ctx, ip)?;
    let tcp = tcp_flags_at(ctx, ip.proto, L4_OFF);
    let sport = flow_sport(&key);
    check_mtu(ctx, ip, false)?;
    // A SYN opens a new connection: it is balanced afresh, as the
    // switch would balance any new flow, whatever a reused 4-tuple
    // left in the cache (kube-proxy sends new connections to ready
    // endpoints only; an old cookie may name a draining one).
    if tcp & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN {
        // SAFETY: read-only copy of a map value.
        if let Some(e) = unsafe { NODE_COOKIES.get(&key) }.copied() {
            remove_flow(&NODE_COOKIES, &key, e.fin_seen, FlowTable::Cookies);
        }
    }
    let (fl, service_id, backend_id) = match NODE_COOKIES.get_ptr_mut(key) {
        Some(e) => {
            // SAFETY: a map value pointer, valid during this run; races
            // with other CPUs only lose a timestamp or a FIN bit.
            let e = unsafe { &mut *e };
            let found = if e.backend_id == PENDING_BACKEND {
                // Not answered yet: still new to the switch.
                (flags::NEW_FLOW, 0, 0)
            } else {
                (flags::COOKIE_VALID, e.service_id, e.backend_id)
            };
            if tcp & tcp_flags::RST != 0 {
                remove_flow(&NODE_COOKIES, &key, e.fin_seen, FlowTable::Cookies);
                stat(node_stat::FLOW_RESET);
            } else {
                e.last_seen_ns = now_ns();
                if tcp & tcp_flags::FIN != 0 {
                    add_fin(
                        &mut e.fin_seen,
                        FIN_FROM_CLIENT,
                        key.src,
                        FlowTable::Cookies,
                    );
                }
            }
            stat(node_stat::CACHE_HIT);
            found
        }
        None => {
            stat(node_stat::CACHE_MISS);
            new_flow(ctx, ip, &key, sport)?
        }
    };
    if ip.is_fragment() {
        note_request_fragment(ip, &key, (fl, service_id, backend_id), sport);
    }
    encap(ctx, cfg, fl, service_id, backend_id, sport, ip.tos)
}

/// A new flow's option (flags, service id, backend id), by its port's
/// policy: refused (no usable endpoint), sent with the client's session
/// affinity's backend as its cookie, or with a preferred backend picked
/// by the flow's hash (`internalTrafficPolicy: Local`, topology hints),
/// dropped (Local without a local endpoint), or left to the switch's
/// bucket hash.
#[inline(always)]
fn new_flow(
    ctx: &TcContext,
    ip: &Ipv4Hdr,
    key: &FlowKey,
    hash: u16,
) -> Result<(u8, u16, u32), i32> {
    // SAFETY: read-only lookup.
    let Some(policy) = (unsafe { NODE_PORT_POLICY.get(&key.service_key()) }) else {
        return Ok((flags::NEW_FLOW, 0, 0));
    };
    if policy.flags & port_policy::REJECT != 0 {
        stat(node_stat::REJECTED);
        return Err(reject(ctx, ip));
    }
    let mut sent = (flags::NEW_FLOW, 0, PENDING_BACKEND);
    let client = AffinityKey {
        client: key.src,
        service_id: policy.service_id,
        _pad: 0,
    };
    if let Some(backend_id) = affinity_backend(client, policy) {
        stat(node_stat::AFFINITY);
        sent = (flags::COOKIE_VALID, policy.service_id, backend_id);
    } else if policy.count > 0 {
        let i = usize::from(hash) % usize::from(policy.count);
        if let Some(backend_id) = policy.preferred.get(i) {
            stat(node_stat::PREFERRED);
            sent = (flags::COOKIE_VALID, policy.service_id, *backend_id);
        }
    } else if policy.flags & port_policy::LOCAL_ONLY != 0 {
        return Err(drop_pkt(DropReason::NoLocalEndpoint));
    }
    if policy.flags & port_policy::AGENTLESS != 0 {
        note_pending(key, policy.service_id, sent.2);
    }
    Ok(sent)
}

/// Records a new flow to a port with endpoints without an agent before
/// any reply: such an endpoint's replies come from its own address, and
/// only this entry tells them from its direct clients' (`flags::ENDPOINT`
/// in `uplink_ingress`). Not recorded (the pod holds its share, or the
/// cache is full): its replies reach the pod from the endpoint's address.
#[inline(always)]
fn note_pending(key: &FlowKey, service_id: u16, backend_id: u32) {
    if !take_flow_slot(key.src, FlowTable::Cookies) {
        stat(node_stat::COOKIE_REFUSED);
        return;
    }
    let entry = CookieEntry {
        service_id,
        backend_id,
        last_seen_ns: now_ns(),
        ..Default::default()
    };
    if NODE_COOKIES.insert(key, &entry, 0).is_err() {
        release_flow_slot(key.src, FlowTable::Cookies);
        stat(node_stat::COOKIE_REFUSED);
    }
}
