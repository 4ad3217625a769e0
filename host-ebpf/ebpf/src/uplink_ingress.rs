//! The hook on the ingress of the node uplink: packets arriving from the
//! switch. Talaria packets are checked, learned from and decapsulated to
//! their pod; everything else passes, unless its source is a Service
//! address.

use aya_ebpf::{macros::classifier, maps::lpm_trie::Key, programs::TcContext};
use talaria_common::{
    be::Be16,
    drop::DropReason,
    maps::{node_stat, FlowKey, HAIRPIN_SOURCE},
    net::{EthHdr, Ipv4Hdr, ETH_P_IP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV4_FRAG_OFFSET},
    wire::{flags, TalariaEncap, TalariaOpt, GENEVE_UDP_PORT},
};

use crate::{
    encap::decap,
    flows::{learn_cookie, learn_reverse},
    maps::{config, drop_pkt, stat, NODE_COOKIES, NODE_PODS, NODE_SERVICES, NODE_SVC_CIDRS},
    nat::{icmp_error_to_backend, rewrite_addr, rewrite_fragment_addr, rewrite_port, IP_SRC},
    skb::{tcp_flags_at, GENEVE_OFF, INNER_IP_OFF, INNER_L4_OFF, IP_OFF, OUTER_UDP_OFF, PASS},
};

/// Ingress of the node uplink = packets arriving from the switch.
#[classifier]
pub fn node_uplink_ingress(ctx: TcContext) -> i32 {
    match try_uplink_ingress(&ctx) {
        Ok(a) | Err(a) => a,
    }
}

fn try_uplink_ingress(ctx: &TcContext) -> Result<i32, i32> {
    let eth: EthHdr = ctx.load(0).map_err(|_| PASS)?;
    if eth.ether_type.get() != ETH_P_IP {
        return Ok(PASS);
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
        return Ok(PASS);
    }
    // Talaria packets are accepted from the switch only: its tunnel
    // address, and its MAC, so that another host on the uplink's segment
    // cannot pass for it by its address alone. (The program runs on the
    // uplink only: nothing else can reach this check.)
    if outer.src != cfg.switch_ip || eth.src != cfg.switch_mac {
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
    let opt = &enc.opt;
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
        let port = learn_reverse(&key, opt, tcp)?;
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
