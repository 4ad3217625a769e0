//! `talaria-lab soak`: endpoint churn at scale, under load, for minutes.
//!
//! A talaria-mode lab on switch-agent holds `--services` Services of
//! `--endpoints` endpoints each. Long connections (`hold`, a request every
//! `--interval-ms` on each) and a short-connection load (a new TCP
//! connection per request) run to eight of them while the pools change
//! `--rate` times a second for `--seconds`. A change is one of:
//!
//! - one of a Service's own endpoints turns not ready, or ready again (a
//!   readiness probe failing and recovering): its established connections
//!   must go on, new ones avoid it;
//! - an extra endpoint (a pod outside the Service's own set) is added, or
//!   removed again (a scale-up and scale-down).
//!
//! A share of the changes (`--held-share`) hits the eight Services under
//! load; the rest spread over all of them. The long connections open before
//! the first change, on the Services' own endpoints, so none of them may
//! break: an endpoint they use only ever turns not ready and back.
//!
//! Every second the manifest files of the changed Services are rewritten
//! (the controller polls the directory). Every `--sample-secs` the
//! controller's RSS, its plan and sync versions and switch-agent's table
//! occupancy (`talaria_switch_table_entries`) are sampled. At the end the
//! controller's backends of every Service must equal what was written.
//!
//! Results: a summary on stdout and in `<out>/summary.md` (with the exact
//! command), the samples in `<out>/samples.csv`.

use crate::bench::{chrono_now, csv, loadavg};
use crate::bringup::{self, controller_status, talariactl, Daemon, SWITCH_METRICS};
use crate::manifests::ServiceSet;
use crate::modes::{self, LoadRun, Mode};
use crate::netns::{in_ns, Lab, SERVICES_PER_FILE};
use crate::switch::SwitchKind;
use crate::topology::pick_services;
use crate::topology::Topology;
use crate::traffic::{LoadResult, Proto};
use anyhow::{bail, Context, Result};
use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `talaria-lab soak` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Services (each with a TCP and a UDP port).
    #[arg(long, default_value_t = 10_000)]
    pub services: u32,
    /// Endpoints of each Service.
    #[arg(long, default_value_t = 10)]
    pub endpoints: u32,
    /// Backend pods per node (two of the three nodes host backends; the
    /// Services' endpoints and extras are drawn from them).
    #[arg(long, default_value_t = 8)]
    pub pods_per_node: u32,
    /// Endpoint changes per second.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Seconds of churn.
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
    /// Percentage of the changes that hit the Services under load.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub held_share: u32,
    /// Long-lived connections.
    #[arg(long, default_value_t = 100)]
    pub connections: u32,
    /// Milliseconds between two requests of one long connection.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
    /// Workers of the short-connection load.
    #[arg(long, default_value_t = 4)]
    pub short_concurrency: u32,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Seconds between two samples.
    #[arg(long, default_value_t = 30)]
    pub sample_secs: u64,
    /// Seed of the change sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output directory (summary.md, samples.csv).
    #[arg(long, default_value = "bench/results/soak")]
    pub out: PathBuf,
}

/// One sample of the controller and the switch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Seconds since the churn started.
    pub at_s: f64,
    /// Changes written so far.
    pub changes: u64,
    /// Controller resident set, MiB.
    pub controller_rss_mib: f64,
    /// The controller's plan version.
    pub plan_version: u64,
    /// The version the switch holds.
    pub synced_version: u64,
    /// `service_v4` entries.
    pub service_v4: u64,
    /// `backend` entries.
    pub backend: u64,
    /// `lb_bucket` entries.
    pub lb_bucket: u64,
    /// `cookie_check` entries.
    pub cookie_check: u64,
}

/// What a soak measured.
#[derive(Debug, Default)]
pub struct Report {
    /// Topology used.
    pub topology: Topology,
    /// Changes written.
    pub changes: u64,
    /// Of those, on the Services under load.
    pub held_changes: u64,
    /// Seconds the churn ran.
    pub churn_s: f64,
    /// Seconds from the last change until the switch held it.
    pub settle_s: f64,
    /// Periodic samples.
    pub samples: Vec<Sample>,
    /// The long connections.
    pub long: LoadResult,
    /// The short-connection load.
    pub short: LoadResult,
    /// Services whose backends differ from what was written, at the end.
    pub mismatches: Vec<String>,
    /// Seconds the whole run took.
    pub took_s: f64,
}

