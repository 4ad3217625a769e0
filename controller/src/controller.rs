//! The running controller: a [`Context`] shared by the reconciler (source →
//! model → plan), one sync task per switch (plan → diff → write) and the
//! REST API.
//!
//! Incremental by default: the source says which objects changed, the model
//! re-evaluates only their Services, the planner re-plans only the ports
//! that changed and reports them ([`PlanChanges`]), and each switch task
//! diffs only that region of its tables ([`diff::region_diff`]). Full paths
//! remain for what needs them: a full plan on start, relist, Node changes
//! and every `resync_ms`; a full read-back and diff ([`diff::FullDiff`]) on
//! every (re)connect and every `resync_ms`.
//!
//! Memory: the model and the planner's compact desired state live once,
//! behind [`Context::planned`]; each switch task keeps the switch's tables
//! as last read or written (needed to diff without reading back). Nothing
//! else holds a copy: a full sync works from a snapshot that shares the
//! per-port plans, and produces its diff chunk by chunk.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use talaria_common::ts_cookie::CookieKey;
use talaria_p4rt::{
    p4::{config::v1::P4Info, v1::p4_runtime_client::P4RuntimeClient},
    p4info::Schema,
};
use talaria_tables::{p4runtime::Fit, Contents};
use tokio::sync::{watch, Notify};
use tonic::transport::Channel;
use tracing::{debug, info, instrument, warn};

use crate::{
    answers::NodeAnswers,
    config::{Config, SwitchConfig},
    diff::{self, FullDiff, Op},
    metrics::{Metrics, ProtocolLabel, SkipLabel, SwitchLabel, TableLabel},
    model::{Delta, Model, Skipped},
    p4rt::{
        client::{self, ConnectParams},
        ClientError, SwitchConn, WriteReport,
    },
    plan::{PlanChanges, PlannedPort, Planner},
};

