//! Node TC programs (see docs/design.md, "Packet walk").
//!
//! - `node_pod_egress`: on every pod's host-side veth, ingress hook (=
//!   packets leaving the pod). Steers Service traffic into Geneve/Talaria
//!   towards the switch and reverse-NATs replies of local backend pods.
//! - `node_uplink_ingress`: on the node uplink, ingress hook (= packets
//!   arriving from the switch). Learns cookies and reverse-flow entries from
//!   Talaria packets, decapsulates them and hands them to the pod.
//!
//! Everything else passes untouched (`TC_ACT_OK`). One file per hook
//! (`pod_egress`, `uplink_ingress`), the maps (`maps`), and the helpers
//! they share: encapsulation (`encap`), flow state (`flows`), substitute
//! client ports of both families (`subst`), path MTU (`mtu`), reverse NAT
//! (`nat`), outside clients' timestamp cookie (`tstamp`), skb accessors
//! (`skb`) and IPv6 Services (`v6`).
//!
//! Built for `bpfel-unknown-none` only (by aya-build from the agent's
//! build.rs); on the host this binary is an empty `main` so that
//! workspace-wide builds and lints stay green.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Atomic adds on shared counters (`maps::take_flow_slot`).
#![cfg_attr(target_arch = "bpf", allow(internal_features))]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]

#[cfg(target_arch = "bpf")]
mod encap;
#[cfg(target_arch = "bpf")]
mod flows;
#[cfg(target_arch = "bpf")]
mod host_egress;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod mtu;
#[cfg(target_arch = "bpf")]
mod nat;
#[cfg(target_arch = "bpf")]
mod pod_egress;
#[cfg(target_arch = "bpf")]
mod skb;
#[cfg(target_arch = "bpf")]
mod subst;
#[cfg(target_arch = "bpf")]
mod tstamp;
#[cfg(target_arch = "bpf")]
mod uplink_ingress;
#[cfg(target_arch = "bpf")]
mod v6;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
