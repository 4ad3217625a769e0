//! The hook on the egress of the node uplink: packets the node sends
//! itself (processes in its root network namespace, hostNetwork pods).
//! Those to a Service address are steered into Geneve towards the switch
//! as a pod's are; the replies come back to the node's own address
//! (`pod_node` holds each node's /32) and are decapsulated to its stack by
//! the uplink's ingress hook. Everything else passes, the pods' tunnels
//! (redirected out of this interface) first of all.

use aya_ebpf::{macros::classifier, maps::lpm_trie::Key, programs::TcContext};
use talaria_common::net::{EthHdr, Ipv4Hdr, ETH_P_IP};

use crate::{
    maps::{config, NODE_SVC_CIDRS},
    pod_egress::client_to_service,
    skb::{IP_OFF, PASS},
};

/// Egress of the node uplink = packets the node sends to its switch.
#[classifier]
pub fn node_host_egress(ctx: TcContext) -> i32 {
    match try_host_egress(&ctx) {
        Ok(a) | Err(a) => a,
    }
}

fn try_host_egress(ctx: &TcContext) -> Result<i32, i32> {
    let eth: EthHdr = ctx.load(0).map_err(|_| PASS)?;
    if eth.ether_type.get() != ETH_P_IP {
        return Ok(PASS);
    }
    let cfg = config().ok_or(PASS)?;
    let ip: Ipv4Hdr = ctx.load(IP_OFF).map_err(|_| PASS)?;
    // Tunnels to the switch, the bulk of what leaves here, pass without a
    // Service lookup.
    if ip.dst == cfg.switch_ip || NODE_SVC_CIDRS.get(Key::new(32, ip.dst)).is_none() {
        return Ok(PASS);
    }
    // Replies come back to the node's own address only: a packet from
    // another source (forwarded, or from a secondary address) gets none,
    // so it goes on as it is, and the switch has no route for it.
    if ip.src != cfg.node_ip {
        return Ok(PASS);
    }
    client_to_service(ctx, cfg, &ip)
}
