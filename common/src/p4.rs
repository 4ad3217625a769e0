//! Table and counter sizes of `p4/constants.p4`. They size the switch's BPF
//! maps (which a `no_std` program must know at build time) and the
//! `talaria_tables` definitions; `tests/` checks them against the P4 source
//! and the P4Info. Everything else about the tables lives in
//! `talaria_tables`.

/// One constant per `*_SIZE` of `p4/constants.p4`.
pub mod sizes {
    /// `IPV4_ROUTE_SIZE`.
    pub const IPV4_ROUTE: u32 = 1024;
    /// `IPV6_ROUTE_SIZE`.
    pub const IPV6_ROUTE: u32 = 1024;
    /// `SWITCH_ADDR_SIZE`.
    pub const SWITCH_ADDR: u32 = 16;
    /// `SERVICE_V4_SIZE`.
    pub const SERVICE_V4: u32 = 65536;
    /// `COOKIE_CHECK_SIZE`.
    pub const COOKIE_CHECK: u32 = 262_144;
    /// `TS_COOKIE_SIZE`: as `COOKIE_CHECK`, (service, backend) pairs.
    pub const TS_COOKIE: u32 = 262_144;
    /// `LB_BUCKET_SIZE`.
    pub const LB_BUCKET: u32 = 2_097_152;
    /// `BACKEND_SIZE`.
    pub const BACKEND: u32 = 262_144;
    /// `POD_NODE_SIZE`.
    pub const POD_NODE: u32 = 1024;
    /// `TUNNEL_PEER_SIZE`.
    pub const TUNNEL_PEER: u32 = 1024;
    /// `SPOOFED_SOURCE_SIZE`.
    pub const SPOOFED_SOURCE: u32 = 64;
    /// `ENDPOINT_REPLY_SIZE`: endpoints that run no agent.
    pub const ENDPOINT_REPLY: u32 = 16384;
    /// `TUNNEL_SOURCE_SIZE`: one switch address per node.
    pub const TUNNEL_SOURCE: u32 = 1024;
    /// `SERVICE_V6_SIZE`: as many IPv6 Service ports as IPv4 ones.
    pub const SERVICE_V6: u32 = 65536;
    /// `BACKEND_V6_SIZE`.
    pub const BACKEND_V6: u32 = 65536;
    /// `POD_NODE_V6_SIZE`.
    pub const POD_NODE_V6: u32 = 1024;
    /// `SERVICE_COUNTER_SIZE`: the whole 16-bit service id space.
    pub const SERVICE_COUNTER: u32 = 65536;
}
