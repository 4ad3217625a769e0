//! The Kubernetes source: kube-rs reflectors on Services, EndpointSlices
//! (`discovery.k8s.io/v1`), Nodes and, where the API server serves them,
//! ServiceCIDRs (`networking.k8s.io/v1`), with managed fields stripped, and
//! leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Services and EndpointSlices (and ServiceCIDRs) are watched with
//! kube-proxy's label selector ([`KUBE_PROXY_LABEL_SELECTOR`]): objects
//! meant for another proxy, and headless Services' slices, never arrive.
//! ServiceCIDRs feed no switch entry, so the source is ready without them.
//!
//! The source reports ready only once all three reflectors have finished
//! their initial list, so a partial list is never planned (it would delete
//! live entries). Every watch event records which object changed and pokes
//! the reconciler, which re-evaluates only that object's Service; the
//! watcher relists by itself on `410 Gone` (the store is swapped atomically
//! at the end of the relist), and a finished relist asks for a rebuild.

use std::{
    fmt::Debug,
    future::Future,
    hash::Hash,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures::TryStreamExt;
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{Node, Service},
        discovery::v1::EndpointSlice,
        networking::v1::ServiceCIDR,
    },
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    api::{ObjectMeta, PostParams},
    runtime::{
        reflector::{self, Store},
        watcher, WatchStreamExt,
    },
    Api, Client, Resource, ResourceExt,
};
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::{
    config::LeaderElectionConfig,
    controller::{Context, Source},
    model::{self, Changes, Delta, Lookup, Model, ObjectRef, KUBE_PROXY_LABEL_SELECTOR},
};

/// One RBAC permission a binary needs: (API group, resource, verbs), the
/// way a `PolicyRule` names it.
pub type Access = (&'static str, &'static str, &'static [&'static str]);

/// What [`start`] reads, cluster-wide: each reflector lists and watches
/// its kind (no `get`). `deploy/controller.yaml` grants exactly this in
/// the controller's ClusterRole (`talaria-tests`, `deploy` test).
pub const CLUSTER_ACCESS: &[Access] = &[
    ("", "services", &["list", "watch"]),
    ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
    ("", "nodes", &["list", "watch"]),
    ("networking.k8s.io", "servicecidrs", &["list", "watch"]),
];

/// What [`try_lead`] does to the Lease, in its namespace: `get` it,
/// `create` it when absent, `update` (replace) it to acquire or renew.
/// `deploy/controller.yaml` grants exactly this in a Role.
pub const LEASE_ACCESS: &[Access] = &[(
    "coordination.k8s.io",
    "leases",
    &["get", "create", "update"],
)];

/// Where a pod's service account credentials are mounted.
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Why no Kubernetes client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `api_server` is not a URL.
    #[error("api_server {url:?} is not a URL")]
    Url {
        /// What was given.
        url: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The pod's service account token or CA could not be read.
    #[error("in-cluster service account credentials")]
    InCluster(#[source] kube::config::InClusterError),
    /// The client could not be configured (kubeconfig, TLS).
    #[error("Kubernetes client")]
    Kube(#[source] kube::Error),
}

/// A client for the API server at `api_server` (`https://HOST:PORT`),
/// with the pod's service account credentials when it runs in a pod and
/// none otherwise (`kubectl proxy`, tests). Empty `api_server`: kube-rs's
/// default (`KUBECONFIG`, else in-cluster `KUBERNETES_SERVICE_HOST`/`PORT`,
/// which is the `kubernetes` ClusterIP that talaria must itself serve).
pub async fn client(api_server: &str) -> Result<Client, ClientError> {
    if api_server.is_empty() {
        return Client::try_default().await.map_err(ClientError::Kube);
    }
    let url = api_server.parse().map_err(|e| ClientError::Url {
        url: api_server.into(),
        source: Box::new(e),
    })?;
    let config = if std::path::Path::new(SERVICE_ACCOUNT_TOKEN).exists() {
        // The in-cluster config (token file, CA, namespace), pointed at
        // the address given instead of the `kubernetes` Service.
        let mut c = kube::Config::incluster_dns().map_err(ClientError::InCluster)?;
        c.cluster_url = url;
        c
    } else {
        kube::Config::new(url)
    };
    Client::try_from(config).map_err(ClientError::Kube)
}

/// Reflector stores of the four kinds.
pub struct KubeSource {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    /// Empty when the API server serves no ServiceCIDRs (before 1.33).
    service_cidrs: Store<ServiceCIDR>,
    ready: AtomicBool,
    /// Objects changed since the model last took them; starts as "all".
    pending: Arc<Mutex<Changes>>,
    /// Poked on every watch event.
    pub changed: Arc<Notify>,
}

fn lookup<K>(store: &Store<K>, r: &ObjectRef) -> Option<Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let key = reflector::ObjectRef::<K>::new(&r.name);
    let key = if r.namespace.is_empty() {
        key
    } else {
        key.within(&r.namespace)
    };
    store.get(&key)
}

impl Lookup for KubeSource {
    fn service(&self, r: &ObjectRef) -> Option<Arc<Service>> {
        lookup(&self.services, r)
    }
    fn slice(&self, r: &ObjectRef) -> Option<Arc<EndpointSlice>> {
        lookup(&self.slices, r)
    }
    fn service_cidrs(&self) -> Vec<Arc<ServiceCIDR>> {
        self.service_cidrs.state()
    }
}

impl Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("ready", &self.ready)
            .finish()
    }
}

