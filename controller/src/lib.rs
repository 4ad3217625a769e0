//! talaria controller: Kubernetes Services and EndpointSlices (or the same
//! objects from YAML files) → talaria switch tables over P4Runtime, with a
//! REST API.
//!
//! The shape is "desired state → diff → apply", incremental by default:
//! - [`model`]: objects → per-port backends (pure, kube-proxy semantics),
//!   updated per changed object;
//! - [`plan`]: model → compact desired state ([`plan::Desired`]), keeping
//!   ids ([`ids`]) and resilient bucket assignments ([`buckets`]), re-planned
//!   per changed port;
//! - [`diff`]: desired vs actual → ordered batches, for the changed region
//!   or (on connect and resync) everything, chunk by chunk;
//! - [`entries`]: the write order and the key-ordered view of tables that
//!   both share;
//! - [`answers`]: what node agents read, kept per Service so their long
//!   polls carry only what changed.
//!
//! The tables themselves, their entries and their P4Runtime encoding are
//! `talaria_tables`.

pub mod answers;
pub mod api;
pub mod buckets;
pub mod cli;
pub mod config;
pub mod controller;
pub mod diff;
pub mod entries;
pub mod ids;
pub mod metrics;
pub mod model;
pub mod p4rt;
pub mod plan;
pub mod source;
pub mod types;
