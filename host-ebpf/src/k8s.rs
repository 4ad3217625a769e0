//! Kubernetes mode: this node's Pods from the API server (a kube-rs
//! reflector on Pods with `fieldSelector=spec.nodeName=<node>`), and the
//! service ids the backend side needs and the cluster's ServiceCIDRs from
//! the controller's REST API (`GET /v1/services`, long-polled, and `GET
//! /v1/service-cidrs`).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    runtime::{reflector, watcher, WatchStreamExt},
    Api, Client, ResourceExt,
};
use talaria_common::rest::{ANSWER_DELTA, ANSWER_HEADER, PLAN_EPOCH_HEADER, PLAN_VERSION_HEADER};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::{
    agent::HostRoutes,
    config::{parse_cidr, KubernetesConfig, ServiceConfig},
    health::{HealthCheck, HealthServer},
    node::Node,
    Error, Result,
};

/// One RBAC permission the agent needs: (API group, resource, verbs), the
/// way a `PolicyRule` names it.
pub type Access = (&'static str, &'static str, &'static [&'static str]);

/// What the agent reads from the API server, cluster-wide: [`watch_pods`]
/// lists and watches Pods, only those of its node
/// ([`pods_field_selector`]); RBAC cannot narrow a rule by field, so the
/// grant is all Pods. `deploy/node-agent.yaml` grants exactly this
/// (`talaria-tests`, `deploy` test). Services come from the controller's
/// REST API, not from the API server.
pub const CLUSTER_ACCESS: &[Access] = &[("", "pods", &["list", "watch"])];

/// Where a pod's service account credentials are mounted.
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// A client for the API server at `cfg.api_server` (`https://HOST:PORT`),
/// with the pod's service account credentials when the agent runs in a pod
/// and none otherwise (`kubectl proxy`, tests). Empty: kube-rs's default
/// (`KUBECONFIG`, else in-cluster `KUBERNETES_SERVICE_HOST`/`PORT`, which
/// is the `kubernetes` ClusterIP that talaria must itself serve).
pub async fn client(cfg: &KubernetesConfig) -> Result<Client> {
    if cfg.api_server.is_empty() {
        return Client::try_default()
            .await
            .map_err(|e| Error::Kube(Box::new(e)));
    }
    let url = cfg
        .api_server
        .parse()
        .map_err(|e| Error::Invalid(format!("api_server {:?}: {e}", cfg.api_server)))?;
    let config = if std::path::Path::new(SERVICE_ACCOUNT_TOKEN).exists() {
        // The in-cluster config (token file, CA, namespace), pointed at
        // the address given instead of the `kubernetes` Service.
        let mut c = kube::Config::incluster_dns().map_err(Error::InCluster)?;
        c.cluster_url = url;
        c
    } else {
        kube::Config::new(url)
    };
    Client::try_from(config).map_err(|e| Error::Kube(Box::new(e)))
}

/// The field selector of the Pods this node runs: the agent never reads
/// another node's Pods.
pub fn pods_field_selector(node_name: &str) -> String {
    format!("spec.nodeName={node_name}")
}

/// `cfg.node_name`, else `$NODE_NAME`.
pub fn node_name(cfg: &KubernetesConfig) -> Result<String> {
    if !cfg.node_name.is_empty() {
        return Ok(cfg.node_name.clone());
    }
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::Invalid("kubernetes.node_name unset and no NODE_NAME".into()))
}

/// Local pods' addresses from the API: the address each pod's veth is
/// found by (its host route: the pod's IPv4 address, or for an IPv6-only
/// pod its first IPv6 one) → the same pod's IPv6 addresses (dual stack,
/// or IPv6 only), which are behind the same veth.
pub type PodIps = BTreeMap<IpAddr, BTreeSet<Ipv6Addr>>;

/// The addresses of the pods that need the data path: every pod with an
/// address, except `hostNetwork` pods (their address is the node's, with
/// no veth) and pods that have finished (`Succeeded`, `Failed`: their
/// address may already be reused).
pub fn pod_ips<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> PodIps {
    let mut out = PodIps::new();
    for p in pods {
        let host_network = p
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let Some(status) = &p.status else { continue };
        let finished = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
        if host_network || finished {
            continue;
        }
        let ips = status
            .pod_ips
            .iter()
            .flatten()
            .map(|a| a.ip.as_str())
            .chain(status.pod_ip.as_deref());
        let (mut v4, mut v6) = (Vec::new(), BTreeSet::new());
        for ip in ips {
            match ip.parse() {
                Ok(IpAddr::V4(a)) => v4.push(a),
                Ok(IpAddr::V6(a)) => {
                    v6.insert(a);
                }
                Err(_) => {}
            }
        }
        if v4.is_empty() {
            // IPv6 only: found by its first address.
            if let Some(first) = v6.first() {
                out.insert(IpAddr::V6(*first), v6.clone());
            }
        }
        for a in v4 {
            out.insert(IpAddr::V4(a), v6.clone());
        }
    }
    out
}

