//! Node TC programs (see docs/design.md, "Packet walk").
//!
//! - `node_pod_egress`: on every pod's host-side veth, ingress hook (=
//!   packets leaving the pod). Steers Service traffic into Geneve/Talaria
//!   towards the switch and reverse-NATs replies of local backend pods.
//! - `node_uplink_ingress`: on the node uplink, ingress hook (= packets
//!   arriving from the switch). Learns cookies and reverse-flow entries from
//!   Talaria packets, decapsulates them and hands them to the pod.
//!
//! Everything else passes untouched (`TC_ACT_OK`).
//!
//! Built for `bpfel-unknown-none` only (by aya-build from the agent's
//! build.rs); on the host this binary is an empty `main` so that
//! workspace-wide builds and lints stay green.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

// `abi::mtu_stat::NAMES` is for the agent only.
#[cfg(target_arch = "bpf")]
#[allow(dead_code)]
mod abi;
#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
