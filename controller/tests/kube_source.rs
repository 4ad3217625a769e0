//! The Kubernetes source against a small local fake API server (axum) that
//! speaks list and watch with resourceVersions, bookmarks and a `410 Gone`
//! that forces a relist; plus Lease leader election against the same server.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use futures::StreamExt;
use serde_json::{json, Value};
use talaria_controller::{
    config::{Config, LeaderElectionConfig, SwitchConfig},
    controller::{self, Context, Source},
    p4rt::fake::{self, FakeSwitch},
    source::{
        kube::{elect, start, try_lead},
        MemorySource, Objects,
    },
};
use tokio::sync::broadcast;

/// One resource collection.
#[derive(Default)]
struct Kind {
    /// name → object (namespace folded into the name key).
    objects: BTreeMap<String, Value>,
    events: Option<broadcast::Sender<String>>,
}

#[derive(Default)]
struct Api {
    rv: u64,
    kinds: BTreeMap<&'static str, Kind>,
    lists: BTreeMap<&'static str, u32>,
    /// The last labelSelector asked for, per kind.
    selectors: BTreeMap<&'static str, String>,
    lease: Option<Value>,
    /// Lease GETs served (each acquire-or-renew attempt makes one).
    lease_gets: u32,
}

type Shared = Arc<Mutex<Api>>;

fn key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap()
    )
}

impl Api {
    fn kind(&mut self, k: &'static str) -> &mut Kind {
        let kind = self.kinds.entry(k).or_default();
        kind.events.get_or_insert_with(|| broadcast::channel(64).0);
        kind
    }

    /// Stores `o` with a fresh resourceVersion and sends `ADDED`/`MODIFIED`
    /// to watchers unless `silent`.
    fn put(&mut self, k: &'static str, mut o: Value, silent: bool) {
        self.rv += 1;
        o["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let kind = self.kind(k);
        let ty = if kind.objects.contains_key(&key(&o)) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        kind.objects.insert(key(&o), o.clone());
        if !silent {
            let _ = kind
                .events
                .as_ref()
                .unwrap()
                .send(json!({"type": ty, "object": o}).to_string());
        }
    }

    fn send(&mut self, k: &'static str, line: Value) {
        let _ = self.kind(k).events.as_ref().unwrap().send(line.to_string());
    }
}

fn list_kind(path: &str) -> (&'static str, &'static str, &'static str) {
    match path {
        "services" => ("services", "ServiceList", "v1"),
        "nodes" => ("nodes", "NodeList", "v1"),
        "servicecidrs" => ("servicecidrs", "ServiceCIDRList", "networking.k8s.io/v1"),
        _ => ("endpointslices", "EndpointSliceList", "discovery.k8s.io/v1"),
    }
}

async fn collection(
    State(api): State<Shared>,
    path: &'static str,
    q: BTreeMap<String, String>,
) -> Response {
    let (k, list_kind, api_version) = list_kind(path);
    if let Some(sel) = q.get("labelSelector") {
        api.lock().unwrap().selectors.insert(k, sel.clone());
    }
    if q.get("watch").map(String::as_str) == Some("true") {
        let rx = {
            let mut a = api.lock().unwrap();
            a.kind(k).events.as_ref().unwrap().subscribe()
        };
        let stream = tokio_stream_from(rx).map(|l| Ok::<_, std::io::Error>(format!("{l}\n")));
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let mut a = api.lock().unwrap();
    *a.lists.entry(k).or_default() += 1;
    let rv = a.rv.to_string();
    let items: Vec<Value> = a.kind(k).objects.values().cloned().collect();
    Json(json!({
        "apiVersion": api_version,
        "kind": list_kind,
        "metadata": {"resourceVersion": rv},
        "items": items,
    }))
    .into_response()
}

fn tokio_stream_from(
    rx: broadcast::Receiver<String>,
) -> impl futures::Stream<Item = String> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(l) => return Some((l, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    })
}

async fn lease_get(
    State(api): State<Shared>,
    Path((_ns, _name)): Path<(String, String)>,
) -> Response {
    let mut a = api.lock().unwrap();
    a.lease_gets += 1;
    match &a.lease {
        Some(l) => Json(l.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})),
        )
            .into_response(),
    }
}