/// Watches the Pods on `node_name` and keeps `out` at their addresses
/// ([`pod_ips`]); `None` until the first list is complete. Pokes `changed`
/// on every change. Runs until the watch stream ends; errors are retried
/// with the watcher's backoff.
pub async fn watch_pods(
    client: Client,
    node_name: String,
    out: Arc<Mutex<Option<PodIps>>>,
    changed: Arc<Notify>,
) {
    let api: Api<Pod> = Api::all(client);
    let (store, writer) = reflector::store::<Pod>();
    let config = watcher::Config::default()
        .fields(&pods_field_selector(&node_name))
        .any_semantic();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|p: &mut Pod| p.managed_fields_mut().clear())
        .reflect(writer);
    futures::pin_mut!(stream);
    loop {
        match stream.try_next().await {
            // A (re)list in progress: the store changes at InitDone.
            Ok(Some(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
            Ok(Some(_)) => {
                let state = store.state();
                let ips = pod_ips(state.iter().map(|p| p.as_ref()));
                let mut cur = out.lock().expect("pods lock");
                if cur.as_ref() != Some(&ips) {
                    info!(node = %node_name, pods = ips.len(), "pods from the API");
                    *cur = Some(ips);
                    changed.notify_one();
                }
            }
            Ok(None) => return,
            Err(e) => warn!(error = %e, "pod watch error (retrying with backoff)"),
        }
    }
}

/// What a node takes from one Service of a controller `GET /v1/services`
/// answer; everything else in it is skipped unparsed.
#[derive(serde::Deserialize)]
struct ServiceReport {
    service: ServiceName,
    #[serde(default)]
    data_path: Vec<PlannedPort>,
    health_check: Option<HealthCheckReport>,
}

/// A Service's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

#[derive(serde::Deserialize)]
struct PlannedPort {
    service_id: u16,
    key: PortKey,
    /// Absent: a controller that does not say is not rejecting.
    buckets: Option<u64>,
    #[serde(default)]
    preferred: HashMap<Ipv4Addr, Vec<u32>>,
    #[serde(default)]
    local_only: bool,
    #[serde(default)]
    agentless: bool,
    affinity_timeout_seconds: Option<u32>,
    /// Backend id → backend; only the ids are used.
    #[serde(default)]
    active: BTreeMap<u32, serde::de::IgnoredAny>,
    /// `cluster_ip`, `node_port` or `external`; absent from a controller
    /// that had no nodePorts.
    frontend: Option<String>,
}

#[derive(serde::Deserialize)]
struct PortKey {
    vip: IpAddr,
    port: u16,
    proto: String,
}

#[derive(serde::Deserialize)]
struct HealthCheckReport {
    node_port: u16,
    #[serde(default)]
    local_endpoints: HashMap<Ipv4Addr, usize>,
}

/// A delta answer: the Services changed after the version asked after, and
/// those removed since.
#[derive(serde::Deserialize)]
struct DeltaReport {
    services: Vec<ServiceReport>,
    removed: Vec<ServiceName>,
}

/// What node `node_ip` serves of one Service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeService {
    /// A Service per `data_path` entry (service id, `key.vip`, `key.port`,
    /// `key.proto`; no buckets: refused; `preferred[node_ip]`,
    /// `local_only`, `agentless`, `affinity_timeout_seconds` and the ids
    /// of `active`).
    pub ports: Vec<ServiceConfig>,
    /// `health_check.node_port` and `local_endpoints[node_ip]` (0 when
    /// absent).
    pub health_check: Option<HealthCheck>,
}

impl ServiceReport {
    fn for_node(self, node_ip: Ipv4Addr) -> Result<(ServiceName, NodeService)> {
        let ports = self
            .data_path
            .into_iter()
            .map(|p| {
                let affinity_timeout_secs = p.affinity_timeout_seconds.unwrap_or(0);
                ServiceConfig {
                    id: p.service_id,
                    vip: p.key.vip,
                    port: p.key.port,
                    protocol: p.key.proto.to_ascii_lowercase(),
                    // No buckets: no ready or serving-terminating endpoint.
                    reject: p.buckets == Some(0),
                    preferred: p.preferred.get(&node_ip).cloned().unwrap_or_default(),
                    local_only: p.local_only,
                    agentless: p.agentless,
                    affinity_timeout_secs,
                    // Only affinity needs the active ids.
                    active: match affinity_timeout_secs {
                        0 => Vec::new(),
                        _ => p.active.into_keys().collect(),
                    },
                    node_port: p.frontend.as_deref() == Some("node_port"),
                }
            })
            .collect();
        let health_check = match self.health_check {
            None => None,
            Some(hc) if hc.node_port == 0 => {
                return Err(bad_answer(format!(
                    "{}/{}: health_check.node_port 0",
                    self.service.namespace, self.service.name
                )))
            }
            Some(hc) => Some(HealthCheck {
                namespace: self.service.namespace.clone(),
                name: self.service.name.clone(),
                node_port: hc.node_port,
                local_endpoints: hc.local_endpoints.get(&node_ip).copied().unwrap_or(0),
            }),
        };
        Ok((
            self.service,
            NodeService {
                ports,
                health_check,
            },
        ))
    }
}

