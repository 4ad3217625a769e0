//! The running controller: a [`Context`] shared by the reconciler (source →
//! model → plan), one sync task per switch (plan → diff → write) and the
//! REST API.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use talaria_p4rt::p4::{config::v1::P4Info, v1::p4_runtime_client::P4RuntimeClient};
use tokio::sync::{watch, Notify};
use tonic::transport::Channel;
use tracing::{debug, info, instrument, warn};

use crate::{
    config::{Config, SwitchConfig},
    diff::{self, Op},
    metrics::{Metrics, SkipLabel, SwitchLabel, TableLabel},
    model::{Model, Skipped},
    p4rt::{client::ConnectParams, ClientError, Codec, SwitchConn},
    plan::{Plan, Planner},
    state::SwitchState,
};

/// Something that yields the current cluster objects as a model.
pub trait Source: Send + Sync {
    /// Builds the model from the source's current objects.
    fn model(&self) -> Model;

    /// False until the source has loaded everything once (a partial
    /// initial list must never be planned: it would delete entries).
    fn is_ready(&self) -> bool {
        true
    }
}

/// Errors of a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Some ports could not be planned (ids exhausted).
    #[error("{0} service ports left out of the plan")]
    Partial(usize),
}

/// A published plan.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one per plan.
    pub version: u64,
    /// When the change that led to this plan was noticed.
    pub trigger: Instant,
    /// The model it came from.
    pub model: Arc<Model>,
    /// The plan.
    pub plan: Plan,
}

/// What the REST API shows about a switch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SwitchStatus {
    /// Session up and primary.
    pub connected: bool,
    /// This controller pushed the pipeline (in the current session).
    pub pushed_pipeline: bool,
    /// Sessions started so far.
    pub sessions: u64,
    /// Plan version the switch holds (0 = none yet).
    pub synced_version: u64,
    /// Entries per table as last synced.
    pub entries: std::collections::BTreeMap<String, usize>,
    /// Updates written in total.
    pub updates_written: u64,
    /// Per-update failures in total.
    pub write_errors: u64,
    /// Entries on the switch that did not decode (left alone).
    pub undecodable: usize,
    /// Last error, if the last session ended in one.
    pub last_error: Option<String>,
}

/// One configured switch.
#[derive(Debug)]
pub struct SwitchHandle {
    /// Its config.
    pub cfg: SwitchConfig,
    /// Status for the API.
    pub status: RwLock<SwitchStatus>,
    /// A gRPC client for live reads while connected.
    pub reader: RwLock<Option<P4RuntimeClient<Channel>>>,
}

/// Everything the controller's tasks share.
pub struct Context {
    /// Configuration.
    pub config: Config,
    /// Object source.
    pub source: Arc<dyn Source>,
    /// Poked by the source on every change.
    pub changed: Arc<Notify>,
    /// Ids and bucket history.
    pub planner: Mutex<Planner>,
    /// Latest plan.
    pub plan_tx: watch::Sender<Option<Arc<Snapshot>>>,
    /// Switches.
    pub switches: Vec<Arc<SwitchHandle>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Entry codec (ids from our P4Info).
    pub codec: Arc<Codec>,
    /// Our P4Info.
    pub p4info: Arc<P4Info>,
    /// Device config pushed with it.
    pub device_config: Arc<Vec<u8>>,
    /// True while this replica may write (leader election).
    pub leader: watch::Sender<bool>,
    /// Set once ids were adopted from a switch (or adoption was given up).
    adopted: watch::Sender<bool>,
    planned: Mutex<bool>,
    version: AtomicU64,
    last_skipped: Mutex<BTreeSet<Skipped>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("switches", &self.switches.len())
            .finish()
    }
}

