//! talaria-switch: the P4Runtime server of the talaria software switch.
//!
//! - [`config`]: the YAML [`config::Config`] and the command-line flags.
//! - [`server`]: the P4Runtime gRPC service (arbitration, pipeline, write,
//!   read).
//! - [`memory`]: an in-memory [`entry::Target`] for tests and benchmarks.
//! - [`metrics`]: the Prometheus `/metrics` endpoint.
//!
//! The tables themselves (typed entries, P4Runtime decoding and encoding,
//! the embedded P4Info and the check that it matches) are
//! `talaria_tables`'; the data plane (the eBPF pipeline and its pinned
//! maps) lives in `talaria-switch-dataplane`, and this crate talks to it
//! only through [`entry::Target`].

pub mod config;
pub mod memory;
pub mod metrics;
pub mod server;

pub use talaria_switch_dataplane::entry;
