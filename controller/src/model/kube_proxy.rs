//! kube-proxy's reading of Services, EndpointSlices and Nodes: which
//! endpoints serve which Service port, under which conditions
//! (`pkg/proxy/endpointslicecache.go` and the proxiers in
//! kubernetes/kubernetes). Pure functions of one object and the nodes.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
    networking::v1::ServiceCIDR,
};

use super::{
    index::{ServiceEntry, SliceEntry},
    obj_ref, skip, Frontend, HealthCheckView, Model, ObjectRef, PortView, ServicePort, ServiceView,
    Skipped, HEADLESS_LABEL, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL,
};
use crate::types::{Backend, HashMode, IpPrefix, Proto, ServiceKey};

/// Endpoint after condition evaluation, before the per-port join. Kept
/// whatever its conditions: an unusable copy of an address can still win
/// the deduplication over a usable one ([`pick_copy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EpInfo {
    /// `addresses[0]`, the only address kube-proxy uses, of its slice's
    /// `addressType`.
    pub(super) ip: IpAddr,
    /// Where the switch sends it: the node whose pod CIDR holds its
    /// address (that node's agent delivers it), else
    /// [`Backend::NO_AGENT`] (the switch delivers it plain: a node's own
    /// address, a control-plane node's API server, an off-cluster address).
    pub(super) node_ip: Ipv4Addr,
    /// The node it runs on, for `internalTrafficPolicy: Local`: its
    /// nodeName's, else the node whose pod CIDR holds it.
    pub(super) home: Option<Ipv4Addr>,
    /// `ready` (nil = true).
    pub(super) ready: bool,
    /// `serving` (nil = true).
    pub(super) serving: bool,
    /// `terminating` (nil = false).
    pub(super) terminating: bool,
    /// `hints.forZones`: the zones whose nodes it is meant for.
    pub(super) zones: Vec<String>,
    /// `hints.forNodes`: the nodes it is meant for (`PreferSameNode`).
    pub(super) nodes: Vec<String>,
}

impl EpInfo {
    /// Takes new flows when some endpoint of its port is ready.
    fn is_ready(&self) -> bool {
        self.ready
    }

    /// Takes new flows when no endpoint of its port is ready
    /// (`CategorizeEndpoints` in `pkg/proxy/topology.go`); otherwise keeps
    /// its established flows.
    fn is_serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// Which of two copies of one `ip:port` (in two slices, or twice in one)
/// the port uses: `old` was met first (slices in name order, endpoints in
/// slice order). kube-proxy (`addEndpoints` in
/// `pkg/proxy/endpointslicecache.go`) lets a copy that is not terminating
/// replace what it met before, so a running pod wins over a terminating
/// one that had its IP. Which of two non-terminating (or two terminating)
/// copies wins depends on Go map order there; here the copy with the
/// better conditions (ready, then serving) wins, then the first met.
pub(super) fn pick_copy(old: &EpInfo, new: &EpInfo) -> bool {
    let rank = |e: &EpInfo| (!e.terminating, e.ready, e.serving);
    rank(new) > rank(old)
}

/// Parses an IPv4 address the way kube-proxy does (`ParseIPSloppy`):
/// octets with leading zeros are read as decimal, as Go's parser did before
/// 1.17 and as objects stored back then may hold.
pub(super) fn parse_ipv4_sloppy(s: &str) -> Option<Ipv4Addr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// A Service address (ClusterIP, externalIP, ingress IP) as kube-proxy
/// reads one: IPv4 (sloppily), IPv6, or none.
enum ParsedAddr {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    Bad,
}

fn parse_service_addr(s: &str) -> ParsedAddr {
    if let Some(v4) = parse_ipv4_sloppy(s) {
        return ParsedAddr::V4(v4);
    }
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => ParsedAddr::V4(v4),
        Ok(IpAddr::V6(v6)) => ParsedAddr::V6(v6),
        Err(_) => ParsedAddr::Bad,
    }
}

/// An address family: an EndpointSlice's `addressType`, a ClusterIP's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Family {
    #[default]
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// Why kube-proxy would not see an object: it watches Services and
/// EndpointSlices with the label selector
/// `!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless`
/// (`cmd/kube-proxy/app/server.go`). Returns the label found.
pub(super) fn not_for_kube_proxy(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<&'static str> {
    let labels = meta.labels.as_ref()?;
    [SERVICE_PROXY_NAME_LABEL, HEADLESS_LABEL]
        .into_iter()
        .find(|l| labels.contains_key(*l))
}