impl Report {
    /// No long connection broke and the controller ended where the
    /// manifests did.
    pub fn passed(&self) -> bool {
        self.long.connections > 0 && self.long.broken == 0 && self.mismatches.is_empty()
    }
}

fn progress(msg: &str) {
    eprintln!("[soak {}] {msg}", chrono_now());
}

/// The endpoint churn over a Service set.
struct Churn {
    t: Topology,
    rng: XorShiftRng,
    held: Vec<u32>,
    held_share: u32,
    /// The extra endpoint each Service has now.
    extra: BTreeMap<u32, (u32, u32)>,
}

impl Churn {
    /// Applies one change to `set`; returns the Service it changed.
    fn change(&mut self, set: &mut ServiceSet) -> u32 {
        let k = if (self.rng.random_range(0..100) as u32) < self.held_share {
            self.held[self.rng.random_range(0..self.held.len())]
        } else {
            self.rng.random_range(0..set.services.len()) as u32
        };
        let own = self.t.service_endpoints(k);
        let s = &mut set.services[k as usize];
        if self.rng.random_range(0..2) == 0 {
            // Readiness of one of its own endpoints flips; one stays ready.
            let e = own[self.rng.random_range(0..own.len())];
            if let Some(i) = s.endpoints.iter().position(|x| *x == e) {
                if s.endpoints.len() > 1 {
                    s.endpoints.remove(i);
                    s.not_ready.push(e);
                }
            } else if let Some(i) = s.not_ready.iter().position(|x| *x == e) {
                s.not_ready.remove(i);
                s.endpoints.push(e);
            }
        } else if let Some(e) = self.extra.remove(&k) {
            s.endpoints.retain(|x| *x != e);
        } else {
            let pool = self.t.backend_pods();
            let others: Vec<_> = pool.iter().filter(|p| !own.contains(p)).collect();
            if let Some(&&e) = others.get(self.rng.random_range(0..others.len().max(1))) {
                s.endpoints.push(e);
                self.extra.insert(k, e);
            }
        }
        k
    }
}

/// Controller RSS in MiB, from `/proc/<pid>/status`.
fn controller_rss(lab: &Lab) -> f64 {
    let Some(pid) = lab.pids(&Daemon::Controller.label()).last().copied() else {
        return 0.0;
    };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// switch-agent's `talaria_switch_table_entries` by table alias.
fn table_entries(lab: &Lab) -> Result<BTreeMap<String, u64>> {
    let url = format!("http://{SWITCH_METRICS}/metrics");
    let text = in_ns(
        &lab.names.switch(),
        &["curl", "-sf", "--max-time", "20", &url],
        None,
    )?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("talaria_switch_table_entries{table=\""))
        .filter_map(|l| {
            let (table, rest) = l.split_once("\"}")?;
            Some((table.to_string(), rest.trim().parse().ok()?))
        })
        .collect())
}

fn sample(lab: &Lab, at: Instant, changes: u64) -> Sample {
    let mut s = Sample {
        at_s: at.elapsed().as_secs_f64(),
        changes,
        controller_rss_mib: controller_rss(lab),
        ..Default::default()
    };
    if let Ok(v) = controller_status(lab) {
        s.plan_version = v["plan_version"].as_u64().unwrap_or(0);
        s.synced_version = v["switches"][0]["status"]["synced_version"]
            .as_u64()
            .unwrap_or(0);
    }
    match table_entries(lab) {
        Ok(t) => {
            let get = |n: &str| t.get(n).copied().unwrap_or(0);
            s.service_v4 = get("service_v4");
            s.backend = get("backend");
            s.lb_bucket = get("lb_bucket");
            s.cookie_check = get("cookie_check");
        }
        Err(e) => progress(&format!("table occupancy not read: {e:#}")),
    }
    s
}

