//! REST API (axum). Described in `controller/openapi.yaml`.
//!
//! Table and counter endpoints read the switch live over P4Runtime; the
//! services endpoints show the controller's model and plan.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, MethodRouter},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use talaria_common::rest::{ANSWER_DELTA, ANSWER_FULL};
use talaria_tables::dump::{dump_tables, TableDump};

use crate::{
    answers::{Answer, ServiceReport},
    controller::{Context, SwitchStatus},
    model::ObjectRef,
    p4rt::client,
};

/// A switch as listed by `/v1/switches`.
#[derive(Debug, Serialize)]
pub struct SwitchReport {
    /// Id.
    pub id: String,
    /// gRPC address.
    pub address: String,
    /// Device id.
    pub device_id: u64,
    /// Status.
    pub status: SwitchStatus,
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({ "error": msg.into() }))).into_response()
}

/// Every route: its path (axum's `{param}` syntax is OpenAPI's too) and
/// what serves it. `controller/tests/openapi.rs` checks this list and the
/// responses against `controller/openapi.yaml`.
pub fn routes() -> Vec<(&'static str, MethodRouter<Arc<Context>>)> {
    vec![
        ("/healthz", get(|| async { "ok" })),
        ("/readyz", get(readyz)),
        ("/metrics", get(metrics)),
        ("/v1/services", get(services)),
        ("/v1/services/{namespace}/{name}", get(service)),
        ("/v1/switches", get(switches)),
        ("/v1/switches/{id}/tables", get(tables)),
        ("/v1/switches/{id}/tables/{table}", get(table)),
        ("/v1/switches/{id}/counters", get(counters)),
        ("/v1/status", get(status)),
        ("/v1/service-cidrs", get(service_cidrs)),
    ]
}

/// The router.
pub fn router(ctx: Arc<Context>) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |r, (path, handler)| r.route(path, handler))
        .with_state(ctx)
}