fn conflict() -> Response {
    (
        StatusCode::CONFLICT,
        Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"})),
    )
        .into_response()
}

async fn lease_create(
    State(api): State<Shared>,
    Path(_ns): Path<String>,
    Json(mut l): Json<Value>,
) -> Response {
    let mut a = api.lock().unwrap();
    if a.lease.is_some() {
        return conflict();
    }
    a.rv += 1;
    l["metadata"]["resourceVersion"] = json!(a.rv.to_string());
    a.lease = Some(l.clone());
    (StatusCode::CREATED, Json(l)).into_response()
}

async fn lease_put(
    State(api): State<Shared>,
    Path((_ns, _name)): Path<(String, String)>,
    Json(mut l): Json<Value>,
) -> Response {
    let mut a = api.lock().unwrap();
    let cur = a
        .lease
        .as_ref()
        .map(|c| c["metadata"]["resourceVersion"].clone());
    if cur != Some(l["metadata"]["resourceVersion"].clone()) {
        return conflict();
    }
    a.rv += 1;
    l["metadata"]["resourceVersion"] = json!(a.rv.to_string());
    a.lease = Some(l.clone());
    Json(l).into_response()
}

async fn serve(api: Shared) -> String {
    let app = Router::new()
        .route(
            "/api/v1/services",
            get(
                |s: State<Shared>, Query(q): Query<BTreeMap<String, String>>| {
                    collection(s, "services", q)
                },
            ),
        )
        .route(
            "/api/v1/nodes",
            get(
                |s: State<Shared>, Query(q): Query<BTreeMap<String, String>>| {
                    collection(s, "nodes", q)
                },
            ),
        )
        .route(
            "/apis/discovery.k8s.io/v1/endpointslices",
            get(
                |s: State<Shared>, Query(q): Query<BTreeMap<String, String>>| {
                    collection(s, "endpointslices", q)
                },
            ),
        )
        .route(
            "/apis/networking.k8s.io/v1",
            get(|| async {
                Json(json!({"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": "networking.k8s.io/v1",
                    "resources": [{"name": "servicecidrs", "singularName": "servicecidr",
                        "namespaced": false, "kind": "ServiceCIDR", "verbs": ["list", "watch"]}]}))
            }),
        )
        .route(
            "/apis/networking.k8s.io/v1/servicecidrs",
            get(
                |s: State<Shared>, Query(q): Query<BTreeMap<String, String>>| {
                    collection(s, "servicecidrs", q)
                },
            ),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
            get(lease_get).put(lease_put),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
            axum::routing::post(lease_create),
        )
        .with_state(api);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

fn client(url: &str) -> kube::Client {
    let cfg = kube::Config::new(url.parse().unwrap());
    kube::Client::try_from(cfg).unwrap()
}

fn service(vip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "managedFields": [{"manager": "kubectl"}]},
        "spec": {"clusterIP": vip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}], "selector": {"app": "web"}}})
}

fn slice(ips: &[&str]) -> Value {
    let eps: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "nodeName": "n1"}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": eps})
}

fn node() -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.11"}]}})
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn backends(src: &dyn Source) -> usize {
    src.model().ports.values().map(|p| p.active.len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflectors_list_watch_bookmark_and_relist_on_410() {
    let api: Shared = Arc::default();
    {
        let mut a = api.lock().unwrap();
        a.put("services", service("10.96.0.10"), true);
        a.put("nodes", node(), true);
        a.put("endpointslices", slice(&["10.244.1.5"]), true);
    }
    let url = serve(api.clone()).await;
    let (src, run) = start(client(&url));
    let task = tokio::spawn(run);
    wait_for("initial list", || src.is_ready()).await;
    let m = src.model();
    assert_eq!(m.ports.len(), 1);
    assert_eq!(backends(src.as_ref()), 1);
    assert!(m.skipped.is_empty(), "{:?}", m.skipped);

    // Watch event: a second endpoint.
    wait_for("watchers connected", || {
        let a = api.lock().unwrap();
        a.kinds
            .values()
            .all(|k| k.events.as_ref().unwrap().receiver_count() > 0)
    })
    .await;
    api.lock().unwrap().put(
        "endpointslices",
        slice(&["10.244.1.5", "10.244.1.6"]),
        false,
    );
    wait_for("watch ADDED/MODIFIED applied", || {
        backends(src.as_ref()) == 2
    })
    .await;

    // A bookmark moves the resourceVersion on and changes nothing.
    {
        let mut a = api.lock().unwrap();
        a.rv += 1;
        let rv = a.rv.to_string();
        a.send(
            "endpointslices",
            json!({"type": "BOOKMARK", "object": {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"resourceVersion": rv}}}),
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(backends(src.as_ref()), 2);

    // A change the watch never reports, then 410 Gone: the reflector must
    // relist and pick the change up.
    let lists_before = api.lock().unwrap().lists["services"];
    {
        let mut a = api.lock().unwrap();
        a.put("services", service("10.96.0.99"), true);
        a.send(
            "services",
            json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410, "message": "too old resource version"}}),
        );
    }
    wait_for("relist after 410", || {
        src.model()
            .ports
            .keys()
            .any(|k| k.vip == "10.96.0.99".parse::<std::net::Ipv4Addr>().unwrap())
    })
    .await;
    assert!(api.lock().unwrap().lists["services"] > lists_before);
    task.abort();
}