impl Context {
    /// A context for `config`, reading objects from `source`.
    pub fn new(
        config: Config,
        source: Arc<dyn Source>,
        changed: Arc<Notify>,
        p4info: P4Info,
        device_config: Vec<u8>,
    ) -> Result<Arc<Self>, crate::p4rt::CodecError> {
        let codec = Arc::new(Codec::new(&p4info)?);
        let switches = config
            .switches
            .iter()
            .map(|s| {
                Arc::new(SwitchHandle {
                    cfg: s.clone(),
                    status: RwLock::default(),
                    reader: RwLock::default(),
                })
            })
            .collect();
        let planner = Planner::new(config.buckets, config.id_quarantine_ms);
        let metrics = Metrics::default();
        for s in &config.switches {
            // Export every per-switch series from the start, at zero.
            let l = SwitchLabel {
                switch: s.id.clone(),
            };
            let _ = metrics.write_errors.get_or_create(&l);
            let _ = metrics.writes.get_or_create(&l);
            let _ = metrics.reconnects.get_or_create(&l);
            let _ = metrics.sync_seconds.get_or_create(&l);
        }
        Ok(Arc::new(Self {
            config,
            source,
            changed,
            planner: Mutex::new(planner),
            plan_tx: watch::channel(None).0,
            switches,
            metrics,
            codec,
            p4info: Arc::new(p4info),
            device_config: Arc::new(device_config),
            leader: watch::channel(true).0,
            adopted: watch::channel(false).0,
            planned: Mutex::new(false),
            version: AtomicU64::new(0),
            last_skipped: Mutex::default(),
        }))
    }

    /// The latest plan.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.plan_tx.borrow().clone()
    }

    /// A switch by id.
    pub fn switch(&self, id: &str) -> Option<&Arc<SwitchHandle>> {
        self.switches.iter().find(|s| s.cfg.id == id)
    }

    /// Adopts ids from a switch's tables, if no plan was made yet.
    fn try_adopt(&self, switch: &str, actual: &SwitchState) {
        let planned = self.planned.lock().expect("poisoned");
        if *planned || *self.adopted.borrow() {
            return;
        }
        let warnings = self.planner.lock().expect("poisoned").adopt(actual);
        for w in &warnings {
            warn!(switch, "not adopted: {w}");
        }
        info!(
            switch,
            services = actual.service_v4.len(),
            backends = actual.backend.len(),
            "adopted ids from switch"
        );
        self.adopted.send_replace(true);
    }

    /// True when a plan exists and every switch holds it.
    pub fn ready(&self) -> Result<(), String> {
        let Some(s) = self.snapshot() else {
            return Err("no plan yet".into());
        };
        for sw in &self.switches {
            let st = sw.status.read().expect("poisoned");
            if !st.connected {
                return Err(format!("switch {} not connected", sw.cfg.id));
            }
            if st.synced_version != s.version {
                return Err(format!("switch {} not synced", sw.cfg.id));
            }
        }
        Ok(())
    }
}

/// Builds the model, plans and publishes. Logs newly skipped objects.
#[instrument(skip_all, fields(version))]
pub fn reconcile(ctx: &Context, trigger: Instant) -> Result<Arc<Snapshot>, ReconcileError> {
    let t0 = Instant::now();
    let model = ctx.source.model();
    {
        let mut last = ctx.last_skipped.lock().expect("poisoned");
        let now: BTreeSet<Skipped> = model.skipped.iter().cloned().collect();
        for s in now.difference(&last) {
            warn!(
                kind = s.kind,
                object = %s.object,
                reason = s.reason,
                "skipped: {}",
                s.detail
            );
        }
        ctx.metrics.skipped.clear();
        for s in &now {
            ctx.metrics
                .skipped
                .get_or_create(&SkipLabel {
                    kind: s.kind.into(),
                    reason: s.reason.into(),
                })
                .inc();
        }
        *last = now;
    }
    let plan = {
        let mut planned = ctx.planned.lock().expect("poisoned");
        *planned = true;
        ctx.planner
            .lock()
            .expect("poisoned")
            .plan(&model, &ctx.config.fabric, Instant::now())
    };
    let errors = plan.errors.len();
    for e in &plan.errors {
        warn!("not planned: {e}");
    }
    let version = ctx.version.fetch_add(1, Ordering::SeqCst) + 1;
    tracing::Span::current().record("version", version);
    let snap = Arc::new(Snapshot {
        version,
        trigger,
        model: Arc::new(model),
        plan,
    });
    ctx.metrics.plan_seconds.observe(t0.elapsed().as_secs_f64());
    ctx.metrics.reconciles.inc();
    debug!(
        ports = snap.plan.ports.len(),
        entries = snap.plan.state.len(),
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "planned"
    );
    ctx.plan_tx.send_replace(Some(snap.clone()));
    if errors > 0 {
        return Err(ReconcileError::Partial(errors));
    }
    Ok(snap)
}

