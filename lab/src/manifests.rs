//! The objects generated from a topology: Kubernetes Services, EndpointSlices
//! (`discovery.k8s.io/v1`) and Nodes for the controller, and the switch and
//! node configurations.

use crate::topology::{
    node_pod_dev, switch_port_dev, IpFamily, Names, Topology, NODE_PORT_BASE, NODE_UPLINK_DEV,
    POD_DEV, POD_GATEWAY,
};
use serde::Serialize;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One Service as the lab sees it: its ClusterIPs with its current endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Service index (names and ClusterIP derive from it).
    pub index: u32,
    /// Service name.
    pub name: String,
    /// ClusterIPs, one per family of [`Topology::service_families`],
    /// primary first.
    pub cluster_ips: Vec<IpAddr>,
    /// Ready endpoints as (node, pod).
    pub endpoints: Vec<(u32, u32)>,
    /// Endpoints listed but not ready (no new connections; established
    /// ones keep going), as (node, pod).
    pub not_ready: Vec<(u32, u32)>,
    /// A LoadBalancer's ingress IP and nodePorts; None: a ClusterIP
    /// Service.
    pub external: Option<ExternalSpec>,
}

/// How clients outside the cluster reach an external Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalSpec {
    /// `status.loadBalancer.ingress[0].ip`.
    pub lb_ip: Ipv4Addr,
    /// The nodePorts of the `http` and `udp` ports, at every node's address.
    pub node_ports: [u16; 2],
}

/// The Services of a lab at one moment; the consistency benchmark edits the
/// endpoint lists and regenerates everything from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSet {
    /// The Services, in index order.
    pub services: Vec<ServiceSpec>,
}

impl ServiceSpec {
    /// The ClusterIP of `family`, if the Service has one.
    pub fn cluster_ip_of(&self, family: IpFamily) -> Option<IpAddr> {
        self.cluster_ips
            .iter()
            .copied()
            .find(|ip| IpFamily::of(*ip) == family)
    }
}

impl ServiceSet {
    /// The topology's Services with their default endpoints.
    pub fn from_topology(t: &Topology) -> Self {
        Self::with_count(t, t.services)
    }

    /// `count` Services (the benchmark sweeps this) with default endpoints.
    pub fn with_count(t: &Topology, count: u32) -> Self {
        let external = t.external_service_indices(count);
        let services = (0..count)
            .map(|k| ServiceSpec {
                index: k,
                name: Topology::service_name(k),
                cluster_ips: t.cluster_ips(k),
                endpoints: t.service_endpoints(k),
                not_ready: Vec::new(),
                external: external.iter().position(|e| *e == k).map(|i| {
                    let http = NODE_PORT_BASE + 2 * i as u16;
                    ExternalSpec {
                        lb_ip: t.lb_ip(k),
                        node_ports: [http, http + 1],
                    }
                }),
            })
            .collect();
        Self { services }
    }

    /// The external Services, in index order.
    pub fn external(&self) -> impl Iterator<Item = (&ServiceSpec, ExternalSpec)> {
        self.services
            .iter()
            .filter_map(|s| s.external.map(|e| (s, e)))
    }

    /// The switch keys the controller plans for these Services on `t`:
    /// two ports each, at every ClusterIP and, for an external Service, at
    /// its ingress IP and at every node's address.
    pub fn switch_keys(&self, t: &Topology) -> usize {
        let external = self.external().count();
        let cluster_ips: usize = self.services.iter().map(|s| s.cluster_ips.len()).sum();
        2 * (cluster_ips + external * (1 + t.nodes as usize))
    }
}

/// A Service as the Kubernetes API serves it (`http` TCP and `udp` UDP
/// ports, selector `app: <name>`): a ClusterIP Service, or a LoadBalancer
/// with its nodePorts and ingress IP.
pub fn service_object(t: &Topology, s: &ServiceSpec) -> Value {
    let mut v = cluster_ip_service(t, s);
    if let Some(e) = s.external {
        v["spec"]["type"] = "LoadBalancer".into();
        v["spec"]["externalTrafficPolicy"] = "Cluster".into();
        v["spec"]["allocateLoadBalancerNodePorts"] = true.into();
        for (port, node_port) in e.node_ports.iter().enumerate() {
            v["spec"]["ports"][port]["nodePort"] = (*node_port).into();
        }
        v["status"] = json!({ "loadBalancer": { "ingress": [
            { "ip": e.lb_ip.to_string(), "ipMode": "VIP" },
        ] } });
    }
    v
}