fn service_cidr(name: &str, cidrs: &[&str]) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": {"name": name}, "spec": {"cidrs": cidrs}})
}

/// Services and EndpointSlices are watched with kube-proxy's label
/// selector; ServiceCIDRs are watched and reach the model, incrementally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_proxy_selector_and_service_cidrs() {
    let api: Shared = Arc::default();
    {
        let mut a = api.lock().unwrap();
        a.put("services", service("10.96.0.10"), true);
        a.put("nodes", node(), true);
        a.put("endpointslices", slice(&["10.244.1.5"]), true);
        a.put(
            "servicecidrs",
            service_cidr("kubernetes", &["10.96.0.0/12"]),
            true,
        );
    }
    let url = serve(api.clone()).await;
    let (src, run) = start(client(&url));
    let task = tokio::spawn(run);
    wait_for("initial list", || src.is_ready()).await;
    wait_for("ServiceCIDRs listed", || {
        !src.model().service_cidrs.is_empty()
    })
    .await;
    let mut m = src.model();
    let cidrs = |m: &talaria_controller::model::Model| -> Vec<String> {
        m.service_cidrs.iter().map(ToString::to_string).collect()
    };
    assert_eq!(cidrs(&m), ["10.96.0.0/12"]);
    {
        let a = api.lock().unwrap();
        for kind in ["services", "endpointslices"] {
            assert_eq!(
                a.selectors.get(kind).map(String::as_str),
                Some(talaria_controller::model::KUBE_PROXY_LABEL_SELECTOR),
                "{kind}"
            );
        }
        assert!(!a.selectors.contains_key("nodes"));
    }

    // A second ServiceCIDR arrives by watch: an incremental update takes it.
    let _ = src.update_model(&mut m, false);
    wait_for("ServiceCIDR watch connected", || {
        let mut a = api.lock().unwrap();
        a.kind("servicecidrs")
            .events
            .as_ref()
            .unwrap()
            .receiver_count()
            > 0
    })
    .await;
    api.lock().unwrap().put(
        "servicecidrs",
        service_cidr("extra", &["10.100.0.0/16", "fd00::/108"]),
        false,
    );
    wait_for("ServiceCIDR watch event applied", || {
        let _ = src.update_model(&mut m, false);
        m.service_cidrs.len() == 2
    })
    .await;
    assert_eq!(cidrs(&m), ["10.96.0.0/12", "10.100.0.0/16"]);
    task.abort();
}