/// Waits for changes and reconciles, forever. The first plan waits (up to
/// 5 s) for ids to be adopted from a switch, so a restart rewrites nothing.
pub async fn run_reconciler(ctx: Arc<Context>) {
    while !ctx.source.is_ready() {
        ctx.changed.notified().await;
    }
    if !ctx.switches.is_empty() {
        let mut rx = ctx.adopted.subscribe();
        if tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|v| *v))
            .await
            .is_err()
        {
            warn!("no switch answered in 5 s; planning without adopting ids");
        }
    }
    let mut trigger = Instant::now();
    loop {
        if let Err(e) = reconcile(&ctx, trigger) {
            ctx.metrics.reconcile_errors.inc();
            warn!(%e, "reconcile incomplete");
        }
        ctx.changed.notified().await;
        trigger = Instant::now();
        if !ctx.config.debounce_ms.is_zero() {
            tokio::time::sleep(ctx.config.debounce_ms).await;
        }
    }
}

/// Keeps one switch in sync forever: connect (with backoff), read back,
/// diff, write; resync periodically and after errors.
pub async fn run_switch(ctx: Arc<Context>, sw: Arc<SwitchHandle>) {
    let label = SwitchLabel {
        switch: sw.cfg.id.clone(),
    };
    let mut backoff = ctx.config.backoff_min_ms;
    let mut leader = ctx.leader.subscribe();
    loop {
        if leader.wait_for(|l| *l).await.is_err() {
            return;
        }
        let started = Instant::now();
        let res = session(&ctx, &sw, &label).await;
        sw.status.write().expect("poisoned").connected = false;
        *sw.reader.write().expect("poisoned") = None;
        if let Err(e) = &res {
            warn!(switch = %sw.cfg.id, error = %e, source = ?std::error::Error::source(e), "switch session ended");
            sw.status.write().expect("poisoned").last_error = Some(format!("{e}"));
        }
        if started.elapsed() > ctx.config.backoff_max_ms {
            backoff = ctx.config.backoff_min_ms;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(ctx.config.backoff_max_ms);
    }
}

async fn session(ctx: &Context, sw: &SwitchHandle, label: &SwitchLabel) -> Result<(), ClientError> {
    let params = ConnectParams {
        address: sw.cfg.address.clone(),
        device_id: sw.cfg.device_id,
        election_id: ctx.config.election_id,
        p4info: ctx.p4info.clone(),
        device_config: ctx.device_config.clone(),
        timeout: Duration::from_secs(3),
    };
    let mut conn = SwitchConn::connect(&params, ctx.codec.clone()).await?;
    let (mut actual, bad) = conn.read_state().await?;
    let sessions = {
        let mut st = sw.status.write().expect("poisoned");
        st.sessions += 1;
        st.connected = true;
        st.pushed_pipeline = conn.pushed_pipeline;
        st.undecodable = bad.len();
        st.last_error = None;
        st.sessions
    };
    if sessions > 1 {
        ctx.metrics.reconnects.get_or_create(label).inc();
    }
    for b in bad.iter().take(5) {
        warn!(switch = %sw.cfg.id, "undecodable entry left alone: {b}");
    }
    *sw.reader.write().expect("poisoned") = Some(conn.reader());
    info!(switch = %sw.cfg.id, entries = actual.len(), pushed = conn.pushed_pipeline, "switch session up");
    ctx.try_adopt(&sw.cfg.id, &actual);
    let mut rx = ctx.plan_tx.subscribe();
    let mut leader = ctx.leader.subscribe();
    let mut resync = tokio::time::interval(ctx.config.resync_ms);
    resync.tick().await;
    loop {
        let snap = rx.borrow_and_update().clone();
        if let Some(snap) = snap {
            sync_once(ctx, sw, label, &mut conn, &mut actual, &snap).await?;
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return Ok(()) },
            _ = resync.tick() => {
                debug!(switch = %sw.cfg.id, "periodic resync");
                actual = conn.read_state().await?.0;
            }
            _ = async { leader.wait_for(|l| !*l).await.map(|_| ()) } => return Ok(()),
            _ = conn.closed() => return Err(ClientError::StreamClosed),
        }
    }
}