/// One usable slice: its family, its ports (name, proto) → number, and
/// its endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SliceInfo {
    /// `addressType`: its endpoints serve the ClusterIPs of this family.
    pub(super) family: Family,
    /// (name, protocol) → port number, sorted, unique (a slice has few).
    pub(super) ports: Vec<((String, Proto), u16)>,
    pub(super) endpoints: Vec<EpInfo>,
}

pub(super) fn build_nodes<'a>(
    m: &mut Model,
    nodes: impl IntoIterator<Item = &'a Node>,
    skipped: &mut Vec<Skipped>,
) {
    for node in nodes {
        let r = obj_ref(&node.metadata);
        if r.name.is_empty() {
            skip(
                skipped,
                "Node",
                &r,
                "no_name",
                "Node without metadata.name".into(),
            );
            continue;
        }
        let internal = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|addrs| {
                addrs
                    .iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
            });
        let Some(ip) = internal else {
            skip(
                skipped,
                "Node",
                &r,
                "no_internal_ip",
                "Node has no IPv4 InternalIP address".into(),
            );
            continue;
        };
        m.node_ips.insert(r.name.clone(), ip);
        if let Some(zone) = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ZONE_LABEL))
            .filter(|z| !z.is_empty())
        {
            m.node_zones.insert(ip, zone.clone());
        }
        let spec = node.spec.as_ref();
        let mut cidrs: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        if cidrs.is_empty() {
            cidrs.extend(spec.and_then(|s| s.pod_cidr.clone()));
        }
        for c in cidrs {
            match c.parse::<IpPrefix>() {
                Ok(IpPrefix::V4(p)) => {
                    m.pod_nodes.insert(p, ip);
                }
                // An IPv6 pod CIDR: its pods are reached over the IPv4
                // underlay, at the node's InternalIP.
                Ok(IpPrefix::V6(p)) => {
                    m.pod_nodes_v6.insert(p, ip);
                }
                Err(e) => skip(skipped, "Node", &r, "bad_pod_cidr", e),
            }
        }
    }
}

/// The union of the `spec.cidrs` of `cidrs`, IPv4 and IPv6, and what could
/// not be read. Filtered by kube-proxy's label selector like Services, as
/// kube-proxy's one informer factory does.
pub(super) fn service_cidrs<'a>(
    cidrs: impl IntoIterator<Item = &'a ServiceCIDR>,
) -> (BTreeSet<IpPrefix>, Vec<Skipped>) {
    let mut set = BTreeSet::new();
    let mut skipped = Vec::new();
    for c in cidrs {
        if not_for_kube_proxy(&c.metadata).is_some() {
            continue;
        }
        let r = obj_ref(&c.metadata);
        for cidr in c.spec.iter().flat_map(|s| s.cidrs.iter().flatten()) {
            match cidr.parse::<IpPrefix>() {
                Ok(p) => {
                    set.insert(p);
                }
                Err(e) => skip(&mut skipped, "ServiceCIDR", &r, "bad_cidr", e),
            }
        }
    }
    skipped.sort();
    skipped.dedup();
    (set, skipped)
}

/// A protocol as written (nil = TCP, the API server's default), or the
/// protocol name when the data path has none for it.
fn parse_proto(p: Option<&String>) -> Result<Proto, String> {
    match p.map(String::as_str).unwrap_or("TCP") {
        "TCP" => Ok(Proto::Tcp),
        "UDP" => Ok(Proto::Udp),
        other => Err(other.to_string()),
    }
}

/// Kubernetes' SCTP: valid in the API, but neither the node programs nor
/// the switch parse it (they parse TCP and UDP only), so its ports are
/// refused and reported rather than silently programmed to drop.
const SCTP: &str = "SCTP";

/// Evaluates one slice against the nodes of `m`.
pub(super) fn eval_slice(m: &Model, s: &EndpointSlice) -> (ObjectRef, SliceEntry) {
    let r = obj_ref(&s.metadata);
    let mut skipped = Vec::new();
    let (service, info) = match eval_slice_info(m, s, &r, &mut skipped) {
        Some((svc, info)) => (Some(svc), info),
        None => (None, SliceInfo::default()),
    };
    (
        r,
        SliceEntry {
            service,
            info,
            skipped,
        },
    )
}