/// Waits (bounded) until the switch holds the controller's latest plan.
async fn settle(lab: &Lab, limit: Duration) -> Result<f64> {
    let t0 = Instant::now();
    // The controller polls its manifests every 200 ms and reads a change
    // once two polls agree.
    tokio::time::sleep(Duration::from_millis(600)).await;
    loop {
        let v = controller_status(lab)?;
        let plan = v["plan_version"].as_u64().unwrap_or(0);
        let synced = v["switches"][0]["status"]["synced_version"]
            .as_u64()
            .unwrap_or(0);
        if synced >= plan {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > limit {
            bail!("switch at plan {synced}, controller at {plan} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every Service whose controller backends (active, draining by address)
/// differ from the set written.
fn mismatches(lab: &Lab, set: &ServiceSet) -> Result<Vec<String>> {
    let text = talariactl(lab, &["services", "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&text).context("talariactl services")?;
    let ips = |m: &serde_json::Value| -> BTreeSet<String> {
        m.as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, b)| b["ip"].as_str().map(str::to_string))
            .collect()
    };
    let mut seen: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for s in v.as_array().into_iter().flatten() {
        // The TCP port stands for the Service (the UDP one has the same pods).
        for p in s["data_path"].as_array().into_iter().flatten() {
            if p["key"]["proto"].as_str().map(str::to_ascii_lowercase) == Some("tcp".into()) {
                let name = p["service"]["name"].as_str().unwrap_or("?").to_string();
                seen.insert(name, (ips(&p["active"]), ips(&p["draining"])));
            }
        }
    }
    let t = &lab.topo;
    let addrs = |v: &[(u32, u32)]| -> BTreeSet<String> {
        v.iter()
            .map(|&(n, p)| Ipv4Addr::to_string(&t.pod_ip(n, p)))
            .collect()
    };
    let mut out = Vec::new();
    for s in &set.services {
        let want = (addrs(&s.endpoints), addrs(&s.not_ready));
        match seen.get(&s.name) {
            Some(got) if *got == want => {}
            got => out.push(format!("{}: want {want:?}, controller has {got:?}", s.name)),
        }
    }
    Ok(out)
}

/// Brings the lab up, runs the soak, tears the lab down.
pub async fn measure(a: &SoakArgs, switch: &SwitchKind) -> Result<Report> {
    if *switch != SwitchKind::SwitchAgent {
        bail!("soak reads switch-agent's table occupancy: use --switch switch-agent");
    }
    let started = Instant::now();
    let t = Topology {
        services: a.services,
        endpoints_per_service: a.endpoints,
        pods_per_node: a.pods_per_node,
        ..Topology::embedded_default()
    };
    t.validate()?;
    anyhow::ensure!(
        t.backend_pods().len() > t.endpoints_per_service as usize,
        "{} backend pods leave no extra endpoint beside {} per Service: raise --pods-per-node",
        t.backend_pods().len(),
        t.endpoints_per_service
    );
    progress(&format!(
        "talaria mode: {} nodes × {} pods, {} Services × {} endpoints",
        t.nodes, t.pods_per_node, t.services, t.endpoints_per_service
    ));
    let (mut lab, set) = bringup::lab_for(t.clone(), Mode::Talaria, switch).await?;
    let result = run(&mut lab, a, set).await;
    let problems = lab.down();
    anyhow::ensure!(problems.is_empty(), "teardown: {problems:?}");
    let mut r = result?;
    r.took_s = started.elapsed().as_secs_f64();
    r.topology = t;
    Ok(r)
}

async fn run(lab: &mut Lab, a: &SoakArgs, mut set: ServiceSet) -> Result<Report> {
    let t = lab.topo.clone();
    let clients = t.client_pods();
    anyhow::ensure!(clients.len() >= 2, "the topology needs two client pods");
    let held = pick_services(set.services.len() as u32, 8);
    let targets = modes::targets(&t, &set, Mode::Talaria, Proto::Hold, &held);
    // The loads outlast the churn; the stop files end them.
    let duration = Duration::from_secs(a.seconds + 300);
    let timeout = Duration::from_millis(a.timeout_ms);
    let interval = Duration::from_millis(a.interval_ms);
    let hold_stop = lab.run_dir.join("soak-hold.stop");
    let short_stop = lab.run_dir.join("soak-short.stop");
    let hold = modes::start_load(
        lab,
        &LoadRun {
            client: clients[0].into(),
            proto: Proto::Hold,
            targets: targets.clone(),
            concurrency: a.connections,
            duration,
            timeout,
            interval,
            stop_file: Some(hold_stop.clone()),
        },
    )?;
    let short = modes::start_load(
        lab,
        &LoadRun {
            client: clients[1].into(),
            proto: Proto::HttpShort,
            targets,
            concurrency: a.short_concurrency,
            duration,
            timeout,
            interval,
            stop_file: Some(short_stop.clone()),
        },
    )?;
    // Every long connection open before the first change.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut churn = Churn {
        t: t.clone(),
        rng: XorShiftRng::seed_from_u64(a.seed),
        held: held.clone(),
        held_share: a.held_share,
        extra: BTreeMap::new(),
    };
    let mut report = Report::default();
    let t0 = Instant::now();
    report.samples.push(sample(lab, t0, 0));
    progress(&format!(
        "{} long connections, {} short workers; {} changes/s for {} s",
        a.connections, a.short_concurrency, a.rate, a.seconds
    ));
    let mut next_sample = Duration::from_secs(a.sample_secs);
    let mut second = 0u64;
    while second < a.seconds {
        second += 1;
        let mut files = BTreeSet::new();
        for _ in 0..a.rate {
            let k = churn.change(&mut set);
            report.changes += 1;
            report.held_changes += u64::from(held.contains(&k));
            files.insert(k as usize / SERVICES_PER_FILE);
        }
        lab.write_services(&set, Some(&files))?;
        if t0.elapsed() >= next_sample {
            let s = sample(lab, t0, report.changes);
            progress(&format!(
                "{:.0} s: {} changes, controller {:.0} MiB, plan {} / switch {}, backend {} lb_bucket {}",
                s.at_s, s.changes, s.controller_rss_mib, s.plan_version, s.synced_version, s.backend, s.lb_bucket
            ));
            report.samples.push(s);
            next_sample += Duration::from_secs(a.sample_secs);
        }
        let tick = Duration::from_secs(second);
        tokio::time::sleep(tick.saturating_sub(t0.elapsed())).await;
    }
    report.churn_s = t0.elapsed().as_secs_f64();
    report.settle_s = settle(lab, Duration::from_secs(120)).await?;
    report.samples.push(sample(lab, t0, report.changes));
    // A few seconds of load on the final pools before stopping.
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::write(&hold_stop, b"stop")?;
    std::fs::write(&short_stop, b"stop")?;
    report.long = modes::wait_load(lab, hold).await?;
    report.short = modes::wait_load(lab, short).await?;
    report.mismatches = mismatches(lab, &set)?;
    Ok(report)
}

/// `talaria-lab soak`: measures, writes `summary.md` and `samples.csv`,
/// fails when a long connection broke or the controller ended elsewhere
/// than the manifests.
pub async fn run_soak(a: SoakArgs, switch: SwitchKind) -> Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let load_at_start = loadavg();
    let r = measure(&a, &switch).await?;
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join("samples.csv"), csv(&r.samples))?;
    let s = summary(&command, &a, &r, (&load_at_start, &loadavg()));
    std::fs::write(a.out.join("summary.md"), &s)?;
    println!("{s}");
    eprintln!("wrote {}/summary.md and samples.csv", a.out.display());
    if !r.passed() {
        bail!("soak failed: broken long connections or a controller out of step (see the summary)");
    }
    Ok(())
}

fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    })
}

