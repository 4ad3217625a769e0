//! Packet offsets, verdicts and small accessors of the skb.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::bpf_ktime_get_ns,
    programs::TcContext,
};
use talaria_common::{
    net::{ETH_HDR_LEN, IPPROTO_TCP, IPV4_HDR_LEN, UDP_HDR_LEN},
    wire::TalariaEncap,
};

pub(crate) const IP_OFF: usize = ETH_HDR_LEN;
pub(crate) const L4_OFF: usize = IP_OFF + IPV4_HDR_LEN;
/// Offsets of a Talaria packet as received on the uplink.
pub(crate) const OUTER_UDP_OFF: usize = IP_OFF + IPV4_HDR_LEN;
pub(crate) const GENEVE_OFF: usize = OUTER_UDP_OFF + UDP_HDR_LEN;
pub(crate) const INNER_IP_OFF: usize = GENEVE_OFF + TalariaEncap::LEN;
pub(crate) const INNER_L4_OFF: usize = INNER_IP_OFF + IPV4_HDR_LEN;

pub(crate) const PASS: i32 = TC_ACT_OK;
pub(crate) const SHOT: i32 = TC_ACT_SHOT;
pub(crate) const REDIRECT: i32 = TC_ACT_REDIRECT;

#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub(crate) fn skb_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context pointer is valid for the program's run.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// The device the packet entered the host by; 0 for the host's own.
#[inline(always)]
pub(crate) fn skb_ingress_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: as above.
    unsafe { (*ctx.skb.skb).ingress_ifindex }
}

/// FIN/RST bits of a TCP segment whose header starts at `off` (0 for UDP).
#[inline(always)]
pub(crate) fn tcp_flags_at(ctx: &TcContext, proto: u8, off: usize) -> u8 {
    if proto != IPPROTO_TCP {
        return 0;
    }
    ctx.load::<u8>(off + 13).unwrap_or(0)
}
