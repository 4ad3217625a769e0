//! `talaria-lab faults`: faults under load.
//!
//! A talaria-mode lab on switch-agent carries N long connections (`hold`
//! from one client pod, a request every interval on each; broken = an
//! error, no answer within the timeout, or another backend answering) and
//! a short-connection load (`http-short`, a new connection per request,
//! from another client pod). Then switch-agent, the controller and a node
//! agent hosting backends are killed with SIGKILL, one at a time, and each
//! is started again with its own command line ([`bringup::restart`]).
//!
//! Per phase (a baseline without a fault, then one per killed component)
//! it records the long connections that broke, the short requests and
//! errors, the time until the component was back in sync, and whether the
//! switch kept its tables:
//!
//! - every table is dumped through the controller's REST API before and
//!   after the phase, and the two dumps must be equal entry for entry
//!   (so every id is unchanged);
//! - a thread reads every table every 500 ms during the run, and the
//!   lowest counts of `service_v4`, `backend` and `lb_bucket` seen in the
//!   phase are reported (reads fail while the controller or switch-agent
//!   is down; those are counted apart);
//! - the controller's own count of updates it wrote in the phase (a
//!   controller that adopted the tables writes none);
//! - the service ids the controller reports, before and after;
//! - for a node agent, its flow entries (`talaria-node status`) before and
//!   after.
//!
//! Results: a table on stdout, `<out>/summary.md` (with the exact command)
//! and `<out>/faults.csv`.

use crate::bench::{chrono_now, csv, loadavg};
use crate::bringup::{self, controller_status, service_ids, talariactl_in, Daemon, SWITCH_ID};
use crate::components::Component;
use crate::manifests::ServiceSet;
use crate::modes::{self, LoadRun, Mode};
use crate::netns::Lab;
use crate::switch::SwitchKind;
use crate::topology::pick_services;
use crate::topology::Topology;
use crate::traffic::{Break, LoadResult, Proto};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `talaria-lab faults` options.
#[derive(Debug, Clone, clap::Args)]
pub struct FaultsArgs {
    /// Long-lived connections held through every fault.
    #[arg(long, default_value_t = 100)]
    pub connections: u32,
    /// Milliseconds between two requests of one long connection.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Workers of the short-connection load.
    #[arg(long, default_value_t = 4)]
    pub short_concurrency: u32,
    /// Per-request timeout in milliseconds (a long connection whose
    /// request takes longer counts as broken).
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Components to kill -9, in this order: switch-agent, controller,
    /// node-<n>.
    #[arg(long, value_delimiter = ',', default_values_t = default_kills())]
    pub kill: Vec<Daemon>,
    /// Milliseconds a killed component stays down before it is started again.
    #[arg(long, default_value_t = 1000)]
    pub down_ms: u64,
    /// Seconds of load in each phase before its fault, and again once the
    /// component is back in sync (the baseline phase: twice this, no fault).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Output directory (summary.md, faults.csv).
    #[arg(long, default_value = "bench/results/faults")]
    pub out: PathBuf,
    /// Two controllers with leader election on a fake Lease API server
    /// (`talaria-lab lease-server` in the switch netns), and `--kill
    /// leader` kills whichever leads: the other must take over without
    /// changing an id.
    #[arg(long)]
    pub ha: bool,
}

/// switch-agent, the controller, and node 1 (it hosts backends: node 0's
/// pods are the clients).
pub fn default_kills() -> Vec<Daemon> {
    vec![
        Daemon::SwitchAgent,
        Daemon::Controller,
        Daemon::NodeAgent(1),
    ]
}

impl Default for FaultsArgs {
    fn default() -> Self {
        Self {
            connections: 100,
            interval_ms: 100,
            short_concurrency: 4,
            timeout_ms: 1000,
            kill: default_kills(),
            down_ms: 1000,
            seconds: 5,
            out: "bench/results/faults".into(),
            ha: false,
        }
    }
}

/// The tables whose entry counts are sampled during the run: the Service
/// tables, which a wiping restart would empty.
pub const WATCHED: [&str; 3] = ["service_v4", "backend", "lb_bucket"];

