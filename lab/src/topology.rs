//! The lab topology: its YAML description and the address plan derived from it.
//!
//! The plan is a pure function of the [`Topology`], so manifests, rules and
//! the namespaces built from it always agree, and it is unit-tested without
//! root.
//!
//! Addressing (defaults):
//!
//! | what | address |
//! |---|---|
//! | switch port `i` | `172.30.i.1/24` (netns `<prefix>-sw`, device `p<i>`) |
//! | node `i` uplink | `172.30.i.2/24` (netns `<prefix>-n<i>`, device `up0`), default route via the switch port |
//! | switch tunnel address | `172.30.255.1/32` on the switch's loopback |
//! | node `i` pod CIDR | `10.244.i.0/24`, routed by the switch to the node |
//! | pod `j` of node `i` | `10.244.i.(10+j)/32` (netns `<prefix>-n<i>p<j>`, device `eth0`), default route via `169.254.1.1` onlink |
//! | ClusterIP of Service `k` | service CIDR base + 10 + `k` |
//! | external host `h` | `172.30.(nodes+h).2/24` (netns `<prefix>-x<h>`, device `eth0`) on switch port `nodes+h`, no agent |
//! | LoadBalancer ingress IP of Service `k` | LB CIDR base + 10 + `k` (only the `external_services` Services spread over the range have one) |
//! | nodePorts of the `i`-th external Service | `30000 + 2i` (http), `30001 + 2i` (udp), at every node's address |
//!
//! When `service_families` names IPv6, pods are dual-stack as well (the
//! underlay stays IPv4: IPv6 Services ride the IPv4 tunnel):
//!
//! | what | address |
//! |---|---|
//! | node `i` IPv6 pod CIDR | `fd00:10:244:i::/64`, routed by the switch (`ipv6_route`) to the node |
//! | pod `j` of node `i` | `fd00:10:244:i::(10+j)/128`, default route via `fe80::1` (a static neighbour, as for IPv4) |
//! | IPv6 ClusterIP of Service `k` | IPv6 service CIDR base + 10 + `k` |
//! | node `i`'s IPv6 next hop | `fe80::1` on its uplink, a static neighbour (the switch answers no NDP) |
//!
//! Pod MTU is the uplink MTU minus the 48 bytes of Geneve + Talaria option.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Bytes the Talaria encapsulation adds: outer IPv4 20 + UDP 8 + Geneve 8 + option 12.
pub const ENCAP_OVERHEAD: u32 = 48;

/// Gateway address pods use; it lives on no interface (a static neighbour
/// entry in the pod resolves it to the node-side veth).
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The IPv6 gateway of pods and nodes: link-local, on no interface
/// (static neighbours resolve it, as [`POD_GATEWAY`] is resolved).
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// An address family, spelled as Kubernetes spells it in a Service's
/// `spec.ipFamilies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IpFamily {
    /// IPv4.
    IPv4,
    /// IPv6.
    IPv6,
}

impl IpFamily {
    /// `ipv4` or `ipv6` (command lines, tables).
    pub fn name(self) -> &'static str {
        match self {
            IpFamily::IPv4 => "ipv4",
            IpFamily::IPv6 => "ipv6",
        }
    }

    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::IPv4,
            IpAddr::V6(_) => IpFamily::IPv6,
        }
    }

    /// A host route's prefix length: 32 or 128.
    pub fn host_len(self) -> u8 {
        match self {
            IpFamily::IPv4 => 32,
            IpFamily::IPv6 => 128,
        }
    }
}

impl std::str::FromStr for IpFamily {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ipv4" => Ok(IpFamily::IPv4),
            "ipv6" => Ok(IpFamily::IPv6),
            _ => Err(format!("{s:?}: expected ipv4 or ipv6")),
        }
    }
}

/// The embedded default topology.
pub const DEFAULT_YAML: &str = include_str!("../topologies/default.yaml");