fn bad_answer(what: String) -> Error {
    Error::Invalid(format!("controller /v1/services: {what}"))
}

/// A controller's `/v1/services` answer, as one node serves it.
#[derive(Debug, Default, PartialEq)]
pub struct Answer {
    /// Every Service (a full answer), or those that changed (a delta).
    pub services: BTreeMap<ServiceName, NodeService>,
    /// A delta's removed Services; `None` for a full answer.
    pub removed: Option<Vec<ServiceName>>,
    /// The controller's plan version (absent from one that does not say).
    pub version: Option<u64>,
    /// The controller process that version belongs to.
    pub epoch: Option<u64>,
}

/// Parses an answer body: a full one (a JSON array of Service reports) or,
/// when `delta`, an object of the reports that changed and the names of
/// the Services removed. Parsed straight into the fields this node uses:
/// a full answer at thousands of Services is megabytes.
pub fn parse_services_answer(body: &[u8], delta: bool, node_ip: Ipv4Addr) -> Result<Answer> {
    let bad = |e: serde_json::Error| bad_answer(e.to_string());
    let (reports, removed) = if delta {
        let d: DeltaReport = serde_json::from_slice(body).map_err(bad)?;
        (d.services, Some(d.removed))
    } else {
        (serde_json::from_slice(body).map_err(bad)?, None)
    };
    let services = reports
        .into_iter()
        .map(|r| r.for_node(node_ip))
        .collect::<Result<_>>()?;
    Ok(Answer {
        services,
        removed,
        ..Answer::default()
    })
}

/// The controller's plan as this node holds it: the sum of its answers.
#[derive(Debug, Default)]
pub struct HeldPlan {
    services: BTreeMap<ServiceName, NodeService>,
    /// The (version, epoch) of the last answer; `None` after a failure, so
    /// the next fetch is a full one.
    held: Option<(u64, Option<u64>)>,
}

impl HeldPlan {
    /// Takes a full answer as the whole plan; applies a delta on top.
    pub fn apply(&mut self, a: Answer) {
        match a.removed {
            None => self.services = a.services,
            Some(removed) => {
                for s in &removed {
                    self.services.remove(s);
                }
                self.services.extend(a.services);
            }
        }
        self.held = a.version.map(|v| (v, a.epoch));
    }

    /// Forgets the version held (the services stay): the next fetch asks
    /// for everything.
    pub fn forget_version(&mut self) {
        self.held = None;
    }

    /// What to ask after: the version held and its epoch.
    pub fn held(&self) -> Option<(u64, Option<u64>)> {
        self.held
    }

    /// Every port of every Service held.
    pub fn services(&self) -> Vec<ServiceConfig> {
        self.services
            .values()
            .flat_map(|s| s.ports.iter().cloned())
            .collect()
    }

    /// The health checks this node serves.
    pub fn health_checks(&self) -> Vec<HealthCheck> {
        self.services
            .values()
            .filter_map(|s| s.health_check.clone())
            .collect()
    }
}

/// How long one long poll of the controller may wait for a change.
const LONG_POLL: Duration = Duration::from_secs(30);

/// Fetches `GET <controller_url>/v1/services` ([`parse_services_answer`]).
/// With `held` (version, epoch) a long poll: the controller answers when
/// its plan is another one, or after [`LONG_POLL`]; with the epoch too,
/// it may answer with only what changed after that version.
pub async fn fetch_answer(
    http: &reqwest::Client,
    controller_url: &str,
    held: Option<(u64, Option<u64>)>,
    node_ip: Ipv4Addr,
) -> Result<Answer> {
    let base = controller_url.trim_end_matches('/');
    let mut req = http.get(format!("{base}/v1/services"));
    if let Some((v, epoch)) = held {
        let wait = LONG_POLL.as_millis().to_string();
        req = req
            .query(&[("after", v.to_string()), ("wait_ms", wait)])
            .timeout(LONG_POLL + Duration::from_secs(5));
        if let Some(e) = epoch {
            req = req.query(&[("epoch", e.to_string())]);
        }
    }
    let r = req
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| Error::Http(Box::new(e)))?;
    let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok());
    let version = header(PLAN_VERSION_HEADER).and_then(|v| v.parse().ok());
    let epoch = header(PLAN_EPOCH_HEADER).and_then(|v| v.parse().ok());
    let delta = header(ANSWER_HEADER) == Some(ANSWER_DELTA);
    let body = r.bytes().await.map_err(|e| Error::Http(Box::new(e)))?;
    Ok(Answer {
        version,
        epoch,
        ..parse_services_answer(&body, delta, node_ip)?
    })
}

