//! The seam between the P4Runtime server and the data plane: typed table
//! entries of p4/talaria.p4 and the [`Target`] that holds them.
//!
//! The server decodes P4Runtime `TableEntry` messages into [`Entry`] values
//! (checking widths and names against the P4Info) and hands them to a
//! [`Target`]; the eBPF [`crate::Dataplane`] is the real target.

use std::net::Ipv4Addr;

use talaria_common::maps::PacketBytes;

/// An IPv4 prefix, the key of the LPM tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

/// `ipv4_route` actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteAction {
    /// `forward(port, src_mac, dst_mac)`: TTL decrement, MAC rewrite, out `port`.
    Forward {
        port: u16,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
    },
    /// `drop`.
    Drop,
}

/// One entry of one table of p4/talaria.p4, key and action together.
/// Each variant mirrors the table's key fields and its (single) non-default
/// action's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Ipv4Route {
        dst: Ipv4Prefix,
        action: RouteAction,
    },
    /// `terminate_tunnel`: this address is the switch's own tunnel endpoint.
    SwitchAddr { addr: Ipv4Addr },
    /// `set_service`.
    ServiceV4 {
        vip: Ipv4Addr,
        port: u16,
        proto: u8,
        service_id: u16,
        bucket_mask: u16,
        hash_mode: u8,
    },
    /// `cookie_valid`.
    CookieCheck { service_id: u16, backend_id: u32 },
    /// `select_backend`.
    LbBucket {
        service_id: u16,
        bucket: u16,
        backend_id: u32,
    },
    /// `set_backend`.
    Backend {
        backend_id: u32,
        ip: Ipv4Addr,
        port: u16,
        node_ip: Ipv4Addr,
    },
    /// `set_client_node`.
    PodNode { dst: Ipv4Prefix, node_ip: Ipv4Addr },
}

/// The counters of p4/talaria.p4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CounterId {
    /// Indirect, indexed by service id.
    Service,
    /// Indirect, indexed by [`talaria_common::drop::DropReason`] code.
    Drop,
    /// Indirect, indexed by [`talaria_common::drop::LbEvent`] code.
    LbEvent,
}

/// Why a [`Target`] refused an operation. The server maps these to
/// P4Runtime canonical codes.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// INSERT of a key that is present (ALREADY_EXISTS).
    #[error("entry already exists")]
    AlreadyExists,
    /// MODIFY or DELETE of a key that is absent (NOT_FOUND).
    #[error("entry not found")]
    NotFound,
    /// The table is at its P4 `size` (RESOURCE_EXHAUSTED).
    #[error("table is full ({size} entries)")]
    Full { size: u32 },
    /// A value the target cannot hold, e.g. an LPM prefix with host bits
    /// set or an unknown port (INVALID_ARGUMENT).
    #[error("invalid entry: {0}")]
    Invalid(String),
    /// The kernel refused a map operation (INTERNAL).
    #[error("BPF map operation failed")]
    Map(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where table entries live. Implementations must be safe to call from
/// many gRPC tasks; each call is one atomic map operation.
pub trait Target: Send + Sync {
    fn insert(&self, entry: &Entry) -> Result<(), TargetError>;
    /// Replaces the action of an existing entry.
    fn modify(&self, entry: &Entry) -> Result<(), TargetError>;
    /// Removes the entry with `entry`'s key; its action fields are ignored.
    fn delete(&self, entry: &Entry) -> Result<(), TargetError>;
    /// Every entry of `table`, in no set order.
    fn entries(&self, table: TableKind) -> Result<Vec<Entry>, TargetError>;
    /// The stored entry with `key`'s match key, if any; `key`'s action
    /// fields are ignored. A Read of one key must not cost a table walk.
    fn get(&self, key: &Entry) -> Result<Option<Entry>, TargetError>;
    /// A counter cell summed over CPUs.
    fn counter(&self, counter: CounterId, index: u32) -> Result<PacketBytes, TargetError>;
    /// The direct counter of the `backend` entry for `backend_id`.
    fn backend_counter(&self, backend_id: u32) -> Result<PacketBytes, TargetError>;
}

/// The tables, without their contents: the P4 table enum of
/// `talaria_common::p4` (same variant names as before).
pub type TableKind = talaria_common::p4::Table;

impl Entry {
    /// The table this entry belongs to.
    pub fn table(&self) -> TableKind {
        match self {
            Self::Ipv4Route { .. } => TableKind::Ipv4Route,
            Self::SwitchAddr { .. } => TableKind::SwitchAddr,
            Self::ServiceV4 { .. } => TableKind::ServiceV4,
            Self::CookieCheck { .. } => TableKind::CookieCheck,
            Self::LbBucket { .. } => TableKind::LbBucket,
            Self::Backend { .. } => TableKind::Backend,
            Self::PodNode { .. } => TableKind::PodNode,
        }
    }
}
