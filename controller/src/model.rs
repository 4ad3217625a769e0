//! The model: Services, EndpointSlices and Nodes → what the switch must do,
//! the way kube-proxy reads them. Pure: no I/O, no clock, no ids.
//!
//! kube-proxy semantics followed here:
//! - A Service owns the EndpointSlices labelled `kubernetes.io/service-name`
//!   with its name, in its namespace; this holds with or without a selector
//!   (selector-less Services get user-managed slices).
//! - A Service port is matched to an EndpointSlice port by **name** and
//!   protocol; the slice port carries the resolved target port number, which
//!   is how named targetPorts resolve.
//! - Conditions: `ready` nil = true, `serving` nil = true, `terminating`
//!   nil = false. Ready endpoints take new flows; if none is ready, the
//!   serving+terminating ones take new flows instead. Serving+terminating
//!   endpoints that do not take new flows keep established flows (cookies).
//! - Headless (`clusterIP: None`) and ExternalName Services get no data path,
//!   as in kube-proxy.
//! - NodePort, LoadBalancer ingress IPs, externalIPs, IPv6 ClusterIPs and
//!   internalTrafficPolicy Local are modelled and reported as notes, since
//!   the switch has no data path for them yet.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use serde::Serialize;

use crate::types::{Backend, HashMode, Ipv4Prefix, Proto, ServiceKey};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `namespace/name` of a Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    /// Namespace ("" for cluster-scoped objects).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One object (or part of one) the model could not use, with why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Skipped {
    /// `Service`, `EndpointSlice`, `Node`.
    pub kind: &'static str,
    /// Which object.
    pub object: ObjectRef,
    /// Short machine-friendly reason (metric label).
    pub reason: &'static str,
    /// Human detail for the log line.
    pub detail: String,
}

/// The load-balanced data path of one (ClusterIP, port, protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    /// The Service this port belongs to.
    pub service: ObjectRef,
    /// Service port name ("" when the Service has one unnamed port).
    pub port_name: String,
    /// Switch key.
    pub key: ServiceKey,
    /// sessionAffinity → hash mode.
    pub hash_mode: HashMode,
    /// Backends that take new flows (get buckets).
    pub active: BTreeSet<Backend>,
    /// Backends that only keep established flows (cookie_check, no buckets).
    pub draining: BTreeSet<Backend>,
    /// True when `active` is the serving+terminating fallback.
    pub terminating_fallback: bool,
}

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

/// Everything the model derives from the cluster objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Model {
    /// Data-path ports by switch key.
    pub ports: BTreeMap<ServiceKey, ServicePort>,
    /// Services by namespace/name, for REST and status.
    pub services: BTreeMap<ObjectRef, ServiceView>,
    /// pod CIDR → node InternalIP, for `pod_node`.
    pub pod_nodes: BTreeMap<Ipv4Prefix, Ipv4Addr>,
    /// Node name → InternalIP.
    pub node_ips: BTreeMap<String, Ipv4Addr>,
    /// Objects or parts skipped, with reasons (sorted, no duplicates).
    pub skipped: Vec<Skipped>,
    /// Per-object results that let one object's change be applied without
    /// rebuilding the rest.
    #[serde(skip)]
    index: Index,
}

/// A slice after evaluation: the Service it feeds (from its label) and
/// what it contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SliceEntry {
    /// The Service named by the `kubernetes.io/service-name` label.
    service: Option<ObjectRef>,
    /// Ports and endpoints (empty when skipped).
    info: SliceInfo,
    /// What was skipped in it.
    skipped: Vec<Skipped>,
}

/// A Service after evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ServiceEntry {
    /// Every data-path port it asks for, in spec order; it gets the keys it
    /// owns (see [`Index::claims`]).
    candidates: Vec<ServicePort>,
    /// What was skipped in it, apart from `duplicate_key`.
    skipped: Vec<Skipped>,
    /// `duplicate_key` skips from the last key resolution.
    duplicates: Vec<Skipped>,
}