/// The results as Markdown.
pub fn summary(command: &str, a: &SoakArgs, r: &Report, load: (&str, &str)) -> String {
    let mut s = String::new();
    let t = &r.topology;
    let w = &mut s;
    let _ = writeln!(w, "# Soak: endpoint churn at scale under load\n");
    w.push_str(&crate::faults::provenance(command, r.took_s, load));
    let _ = writeln!(
        w,
        "Lab: talaria mode on switch-agent, {} nodes × {} pods, {} Services × {} endpoints (TCP and UDP port each). \
         {} long connections (a request every {} ms on each) and {} short-connection workers to 8 Services. \
         {} endpoint changes a second for {} s ({}% on the 8 Services under load): an own endpoint turns not ready \
         or ready again, or an extra endpoint is added or removed.\n",
        t.nodes, t.pods_per_node, t.services, t.endpoints_per_service, a.connections, a.interval_ms,
        a.short_concurrency, a.rate, a.seconds, a.held_share
    );
    let rate = r.changes as f64 / r.churn_s.max(1e-9);
    let _ = writeln!(
        w,
        "## Result: {}\n",
        if r.passed() { "passed" } else { "FAILED" }
    );
    let _ = writeln!(
        w,
        "- Changes: {} in {:.0} s ({rate:.1}/s), {} of them on the Services under load; the switch held the last \
         one {:.1} s after it was written.",
        r.changes, r.churn_s, r.held_changes, r.settle_s
    );
    let _ = writeln!(
        w,
        "- Long connections: {} opened, {} broken ({} answered by another backend), {} requests served.",
        r.long.connections, r.long.broken, r.long.moved, r.long.requests
    );
    let kinds: Vec<String> = r
        .short
        .error_kinds
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect();
    let _ = writeln!(
        w,
        "- Short connections: {} requests, {} errors{}, p99 {:.1} ms.",
        r.short.requests,
        r.short.errors,
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        },
        r.short.latency.p99_us / 1e3
    );
    let (rss_lo, rss_hi) = range(r.samples.iter().map(|x| x.controller_rss_mib));
    let _ = writeln!(w, "- Controller RSS: {rss_lo:.0}–{rss_hi:.0} MiB.");
    let (b_lo, b_hi) = range(r.samples.iter().map(|x| x.backend as f64));
    let (l_lo, l_hi) = range(r.samples.iter().map(|x| x.lb_bucket as f64));
    let _ = writeln!(
        w,
        "- Switch tables: backend {b_lo:.0}–{b_hi:.0} entries, lb_bucket {l_lo:.0}–{l_hi:.0}."
    );
    let _ = writeln!(
        w,
        "- Controller backends equal to the manifests at the end: {}\n",
        if r.mismatches.is_empty() {
            "every Service".to_string()
        } else {
            format!(
                "{} Services differ, e.g. {}",
                r.mismatches.len(),
                r.mismatches[0]
            )
        }
    );
    let _ = writeln!(w, "## Samples\n");
    let _ = writeln!(
        w,
        "| s | changes | controller RSS MiB | plan | switch | service_v4 | backend | lb_bucket | cookie_check |"
    );
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for x in &r.samples {
        let _ = writeln!(
            w,
            "| {:.0} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            x.at_s,
            x.changes,
            x.controller_rss_mib,
            x.plan_version,
            x.synced_version,
            x.service_v4,
            x.backend,
            x.lb_bucket,
            x.cookie_check
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn churn(t: &Topology, share: u32) -> Churn {
        Churn {
            t: t.clone(),
            rng: XorShiftRng::seed_from_u64(7),
            held: vec![1, 3],
            held_share: share,
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn churn_keeps_own_endpoints_listed_and_one_ready() {
        let t = Topology {
            services: 20,
            endpoints_per_service: 3,
            ..Topology::default()
        };
        let mut set = ServiceSet::from_topology(&t);
        let mut c = churn(&t, 50);
        let mut hits = 0;
        for _ in 0..5000 {
            hits += u32::from([1, 3].contains(&c.change(&mut set)));
        }
        assert!(
            hits > 2000,
            "half the changes hit the held Services: {hits}"
        );
        for s in &set.services {
            let own = t.service_endpoints(s.index);
            assert!(
                !s.endpoints.is_empty(),
                "{}: one endpoint stays ready",
                s.name
            );
            for e in &own {
                let listed = s.endpoints.contains(e) as u32 + s.not_ready.contains(e) as u32;
                assert_eq!(listed, 1, "{}: {e:?} listed once, ready or not", s.name);
            }
            let extras: Vec<_> = s.endpoints.iter().filter(|e| !own.contains(e)).collect();
            assert!(extras.len() <= 1, "{}: {extras:?}", s.name);
            assert_eq!(extras.first().copied(), c.extra.get(&s.index), "{}", s.name);
        }
    }

    #[test]
    fn changes_are_reproducible() {
        let t = Topology::default();
        let (mut a, mut b) = (ServiceSet::from_topology(&t), ServiceSet::from_topology(&t));
        let (mut ca, mut cb) = (churn(&t, 10), churn(&t, 10));
        for _ in 0..200 {
            assert_eq!(ca.change(&mut a), cb.change(&mut b));
        }
        assert_eq!(a, b);
        assert_ne!(
            a,
            ServiceSet::from_topology(&t),
            "200 changes changed something"
        );
    }
}