/// A lab topology, loaded from YAML. Every field has a default, so `{}` is a
/// valid topology (the embedded default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topology {
    /// Number of nodes, each attached to one switch port (1..=200).
    pub nodes: u32,
    /// Pod namespaces per node (1..=200).
    pub pods_per_node: u32,
    /// Number of Services to generate (0..=60000).
    pub services: u32,
    /// Endpoints (backend pods) per Service.
    pub endpoints_per_service: u32,
    /// Nodes whose pods act as clients; their pods are never endpoints
    /// (unless every node is a client node), so service traffic always
    /// crosses the switch.
    pub client_nodes: u32,
    /// MTU of the switch↔node links. Pod MTU is this minus 48.
    pub uplink_mtu: u32,
    /// Service CIDR (a /16); ClusterIPs are allocated from base + 10.
    pub service_cidr: String,
    /// Base of the pod CIDRs (a /16); node `i` gets the `i`-th /24.
    pub pod_cidr_base: String,
    /// Base of the switch↔node links (a /16); link `i` is the `i`-th /24.
    pub underlay_base: String,
    /// The switch's tunnel address (terminates Talaria Geneve traffic).
    pub switch_addr: Ipv4Addr,
    /// Port the pods' HTTP servers listen on (Service targetPort).
    pub http_port: u16,
    /// Port the pods' UDP echo servers listen on (Service targetPort).
    pub udp_port: u16,
    /// Service port for HTTP (TCP).
    pub service_http_port: u16,
    /// Service port for UDP echo.
    pub service_udp_port: u16,
    /// Kubernetes namespace of the generated objects.
    pub namespace: String,
    /// Hosts outside the cluster, each on a switch port of its own after
    /// the nodes', running no agent (0..=16).
    pub external_hosts: u32,
    /// Services that are LoadBalancers (an ingress IP and nodePorts,
    /// `externalTrafficPolicy: Cluster`), spread over the Service range as
    /// the benchmark's targets are; at most all of them.
    pub external_services: u32,
    /// Where LoadBalancer ingress IPs come from (a /16). The fabric routes
    /// it to node 0, as a cloud load balancer sends to a node; in talaria
    /// mode the switch serves the addresses before routing.
    pub lb_cidr: String,
    /// The families of every generated Service, primary first, as its
    /// `spec.ipFamilies`: `[IPv4]`, `[IPv6]`, or both (dual-stack,
    /// `RequireDualStack`). With IPv6 among them the pods are dual-stack.
    /// LoadBalancer ingress IPs and nodePorts stay IPv4.
    pub service_families: Vec<IpFamily>,
    /// IPv6 service CIDR (a /108); IPv6 ClusterIPs are allocated from base + 10.
    pub service_cidr_v6: String,
    /// Base of the IPv6 pod CIDRs (a /56); node `i` gets the `i`-th /64.
    pub pod_cidr_v6_base: String,
}

/// The first nodePort; the `i`-th external Service has `NODE_PORT_BASE +
/// 2i` (http) and the next (udp), inside Kubernetes' default range
/// (30000–32767).
pub const NODE_PORT_BASE: u16 = 30000;
/// The nodePorts of Kubernetes' default range from [`NODE_PORT_BASE`] on.
const NODE_PORTS: u32 = 32767 - NODE_PORT_BASE as u32 + 1;
/// External Services whose nodePorts fit the default range.
const MAX_EXTERNAL_SERVICES: u32 = NODE_PORTS / 2;

impl Default for Topology {
    fn default() -> Self {
        Self {
            nodes: 3,
            pods_per_node: 4,
            services: 20,
            endpoints_per_service: 3,
            client_nodes: 1,
            uplink_mtu: 1500,
            service_cidr: "10.96.0.0/16".into(),
            pod_cidr_base: "10.244.0.0/16".into(),
            underlay_base: "172.30.0.0/16".into(),
            switch_addr: Ipv4Addr::new(172, 30, 255, 1),
            http_port: 8080,
            udp_port: 5353,
            service_http_port: 80,
            service_udp_port: 53,
            namespace: "default".into(),
            external_hosts: 1,
            external_services: 4,
            lb_cidr: "172.29.0.0/16".into(),
            service_families: vec![IpFamily::IPv4],
            service_cidr_v6: "fd00:10:96::/108".into(),
            pod_cidr_v6_base: "fd00:10:244::/56".into(),
        }
    }
}