/// Why a controller cannot be set up with a P4Info.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// It does not describe talaria's tables.
    #[error(transparent)]
    Tables(#[from] talaria_tables::p4runtime::Mismatch),
    /// It is not a valid P4Info.
    #[error("invalid P4Info")]
    Schema(#[source] talaria_p4rt::Error),
    /// The timestamp-cookie key file cannot be used.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Something that yields the cluster objects as a model.
pub trait Source: Send + Sync {
    /// Brings `model` up to date with the objects that changed since the
    /// last call (everything when `full`, or when the source cannot tell),
    /// and says which data-path ports changed.
    fn update_model(&self, model: &mut Model, full: bool) -> Delta;

    /// A model of all current objects, built from scratch (tools, tests;
    /// leaves the change log alone).
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

/// The model and the plan, kept up to date by the reconciler.
#[derive(Debug)]
pub struct Planned {
    /// The model.
    pub model: Model,
    /// Ids, bucket history and the desired state.
    pub planner: Planner,
    /// Increases by one per reconcile that changed the desired state
    /// (0 = no plan yet).
    pub version: u64,
    /// What node agents read, per Service, at `version`.
    pub answers: NodeAnswers,
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
    /// Full syncs (read back, diff everything) so far.
    pub full_syncs: u64,
    /// Entries on the switch that did not decode (left alone).
    pub undecodable: usize,
    /// A standby reading the switch (no session, no writes): its last
    /// read succeeded.
    pub following: bool,
    /// Reads a standby made of the switch's tables so far.
    pub follower_reads: u64,
    /// Last error, if the last session ended in one.
    pub last_error: Option<String>,
}

/// Plan changes a switch has not synced yet.
#[derive(Debug, Default)]
struct Pending {
    changes: PlanChanges,
    /// When the oldest of them was noticed.
    trigger: Option<Instant>,
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
    /// Changes to sync; written under the [`Context::planned`] write lock
    /// and taken under its read lock, so they always match the version.
    pending: Mutex<Pending>,
}

/// Everything the controller's tasks share.
pub struct Context {
    /// Configuration.
    pub config: Config,
    /// Object source.
    pub source: Arc<dyn Source>,
    /// Poked by the source on every change.
    pub changed: Arc<Notify>,
    /// The model and the plan.
    pub planned: RwLock<Planned>,
    /// The current plan version.
    pub version_tx: watch::Sender<u64>,
    /// Switches.
    pub switches: Vec<Arc<SwitchHandle>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Our P4Info, indexed (names and counters for the REST API).
    pub schema: Arc<Schema>,
    /// Our P4Info.
    pub p4info: Arc<P4Info>,
    /// Device config pushed with it.
    pub device_config: Arc<Vec<u8>>,
    /// True while this replica may write (leader election); change it
    /// with [`Context::set_leader`].
    pub leader: watch::Sender<bool>,
    /// Leaderships gained so far (0 without leader election).
    term: AtomicU64,
    /// The last term whose ids were adopted from a switch.
    adopted_term: AtomicU64,
    /// Set once ids were adopted from a switch (or adoption was given up).
    adopted: watch::Sender<bool>,
    /// The timestamp-cookie keys, read once from `ts_cookie_key_file`.
    ts_cookie_keys: Vec<CookieKey>,
    last_skipped: Mutex<BTreeSet<Skipped>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("switches", &self.switches.len())
            .finish()
    }
}

/// A planner with no history for `config`.
fn new_planner(config: &Config, ts_cookie_keys: &[CookieKey]) -> Planner {
    Planner::new(config.buckets, config.id_quarantine_ms)
        .with_ts_cookie_keys(ts_cookie_keys.to_vec())
}

impl Context {
    /// A context for `config`, reading objects from `source`.
    pub fn new(
        config: Config,
        source: Arc<dyn Source>,
        changed: Arc<Notify>,
        p4info: P4Info,
        device_config: Vec<u8>,
    ) -> Result<Arc<Self>, ContextError> {
        talaria_tables::p4runtime::check(&p4info, Fit::Covers)?;
        let schema = Arc::new(Schema::new(&p4info).map_err(ContextError::Schema)?);
        let switches = config
            .switches
            .iter()
            .map(|s| {
                Arc::new(SwitchHandle {
                    cfg: s.clone(),
                    status: RwLock::default(),
                    reader: RwLock::default(),
                    pending: Mutex::default(),
                })
            })
            .collect();
        let ts_cookie_keys = config.ts_cookie_keys()?;
        let planner = new_planner(&config, &ts_cookie_keys);
        let metrics = Metrics::default();
        metrics.leader.set(1);
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
            ts_cookie_keys,
            config,
            source,
            changed,
            planned: RwLock::new(Planned {
                model: Model::default(),
                planner,
                version: 0,
                answers: NodeAnswers::default(),
            }),
            version_tx: watch::channel(0).0,
            switches,
            metrics,
            schema,
            p4info: Arc::new(p4info),
            device_config: Arc::new(device_config),
            leader: watch::channel(true).0,
            term: AtomicU64::new(0),
            adopted_term: AtomicU64::new(0),
            adopted: watch::channel(false).0,
            last_skipped: Mutex::default(),
        }))
    }

    /// The current plan version (0 = no plan yet).
    pub fn version(&self) -> u64 {
        *self.version_tx.borrow()
    }

    /// What the planner decided for every port.
    pub fn planned_ports(&self) -> Vec<PlannedPort> {
        let p = self.planned.read().expect("poisoned");
        p.planner.desired().ports().map(|p| p.view()).collect()
    }

    /// Desired entries in total.
    pub fn desired_len(&self) -> usize {
        self.planned
            .read()
            .expect("poisoned")
            .planner
            .desired()
            .len()
    }

    /// A switch by id.
    pub fn switch(&self, id: &str) -> Option<&Arc<SwitchHandle>> {
        self.switches.iter().find(|s| s.cfg.id == id)
    }

    /// Makes this replica a leader (it writes to switches) or a standby.
    /// Each time it becomes leader a new term starts: before it writes,
    /// its first switch session adopts the ids in that switch
    /// ([`Context::adopt_switch`]), since another leader may have written
    /// meanwhile.
    pub fn set_leader(&self, held: bool) {
        self.leader.send_if_modified(|l| {
            if *l == held {
                return false;
            }
            if held {
                self.term.fetch_add(1, Ordering::SeqCst);
            }
            *l = held;
            true
        });
        self.metrics.leader.set(i64::from(held));
    }

    /// Whether this replica leads (writes to switches).
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Leaderships gained so far.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::SeqCst)
    }

    /// Terms that began by adopting a switch's ids.
    pub fn takeovers(&self) -> u64 {
        self.metrics.takeovers.get()
    }

    /// Adopts ids from what a switch holds, before anything is written
    /// to it:
    ///
    /// - before the first plan: the planner takes the switch's ids, bucket
    ///   assignments and quarantined backends, and the first plan is made
    ///   on top (a restart writes nothing);
    /// - at the start of a leadership term (`takeover`), or on a standby
    ///   whose ids disagree with the switch ([`Planner::agrees_with`]):
    ///   the planner is replaced by one that adopted the switch, and every
    ///   port is re-planned on top. Another replica wrote these ids, and
    ///   cookies in flight name them: they must not change.
    ///
    /// Returns whether the plan was replaced.
    pub fn adopt_switch(&self, switch: &str, actual: &Contents, takeover: bool) -> bool {
        let mut p = self.planned.write().expect("poisoned");
        if takeover {
            self.adopted_term.store(self.term(), Ordering::SeqCst);
        }
        if p.version == 0 {
            if takeover || !*self.adopted.borrow() {
                // Afresh: what an earlier read adopted may be stale.
                p.planner = new_planner(&self.config, &self.ts_cookie_keys);
                for w in p.planner.adopt(actual) {
                    warn!(switch, "not adopted: {w}");
                }
                info!(
                    switch,
                    services = actual.service_v4.len() + actual.service_v6.len(),
                    backends = actual.backend.len() + actual.backend_v6.len(),
                    "adopted ids from switch"
                );
                self.adopted.send_replace(true);
            }
            return false;
        }
        if !takeover && p.planner.agrees_with(actual) {
            return false;
        }
        let mut planner = new_planner(&self.config, &self.ts_cookie_keys);
        for w in planner.adopt(actual) {
            warn!(switch, "not adopted: {w}");
        }
        let now = Instant::now();
        let changes = planner.plan_full(&p.model, &self.config.fabric, now);
        p.planner = planner;
        p.version += 1;
        let p = &mut *p;
        p.answers
            .update(p.version, &p.model, p.planner.desired(), None);
        for sw in &self.switches {
            let mut pending = sw.pending.lock().expect("poisoned");
            pending.changes.merge(&changes);
            pending.trigger.get_or_insert(now);
        }
        info!(
            switch,
            takeover,
            services = actual.service_v4.len() + actual.service_v6.len(),
            backends = actual.backend.len() + actual.backend_v6.len(),
            version = p.version,
            "adopted the ids in the switch and re-planned on top"
        );
        if takeover {
            self.metrics.takeovers.inc();
        }
        self.version_tx.send_replace(p.version);
        true
    }

    /// Whether the current term has not adopted a switch's ids yet.
    fn takeover_pending(&self) -> bool {
        self.adopted_term.load(Ordering::SeqCst) < self.term()
    }

    /// Ready for traffic (`/readyz`): a plan exists and, on the leader,
    /// every switch holds it. A standby is ready with a plan: leadership
    /// is not readiness (a rolling update waits for the new replicas to be
    /// ready, and they are standbys until the old leader goes).
    pub fn ready(&self) -> Result<(), String> {
        let version = self.version();
        if version == 0 {
            return Err("no plan yet".into());
        }
        if !self.is_leader() {
            return Ok(());
        }
        for sw in &self.switches {
            let st = sw.status.read().expect("poisoned");
            if !st.connected {
                return Err(format!("switch {} not connected", sw.cfg.id));
            }
            if st.synced_version != version {
                return Err(format!("switch {} not synced", sw.cfg.id));
            }
        }
        Ok(())
    }

    /// Logs what the model newly skipped and sets the skip and refused-port
    /// gauges.
    fn log_skipped(&self, model: &Model) {
        let mut last = self.last_skipped.lock().expect("poisoned");
        if model.skipped.len() == last.len() && model.skipped.iter().all(|s| last.contains(s)) {
            return;
        }
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
        self.metrics.skipped.clear();
        for s in &now {
            self.metrics
                .skipped
                .get_or_create(&SkipLabel {
                    kind: s.kind.into(),
                    reason: s.reason.into(),
                })
                .inc();
        }
        self.metrics.unsupported_ports.clear();
        for (protocol, n) in &model.unsupported_ports {
            self.metrics
                .unsupported_ports
                .get_or_create(&ProtocolLabel {
                    protocol: protocol.clone(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        *last = now;
    }
}

/// Brings the model and the plan up to date with the source (only what
/// changed, or everything when `full`) and hands the changes to the
/// switches. Returns the plan version.
#[instrument(skip_all, fields(version, full))]
pub fn reconcile(ctx: &Context, trigger: Instant, full: bool) -> Result<u64, ReconcileError> {
    let t0 = Instant::now();
    let mut guard = ctx.planned.write().expect("poisoned");
    let p = &mut *guard;
    let full = full || p.version == 0;
    let cidrs_before = p.model.service_cidrs.clone();
    let health_checks_before = p.model.health_checks.clone();
    let delta = ctx.source.update_model(&mut p.model, full);
    let now = Instant::now();
    let changes = match delta {
        Delta::Rebuilt => {
            ctx.log_skipped(&p.model);
            p.planner.plan_full(&p.model, &ctx.config.fabric, now)
        }
        Delta::Ports(keys) => {
            // Even when no port changed: a refused (SCTP-only) Service
            // changes no port but must still be logged.
            ctx.log_skipped(&p.model);
            p.planner.replan(&p.model, keys, now)
        }
    };
    let errors = p.planner.errors();
    // No switch entry depends on the ServiceCIDRs, but node agents steer
    // them: a change to them alone is a new version, so their long polls
    // of `/v1/services` wake and they fetch `/v1/service-cidrs` at once.
    // Health checks likewise: node agents serve them.
    let cidrs_changed = p.model.service_cidrs != cidrs_before;
    let health_checks_changed = p.model.health_checks != health_checks_before;
    if changes.is_empty() && !cidrs_changed && !health_checks_changed && p.version > 0 {
        return Ok(p.version);
    }
    for e in errors.iter().take(10) {
        warn!("not planned: {e}");
    }
    p.version += 1;
    let version = p.version;
    // The node agents' answers: after a full plan every Service's, else
    // those of the ports that changed and those whose health check did.
    let touched = (!changes.full).then(|| {
        let mut touched = p.answers.owners_of(&p.model, &changes.keys);
        if health_checks_changed {
            let (before, after) = (&health_checks_before, &p.model.health_checks);
            touched.extend(
                before
                    .keys()
                    .chain(after.keys())
                    .filter(|s| before.get(s) != after.get(s))
                    .cloned(),
            );
        }
        touched
    });
    p.answers
        .update(version, &p.model, p.planner.desired(), touched.as_ref());
    for sw in &ctx.switches {
        let mut pending = sw.pending.lock().expect("poisoned");
        pending.changes.merge(&changes);
        pending.trigger.get_or_insert(trigger);
    }
    drop(guard);
    tracing::Span::current().record("version", version);
    tracing::Span::current().record("full", changes.full);
    ctx.metrics.plan_seconds.observe(t0.elapsed().as_secs_f64());
    ctx.metrics.reconciles.inc();
    debug!(
        ports = changes.keys.len(),
        full = changes.full,
        elapsed_us = t0.elapsed().as_micros() as u64,
        "planned"
    );
    ctx.version_tx.send_replace(version);
    if !errors.is_empty() {
        return Err(ReconcileError::Partial(errors.len()));
    }
    Ok(version)
}

/// Waits for changes and reconciles, forever. The first plan waits (up to
/// 5 s) for ids to be adopted from a switch, so a restart rewrites nothing.
/// Re-plans everything every `resync_ms`, and wakes up when a departed
/// backend's quarantine ends.
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
    let mut full = true;
    let mut resync = tokio::time::interval(ctx.config.resync_ms);
    resync.tick().await;
    loop {
        if let Err(e) = reconcile(&ctx, trigger, full) {
            ctx.metrics.reconcile_errors.inc();
            warn!(%e, "reconcile incomplete");
        }
        let expiry = ctx.planned.read().expect("poisoned").planner.next_expiry();
        let expiry = async {
            match expiry {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        full = tokio::select! {
            _ = ctx.changed.notified() => false,
            _ = expiry => false,
            _ = resync.tick() => {
                debug!("periodic full re-plan");
                true
            }
        };
        trigger = Instant::now();
        if !ctx.config.debounce_ms.is_zero() {
            tokio::time::sleep(ctx.config.debounce_ms).await;
        }
    }
}

/// Keeps one switch in sync forever: connect (with backoff), read back,
/// diff, write; resync periodically and after errors. On a standby, reads
/// the switch instead ([`follow`]) and writes nothing.
pub async fn run_switch(ctx: Arc<Context>, sw: Arc<SwitchHandle>) {
    let label = SwitchLabel {
        switch: sw.cfg.id.clone(),
    };
    let mut backoff = ctx.config.backoff_min_ms;
    loop {
        if !ctx.is_leader() {
            follow(&ctx, &sw).await;
            continue;
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
    let mut conn = SwitchConn::connect(&params).await?;
    let (mut have, bad) = conn.read_state().await?;
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
    info!(switch = %sw.cfg.id, entries = have.total(), pushed = conn.pushed_pipeline, "switch session up");
    // The session belongs to this term: it ends when leadership is lost,
    // even if it was regained since (another leader may have written).
    let term = ctx.term();
    let mut leader = ctx.leader.subscribe();
    if !ctx.is_leader() {
        return Ok(());
    }
    // Before the first write of a term: take the ids the switch holds.
    let takeover = ctx.takeover_pending();
    ctx.adopt_switch(&sw.cfg.id, &have, takeover);
    let mut rx = ctx.version_tx.subscribe();
    let mut resync = tokio::time::interval(ctx.config.resync_ms);
    resync.tick().await;
    // A session starts with a full diff against what was just read.
    let mut full = true;
    loop {
        let _ = rx.borrow_and_update();
        // A deposed leader stops writing at once, even mid-sync.
        full = tokio::select! {
            r = sync_once(ctx, sw, label, &mut conn, &mut have, full) => r?,
            _ = deposed(ctx, &mut leader, term) => return Ok(()),
        };
        tokio::select! {
            r = rx.changed() => if r.is_err() { return Ok(()) },
            _ = resync.tick() => {
                debug!(switch = %sw.cfg.id, "periodic resync");
                have = conn.read_state().await?.0;
                full = true;
            }
            _ = deposed(ctx, &mut leader, term) => return Ok(()),
            _ = conn.closed() => return Err(ClientError::StreamClosed),
        }
    }
}

/// Resolves once this replica no longer leads in `term`.
async fn deposed(ctx: &Context, leader: &mut watch::Receiver<bool>, term: u64) {
    let _ = leader.wait_for(|l| !*l || ctx.term() != term).await;
}

/// A standby's side of a switch: until this replica leads, reads the
/// switch's tables (a plain Read: no arbitration, no session, no writes)
/// every `follow_ms`, and adopts its ids whenever the plan disagrees with
/// them, so the standby's REST API shows the ids the switch holds and a
/// takeover finds its plan already matching. The reader also serves the
/// standby's table dumps.
async fn follow(ctx: &Context, sw: &SwitchHandle) {
    let mut leader = ctx.leader.subscribe();
    let mut reader: Option<client::P4Client> = None;
    let timeout = Duration::from_secs(3);
    loop {
        if ctx.is_leader() {
            break;
        }
        if reader.is_none() {
            match client::channel(&sw.cfg.address, timeout).await {
                Ok(c) => reader = Some(c),
                Err(e) => debug!(switch = %sw.cfg.id, error = %e, "standby: switch unreachable"),
            }
        }
        let mut ok = false;
        if let Some(c) = reader.as_mut() {
            match tokio::time::timeout(timeout, client::read_state(c, sw.cfg.device_id)).await {
                Ok(Ok((have, _bad))) => {
                    ok = true;
                    *sw.reader.write().expect("poisoned") = Some(c.clone());
                    if !ctx.is_leader() {
                        ctx.adopt_switch(&sw.cfg.id, &have, false);
                    }
                }
                Ok(Err(e)) => debug!(switch = %sw.cfg.id, error = %e, "standby: read failed"),
                Err(_) => debug!(switch = %sw.cfg.id, "standby: read timed out"),
            }
        }
        if !ok {
            reader = None;
            *sw.reader.write().expect("poisoned") = None;
        }
        {
            let mut st = sw.status.write().expect("poisoned");
            st.following = ok;
            st.follower_reads += u64::from(ok);
        }
        tokio::select! {
            _ = leader.wait_for(|l| *l) => break,
            _ = tokio::time::sleep(ctx.config.follow_ms) => {}
        }
    }
    sw.status.write().expect("poisoned").following = false;
    *sw.reader.write().expect("poisoned") = None;
}

/// What one sync writes.
enum Work {
    /// The batches of the changed region.
    Region(Vec<diff::Batch>),
    /// Everything, diffed against this snapshot.
    Full(Box<crate::plan::Desired>),
}

/// Syncs the pending changes (everything when `full`). Returns whether the
/// next sync must be a full one (after per-update failures).
async fn sync_once(
    ctx: &Context,
    sw: &SwitchHandle,
    label: &SwitchLabel,
    conn: &mut SwitchConn,
    have: &mut Contents,
    full: bool,
) -> Result<bool, ClientError> {
    let max = ctx.config.write_batch;
    let depth = ctx.config.write_pipeline;
    let mut report = WriteReport::default();
    let apply = |have: &mut Contents, c: &WriteReport| {
        for (op, e) in &c.done {
            match op {
                Op::Delete => have.remove(&e.key()),
                Op::Insert | Op::Modify => have.insert(*e),
            };
        }
    };
    // Take the pending changes together with the state they belong to.
    let (version, trigger, result) = {
        let p = ctx.planned.read().expect("poisoned");
        if p.version == 0 {
            return Ok(full);
        }
        let pending = std::mem::take(&mut *sw.pending.lock().expect("poisoned"));
        if full || pending.changes.full {
            // A consistent snapshot (ports are shared, not copied).
            let want = Box::new(p.planner.desired().clone());
            (p.version, pending.trigger, Work::Full(want))
        } else {
            let batches = diff::region_diff(p.planner.desired(), have, &pending.changes);
            (p.version, pending.trigger, Work::Region(batches))
        }
    };
    let t0 = Instant::now();
    let res = match result {
        Work::Region(batches) => {
            let mut queue = diff::chunks(batches, max).into_iter();
            conn.write_pipelined(
                || queue.next(),
                depth,
                |c| {
                    apply(have, &c);
                    report.add(c);
                },
            )
            .await
        }
        Work::Full(want) => {
            sw.status.write().expect("poisoned").full_syncs += 1;
            let mut gen = FullDiff::default();
            // The generator reads `have` while finished chunks update it:
            // they are behind its cursor, so an update never changes what
            // it still has to look at.
            // (A mutex, not a RefCell: the session future must be Send.)
            let r = {
                let have_cell = Mutex::new(&mut *have);
                conn.write_pipelined(
                    || gen.next_chunk(&*want, &**have_cell.lock().expect("poisoned"), max),
                    depth,
                    |c| {
                        apply(&mut have_cell.lock().expect("poisoned"), &c);
                        report.add(c);
                    },
                )
                .await
            };
            drop(want);
            have.compact();
            r
        }
    };
    if let Err(e) = res {
        ctx.metrics
            .write_errors
            .get_or_create(label)
            .inc_by(report.failed.len().max(1) as u64);
        sw.status.write().expect("poisoned").write_errors += report.failed.len().max(1) as u64;
        return Err(e);
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
    let mut next_full = false;
    if !report.failed.is_empty() {
        ctx.metrics
            .write_errors
            .get_or_create(label)
            .inc_by(report.failed.len() as u64);
        for (t, op, code, msg) in report.failed.iter().take(5) {
            warn!(switch = %sw.cfg.id, table = %t, ?op, code, "update failed: {msg}");
        }
        // Re-read so the next diff starts from the truth, and make it a
        // full one: the failed region must be retried.
        *have = conn.read_state().await?.0;
        next_full = true;
    }
    if report.applied > 0 {
        debug!(
            switch = %sw.cfg.id,
            updates = report.applied,
            retried = report.retried,
            full,
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "synced"
        );
    }
    let counts = have.counts();
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
    if let Some(t) = trigger {
        ctx.metrics
            .sync_seconds
            .get_or_create(label)
            .observe(t.elapsed().as_secs_f64());
    }
    st.synced_version = version;
    st.entries = counts.iter().map(|(t, c)| (t.to_string(), *c)).collect();
    Ok(next_full)
}

/// Starts the reconciler and one sync task per switch on `tasks`.
pub fn spawn(ctx: &Arc<Context>, tasks: &mut tokio::task::JoinSet<()>) {
    tasks.spawn(run_reconciler(ctx.clone()));
    for sw in &ctx.switches {
        tasks.spawn(run_switch(ctx.clone(), sw.clone()));
    }
}