/// One phase: a baseline, or one component killed and started again.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseRow {
    /// `baseline`, or the component killed (`switch-agent`, `controller`,
    /// `node-<n>`).
    pub phase: String,
    /// PID killed -> PID started (empty for the baseline).
    pub pids: String,
    /// Seconds from the kill to the new start.
    pub down_s: f64,
    /// Seconds from the kill until the component served again.
    pub serving_s: f64,
    /// Seconds from the kill until it was back in sync.
    pub in_sync_s: f64,
    /// `leader` phase: seconds from the kill until the standby led.
    pub takeover_s: f64,
    /// Seconds the phase lasted.
    pub phase_s: f64,
    /// Long connections alive when the phase began.
    pub long_alive: u64,
    /// Long connections that broke in the phase.
    pub long_broken: u64,
    /// Short-connection requests that succeeded in the phase.
    pub short_requests: u64,
    /// Short-connection requests that failed.
    pub short_errors: u64,
    /// Short-connection latency, p99, ms.
    pub short_p99_ms: f64,
    /// Short-connection latency, maximum, ms.
    pub short_max_ms: f64,
    /// The short-connection errors by kind (`kind xN; ...`).
    pub short_error_kinds: String,
    /// `service_v4/backend/lb_bucket` entries before the phase.
    pub entries_before: String,
    /// The same after it.
    pub entries_after: String,
    /// The lowest counts read during the phase.
    pub entries_lowest: String,
    /// Table reads during the phase that succeeded / failed.
    pub reads_ok: u64,
    /// See `reads_ok`.
    pub reads_failed: u64,
    /// Every table equal, entry for entry, before and after.
    pub tables_identical: bool,
    /// The controller's service ids equal before and after, and equal to
    /// the ones the node agents map.
    pub service_ids_same: bool,
    /// Updates the controller wrote to the switch in the phase.
    pub controller_writes: u64,
    /// Write errors the controller counted in the phase.
    pub controller_write_errors: u64,
    /// Node-agent phase: its flow entries (reverse, cookie) before -> after.
    pub node_flows: String,
    /// The component came back (else see `note`).
    pub back: bool,
    /// What went wrong, what differed.
    pub note: String,
}

/// A whole run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One row per phase, in order.
    pub phases: Vec<PhaseRow>,
    /// The long connections' load, over the whole run.
    pub long: LoadResult,
    /// Every broken long connection, with the phase it broke in.
    pub breaks: Vec<(String, Break)>,
    /// Seconds the run took, lab bring-up included.
    pub took_s: f64,
    /// The lab's topology.
    pub topology: Topology,
    /// The lab's prefix (torn down by now, unless kept for a post-mortem).
    pub prefix: String,
}

impl Report {
    /// Whether every claim holds: no long connection broke, every
    /// component came back, every table stayed identical with its service
    /// ids, and no watched table was seen empty.
    pub fn all_survived(&self) -> bool {
        self.long.broken == 0
            && self
                .phases
                .iter()
                .all(|p| p.back && p.tables_identical && p.service_ids_same && !p.saw_empty_table())
    }
}

impl PhaseRow {
    /// Whether a read during the phase found a watched table empty.
    pub fn saw_empty_table(&self) -> bool {
        self.entries_lowest.split('/').any(|n| n == "0")
    }
}

/// The switch's tables as read through the controller: each table's
/// entries as canonical JSON (keys sorted), by alias.
type Tables = BTreeMap<String, BTreeSet<String>>;

