//! A small fake Kubernetes API server: list and watch, with
//! resourceVersions, of the kinds talaria's controller and node agent read
//! (Services, EndpointSlices, Nodes, ServiceCIDRs, Pods). The controller's
//! tests (`controller/tests/kube_source.rs`), the node agent's
//! (`host-ebpf/tests/kubernetes_mode.rs`, `netns_e2e.rs`) and the lab
//! (`talaria-lab bench-new-service`) run it.
//!
//! - A list answers every object of the kind with the current
//!   resourceVersion.
//! - A watch first replays the events after the resourceVersion it names
//!   (the last [`HISTORY`] events are kept; a watch from before them gets
//!   `410 Gone` as an `ERROR` event, as the real server does), then streams
//!   new ones. A watcher that falls [`WATCH_BUFFER`] events behind gets a
//!   `410 Gone` too, never a silent gap.
//! - `fieldSelector=spec.nodeName=<node>` is honoured for Pods (the node
//!   agent watches only its own). Label selectors are recorded
//!   ([`Api::label_selectors`]), not applied: the objects given carry none
//!   of the labels kube-proxy's selector excludes.
//! - Discovery: `GET /apis/networking.k8s.io/v1` names ServiceCIDRs.
//!
//! Leases are served by `talaria_controller::source::fake_lease`: merge its
//! routes into [`router`]'s.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    body::Body,
    extract::Query,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// How many events each collection keeps for watches that resume from a
/// resourceVersion.
pub const HISTORY: usize = 100_000;

/// How many events a watcher may fall behind before it is sent `410 Gone`.
pub const WATCH_BUFFER: usize = 4096;

/// The resourceVersion of events sent with [`Api::send`]: every watcher
/// gets them, whatever resourceVersion it watches from.
const RAW: u64 = u64::MAX;

/// A collection the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `v1` Services.
    Services,
    /// `discovery.k8s.io/v1` EndpointSlices.
    EndpointSlices,
    /// `v1` Nodes.
    Nodes,
    /// `networking.k8s.io/v1` ServiceCIDRs.
    ServiceCidrs,
    /// `v1` Pods.
    Pods,
}

impl Resource {
    /// Every collection.
    pub const ALL: [Resource; 5] = [
        Self::Services,
        Self::EndpointSlices,
        Self::Nodes,
        Self::ServiceCidrs,
        Self::Pods,
    ];

    /// The cluster-wide collection's path.
    pub fn path(self) -> &'static str {
        match self {
            Self::Services => "/api/v1/services",
            Self::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            Self::Nodes => "/api/v1/nodes",
            Self::ServiceCidrs => "/apis/networking.k8s.io/v1/servicecidrs",
            Self::Pods => "/api/v1/pods",
        }
    }

    /// The list's `apiVersion` and `kind`.
    fn list(self) -> (&'static str, &'static str) {
        match self {
            Self::Services => ("v1", "ServiceList"),
            Self::EndpointSlices => ("discovery.k8s.io/v1", "EndpointSliceList"),
            Self::Nodes => ("v1", "NodeList"),
            Self::ServiceCidrs => ("networking.k8s.io/v1", "ServiceCIDRList"),
            Self::Pods => ("v1", "PodList"),
        }
    }
}

/// One collection's objects and events.
struct Collection {
    /// `namespace/name` → object.
    objects: BTreeMap<String, Value>,
    /// (resourceVersion, event) of the last [`HISTORY`] events.
    history: VecDeque<(u64, Value)>,
    /// The resourceVersion of the newest event dropped from `history`.
    forgotten: u64,
    events: broadcast::Sender<(u64, Value)>,
}

impl Default for Collection {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            forgotten: 0,
            events: broadcast::channel(WATCH_BUFFER).0,
        }
    }
}

/// What the fake holds, and what it was asked.
#[derive(Default)]
pub struct Api {
    rv: u64,
    collections: BTreeMap<Resource, Collection>,
    /// Lists served, per collection.
    pub lists: BTreeMap<Resource, u32>,
    /// The last `labelSelector` asked for, per collection.
    pub label_selectors: BTreeMap<Resource, String>,
    /// Every `fieldSelector` a list or watch was called with (`""`: none),
    /// in order.
    pub field_selectors: Vec<(Resource, String)>,
}

/// The fake's state, shared with its handlers.
pub type Shared = Arc<Mutex<Api>>;

/// `namespace/name` of an object (`/name` for a cluster-scoped one).
pub fn key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

impl Api {
    fn collection(&mut self, r: Resource) -> &mut Collection {
        self.collections.entry(r).or_default()
    }