pub use crate::config::{network, Cidr};

/// The prefixes of a controller `GET /v1/service-cidrs` answer (an array
/// of `"a.b.c.d/len"` and `"ipv6/len"`).
pub fn service_cidrs_from_json(v: &serde_json::Value) -> Result<BTreeSet<Cidr>> {
    let bad = |what: String| Error::Invalid(format!("controller /v1/service-cidrs: {what}"));
    v.as_array()
        .ok_or_else(|| bad("not an array".into()))?
        .iter()
        .map(|c| {
            let s = c
                .as_str()
                .ok_or_else(|| bad(format!("{c} is not a string")))?;
            parse_cidr(s).map(network)
        })
        .collect()
}

/// Fetches `GET <controller_url>/v1/service-cidrs`: the prefixes (both
/// families) of the cluster's ServiceCIDR objects, as the controller knows them.
pub async fn fetch_service_cidrs(
    http: &reqwest::Client,
    controller_url: &str,
) -> Result<BTreeSet<Cidr>> {
    let base = controller_url.trim_end_matches('/');
    let v: serde_json::Value = http
        .get(format!("{base}/v1/service-cidrs"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| Error::Http(Box::new(e)))?
        .json()
        .await
        .map_err(|e| Error::Http(Box::new(e)))?;
    service_cidrs_from_json(&v)
}

/// The Service CIDRs to steer: the configured ones and the controller's.
pub fn merge_cidrs(configured: &[Cidr], controller: &BTreeSet<Cidr>) -> BTreeSet<Cidr> {
    configured
        .iter()
        .chain(controller)
        .map(|c| network(*c))
        .collect()
}

/// `cidrs` and, as /32s, the addresses of `services` outside them: the
/// external addresses (externalIPs, LoadBalancer ingress IPs) that the
/// controller plans as Services of their own. The node then steers its
/// clients of those to the switch as it steers a ClusterIP's, with cookies,
/// where kube-proxy short-circuits them to the Service. A ClusterIP is
/// inside a CIDR and adds nothing; a nodePort's node address is never
/// steered (everything else sent to the node would follow it).
pub fn with_service_addrs(mut cidrs: BTreeSet<Cidr>, services: &[ServiceConfig]) -> BTreeSet<Cidr> {
    let outside: Vec<Cidr> = services
        .iter()
        .filter(|s| !s.node_port)
        .map(|s| s.vip)
        .filter(|a| {
            !cidrs
                .iter()
                .any(|c| c.0.is_ipv4() == a.is_ipv4() && network((*a, c.1)) == *c)
        })
        .map(|a| (a, if a.is_ipv4() { 32 } else { 128 }))
        .collect();
    cidrs.extend(outside);
    cidrs
}

/// What turns the prefixes a node has (in `NODE_SVC_CIDRS`, or routed to
/// `tlr-host`) into those it wants.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CidrChanges {
    /// Wanted and missing.
    pub add: Vec<Cidr>,
    /// Present and no longer wanted.
    pub remove: Vec<Cidr>,
}