fn eval_slice_info(
    m: &Model,
    s: &EndpointSlice,
    r: &ObjectRef,
    skipped: &mut Vec<Skipped>,
) -> Option<(ObjectRef, SliceInfo)> {
    if not_for_kube_proxy(&s.metadata).is_some() {
        // Left to another proxy, or a headless Service's: not ours.
        return None;
    }
    let family = match s.address_type.as_str() {
        "IPv4" => Family::V4,
        "IPv6" => Family::V6,
        other => {
            skip(
                skipped,
                "EndpointSlice",
                r,
                "unsupported_address_type",
                format!("addressType {other} has no data path (IPv4 and IPv6 only)"),
            );
            return None;
        }
    };
    let Some(svc_name) = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|n| !n.is_empty())
    else {
        skip(
            skipped,
            "EndpointSlice",
            r,
            "no_service_label",
            format!("no {SERVICE_NAME_LABEL} label"),
        );
        return None;
    };
    let mut ports = BTreeMap::new();
    for p in s.ports.iter().flatten() {
        let proto = match parse_proto(p.protocol.as_ref()) {
            Ok(pr) => pr,
            // The Service's SCTP port is refused and reported; its slice
            // ports need no second report.
            Err(other) if other == SCTP => continue,
            Err(other) => {
                skip(
                    skipped,
                    "EndpointSlice",
                    r,
                    "unsupported_protocol",
                    format!("port {:?}: protocol {other} not load-balanced", p.name),
                );
                continue;
            }
        };
        match p.port.map(u16::try_from) {
            Some(Ok(n)) if n != 0 => {
                ports.insert((p.name.clone().unwrap_or_default(), proto), n);
            }
            _ => skip(
                skipped,
                "EndpointSlice",
                r,
                "bad_port",
                format!("port {:?} has no valid number", p.name),
            ),
        }
    }
    let mut endpoints = Vec::new();
    for ep in &s.endpoints {
        // kube-proxy uses addresses[0] only (the API allows exactly one
        // today; more were meant for dual-address endpoints).
        let Some(a) = ep.addresses.first() else {
            skip(
                skipped,
                "EndpointSlice",
                r,
                "no_address",
                "endpoint without addresses".into(),
            );
            continue;
        };
        let ip = match family {
            Family::V4 => parse_ipv4_sloppy(a).map(IpAddr::V4),
            Family::V6 => a.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        };
        let Some(ip) = ip else {
            skip(
                skipped,
                "EndpointSlice",
                r,
                "bad_address",
                format!("address {a:?} is not {}", family.name()),
            );
            continue;
        };
        let c = ep.conditions.as_ref();
        let info = EpInfo {
            ip,
            node_ip: Backend::NO_AGENT,
            home: None,
            ready: c.and_then(|c| c.ready).unwrap_or(true),
            serving: c.and_then(|c| c.serving).unwrap_or(true),
            terminating: c.and_then(|c| c.terminating).unwrap_or(false),
            zones: hint_names(ep.hints.as_ref().and_then(|h| h.for_zones.as_ref()), |z| {
                &z.name
            }),
            nodes: hint_names(ep.hints.as_ref().and_then(|h| h.for_nodes.as_ref()), |n| {
                &n.name
            }),
        };
        // The address decides where packets go; nodeName only where it
        // runs (a hostNetwork pod is at its node's address, not in a pod
        // CIDR, and no agent there can deliver to it).
        let pod_node = match ip {
            IpAddr::V4(ip) => m
                .pod_nodes
                .iter()
                .filter(|(p, _)| p.contains(ip))
                .max_by_key(|(p, _)| p.len)
                .map(|(_, n)| *n),
            IpAddr::V6(ip) => m
                .pod_nodes_v6
                .iter()
                .filter(|(p, _)| p.contains(ip))
                .max_by_key(|(p, _)| p.len)
                .map(|(_, n)| *n),
        };
        if ip.is_ipv6() && pod_node.is_none() {
            // The switch delivers endpoints without an agent plain, and
            // tunnels their replies back (`endpoint_reply`): IPv4 only.
            skip(
                skipped,
                "EndpointSlice",
                r,
                "ipv6_without_agent",
                format!(
                    "IPv6 address {ip} is in no node's IPv6 pod CIDR: IPv6 endpoints \
                     without an agent are not served"
                ),
            );
            continue;
        }
        let home = ep
            .node_name
            .as_ref()
            .and_then(|n| m.node_ips.get(n).copied())
            .or(pod_node);
        let node_ip = pod_node.unwrap_or(Backend::NO_AGENT);
        endpoints.push(EpInfo {
            node_ip,
            home,
            ..info
        });
    }
    Some((
        ObjectRef {
            namespace: r.namespace.clone(),
            name: svc_name.clone(),
        },
        SliceInfo {
            family,
            ports: ports.into_iter().collect(),
            endpoints,
        },
    ))
}

/// The names a `hints.forZones` or `hints.forNodes` list gives.
fn hint_names<T>(hints: Option<&Vec<T>>, name: fn(&T) -> &String) -> Vec<String> {
    hints
        .into_iter()
        .flatten()
        .map(|h| name(h).clone())
        .collect()
}

