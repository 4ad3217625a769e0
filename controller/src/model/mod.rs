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
//! - Each Service port is served at its ClusterIP, at every node's
//!   InternalIP on its nodePort (NodePort and LoadBalancer), and at its
//!   external addresses (externalIPs, LoadBalancer ingress IPs), each a
//!   switch key of its own ([`Frontend`]). Every ClusterIP of a dual-stack
//!   Service is served, each from the EndpointSlices of its family (as
//!   kube-proxy's per-family proxiers do); nodePorts and external
//!   addresses are IPv4 only (IPv6 ones are reported as notes); SCTP ports
//!   are refused (the data path parses TCP and UDP only).
//! - One backend per `ip:port` of a Service port, from `addresses[0]` of
//!   each endpoint; Services and EndpointSlices labelled
//!   `service.kubernetes.io/service-proxy-name` or
//!   `service.kubernetes.io/headless` are not ours.
//! - ServiceCIDRs (`networking.k8s.io/v1`): the union of their
//!   `spec.cidrs`, both families, for the REST API (node agents steer them
//!   to the switch).

mod index;
mod kube_proxy;
#[cfg(test)]
pub(crate) mod tests;
mod view;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
    networking::v1::ServiceCIDR,
};
use serde::Serialize;

use crate::types::{Backend, HashMode, IpPrefix, Ipv4Prefix, Ipv6Prefix, ServiceKey};
use index::Index;
use kube_proxy::{build_nodes, eval_service, eval_slice, NodeTopology};
pub use view::{HealthCheckView, PortView, ServiceView};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Label naming the proxy that serves a Service instead of kube-proxy (the
/// EndpointSlice controller copies it onto the Service's slices).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// Label the EndpointSlice controller puts on a headless Service's slices.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// kube-proxy's label selector for Services and EndpointSlices
/// (`cmd/kube-proxy/app/server.go`); the Kubernetes source watches with it
/// and the model applies it to objects from other sources.
pub const KUBE_PROXY_LABEL_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

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

/// What kind of address a switch key's `vip` is, in the order claims on
/// one key win: a ClusterIP over a node's nodePort over an external
/// address. The API server allocates the first two without overlap, while
/// anyone who may write a Service can name any external address; so no
/// Service can take another's ClusterIP or nodePort by naming it as an
/// external address (CVE-2020-8554, which kube-proxy leaves to admission
/// control).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Frontend {
    /// A ClusterIP, for clients in the cluster.
    ClusterIp,
    /// A node's InternalIP on the port's nodePort. A node agent steers
    /// only its own address's (its stack would take them otherwise); its
    /// clients reach other nodes' plain through the switch, as external
    /// clients do.
    NodePort,
    /// An external address (`externalIPs`, LoadBalancer ingress IP).
    External,
}

