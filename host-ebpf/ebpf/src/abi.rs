//! Map layouts that only the node programs and the node agent share
//! (compiled into both: `talaria-node` includes this file as
//! `talaria_node::abi`). Everything here is a plain `u32`/`u64` array
//! index, so no `#[repr(C)]` type is involved.
//!
//! They live here rather than in `talaria-common` because nothing outside
//! a node reads them (not the switch, not P4); `NodeConfig` and `node_stat`
//! in `talaria-common` keep their layout, so pinned maps of an older agent
//! stay compatible.

/// `NODE_MTU` (an `Array<u32>` of [`mtu::COUNT`] elements): path MTU
/// settings written by the agent.
pub mod mtu {
    /// Element: the uplink's L3 MTU in bytes. An encapsulated packet (or
    /// every GSO segment of it) must fit in it. 0 = no check.
    pub const UPLINK_MTU: u32 = 0;
    /// Number of elements.
    pub const COUNT: u32 = 1;
}

/// `NODE_FLAGS` (an `Array<u32>` of [`node_flags::COUNT`] elements):
/// switches of the data path written by the agent; 0 is the default.
pub mod node_flags {
    /// Element: non-zero = learn no cookies, so every packet of a flow
    /// leaves as a new flow and the switch balances it by hash alone. For
    /// experiments (the lab's hash-only consistency variant), never for
    /// production: established flows then move when the pool changes.
    pub const IGNORE_COOKIES: u32 = 0;
    /// Number of elements.
    pub const COUNT: u32 = 1;
}

/// Indexes of `NODE_MTU_STATS` (a per-CPU `u64` array): what the MTU check
/// did.
pub mod mtu_stat {
    /// A pod's packet did not fit the uplink once encapsulated and had DF
    /// set: it was turned into an ICMP fragmentation-needed error (type 3
    /// code 4, next-hop MTU = uplink MTU − 48) and sent back to the pod.
    pub const FRAG_NEEDED: u32 = 0;
    /// Dropped: too big once encapsulated, DF clear (nothing may fragment
    /// it: fragments cannot be load-balanced).
    pub const TOO_BIG_NO_DF: u32 = 1;
    /// Dropped: an ICMP error that is too big once encapsulated (an ICMP
    /// error is never answered with another one).
    pub const TOO_BIG_ICMP: u32 = 2;
    /// Size of the array.
    pub const COUNT: u32 = 3;
    /// Names, in index order (metrics: `frag_needed` is an event, the
    /// other two are drop reasons).
    pub const NAMES: [&str; COUNT as usize] = ["frag_needed", "too_big_no_df", "too_big_icmp"];
}