/// A topology that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The YAML did not parse.
    #[error("topology YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A field is out of range or malformed.
    #[error("topology: {0}")]
    Invalid(String),
}

fn base16(cidr: &str, field: &str) -> Result<[u8; 2], TopologyError> {
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| TopologyError::Invalid(format!("{field}: {cidr:?} is not a CIDR")))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| TopologyError::Invalid(format!("{field}: bad address in {cidr:?}")))?;
    if len != "16" {
        return Err(TopologyError::Invalid(format!(
            "{field}: {cidr:?} must be a /16"
        )));
    }
    let o = addr.octets();
    Ok([o[0], o[1]])
}

/// The network address of an IPv6 CIDR that must be exactly a `/len`.
fn base_v6(cidr: &str, len: u8, field: &str) -> Result<Ipv6Addr, TopologyError> {
    let bad = || TopologyError::Invalid(format!("{field}: {cidr:?} must be an IPv6 /{len}"));
    let (addr, l) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: Ipv6Addr = addr.parse().map_err(|_| bad())?;
    if l != len.to_string() {
        return Err(bad());
    }
    let host_bits = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
    Ok(Ipv6Addr::from(u128::from(addr) & !host_bits))
}

impl Topology {
    /// Parses and validates a topology.
    pub fn from_yaml(text: &str) -> Result<Self, TopologyError> {
        let t: Topology = serde_yaml::from_str(text)?;
        t.validate()?;
        Ok(t)
    }

    /// The embedded default topology.
    pub fn embedded_default() -> Self {
        Self::from_yaml(DEFAULT_YAML).expect("embedded default topology is valid")
    }

