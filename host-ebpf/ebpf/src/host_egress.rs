//! The hook on the egress of the node's host device (`tlr-host`), which
//! the agent routes the Service CIDRs to: packets the node sends itself
//! (processes in its root network namespace, hostNetwork pods) to a
//! Service address. They are steered into Geneve towards the switch as a
//! pod's are; the replies come back to the node's own address (`pod_node`
//! holds each node's /32) and enter its stack through this device's
//! ingress. A device of its own keeps the hook off the uplink, where every
//! pod's tunnel leaves. Nothing else may leave by it: what this hook does
//! not serve is dropped.

use aya_ebpf::{macros::classifier, maps::lpm_trie::Key, programs::TcContext};
use talaria_common::{
    drop::DropReason,
    net::{EthHdr, Ipv4Hdr, ETH_P_IP},
};

use crate::{
    maps::{config, drop_pkt, NODE_SVC_CIDRS},
    pod_egress::client_to_service,
    skb::{IP_OFF, PASS, SHOT},
};

/// Egress of the node's host device = the node's own packets to Services.
#[classifier]
pub fn node_host_egress(ctx: TcContext) -> i32 {
    match try_host_egress(&ctx) {
        Ok(a) | Err(a) => a,
    }
}

fn try_host_egress(ctx: &TcContext) -> Result<i32, i32> {
    let no_route = || drop_pkt(DropReason::NoRoute);
    let eth: EthHdr = ctx.load(0).map_err(|_| no_route())?;
    if eth.ether_type.get() != ETH_P_IP {
        // The device's own IPv6 chatter (router solicitations) goes
        // nowhere; nothing else is routed here.
        return Err(SHOT);
    }
    let cfg = config().ok_or(PASS)?;
    let ip: Ipv4Hdr = ctx.load(IP_OFF).map_err(|_| no_route())?;
    // Replies come back to the node's own address only: a packet from
    // another source (forwarded, or from a secondary address) could get
    // none.
    if NODE_SVC_CIDRS.get(Key::new(32, ip.dst)).is_none() || ip.src != cfg.node_ip {
        return Err(no_route());
    }
    client_to_service(ctx, cfg, &ip)
}