/// Evaluates one Service with the slices labelled for it: its view (absent
/// when the Service is unusable) and the data-path ports it asks for.
/// The addresses outside the cluster that a Service is reached at, which
/// the switch balances as it does the ClusterIPs (docs/design.md,
/// "External clients"): `spec.externalIPs`, for any type, as kube-proxy
/// does; for a LoadBalancer, `status.loadBalancer.ingress[].ip`, unless
/// its `ipMode` is `Proxy` (the load balancer terminates the connection
/// and kube-proxy leaves the address to it). Each once, and not a
/// ClusterIP of its own. What is not served gets a note: hostnames, IPv6,
/// and the ingress IPs of a Service with `loadBalancerSourceRanges`, which
/// the switch cannot enforce yet (serving them would open what the
/// operator closed).
fn external_addresses(
    svc: &Service,
    service_type: &str,
    view: &mut ServiceView,
    skipped: &mut Vec<Skipped>,
) -> Vec<Ipv4Addr> {
    let spec = svc.spec.as_ref();
    let mut wanted: Vec<(&str, &str)> = spec
        .and_then(|s| s.external_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|ip| ("externalIP", ip.as_str()))
        .collect();
    if service_type == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .into_iter()
            .flatten();
        let restricted = spec
            .and_then(|s| s.load_balancer_source_ranges.as_ref())
            .is_some_and(|r| !r.is_empty());
        let mut any = false;
        for i in ingress {
            any = true;
            match (&i.ip, &i.hostname) {
                (Some(ip), _) if i.ip_mode.as_deref() == Some("Proxy") => view.notes.push(format!(
                    "LoadBalancer ingress {ip}: ipMode Proxy, left to the load balancer (as kube-proxy)"
                )),
                (Some(ip), _) if restricted => view.notes.push(format!(
                    "LoadBalancer ingress {ip}: not served, loadBalancerSourceRanges are not \
                     enforced by the switch yet"
                )),
                (Some(ip), _) => wanted.push(("LoadBalancer ingress", ip)),
                (None, Some(host)) => view.notes.push(format!(
                    "LoadBalancer ingress hostname {host}: no address to serve"
                )),
                (None, None) => {}
            }
        }
        if !any {
            view.notes
                .push("LoadBalancer: no ingress assigned yet".into());
        }
    }
    let r = &view.service;
    let mut served = Vec::new();
    for (what, ip) in wanted {
        let addr = match parse_service_addr(ip) {
            ParsedAddr::V4(v4) => Some(v4),
            ParsedAddr::V6(_) => {
                view.notes
                    .push(format!("{what} {ip}: IPv6, not in data path yet"));
                None
            }
            ParsedAddr::Bad => {
                skip(
                    skipped,
                    "Service",
                    r,
                    "bad_external_ip",
                    format!("{what} {ip:?} unparseable"),
                );
                None
            }
        };
        if let Some(a) =
            addr.filter(|a| !view.cluster_ips.contains(&IpAddr::V4(*a)) && !served.contains(a))
        {
            served.push(a);
        }
    }
    served
}

/// What of a Service with an IPv6 ClusterIP the switch does not serve,
/// noted (and skipped where the input is inconsistent):
/// - a ClusterIP whose family no EndpointSlice of the Service has, while
///   the other family's do (it gets no endpoints: kube-proxy's proxier of
///   its family sees none either);
/// - nodePorts and external addresses of an IPv6-only Service (kube-proxy's
///   IPv4 proxier ignores a Service without an IPv4 ClusterIP, and the
///   switch serves neither IPv6 nodePorts nor IPv6 external addresses);
/// - the IPv6 half of a dual-stack Service's nodePorts (served at the
///   nodes' IPv4 InternalIPs only).
fn ipv6_limits(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    service_type: &str,
    my_slices: &[SliceInfo],
    view: &mut ServiceView,
    skipped: &mut Vec<Skipped>,
) {
    for ip in view.cluster_ips.clone() {
        let family = Family::of(ip);
        let (mine, other) = my_slices
            .iter()
            .fold((0, 0), |(m, o), s| match s.family == family {
                true => (m + 1, o),
                false => (m, o + 1),
            });
        if mine == 0 && other > 0 {
            let other = match family {
                Family::V4 => Family::V6,
                Family::V6 => Family::V4,
            };
            let detail = format!(
                "{} ClusterIP {ip} has only {} EndpointSlices: no endpoints",
                family.name(),
                other.name()
            );
            skip(
                skipped,
                "Service",
                &view.service,
                "endpoint_family_mismatch",
                detail.clone(),
            );
            view.notes.push(detail);
        }
    }
    if !view.cluster_ips.iter().any(|ip| ip.is_ipv6()) {
        return;
    }
    let node_ports = spec
        .ports
        .iter()
        .flatten()
        .any(|p| node_port_of(p, service_type).is_some());
    if !view.cluster_ips.iter().any(|ip| ip.is_ipv4()) {
        if node_ports || !view.external_ips.is_empty() {
            view.notes.push(
                "IPv6-only Service: its nodePorts and external addresses are not served \
                 (no IPv6 nodePorts or external addresses yet)"
                    .into(),
            );
        }
        view.external_ips.clear();
    } else if node_ports {
        view.notes.push(
            "nodePorts: served at the nodes' IPv4 InternalIPs only (no IPv6 nodePorts yet)".into(),
        );
    }
}