    /// Checks ranges and CIDRs.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let bad = |m: String| Err(TopologyError::Invalid(m));
        if !(1..=200).contains(&self.nodes) {
            return bad(format!("nodes must be 1..=200, got {}", self.nodes));
        }
        if !(1..=200).contains(&self.pods_per_node) {
            return bad(format!(
                "pods_per_node must be 1..=200, got {}",
                self.pods_per_node
            ));
        }
        if self.services > 60000 {
            return bad(format!("services must be <= 60000, got {}", self.services));
        }
        if self.client_nodes == 0 || self.client_nodes > self.nodes {
            return bad(format!(
                "client_nodes must be 1..=nodes, got {}",
                self.client_nodes
            ));
        }
        if self.endpoints_per_service == 0 {
            return bad("endpoints_per_service must be >= 1".into());
        }
        if !(576 + ENCAP_OVERHEAD..=9000).contains(&self.uplink_mtu) {
            return bad(format!(
                "uplink_mtu must be 624..=9000, got {}",
                self.uplink_mtu
            ));
        }
        if self.external_hosts > 16 || self.nodes + self.external_hosts > 250 {
            return bad(format!(
                "external_hosts must be 0..=16, with nodes + external_hosts <= 250, got {}",
                self.external_hosts
            ));
        }
        if self.external_services > MAX_EXTERNAL_SERVICES {
            return bad(format!(
                "external_services must be <= {MAX_EXTERNAL_SERVICES} (their nodePorts), got {}",
                self.external_services
            ));
        }
        base16(&self.service_cidr, "service_cidr")?;
        base16(&self.pod_cidr_base, "pod_cidr_base")?;
        base16(&self.underlay_base, "underlay_base")?;
        base16(&self.lb_cidr, "lb_cidr")?;
        base_v6(&self.service_cidr_v6, 108, "service_cidr_v6")?;
        base_v6(&self.pod_cidr_v6_base, 56, "pod_cidr_v6_base")?;
        let f = &self.service_families;
        if f.is_empty() || f.len() > 2 || (f.len() == 2 && f[0] == f[1]) {
            return bad(format!(
                "service_families must be [IPv4], [IPv6] or both, got {f:?}"
            ));
        }
        Ok(())
    }

    /// Whether pods have IPv6 addresses (some Service family is IPv6).
    pub fn ipv6(&self) -> bool {
        self.service_families.contains(&IpFamily::IPv6)
    }

    /// Pod MTU: uplink MTU minus the encapsulation.
    pub fn pod_mtu(&self) -> u32 {
        self.uplink_mtu - ENCAP_OVERHEAD
    }

    /// Switch port `i`'s address (gateway of node `i`).
    pub fn switch_port_ip(&self, node: u32) -> Ipv4Addr {
        let b = base16(&self.underlay_base, "").unwrap();
        Ipv4Addr::new(b[0], b[1], node as u8, 1)
    }

    /// Node `i`'s uplink address.
    pub fn node_ip(&self, node: u32) -> Ipv4Addr {
        let b = base16(&self.underlay_base, "").unwrap();
        Ipv4Addr::new(b[0], b[1], node as u8, 2)
    }

    /// Node `i`'s pod CIDR as (network, prefix length).
    pub fn pod_cidr(&self, node: u32) -> (Ipv4Addr, u8) {
        let b = base16(&self.pod_cidr_base, "").unwrap();
        (Ipv4Addr::new(b[0], b[1], node as u8, 0), 24)
    }

    /// Pod `j` of node `i`.
    pub fn pod_ip(&self, node: u32, pod: u32) -> Ipv4Addr {
        let b = base16(&self.pod_cidr_base, "").unwrap();
        Ipv4Addr::new(b[0], b[1], node as u8, (10 + pod) as u8)
    }

    /// Node `i`'s IPv6 pod CIDR as (network, prefix length).
    pub fn pod_cidr_v6(&self, node: u32) -> (Ipv6Addr, u8) {
        let b = base_v6(&self.pod_cidr_v6_base, 56, "").unwrap();
        (Ipv6Addr::from(u128::from(b) | u128::from(node) << 64), 64)
    }

    /// Pod `j` of node `i`'s IPv6 address.
    pub fn pod_ip_v6(&self, node: u32, pod: u32) -> Ipv6Addr {
        let (net, _) = self.pod_cidr_v6(node);
        Ipv6Addr::from(u128::from(net) + 10 + u128::from(pod))
    }

    /// Pod `j` of node `i`'s address of `family`.
    pub fn pod_ip_of(&self, family: IpFamily, node: u32, pod: u32) -> IpAddr {
        match family {
            IpFamily::IPv4 => self.pod_ip(node, pod).into(),
            IpFamily::IPv6 => self.pod_ip_v6(node, pod).into(),
        }
    }

    /// The pod network of `family` as a CIDR: the IPv4 /16 or the IPv6
    /// /56 every node's pod CIDR comes from (kube-proxy's
    /// `--cluster-cidr`).
    pub fn cluster_cidr(&self, family: IpFamily) -> String {
        match family {
            IpFamily::IPv4 => {
                let (net, _) = self.pod_cidr(0);
                format!("{net}/16")
            }
            IpFamily::IPv6 => {
                let b = base_v6(&self.pod_cidr_v6_base, 56, "").unwrap();
                format!("{b}/56")
            }
        }
    }

    /// The IPv6 service CIDR as (network, prefix length).
    pub fn service_net_v6(&self) -> (Ipv6Addr, u8) {
        (base_v6(&self.service_cidr_v6, 108, "").unwrap(), 108)
    }

    /// The ClusterIPs of Service `k`, one per Service family, primary
    /// first.
    pub fn cluster_ips(&self, k: u32) -> Vec<IpAddr> {
        self.service_families
            .iter()
            .map(|f| match f {
                IpFamily::IPv4 => self.cluster_ip(k).into(),
                IpFamily::IPv6 => {
                    let (net, _) = self.service_net_v6();
                    Ipv6Addr::from(u128::from(net) + 10 + u128::from(k)).into()
                }
            })
            .collect()
    }

    /// The service CIDR as (network, prefix length).
    pub fn service_net(&self) -> (Ipv4Addr, u8) {
        let b = base16(&self.service_cidr, "").unwrap();
        (Ipv4Addr::new(b[0], b[1], 0, 0), 16)
    }

    /// ClusterIP of Service `k`.
    pub fn cluster_ip(&self, k: u32) -> Ipv4Addr {
        let (net, _) = self.service_net();
        Ipv4Addr::from(u32::from(net) + 10 + k)
    }

    /// The LB CIDR as (network, prefix length).
    pub fn lb_net(&self) -> (Ipv4Addr, u8) {
        let b = base16(&self.lb_cidr, "").unwrap();
        (Ipv4Addr::new(b[0], b[1], 0, 0), 16)
    }

    /// LoadBalancer ingress IP of Service `k` (if it is an external one).
    pub fn lb_ip(&self, k: u32) -> Ipv4Addr {
        let (net, _) = self.lb_net();
        Ipv4Addr::from(u32::from(net) + 10 + k)
    }

    /// The switch port of external host `h`: the one after the nodes'.
    pub fn external_port(&self, h: u32) -> u32 {
        self.nodes + h
    }

    /// External host `h`'s address, on its switch port's link.
    pub fn external_ip(&self, h: u32) -> Ipv4Addr {
        self.node_ip(self.external_port(h))
    }

    /// Indices of the external Services among `count`: spread over the
    /// range, as [`pick_services`] spreads the benchmark's targets; none
    /// when the Services have no IPv4 family.
    pub fn external_service_indices(&self, count: u32) -> Vec<u32> {
        // Ingress IPs and node addresses are IPv4: an IPv6-only Service
        // has neither.
        if count == 0
            || self.external_services == 0
            || !self.service_families.contains(&IpFamily::IPv4)
        {
            return Vec::new();
        }
        pick_services(count, self.external_services)
    }

    /// Deterministic MAC: `02:74:<kind>:<a>:<b>:<side>`.
    pub fn mac(kind: u8, a: u32, b: u32, side: u8) -> String {
        format!(
            "02:74:{kind:02x}:{:02x}:{:02x}:{side:02x}",
            a as u8, b as u8
        )
    }

    /// MAC of switch port `i`.
    pub fn switch_port_mac(node: u32) -> String {
        Self::mac(1, node, 0, 0)
    }
    /// MAC of node `i`'s uplink.
    pub fn node_uplink_mac(node: u32) -> String {
        Self::mac(1, node, 0, 1)
    }
    /// MAC of the node-side veth of pod `j` on node `i`.
    pub fn node_pod_veth_mac(node: u32, pod: u32) -> String {
        Self::mac(2, node, pod, 0)
    }
    /// MAC of pod `j`'s eth0 on node `i`.
    pub fn pod_mac(node: u32, pod: u32) -> String {
        Self::mac(2, node, pod, 1)
    }

    /// All pods as (node, pod).
    pub fn pods(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        (0..self.nodes).flat_map(move |n| (0..self.pods_per_node).map(move |p| (n, p)))
    }

    /// Pods that act as clients (pods of the client nodes).
    pub fn client_pods(&self) -> Vec<(u32, u32)> {
        self.pods()
            .filter(|(n, _)| *n < self.client_nodes)
            .collect()
    }

    /// Pods that may be endpoints: pods of non-client nodes, or every pod
    /// when every node is a client node.
    pub fn backend_pods(&self) -> Vec<(u32, u32)> {
        let b: Vec<_> = self
            .pods()
            .filter(|(n, _)| *n >= self.client_nodes)
            .collect();
        if b.is_empty() {
            self.pods().collect()
        } else {
            b
        }
    }

    /// The endpoints of Service `k`: `endpoints_per_service` backend pods,
    /// assigned round-robin so consecutive Services use different pods.
    pub fn service_endpoints(&self, k: u32) -> Vec<(u32, u32)> {
        let pool = self.backend_pods();
        let n = (self.endpoints_per_service as usize).min(pool.len());
        (0..n)
            .map(|e| pool[(k as usize * n + e) % pool.len()])
            .collect()
    }

    /// Name of Service `k`.
    pub fn service_name(k: u32) -> String {
        format!("svc-{k:05}")
    }

    /// Kubernetes-style pod name.
    pub fn pod_name(node: u32, pod: u32) -> String {
        format!("pod-n{node}-{pod}")
    }

    /// Kubernetes-style node name.
    pub fn node_name(node: u32) -> String {
        format!("node-{node}")
    }
}