impl Source for KubeSource {
    fn update_model(&self, model: &mut Model, full: bool) -> Delta {
        let mut changes = std::mem::take(&mut *self.pending.lock().expect("poisoned"));
        changes.all |= full;
        model.apply(&changes, self, |m| {
            let s = self.services.state();
            let e = self.slices.state();
            let n = self.nodes.state();
            m.rebuild(
                s.iter().map(|x| x.as_ref()),
                e.iter().map(|x| x.as_ref()),
                n.iter().map(|x| x.as_ref()),
            );
        })
    }

    fn model(&self) -> Model {
        let s = self.services.state();
        let e = self.slices.state();
        let n = self.nodes.state();
        let mut m = model::build(
            s.iter().map(|x| x.as_ref()),
            e.iter().map(|x| x.as_ref()),
            n.iter().map(|x| x.as_ref()),
        );
        m.set_service_cidrs(self.service_cidrs.state().iter().map(|x| x.as_ref()));
        m
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// Records one changed object of kind `K` in a [`Changes`].
type Record = fn(&mut Changes, ObjectRef);

async fn run_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    changed: Arc<Notify>,
    pending: Arc<Mutex<Changes>>,
    record: Record,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let stream = watcher(api, config.any_semantic())
        .default_backoff()
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .reflect(writer);
    futures::pin_mut!(stream);
    loop {
        match stream.try_next().await {
            Ok(Some(ev)) => {
                {
                    let mut p = pending.lock().expect("poisoned");
                    match &ev {
                        watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
                            let r = ObjectRef {
                                namespace: o.namespace().unwrap_or_default(),
                                name: o.name_any(),
                            };
                            record(&mut p, r);
                        }
                        // The store is swapped at the end of a relist.
                        watcher::Event::InitDone => p.all = true,
                        watcher::Event::Init | watcher::Event::InitApply(_) => {}
                    }
                }
                changed.notify_one();
            }
            Ok(None) => return,
            Err(e) => warn!(kind, error = %e, "watch error (retrying with backoff)"),
        }
    }
}