/// The incremental side of the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Index {
    node_skipped: Vec<Skipped>,
    slices: BTreeMap<ObjectRef, SliceEntry>,
    /// Service → the slices labelled with its name.
    by_service: BTreeMap<ObjectRef, VecSet<ObjectRef>>,
    services: BTreeMap<ObjectRef, ServiceEntry>,
    /// Key → the Services asking for it. The smallest namespace/name owns
    /// it (independent of list order, so an incremental update resolves a
    /// conflict exactly as a full build does).
    claims: BTreeMap<ServiceKey, VecSet<ObjectRef>>,
}

/// A sorted set in one `Vec`. The index's sets nearly always hold one
/// element, where a `BTreeSet` allocates a node for eleven: at 10k
/// Services that is megabytes of empty slots.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VecSet<T>(Vec<T>);

impl<T> Default for VecSet<T> {
    fn default() -> Self {
        VecSet(Vec::new())
    }
}

impl<T: Ord> VecSet<T> {
    fn insert(&mut self, v: T) {
        if let Err(i) = self.0.binary_search(&v) {
            self.0.insert(i, v);
        }
    }
    fn remove(&mut self, v: &T) {
        if let Ok(i) = self.0.binary_search(v) {
            self.0.remove(i);
        }
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn first(&self) -> Option<&T> {
        self.0.first()
    }
}

impl<'a, T> IntoIterator for &'a VecSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Object changes for [`Model::apply`]: which objects to look up again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Everything may have changed (initial list, relist): rebuild.
    pub all: bool,
    /// A Node changed (node addresses and pod CIDRs feed every endpoint):
    /// rebuild.
    pub nodes: bool,
    /// Services added, changed or deleted.
    pub services: BTreeSet<ObjectRef>,
    /// EndpointSlices added, changed or deleted.
    pub slices: BTreeSet<ObjectRef>,
}

impl Changes {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.all && !self.nodes && self.services.is_empty() && self.slices.is_empty()
    }

    /// True when only a rebuild can apply these changes.
    pub fn needs_rebuild(&self) -> bool {
        self.all || self.nodes
    }

    /// Adds `other` to these changes.
    pub fn merge(&mut self, other: Changes) {
        self.all |= other.all;
        self.nodes |= other.nodes;
        self.services.extend(other.services);
        self.slices.extend(other.slices);
    }
}

/// Where [`Model::apply`] looks changed objects up (absent = deleted).
pub trait Lookup {
    /// The Service `r`, if it exists.
    fn service(&self, r: &ObjectRef) -> Option<std::sync::Arc<Service>>;
    /// The EndpointSlice `r`, if it exists.
    fn slice(&self, r: &ObjectRef) -> Option<std::sync::Arc<EndpointSlice>>;
}

/// What a model update changed in the data path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// Everything was rebuilt: plan everything.
    Rebuilt,
    /// These ports appeared, changed or went away.
    Ports(BTreeSet<ServiceKey>),
}