impl Frontend {
    /// Whether clients outside the cluster reach the key through the
    /// switch: everything but a ClusterIP. Per-client-node policies
    /// (`internalTrafficPolicy`, topology hints) do not apply to it.
    pub fn is_outside(self) -> bool {
        self != Frontend::ClusterIp
    }
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
    /// What `key.vip` is; of several claims on one key, the first
    /// frontend kind wins ([`Frontend`]).
    pub frontend: Frontend,
    /// sessionAffinity → hash mode.
    pub hash_mode: HashMode,
    /// `sessionAffinity: ClientIP`: its `timeoutSeconds`, which the
    /// clients' nodes keep (the switch only hashes the client address).
    pub affinity_timeout_secs: Option<u32>,
    /// Backends that take new flows (get buckets).
    pub active: BTreeSet<Backend>,
    /// Backends that only keep established flows (cookie_check, no buckets).
    pub draining: BTreeSet<Backend>,
    /// True when `active` is the serving+terminating fallback.
    pub terminating_fallback: bool,
    /// Node InternalIP → the only endpoints its clients' new flows may go
    /// to: its own (`internalTrafficPolicy: Local`), or those hinted for
    /// its zone (topology hints, `trafficDistribution`). A node without an
    /// entry uses every active endpoint, unless `local_only`.
    pub preferred: BTreeMap<Ipv4Addr, BTreeSet<Backend>>,
    /// `internalTrafficPolicy: Local`: a node without local endpoints
    /// drops its clients' new flows, as kube-proxy does.
    pub local_only: bool,
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
    /// IPv6 pod CIDR → node InternalIP, for `pod_node_v6` (the node is
    /// reached over the IPv4 underlay).
    pub pod_nodes_v6: BTreeMap<Ipv6Prefix, Ipv4Addr>,
    /// Node name → InternalIP.
    pub node_ips: BTreeMap<String, Ipv4Addr>,
    /// Node InternalIP → its `topology.kubernetes.io/zone` label.
    pub node_zones: BTreeMap<Ipv4Addr, String>,
    /// Objects or parts skipped, with reasons (sorted, no duplicates).
    pub skipped: Vec<Skipped>,
    /// The `spec.cidrs` of every ServiceCIDR object, IPv4 and IPv6. Node
    /// agents add them to their configured service CIDRs.
    pub service_cidrs: BTreeSet<IpPrefix>,
    /// The health checks node agents serve, by Service (copies of the
    /// views' `health_check`, so a change to them is cheap to spot).
    pub health_checks: BTreeMap<ObjectRef, HealthCheckView>,
    /// Service ports refused for their protocol, by protocol (`SCTP`).
    pub unsupported_ports: BTreeMap<String, usize>,
    /// Per-object results that let one object's change be applied without
    /// rebuilding the rest.
    #[serde(skip)]
    index: Index,
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
    /// A ServiceCIDR changed (they feed no port: no rebuild).
    pub service_cidrs: bool,
}

impl Changes {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.all
            && !self.nodes
            && !self.service_cidrs
            && self.services.is_empty()
            && self.slices.is_empty()
    }

    /// True when only a rebuild can apply these changes.
    pub fn needs_rebuild(&self) -> bool {
        self.all || self.nodes
    }

    /// Adds `other` to these changes.
    pub fn merge(&mut self, other: Changes) {
        self.all |= other.all;
        self.nodes |= other.nodes;
        self.service_cidrs |= other.service_cidrs;
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
    /// Every ServiceCIDR.
    fn service_cidrs(&self) -> Vec<std::sync::Arc<ServiceCIDR>>;
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
        let cidrs = std::mem::take(&mut self.service_cidrs);
        let cidr_skipped = std::mem::take(&mut self.index.cidr_skipped);
        *self = Model::default();
        self.service_cidrs = cidrs;
        self.index.cidr_skipped = cidr_skipped;
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
            let (view, entry) = eval_service(&self.topology(), svc, &slices);
            self.put_service_entry(r, view, Some(entry), &mut keys);
        }
        self.resolve(&keys);
        self.collect_skipped();
    }

    /// The nodes as topology hints name them.
    fn topology(&self) -> NodeTopology<'_> {
        NodeTopology {
            ips: &self.node_ips,
            zones: &self.node_zones,
        }
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
            self.set_service_cidrs(lookup.service_cidrs().iter().map(AsRef::as_ref));
            return Delta::Rebuilt;
        }
        if changes.service_cidrs {
            self.set_service_cidrs(lookup.service_cidrs().iter().map(AsRef::as_ref));
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
                    let (view, entry) = eval_service(&self.topology(), &svc, &slices);
                    self.put_service_entry(g.clone(), view, Some(entry), &mut keys);
                }
                None => self.put_service_entry(g.clone(), None, None, &mut keys),
            }
        }
        let changed = self.resolve(&keys);
        self.collect_skipped();
        Delta::Ports(changed)
    }

    /// Replaces the service CIDRs with the union of `cidrs`' `spec.cidrs`,
    /// as kube-proxy's ServiceCIDR handler does (`pkg/proxy/config`).
    /// Returns whether they changed.
    pub fn set_service_cidrs<'a>(
        &mut self,
        cidrs: impl IntoIterator<Item = &'a ServiceCIDR>,
    ) -> bool {
        let (set, skipped) = kube_proxy::service_cidrs(cidrs);
        let changed = set != self.service_cidrs;
        self.service_cidrs = set;
        if skipped != self.index.cidr_skipped {
            self.index.cidr_skipped = skipped;
            self.collect_skipped();
        }
        changed
    }
}
