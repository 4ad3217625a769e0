//! What the REST API shows of a Service.

use std::net::Ipv4Addr;

use serde::Serialize;

use super::ObjectRef;
use crate::types::ServiceKey;

/// Per-port summary for the REST view of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortView {
    /// Port name.
    pub name: String,
    /// Service port.
    pub port: u16,
    /// Protocol as written in the Service.
    pub protocol: String,
    /// targetPort as written (number or name).
    pub target_port: String,
    /// nodePort, if allocated.
    pub node_port: Option<u16>,
}

/// A Service as the controller understood it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceView {
    /// namespace/name.
    pub service: ObjectRef,
    /// spec.type.
    pub service_type: String,
    /// IPv4 ClusterIPs that the switch serves.
    pub cluster_ips: Vec<Ipv4Addr>,
    /// Headless (`clusterIP: None`).
    pub headless: bool,
    /// Has no selector (endpoints come from user-managed slices).
    pub selectorless: bool,
    /// Ports as declared.
    pub ports: Vec<PortView>,
    /// Switch keys in the data path.
    pub keys: Vec<ServiceKey>,
    /// What is not (yet) in the data path, one line each.
    pub notes: Vec<String>,
}