pub(super) fn eval_service(
    nodes: &NodeTopology<'_>,
    svc: &Service,
    my_slices: &[SliceInfo],
) -> (Option<ServiceView>, ServiceEntry) {
    let mut e = ServiceEntry::default();
    let view = eval_service_into(nodes, svc, my_slices, &mut e);
    (view, e)
}

/// What topology hints name: every node's name, address and zone.
pub(super) struct NodeTopology<'a> {
    /// Node name → InternalIP.
    pub(super) ips: &'a BTreeMap<String, Ipv4Addr>,
    /// Node InternalIP → its zone.
    pub(super) zones: &'a BTreeMap<Ipv4Addr, String>,
}

/// kube-proxy's health check of a Service that needs one (`LoadBalancer`,
/// `externalTrafficPolicy: Local`, a `healthCheckNodePort`): each node's
/// ready endpoints, by address (`LocalReadyEndpoints`: an endpoint listed
/// for two ports counts once; terminating ones do not count, so a node
/// with only those fails the check).
fn health_check(svc: &Service, my_slices: &[SliceInfo]) -> Option<HealthCheckView> {
    let spec = svc.spec.as_ref()?;
    let wanted = spec.type_.as_deref() == Some("LoadBalancer")
        && spec.external_traffic_policy.as_deref() == Some("Local");
    let node_port = u16::try_from(spec.health_check_node_port?)
        .ok()
        .filter(|p| *p > 0 && wanted)?;
    let mut by_node: BTreeMap<Ipv4Addr, BTreeSet<IpAddr>> = BTreeMap::new();
    // Load balancers reach nodes over IPv4, the only family whose
    // nodePorts and external addresses the switch serves: IPv6 endpoints
    // are not counted (a dual-stack pod would count twice).
    let v4 = my_slices.iter().filter(|s| s.family == Family::V4);
    for ep in v4.flat_map(|s| &s.endpoints) {
        if let Some(home) = ep.home.filter(|_| ep.is_ready()) {
            by_node.entry(home).or_default().insert(ep.ip);
        }
    }
    Some(HealthCheckView {
        node_port,
        local_endpoints: by_node.into_iter().map(|(n, ips)| (n, ips.len())).collect(),
    })
}

/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset, and its
/// largest valid value (the API server's defaults and validation).
const DEFAULT_AFFINITY_TIMEOUT_SECS: u32 = 10_800;
const MAX_AFFINITY_TIMEOUT_SECS: i32 = 86_400;

/// A node's label naming its zone, which topology hints refer to.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The annotation that asks for topology-aware routing (`Auto`), and its
/// deprecated predecessor.
const TOPOLOGY_MODE_ANNOTATIONS: [&str; 2] = [
    "service.kubernetes.io/topology-mode",
    "service.kubernetes.io/topology-aware-hints",
];

/// Whether the Service asks for its endpoints' hints to be used
/// (kube-proxy's `canUseTopology`, the Service half): a
/// `trafficDistribution` that prefers closeness, or the topology-mode
/// annotation set to Auto.
fn wants_topology(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    if matches!(
        spec.and_then(|s| s.traffic_distribution.as_deref()),
        Some("PreferClose" | "PreferSameZone" | "PreferSameNode")
    ) {
        return true;
    }
    let annotations = svc.metadata.annotations.as_ref();
    TOPOLOGY_MODE_ANNOTATIONS.iter().any(|a| {
        annotations
            .and_then(|m| m.get(*a))
            .is_some_and(|v| v.eq_ignore_ascii_case("auto"))
    })
}

