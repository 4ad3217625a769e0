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
use tokio::sync::Notify;
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

/// What [`Elector`] does to the Lease, in its namespace: `get` it,
/// `create` it when absent, `update` (replace) it to acquire, renew or
/// release.
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

/// Why a Lease attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API server answered with an error.
    #[error("Lease request")]
    Api(#[source] kube::Error),
    /// The request did not finish within the retry period.
    #[error("Lease request timed out after {0:?}")]
    Timeout(Duration),
}

/// One replica's view of the Lease, as client-go's `LeaderElector` keeps
/// it: the last record seen and when *we* saw it change, on our own
/// monotonic clock. Expiry is judged from that (`observed + the record's
/// leaseDurationSeconds`), never from the holder's `renewTime`, which is
/// the holder's wall clock and may be anything.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaderElectionConfig,
    me: String,
    /// The last record seen, and when we first saw it.
    observed: Option<(LeaseSpec, tokio::time::Instant)>,
}

impl Elector {
    /// An elector for `me` on the Lease `cfg` names.
    pub fn new(api: Api<Lease>, cfg: LeaderElectionConfig, me: impl Into<String>) -> Self {
        Self {
            api,
            cfg,
            me: me.into(),
            observed: None,
        }
    }

    /// Our identity.
    pub fn identity(&self) -> &str {
        &self.me
    }

    /// The holder in the last record seen (empty: none).
    pub fn observed_holder(&self) -> &str {
        self.observed
            .as_ref()
            .and_then(|(s, _)| s.holder_identity.as_deref())
            .unwrap_or("")
    }

    /// Whether the last record seen names us (client-go `IsLeader`).
    pub fn is_leader(&self) -> bool {
        self.observed_holder() == self.me
    }

    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaseError> {
        let limit = self.cfg.retry_period();
        match tokio::time::timeout(limit, f).await {
            Ok(r) => r.map_err(LeaseError::Api),
            Err(_) => Err(LeaseError::Timeout(limit)),
        }
    }