fn obj_ref(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectRef {
    ObjectRef {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// Endpoint after condition evaluation, before the per-port join.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EpInfo {
    ip: Ipv4Addr,
    node_ip: Ipv4Addr,
    ready: bool,
    serving_terminating: bool,
}

/// One usable slice: its ports (name, proto) → number, and its endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SliceInfo {
    /// (name, protocol) → port number, sorted, unique (a slice has few).
    ports: Vec<((String, Proto), u16)>,
    endpoints: Vec<EpInfo>,
}

/// Builds the model. Never fails: whatever cannot be used is listed in
/// [`Model::skipped`].
pub fn build<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> Model {
    let mut m = Model::default();
    m.rebuild(services, slices, nodes);
    m
}

impl Model {
    /// Rebuilds everything from the full object lists.
    pub fn rebuild<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        nodes: impl IntoIterator<Item = &'a Node>,
    ) {
        *self = Model::default();
        let mut node_skipped = Vec::new();
        build_nodes(self, nodes, &mut node_skipped);
        self.index.node_skipped = node_skipped;
        for s in slices {
            let (r, e) = eval_slice(self, s);
            self.put_slice_entry(r, Some(e));
        }
        let mut keys = BTreeSet::new();
        for svc in services {
            let r = obj_ref(&svc.metadata);
            let slices = self.slice_infos(&r);
            let (view, entry) = eval_service(svc, &slices);
            self.put_service_entry(r, view, Some(entry), &mut keys);
        }
        self.resolve(&keys);
        self.collect_skipped();
    }

    /// Applies object changes, looking changed objects up in `lookup`.
    /// Rebuilds through `rebuild` when the changes need it (Nodes, relist).
    /// Returns the data-path ports that changed.
    pub fn apply(
        &mut self,
        changes: &Changes,
        lookup: &dyn Lookup,
        rebuild: impl FnOnce(&mut Model),
    ) -> Delta {
        if changes.needs_rebuild() {
            rebuild(self);
            return Delta::Rebuilt;
        }
        // Slices first: a Service is evaluated with its current slices.
        let mut groups: BTreeSet<ObjectRef> = changes.services.clone();
        for r in &changes.slices {
            let entry = lookup.slice(r).map(|s| eval_slice(self, &s).1);
            if let Some(old) = self.index.slices.get(r) {
                groups.extend(old.service.clone());
            }
            if let Some(e) = &entry {
                groups.extend(e.service.clone());
            }
            self.put_slice_entry(r.clone(), entry);
        }
        let mut keys = BTreeSet::new();
        for g in &groups {
            match lookup.service(g) {
                Some(svc) => {
                    let slices = self.slice_infos(g);
                    let (view, entry) = eval_service(&svc, &slices);
                    self.put_service_entry(g.clone(), view, Some(entry), &mut keys);
                }
                None => self.put_service_entry(g.clone(), None, None, &mut keys),
            }
        }
        let changed = self.resolve(&keys);
        self.collect_skipped();
        Delta::Ports(changed)
    }

    fn slice_infos(&self, service: &ObjectRef) -> Vec<SliceInfo> {
        self.index
            .by_service
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|s| self.index.slices.get(s))
            .map(|e| e.info.clone())
            .collect()
    }

    fn put_slice_entry(&mut self, r: ObjectRef, entry: Option<SliceEntry>) {
        if let Some(old) = self.index.slices.remove(&r) {
            if let Some(svc) = &old.service {
                if let Some(set) = self.index.by_service.get_mut(svc) {
                    set.remove(&r);
                    if set.is_empty() {
                        self.index.by_service.remove(svc);
                    }
                }
            }
        }
        if let Some(e) = entry {
            if let Some(svc) = &e.service {
                self.index
                    .by_service
                    .entry(svc.clone())
                    .or_default()
                    .insert(r.clone());
            }
            self.index.slices.insert(r, e);
        }
    }

    /// Replaces a Service's evaluation; `keys` collects every key it asked
    /// for before or after (their owner may change).
    fn put_service_entry(
        &mut self,
        r: ObjectRef,
        view: Option<ServiceView>,
        entry: Option<ServiceEntry>,
        keys: &mut BTreeSet<ServiceKey>,
    ) {
        if let Some(old) = self.index.services.remove(&r) {
            for p in &old.candidates {
                keys.insert(p.key);
                if let Some(c) = self.index.claims.get_mut(&p.key) {
                    c.remove(&r);
                    if c.is_empty() {
                        self.index.claims.remove(&p.key);
                    }
                }
            }
        }
        self.services.remove(&r);
        if let Some(v) = view {
            self.services.insert(r.clone(), v);
        }
        if let Some(e) = entry {
            for p in &e.candidates {
                keys.insert(p.key);
                self.index
                    .claims
                    .entry(p.key)
                    .or_default()
                    .insert(r.clone());
            }
            self.index.services.insert(r, e);
        }
    }

    /// Settles the owner of each of `keys`, updates `ports` and the views
    /// and duplicate notes of every Service involved. Returns the keys whose
    /// port changed.
    fn resolve(&mut self, keys: &BTreeSet<ServiceKey>) -> BTreeSet<ServiceKey> {
        let mut changed = BTreeSet::new();
        let mut involved = BTreeSet::new();
        for key in keys {
            let claimants = self.index.claims.get(key);
            involved.extend(claimants.into_iter().flatten().cloned());
            let port = claimants
                .and_then(|c| c.first())
                .and_then(|owner| self.index.services.get(owner))
                .and_then(|e| e.candidates.iter().find(|p| p.key == *key))
                .cloned();
            let old = match port {
                Some(p) => self.ports.insert(*key, p),
                None => self.ports.remove(key),
            };
            if old.as_ref() != self.ports.get(key) {
                changed.insert(*key);
            }
        }
        for r in involved {
            let Some(e) = self.index.services.get_mut(&r) else {
                continue;
            };
            let mut owned = Vec::new();
            let mut duplicates = Vec::new();
            for p in &e.candidates {
                let owner = self.index.claims.get(&p.key).and_then(|c| c.first());
                if owner == Some(&r) && !owned.contains(&p.key) {
                    owned.push(p.key);
                } else {
                    let owner = owner.map(ToString::to_string).unwrap_or_default();
                    skip(
                        &mut duplicates,
                        "Service",
                        &r,
                        "duplicate_key",
                        format!("{} already served by {owner}", p.key),
                    );
                }
            }
            e.duplicates = duplicates;
            if let Some(v) = self.services.get_mut(&r) {
                v.keys = owned;
            }
        }
        changed
    }

    fn collect_skipped(&mut self) {
        let i = &self.index;
        let mut v: Vec<Skipped> = i
            .node_skipped
            .iter()
            .chain(i.slices.values().flat_map(|e| &e.skipped))
            .chain(
                i.services
                    .values()
                    .flat_map(|e| e.skipped.iter().chain(&e.duplicates)),
            )
            .cloned()
            .collect();
        v.sort();
        v.dedup();
        self.skipped = v;
    }
}