/// `internalTrafficPolicy: Local`: each node's own endpoints, ready ones,
/// else its serving-terminating ones (kube-proxy's `CategorizeEndpoints`).
fn local_endpoints(
    ready: &[(Backend, &EpInfo)],
    serving_terminating: &[(Backend, &EpInfo)],
) -> BTreeMap<Ipv4Addr, BTreeSet<Backend>> {
    let homes: BTreeSet<Ipv4Addr> = ready
        .iter()
        .chain(serving_terminating)
        .filter_map(|(_, ep)| ep.home)
        .collect();
    homes
        .into_iter()
        .map(|node| {
            let (r, s) = (on(ready, node), on(serving_terminating, node));
            (node, Endpoints::of(&r, &s, &[]).active)
        })
        .collect()
}

/// Topology hints, per node (kube-proxy's `topologyModeFromHints` and
/// `availableForTopology`): when every ready endpoint carries `forNodes`
/// hints and some name the node, the endpoints hinted for it
/// (`PreferSameNode`); else, when every ready endpoint carries `forZones`
/// hints and some name the node's zone, those; else nothing: the node uses
/// every endpoint.
fn topology_endpoints(
    nodes: &NodeTopology<'_>,
    ready: &[(Backend, &EpInfo)],
) -> BTreeMap<Ipv4Addr, BTreeSet<Backend>> {
    let all_hinted =
        |hints: fn(&EpInfo) -> &Vec<String>| ready.iter().all(|(_, ep)| !hints(ep).is_empty());
    let by_node = all_hinted(|ep| &ep.nodes);
    let by_zone = all_hinted(|ep| &ep.zones);
    let hinted_for = |hints: fn(&EpInfo) -> &Vec<String>, name: &String| -> BTreeSet<Backend> {
        ready
            .iter()
            .filter(|(_, ep)| hints(ep).contains(name))
            .map(|(b, _)| *b)
            .collect()
    };
    nodes
        .ips
        .iter()
        .filter_map(|(name, ip)| {
            let mut eps = BTreeSet::new();
            if by_node {
                eps = hinted_for(|ep| &ep.nodes, name);
            }
            if eps.is_empty() && by_zone {
                if let Some(zone) = nodes.zones.get(ip) {
                    eps = hinted_for(|ep| &ep.zones, zone);
                }
            }
            (!eps.is_empty()).then_some((*ip, eps))
        })
        .collect()
}

/// A port's endpoints as the switch uses them.
#[derive(Debug, Clone)]
struct Endpoints {
    /// Take new flows.
    active: BTreeSet<Backend>,
    /// Keep established flows only.
    draining: BTreeSet<Backend>,
    /// `active` are serving-terminating endpoints, for want of ready ones.
    fallback: bool,
}

impl Endpoints {
    /// kube-proxy's choice: the ready endpoints take new flows, or, when
    /// none is ready, the serving-terminating ones. Serving-terminating
    /// endpoints that do not take new flows keep their established ones,
    /// and so do the `keep` ones.
    fn of(
        ready: &[(Backend, &EpInfo)],
        serving_terminating: &[(Backend, &EpInfo)],
        keep: &[(Backend, &EpInfo)],
    ) -> Endpoints {
        let set = |eps: &[(Backend, &EpInfo)]| eps.iter().map(|(b, _)| *b).collect::<BTreeSet<_>>();
        let (active, mut draining, fallback) = if ready.is_empty() {
            (set(serving_terminating), BTreeSet::new(), true)
        } else {
            (set(ready), set(serving_terminating), false)
        };
        draining.extend(set(keep));
        Endpoints {
            active,
            draining,
            fallback,
        }
    }
}

/// The endpoints that run on `node`.
fn on<'a>(eps: &[(Backend, &'a EpInfo)], node: Ipv4Addr) -> Vec<(Backend, &'a EpInfo)> {
    eps.iter()
        .filter(|(_, ep)| ep.home == Some(node))
        .copied()
        .collect()
}

/// The nodePort a Service port is served on at every node's address
/// (NodePort and LoadBalancer Services; a LoadBalancer may have none,
/// `allocateLoadBalancerNodePorts: false`).
fn node_port_of(p: &k8s_openapi::api::core::v1::ServicePort, service_type: &str) -> Option<u16> {
    if !matches!(service_type, "NodePort" | "LoadBalancer") {
        return None;
    }
    u16::try_from(p.node_port?).ok().filter(|n| *n != 0)
}

