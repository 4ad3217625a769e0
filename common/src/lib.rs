//! Everything two sides of talaria must agree on, usable from eBPF
//! (`#![no_std]`, no allocation) and from userspace (feature `user`).
//!
//! - [`wire`]: the Geneve header and the Talaria option, with parse and emit.
//! - [`hash`]: the CRC32 bucket hash the switch computes over a flow.
//! - [`drop`]: drop reasons and load-balancer events, shared code space.
//! - [`maps`]: BPF map keys and values of the switch and node data planes.
//! - [`net`]: the plain Ethernet/IPv4/UDP/TCP headers and checksum helpers.
//! - [`p4`]: P4 table, action and counter names, ids and sizes.
//! - [`rest`]: the headers of the controller's answers to node agents.
//! - [`ts_cookie`]: the cookie outside TCP clients carry in their timestamps.
//! - [`be`]: network-byte-order integers.
#![no_std]

pub mod be;
pub mod drop;
pub mod hash;
pub mod maps;
pub mod net;
pub mod p4;
pub mod rest;
pub mod ts_cookie;
pub mod wire;

/// Fails the build when a type's size differs from its wire or map layout.
#[macro_export]
macro_rules! assert_size {
    ($ty:ty, $size:expr) => {
        const _: () = assert!(::core::mem::size_of::<$ty>() == $size);
    };
}