fn read_tables(switch_ns: &str) -> Result<Tables> {
    let text = talariactl_in(
        switch_ns,
        &["tables", "dump", "--switch", SWITCH_ID, "-o", "json"],
    )?;
    let v: Value = serde_json::from_str(&text).context("talariactl tables dump")?;
    let mut t = Tables::new();
    for d in v[SWITCH_ID].as_array().into_iter().flatten() {
        let name = d["table"].as_str().unwrap_or("?").to_string();
        let mut set: BTreeSet<String> = d["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Value::to_string)
            .collect();
        set.extend(
            d["undecodable"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|u| format!("undecodable {u}")),
        );
        t.insert(name, set);
    }
    anyhow::ensure!(!t.is_empty(), "talariactl tables dump: no tables");
    Ok(t)
}

/// `a/b/c`: the watched tables' counts.
fn watched_counts(counts: &BTreeMap<String, usize>) -> String {
    WATCHED
        .map(|t| counts.get(t).map_or("?".into(), |n| n.to_string()))
        .join("/")
}

fn counts(t: &Tables) -> BTreeMap<String, usize> {
    t.iter().map(|(k, v)| (k.clone(), v.len())).collect()
}

/// What differs between two dumps, per table: `table +added -removed`.
fn table_diff(a: &Tables, b: &Tables) -> Vec<String> {
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let empty = BTreeSet::new();
    names
        .into_iter()
        .filter_map(|n| {
            let (x, y) = (a.get(n).unwrap_or(&empty), b.get(n).unwrap_or(&empty));
            let added = y.difference(x).count();
            let removed = x.difference(y).count();
            (added + removed > 0).then(|| format!("{n} +{added} -{removed}"))
        })
        .collect()
}

/// One read of every table's entry count.
struct Sample {
    at: Instant,
    counts: Option<BTreeMap<String, usize>>,
}

/// A thread reading every table every 500 ms until stopped.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

impl Watcher {
    fn start(switch_ns: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let at = Instant::now();
                let counts = read_tables(&switch_ns).ok().map(|t| counts(&t));
                v.push(Sample { at, counts });
                std::thread::sleep(Duration::from_millis(500).saturating_sub(at.elapsed()));
            }
            v
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Flow entries in node `n`'s pinned maps: (reverse, cookie).
fn node_flows(lab: &Lab, n: u32) -> Result<(u64, u64)> {
    let bin = Component::NodeAgent
        .find()
        .context("talaria-node not built")?;
    let dir = bringup::node_pin_dir(lab, n);
    let out = crate::netns::run(
        &bin.to_string_lossy(),
        &["status", "--pin-dir", &dir.to_string_lossy(), "--json"],
        None,
    )?;
    let v: Value = serde_json::from_str(&out)?;
    Ok((
        v["reverse_flow_entries"].as_u64().unwrap_or(0),
        v["cookie_cache_entries"].as_u64().unwrap_or(0),
    ))
}

fn progress(msg: &str) {
    eprintln!("[faults {}] {msg}", chrono_now());
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What every phase shares.
struct Run<'a> {
    a: &'a FaultsArgs,
    targets: Vec<std::net::SocketAddr>,
    short_client: (u32, u32),
}

/// What a phase measured before its rows are put together.
struct Phase {
    row: PhaseRow,
    /// Unix ms at its start, to place broken connections.
    start_ms: u64,
    /// Its time window, to place table samples.
    window: (Instant, Instant),
}

impl Run<'_> {
    fn short_load(&self, stop_file: PathBuf) -> LoadRun {
        LoadRun {
            client: self.short_client.into(),
            proto: Proto::HttpShort,
            targets: self.targets.clone(),
            concurrency: self.a.short_concurrency,
            // Bounded; ended by the stop file.
            duration: Duration::from_secs(300),
            timeout: Duration::from_millis(self.a.timeout_ms),
            interval: Duration::from_millis(self.a.interval_ms),
            stop_file: Some(stop_file),
        }
    }

    /// One phase: short load on, `kill` killed and started again (none for
    /// the baseline), load on a while longer, short load off.
    async fn phase(&self, lab: &mut Lab, i: usize, kill: Option<Daemon>) -> Phase {
        let name = kill.map_or("baseline".to_string(), |d| d.to_string());
        let mut row = PhaseRow {
            phase: name.clone(),
            ..Default::default()
        };
        let start_ms = unix_ms();
        let t0 = Instant::now();
        let before = self.snapshot(lab, kill);
        let stop_file = lab.run_dir.join(format!("short-{i}.stop"));
        let short = match modes::start_load(lab, &self.short_load(stop_file.clone())) {
            Ok(s) => s,
            Err(e) => {
                row.note = format!("short load did not start: {e:#}");
                return Phase {
                    row,
                    start_ms,
                    window: (t0, Instant::now()),
                };
            }
        };
        let settle = Duration::from_secs(self.a.seconds);
        tokio::time::sleep(settle).await;
        let restarted = match kill {
            Some(Daemon::Leader) => {
                progress(&format!("{name}: kill -9"));
                let r = bringup::fail_over(lab).await.map(|f| {
                    progress(&format!(
                        "{name}: {} killed; the standby led {:.2} s and was in sync {:.2} s after the kill",
                        f.killed,
                        f.takeover.as_secs_f64(),
                        f.in_sync.as_secs_f64()
                    ));
                    row.takeover_s = f.takeover.as_secs_f64();
                    bringup::Restarted {
                        old_pid: f.old_pid,
                        new_pid: f.new_pid,
                        down: f.standby_ready,
                        serving: f.takeover,
                        in_sync: f.in_sync,
                    }
                });
                Some(r)
            }
            Some(d) => {
                progress(&format!("{name}: kill -9"));
                let down = Duration::from_millis(self.a.down_ms);
                let r = bringup::restart(lab, d, down).await;
                if let Ok(r) = &r {
                    progress(&format!(
                        "{name}: back in sync {:.2} s after the kill",
                        r.in_sync.as_secs_f64()
                    ));
                }
                Some(r)
            }
            None => None,
        };
        tokio::time::sleep(settle).await;
        let _ = std::fs::write(&stop_file, b"stop");
        let short = modes::wait_load(lab, short).await;
        let t1 = Instant::now();
        row.phase_s = (t1 - t0).as_secs_f64();
        row.back = true;
        let mut notes = Vec::new();
        match restarted {
            Some(Ok(r)) => {
                row.pids = format!("{} -> {}", r.old_pid, r.new_pid);
                row.down_s = r.down.as_secs_f64();
                row.serving_s = r.serving.as_secs_f64();
                row.in_sync_s = r.in_sync.as_secs_f64();
            }
            Some(Err(e)) => {
                row.back = false;
                notes.push(format!("not back: {e:#}"));
            }
            None => {}
        }
        match short {
            Ok(s) => {
                row.short_requests = s.requests;
                row.short_errors = s.errors;
                row.short_p99_ms = s.latency.p99_us / 1e3;
                row.short_max_ms = s.latency.max_us / 1e3;
                row.short_error_kinds = s
                    .error_kinds
                    .iter()
                    .map(|(k, n)| format!("{k} x{n}"))
                    .collect::<Vec<_>>()
                    .join("; ");
            }
            Err(e) => notes.push(format!("short load: {e:#}")),
        }
        let after = self.snapshot(lab, kill);
        self.compare(&mut row, &before, &after, kill, &mut notes);
        row.note = notes.join("; ");
        Phase {
            row,
            start_ms,
            window: (t0, t1),
        }
    }

    fn snapshot(&self, lab: &Lab, kill: Option<Daemon>) -> Snapshot {
        Snapshot {
            tables: read_tables(&lab.names.switch()),
            ids: service_ids(lab),
            agents: bringup::agent_services(lab),
            status: controller_status(lab),
            flows: match kill {
                Some(Daemon::NodeAgent(n)) => Some(node_flows(lab, n)),
                _ => None,
            },
        }
    }

    fn compare(
        &self,
        row: &mut PhaseRow,
        before: &Snapshot,
        after: &Snapshot,
        kill: Option<Daemon>,
        notes: &mut Vec<String>,
    ) {
        match (&before.tables, &after.tables) {
            (Ok(a), Ok(b)) => {
                row.entries_before = watched_counts(&counts(a));
                row.entries_after = watched_counts(&counts(b));
                let diff = table_diff(a, b);
                row.tables_identical = diff.is_empty();
                if !diff.is_empty() {
                    notes.push(format!("tables differ: {}", diff.join(", ")));
                }
            }
            (a, b) => {
                for e in [a.as_ref().err(), b.as_ref().err()].into_iter().flatten() {
                    notes.push(format!("tables unreadable: {e:#}"));
                }
            }
        }
        match (&before.ids, &after.ids) {
            (Ok(a), Ok(b)) => {
                row.service_ids_same = a == b && *b == after.agents;
                if a != b {
                    notes.push("the controller's service ids changed".into());
                } else if *b != after.agents {
                    notes.push("the node agents map other service ids than the controller".into());
                }
            }
            _ => notes.push("service ids unreadable".into()),
        }
        let sw = |v: &Result<Value>, k: &str| {
            v.as_ref()
                .ok()
                .and_then(|v| v["switches"][0]["status"][k].as_u64())
        };
        // A restarted controller counts from 0: all it wrote is its own;
        // so does one that took over (it wrote nothing as a standby).
        let since = |k: &str| match kill {
            Some(Daemon::Controller | Daemon::Leader) => sw(&after.status, k),
            _ => Some(sw(&after.status, k)?.saturating_sub(sw(&before.status, k)?)),
        };
        match (since("updates_written"), since("write_errors")) {
            (Some(w), Some(e)) => {
                row.controller_writes = w;
                row.controller_write_errors = e;
            }
            _ => notes.push("controller status unreadable".into()),
        }
        if let (Some(a), Some(b)) = (&before.flows, &after.flows) {
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    row.node_flows =
                        format!("reverse {} -> {}, cookies {} -> {}", a.0, b.0, a.1, b.1)
                }
                (a, b) => {
                    for e in [a.as_ref().err(), b.as_ref().err()].into_iter().flatten() {
                        notes.push(format!("node flows unreadable: {e:#}"));
                    }
                }
            }
        }
    }
}

