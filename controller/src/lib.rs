//! talaria controller: Kubernetes Services and EndpointSlices (or the same
//! objects from YAML files) → talaria switch tables over P4Runtime, with a
//! REST API.
//!
//! The shape is "desired state → diff → apply":
//! - [`model`]: objects → per-port backends (pure, kube-proxy semantics);
//! - [`plan`]: model → desired [`state::SwitchState`], keeping ids
//!   ([`ids`]) and resilient bucket assignments ([`buckets`]);
//! - [`diff`]: desired vs actual → ordered batches.

pub mod api;
pub mod buckets;
pub mod config;
pub mod controller;
pub mod diff;
pub mod ids;
pub mod metrics;
pub mod model;
pub mod p4rt;
pub mod plan;
pub mod source;
pub mod state;
pub mod types;