fn cluster_ip_service(t: &Topology, s: &ServiceSpec) -> Value {
    let ips: Vec<String> = s.cluster_ips.iter().map(IpAddr::to_string).collect();
    let families: Vec<IpFamily> = s.cluster_ips.iter().map(|ip| IpFamily::of(*ip)).collect();
    let policy = if families.len() > 1 {
        "RequireDualStack"
    } else {
        "SingleStack"
    };
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": s.name,
            "namespace": t.namespace,
            "labels": { "app.kubernetes.io/part-of": "talaria-lab" },
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ips.first(),
            "clusterIPs": ips,
            "ipFamilies": families,
            "ipFamilyPolicy": policy,
            "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None",
            "selector": { "app": s.name },
            "ports": [
                { "name": "http", "protocol": "TCP", "port": t.service_http_port, "targetPort": t.http_port },
                { "name": "udp", "protocol": "UDP", "port": t.service_udp_port, "targetPort": t.udp_port },
            ],
        },
    })
}

/// The EndpointSlices of a Service, one per family of its ClusterIPs, as
/// the EndpointSlice controller keeps them.
pub fn endpoint_slice_objects(t: &Topology, s: &ServiceSpec) -> Vec<Value> {
    s.cluster_ips
        .iter()
        .map(|ip| endpoint_slice_object(t, s, IpFamily::of(*ip)))
        .collect()
}

/// The EndpointSlice of a Service's `family` (`<name>-lab01` for IPv4,
/// `<name>-lab06` for IPv6): its endpoints, ready or not.
pub fn endpoint_slice_object(t: &Topology, s: &ServiceSpec, family: IpFamily) -> Value {
    let ready = s.endpoints.iter().map(|e| (e, true));
    let not_ready = s.not_ready.iter().map(|e| (e, false));
    let endpoints: Vec<Value> = ready
        .chain(not_ready)
        .map(|(&(n, p), ready)| {
            json!({
                "addresses": [t.pod_ip_of(family, n, p).to_string()],
                "conditions": { "ready": ready, "serving": ready, "terminating": false },
                "nodeName": Topology::node_name(n),
                "targetRef": { "kind": "Pod", "name": Topology::pod_name(n, p), "namespace": t.namespace },
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{}-lab0{}", s.name, if family == IpFamily::IPv4 { 1 } else { 6 }),
            "namespace": t.namespace,
            "labels": {
                "kubernetes.io/service-name": s.name,
                "endpointslice.kubernetes.io/managed-by": "talaria-lab",
            },
        },
        "addressType": family,
        "ports": [
            { "name": "http", "protocol": "TCP", "port": t.http_port },
            { "name": "udp", "protocol": "UDP", "port": t.udp_port },
        ],
        "endpoints": endpoints,
    })
}

/// Node `n` (its pod CIDRs and InternalIP).
pub fn node_object(t: &Topology, n: u32) -> Value {
    let (net, len) = t.pod_cidr(n);
    let mut cidrs = vec![format!("{net}/{len}")];
    if t.ipv6() {
        let (net, len) = t.pod_cidr_v6(n);
        cidrs.push(format!("{net}/{len}"));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": Topology::node_name(n) },
        "spec": { "podCIDR": cidrs[0], "podCIDRs": cidrs },
        "status": { "addresses": [
            { "type": "InternalIP", "address": t.node_ip(n).to_string() },
            { "type": "Hostname", "address": Topology::node_name(n) },
        ] },
    })
}

fn multi_doc(objs: impl IntoIterator<Item = Value>) -> String {
    let mut out = String::new();
    for o in objs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&o).expect("JSON values serialize as YAML"));
    }
    out
}

/// Services and their EndpointSlices, one multi-document YAML stream.
pub fn services_yaml(t: &Topology, services: &[ServiceSpec]) -> String {
    multi_doc(
        services.iter().flat_map(|s| {
            std::iter::once(service_object(t, s)).chain(endpoint_slice_objects(t, s))
        }),
    )
}

/// The lab's Nodes (pod CIDRs and InternalIP), for the controller's
/// `pod_node` and `pod_node_v6` tables.
pub fn nodes_yaml(t: &Topology) -> String {
    multi_doc((0..t.nodes).map(|n| node_object(t, n)))
}

/// One switch port.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SwitchPort {
    /// Port number (= node index).
    pub port: u32,
    /// Device in the switch netns.
    pub dev: String,
    /// Address of the port.
    pub ip: Ipv4Addr,
    /// MAC of the port.
    pub mac: String,
    /// The attached node's uplink address and MAC.
    pub peer_ip: Ipv4Addr,
    /// MAC of the attached node's uplink.
    pub peer_mac: String,
}

/// One fabric route (`ipv4_route`, or `ipv6_route` for an IPv6 prefix):
/// prefix → forward(port, src_mac, dst_mac).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SwitchRoute {
    /// Destination prefix, e.g. `10.244.1.0/24`.
    pub prefix: String,
    /// Egress port.
    pub port: u32,
    /// Egress device.
    pub dev: String,
    /// Source MAC to write.
    pub src_mac: String,
    /// Destination MAC to write.
    pub dst_mac: String,
}

