//! A small fake Kubernetes API server (Pods: list and watch, honouring
//! `fieldSelector=spec.nodeName=…`) plus the controller's `GET
//! /v1/services` and `GET /v1/service-cidrs`, for the Kubernetes mode tests. Built on axum, like the
//! controller's own fake (controller/tests/kube_source.rs), but standalone.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    body::Body,
    extract::{Query, State},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::broadcast;

#[derive(Default)]
pub struct Api {
    rv: u64,
    /// name → Pod.
    pods: BTreeMap<String, Value>,
    events: Option<broadcast::Sender<Value>>,
    /// Every `fieldSelector` a pod list or watch was called with.
    pub field_selectors: Vec<String>,
    /// The controller's `/v1/services` answer.
    pub services: Value,
    /// How many times `/v1/services` was fetched.
    pub service_fetches: u32,
    /// The controller's `/v1/service-cidrs` answer (null: `[]`).
    pub service_cidrs: Value,
}

pub type Shared = Arc<Mutex<Api>>;

impl Api {
    fn events(&mut self) -> &broadcast::Sender<Value> {
        self.events.get_or_insert_with(|| broadcast::channel(64).0)
    }

    /// Adds or replaces a pod (ADDED/MODIFIED to watchers).
    pub fn put_pod(&mut self, mut pod: Value) {
        self.rv += 1;
        pod["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        let ty = if self.pods.contains_key(&name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.pods.insert(name, pod.clone());
        let _ = self.events().send(json!({"type": ty, "object": pod}));
    }

    /// Deletes a pod (DELETED to watchers).
    pub fn delete_pod(&mut self, name: &str) {
        if let Some(mut pod) = self.pods.remove(name) {
            self.rv += 1;
            pod["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            let _ = self
                .events()
                .send(json!({"type": "DELETED", "object": pod}));
        }
    }
}

/// A Pod object in `namespace default`.
pub fn pod(name: &str, node: &str, ip: &str, host_network: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"nodeName": node, "hostNetwork": host_network, "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

/// A `/v1/services` answer with one data-path entry per (id, vip, port,
/// proto).
pub fn services(entries: &[(u16, &str, u16, &str)]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|(id, vip, port, proto)| {
                json!({"service": {"namespace": "default", "name": format!("svc-{id}")},
                    "cluster_ips": [vip], "headless": false, "selectorless": false, "ports": [], "keys": [], "notes": [],
                    "data_path": [{"service": {"namespace": "default", "name": format!("svc-{id}")}, "port_name": "p",
                        "key": {"vip": vip, "port": port, "proto": proto}, "service_id": id, "buckets": 16,
                        "active": {}, "draining": {}}]})
            })
            .collect(),
    )
}

fn selected(pod: &Value, selector: Option<&String>) -> bool {
    match selector.and_then(|s| s.strip_prefix("spec.nodeName=")) {
        Some(node) => pod["spec"]["nodeName"] == node,
        None => true,
    }
}

async fn pods(State(api): State<Shared>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let selector = q.get("fieldSelector").cloned();
    let mut a = api.lock().unwrap();
    a.field_selectors.push(selector.clone().unwrap_or_default());
    if q.get("watch").map(String::as_str) == Some("true") {
        let rx = a.events().subscribe();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(v) => return Some((v, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                }
            }
        })
        .filter(move |ev| std::future::ready(selected(&ev["object"], selector.as_ref())))
        .map(|ev| Ok::<_, std::io::Error>(format!("{ev}\n")));
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let items: Vec<Value> = a
        .pods
        .values()
        .filter(|p| selected(p, selector.as_ref()))
        .cloned()
        .collect();
    Json(json!({"apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": a.rv.to_string()}, "items": items}))
    .into_response()
}

async fn controller_services(State(api): State<Shared>) -> Response {
    let mut a = api.lock().unwrap();
    a.service_fetches += 1;
    Json(a.services.clone()).into_response()
}

async fn controller_service_cidrs(State(api): State<Shared>) -> Response {
    let a = api.lock().unwrap();
    match &a.service_cidrs {
        Value::Null => Json(json!([])).into_response(),
        v => Json(v.clone()).into_response(),
    }
}

/// A running fake server; stops (closing every connection) when dropped.
pub struct Server {
    pub url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Serves `api` on 127.0.0.1 (of the calling thread's network namespace)
/// on a runtime of its own thread.
pub fn serve(api: Shared) -> Server {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new()
                .route("/api/v1/pods", get(pods))
                .route("/v1/services", get(controller_services))
                .route("/v1/service-cidrs", get(controller_service_cidrs))
                .with_state(api);
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", l.local_addr().unwrap()))
                .unwrap();
            tokio::select! {
                r = axum::serve(l, app) => r.unwrap(),
                _ = stopped => {}
            }
        });
        // Dropping the runtime drops every connection task.
    });
    Server {
        url: rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap(),
        _stop: stop,
    }
}
