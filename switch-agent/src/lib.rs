//! talaria-switch: the P4Runtime server of the talaria software switch.
//!
//! - [`config`]: the YAML [`config::Config`] and the command-line flags.
//! - [`layout`]: the talaria P4Info resolved into per-table ids and widths.
//! - [`translate`]: P4Runtime `TableEntry` ↔ data plane [`entry::Entry`].
//! - [`server`]: the P4Runtime gRPC service (arbitration, pipeline, write,
//!   read).
//! - [`memory`]: an in-memory [`entry::Target`] for tests and benchmarks.
//! - [`metrics`]: the Prometheus `/metrics` endpoint.
//!
//! The data plane itself (the eBPF pipeline and its pinned maps) lives in
//! `talaria-switch-dataplane`; this crate talks to it only through
//! [`entry::Target`].

pub mod config;
pub mod layout;
pub mod memory;
pub mod metrics;
pub mod server;
pub mod translate;

pub use talaria_switch_dataplane::entry;