    /// The resourceVersion of the last change.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Stores `o` (by `metadata.namespace`/`name`) with a fresh
    /// resourceVersion and sends `ADDED` or `MODIFIED` to the watchers.
    /// Returns the resourceVersion.
    pub fn put(&mut self, r: Resource, o: Value) -> u64 {
        self.store(r, o, true)
    }

    /// [`Api::put`] without an event: a change the watches never report
    /// (a list sees it).
    pub fn put_silently(&mut self, r: Resource, o: Value) -> u64 {
        self.store(r, o, false)
    }

    fn store(&mut self, r: Resource, mut o: Value, notify: bool) -> u64 {
        self.rv += 1;
        let rv = self.rv;
        o["metadata"]["resourceVersion"] = json!(rv.to_string());
        let c = self.collection(r);
        let ty = if c.objects.insert(key(&o), o.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if notify {
            c.emit(rv, json!({"type": ty, "object": o}));
        }
        rv
    }

    /// Deletes the object `namespace/name` and sends `DELETED`; whether it
    /// existed.
    pub fn delete(&mut self, r: Resource, namespace: &str, name: &str) -> bool {
        let k = format!("{namespace}/{name}");
        let Some(mut o) = self.collection(r).objects.remove(&k) else {
            return false;
        };
        self.rv += 1;
        let rv = self.rv;
        o["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.collection(r)
            .emit(rv, json!({"type": "DELETED", "object": o}));
        true
    }

    /// Sends a `BOOKMARK` at a fresh resourceVersion (it changes nothing).
    pub fn bookmark(&mut self, r: Resource) {
        self.rv += 1;
        let rv = self.rv;
        let (api_version, list) = r.list();
        let kind = list.trim_end_matches("List");
        self.collection(r).emit(
            rv,
            json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind,
                "metadata": {"resourceVersion": rv.to_string()}}}),
        );
    }

    /// Sends `event` as it is to every current watcher of `r` (not kept
    /// for resumed watches): e.g. an `ERROR` with `410 Gone`.
    pub fn send(&mut self, r: Resource, event: Value) {
        let _ = self.collection(r).events.send((RAW, event));
    }

    /// How many watches of `r` are open.
    pub fn watchers(&self, r: Resource) -> usize {
        self.collections
            .get(&r)
            .map_or(0, |c| c.events.receiver_count())
    }

    /// The objects of `r`, by `namespace/name`.
    pub fn objects(&self, r: Resource) -> Vec<Value> {
        self.collections
            .get(&r)
            .map_or_else(Vec::new, |c| c.objects.values().cloned().collect())
    }
}

impl Collection {
    fn emit(&mut self, rv: u64, event: Value) {
        if self.history.len() == HISTORY {
            if let Some((old, _)) = self.history.pop_front() {
                self.forgotten = old;
            }
        }
        self.history.push_back((rv, event.clone()));
        let _ = self.events.send((rv, event));
    }
}

/// The `410 Gone` a watch from a resourceVersion no longer kept gets.
fn gone() -> Value {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "Expired", "code": 410, "message": "too old resource version"}})
}

/// Whether `event` passes a `fieldSelector` (only `spec.nodeName=` is
/// understood; `ERROR` and `BOOKMARK` events always pass).
fn selected(event: &Value, selector: &str) -> bool {
    let o = event.get("object").unwrap_or(event);
    match selector.strip_prefix("spec.nodeName=") {
        Some(node) if o["kind"] != "Status" && event["type"] != "BOOKMARK" => {
            o["spec"]["nodeName"] == node
        }
        _ => true,
    }
}

async fn collection(api: Shared, r: Resource, q: BTreeMap<String, String>) -> Response {
    let fields = q.get("fieldSelector").cloned().unwrap_or_default();
    let mut a = api.lock().expect("fake API state");
    if let Some(sel) = q.get("labelSelector") {
        a.label_selectors.insert(r, sel.clone());
    }
    a.field_selectors.push((r, fields.clone()));
    if q.get("watch").map(String::as_str) == Some("true") {
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(a.rv);
        let c = a.collection(r);
        let rx = c.events.subscribe();
        let replay: Vec<Value> = if from < c.forgotten {
            vec![gone()]
        } else {
            c.history
                .iter()
                .filter(|(rv, _)| *rv > from)
                .map(|(_, e)| e.clone())
                .collect()
        };
        drop(a);
        // After a 410 (lagged) the state is None and the stream ends.
        let live = futures::stream::unfold(Some(rx), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(ev) => Some((ev, Some(rx))),
                // Behind: the watcher must relist, not miss events.
                Err(broadcast::error::RecvError::Lagged(_)) => Some(((RAW, gone()), None)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .filter_map(move |(rv, e)| std::future::ready((rv > from).then_some(e)));
        let stream = futures::stream::iter(replay)
            .chain(live)
            .filter(move |e| std::future::ready(selected(e, &fields)))
            .map(|e| Ok::<_, std::io::Error>(format!("{e}\n")));
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .expect("a streaming response");
    }
    *a.lists.entry(r).or_default() += 1;
    let rv = a.rv.to_string();
    let items: Vec<Value> = a
        .collection(r)
        .objects
        .values()
        .filter(|o| selected(o, &fields))
        .cloned()
        .collect();
    let (api_version, kind) = r.list();
    Json(json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"resourceVersion": rv}, "items": items}))
    .into_response()
}