fn skip(
    out: &mut Vec<Skipped>,
    kind: &'static str,
    object: &ObjectRef,
    reason: &'static str,
    detail: String,
) {
    out.push(Skipped {
        kind,
        object: object.clone(),
        reason,
        detail,
    });
}

fn build_nodes<'a>(
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
fn eval_slice(m: &Model, s: &EndpointSlice) -> (ObjectRef, SliceEntry) {
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
        if !(ready || (serving && terminating)) {
            continue;
        }
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
fn eval_service(svc: &Service, my_slices: &[SliceInfo]) -> (Option<ServiceView>, ServiceEntry) {
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
                }
            }
        }
        // An address that is ready in one slice and terminating in another
        // counts as ready.
        st.retain(|b| !ready.contains(b));
        let (active, draining, fallback) = if ready.is_empty() {
            (st, BTreeSet::new(), true)
        } else {
            (ready, st, false)
        };
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Parses a multi-document YAML string into the three kinds.
    pub(crate) fn objs(yaml: &str) -> (Vec<Service>, Vec<EndpointSlice>, Vec<Node>) {
        let mut s = Vec::new();
        let mut e = Vec::new();
        let mut n = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v = serde_yaml::Value::deserialize(doc).unwrap();
            match v.get("kind").and_then(|k| k.as_str()) {
                Some("Service") => s.push(serde_yaml::from_value(v).unwrap()),
                Some("EndpointSlice") => e.push(serde_yaml::from_value(v).unwrap()),
                Some("Node") => n.push(serde_yaml::from_value(v).unwrap()),
                _ => {}
            }
        }
        (s, e, n)
    }
    use serde::Deserialize;

    pub(crate) const NODES: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, "fd00::/64"]}
