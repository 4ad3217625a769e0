//! The seam between the P4Runtime server and the data plane: typed table
//! entries of p4/talaria.p4 and the [`Target`] that holds them.
//!
//! The entries are `talaria_tables`' typed entries: the server decodes
//! P4Runtime `TableEntry` messages into [`Entry`] values (checking widths
//! and names against the table definitions) and hands them to a [`Target`];
//! the eBPF [`crate::Dataplane`] is the real target.

use talaria_common::maps::PacketBytes;
pub use talaria_tables::{Entry, EntryKey, Table};

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

impl CounterId {
    /// Every counter, with its P4Info description.
    pub const ALL: [(CounterId, &'static talaria_tables::def::CounterDef); 3] = [
        (Self::Service, &talaria_tables::SERVICE_COUNTER),
        (Self::Drop, &talaria_tables::DROP_COUNTER),
        (Self::LbEvent, &talaria_tables::LB_EVENT_COUNTER),
    ];

    /// The counter's P4Info description.
    pub fn def(self) -> &'static talaria_tables::def::CounterDef {
        Self::ALL
            .iter()
            .find(|(c, _)| *c == self)
            .map(|(_, d)| *d)
            .expect("ALL lists every counter")
    }
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
    /// Removes the entry with `key`.
    fn delete(&self, key: &EntryKey) -> Result<(), TargetError>;
    /// Every entry of `table`, in no set order.
    fn entries(&self, table: Table) -> Result<Vec<Entry>, TargetError>;
    /// The stored entry with `key`, if any. A Read of one key must not
    /// cost a table walk.
    fn get(&self, key: &EntryKey) -> Result<Option<Entry>, TargetError>;
    /// A counter cell summed over CPUs.
    fn counter(&self, counter: CounterId, index: u32) -> Result<PacketBytes, TargetError>;
    /// The direct counter of the `backend` entry for `backend_id`.
    fn backend_counter(&self, backend_id: u32) -> Result<PacketBytes, TargetError>;
}