/// `k` Service indices spread evenly over `0..count` (so a linear rule list
/// is scanned half-way on average).
pub fn pick_services(count: u32, k: u32) -> Vec<u32> {
    let k = k.min(count).max(1);
    (0..k)
        .map(|i| ((i as u64 * count as u64 + count as u64 / 2) / k as u64) as u32)
        .map(|x| x.min(count.saturating_sub(1)))
        .collect()
}

/// Namespace names of one lab instance, all starting with its unique prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    /// Unique prefix, e.g. `tl3f2a`.
    pub prefix: String,
}

impl Names {
    /// The switch's netns.
    pub fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }
    /// Node `i`'s netns.
    pub fn node(&self, node: u32) -> String {
        format!("{}-n{node}", self.prefix)
    }
    /// Pod `j` of node `i`'s netns.
    pub fn pod(&self, node: u32, pod: u32) -> String {
        format!("{}-n{node}p{pod}", self.prefix)
    }
    /// External host `h`'s netns.
    pub fn external(&self, h: u32) -> String {
        format!("{}-x{h}", self.prefix)
    }
}

/// Switch port device name in the switch netns.
pub fn switch_port_dev(node: u32) -> String {
    format!("p{node}")
}
/// Node uplink device name in the node netns.
pub const NODE_UPLINK_DEV: &str = "up0";
/// Node-side veth of pod `j` in the node netns.
pub fn node_pod_dev(pod: u32) -> String {
    format!("pod{pod}")
}
/// Pod-side device.
pub const POD_DEV: &str = "eth0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_the_documented_default() {
        let t = Topology::embedded_default();
        assert_eq!(t, Topology::default());
        assert_eq!(t.nodes, 3);
        assert_eq!(t.pods_per_node, 4);
        assert_eq!(t.services, 20);
        assert_eq!(t.pod_mtu(), 1452);
    }

    #[test]
    fn partial_yaml_fills_defaults() {
        let t = Topology::from_yaml("nodes: 2\npods_per_node: 2\nservices: 5\n").unwrap();
        assert_eq!(t.nodes, 2);
        assert_eq!(t.services, 5);
        assert_eq!(t.uplink_mtu, 1500);
        let t = Topology::from_yaml("{}").unwrap();
        assert_eq!(t, Topology::default());
    }

    #[test]
    fn rejects_bad_yaml() {
        assert!(Topology::from_yaml("nodes: 0").is_err());
        assert!(Topology::from_yaml("nodez: 2").is_err());
        assert!(Topology::from_yaml("service_cidr: 10.96.0.0/12").is_err());
        assert!(Topology::from_yaml("client_nodes: 4").is_err());
        assert!(Topology::from_yaml("uplink_mtu: 100").is_err());
        assert!(Topology::from_yaml("services: [1]").is_err());
        assert!(Topology::from_yaml("external_hosts: 17").is_err());
        assert!(Topology::from_yaml("external_services: 1400").is_err());
        assert!(Topology::from_yaml("lb_cidr: 172.29.0.0/24").is_err());
    }

    #[test]
    fn the_outside_world() {
        let t = Topology::default();
        assert_eq!(t.external_port(0), 3);
        assert_eq!(t.external_ip(0), Ipv4Addr::new(172, 30, 3, 2));
        assert_eq!(t.lb_ip(7), Ipv4Addr::new(172, 29, 0, 17));
        assert_eq!(t.external_service_indices(20), vec![2, 7, 12, 17]);
        assert_eq!(t.external_service_indices(2), vec![0, 1]);
        assert!(t.external_service_indices(0).is_empty());
        let none = Topology::from_yaml("external_services: 0").unwrap();
        assert!(none.external_service_indices(20).is_empty());
        let n = Names {
            prefix: "tlab12".into(),
        };
        assert_eq!(n.external(0), "tlab12-x0");
    }

    #[test]
    fn picks_spread_services() {
        assert_eq!(pick_services(10, 4), vec![1, 3, 6, 8]);
        assert_eq!(pick_services(2, 8), vec![0, 1]);
        assert_eq!(pick_services(10000, 2), vec![2500, 7500]);
        assert_eq!(pick_services(1, 1), vec![0]);
    }

    #[test]
    fn address_plan() {
        let t = Topology::default();
        assert_eq!(t.node_ip(2), Ipv4Addr::new(172, 30, 2, 2));
        assert_eq!(t.switch_port_ip(2), Ipv4Addr::new(172, 30, 2, 1));
        assert_eq!(t.pod_ip(1, 3), Ipv4Addr::new(10, 244, 1, 13));
        assert_eq!(t.pod_cidr(1), (Ipv4Addr::new(10, 244, 1, 0), 24));
        assert_eq!(t.cluster_ip(0), Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(t.cluster_ip(9999), Ipv4Addr::new(10, 96, 39, 25));
        assert_eq!(Topology::pod_mac(1, 3), "02:74:02:01:03:01");
        assert_eq!(t.cluster_ips(0), [IpAddr::from([10, 96, 0, 10])]);
    }

    #[test]
    fn the_dual_stack_topology_is_the_default_with_both_families() {
        let t = Topology::from_yaml(include_str!("../topologies/dual-stack.yaml")).unwrap();
        assert_eq!(t.service_families, [IpFamily::IPv4, IpFamily::IPv6]);
        let v4 = Topology {
            service_families: vec![IpFamily::IPv4],
            ..t
        };
        assert_eq!(v4, Topology::default());
    }

    #[test]
    fn ipv6_address_plan() {
        let t = Topology::from_yaml("service_families: [IPv6, IPv4]").unwrap();
        assert!(t.ipv6());
        assert!(!Topology::default().ipv6());
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(t.pod_cidr_v6(2), (v6("fd00:10:244:2::"), 64));
        assert_eq!(t.pod_ip_v6(1, 3), v6("fd00:10:244:1::d"));
        assert_eq!(t.cluster_cidr(IpFamily::IPv6), "fd00:10:244::/56");
        assert_eq!(t.cluster_cidr(IpFamily::IPv4), "10.244.0.0/16");
        assert_eq!(
            t.cluster_ips(9999),
            [
                IpAddr::V6(v6("fd00:10:96::2719")),
                IpAddr::V4(Ipv4Addr::new(10, 96, 39, 25))
            ]
        );
        for bad in [
            "service_families: []",
            "service_families: [IPv4, IPv4]",
            "service_families: [IPv5]",
            "service_cidr_v6: fd00:10:96::/64",
            "pod_cidr_v6_base: 10.0.0.0/56",
        ] {
            assert!(Topology::from_yaml(bad).is_err(), "{bad}");
        }
        assert_eq!("IPv6".parse::<IpFamily>(), Ok(IpFamily::IPv6));
        // LoadBalancers have IPv4 ingress IPs: dual-stack Services may be
        // LoadBalancers, IPv6-only ones are not.
        assert_eq!(t.external_service_indices(20), [2, 7, 12, 17]);
        let v6_only = Topology::from_yaml("service_families: [IPv6]").unwrap();
        assert!(v6_only.external_service_indices(20).is_empty());
    }

    #[test]
    fn endpoints_avoid_client_nodes_and_rotate() {
        let t = Topology::default();
        for k in 0..t.services {
            let eps = t.service_endpoints(k);
            assert_eq!(eps.len(), 3);
            assert!(eps.iter().all(|(n, _)| *n >= 1));
        }
        assert_ne!(t.service_endpoints(0), t.service_endpoints(1));
        let one = Topology::from_yaml("nodes: 1\npods_per_node: 2").unwrap();
        assert_eq!(one.service_endpoints(0).len(), 2);
    }

    #[test]
    fn names_are_prefixed() {
        let n = Names {
            prefix: "tlab12".into(),
        };
        assert_eq!(n.pod(1, 2), "tlab12-n1p2");
        assert_eq!(n.switch(), "tlab12-sw");
    }
}