/// The switch configuration the lab generates (`switch.yaml`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SwitchConfig {
    /// The switch netns.
    pub netns: String,
    /// Tunnel address.
    pub switch_addr: Ipv4Addr,
    /// Ports.
    pub ports: Vec<SwitchPort>,
    /// Fabric routes: each node's pod CIDRs and uplink address.
    pub routes: Vec<SwitchRoute>,
}

/// Builds the switch configuration.
pub fn switch_config(t: &Topology, names: &Names) -> SwitchConfig {
    // A node's port and an external host's look alike: the peer is the
    // link's `.2` (a node's uplink, an external host's eth0).
    let ports: Vec<SwitchPort> = (0..t.nodes + t.external_hosts)
        .map(|n| SwitchPort {
            port: n,
            dev: switch_port_dev(n),
            ip: t.switch_port_ip(n),
            mac: Topology::switch_port_mac(n),
            peer_ip: t.node_ip(n),
            peer_mac: Topology::node_uplink_mac(n),
        })
        .collect();
    let route = |prefix: String, p: &SwitchPort| SwitchRoute {
        prefix,
        port: p.port,
        dev: p.dev.clone(),
        src_mac: p.mac.clone(),
        dst_mac: p.peer_mac.clone(),
    };
    let mut routes = Vec::new();
    for p in &ports {
        if p.port < t.nodes {
            let (net, len) = t.pod_cidr(p.port);
            routes.push(route(format!("{net}/{len}"), p));
            if t.ipv6() {
                let (net, len) = t.pod_cidr_v6(p.port);
                routes.push(route(format!("{net}/{len}"), p));
            }
        }
        routes.push(route(format!("{}/32", p.peer_ip), p));
    }
    // LoadBalancer ingress IPs go to node 0, as a cloud load balancer
    // sends to a node (the kube-proxy baselines catch them there); in
    // talaria mode the switch serves them before routing, and the
    // controller's config makes this route a blackhole
    // (`bringup::controller_config`).
    let (net, len) = t.lb_net();
    routes.push(route(format!("{net}/{len}"), &ports[0]));
    SwitchConfig {
        netns: names.switch(),
        switch_addr: t.switch_addr,
        ports,
        routes,
    }
}

/// One pod as its node sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodePod {
    /// Pod name.
    pub name: String,
    /// Node-side veth device.
    pub dev: String,
    /// Pod address.
    pub ip: Ipv4Addr,
    /// Pod IPv6 address (a dual-stack lab's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    /// Pod MAC (eth0 inside the pod).
    pub mac: String,
    /// MAC of the node-side veth.
    pub host_mac: String,
    /// The pod's netns.
    pub netns: String,
}

/// A node agent's configuration (`node-<i>.yaml`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeConfig {
    /// Node name.
    pub node_name: String,
    /// The node netns.
    pub netns: String,
    /// Uplink device towards the switch.
    pub uplink: String,
    /// Uplink address.
    pub node_ip: Ipv4Addr,
    /// Uplink MAC.
    pub node_mac: String,
    /// The switch's tunnel address.
    pub switch_addr: Ipv4Addr,
    /// MAC of the switch port (next hop).
    pub gateway_mac: String,
    /// Switch port address (next hop).
    pub gateway_ip: Ipv4Addr,
    /// Node pod CIDR.
    pub pod_cidr: String,
    /// Service CIDRs: IPv4, and IPv6 in a dual-stack lab.
    pub service_cidrs: Vec<String>,
    /// Pod MTU.
    pub pod_mtu: u32,
    /// Pod device inside each pod netns.
    pub pod_dev: String,
    /// Pods on this node.
    pub pods: Vec<NodePod>,
}

/// Builds node `n`'s configuration.
pub fn node_config(t: &Topology, names: &Names, n: u32) -> NodeConfig {
    let (net, len) = t.pod_cidr(n);
    let (snet, slen) = t.service_net();
    let mut service_cidrs = vec![format!("{snet}/{slen}")];
    if t.ipv6() {
        service_cidrs.push(t.service_cidr_v6.clone());
    }
    NodeConfig {
        node_name: Topology::node_name(n),
        netns: names.node(n),
        uplink: NODE_UPLINK_DEV.into(),
        node_ip: t.node_ip(n),
        node_mac: Topology::node_uplink_mac(n),
        switch_addr: t.switch_addr,
        gateway_mac: Topology::switch_port_mac(n),
        gateway_ip: t.switch_port_ip(n),
        pod_cidr: format!("{net}/{len}"),
        service_cidrs,
        pod_mtu: t.pod_mtu(),
        pod_dev: POD_DEV.into(),
        pods: (0..t.pods_per_node)
            .map(|p| NodePod {
                name: Topology::pod_name(n, p),
                dev: node_pod_dev(p),
                ip: t.pod_ip(n, p),
                ipv6: t.ipv6().then(|| t.pod_ip_v6(n, p)),
                mac: Topology::pod_mac(n, p),
                host_mac: Topology::node_pod_veth_mac(n, p),
                netns: names.pod(n, p),
            })
            .collect(),
    }
}