/// What is read before and after a phase.
struct Snapshot {
    tables: Result<Tables>,
    ids: Result<Vec<Value>>,
    agents: Vec<Value>,
    status: Result<Value>,
    flows: Option<Result<(u64, u64)>>,
}

/// Runs the faults experiment on a fresh talaria-mode lab on `switch`
/// (switch-agent: bmv2 keeps no tables across a restart) and tears it
/// down (kept for a post-mortem when something broke and
/// `TALARIA_LAB_KEEP_BROKEN` is set).
pub async fn measure(a: &FaultsArgs, switch: &SwitchKind) -> Result<Report> {
    if *switch != SwitchKind::SwitchAgent {
        bail!("faults needs --switch switch-agent: bmv2 keeps no tables across a restart");
    }
    anyhow::ensure!(a.connections > 0, "--connections must be > 0");
    let started = Instant::now();
    let t = Topology::embedded_default();
    let kills = a.kill.clone();
    for d in &kills {
        if let Daemon::NodeAgent(n) = d {
            anyhow::ensure!(*n < t.nodes, "{d}: the lab has {} nodes", t.nodes);
        }
    }
    progress(&format!(
        "talaria mode on {}: {} nodes, {} Services",
        switch.name(),
        t.nodes,
        t.services
    ));
    if kills.contains(&Daemon::Leader) {
        anyhow::ensure!(a.ha, "--kill leader needs --ha");
    }
    let (mut lab, set) = bringup::lab_for_ha(t.clone(), Mode::Talaria, switch, a.ha).await?;
    let prefix = lab.prefix().to_string();
    let result = run_phases(&mut lab, a, &set, &kills).await;
    let keep = std::env::var_os("TALARIA_LAB_KEEP_BROKEN").is_some()
        && result.as_ref().map_or(true, |r| !r.all_survived());
    if keep {
        progress(&format!(
            "keeping lab {} (TALARIA_LAB_KEEP_BROKEN)",
            lab.prefix()
        ));
        lab.keep();
    } else {
        let problems = lab.down();
        anyhow::ensure!(problems.is_empty(), "teardown: {problems:?}");
    }
    let mut r = result?;
    r.took_s = started.elapsed().as_secs_f64();
    r.topology = t;
    r.prefix = prefix;
    Ok(r)
}