/// Whether the API server serves `networking.k8s.io/v1` ServiceCIDRs
/// (Kubernetes 1.33 and later). Asks until it gets an answer: a transient
/// failure at startup must not turn the watch off for good.
async fn serves_service_cidrs(client: &Client) -> bool {
    loop {
        match client
            .list_api_group_resources("networking.k8s.io/v1")
            .await
        {
            Ok(list) => return list.resources.iter().any(|r| r.name == "servicecidrs"),
            Err(kube::Error::Api(s)) if s.code == 404 => return false,
            Err(e) => {
                warn!(error = %e, "API discovery of networking.k8s.io/v1 failed (retrying)");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// The watch configuration for Services and EndpointSlices: kube-proxy's.
fn kube_proxy_watch() -> watcher::Config {
    watcher::Config::default().labels(KUBE_PROXY_LABEL_SELECTOR)
}

/// Starts reflectors on the four kinds (cluster-wide). Returns the source
/// and the future that drives them (spawn it).
pub fn start(client: Client) -> (Arc<KubeSource>, impl Future<Output = ()> + Send + 'static) {
    let (services, sw) = reflector::store::<Service>();
    let (slices, ew) = reflector::store::<EndpointSlice>();
    let (nodes, nw) = reflector::store::<Node>();
    let (service_cidrs, cw) = reflector::store::<ServiceCIDR>();
    let src = Arc::new(KubeSource {
        services,
        slices,
        nodes,
        service_cidrs,
        ready: AtomicBool::new(false),
        pending: Arc::new(Mutex::new(Changes {
            all: true,
            ..Changes::default()
        })),
        changed: Arc::new(Notify::new()),
    });
    let s = src.clone();
    let fut = async move {
        let ready = {
            let s = s.clone();
            async move {
                let ok = s.services.wait_until_ready().await.is_ok()
                    && s.slices.wait_until_ready().await.is_ok()
                    && s.nodes.wait_until_ready().await.is_ok();
                if ok {
                    info!("initial list of Services, EndpointSlices and Nodes complete");
                    s.ready.store(true, Ordering::SeqCst);
                    s.changed.notify_one();
                }
            }
        };
        let cidrs = {
            let (client, changed, pending) = (client.clone(), s.changed.clone(), s.pending.clone());
            async move {
                if !serves_service_cidrs(&client).await {
                    info!(
                        "the API server serves no networking.k8s.io/v1 ServiceCIDRs: not watched"
                    );
                    return;
                }
                run_reflector(
                    Api::<ServiceCIDR>::all(client),
                    kube_proxy_watch(),
                    cw,
                    changed,
                    pending,
                    |c, _| c.service_cidrs = true,
                )
                .await;
            }
        };
        tokio::join!(
            run_reflector(
                Api::<Service>::all(client.clone()),
                kube_proxy_watch(),
                sw,
                s.changed.clone(),
                s.pending.clone(),
                |c, r| {
                    c.services.insert(r);
                }
            ),
            run_reflector(
                Api::<EndpointSlice>::all(client.clone()),
                kube_proxy_watch(),
                ew,
                s.changed.clone(),
                s.pending.clone(),
                |c, r| {
                    c.slices.insert(r);
                }
            ),
            run_reflector(
                Api::<Node>::all(client),
                watcher::Config::default(),
                nw,
                s.changed.clone(),
                s.pending.clone(),
                |c, _| c.nodes = true
            ),
            cidrs,
            ready,
        );
    };
    (src, fut)
}

/// The holder identity: config, else $POD_NAME, else $HOSTNAME.
pub fn identity(cfg: &LeaderElectionConfig) -> String {
    cfg.identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("talaria-controller-{}", std::process::id()))
}

/// One acquire-or-renew attempt. `Ok(true)` when we hold the Lease after it.
pub async fn try_lead(
    api: &Api<Lease>,
    cfg: &LeaderElectionConfig,
    me: &str,
) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let dur = i32::try_from(cfg.lease_seconds).unwrap_or(15);
    let conflict = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409);
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.into()),
                    lease_duration_seconds: Some(dur),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if conflict(&e) => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let mine = spec.holder_identity.as_deref() == Some(me);
            let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
                (Some(MicroTime(t)), Some(d)) => {
                    Timestamp::now().as_millisecond() > t.as_millisecond() + i64::from(d) * 1000
                }
                _ => true,
            };
            let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
            if !(mine || expired || free) {
                return Ok(false);
            }
            if !mine {
                spec.acquire_time = Some(now.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                spec.holder_identity = Some(me.into());
            }
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(dur);
            // replace carries resourceVersion: a concurrent writer gets 409.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if conflict(&e) => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Makes `ctx` write to switches only while it holds the Lease: leadership
/// drops to false now and then follows [`lead`] (spawn the future). Planning
/// goes on meanwhile, so a new leader starts with a plan.
pub fn elect(
    ctx: &Context,
    client: Client,
    cfg: LeaderElectionConfig,
) -> impl Future<Output = ()> + Send + 'static {
    ctx.leader.send_replace(false);
    lead(client, cfg, ctx.leader.clone())
}

/// Runs leader election forever, publishing leadership on `leader`.
/// Renews every lease/3; steps down when a renewal has not succeeded for
/// a whole lease duration.
pub async fn lead(client: Client, cfg: LeaderElectionConfig, leader: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let me = identity(&cfg);
    let period = Duration::from_secs(u64::from(cfg.lease_seconds.max(3)) / 3);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        match try_lead(&api, &cfg, &me).await {
            Ok(held) => {
                if held {
                    last_ok = tokio::time::Instant::now();
                }
                if *leader.borrow() != held {
                    info!(identity = %me, held, "leadership changed");
                }
                leader.send_replace(held);
            }
            Err(e) => {
                warn!(error = %e, "lease renewal failed");
                if last_ok.elapsed() > Duration::from_secs(u64::from(cfg.lease_seconds)) {
                    leader.send_replace(false);
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}