#[tokio::test]
async fn lease_leader_election() {
    let api: Shared = Arc::default();
    let url = serve(api.clone()).await;
    let lease_api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client(&url), "talaria-system");
    let cfg = LeaderElectionConfig {
        namespace: "talaria-system".into(),
        name: "talaria-controller".into(),
        identity: None,
        lease_seconds: 15,
    };
    assert!(
        try_lead(&lease_api, &cfg, "a").await.unwrap(),
        "a creates the lease"
    );
    assert!(
        !try_lead(&lease_api, &cfg, "b").await.unwrap(),
        "b must wait"
    );
    assert!(try_lead(&lease_api, &cfg, "a").await.unwrap(), "a renews");
    // Expire the lease: b takes over.
    {
        let mut a = api.lock().unwrap();
        let l = a.lease.as_mut().unwrap();
        l["spec"]["renewTime"] = json!("2020-01-01T00:00:00.000000Z");
    }
    assert!(
        try_lead(&lease_api, &cfg, "b").await.unwrap(),
        "b takes an expired lease"
    );
    let l = api.lock().unwrap().lease.clone().unwrap();
    assert_eq!(l["spec"]["holderIdentity"], "b");
    assert_eq!(l["spec"]["leaseTransitions"], 1);
    assert!(!try_lead(&lease_api, &cfg, "a").await.unwrap());
}

fn now_micro() -> Value {
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ))
    .unwrap()
}

/// The binary's wiring (`elect`): a replica that does not hold the Lease
/// plans but never writes to the switch; once the holder's Lease expires it
/// takes over and syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes() {
    let api: Shared = Arc::default();
    api.lock().unwrap().lease = Some(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "talaria-controller", "namespace": "talaria-system", "resourceVersion": "1"},
        "spec": {"holderIdentity": "other", "leaseDurationSeconds": 3, "renewTime": now_micro()},
    }));
    let url = serve(api.clone()).await;

    let switch = FakeSwitch::default();
    let server = fake::spawn(switch.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let src = MemorySource::new();
    let mut objects = Objects::default();
    objects.put_node(serde_json::from_value(node()).unwrap());
    objects.put_service(serde_json::from_value(service("10.96.0.10")).unwrap());
    objects.put_slice(serde_json::from_value(slice(&["10.244.1.5"])).unwrap());
    src.replace(objects);
    let p4info =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../p4/talaria.p4info.txtpb");
    let config = Config {
        switches: vec![SwitchConfig {
            id: "s1".into(),
            address: format!("http://{}", server.addr),
            device_id: 1,
        }],
        p4info: p4info.clone(),
        backoff_min_ms: Duration::from_millis(50),
        backoff_max_ms: Duration::from_millis(200),
        ..Config::default()
    };
    let info = talaria_p4rt::p4info::load(&p4info).unwrap();
    let ctx = Context::new(config, src.clone(), src.changed.clone(), info, Vec::new()).unwrap();
    let cfg = LeaderElectionConfig {
        namespace: "talaria-system".into(),
        name: "talaria-controller".into(),
        identity: Some("me".into()),
        lease_seconds: 3,
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(elect(&ctx, client(&url), cfg));
    controller::spawn(&ctx, &mut tasks);

    // "other" keeps renewing: we try (and fail) to take the Lease a few
    // times, plan meanwhile, and never touch the switch.
    let gets = api.lock().unwrap().lease_gets;
    wait_for("three lease attempts and a plan", || {
        let mut a = api.lock().unwrap();
        a.lease.as_mut().unwrap()["spec"]["renewTime"] = now_micro();
        a.lease_gets >= gets + 3 && ctx.version() > 0
    })
    .await;
    assert!(!*ctx.leader.borrow());
    assert_eq!(
        switch.state.lock().unwrap().write_rpcs,
        0,
        "a follower wrote"
    );
    assert!(switch.state.lock().unwrap().pipeline.is_none());
    assert_eq!(ctx.switches[0].status.read().unwrap().sessions, 0);
    assert_eq!(
        api.lock().unwrap().lease.as_ref().unwrap()["spec"]["holderIdentity"],
        "other"
    );

    // "other" stops renewing; its Lease expires and we take over.
    api.lock().unwrap().lease.as_mut().unwrap()["spec"]["renewTime"] =
        json!("2020-01-01T00:00:00.000000Z");
    wait_for("leadership and a synced switch", || ctx.ready().is_ok()).await;
    assert!(*ctx.leader.borrow());
    assert_eq!(
        api.lock().unwrap().lease.as_ref().unwrap()["spec"]["holderIdentity"],
        "me"
    );
    let entries: usize = switch
        .state
        .lock()
        .unwrap()
        .tables
        .values()
        .map(|t| t.len())
        .sum();
    assert_eq!(entries, ctx.desired_len());
    tasks.abort_all();
}