impl CidrChanges {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// The changes from `have` to `want`. A configured prefix is never
/// removed, even if `want` lacks it: the static config is the floor that
/// holds whatever the controller says.
pub fn cidr_changes(
    have: &BTreeSet<Cidr>,
    want: &BTreeSet<Cidr>,
    configured: &[Cidr],
) -> CidrChanges {
    let keep: BTreeSet<Cidr> = configured.iter().map(|c| network(*c)).collect();
    CidrChanges {
        add: want.difference(have).copied().collect(),
        remove: have
            .difference(want)
            .filter(|c| !keep.contains(c))
            .copied()
            .collect(),
    }
}

/// The services to program: the configured ones, then the controller's
/// (which win on the same id). Sorted by id.
pub fn merge_services(
    configured: &[ServiceConfig],
    controller: &[ServiceConfig],
) -> Vec<ServiceConfig> {
    let mut by_id = std::collections::BTreeMap::new();
    for s in configured.iter().chain(controller) {
        by_id.insert(s.id, s.clone());
    }
    by_id.into_values().collect()
}

/// What [`refresh_services`] keeps up to date, and from what.
pub struct Refresh {
    /// Where the controller is, how often to poll it without long polls.
    pub cfg: KubernetesConfig,
    /// This node's address (its preferred endpoints in the answer).
    pub node_ip: Ipv4Addr,
    /// The configured Services, under the controller's.
    pub services: Vec<ServiceConfig>,
    /// The configured Service CIDRs: steered whatever the controller says.
    pub service_cidrs: BTreeSet<Cidr>,
    /// The routes that take host clients to Services, when they are served.
    pub host_routes: Option<HostRoutes>,
}

/// Keeps `NODE_SERVICES` at [`merge_services`] of the configured Services
/// and the controller's answers, by long polls: each asks for the plan
/// after the version held, so a new Service is mapped as soon as the
/// controller has planned it, and names that version's epoch, so the
/// answer carries only what changed ([`HeldPlan`]). A controller that
/// names no version is polled every `services_refresh_secs`, and so is
/// one that failed. After each
/// answer the controller's ServiceCIDRs are fetched too (a change to them
/// alone is a new plan version) and steered with the configured ones
/// ([`steer_cidrs`]). A failed fetch keeps the last good set of either
/// (the data path must not lose its services because the controller
/// restarts). Every answer also syncs the health checks this node serves
/// ([`HealthServer`]); without answers they turn unhealthy.
pub async fn refresh_services(r: Refresh, node: Arc<Mutex<Node>>) {
    let cfg = &r.cfg;
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "HTTP client for the controller");
            return;
        }
    };
    let every = Duration::from_secs(cfg.services_refresh_secs.max(1));
    let configured_cidrs: Vec<Cidr> = r.service_cidrs.iter().copied().collect();
    let mut last: Option<Vec<ServiceConfig>> = None;
    let mut last_cidrs: Option<BTreeSet<Cidr>> = None;
    let mut plan = HeldPlan::default();
    let mut health = HealthServer::new(Ipv4Addr::UNSPECIFIED);
    loop {
        match fetch_answer(&http, &cfg.controller_url, plan.held(), r.node_ip).await {
            Ok(answer) => {
                plan.apply(answer);
                if let Err(e) = health.sync(&plan.health_checks()).await {
                    warn!(error = %e, "serving health checks (retried at the next answer)");
                }
                let merged = merge_services(&r.services, &plan.services());
                if last.as_ref() != Some(&merged) {
                    match node.lock().expect("node lock").set_services(&merged) {
                        Ok(()) => {
                            info!(services = merged.len(), "services from the controller");
                            last = Some(merged);
                        }
                        Err(e) => warn!(error = %e, "writing services"),
                    }
                }
            }
            Err(e) => {
                plan.forget_version();
                warn!(url = %cfg.controller_url, error = %e, "fetching services (keeping the last set)")
            }
        }
        match fetch_service_cidrs(&http, &cfg.controller_url).await {
            Ok(theirs) => {
                let services = last.as_deref().unwrap_or(&r.services);
                let want = with_service_addrs(merge_cidrs(&configured_cidrs, &theirs), services);
                if last_cidrs.as_ref() != Some(&want) {
                    match steer_cidrs(&node, r.host_routes.as_ref(), &want, &configured_cidrs) {
                        Ok(()) => {
                            info!(cidrs = ?want, "service CIDRs: configured and the controller's");
                            last_cidrs = Some(want);
                        }
                        // Not recorded: the next answer tries again.
                        Err(e) => warn!(error = %e, "steering service CIDRs"),
                    }
                }
            }
            Err(e) => {
                warn!(url = %cfg.controller_url, error = %e, "fetching service CIDRs (keeping the last set)")
            }
        }
        if plan.held().is_none() {
            tokio::time::sleep(every).await;
        }
    }
}

