//! What the REST API shows of a Service.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

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
    /// ClusterIPs that the switch serves, IPv4 and IPv6 (`spec.clusterIPs`).
    pub cluster_ips: Vec<IpAddr>,
    /// IPv4 addresses outside the cluster that the switch serves too:
    /// `externalIPs` and LoadBalancer ingress IPs.
    pub external_ips: Vec<Ipv4Addr>,
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
    /// kube-proxy's health check, which each node agent serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckView>,
}

/// A LoadBalancer Service with `externalTrafficPolicy: Local` and a
/// `healthCheckNodePort`: every node answers on that port whether it has a
/// ready endpoint of the Service, so that load balancers send traffic only
/// to nodes that do (kube-proxy's `healthcheck/service_health.go`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheckView {
    /// `spec.healthCheckNodePort`.
    pub node_port: u16,
    /// Node InternalIP → its ready endpoints, counted by address (a node
    /// absent has none).
    pub local_endpoints: BTreeMap<Ipv4Addr, usize>,
}
