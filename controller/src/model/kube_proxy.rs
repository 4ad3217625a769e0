//! kube-proxy's reading of Services, EndpointSlices and Nodes: which
//! endpoints serve which Service port, under which conditions
//! (`pkg/proxy/endpointslicecache.go` and the proxiers in
//! kubernetes/kubernetes). Pure functions of one object and the nodes.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};

use super::{
    index::{ServiceEntry, SliceEntry},
    obj_ref, skip, Model, ObjectRef, PortView, ServicePort, ServiceView, Skipped,
    SERVICE_NAME_LABEL,
};
use crate::types::{Backend, HashMode, Ipv4Prefix, Proto, ServiceKey};

/// Endpoint after condition evaluation, before the per-port join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EpInfo {
    pub(super) ip: Ipv4Addr,
    pub(super) node_ip: Ipv4Addr,
    pub(super) ready: bool,
    pub(super) serving_terminating: bool,
}

/// One usable slice: its ports (name, proto) → number, and its endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SliceInfo {
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
        let spec = node.spec.as_ref();
        let mut cidrs: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        if cidrs.is_empty() {
            cidrs.extend(spec.and_then(|s| s.pod_cidr.clone()));
        }
        for c in cidrs {
            if c.contains(':') {
                continue; // IPv6 pod CIDR: no IPv6 data path.
            }
            match c.parse::<Ipv4Prefix>() {
                Ok(p) => {
                    m.pod_nodes.insert(p, ip);
                }
                Err(e) => skip(skipped, "Node", &r, "bad_pod_cidr", e),
            }
        }
    }
}

fn parse_proto(p: Option<&String>) -> Result<Proto, String> {
    match p.map(String::as_str).unwrap_or("TCP") {
        "TCP" => Ok(Proto::Tcp),
        "UDP" => Ok(Proto::Udp),
        other => Err(other.to_string()),
    }
}

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
    if s.address_type != "IPv4" {
        skip(
            skipped,
            "EndpointSlice",
            r,
            "unsupported_address_type",
            format!(
                "addressType {} has no data path (IPv4 only)",
                s.address_type
            ),
        );
        return None;
    }
    let Some(svc_name) = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
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
        let c = ep.conditions.as_ref();
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        let serving = c.and_then(|c| c.serving).unwrap_or(true);
        let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
        for a in &ep.addresses {
            let Ok(ip) = a.parse::<Ipv4Addr>() else {
                skip(
                    skipped,
                    "EndpointSlice",
                    r,
                    "bad_address",
                    format!("address {a:?} is not IPv4"),
                );
                continue;
            };
            let node_ip = ep
                .node_name
                .as_ref()
                .and_then(|n| m.node_ips.get(n).copied())
                .or_else(|| {
                    m.pod_nodes
                        .iter()
                        .filter(|(p, _)| p.contains(ip))
                        .max_by_key(|(p, _)| p.len)
                        .map(|(_, n)| *n)
                });
            let Some(node_ip) = node_ip else {
                skip(
                    skipped,
                    "EndpointSlice",
                    r,
                    "unknown_node",
                    format!(
                        "endpoint {ip}: node {:?} unknown and no pod CIDR contains it",
                        ep.node_name
                    ),
                );
                continue;
            };
            endpoints.push(EpInfo {
                ip,
                node_ip,
                ready,
                serving_terminating: serving && terminating,
            });
        }
    }
    Some((
        ObjectRef {
            namespace: r.namespace.clone(),
            name: svc_name.clone(),
        },
        SliceInfo {
            ports: ports.into_iter().collect(),
            endpoints,
        },
    ))
}

/// Evaluates one Service with the slices labelled for it: its view (absent
/// when the Service is unusable) and the data-path ports it asks for.
pub(super) fn eval_service(
    svc: &Service,
    my_slices: &[SliceInfo],
) -> (Option<ServiceView>, ServiceEntry) {
    let mut e = ServiceEntry::default();
    let view = eval_service_into(svc, my_slices, &mut e);
    (view, e)
}