/// The pod gateway as text (for docs and configs).
pub fn pod_gateway() -> Ipv4Addr {
    POD_GATEWAY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(yaml: &str) -> Vec<serde_yaml::Value> {
        use serde::Deserialize;
        serde_yaml::Deserializer::from_str(yaml)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect()
    }

    #[test]
    fn services_and_slices_have_kubernetes_shape() {
        let t = Topology::default();
        let set = ServiceSet::from_topology(&t);
        let d = docs(&services_yaml(&t, &set.services));
        assert_eq!(d.len(), 40);
        let svc = &d[0];
        assert_eq!(svc["apiVersion"], "v1");
        assert_eq!(svc["kind"], "Service");
        assert_eq!(svc["metadata"]["name"], "svc-00000");
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(svc["spec"]["ports"][0]["port"], 80);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(svc["spec"]["ports"][1]["protocol"], "UDP");
        let es = &d[1];
        assert_eq!(es["apiVersion"], "discovery.k8s.io/v1");
        assert_eq!(es["kind"], "EndpointSlice");
        assert_eq!(es["addressType"], "IPv4");
        assert_eq!(
            es["metadata"]["labels"]["kubernetes.io/service-name"],
            "svc-00000"
        );
        assert_eq!(es["endpoints"].as_sequence().unwrap().len(), 3);
        assert_eq!(es["endpoints"][0]["addresses"][0], "10.244.1.10");
        assert_eq!(es["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(es["endpoints"][0]["nodeName"], "node-1");
        assert_eq!(es["ports"][0]["port"], 8080);
    }

    #[test]
    fn external_services_are_load_balancers() {
        let t = Topology::default();
        let set = ServiceSet::from_topology(&t);
        let ext: Vec<u32> = set.external().map(|(s, _)| s.index).collect();
        assert_eq!(ext, [2, 7, 12, 17]);
        // 20 Services × 2 ports, and 4 × 2 ports at the ingress IP and 3
        // nodes' addresses.
        assert_eq!(set.switch_keys(&t), 40 + 32);
        let d = docs(&services_yaml(&t, &set.services[7..8]));
        let svc = &d[0];
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30002);
        assert_eq!(svc["spec"]["ports"][1]["nodePort"], 30003);
        assert_eq!(
            svc["status"]["loadBalancer"]["ingress"][0]["ip"],
            "172.29.0.17"
        );
        let plain = docs(&services_yaml(&t, &set.services[0..1]));
        assert_eq!(plain[0]["spec"]["type"], "ClusterIP");
        assert!(plain[0]["spec"]["ports"][0].get("nodePort").is_none());
    }

    #[test]
    fn nodes_carry_pod_cidrs() {
        let t = Topology::default();
        let d = docs(&nodes_yaml(&t));
        assert_eq!(d.len(), 3);
        assert_eq!(d[2]["spec"]["podCIDR"], "10.244.2.0/24");
        assert_eq!(d[2]["status"]["addresses"][0]["address"], "172.30.2.2");
    }

    #[test]
    fn switch_routes_cover_pods_and_nodes() {
        let t = Topology::default();
        let names = Names {
            prefix: "tlx".into(),
        };
        let c = switch_config(&t, &names);
        // Three nodes and the external host.
        assert_eq!(c.ports.len(), 4);
        assert_eq!(c.routes.len(), 8);
        assert_eq!(c.routes[2].prefix, "10.244.1.0/24");
        assert_eq!(c.routes[2].dst_mac, Topology::node_uplink_mac(1));
        assert_eq!(c.routes[3].prefix, "172.30.1.2/32");
        assert_eq!(
            (c.routes[6].prefix.as_str(), c.routes[6].port),
            ("172.30.3.2/32", 3)
        );
        assert_eq!(
            (c.routes[7].prefix.as_str(), c.routes[7].port),
            ("172.29.0.0/16", 0)
        );
    }

    #[test]
    fn node_config_lists_pods() {
        let t = Topology::default();
        let names = Names {
            prefix: "tlx".into(),
        };
        let c = node_config(&t, &names, 1);
        assert_eq!(c.pods.len(), 4);
        assert_eq!(c.pods[3].ip, Ipv4Addr::new(10, 244, 1, 13));
        assert_eq!(c.pod_mtu, 1452);
        assert_eq!(c.netns, "tlx-n1");
        assert_eq!(c.service_cidrs, ["10.96.0.0/16"]);
        assert_eq!(c.pods[3].ipv6, None);
    }
}