async fn run_phases(
    lab: &mut Lab,
    a: &FaultsArgs,
    set: &ServiceSet,
    kills: &[Daemon],
) -> Result<Report> {
    let t = lab.topo.clone();
    let clients = t.client_pods();
    anyhow::ensure!(clients.len() >= 2, "the topology needs two client pods");
    let picked = pick_services(set.services.len() as u32, 8);
    let run = Run {
        a,
        targets: modes::targets(&t, set, Mode::Talaria, Proto::Hold, &picked),
        short_client: clients[1],
    };
    let hold_stop = lab.run_dir.join("hold.stop");
    let hold = modes::start_load(
        lab,
        &LoadRun {
            client: clients[0].into(),
            proto: Proto::Hold,
            targets: run.targets.clone(),
            concurrency: a.connections,
            duration: Duration::from_secs(590),
            timeout: Duration::from_millis(a.timeout_ms),
            interval: Duration::from_millis(a.interval_ms),
            stop_file: Some(hold_stop.clone()),
        },
    )?;
    progress(&format!(
        "{} long connections from {}, short load ({} workers) from {}",
        a.connections,
        Topology::pod_name(clients[0].0, clients[0].1),
        a.short_concurrency,
        Topology::pod_name(run.short_client.0, run.short_client.1)
    ));
    let watcher = Watcher::start(lab.names.switch());
    // Every long connection opened before the baseline begins.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut phases = Vec::new();
    for (i, kill) in std::iter::once(None)
        .chain(kills.iter().copied().map(Some))
        .enumerate()
    {
        let p = run.phase(lab, i, kill).await;
        let back = p.row.back;
        progress(&format!(
            "{}: short {} ok / {} errors; tables identical: {}; controller writes {}{}",
            p.row.phase,
            p.row.short_requests,
            p.row.short_errors,
            p.row.tables_identical,
            p.row.controller_writes,
            if p.row.note.is_empty() {
                String::new()
            } else {
                format!("; {}", p.row.note)
            }
        ));
        phases.push(p);
        if !back {
            progress("a component did not come back: the remaining phases are skipped");
            break;
        }
    }
    std::fs::write(&hold_stop, b"stop")?;
    let long = modes::wait_load(lab, hold).await?;
    let samples = watcher.finish();
    Ok(assemble(phases, long, &samples))
}

