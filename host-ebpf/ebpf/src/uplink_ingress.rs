//! The hook on the ingress of the node uplink: packets arriving from the
//! switch. Talaria packets are checked, learned from and decapsulated to
//! their pod; everything else passes, unless its source is a Service
//! address.

use aya_ebpf::{
    helpers::bpf_skb_load_bytes, macros::classifier, maps::lpm_trie::Key, programs::TcContext,
};
use talaria_common::{
    be::Be16,
    drop::DropReason,
    maps::{node_stat, FlowKey, NodeConfig, HAIRPIN_SOURCE},
    net::{
        tcp_flags, EthHdr, Ipv4Hdr, Ipv6Hdr, ETH_HDR_LEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP,
        IPPROTO_TCP, IPPROTO_UDP, IPV4_FRAG_OFFSET, IPV4_HDR_LEN, UDP_HDR_LEN,
    },
    wire::{
        flags, TalariaEncap, TalariaOpt, GENEVE_PROTO_IPV4, GENEVE_PROTO_IPV6, GENEVE_UDP_PORT,
    },
};

use crate::{
    encap::{decap, flow_sport},
    flows::{learn_cookie, learn_reverse},
    maps::{
        config, drop_pkt, stat, NODE_COOKIES, NODE_NOTICE_SCRATCH, NODE_PODS, NODE_SERVICES,
        NODE_SVC_CIDRS, NODE_SVC_CIDRS_V6,
    },
    nat::{icmp_error_to_backend, rewrite_addr, rewrite_fragment_addr, rewrite_port, IP_SRC},
    skb::{
        tcp_flags_at, GENEVE_OFF, INNER_IP_OFF, INNER_L4_OFF, IP_OFF, OUTER_UDP_OFF, PASS, SHOT,
    },
    tstamp::restore_echo,
    v6::{icmp6_error_to_backend, request6, uplink_ingress6, ERROR_TO_BACKEND6, REQUEST6},
};

/// Ingress of the node uplink = packets arriving from the switch. The
/// inner IPv4 and IPv6 paths are BPF subprograms of their own, picked by
/// the Geneve protocol field before anything is checked (both check the
/// outer headers the same way, [`tunnel_opt`]): in one frame, the IPv6
/// path's 16-byte addresses and the IPv4 path's calls overflow the 512
/// bytes of stack.
#[classifier]
pub fn node_uplink_ingress(ctx: TcContext) -> i32 {
    let inner_ipv6 = ctx
        .load::<Be16>(GENEVE_OFF + 2)
        .is_ok_and(|p| p.get() == GENEVE_PROTO_IPV6);
    if inner_ipv6 {
        match uplink_ingress6(&ctx) {
            REQUEST6 => request6(&ctx),
            ERROR_TO_BACKEND6 => icmp6_error_to_backend(&ctx),
            verdict => verdict,
        }
    } else {
        uplink_ingress4(&ctx)
    }
}

#[inline(never)]
fn uplink_ingress4(ctx: &TcContext) -> i32 {
    match try_uplink_ingress(ctx) {
        Ok(a) | Err(a) => a,
    }
}

