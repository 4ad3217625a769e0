//! The talaria switch pipeline (p4/talaria.p4, docs/design.md) as one TC
//! classifier, attached with TCX to the ingress of every switch port.
//!
//! Built for `bpfel-unknown-none` only; on the host this binary is an empty
//! `main` so that workspace-wide builds and lints stay green.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod pipeline;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
