//! Layout facts the switch eBPF program and its loader share: map names,
//! sizes and sentinel values. The program itself is the
//! `talaria-switch-pipeline` binary (src/main.rs), built for BPF by
//! aya-build from talaria-switch-dataplane's build.rs.
#![no_std]

/// Highest P4 port number + 1 (v1model ports are 9 bits).
pub const PORT_COUNT: u32 = 512;

/// The row of `SWITCH_PORT_DROP` for packets that arrived on an interface
/// that is no switch port (BPF_PROG_TEST_RUN on no port).
pub const NO_PORT: u32 = PORT_COUNT;

/// Rows (ingress ports, `NO_PORT` included) of `SWITCH_PORT_DROP`, which
/// has `DROP_REASON_COUNT` cells per row.
pub const PORT_DROP_ROWS: u32 = PORT_COUNT + 1;

/// `RouteValue::port` meaning "the `drop` action of `ipv4_route` (or
/// `ipv6_route`)", which
/// the shared `RouteValue` has no other way to say. No P4 port (9 bits) can
/// take this value.
pub const ROUTE_DROP_PORT: u32 = u32::MAX;

/// Map names, as the loader finds (and pins) them. A table's map is
/// `SWITCH_` and its P4 alias in capitals (`SWITCH_SERVICE_V4`); these are
/// the others.
pub mod map_name {
    /// Prefix of every map name.
    pub const PREFIX: &str = "SWITCH_";
    pub const BACKEND_COUNTER: &str = "SWITCH_BACKEND_COUNTER";
    pub const SERVICE_COUNTER: &str = "SWITCH_SERVICE_COUNTER";
    pub const DROP_COUNTER: &str = "SWITCH_DROP_COUNTER";
    pub const LB_EVENT_COUNTER: &str = "SWITCH_LB_EVENT_COUNTER";
    pub const PORT_RX: &str = "SWITCH_PORT_RX";
    pub const PORT_TX: &str = "SWITCH_PORT_TX";
    pub const PORT_DROP: &str = "SWITCH_PORT_DROP";
    pub const PORT_IFINDEX: &str = "SWITCH_PORT_IFINDEX";
    pub const IFINDEX_PORT: &str = "SWITCH_IFINDEX_PORT";

    /// Every map that is not a table's, for pinning and cleanup.
    pub const NON_TABLE: [&str; 9] = [
        BACKEND_COUNTER,
        SERVICE_COUNTER,
        DROP_COUNTER,
        LB_EVENT_COUNTER,
        PORT_RX,
        PORT_TX,
        PORT_DROP,
        PORT_IFINDEX,
        IFINDEX_PORT,
    ];
}

/// The classifier's name in the object file.
pub const PROGRAM_NAME: &str = "switch_ingress";

/// Table sizes (P4 `size`), the maps' `max_entries`.
pub use talaria_common::p4::sizes as size;

/// TTL of the outer header when the switch re-originates a tunnel, before
/// `ipv4_route` decrements it. Must match `TUNNEL_TTL` in p4/constants.p4.
pub const TUNNEL_TTL: u8 = 64;