/// The checks every packet from the uplink goes through: a Talaria tunnel
/// to this node from the switch, well formed, gives its option and
/// whether its inner packet is IPv6 (Geneve protocol 0x86DD; the rest of
/// the header is checked as for IPv4). Anything else is `Err` with its
/// verdict: it passes, unless its source is a Service address.
#[inline(always)]
pub(crate) fn tunnel_opt(ctx: &TcContext) -> Result<(TalariaOpt, bool), i32> {
    let eth: EthHdr = ctx.load(0).map_err(|_| PASS)?;
    if eth.ether_type.get() == ETH_P_IPV6 {
        return Err(plain_ipv6(ctx));
    }
    if eth.ether_type.get() != ETH_P_IP {
        return Err(PASS);
    }
    let outer: Ipv4Hdr = ctx.load(IP_OFF).map_err(|_| PASS)?;
    let geneve = outer.proto == IPPROTO_UDP
        && !outer.has_options()
        && !outer.is_fragment()
        && ctx
            .load::<Be16>(OUTER_UDP_OFF + 2)
            .is_ok_and(|p| p.get() == GENEVE_UDP_PORT);
    let cfg = config().ok_or(PASS)?;
    if !geneve || outer.dst != cfg.node_ip {
        // A VIP speaks to pods only through the tunnel to this node (its
        // replies are reverse-NATed on the backend's node); anything else
        // from one is someone else's, however it got here.
        if NODE_SVC_CIDRS.get(Key::new(32, outer.src)).is_some() {
            return Err(drop_pkt(DropReason::ServiceSource));
        }
        return Err(PASS);
    }
    // Talaria packets are accepted from the switch only: its tunnel
    // address, and its MAC, so that another host on the uplink's segment
    // cannot pass for it by its address alone. (The program runs on the
    // uplink only: nothing else can reach this check.)
    if outer.src != cfg.switch_ip || eth.src != cfg.switch_mac {
        return Err(drop_pkt(DropReason::TunnelSource));
    }
    let mut enc: TalariaEncap = ctx
        .load(GENEVE_OFF)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    // An inner IPv6 packet says so in the protocol field alone.
    let inner_ipv6 = enc.geneve.protocol.get() == GENEVE_PROTO_IPV6;
    if inner_ipv6 {
        enc.geneve.protocol = Be16::new(GENEVE_PROTO_IPV4);
    }
    enc.validate().map_err(|e| drop_pkt(e.drop_reason()))?;
    Ok((enc.opt, inner_ipv6))
}

#[inline(always)]
fn try_uplink_ingress(ctx: &TcContext) -> Result<i32, i32> {
    let (opt, inner_ipv6) = tunnel_opt(ctx)?;
    if inner_ipv6 {
        // Dispatched to `uplink_ingress6` by the same field: not here.
        return Err(drop_pkt(DropReason::Malformed));
    }
    let cfg = config().ok_or(PASS)?;
    let inner: Ipv4Hdr = ctx
        .load(INNER_IP_OFF)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    if inner.has_options() {
        return Err(drop_pkt(DropReason::IpOptions));
    }
    let opt = &opt;
    let first_fragment = inner.frag.get() & IPV4_FRAG_OFFSET == 0;
    // SAFETY: read-only copy of a map value.
    let pod = unsafe { NODE_PODS.get(inner.dst) }.copied();
    // The node itself is a client too (`node_host_egress`): replies to its
    // own address are its. Requests go to pods only.
    let to_node = inner.dst == cfg.node_ip && opt.flags & flags::REPLY != 0;
    if pod.is_none() && !to_node {
        return Err(drop_pkt(DropReason::UnknownPod));
    }
    let to = pod.as_ref();
    // Later fragments (of a datagram bigger than its sender's MTU) have no
    // ports: nothing to learn, the first fragment did. A request's was
    // DNATed by the switch; a hairpin one's source is rewritten like its
    // first fragment's.
    if !first_fragment {
        if opt.flags & flags::REPLY == 0 && inner.src == inner.dst {
            rewrite_fragment_addr(ctx, INNER_IP_OFF, IP_SRC, inner.src, HAIRPIN_SOURCE)?;
        }
        return decap(ctx, to);
    }
    if inner.proto == IPPROTO_ICMP {
        return match to {
            // A client's error about a reply of a local backend pod.
            Some(pod) if opt.flags & flags::REPLY == 0 => {
                icmp_error_to_backend(ctx, &inner, opt, pod)
            }
            // An ICMP error about a Service flow (reverse-NATed by the
            // backend node, e.g. frag-needed or port unreachable): nothing
            // to learn.
            _ => decap(ctx, to),
        };
    }
    if inner.proto != IPPROTO_TCP && inner.proto != IPPROTO_UDP {
        return Err(drop_pkt(DropReason::UnsupportedProtocol));
    }
    let ports: [Be16; 2] = ctx
        .load(INNER_L4_OFF)
        .map_err(|_| drop_pkt(DropReason::Malformed))?;
    let tcp = tcp_flags_at(ctx, inner.proto, INNER_L4_OFF);
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
        if opt.flags & flags::ENDPOINT == 0 {
            learn_cookie(&key, opt, tcp);
            if opt.flags & flags::NOTIFY != 0 && inner.proto == IPPROTO_UDP {
                // Told, not answered: the pod gets nothing.
                stat(node_stat::NOTIFY_LEARNED);
                return Ok(SHOT);
            }
        } else if let Some(flow) = endpoint_reply(ctx, &inner, key, opt)? {
            learn_cookie(&flow, opt, tcp);
        }
    } else {
        // Hairpin: the switch chose the client pod itself as the backend.
        let hairpin = inner.src == inner.dst;
        let key = if hairpin {
            FlowKey {
                dst: HAIRPIN_SOURCE,
                ..key
            }
        } else {
            key
        };
        let fin_ack = if tcp & tcp_flags::FIN != 0 {
            fin_ack_byte(ctx, &inner)
        } else {
            0
        };
        let learnt = learn_reverse(&key, opt, tcp, fin_ack)?;
        let (port, notify) = (learnt.port, learnt.notify);
        if inner.proto == IPPROTO_TCP {
            // An outside client's echo of a stamped TSval.
            restore_echo(ctx, INNER_L4_OFF, tcp, learnt.ts);
        }
        if notify && !hairpin && !inner.is_fragment() {
            notify_client(ctx, cfg, &inner, ports, opt);
        }
        if hairpin {
            let offs = (INNER_IP_OFF, INNER_L4_OFF);
            rewrite_addr(ctx, inner.proto, offs, IP_SRC, inner.src, HAIRPIN_SOURCE)?;
        }
        if port != ports[0] {
            // The backend pod sees this flow from a substitute port.
            rewrite_port(ctx, inner.proto, INNER_L4_OFF, 0, ports[0], port)?;
        }
    }

    decap(ctx, to)
}