/// Puts the phases together with the broken connections (by time) and
/// the table samples (by window).
fn assemble(phases: Vec<Phase>, long: LoadResult, samples: &[Sample]) -> Report {
    let phase_of = |at_ms: u64| {
        phases
            .iter()
            .rposition(|p| p.start_ms <= at_ms)
            .unwrap_or(0)
    };
    let breaks: Vec<(String, Break)> = long
        .breaks
        .iter()
        .map(|b| (phases[phase_of(b.at_ms)].row.phase.clone(), b.clone()))
        .collect();
    let mut alive = long.connections;
    let rows = phases
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut row = p.row.clone();
            row.long_alive = alive;
            row.long_broken = long
                .breaks
                .iter()
                .filter(|b| phase_of(b.at_ms) == i)
                .count() as u64;
            alive -= row.long_broken;
            let mut lowest: BTreeMap<String, usize> = BTreeMap::new();
            for s in samples
                .iter()
                .filter(|s| s.at >= p.window.0 && s.at <= p.window.1)
            {
                match &s.counts {
                    Some(c) => {
                        row.reads_ok += 1;
                        for t in WATCHED {
                            let n = c.get(t).copied().unwrap_or(0);
                            let e = lowest.entry(t.to_string()).or_insert(n);
                            *e = (*e).min(n);
                        }
                    }
                    None => row.reads_failed += 1,
                }
            }
            row.entries_lowest = if lowest.is_empty() {
                "-".into()
            } else {
                watched_counts(&lowest)
            };
            row
        })
        .collect();
    Report {
        phases: rows,
        long,
        breaks,
        ..Default::default()
    }
}

/// `talaria-lab faults`: measures, prints the table, writes `summary.md`
/// and `faults.csv` into `--out`. Fails when a component did not survive,
/// after writing the results.
pub async fn run(a: FaultsArgs, switch: SwitchKind) -> Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let load_at_start = loadavg();
    let r = measure(&a, &switch).await?;
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join("faults.csv"), csv(&r.phases))?;
    let s = summary(&command, &a, &r, (&load_at_start, &loadavg()));
    std::fs::write(a.out.join("summary.md"), &s)?;
    println!("{s}");
    eprintln!("wrote {}/summary.md and faults.csv", a.out.display());
    if !r.all_survived() {
        bail!("not every component survived its kill -9 (see the summary)");
    }
    Ok(())
}