/// Brings `NODE_SVC_CIDRS` and, with `routes`, the host clients' routes
/// to `want`, never removing a `configured` prefix; idempotent. Additions
/// reach the map before the routes, removals leave the routes first: a
/// host packet routed to `tlr-host` whose prefix the map lacks is dropped.
pub fn steer_cidrs(
    node: &Mutex<Node>,
    routes: Option<&HostRoutes>,
    want: &BTreeSet<Cidr>,
    configured: &[Cidr],
) -> Result<()> {
    let map = {
        let mut n = node.lock().expect("node lock");
        let c = cidr_changes(&n.service_cidrs()?, want, configured);
        n.add_service_cidrs(&c.add)?;
        c
    };
    if let Some(r) = routes {
        r.apply(&cidr_changes(&r.routed()?, want, configured))?;
    }
    node.lock()
        .expect("node lock")
        .remove_service_cidrs(&map.remove)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The plan held after a full answer `v`.
    fn held_from_json(v: &serde_json::Value, node_ip: Ipv4Addr) -> Result<HeldPlan> {
        let mut plan = HeldPlan::default();
        plan.apply(parse_services_answer(
            &serde_json::to_vec(v).unwrap(),
            false,
            node_ip,
        )?);
        Ok(plan)
    }

    fn services_from_json(v: &serde_json::Value, node_ip: Ipv4Addr) -> Result<Vec<ServiceConfig>> {
        held_from_json(v, node_ip).map(|p| p.services())
    }

    fn health_checks_from_json(
        v: &serde_json::Value,
        node_ip: Ipv4Addr,
    ) -> Result<Vec<HealthCheck>> {
        held_from_json(v, node_ip).map(|p| p.health_checks())
    }

    #[test]
    fn services_from_the_controller_answer() {
        let v = json!([
            {"service": {"namespace": "default", "name": "web"}, "cluster_ips": ["10.96.0.10"],
             "data_path": [
                {"key": {"vip": "10.96.0.10", "port": 80, "proto": "TCP"}, "service_id": 7, "buckets": 16, "active": {}, "draining": {},
                 "preferred": {"10.0.0.1": [3, 4], "10.0.0.2": [5]}, "local_only": true, "agentless": true},
                {"key": {"vip": "10.96.0.10", "port": 53, "proto": "UDP"}, "service_id": 8, "buckets": 0},
                {"key": {"vip": "10.96.0.11", "port": 80, "proto": "TCP"}, "service_id": 9, "buckets": 16,
                 "active": {"12": {}, "3": {}}, "draining": {"4": {}}, "affinity_timeout_seconds": 30},
                {"key": {"vip": "10.0.0.2", "port": 30080, "proto": "TCP"}, "service_id": 10, "buckets": 16,
                 "frontend": "node_port"}
             ]},
            {"service": {"namespace": "default", "name": "headless"}, "headless": true, "data_path": []},
            {"service": {"namespace": "default", "name": "noports"}}
        ]);
        let s = services_from_json(&v, "10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(
            s,
            vec![
                ServiceConfig {
                    preferred: vec![3, 4],
                    local_only: true,
                    agentless: true,
                    ..ServiceConfig::new(7, "10.96.0.10".parse::<IpAddr>().unwrap(), 80, "tcp")
                },
                // No buckets: no usable endpoint.
                ServiceConfig {
                    reject: true,
                    ..ServiceConfig::new(8, "10.96.0.10".parse::<IpAddr>().unwrap(), 53, "udp")
                },
                // Session affinity: the active ids come along.
                ServiceConfig {
                    affinity_timeout_secs: 30,
                    active: vec![3, 12],
                    ..ServiceConfig::new(9, "10.96.0.11".parse::<IpAddr>().unwrap(), 80, "tcp")
                },
                // A nodePort: known, never steered.
                ServiceConfig {
                    node_port: true,
                    ..ServiceConfig::new(10, "10.0.0.2".parse::<IpAddr>().unwrap(), 30080, "tcp")
                },
            ]
        );
        let me = "10.0.0.1".parse().unwrap();
        assert!(services_from_json(&json!({"error": "x"}), me).is_err());
        let name = json!({"namespace": "default", "name": "x"});
        let bad_id = json!([{"service": name, "data_path": [{"service_id": 70000}]}]);
        assert!(services_from_json(&bad_id, me).is_err());
        let bad_timeout = json!([{"service": name, "data_path": [{"service_id": 1,
            "key": {"vip": "10.96.0.1", "port": 1, "proto": "TCP"}, "affinity_timeout_seconds": -1}]}]);
        assert!(services_from_json(&bad_timeout, me).is_err());
        let nameless = json!([{"data_path": []}]);
        assert!(services_from_json(&nameless, me).is_err());
        let merged = merge_services(
            &[ServiceConfig::new(
                8,
                "10.96.0.99".parse::<IpAddr>().unwrap(),
                1,
                "tcp",
            )],
            &s,
        );
        assert_eq!(merged, s, "the controller wins on the same id");
    }

    #[test]
    fn health_checks_from_the_controller_answer() {
        let v = json!([
            {"service": {"namespace": "ns", "name": "lb"},
             "health_check": {"node_port": 32000, "local_endpoints": {"10.0.0.1": 2, "10.0.0.2": 1}}},
            {"service": {"namespace": "ns", "name": "elsewhere"},
             "health_check": {"node_port": 32001, "local_endpoints": {"10.0.0.2": 1}}},
            {"service": {"namespace": "ns", "name": "plain"}}
        ]);
        let me: Ipv4Addr = "10.0.0.1".parse().unwrap();
        let hc = |name: &str, node_port, local_endpoints| HealthCheck {
            namespace: "ns".into(),
            name: name.into(),
            node_port,
            local_endpoints,
        };
        assert_eq!(
            health_checks_from_json(&v, me).unwrap(),
            vec![hc("elsewhere", 32001, 0), hc("lb", 32000, 2)]
        );
        let bad = json!([{"service": {"namespace": "ns", "name": "x"}, "health_check": {"node_port": 0}}]);
        assert!(health_checks_from_json(&bad, me).is_err());
    }

    #[test]
    fn deltas_apply_on_the_plan_held() {
        let me: Ipv4Addr = "10.0.0.1".parse().unwrap();
        let port = |name: &str, id: u16, buckets: u32| {
            json!({"service": {"namespace": "ns", "name": name}, "data_path": [
                {"key": {"vip": format!("10.96.0.{id}"), "port": 80, "proto": "TCP"},
                 "service_id": id, "buckets": buckets}]})
        };
        let config = |id: u16, reject: bool| ServiceConfig {
            reject,
            ..ServiceConfig::new(
                id,
                format!("10.96.0.{id}").parse::<IpAddr>().unwrap(),
                80,
                "tcp",
            )
        };
        let mut plan = held_from_json(&json!([port("a", 1, 16), port("b", 2, 16)]), me).unwrap();
        assert_eq!(plan.held(), None, "a full answer without a version");
        let delta = |v: serde_json::Value, version: u64| Answer {
            version: Some(version),
            epoch: Some(7),
            ..parse_services_answer(&serde_json::to_vec(&v).unwrap(), true, me).unwrap()
        };
        // b changes, c arrives, a goes.
        plan.apply(delta(
            json!({"services": [port("b", 2, 0), port("c", 3, 16)],
                   "removed": [{"namespace": "ns", "name": "a"}]}),
            5,
        ));
        assert_eq!(plan.services(), vec![config(2, true), config(3, false)]);
        assert_eq!(plan.held(), Some((5, Some(7))));
        // An empty delta changes nothing; a removed Service never held is
        // no error.
        plan.apply(delta(
            json!({"services": [], "removed": [{"namespace": "ns", "name": "zz"}]}),
            6,
        ));
        assert_eq!(plan.services(), vec![config(2, true), config(3, false)]);
        // A full answer replaces everything.
        plan.apply(
            parse_services_answer(
                &serde_json::to_vec(&json!([port("d", 4, 16)])).unwrap(),
                false,
                me,
            )
            .unwrap(),
        );
        assert_eq!(plan.services(), vec![config(4, false)]);
        plan.forget_version();
        assert_eq!(plan.held(), None);
        assert_eq!(
            plan.services(),
            vec![config(4, false)],
            "kept after a failure"
        );
        // A delta must be an object with both lists.
        for bad in [json!([]), json!({"services": []}), json!({"removed": []})] {
            let body = serde_json::to_vec(&bad).unwrap();
            assert!(parse_services_answer(&body, true, me).is_err(), "{bad}");
        }
    }

    fn cidr(s: &str) -> Cidr {
        parse_cidr(s).unwrap()
    }

    fn cidrs(v: &[&str]) -> BTreeSet<Cidr> {
        v.iter().map(|s| cidr(s)).collect()
    }

    #[test]
    fn external_addresses_are_steered_as_host_prefixes() {
        let svc = |vip: &str| ServiceConfig::new(1, vip.parse::<IpAddr>().unwrap(), 80, "tcp");
        let node_port = ServiceConfig {
            node_port: true,
            ..svc("192.168.0.12")
        };
        let services = [
            svc("10.96.0.10"),
            svc("203.0.113.7"),
            svc("203.0.113.7"),
            svc("10.200.0.1"),
            node_port,
        ];
        let got = with_service_addrs(cidrs(&["10.96.0.0/12"]), &services);
        assert_eq!(
            got,
            cidrs(&["10.96.0.0/12", "10.200.0.1/32", "203.0.113.7/32"])
        );
        // An address the controller no longer plans goes with its Service.
        let have = got;
        let want = with_service_addrs(cidrs(&["10.96.0.0/12"]), &services[..1]);
        assert_eq!(
            cidr_changes(&have, &want, &[cidr("10.96.0.0/12")]),
            CidrChanges {
                add: vec![],
                remove: vec![cidr("10.200.0.1/32"), cidr("203.0.113.7/32")],
            }
        );
    }

    #[test]
    fn ipv6_services_and_cidrs() {
        let v = json!([
            {"service": {"namespace": "default", "name": "dual"}, "data_path": [
                {"key": {"vip": "10.96.0.10", "port": 80, "proto": "TCP"}, "service_id": 7, "buckets": 16},
                {"key": {"vip": "fd00:96::a", "port": 80, "proto": "TCP"}, "service_id": 8, "buckets": 16}
            ]}
        ]);
        let s = services_from_json(&v, "10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(
            s,
            vec![
                ServiceConfig::new(7, "10.96.0.10".parse::<IpAddr>().unwrap(), 80, "tcp"),
                ServiceConfig::new(8, "fd00:96::a".parse::<IpAddr>().unwrap(), 80, "tcp"),
            ]
        );
        let got = service_cidrs_from_json(&json!(["10.96.0.0/12", "fd00:96::1/108"])).unwrap();
        assert_eq!(
            got,
            cidrs(&["10.96.0.0/12", "fd00:96::/108"]),
            "host bits clear"
        );
        assert!(service_cidrs_from_json(&json!(["fd00:96::/129"])).is_err());
        assert_eq!(network(cidr("fd00:96::1234/112")), cidr("fd00:96::/112"));
        assert_eq!(network(cidr("fd00::1/0")), cidr("::/0"));
        // An IPv6 address outside the CIDRs is steered as a /128; one
        // inside is not, and an IPv4 prefix never covers an IPv6 address.
        let svc = |vip: &str| ServiceConfig::new(1, vip.parse::<IpAddr>().unwrap(), 80, "tcp");
        let got = with_service_addrs(
            cidrs(&["0.0.0.0/0", "fd00:96::/108"]),
            &[svc("fd00:96::a"), svc("2001:db8::7")],
        );
        assert_eq!(
            got,
            cidrs(&["0.0.0.0/0", "fd00:96::/108", "2001:db8::7/128"])
        );
    }

    #[test]
    fn service_cidrs_merge_and_change() {
        let got = service_cidrs_from_json(&json!(["10.96.0.0/12", "10.100.0.0/16"])).unwrap();
        assert_eq!(got, cidrs(&["10.96.0.0/12", "10.100.0.0/16"]));
        assert!(service_cidrs_from_json(&json!({"error": "x"})).is_err());
        assert!(service_cidrs_from_json(&json!(["10.96.0.0/40"])).is_err());
        assert!(service_cidrs_from_json(&json!([12])).is_err());

        // Host bits do not make another prefix: the configured
        // 10.96.0.1/12 and the controller's 10.96.0.0/12 are one.
        let configured = [cidr("10.96.0.1/12")];
        let want = merge_cidrs(&configured, &got);
        assert_eq!(want, cidrs(&["10.96.0.0/12", "10.100.0.0/16"]));
        assert_eq!(network(cidr("10.100.200.3/16")), cidr("10.100.0.0/16"));
        assert_eq!(network(cidr("10.1.2.3/0")), cidr("0.0.0.0/0"));
        assert_eq!(network(cidr("10.1.2.3/32")), cidr("10.1.2.3/32"));

        // The controller drops 10.100/16 and adds 10.200/16.
        let have = want;
        let want = merge_cidrs(&configured, &cidrs(&["10.200.0.0/16"]));
        assert_eq!(
            cidr_changes(&have, &want, &configured),
            CidrChanges {
                add: vec![cidr("10.200.0.0/16")],
                remove: vec![cidr("10.100.0.0/16")],
            }
        );
        assert!(
            cidr_changes(&want, &want, &configured).is_empty(),
            "idempotent"
        );
        // A configured prefix stays even if `want` lacks it.
        let changes = cidr_changes(&have, &BTreeSet::new(), &configured);
        assert_eq!(changes.remove, vec![cidr("10.100.0.0/16")]);
        assert!(changes.add.is_empty());
    }

    #[test]
    fn pod_ips_skip_host_network_and_finished_pods() {
        let pods: Vec<Pod> = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {"containers": [], "nodeName": "n1"},
                   "status": {"phase": "Running", "podIP": "10.244.1.2", "podIPs": [{"ip": "10.244.1.2"}, {"ip": "fd00::2"}]}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "host"}, "spec": {"containers": [], "hostNetwork": true},
                   "status": {"phase": "Running", "podIP": "10.200.1.2"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "done"}, "spec": {"containers": []},
                   "status": {"phase": "Succeeded", "podIP": "10.244.1.3"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pending"}, "spec": {"containers": []},
                   "status": {"phase": "Pending"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b"}, "spec": {"containers": []},
                   "status": {"phase": "Pending", "podIP": "10.244.1.4"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "six"}, "spec": {"containers": []},
                   "status": {"phase": "Running", "podIP": "fd00::7", "podIPs": [{"ip": "fd00::7"}]}}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
        let ips = pod_ips(&pods);
        let keys: Vec<String> = ips.keys().map(|i| i.to_string()).collect();
        assert_eq!(keys, vec!["10.244.1.2", "10.244.1.4", "fd00::7"]);
        let v6: Vec<Vec<String>> = ips
            .values()
            .map(|a| a.iter().map(|i| i.to_string()).collect())
            .collect();
        assert_eq!(
            v6,
            vec![vec!["fd00::2"], vec![], vec!["fd00::7"]],
            "pod a's IPv6 address with its IPv4; an IPv6-only pod by its own"
        );
    }
}