fn eval_service_into(
    nodes: &NodeTopology<'_>,
    svc: &Service,
    my_slices: &[SliceInfo],
    e: &mut ServiceEntry,
) -> Option<ServiceView> {
    let r = obj_ref(&svc.metadata);
    if r.name.is_empty() || r.namespace.is_empty() {
        skip(
            &mut e.skipped,
            "Service",
            &r,
            "no_name",
            "Service without name or namespace".into(),
        );
        return None;
    }
    if not_for_kube_proxy(&svc.metadata).is_some() {
        // Another proxy's (kube-proxy never sees it): no view, no skip.
        return None;
    }
    let Some(spec) = svc.spec.as_ref() else {
        skip(
            &mut e.skipped,
            "Service",
            &r,
            "no_spec",
            "Service without spec".into(),
        );
        return None;
    };
    let service_type = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    let mut view = ServiceView {
        service: r.clone(),
        service_type: service_type.clone(),
        cluster_ips: Vec::new(),
        external_ips: Vec::new(),
        headless: false,
        selectorless: spec.selector.as_ref().is_none_or(|s| s.is_empty()),
        ports: Vec::new(),
        keys: Vec::new(),
        notes: Vec::new(),
        health_check: None,
    };
    for p in spec.ports.iter().flatten() {
        view.ports.push(PortView {
            name: p.name.clone().unwrap_or_default(),
            port: u16::try_from(p.port).unwrap_or(0),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            target_port: match &p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i)) => {
                    i.to_string()
                }
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => {
                    s.clone()
                }
                None => p.port.to_string(),
            },
            node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
        });
    }
    if service_type == "ExternalName" {
        view.notes
            .push("ExternalName: resolved by DNS, nothing to program (as kube-proxy)".into());
        return Some(view);
    }
    view.health_check = health_check(svc, my_slices);
    // ClusterIPs: spec.clusterIPs, else spec.clusterIP.
    let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if ips.is_empty() {
        ips.extend(spec.cluster_ip.clone());
    }
    if ips.iter().any(|i| i == "None") {
        view.headless = true;
        view.notes.push(
            "headless: no ClusterIP, clients use endpoint IPs directly (as kube-proxy)".into(),
        );
        return Some(view);
    }
    if ips.is_empty() {
        skip(
            &mut e.skipped,
            "Service",
            &r,
            "no_cluster_ip",
            "ClusterIP not allocated yet".into(),
        );
        view.notes.push("no ClusterIP allocated yet".into());
        return Some(view);
    }
    for ip in &ips {
        match parse_service_addr(ip) {
            ParsedAddr::V4(v4) => view.cluster_ips.push(v4.into()),
            ParsedAddr::V6(v6) => view.cluster_ips.push(v6.into()),
            ParsedAddr::Bad => skip(
                &mut e.skipped,
                "Service",
                &r,
                "bad_cluster_ip",
                format!("clusterIP {ip:?} unparseable"),
            ),
        }
    }
    if !matches!(
        service_type.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer"
    ) {
        skip(
            &mut e.skipped,
            "Service",
            &r,
            "unsupported_type",
            format!("spec.type {service_type:?} unknown"),
        );
        view.notes.push(format!("unknown type {service_type}"));
        return Some(view);
    }
    view.external_ips = external_addresses(svc, &service_type, &mut view, &mut e.skipped);
    ipv6_limits(spec, &service_type, my_slices, &mut view, &mut e.skipped);
    let local_only = spec.internal_traffic_policy.as_deref() == Some("Local");
    // At a node's address only: the switch balances the other external
    // addresses itself, for every endpoint.
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let topology = !local_only && wants_topology(svc);
    let hash_mode = match spec.session_affinity.as_deref() {
        Some("ClientIP") => HashMode::ClientIp,
        None | Some("None") => HashMode::FiveTuple,
        Some(other) => {
            view.notes
                .push(format!("sessionAffinity {other} unknown, using None"));
            HashMode::FiveTuple
        }
    };
    let affinity_timeout_secs = (hash_mode == HashMode::ClientIp).then(|| {
        let timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds);
        match timeout {
            None => DEFAULT_AFFINITY_TIMEOUT_SECS,
            Some(t @ 1..=MAX_AFFINITY_TIMEOUT_SECS) => t as u32,
            Some(t) => {
                view.notes.push(format!(
                    "sessionAffinityConfig.clientIP.timeoutSeconds {t} out of range, \
                     using {DEFAULT_AFFINITY_TIMEOUT_SECS}"
                ));
                DEFAULT_AFFINITY_TIMEOUT_SECS
            }
        }
    });

    for p in spec.ports.iter().flatten() {
        let pname = p.name.clone().unwrap_or_default();
        let proto = match parse_proto(p.protocol.as_ref()) {
            Ok(pr) => pr,
            Err(other) => {
                let why = if other == SCTP {
                    "SCTP has no data path (node and switch parse TCP and UDP only)"
                } else {
                    "protocol not load-balanced"
                };
                skip(
                    &mut e.skipped,
                    "Service",
                    &r,
                    "unsupported_protocol",
                    format!("port {pname:?} {}/{other}: {why}", p.port),
                );
                view.notes
                    .push(format!("port {}/{other} refused: {why}", p.port));
                e.unsupported.push(other);
                continue;
            }
        };
        let port = match u16::try_from(p.port) {
            Ok(n) if n != 0 => n,
            _ => {
                skip(
                    &mut e.skipped,
                    "Service",
                    &r,
                    "bad_port",
                    format!("port {} out of range", p.port),
                );
                continue;
            }
        };
        // Gather endpoints for this port from all slices with a matching
        // (name, protocol) port, one copy per ip:port (`pick_copy`).
        let wanted = (pname.clone(), proto);
        let mut copies: BTreeMap<(IpAddr, u16), &EpInfo> = BTreeMap::new();
        for s in my_slices {
            let Ok(i) = s.ports.binary_search_by(|(k, _)| k.cmp(&wanted)) else {
                continue;
            };
            let target = s.ports[i].1;
            for ep in &s.endpoints {
                copies
                    .entry((ep.ip, target))
                    .and_modify(|old| {
                        if pick_copy(old, ep) {
                            *old = ep;
                        }
                    })
                    .or_insert(ep);
            }
        }
        // Each ClusterIP from the endpoints of its family, as kube-proxy's
        // per-family proxiers do; nodePorts and external addresses (IPv4)
        // from the IPv4 ones.
        for family in [Family::V4, Family::V6] {
            let vips: Vec<IpAddr> = view
                .cluster_ips
                .iter()
                .copied()
                .filter(|ip| Family::of(*ip) == family)
                .collect();
            if vips.is_empty() {
                continue;
            }
            let mut ready = Vec::new();
            let mut st = Vec::new();
            let mut unready = Vec::new();
            for ((ip, target), ep) in &copies {
                if Family::of(*ip) != family {
                    continue;
                }
                let b = Backend {
                    ip: *ip,
                    port: *target,
                    node_ip: ep.node_ip,
                };
                if ep.is_ready() {
                    ready.push((b, *ep));
                } else if ep.is_serving_terminating() {
                    st.push((b, *ep));
                } else {
                    unready.push((b, *ep));
                }
            }
            let preferred = if local_only {
                local_endpoints(&ready, &st)
            } else if topology {
                topology_endpoints(nodes, &ready)
            } else {
                BTreeMap::new()
            };
            // A not-ready endpoint takes no new flows but keeps its
            // established TCP ones (kube-proxy leaves their conntrack
            // entries alone): its cookie stays valid for as long as the
            // endpoint exists. UDP flows move at once: kube-proxy deletes
            // the UDP conntrack entries of every endpoint that is not
            // serving.
            if proto == Proto::Udp {
                unready.clear();
            }
            let all = Endpoints::of(&ready, &st, &unready);
            // `externalTrafficPolicy: Local`, at a node's address: that
            // node's endpoints only, and none where it has none.
            let on_node = |node: Ipv4Addr| {
                let (r, s, u) = (on(&ready, node), on(&st, node), on(&unready, node));
                Endpoints::of(&r, &s, &u)
            };
            let mut add = |key: ServiceKey, frontend: Frontend, eps: Endpoints| {
                let per_client_node = !frontend.is_outside();
                e.candidates.push(ServicePort {
                    service: r.clone(),
                    port_name: pname.clone(),
                    key,
                    frontend,
                    hash_mode,
                    affinity_timeout_secs,
                    terminating_fallback: eps.fallback && !eps.active.is_empty(),
                    active: eps.active,
                    draining: eps.draining,
                    preferred: if per_client_node {
                        preferred.clone()
                    } else {
                        BTreeMap::new()
                    },
                    local_only: local_only && per_client_node,
                });
            };
            let key = |vip: IpAddr, port: u16| ServiceKey { vip, port, proto };
            for vip in vips {
                add(key(vip, port), Frontend::ClusterIp, all.clone());
            }
            if family != Family::V4 {
                continue;
            }
            if let Some(node_port) = node_port_of(p, &service_type) {
                for node_ip in nodes.ips.values() {
                    let eps = if external_local {
                        on_node(*node_ip)
                    } else {
                        all.clone()
                    };
                    add(key((*node_ip).into(), node_port), Frontend::NodePort, eps);
                }
            }
            for vip in &view.external_ips {
                add(key((*vip).into(), port), Frontend::External, all.clone());
            }
        }
    }
    Some(view)
}
