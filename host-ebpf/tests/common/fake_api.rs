//! The node agent's view of a cluster for the Kubernetes mode tests: the
//! shared fake API server (`talaria-fake-apiserver`; the agent reads Pods,
//! with `fieldSelector=spec.nodeName=…`) plus a fake controller's `GET
//! /v1/services` and `GET /v1/service-cidrs`, on one address.

use std::sync::{Arc, Mutex};

use axum::{
    extract::State,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};
use talaria_fake_apiserver::{router, Resource};

pub use talaria_fake_apiserver::Server;

#[derive(Default)]
pub struct Api {
    /// The fake Kubernetes API server (Pods).
    pub k8s: talaria_fake_apiserver::Shared,
    /// The controller's `/v1/services` answer.
    pub services: Value,
    /// How many times `/v1/services` was fetched.
    pub service_fetches: u32,
    /// The controller's `/v1/service-cidrs` answer (null: `[]`).
    pub service_cidrs: Value,
}

pub type Shared = Arc<Mutex<Api>>;

impl Api {
    /// Adds or replaces a pod (ADDED/MODIFIED to watchers).
    pub fn put_pod(&mut self, pod: Value) {
        self.k8s.lock().unwrap().put(Resource::Pods, pod);
    }

    /// Deletes a pod of namespace `default` (DELETED to watchers).
    pub fn delete_pod(&mut self, name: &str) {
        self.k8s
            .lock()
            .unwrap()
            .delete(Resource::Pods, "default", name);
    }

    /// Every `fieldSelector` a pod list or watch was called with.
    pub fn field_selectors(&self) -> Vec<String> {
        let k8s = self.k8s.lock().unwrap();
        k8s.field_selectors
            .iter()
            .filter(|(r, _)| *r == Resource::Pods)
            .map(|(_, s)| s.clone())
            .collect()
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

/// Serves `api` on 127.0.0.1 (of the calling thread's network namespace)
/// on a runtime of its own thread, until the [`Server`] is dropped.
pub fn serve(api: Shared) -> Server {
    let k8s = api.lock().unwrap().k8s.clone();
    let controller = Router::new()
        .route("/v1/services", get(controller_services))
        .route("/v1/service-cidrs", get(controller_service_cidrs))
        .with_state(api);
    Server::start(router(k8s).merge(controller)).unwrap()
}
