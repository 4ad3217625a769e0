//! A fake Kubernetes API server that serves one `coordination.k8s.io/v1`
//! Lease (whatever its name and namespace): `get`, `create` and `update`
//! (replace) with resourceVersions, `409 Conflict` on a stale one, as the
//! real API server's optimistic concurrency does. Leader election is tested
//! against it (`controller/tests/kube_source.rs`), and the lab runs it for
//! its two controllers (`talaria-lab lease-server`).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};

/// What the fake holds.
#[derive(Debug, Default)]
pub struct LeaseState {
    /// The Lease, as JSON (`None`: absent, `404`).
    pub lease: Option<Value>,
    /// The last resourceVersion handed out.
    pub rv: u64,
    /// GETs served (each acquire-or-renew attempt makes one).
    pub gets: u32,
    /// Successful creates and replaces.
    pub writes: u32,
    /// When the last of them was served.
    pub last_write: Option<std::time::Instant>,
    /// Every request hangs (never answers) while set: an API server that
    /// stopped responding.
    pub hang: bool,
}

/// The fake; clones share the state.
#[derive(Debug, Clone, Default)]
pub struct FakeLeases {
    state: Arc<Mutex<LeaseState>>,
}

type Shared = Arc<Mutex<LeaseState>>;

fn status(code: StatusCode, reason: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": reason, "code": code.as_u16(), "message": reason});
    (code, Json(body)).into_response()
}

/// Stores `l` as a client's write, with a fresh resourceVersion.
fn store(a: &mut LeaseState, l: &mut Value) {
    a.rv += 1;
    a.writes += 1;
    a.last_write = Some(std::time::Instant::now());
    l["metadata"]["resourceVersion"] = json!(a.rv.to_string());
    a.lease = Some(l.clone());
}

/// Never returns while the fake hangs.
async fn hang(s: &Shared) {
    while s.lock().expect("poisoned").hang {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn lease_get(State(s): State<Shared>, Path(_): Path<(String, String)>) -> Response {
    hang(&s).await;
    let mut a = s.lock().expect("poisoned");
    a.gets += 1;
    match &a.lease {
        Some(l) => Json(l.clone()).into_response(),
        None => status(StatusCode::NOT_FOUND, "NotFound"),
    }
}

async fn lease_create(
    State(s): State<Shared>,
    Path(_): Path<String>,
    Json(mut l): Json<Value>,
) -> Response {
    hang(&s).await;
    let mut a = s.lock().expect("poisoned");
    if a.lease.is_some() {
        return status(StatusCode::CONFLICT, "AlreadyExists");
    }
    store(&mut a, &mut l);
    (StatusCode::CREATED, Json(l)).into_response()
}

async fn lease_put(
    State(s): State<Shared>,
    Path(_): Path<(String, String)>,
    Json(mut l): Json<Value>,
) -> Response {
    hang(&s).await;
    let mut a = s.lock().expect("poisoned");
    let cur = a
        .lease
        .as_ref()
        .map(|c| c["metadata"]["resourceVersion"].clone());
    if cur != Some(l["metadata"]["resourceVersion"].clone()) {
        return status(StatusCode::CONFLICT, "Conflict");
    }
    store(&mut a, &mut l);
    Json(l).into_response()
}

impl FakeLeases {
    /// The state, locked (tests read and change the Lease through it).
    pub fn state(&self) -> MutexGuard<'_, LeaseState> {
        self.state.lock().expect("poisoned")
    }

    /// Stores `lease` as if some client had written it (a fresh
    /// resourceVersion).
    pub fn put(&self, mut lease: Value) {
        let mut a = self.state();
        a.rv += 1;
        lease["metadata"]["resourceVersion"] = json!(a.rv.to_string());
        a.lease = Some(lease);
    }

    /// The holder the Lease names ("" when none or no Lease).
    pub fn holder(&self) -> String {
        self.state()
            .lease
            .as_ref()
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The Lease routes, to serve alone or merged into a larger fake.
    pub fn routes(&self) -> Router {
        Router::new()
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(lease_get).put(lease_put),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                post(lease_create),
            )
            .with_state(self.state.clone())
    }

    /// Serves the Lease routes on `addr` (plain HTTP) from a spawned task;
    /// returns the address bound.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let l = tokio::net::TcpListener::bind(addr).await?;
        let bound = l.local_addr()?;
        let app = self.routes();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                tracing::error!(%e, "fake Lease API server failed");
            }
        });
        Ok(bound)
    }
}