async fn readyz(State(ctx): State<Arc<Context>>) -> Response {
    match ctx.ready() {
        Ok(()) => "ready".into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn metrics(State(ctx): State<Arc<Context>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ctx.metrics.render(),
    )
        .into_response()
}

fn service_reports(ctx: &Context) -> Vec<ServiceReport> {
    let p = ctx.planned.read().expect("poisoned");
    let desired = p.planner.desired();
    p.model
        .services
        .values()
        .map(|v| ServiceReport::new(desired, v))
        .collect()
}

/// The headers of a `/v1/services` answer (one definition, shared with the
/// node agents).
pub use talaria_common::rest::{ANSWER_HEADER, PLAN_EPOCH_HEADER, PLAN_VERSION_HEADER};

/// Longest `wait_ms` honoured.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// `/v1/services` query: a long poll when `after` is given.
#[derive(Debug, Deserialize)]
struct ServicesQuery {
    /// The plan version the caller holds: the answer waits until the plan
    /// is another one (newer, or another controller's after a restart).
    after: Option<u64>,
    /// The epoch of `after` (from [`PLAN_EPOCH_HEADER`]): when it is this
    /// controller's, the answer is a delta after `after`.
    epoch: Option<u64>,
    /// How long to wait at most, in ms (default 30 s, at most 60 s); then
    /// the answer is the current plan either way.
    wait_ms: Option<u64>,
}

/// Every Service. With `?after=<version>` a long poll: node agents learn a
/// new Service when it is planned, not on their next poll; with `epoch`
/// too, they read only what changed.
async fn services(State(ctx): State<Arc<Context>>, Query(q): Query<ServicesQuery>) -> Response {
    let Some(after) = q.after else {
        let version = ctx.version();
        let header = [(PLAN_VERSION_HEADER, version.to_string())];
        return (header, Json(service_reports(&ctx))).into_response();
    };
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(30_000)).min(MAX_WAIT);
    let mut rx = ctx.version_tx.subscribe();
    let _ = tokio::time::timeout(wait, rx.wait_for(|v| *v != after)).await;
    // Long polls (node agents) are answered from the per-Service reports
    // kept with the plan: what they read (ports, health checks) changes
    // only with the version, while a plain GET also shows notes that may
    // change without one.
    let (version, epoch, answer) = {
        let p = ctx.planned.read().expect("poisoned");
        let held = q.epoch.map(|e| (e, after));
        (
            p.version,
            p.answers.epoch(),
            p.answers.answer(p.version, held),
        )
    };
    let (kind, body) = match answer {
        Answer::Full(b) => (ANSWER_FULL, b),
        Answer::Delta(b) => (ANSWER_DELTA, b),
    };
    (
        [
            (PLAN_VERSION_HEADER, version.to_string()),
            (PLAN_EPOCH_HEADER, epoch.to_string()),
            (ANSWER_HEADER, kind.to_string()),
            (
                header::CONTENT_TYPE.as_str(),
                "application/json".to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

async fn service(
    State(ctx): State<Arc<Context>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let want = ObjectRef { namespace, name };
    let found = {
        let p = ctx.planned.read().expect("poisoned");
        p.model
            .services
            .get(&want)
            .map(|v| ServiceReport::new(p.planner.desired(), v))
    };
    match found {
        Some(r) => Json(r).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no service {want}")),
    }
}

fn switch_reports(ctx: &Context) -> Vec<SwitchReport> {
    ctx.switches
        .iter()
        .map(|s| SwitchReport {
            id: s.cfg.id.clone(),
            address: s.cfg.address.clone(),
            device_id: s.cfg.device_id,
            status: s.status.read().expect("poisoned").clone(),
        })
        .collect()
}

async fn switches(State(ctx): State<Arc<Context>>) -> Json<Vec<SwitchReport>> {
    Json(switch_reports(&ctx))
}

async fn status(State(ctx): State<Arc<Context>>) -> Json<Value> {
    let v = {
        let p = ctx.planned.read().expect("poisoned");
        let (sid, bid) = (p.planner.service_id_usage(), p.planner.backend_id_usage());
        let notes: Vec<Value> = p
            .model
            .services
            .values()
            .filter(|v| !v.notes.is_empty())
            .map(|v| json!({"service": v.service.to_string(), "notes": v.notes}))
            .collect();
        let skipped: Vec<Value> = p
            .model
            .skipped
            .iter()
            .map(|k| json!({"kind": k.kind, "object": k.object.to_string(), "reason": k.reason, "detail": k.detail}))
            .collect();
        let desired = p.planner.desired();
        json!({
            "plan_version": p.version,
            "services": p.model.services.len(),
            "service_ports": desired.ports().count(),
            "desired_entries": desired.counts().into_iter().map(|(t, c)| (t.to_string(), c)).collect::<BTreeMap<_, _>>(),
            "service_ids": {"in_use": sid.0, "quarantined": sid.1},
            "backend_ids": {"in_use": bid.0, "quarantined": bid.1},
            "not_in_data_path": notes,
            "skipped": skipped,
            "unsupported_ports": p.model.unsupported_ports,
            "service_cidrs": p.model.service_cidrs,
            "plan_errors": p.planner.errors(),
        })
    };
    let mut v = v;
    v["ready"] = json!(ctx.ready().err().unwrap_or_else(|| "ready".into()));
    v["leader"] = json!(ctx.is_leader());
    v["takeovers"] = json!(ctx.takeovers());
    v["switches"] = json!(switch_reports(&ctx));
    Json(v)
}

/// The ServiceCIDRs' prefixes (IPv4, then IPv6), with the plan version
/// they belong to (a change to them alone makes a new version: see
/// `reconcile`).
async fn service_cidrs(State(ctx): State<Arc<Context>>) -> Response {
    let p = ctx.planned.read().expect("poisoned");
    (
        [(PLAN_VERSION_HEADER, p.version.to_string())],
        Json(json!(p.model.service_cidrs)),
    )
        .into_response()
}

/// A gRPC client for reads from switch `id`: the sync task's, or a new
/// connection while it has none.
async fn reader(ctx: &Context, id: &str) -> Result<(client::P4Client, u64), Response> {
    let Some(sw) = ctx.switch(id) else {
        return Err(error(StatusCode::NOT_FOUND, format!("no switch {id}")));
    };
    let reader = sw.reader.read().expect("poisoned").clone();
    let c = match reader {
        Some(c) => c,
        None => client::channel(&sw.cfg.address, std::time::Duration::from_secs(2))
            .await
            .map_err(|e| error(StatusCode::BAD_GATEWAY, format!("switch {id}: {e}")))?,
    };
    Ok((c, sw.cfg.device_id))
}

/// The live contents of the P4Info tables with ids `ids` (all for `None`),
/// named from the P4Info.
async fn live_tables(
    ctx: &Context,
    id: &str,
    ids: Option<&[u32]>,
) -> Result<Vec<TableDump>, Response> {
    let (mut c, device_id) = reader(ctx, id).await?;
    let all: Vec<u32>;
    let which = match ids {
        Some(ids) => ids,
        None => {
            all = ctx.schema.tables().iter().map(|t| t.id).collect();
            &all
        }
    };
    let raw = client::read_tables(&mut c, device_id, which)
        .await
        .map_err(|e| error(StatusCode::BAD_GATEWAY, format!("switch {id}: {e}")))?;
    Ok(dump_tables(&ctx.schema, ids, &raw))
}

async fn tables(State(ctx): State<Arc<Context>>, Path(id): Path<String>) -> Response {
    match live_tables(&ctx, &id, None).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn table(
    State(ctx): State<Arc<Context>>,
    Path((id, table)): Path<(String, String)>,
) -> Response {
    // Any table of the P4Info, by full name or alias.
    let Some(t) = ctx
        .schema
        .tables()
        .iter()
        .find(|t| t.name == table || t.alias == table)
    else {
        return error(StatusCode::NOT_FOUND, format!("no table {table}"));
    };
    match live_tables(&ctx, &id, Some(&[t.id])).await {
        Ok(mut v) => Json(v.remove(0)).into_response(),
        Err(r) => r,
    }
}

async fn counters(State(ctx): State<Arc<Context>>, Path(id): Path<String>) -> Response {
    let (mut c, device_id) = match reader(&ctx, &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    match client::read_counters(&mut c, device_id, &ctx.schema).await {
        Ok(m) => {
            let v: BTreeMap<String, Vec<Value>> = m
                .into_iter()
                .map(|(name, cells)| {
                    let rows = cells
                        .into_iter()
                        .map(|(i, (p, b))| {
                            let mut row = json!({"index": i, "packets": p, "bytes": b});
                            if name.ends_with("drop_counter") {
                                row["reason"] = json!(drop_reason(i));
                            } else if name.ends_with("lb_event_counter") {
                                row["event"] = json!(lb_event(i));
                            }
                            row
                        })
                        .collect();
                    (name, rows)
                })
                .collect();
            Json(v).into_response()
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("switch {id}: {e}")),
    }
}

/// Drop reason name of a `drop_counter` index (common/src/drop.rs).
fn drop_reason(i: i64) -> &'static str {
    u8::try_from(i)
        .ok()
        .and_then(talaria_common::drop::DropReason::from_code)
        .map(|r| r.name())
        .unwrap_or("unknown")
}

/// Event name of an `lb_event_counter` index (common/src/drop.rs).
fn lb_event(i: i64) -> &'static str {
    usize::try_from(i)
        .ok()
        .and_then(|i| talaria_common::drop::LbEvent::ALL.get(i))
        .map(|e| e.name())
        .unwrap_or("unknown")
}

/// Serves the API on `listener` until the task is dropped. TCP_NODELAY:
/// a long poll's answer must not wait for the poller's delayed ACK.
pub async fn serve(ctx: Arc<Context>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
    });
    axum::serve(listener, router(ctx)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counter cells are named by their index, as the switch counts them
    /// (`LB_EVENT_*`, `DROP_*` in p4/constants.p4).
    #[test]
    fn counter_indices_are_named() {
        let events: Vec<&str> = (0..7).map(lb_event).collect();
        assert_eq!(
            events,
            [
                "new_flow",
                "cookie_hit",
                "cookie_stale",
                "reply",
                "ts_cookie_hit",
                "ts_cookie_miss",
                "unknown"
            ]
        );
        assert_eq!(lb_event(-1), "unknown");
        assert_eq!(drop_reason(1), "malformed");
        assert_eq!(drop_reason(0), "unknown");
    }
}