async fn sync_once(
    ctx: &Context,
    sw: &SwitchHandle,
    label: &SwitchLabel,
    conn: &mut SwitchConn,
    actual: &mut SwitchState,
    snap: &Snapshot,
) -> Result<(), ClientError> {
    let batches = diff::diff(&snap.plan.state, actual);
    let n = diff::update_count(&batches);
    if n > 0 {
        let r = conn.write(&batches, ctx.config.write_batch).await;
        let report = match r {
            Ok(r) => r,
            Err(e) => {
                ctx.metrics
                    .write_errors
                    .get_or_create(label)
                    .inc_by(n as u64);
                sw.status.write().expect("poisoned").write_errors += n as u64;
                return Err(e);
            }
        };
        for (op, e) in &report.done {
            match op {
                Op::Delete => actual.remove(e),
                _ => actual.insert(*e),
            }
        }
        ctx.metrics
            .writes
            .get_or_create(label)
            .inc_by(report.applied as u64);
        {
            let mut st = sw.status.write().expect("poisoned");
            st.updates_written += report.applied as u64;
            st.write_errors += report.failed.len() as u64;
        }
        if !report.failed.is_empty() {
            ctx.metrics
                .write_errors
                .get_or_create(label)
                .inc_by(report.failed.len() as u64);
            for (t, op, code, msg) in report.failed.iter().take(5) {
                warn!(switch = %sw.cfg.id, table = %t, ?op, code, "update failed: {msg}");
            }
            // Re-read so the next diff starts from the truth.
            *actual = conn.read_state().await?.0;
        }
        debug!(switch = %sw.cfg.id, updates = n, retried = report.retried, "synced");
    }
    let counts = actual.counts();
    for (t, c) in &counts {
        ctx.metrics
            .entries
            .get_or_create(&TableLabel {
                switch: sw.cfg.id.clone(),
                table: t.to_string(),
            })
            .set(*c as i64);
    }
    let mut st = sw.status.write().expect("poisoned");
    if st.synced_version != snap.version {
        ctx.metrics
            .sync_seconds
            .get_or_create(label)
            .observe(snap.trigger.elapsed().as_secs_f64());
    }
    st.synced_version = snap.version;
    st.entries = counts.iter().map(|(t, c)| (t.to_string(), *c)).collect();
    Ok(())
}

/// Starts the reconciler and one sync task per switch on `tasks`.
pub fn spawn(ctx: &Arc<Context>, tasks: &mut tokio::task::JoinSet<()>) {
    tasks.spawn(run_reconciler(ctx.clone()));
    for sw in &ctx.switches {
        tasks.spawn(run_switch(ctx.clone(), sw.clone()));
    }
}
