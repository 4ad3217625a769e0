//! Where Services, EndpointSlices and Nodes come from.

pub mod fake_lease;
pub mod files;
pub mod kube;
pub mod memory;

pub use memory::{MemorySource, Objects};
