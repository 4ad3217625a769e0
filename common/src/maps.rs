//! BPF map keys and values shared by the eBPF programs and the userspace
//! that fills and reads their maps.
//!
//! Every type is `#[repr(C)]` with explicit padding (so the kernel and
//! userspace hash the same bytes), network-order fields where they hold
//! packet values, and a compile-time size check.

use crate::be::{Be16, Be32};

macro_rules! pod {
    ($($ty:ty = $size:expr),* $(,)?) => {$(
        crate::assert_size!($ty, $size);
        // SAFETY: repr(C), explicit padding, only integer and byte-array fields.
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $ty {}
    )*};
}

/// Key of a BPF LPM trie over IPv4: the kernel's `struct bpf_lpm_trie_key`
/// layout, a host-order prefix length followed by the address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ipv4LpmKey {
    pub prefix_len: u32,
    pub addr: Be32,
}

// ---------------------------------------------------------------- switch --
// One map per P4 table of p4/talaria.p4; each mirrors that table's key and
// action parameters.

/// `ipv4_route` action `forward`. Must match `action forward` in p4/talaria.p4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteValue {
    /// P4 egress port number (the switch-agent maps it to an ifindex).
    pub port: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

/// `service_v4` key. Must match `table service_v4` in p4/talaria.p4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub vip: Be32,
    pub port: Be16,
    pub proto: u8,
    pub _pad: u8,
}

/// `service_v4` action `set_service`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    pub service_id: u16,
    pub bucket_mask: u16,
    /// One of [`crate::hash::hash_mode`].
    pub hash_mode: u8,
    pub _pad: [u8; 3],
}

/// `cookie_check` and `lb_bucket` share this key shape: a service id and a
/// second id (backend id, or bucket index widened to 32 bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceScopedKey {
    pub service_id: u16,
    pub _pad: u16,
    pub id: u32,
}

/// `lb_bucket` action `select_backend`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketValue {
    pub backend_id: u32,
}

/// `backend` action `set_backend`. Key: the backend id (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendValue {
    pub ip: Be32,
    pub port: Be16,
    pub _pad: u16,
    pub node_ip: Be32,
}

/// `pod_node` action `set_client_node`. Key: [`Ipv4LpmKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeValue {
    pub node_ip: Be32,
}

/// A packets-and-bytes counter cell (per CPU in the kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketBytes {
    pub packets: u64,
    pub bytes: u64,
}

// ------------------------------------------------------------------ node --

/// A flow as a pod sees it, both directions keyed from the pod's side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: Be32,
    pub dst: Be32,
    pub src_port: Be16,
    pub dst_port: Be16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Client side: the cookie learned from a reply. Key: the client's
/// [`FlowKey`] towards the VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CookieEntry {
    pub service_id: u16,
    /// TCP: FIN seen in one direction (bit 0 from the client, bit 1 towards
    /// it); the entry goes once both directions finished.
    pub fin_seen: u8,
    pub _pad: u8,
    pub backend_id: u32,
    /// `bpf_ktime_get_ns()` of the last packet, for UDP idle expiry.
    pub last_seen_ns: u64,
}

/// Backend side: how to send a backend pod's reply. Key: the backend's
/// [`FlowKey`] towards the client (src = backend pod, dst = client pod).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReverseEntry {
    pub vip: Be32,
    pub vip_port: Be16,
    pub service_id: u16,
    pub backend_id: u32,
    pub fin_seen: u8,
    pub _pad: [u8; 3],
    pub last_seen_ns: u64,
}

/// A pod hosted on this node. Key: the pod IP (`Be32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodEntry {
    /// Ifindex of the pod's host-side veth: packets from the pod must enter
    /// there (spoof check), packets to it are redirected to its peer.
    pub ifindex: u32,
    /// MAC of the pod's own interface (inside the pod): the destination MAC
    /// of decapsulated packets.
    pub mac: [u8; 6],
    /// MAC of the host-side veth: their source MAC.
    pub host_mac: [u8; 6],
}

/// A Service as the backend node must know it to reverse-NAT replies: the
/// switch DNATs the inner packet and only the service id rides in the
/// Talaria option, so the node maps the id back to the ClusterIP.
/// Key: the service id widened to `u32`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceAddr {
    pub vip: Be32,
    pub port: Be16,
    pub proto: u8,
    pub _pad: u8,
}

/// Node-wide settings, one element of an array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    pub node_ip: Be32,
    pub switch_ip: Be32,
    pub uplink_ifindex: u32,
    pub node_mac: [u8; 6],
    pub switch_mac: [u8; 6],
    /// UDP flows idle longer than this are forgotten.
    pub udp_idle_ns: u64,
}

/// Indexes of the node's per-CPU event counter array (`NODE_STATS`).
pub mod node_stat {
    /// Packets encapsulated towards the switch (requests and replies).
    pub const ENCAP: u32 = 0;
    /// Packets decapsulated and delivered to a local pod.
    pub const DECAP: u32 = 1;
    /// Request encapsulated with a cached cookie.
    pub const CACHE_HIT: u32 = 2;
    /// Request encapsulated as a new flow (no cookie cached).
    pub const CACHE_MISS: u32 = 3;
    /// Cookie learned or changed from a reply.
    pub const COOKIE_LEARN: u32 = 4;
    /// Reverse-flow entry created or changed on the backend side.
    pub const REVERSE_LEARN: u32 = 5;
    /// Backend reply reverse-NATed to the VIP and encapsulated.
    pub const REVERSE_NAT: u32 = 6;
    /// Flow state removed by a TCP RST.
    pub const FLOW_RESET: u32 = 7;
    /// Size of the array.
    pub const COUNT: u32 = 8;
    /// Metric names, in index order.
    pub const NAMES: [&str; COUNT as usize] = [
        "encap",
        "decap",
        "cache_hit",
        "cache_miss",
        "cookie_learn",
        "reverse_learn",
        "reverse_nat",
        "flow_reset",
    ];
}

/// `fin_seen` bit: FIN sent by the pod that opened the flow (client side:
/// the client; backend side: the client, seen on the uplink).
pub const FIN_FROM_CLIENT: u8 = 0x01;
/// `fin_seen` bit: FIN sent towards the client (by the backend).
pub const FIN_FROM_BACKEND: u8 = 0x02;

pod! {
    Ipv4LpmKey = 8,
    RouteValue = 16,
    ServiceKey = 8,
    ServiceValue = 8,
    ServiceScopedKey = 8,
    BucketValue = 4,
    BackendValue = 12,
    NodeValue = 4,
    PacketBytes = 16,
    FlowKey = 16,
    CookieEntry = 16,
    ReverseEntry = 24,
    PodEntry = 16,
    ServiceAddr = 8,
    NodeConfig = 32,
}