    /// One acquire-or-renew attempt at `now` (our clock), client-go's
    /// `tryAcquireOrRenew`. `Ok(true)` when we hold the Lease after it.
    /// Every request is bounded by the retry period; the replace carries
    /// the resourceVersion read, so of two concurrent writers one gets 409
    /// (`Ok(false)`).
    pub async fn try_acquire_or_renew(
        &mut self,
        now: tokio::time::Instant,
    ) -> Result<bool, LeaseError> {
        let wall = MicroTime(Timestamp::now());
        let dur = i32::try_from(self.cfg.lease_seconds).unwrap_or(i32::MAX);
        let name = self.cfg.name.clone();
        let Some(mut lease) = self.bounded(self.api.get_opt(&name)).await? else {
            let spec = LeaseSpec {
                holder_identity: Some(self.me.clone()),
                lease_duration_seconds: Some(dur),
                acquire_time: Some(wall.clone()),
                renew_time: Some(wall),
                lease_transitions: Some(0),
                ..Default::default()
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec.clone()),
            };
            let r = self
                .bounded(self.api.create(&PostParams::default(), &lease))
                .await;
            return self.wrote(r, spec, now);
        };
        let old = lease.spec.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(s, _)| *s != old) {
            self.observed = Some((old.clone(), now));
        }
        let observed_at = self.observed.as_ref().map_or(now, |(_, t)| *t);
        let holder = old.holder_identity.as_deref().unwrap_or("");
        let mine = holder == self.me;
        // The holder's own duration, as client-go reads it.
        let held_for = old
            .lease_duration_seconds
            .and_then(|d| u64::try_from(d).ok())
            .filter(|d| *d > 0)
            .map_or(self.cfg.lease_duration(), Duration::from_secs);
        if !holder.is_empty() && !mine && observed_at + held_for > now {
            return Ok(false);
        }
        let spec = LeaseSpec {
            holder_identity: Some(self.me.clone()),
            lease_duration_seconds: Some(dur),
            acquire_time: if mine {
                old.acquire_time.clone()
            } else {
                Some(wall.clone())
            },
            renew_time: Some(wall),
            lease_transitions: Some(old.lease_transitions.unwrap_or(0) + if mine { 0 } else { 1 }),
            ..old
        };
        lease.spec = Some(spec.clone());
        let r = self
            .bounded(self.api.replace(&name, &PostParams::default(), &lease))
            .await;
        self.wrote(r, spec, now)
    }

    /// The outcome of writing `spec` at `now`: held (and observed) when it
    /// was stored; not held on `409` (another writer was first).
    fn wrote(
        &mut self,
        r: Result<Lease, LeaseError>,
        spec: LeaseSpec,
        now: tokio::time::Instant,
    ) -> Result<bool, LeaseError> {
        match r {
            Ok(_) => {
                self.observed = Some((spec, now));
                Ok(true)
            }
            Err(LeaseError::Api(kube::Error::Api(s))) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if we hold it (client-go `ReleaseOnCancel`): the
    /// holder is cleared, so a standby takes over at its next attempt
    /// instead of after a lease duration. Call it only once this replica
    /// has stopped writing.
    pub async fn release(&mut self) -> Result<(), LeaseError> {
        let name = self.cfg.name.clone();
        let Some(mut lease) = self.bounded(self.api.get_opt(&name)).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.me.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        // client-go leaves a 1 s lease on release.
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.bounded(self.api.replace(&name, &PostParams::default(), &lease))
            .await?;
        self.observed = None;
        Ok(())
    }
}

/// A delay of the retry period plus up to 1.2 times it (client-go's
/// `wait.JitterUntil` with `JitterFactor` 1.2), so standbys do not retry
/// in lockstep.
fn jittered(period: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let frac = (h.finish() % 1000) as f64 / 1000.0;
    period + period.mul_f64(crate::config::LEASE_JITTER_FACTOR * frac)
}

/// Makes `ctx` write to switches only while it holds the Lease: leadership
/// drops to false now and then follows [`lead`] (spawn the future). Planning
/// goes on meanwhile, so a new leader starts with a plan; each time it
/// becomes leader it adopts the ids in the switches before writing
/// ([`Context::set_leader`]).
pub fn elect(
    ctx: &Arc<Context>,
    client: Client,
    cfg: LeaderElectionConfig,
) -> impl Future<Output = ()> + Send + 'static {
    ctx.set_leader(false);
    let c = ctx.clone();
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let me = identity(&cfg);
    lead(Elector::new(api, cfg, me), move |held| c.set_leader(held))
}

/// Runs leader election forever, client-go's way, calling `set_leader`
/// on every change:
///
/// - acquire: one attempt every retry period (jittered) until we hold the
///   Lease; a standby takes it only once the record has not changed for
///   the holder's lease duration, by our clock;
/// - renew: one attempt a retry period after the last success; leadership
///   is dropped as soon as the Lease names another holder, or when no
///   renewal has succeeded within the renew deadline, measured from the
///   start of the last successful one (the request cannot have reached the
///   API server before that, so every standby's expiry is later than it).
pub async fn lead(mut el: Elector, set_leader: impl Fn(bool) + Send + 'static) {
    use tokio::time::{sleep, sleep_until, timeout_at, Instant};
    let retry = el.cfg.retry_period();
    let renew_deadline = el.cfg.renew_deadline();
    loop {
        let mut last = loop {
            let started = Instant::now();
            match el.try_acquire_or_renew(started).await {
                Ok(true) => break started,
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, source = ?std::error::Error::source(&e), "Lease acquire attempt failed")
                }
            }
            sleep(jittered(retry)).await;
        };
        info!(identity = %el.me, "acquired the Lease: leading");
        set_leader(true);
        let why = loop {
            let deadline = last + renew_deadline;
            sleep_until((Instant::now() + retry).min(deadline)).await;
            if Instant::now() >= deadline {
                break "not renewed within the renew deadline";
            }
            let started = Instant::now();
            match timeout_at(deadline, el.try_acquire_or_renew(started)).await {
                Ok(Ok(true)) => last = started,
                Ok(Ok(false)) if !el.is_leader() => break "the Lease names another holder",
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, source = ?std::error::Error::source(&e), "Lease renewal failed")
                }
                Err(_) => break "not renewed within the renew deadline",
            }
        };
        set_leader(false);
        warn!(identity = %el.me, why, "lost the Lease: stopped writing");
    }
}