/// The results as Markdown.
pub fn summary(command: &str, a: &FaultsArgs, r: &Report, load: (&str, &str)) -> String {
    let mut s = String::new();
    let t = &r.topology;
    writeln!(s, "# Faults under load\n").unwrap();
    s.push_str(&provenance(command, r.took_s, load));
    writeln!(
        s,
        "Lab: talaria mode on switch-agent, {} nodes × {} pods, {} Services with {} endpoints each on the non-client nodes; \
         targets: {} Services' ClusterIPs. Long connections: {} from pod-n0-0, one HTTP request every {} ms on each, \
         broken = an error, no answer within {} ms, or another backend answering. \
         Short connections: {} workers from pod-n0-1, a new TCP connection per request, {} ms timeout. \
         Each component is killed with SIGKILL {} s into its phase, left down {} ms, started again with the same \
         command line, and the load runs {} s more once it is back in sync.\n",
        t.nodes,
        t.pods_per_node,
        t.services,
        t.endpoints_per_service,
        8.min(t.services),
        a.connections,
        a.interval_ms,
        a.timeout_ms,
        a.short_concurrency,
        a.timeout_ms,
        a.seconds,
        a.down_ms,
        a.seconds
    )
    .unwrap();
    writeln!(
        s,
        "Back in sync: switch-agent = serving P4Runtime again and the controller in a new session with the switch holding its plan; \
         controller = serving REST and its switch holding its plan; node agent = serving metrics (it opens them after its first pod sync). \
         Times are from the kill. Entries are `service_v4/backend/lb_bucket`; \"lowest\" is the lowest count read (every 500 ms, \
         through the controller; a read fails while the controller or switch-agent is down) during the phase. \"Identical\" compares every table entry for entry (keys, actions, ids) \
         before and after the phase. \"Controller writes\" counts the updates the controller wrote to the switch in the phase \
         (for the controller phase, everything the restarted controller wrote).\n"
    )
    .unwrap();
    writeln!(s, "## Results\n").unwrap();
    s.push_str(&table(r));
    writeln!(s).unwrap();
    writeln!(
        s,
        "Long connections: {} opened, {} broken ({} moved to another backend), {} requests served on them, latency p99 {:.1} ms, max {:.1} ms.\n",
        r.long.connections,
        r.long.broken,
        r.long.moved,
        r.long.requests,
        r.long.latency.p99_us / 1e3,
        r.long.latency.max_us / 1e3
    )
    .unwrap();
    if !r.breaks.is_empty() {
        writeln!(s, "### Broken long connections\n").unwrap();
        writeln!(s, "| phase | connection | target | reason |").unwrap();
        writeln!(s, "|---|---:|---|---|").unwrap();
        for (phase, b) in &r.breaks {
            writeln!(
                s,
                "| {phase} | {} | {} | {} |",
                b.connection, b.target, b.reason
            )
            .unwrap();
        }
        writeln!(s).unwrap();
    }
    let flows: Vec<String> = r
        .phases
        .iter()
        .filter(|p| !p.node_flows.is_empty())
        .map(|p| {
            format!(
                "- {}: flow entries in its pinned maps {}",
                p.phase, p.node_flows
            )
        })
        .collect();
    if !flows.is_empty() {
        writeln!(
            s,
            "Node agent flow state across its restart (the counts include finished short-connection flows waiting out \
             their grace period, so they move with the agent's GC; the state was kept, not rebuilt: the long connections' \
             reverse-NAT entries on that node outlived the agent; cookies are cached on the client's node only, so a \
             backend node holds none):\n"
        )
        .unwrap();
        for f in flows {
            writeln!(s, "{f}").unwrap();
        }
        writeln!(s).unwrap();
    }
    let kinds: Vec<String> = r
        .phases
        .iter()
        .filter(|p| !p.short_error_kinds.is_empty())
        .map(|p| format!("- {}: {}", p.phase, p.short_error_kinds))
        .collect();
    if !kinds.is_empty() {
        writeln!(s, "Short-connection errors by kind:\n").unwrap();
        for k in kinds {
            writeln!(s, "{k}").unwrap();
        }
        writeln!(s).unwrap();
    }
    let notes: Vec<String> = r
        .phases
        .iter()
        .filter(|p| !p.note.is_empty())
        .map(|p| format!("- {}: {}", p.phase, p.note))
        .collect();
    if !notes.is_empty() {
        writeln!(s, "### Notes\n").unwrap();
        for n in notes {
            writeln!(s, "{n}").unwrap();
        }
        writeln!(s).unwrap();
    }
    writeln!(s, "## Verdict\n").unwrap();
    let yes = |b: bool| if b { "yes" } else { "**no**" };
    let short: (u64, u64) = r.phases.iter().fold((0, 0), |(q, e), p| {
        (q + p.short_requests, e + p.short_errors)
    });
    writeln!(
        s,
        "- Long connections broken: {} of {} (target 0): {}",
        r.long.broken,
        r.long.connections,
        yes(r.long.broken == 0)
    )
    .unwrap();
    writeln!(
        s,
        "- Short-connection errors: {} of {} requests ({:.3} %)",
        short.1,
        short.0 + short.1,
        100.0 * short.1 as f64 / (short.0 + short.1).max(1) as f64
    )
    .unwrap();
    writeln!(
        s,
        "- Every component back in sync: {}",
        yes(r.phases.iter().all(|p| p.back))
    )
    .unwrap();
    writeln!(
        s,
        "- Tables identical across every restart (same entries, same ids), never seen empty: {}",
        yes(r
            .phases
            .iter()
            .all(|p| p.tables_identical && p.service_ids_same && !p.saw_empty_table()))
    )
    .unwrap();
    writeln!(
        s,
        "- Updates the controller wrote during the faults: {}",
        r.phases.iter().map(|p| p.controller_writes).sum::<u64>()
    )
    .unwrap();
    s
}

/// The paragraphs a results summary opens with: the command, the build
/// (git describe), the machine, how long the run took and the load average
/// at its start and end.
pub(crate) fn provenance(command: &str, took_s: f64, load: (&str, &str)) -> String {
    let mut s = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    writeln!(
        s,
        "Command (from the repository root, as root):\n\n```sh\n{command}\n```\n"
    )
    .unwrap();
    if let Some(rev) = git_describe() {
        writeln!(
            s,
            "Built from `{rev}` (git describe; `-dirty`: with uncommitted changes).\n"
        )
        .unwrap();
    }
    writeln!(
        s,
        "Machine: kernel {}, {} CPUs. Took {:.0} s. Load average (1, 5, 15 min) at the start: {}; at the end: {}.\n",
        kernel.trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        took_s,
        load.0,
        load.1
    )
    .unwrap();
    s
}