/// Plain IPv6 from the uplink passes, unless its source is an IPv6
/// Service address (`service_source`, as for IPv4): a VIP6's replies come
/// only inside the tunnel.
#[inline(always)]
fn plain_ipv6(ctx: &TcContext) -> i32 {
    let Ok(ip) = ctx.load::<Ipv6Hdr>(IP_OFF) else {
        return PASS;
    };
    if config().is_some() && NODE_SVC_CIDRS_V6.get(Key::new(128, ip.src)).is_some() {
        return drop_pkt(DropReason::ServiceSource);
    }
    PASS
}

/// The low byte of the acknowledgment number that covers the FIN of this
/// TCP segment: its sequence number, plus its payload, plus one.
#[inline(always)]
fn fin_ack_byte(ctx: &TcContext, inner: &Ipv4Hdr) -> u8 {
    let (Ok(seq), Ok(doff)) = (
        ctx.load::<u8>(INNER_L4_OFF + 7),
        ctx.load::<u8>(INNER_L4_OFF + 12),
    ) else {
        return 0;
    };
    let headers = IPV4_HDR_LEN as u16 + u16::from(doff >> 4) * 4;
    let payload = inner.total_len.get().wrapping_sub(headers);
    seq.wrapping_add(payload as u8).wrapping_add(1)
}

/// A one-way UDP flow's notification, as it leaves: the request's own
/// headers rewritten (its payload follows).
#[repr(C)]
struct Notice {
    macs: [[u8; 6]; 2],
    ether_type: Be16,
    outer: Ipv4Hdr,
    outer_udp: [u8; UDP_HDR_LEN],
    talaria: [u8; TalariaEncap::LEN],
    inner: Ipv4Hdr,
    udp: [u8; UDP_HDR_LEN],
}

/// Length of the headers a [`Notice`] replaces.
const NOTICE_LEN: usize = INNER_L4_OFF + UDP_HDR_LEN;

/// Where [`notify_client`] builds its [`Notice`] and keeps the request's
/// headers meanwhile: a per-CPU map value, as they would not fit the
/// program's stack (512 bytes) beside the rest.
#[repr(C)]
pub(crate) struct NoticeScratch {
    request: [u8; NOTICE_LEN],
    notice: Notice,
}