fn eval_service_into(
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
        headless: false,
        selectorless: spec.selector.as_ref().is_none_or(|s| s.is_empty()),
        ports: Vec::new(),
        keys: Vec::new(),
        notes: Vec::new(),
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
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => view.cluster_ips.push(v4),
            Ok(IpAddr::V6(_)) => view.notes.push(format!(
                "IPv6 ClusterIP {ip}: not in data path yet (IPv4 only)"
            )),
            Err(_) => skip(
                &mut e.skipped,
                "Service",
                &r,
                "bad_cluster_ip",
                format!("clusterIP {ip:?} unparseable"),
            ),
        }
    }
    // Modelled but not in the data path yet.
    if matches!(service_type.as_str(), "NodePort" | "LoadBalancer") {
        for p in spec.ports.iter().flatten() {
            if let Some(np) = p.node_port {
                view.notes.push(format!(
                    "nodePort {np} (port {}): not in data path yet",
                    p.port
                ));
            }
        }
    }
    if service_type == "LoadBalancer" {
        let ingress: Vec<String> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .map(|i| {
                i.iter()
                    .filter_map(|x| x.ip.clone().or(x.hostname.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if ingress.is_empty() {
            view.notes
                .push("LoadBalancer: no ingress assigned; not in data path yet".into());
        } else {
            view.notes.push(format!(
                "LoadBalancer ingress {}: not in data path yet",
                ingress.join(", ")
            ));
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
    for eip in spec.external_ips.iter().flatten() {
        view.notes
            .push(format!("externalIP {eip}: not in data path yet"));
    }
    if spec.internal_traffic_policy.as_deref() == Some("Local") {
        view.notes
            .push("internalTrafficPolicy Local: not in data path yet, served as Cluster".into());
    }
    let hash_mode = match spec.session_affinity.as_deref() {
        Some("ClientIP") => HashMode::ClientIp,
        None | Some("None") => HashMode::FiveTuple,
        Some(other) => {
            view.notes
                .push(format!("sessionAffinity {other} unknown, using None"));
            HashMode::FiveTuple
        }
    };
    if hash_mode == HashMode::ClientIp {
        view.notes.push(
            "sessionAffinity ClientIP: source-IP hash; timeoutSeconds not applied (stateless switch)"
                .into(),
        );
    }

    for p in spec.ports.iter().flatten() {
        let pname = p.name.clone().unwrap_or_default();
        let proto = match parse_proto(p.protocol.as_ref()) {
            Ok(pr) => pr,
            Err(other) => {
                skip(
                    &mut e.skipped,
                    "Service",
                    &r,
                    "unsupported_protocol",
                    format!("port {pname:?}: protocol {other} not load-balanced"),
                );
                view.notes.push(format!(
                    "port {} {other}: protocol not in data path",
                    p.port
                ));
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
        // (name, protocol) port.
        let mut ready = BTreeSet::new();
        let mut st = BTreeSet::new();
        let mut unready = BTreeSet::new();
        for s in my_slices {
            let wanted = (pname.clone(), proto);
            let Ok(i) = s.ports.binary_search_by(|(k, _)| k.cmp(&wanted)) else {
                continue;
            };
            let target = s.ports[i].1;
            for e in &s.endpoints {
                let b = Backend {
                    ip: e.ip,
                    port: target,
                    node_ip: e.node_ip,
                };
                if e.ready {
                    ready.insert(b);
                } else if e.serving_terminating {
                    st.insert(b);
                } else {
                    unready.insert(b);
                }
            }
        }
        // An address that is ready in one slice and terminating in another
        // counts as ready.
        st.retain(|b| !ready.contains(b));
        unready.retain(|b| !ready.contains(b) && !st.contains(b));
        let (active, mut draining, fallback) = if ready.is_empty() {
            (st, BTreeSet::new(), true)
        } else {
            (ready, st, false)
        };
        // A not-ready endpoint takes no new flows but keeps its established
        // TCP ones (kube-proxy leaves their conntrack entries alone): its
        // cookie stays valid for as long as the endpoint exists. UDP flows
        // move at once: kube-proxy deletes the UDP conntrack entries of
        // every endpoint that is not serving.
        if proto != Proto::Udp {
            draining.extend(unready);
        }
        for vip in &view.cluster_ips {
            let key = ServiceKey {
                vip: *vip,
                port,
                proto,
            };
            e.candidates.push(ServicePort {
                service: r.clone(),
                port_name: pname.clone(),
                key,
                hash_mode,
                active: active.clone(),
                draining: draining.clone(),
                terminating_fallback: fallback && !active.is_empty(),
            });
        }
    }
    Some(view)
}