/// `git describe --always --dirty` of the working tree, when there is one.
pub(crate) fn git_describe() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// The per-phase table (Markdown; also printed).
fn table(r: &Report) -> String {
    let mut s = String::new();
    writeln!(s, "| phase | down s | serving s | back in sync s | long alive | long broken | short ok | short errors | short p99 ms | entries before | after | lowest during | reads ok/failed | identical | controller writes |").unwrap();
    writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---|---:|"
    )
    .unwrap();
    for p in &r.phases {
        let sec = |x: f64| {
            if p.phase == "baseline" {
                "-".to_string()
            } else {
                format!("{x:.2}")
            }
        };
        writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {}/{} | {} | {} |",
            p.phase,
            sec(p.down_s),
            sec(p.serving_s),
            if p.back {
                sec(p.in_sync_s)
            } else {
                "not back".into()
            },
            p.long_alive,
            p.long_broken,
            p.short_requests,
            p.short_errors,
            p.short_p99_ms,
            p.entries_before,
            p.entries_after,
            p.entries_lowest,
            p.reads_ok,
            p.reads_failed,
            if p.tables_identical && p.service_ids_same {
                "yes"
            } else {
                "no"
            },
            p.controller_writes
        )
        .unwrap();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(v: &[(&str, &[&str])]) -> Tables {
        v.iter()
            .map(|(n, e)| (n.to_string(), e.iter().map(|x| x.to_string()).collect()))
            .collect()
    }

    #[test]
    fn table_diff_names_what_changed() {
        let a = tables(&[("service_v4", &["a", "b"]), ("backend", &["x"])]);
        let b = tables(&[("service_v4", &["a", "c"]), ("backend", &["x"])]);
        assert!(table_diff(&a, &a).is_empty());
        assert_eq!(table_diff(&a, &b), ["service_v4 +1 -1"]);
        let wiped = tables(&[("service_v4", &[]), ("backend", &["x"])]);
        assert_eq!(table_diff(&a, &wiped), ["service_v4 +0 -2"]);
        assert_eq!(watched_counts(&counts(&a)), "2/1/?");
    }

    #[test]
    fn daemons_by_name() {
        for d in default_kills() {
            assert_eq!(d.to_string().parse::<Daemon>(), Ok(d));
        }
        assert_eq!(Daemon::NodeAgent(2).label(), "talaria-node-2");
        assert!("node-x".parse::<Daemon>().is_err());
        assert!("bmv2".parse::<Daemon>().is_err());
    }

    fn phase(name: &str, start_ms: u64, at: Instant) -> Phase {
        Phase {
            row: PhaseRow {
                phase: name.into(),
                back: true,
                tables_identical: true,
                service_ids_same: true,
                ..Default::default()
            },
            start_ms,
            window: (at, at + Duration::from_secs(10)),
        }
    }

    #[test]
    fn breaks_and_samples_land_in_their_phase() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(20);
        let phases = vec![phase("baseline", 1000, t0), phase("switch-agent", 2000, t1)];
        let brk = |at_ms| Break {
            at_ms,
            connection: 3,
            target: "10.96.0.10:80".parse().unwrap(),
            reason: "connection reset by peer".into(),
        };
        let long = LoadResult {
            connections: 10,
            broken: 2,
            // Before the baseline (still opening) counts as the baseline.
            breaks: vec![brk(900), brk(2500)],
            ..Default::default()
        };
        let count = |n: usize| {
            let mut m = BTreeMap::new();
            for t in WATCHED {
                m.insert(t.to_string(), n);
            }
            Some(m)
        };
        let samples = [
            Sample {
                at: t0 + Duration::from_secs(1),
                counts: count(40),
            },
            Sample {
                at: t1 + Duration::from_secs(1),
                counts: None,
            },
            Sample {
                at: t1 + Duration::from_secs(2),
                counts: count(0),
            },
        ];
        let r = assemble(phases, long, &samples);
        let p = &r.phases;
        assert_eq!((p[0].long_alive, p[0].long_broken), (10, 1));
        assert_eq!((p[1].long_alive, p[1].long_broken), (9, 1));
        assert_eq!(r.breaks[1].0, "switch-agent");
        assert_eq!((p[0].reads_ok, p[0].reads_failed), (1, 0));
        assert_eq!(p[0].entries_lowest, "40/40/40");
        assert_eq!((p[1].reads_ok, p[1].reads_failed), (1, 1));
        assert!(p[1].saw_empty_table() && !p[0].saw_empty_table());
        assert!(!r.all_survived());
    }
}