/// Tells the client's node the cookie of this request's one-way UDP flow
/// (`reverse_state`): a copy of the request, turned around as the flow's
/// reply from the VIP and port of the cookie's service (inner UDP
/// checksum 0, "none"), tunnelled to the switch with `REPLY |
/// COOKIE_VALID | NOTIFY` and the cookie the switch chose. The switch
/// checks it as any reply; the client's node learns the cookie and drops
/// it. The request itself is restored and goes on to the pod: the copy is
/// made in place, sent with `bpf_clone_redirect`, and undone (an skb
/// cloned towards the pod would need the pod's MAC, which the agent may
/// not know). Not sent if anything fails: the flow stays with the hash.
#[inline(always)]
fn notify_client(
    ctx: &TcContext,
    cfg: &NodeConfig,
    inner: &Ipv4Hdr,
    ports: [Be16; 2],
    opt: &TalariaOpt,
) {
    let service_id = opt.service_id.get();
    // SAFETY: read-only copy of a map value.
    let Some(svc) = (unsafe { NODE_SERVICES.get(u32::from(service_id)) }).copied() else {
        return;
    };
    let Some(scratch) = NODE_NOTICE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot, used only during this run.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: a fixed-length copy into the map value.
    let loaded = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            0,
            scratch.request.as_mut_ptr().cast(),
            NOTICE_LEN as u32,
        )
    };
    if loaded != 0 {
        return;
    }
    let outer_len = (ctx.len() as usize - ETH_HDR_LEN) as u16;
    let inner_len = inner.total_len.get();
    let (outer_udp, inner_udp) = (
        outer_len.saturating_sub(IPV4_HDR_LEN as u16),
        inner_len.saturating_sub(IPV4_HDR_LEN as u16),
    );
    let flow = FlowKey {
        src: svc.vip,
        dst: inner.src,
        src_port: svc.port,
        dst_port: ports[0],
        proto: IPPROTO_UDP,
        _pad: [0; 3],
    };
    let (sp, gp, ol, il) = (
        flow_sport(&flow).to_be_bytes(),
        GENEVE_UDP_PORT.to_be_bytes(),
        outer_udp.to_be_bytes(),
        inner_udp.to_be_bytes(),
    );
    scratch.notice = Notice {
        macs: [cfg.switch_mac, cfg.node_mac],
        ether_type: Be16::new(ETH_P_IP),
        outer: Ipv4Hdr::new(0, outer_len, true, IPPROTO_UDP, cfg.node_ip, cfg.switch_ip),
        outer_udp: [sp[0], sp[1], gp[0], gp[1], ol[0], ol[1], 0, 0],
        talaria: TalariaEncap::new(
            flags::REPLY | flags::COOKIE_VALID | flags::NOTIFY,
            service_id,
            opt.backend_id.get(),
        )
        .to_bytes(),
        inner: Ipv4Hdr::new(0, inner_len, true, IPPROTO_UDP, svc.vip, inner.src),
        udp: [
            svc.port.0[0],
            svc.port.0[1],
            ports[0].0[0],
            ports[0].0[1],
            il[0],
            il[1],
            0,
            0,
        ],
    };
    if ctx.store(0, &scratch.notice, 0).is_ok() && ctx.clone_redirect(cfg.uplink_ifindex, 0).is_ok()
    {
        stat(node_stat::NOTIFY_SENT);
    }
    // The request as it came (a failed store here leaves it to the pod's
    // stack to drop).
    let _ = ctx.store(0, &scratch.request, 0);
}

/// A reply of an endpoint without an agent, which the switch tunnelled
/// as it came, from the endpoint's address and port: restored to the VIP
/// and port of the service the cookie names when this node recorded the
/// client's flow to it (`PENDING_BACKEND` or a learned cookie); returns
/// that flow, to learn the cookie for. Without one the client talked to
/// the endpoint directly: delivered as it is, nothing to learn.
#[inline(always)]
fn endpoint_reply(
    ctx: &TcContext,
    inner: &Ipv4Hdr,
    key: FlowKey,
    opt: &TalariaOpt,
) -> Result<Option<FlowKey>, i32> {
    // SAFETY: read-only copy of a map value.
    let svc = unsafe { NODE_SERVICES.get(u32::from(opt.service_id.get())) }.copied();
    let flow = svc.filter(|s| s.proto == key.proto).map(|s| FlowKey {
        dst: s.vip,
        dst_port: s.port,
        ..key
    });
    // SAFETY: read-only lookup.
    let Some(flow) = flow.filter(|f| unsafe { NODE_COOKIES.get(f) }.is_some()) else {
        stat(node_stat::ENDPOINT_DIRECT);
        return Ok(None);
    };
    let offs = (INNER_IP_OFF, INNER_L4_OFF);
    rewrite_addr(ctx, inner.proto, offs, IP_SRC, inner.src, flow.dst)?;
    rewrite_port(
        ctx,
        inner.proto,
        INNER_L4_OFF,
        0,
        key.dst_port,
        flow.dst_port,
    )?;
    stat(node_stat::ENDPOINT_REPLY);
    Ok(Some(flow))
}