/// The fake's routes: every [`Resource`] (list and watch) and the
/// `networking.k8s.io/v1` discovery document. Merge other routes (a
/// controller's REST API, Leases) into it.
pub fn router(api: Shared) -> Router {
    let mut app = Router::new().route(
        "/apis/networking.k8s.io/v1",
        get(|| async {
            Json(json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "networking.k8s.io/v1",
                "resources": [{"name": "servicecidrs", "singularName": "servicecidr",
                    "namespaced": false, "kind": "ServiceCIDR", "verbs": ["list", "watch"]}]}))
        }),
    );
    for r in Resource::ALL {
        let api = api.clone();
        app = app.route(
            r.path(),
            get(move |Query(q): Query<BTreeMap<String, String>>| collection(api.clone(), r, q)),
        );
    }
    app
}

/// Serves `app` on `l`. Every connection gets `TCP_NODELAY`, as Go (the
/// real API server) gives them: without it, the second of two watch events
/// written back to back waits for the watcher's delayed ACK (about 40 ms).
async fn serve_on(l: tokio::net::TcpListener, app: Router) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let l = l.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(l, app).await
}

/// Serves `app` on 127.0.0.1 (an unused port) on the current tokio
/// runtime, until the runtime ends. Returns the address.
pub async fn serve(app: Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = l.local_addr().expect("local address");
    tokio::spawn(async move { serve_on(l, app).await.expect("serving the fake") });
    addr
}

/// A fake served on a runtime of its own thread; stops, closing every
/// connection, when dropped.
pub struct Server {
    /// `http://ADDR` of the first listener.
    pub url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    /// Serves `app` on 127.0.0.1 (an unused port) of the calling thread's
    /// network namespace.
    pub fn start(app: Router) -> std::io::Result<Self> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        Self::start_on(app, vec![l])
    }

    /// Serves `app` on listeners already bound (in whatever network
    /// namespaces they were created in).
    pub fn start_on(app: Router, listeners: Vec<std::net::TcpListener>) -> std::io::Result<Self> {
        let first = listeners
            .first()
            .ok_or_else(|| std::io::Error::other("no listener"))?
            .local_addr()?;
        for l in &listeners {
            l.set_nonblocking(true)?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for l in listeners {
                        let app = app.clone();
                        tasks.spawn(async move {
                            serve_on(tokio::net::TcpListener::from_std(l)?, app).await
                        });
                    }
                    tokio::select! {
                        _ = tasks.join_next() => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every connection task.
            })?;
        Ok(Self {
            url: format!("http://{first}"),
            _stop: stop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name_field_selector() {
        let pod = json!({"kind": "Pod", "spec": {"nodeName": "n1"}});
        let ev = json!({"type": "ADDED", "object": pod});
        assert!(selected(&ev, "spec.nodeName=n1"));
        assert!(!selected(&ev, "spec.nodeName=n2"));
        assert!(selected(&pod, "spec.nodeName=n1"));
        assert!(!selected(&pod, "spec.nodeName=n2"));
        assert!(selected(&gone(), "spec.nodeName=n2"));
        assert!(selected(&ev, ""));
    }

    #[test]
    fn resource_versions_and_history() {
        let mut a = Api::default();
        let r = Resource::Services;
        let svc = json!({"metadata": {"name": "a", "namespace": "d"}});
        assert_eq!(a.put(r, svc.clone()), 1);
        assert_eq!(a.put(r, svc), 2);
        assert!(a.delete(r, "d", "a"));
        assert!(!a.delete(r, "d", "a"));
        let c = a.collection(r);
        let types: Vec<&str> = c
            .history
            .iter()
            .map(|(_, e)| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"]);
        assert_eq!(c.history.back().unwrap().0, 3);
        assert_eq!(a.resource_version(), 3);
        assert!(a.objects(r).is_empty());
    }
}
