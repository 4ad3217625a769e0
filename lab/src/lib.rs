//! talaria-lab: a network-namespace testbed for talaria.
//!
//! - [`topology`]: the YAML topology and its address plan.
//! - [`manifests`]: Services, EndpointSlices, Nodes, switch and node configs.
//! - [`rules`]: kube-proxy iptables and nftables rule generation.
//! - [`netns`]: building a lab, its state file and teardown.
//! - [`modes`]: load-balancing modes and load runs in pods.
//! - [`components`]: finding and starting switch-agent, node agents, controller.
//! - [`traffic`]: the pod servers and the tokio load generator.
//! - [`stats`], [`cpu`]: latency statistics and CPU accounting.
//! - [`bringup`]: starting the switch, controller and node agents on a lab.
//! - [`measure`]: one measured point and the row it yields.
//! - [`demo`], [`mod@bench`], [`plot`]: the demo, the benchmarks and their plots.
//! - [`faults`]: kill -9 of each talaria component under load.
//! - [`soak`]: endpoint churn at scale under load.
//! - [`new_service`]: a new Service, from its creation in a (fake)
//!   Kubernetes API to its first SYN served at a remote node.
//! - [`doctor`]: what the lab needs from the machine.

pub mod bench;
pub mod bringup;
pub mod components;
pub mod cpu;
pub mod demo;
pub mod doctor;
pub mod faults;
pub mod manifests;
pub mod measure;
pub mod modes;
pub mod netns;
pub mod new_service;
pub mod plot;
pub mod rules;
pub mod soak;
pub mod stats;
pub mod switch;
pub mod topology;
pub mod traffic;