status: {addresses: [{type: Hostname, address: n1}, {type: InternalIP, address: 192.168.0.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.0.12}]}
"#;

    fn run(yaml: &str) -> Model {
        let (s, e, n) = objs(&format!("{NODES}\n---\n{yaml}"));
        build(&s, &e, &n)
    }

    fn key(vip: &str, port: u16, proto: Proto) -> ServiceKey {
        ServiceKey {
            vip: vip.parse().unwrap(),
            port,
            proto,
        }
    }

    fn be(ip: &str, port: u16, node: &str) -> Backend {
        Backend {
            ip: ip.parse().unwrap(),
            port,
            node_ip: node.parse().unwrap(),
        }
    }

    #[test]
    fn nodes_give_pod_routes() {
        let m = run("");
        assert_eq!(m.pod_nodes.len(), 2);
        assert_eq!(
            m.pod_nodes[&"10.244.1.0/24".parse().unwrap()],
            "192.168.0.11".parse::<Ipv4Addr>().unwrap()
        );
        assert!(m.skipped.is_empty(), "{:?}", m.skipped);
    }

    #[test]
    fn multi_port_named_target_ports_and_conditions() {
        let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http-alt}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- {addresses: [10.244.1.5], conditions: {ready: true}, nodeName: n1}
- {addresses: [10.244.2.6], nodeName: n2}
- {addresses: [10.244.2.7], conditions: {ready: false, serving: true, terminating: true}, nodeName: n2}
- {addresses: [10.244.2.8], conditions: {ready: false, serving: false, terminating: true}, nodeName: n2}
- {addresses: [10.244.2.9], conditions: {ready: false}, nodeName: n2}
"#);
        assert!(m.skipped.is_empty(), "{:?}", m.skipped);
        assert_eq!(m.ports.len(), 2);
        let http = &m.ports[&key("10.96.0.10", 80, Proto::Tcp)];
        assert_eq!(
            http.active,
            [
                be("10.244.1.5", 8080, "192.168.0.11"),
                be("10.244.2.6", 8080, "192.168.0.12")
            ]
            .into()
        );
        assert_eq!(
            http.draining,
            [be("10.244.2.7", 8080, "192.168.0.12")].into()
        );
        assert!(!http.terminating_fallback);
        assert_eq!(http.hash_mode, HashMode::FiveTuple);
        let dns = &m.ports[&key("10.96.0.10", 53, Proto::Udp)];
        assert_eq!(dns.active.len(), 2);
        assert!(dns.active.iter().all(|b| b.port == 5353));
        assert_eq!(m.services.len(), 1);
        assert!(m.services.values().next().unwrap().notes.is_empty());
    }

    #[test]
    fn terminating_fallback_when_none_ready() {
        let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {clusterIP: 10.96.0.11, selector: {a: b}, ports: [{port: 80, targetPort: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.5], conditions: {ready: false, serving: true, terminating: true}, nodeName: n1}
- {addresses: [10.244.1.6], conditions: {ready: false, serving: false, terminating: true}, nodeName: n1}
"#);
        let p = &m.ports[&key("10.96.0.11", 80, Proto::Tcp)];
        assert_eq!(p.active, [be("10.244.1.5", 80, "192.168.0.11")].into());
        assert!(p.draining.is_empty());
        assert!(p.terminating_fallback);
    }

    #[test]
    fn headless_externalname_selectorless_affinity() {
        let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: hl, namespace: ns}
spec: {clusterIP: None, selector: {a: b}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: ns}
spec: {type: ExternalName, externalName: example.com}
---
apiVersion: v1
kind: Service
metadata: {name: manual, namespace: ns}
spec: {clusterIP: 10.96.0.12, sessionAffinity: ClientIP, ports: [{port: 443, targetPort: 8443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: manual-1, namespace: ns, labels: {kubernetes.io/service-name: manual}}
addressType: IPv4
ports: [{port: 8443}]
endpoints:
- {addresses: [10.244.2.50]}
"#);
        assert_eq!(m.ports.len(), 1);
        let p = &m.ports[&key("10.96.0.12", 443, Proto::Tcp)];
        assert_eq!(p.hash_mode, HashMode::ClientIp);
        // No nodeName: node found through the pod CIDR.
        assert_eq!(p.active, [be("10.244.2.50", 8443, "192.168.0.12")].into());
        let hl = &m.services[&ObjectRef {
            namespace: "ns".into(),
            name: "hl".into(),
        }];
        assert!(hl.headless && hl.keys.is_empty());
        assert!(
            m.services[&ObjectRef {
                namespace: "ns".into(),
                name: "manual".into()
            }]
                .selectorless
        );
        assert!(m.services.contains_key(&ObjectRef {
            namespace: "ns".into(),
            name: "ext".into()
        }));
    }

    #[test]
    fn nodeport_lb_externalips_are_reported_not_dropped() {
        let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: ns}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.13
  externalIPs: [203.0.113.7]
  ports: [{port: 80, nodePort: 30080, targetPort: 80}]
status: {loadBalancer: {ingress: [{ip: 198.51.100.1}]}}
"#);
        let v = &m.services[&ObjectRef {
            namespace: "ns".into(),
            name: "lb".into(),
        }];
        let notes = v.notes.join("\n");
        assert!(notes.contains("nodePort 30080"), "{notes}");
        assert!(notes.contains("198.51.100.1"), "{notes}");
        assert!(notes.contains("externalIP 203.0.113.7"), "{notes}");
        // The ClusterIP part still works, with no endpoints.
        let p = &m.ports[&key("10.96.0.13", 80, Proto::Tcp)];
        assert!(p.active.is_empty());
    }

    #[test]
    fn malformed_objects_are_skipped_with_reasons() {
        let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: bad, namespace: ns}
spec: {clusterIP: 10.96.0.300, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: sctp, namespace: ns}
spec: {clusterIP: 10.96.0.14, ports: [{port: 80, protocol: SCTP}, {name: b, port: 81}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: v6, namespace: ns, labels: {kubernetes.io/service-name: sctp}}
addressType: IPv6
endpoints: []
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: nolabel, namespace: ns}
addressType: IPv4
endpoints: []
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sctp-x, namespace: ns, labels: {kubernetes.io/service-name: sctp}}
addressType: IPv4
ports: [{name: b, port: 81}]
endpoints:
- {addresses: [172.16.0.1]}
- {addresses: [not-an-ip], nodeName: n1}
"#);
        let reasons: BTreeSet<&str> = m.skipped.iter().map(|s| s.reason).collect();
        for r in [
            "bad_cluster_ip",
            "unsupported_protocol",
            "unsupported_address_type",
            "no_service_label",
            "unknown_node",
            "bad_address",
        ] {
            assert!(reasons.contains(r), "missing {r} in {reasons:?}");
        }
        assert_eq!(m.ports.len(), 1, "{:?}", m.ports.keys());
        assert!(m.ports[&key("10.96.0.14", 81, Proto::Tcp)]
            .active
            .is_empty());
    }

    #[test]
    fn duplicate_endpoint_across_slices_ready_wins() {
        let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {clusterIP: 10.96.0.15, selector: {a: b}, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.5], conditions: {ready: false, serving: true, terminating: true}, nodeName: n1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-2, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.5], nodeName: n1}
- {addresses: [10.244.1.6], nodeName: n1}
"#);
        let p = &m.ports[&key("10.96.0.15", 80, Proto::Tcp)];
        assert_eq!(p.active.len(), 2);
        assert!(p.draining.is_empty());
    }
}
