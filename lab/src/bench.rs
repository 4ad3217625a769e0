//! `talaria-lab bench`: Talaria's questions on the lab.
//!
//! 1. Throughput and latency against the number of Services and against
//!    concurrency, for short (connection per request) and long (keep-alive)
//!    connections, per mode.
//! 2. Host CPU per request (see [`crate::cpu`] for the method).
//! 3. Connection consistency: N long-lived connections while the pool of one
//!    Service changes 100 times; broken connections counted.
//!
//! Every mode gets a fresh lab (so no netfilter state from one mode lingers
//! into another). Results go to `<out>/*.csv`, `<out>/*.svg` and
//! `<out>/summary.md`, which records the exact command line.

use crate::bringup::{self, lab_for};
use crate::manifests::ServiceSet;
use crate::measure::{measure, Row};
use crate::modes::{self, apply_rules, Client, LoadRun, Mode};
use crate::netns::Lab;
use crate::plot;
use crate::switch::SwitchKind;
use crate::topology::{IpFamily, Topology};
use crate::traffic::Proto;
use anyhow::{bail, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Benchmark options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Minutes on 2 cores: fewer points, 2 s per point, 20 held connections.
    #[arg(long)]
    pub quick: bool,
    /// Output directory.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Modes to run (default: direct, iptables, nftables, ipvs, talaria).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub modes: Vec<Mode>,
    /// Service counts (default: 10,100,1000,5000,10000; quick: 10,1000,10000).
    #[arg(long, value_delimiter = ',')]
    pub services: Vec<u32>,
    /// Concurrency levels (default: 1,10,50,100).
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Vec<u32>,
    /// Seconds per point (default 10; quick 2).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Concurrency of the Services sweep.
    #[arg(long, default_value_t = 10)]
    pub sweep_concurrency: u32,
    /// Services of the concurrency sweep.
    #[arg(long, default_value_t = 100)]
    pub sweep_services: u32,
    /// Skip the consistency experiment.
    #[arg(long, conflicts_with = "consistency_only")]
    pub no_consistency: bool,
    /// Run only the consistency experiment (no throughput sweeps).
    #[arg(long)]
    pub consistency_only: bool,
    /// Long-lived connections of the consistency experiment (default 100; quick 20).
    #[arg(long)]
    pub connections: Option<u32>,
    /// Pool changes of the consistency experiment.
    #[arg(long, default_value_t = 100)]
    pub changes: u32,
    /// Load kinds of the sweeps (default: http-short,http-long).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub protos: Vec<Proto>,
    /// Also measure clients outside the cluster: short connections from
    /// external host 0 to every external Service's LoadBalancer IP
    /// (direct: its endpoints) at each Service count of the Services
    /// sweep, and the consistency experiment from there (talaria and
    /// iptables).
    #[arg(long)]
    pub external: bool,
    /// Run everything on each of these switches in turn and compare them
    /// in the summary (default: the global --switch alone).
    #[arg(long, value_delimiter = ',', value_parser = ["switch-agent", "bmv2"])]
    pub switches: Vec<String>,
    /// Address families of the sweeps (default: ipv4,ipv6). Each family
    /// gets a lab of its own per mode, whose Services are single-stack of
    /// that family (ip6tables and table `ip6 kube-proxy` for IPv6), so
    /// that IPv6 points compare like for like and IPv4 points are those
    /// of an IPv4 cluster. The consistency experiment is IPv4.
    #[arg(long, value_delimiter = ',')]
    pub families: Vec<IpFamily>,
}

/// One consistency result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsistencyRow {
    /// Mode or variant.
    pub variant: String,
    /// What forwarded between nodes.
    pub switch: String,
    /// Long-lived connections.
    pub connections: u64,
    /// Pool changes applied.
    pub changes: u32,
    /// Connections broken (error/reset/timeout or moved backend).
    pub broken: u64,
    /// Of those, connections answered by another backend.
    pub moved: u64,
    /// Requests served on the held connections.
    pub requests: u64,
    /// Talaria: entries in all the switch's tables before the connections
    /// opened, once they were all open, and after the last change (the
    /// pool's departed backends stay in `cookie_check`, `ts_cookie` and
    /// `backend` for their quarantine). The first two are equal: the switch
    /// keeps nothing per connection.
    pub entries_before: Option<u64>,
    /// See `entries_before`.
    pub entries_held: Option<u64>,
    /// See `entries_before`.
    pub entries_after: Option<u64>,
    /// Talaria: packets the switch sent by an outside client's timestamp
    /// cookie (`ts_cookie_hit`) and that echoed no valid one
    /// (`ts_cookie_miss`), over the run.
    pub ts_cookie_hits: Option<u64>,
    /// See `ts_cookie_hits`.
    pub ts_cookie_misses: Option<u64>,
    /// Note (skips, failures).
    pub note: String,
}

/// Reprograms a running lab for a new Service set.
async fn reprogram(lab: &mut Lab, mode: Mode, set: &ServiceSet) -> Result<f64> {
    lab.write_configs(set)?;
    if mode == Mode::Talaria {
        let t0 = Instant::now();
        bringup::talaria_apply_services(lab, set).await?;
        Ok(t0.elapsed().as_secs_f64())
    } else {
        apply_rules(lab, mode, set)
    }
}

fn progress(msg: &str) {
    eprintln!("[bench {}] {msg}", chrono_now());
}

pub(crate) fn chrono_now() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// What one sweep measures.
struct Plan<'a> {
    services: &'a [u32],
    conc: &'a [u32],
    protos: &'a [Proto],
    secs: u64,
}

/// Runs the throughput/latency/CPU sweeps for one mode on a fresh lab
/// whose Services are of `family`.
async fn sweep_mode(
    a: &BenchArgs,
    mode: Mode,
    family: IpFamily,
    switch: &SwitchKind,
    p: &Plan<'_>,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let (services, conc, secs) = (p.services, p.conc, p.secs);
    // Start with the plan's first count; later points reprogram.
    let first = services.first().copied().unwrap_or(a.sweep_services);
    let t = Topology {
        services: first.max(1),
        service_families: vec![family],
        ..Topology::embedded_default()
    };
    let unmeasured = |exp: &str, svc, c, note| Row {
        experiment: exp.into(),
        mode: mode.name().into(),
        switch: switch.name().into(),
        family: family.name().into(),
        services: svc,
        concurrency: c,
        note,
        ..Default::default()
    };
    let (mut lab, _) = lab_for(t.clone(), mode, switch).await?;
    let dur = Duration::from_secs(secs);
    let result = async {
        let mut plan: Vec<(&str, u32, u32)> = services.iter().map(|&s| ("services", s, a.sweep_concurrency)).collect();
        plan.extend(conc.iter().map(|&c| ("concurrency", a.sweep_services, c)));
        let mut current = Some(first);
        for (exp, svc, c) in plan {
            let set = ServiceSet::with_count(&t, svc);
            let mut apply = 0.0;
            if current != Some(svc) {
                match reprogram(&mut lab, mode, &set).await {
                    Ok(s) => apply = s,
                    Err(e) => {
                        let note = format!("{svc} Services could not be programmed: {e:#}");
                        progress(&format!("{} {}: {note}", mode.name(), family.name()));
                        rows.push(unmeasured(exp, svc, c, note));
                        current = None;
                        continue;
                    }
                }
                current = Some(svc);
            }
            let mut loads: Vec<(&str, Proto, bool)> =
                p.protos.iter().map(|&proto| (exp, proto, false)).collect();
            // IPVS mode has no rules for external Services, and they
            // have IPv4 addresses only.
            if exp == "services" && a.external && mode != Mode::Ipvs && family == IpFamily::IPv4 {
                loads.push(("external", Proto::HttpShort, true));
            }
            for (exp, proto, outside) in loads {
                let mut row = match measure(&mut lab, mode, &set, proto, c, dur, outside).await {
                    Ok(r) => r,
                    Err(e) => {
                        let note = format!("measurement failed: {e:#}");
                        progress(&format!("{} {}: {note}", mode.name(), family.name()));
                        rows.push(unmeasured(exp, svc, c, note));
                        continue;
                    }
                };
                row.experiment = exp.into();
                row.rule_apply_s = apply;
                progress(&format!(
                    "{:<12} {:<8} {} {:<10}{} svc={:<5} c={:<3} {:>9.0} req/s  p99 {:>7.0} µs  cpu/req {:>6.1} µs  errors {}",
                    switch.name(),
                    mode.name(),
                    row.family,
                    row.proto,
                    if outside { " (outside)" } else { "" },
                    svc,
                    c,
                    row.rps,
                    row.p99_us,
                    row.cpu_us_per_req,
                    row.errors
                ));
                rows.push(row);
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let problems = lab.down();
    anyhow::ensure!(problems.is_empty(), "teardown: {problems:?}");
    result
}

/// The consistency experiment for one variant.
pub async fn consistency(
    variant: &str,
    switch: &SwitchKind,
    connections: u32,
    changes: u32,
    quick: bool,
) -> Result<ConsistencyRow> {
    // `-outside`: the connections come from external host 0 to the
    // Service's LoadBalancer IP, not from a pod to its ClusterIP.
    let (base, outside) = match variant.strip_suffix("-outside") {
        Some(base) => (base, true),
        None => (variant, false),
    };
    let mode = match base {
        "iptables" => Mode::Iptables,
        "nftables" => Mode::Nftables,
        "talaria" | "talaria-hash-only" => Mode::Talaria,
        v => bail!("unknown variant {v}"),
    };
    // 1 Service, a LoadBalancer, whose pool cycles through the 8 backend
    // pods of nodes 1-2.
    let t = Topology {
        services: 1,
        endpoints_per_service: 4,
        external_services: 1,
        ..Topology::embedded_default()
    };
    // Hash only: from pods, the client nodes learn no cookies; from
    // outside, the lab runs without timestamp cookies.
    let hash_only = base == "talaria-hash-only";
    let (mut lab, mut set) = bringup::lab_for_with(t.clone(), mode, switch, |lab| {
        lab.ts_cookies = !(hash_only && outside)
    })
    .await?;
    if hash_only && !outside {
        bringup::set_hash_only(&mut lab, true).await?;
    }
    let result = async {
        let pool = t.backend_pods();
        let gap = Duration::from_millis(if quick { 60 } else { 100 });
        // Bounded by time; normally ended early through the stop file.
        let hold = ((gap + Duration::from_secs(1)) * changes + Duration::from_secs(10))
            .min(Duration::from_secs(590));
        let stop_file = lab.run_dir.join("hold.stop");
        let (client, targets) = if outside {
            let targets = modes::external_targets(&t, &set, mode, Proto::Hold);
            (Client::External(0), targets)
        } else {
            let targets = modes::targets(&t, &set, mode, Proto::Hold, &[0]);
            (t.client_pods()[0].into(), targets)
        };
        let exe = LoadRun {
            client,
            proto: Proto::Hold,
            targets,
            concurrency: connections,
            duration: hold,
            timeout: Duration::from_secs(1),
            interval: Duration::from_millis(20),
            stop_file: Some(stop_file.clone()),
        };
        let talaria = mode == Mode::Talaria;
        let entries = |lab: &Lab| talaria.then(|| bringup::switch_entries(lab)).transpose();
        let entries_before = entries(&lab)?;
        let started = modes::start_load(&mut lab, &exe)?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let entries_held = entries(&lab)?;
        let mut next = 4usize;
        let mut applied = 0;
        for i in 0..changes {
            let eps = &mut set.services[0].endpoints;
            if i % 2 == 0 {
                // Add a backend.
                eps.push(pool[next % pool.len()]);
                next += 1;
            } else {
                // Remove the oldest backend (its server keeps running, as a
                // terminating pod's would while it drains).
                eps.remove(0);
            }
            reprogram(&mut lab, mode, &set).await?;
            applied += 1;
            tokio::time::sleep(gap).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::fs::write(&stop_file, b"stop")?;
        let r = modes::wait_load(&mut lab, started).await?;
        let entries_after = entries(&lab)?;
        let event = |name| talaria.then(|| bringup::lb_event(&lab, name)).transpose();
        let (ts_cookie_hits, ts_cookie_misses) = (event("ts_cookie_hit")?, event("ts_cookie_miss")?);
        Ok::<_, anyhow::Error>(ConsistencyRow {
            entries_before,
            entries_held,
            entries_after,
            ts_cookie_hits,
            ts_cookie_misses,
            variant: variant.into(),
            switch: switch.name().into(),
            connections: r.connections,
            changes: applied,
            broken: r.broken,
            moved: r.moved,
            requests: r.requests,
            note: match variant {
                "talaria-hash-only" => "client node agents with ignore_cookies: the switch balances every packet by hash".into(),
                "talaria-outside" => "clients outside the cluster: their TCP timestamps carry the backend's cookie".into(),
                "talaria-hash-only-outside" => "clients outside the cluster, no timestamp-cookie key: the switch balances every packet by hash".into(),
                _ if outside => "clients outside the cluster, through node-0's conntrack".into(),
                _ => String::new(),
            },
        })
    }
    .await;
    if std::env::var_os("TALARIA_LAB_KEEP_BROKEN").is_some()
        && result.as_ref().is_ok_and(|r| r.broken > 0)
    {
        // For a post-mortem of the switch and node counters.
        progress(&format!(
            "consistency {variant}: keeping lab {} (TALARIA_LAB_KEEP_BROKEN)",
            lab.prefix()
        ));
        lab.keep();
        return result;
    }
    let problems = lab.down();
    anyhow::ensure!(problems.is_empty(), "teardown: {problems:?}");
    result
}

/// Rows as CSV, columns in field order.
pub(crate) fn csv<T: Serialize>(rows: &[T]) -> String {
    // serde_yaml's mapping keeps field order (serde_json's sorts it).
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let v = serde_yaml::to_value(r).expect("rows serialize");
        let m = v.as_mapping().expect("rows are structs");
        if i == 0 {
            let keys: Vec<String> = m
                .keys()
                .map(|k| k.as_str().unwrap_or("").to_string())
                .collect();
            out.push_str(&keys.join(","));
            out.push('\n');
        }
        let vals: Vec<String> = m
            .values()
            .map(|x| match x {
                serde_yaml::Value::String(s) => format!("\"{}\"", s.replace('"', "'")),
                serde_yaml::Value::Number(n) if n.is_f64() => {
                    format!("{:.2}", n.as_f64().unwrap_or(0.0))
                }
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Null => String::new(),
                o => serde_yaml::to_string(o)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            })
            .collect();
        out.push_str(&vals.join(","));
        out.push('\n');
    }
    out
}

/// `talaria-lab bench` on `--switches`, or on `switch` when none are given
/// (`bmv2_dir`: a prebuilt bmv2 pipeline).
pub async fn run(a: BenchArgs, switch: SwitchKind, bmv2_dir: Option<PathBuf>) -> Result<()> {
    let started = Instant::now();
    let switches: Vec<SwitchKind> = if a.switches.is_empty() {
        vec![switch]
    } else {
        a.switches
            .iter()
            .map(|n| SwitchKind::parse(n, bmv2_dir.clone()))
            .collect::<Result<_>>()?
    };
    let load_at_start = loadavg();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let modes_list = if a.modes.is_empty() {
        vec![
            Mode::Direct,
            Mode::Iptables,
            Mode::Nftables,
            Mode::Ipvs,
            Mode::Talaria,
        ]
    } else {
        a.modes.clone()
    };
    let services = if !a.services.is_empty() {
        a.services.clone()
    } else if a.quick {
        vec![10, 1000, 10000]
    } else {
        vec![10, 100, 1000, 5000, 10000]
    };
    let conc = if !a.concurrency.is_empty() {
        a.concurrency.clone()
    } else {
        vec![1, 10, 50, 100]
    };
    let protos = if a.protos.is_empty() {
        vec![Proto::HttpShort, Proto::HttpLong]
    } else {
        a.protos.clone()
    };
    if protos.contains(&Proto::Hold) {
        bail!("--protos: hold is the consistency experiment's load, not a sweep's");
    }
    let secs = a.seconds.unwrap_or(if a.quick { 2 } else { 10 });
    let plan = Plan {
        services: &services,
        conc: &conc,
        protos: &protos,
        secs,
    };
    let connections = a.connections.unwrap_or(if a.quick { 20 } else { 100 });
    std::fs::create_dir_all(&a.out)?;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let families = if a.families.is_empty() {
        vec![IpFamily::IPv4, IpFamily::IPv6]
    } else {
        a.families.clone()
    };
    for switch in &switches {
        for &mode in modes_list.iter().filter(|_| !a.consistency_only) {
            for &family in &families {
                let what = format!("{} {} on {}", mode.name(), family.name(), switch.name());
                progress(&format!("{what}: fresh lab"));
                if let Err(e) = sweep_mode(&a, mode, family, switch, &plan, &mut rows).await {
                    let msg = format!("{what}: not measured: {e:#}");
                    progress(&msg);
                    notes.push(msg);
                }
            }
        }
    }
    let mut cons = Vec::new();
    for switch in switches.iter().filter(|_| !a.no_consistency) {
        let mut variants = vec!["talaria", "talaria-hash-only", "iptables"];
        if a.external {
            variants.extend([
                "talaria-outside",
                "talaria-hash-only-outside",
                "iptables-outside",
            ]);
        }
        for v in variants {
            let what = format!("consistency {v} on {}", switch.name());
            progress(&format!(
                "{what}: {connections} connections, {} pool changes",
                a.changes
            ));
            match consistency(v, switch, connections, a.changes, a.quick).await {
                Ok(r) => {
                    progress(&format!(
                        "{what}: {} of {} connections broken ({} moved)",
                        r.broken, r.connections, r.moved
                    ));
                    cons.push(r)
                }
                Err(e) => {
                    let msg = format!("{what}: not measured: {e:#}");
                    progress(&msg);
                    notes.push(msg);
                    cons.push(ConsistencyRow {
                        variant: v.into(),
                        switch: switch.name().into(),
                        note: format!("{e:#}"),
                        ..Default::default()
                    });
                }
            }
        }
    }
    std::fs::write(a.out.join("throughput.csv"), csv(&rows))?;
    std::fs::write(a.out.join("consistency.csv"), csv(&cons))?;
    let plots = plot::all(&a.out, &rows)?;
    let summary = summary(
        &command,
        &rows,
        &cons,
        &notes,
        &plots,
        started.elapsed(),
        &a,
        secs,
        (&load_at_start, &loadavg()),
    );
    std::fs::write(a.out.join("summary.md"), &summary)?;
    println!("{summary}");
    eprintln!(
        "wrote {}/summary.md, throughput.csv, consistency.csv and {} plots",
        a.out.display(),
        plots.len()
    );
    Ok(())
}

/// The 1, 5 and 15-minute load averages, for the record: other work on the
/// machine inflates every mode's latency and CPU figures.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Where a point was measured: experiment, switch, address family, load
/// kind and Services; a mode's point there is compared with another's.
#[derive(Clone, Copy)]
struct At<'a> {
    exp: &'a str,
    switch: &'a str,
    family: &'a str,
    proto: &'a str,
    services: u32,
}

impl<'a> At<'a> {
    fn of(r: &'a Row) -> Self {
        Self {
            exp: &r.experiment,
            switch: &r.switch,
            family: &r.family,
            proto: &r.proto,
            services: r.services,
        }
    }
}

fn find<'a>(rows: &'a [Row], at: At<'_>, mode: &str) -> Option<&'a Row> {
    // A point where every request failed counts as not measured.
    rows.iter().find(|r| {
        r.experiment == at.exp
            && r.mode == mode
            && r.switch == at.switch
            && r.family == at.family
            && r.proto == at.proto
            && r.services == at.services
            && r.requests > 0
    })
}

/// The families of a run, in the order they ran.
fn families_of(rows: &[Row]) -> Vec<&str> {
    let mut v: Vec<&str> = Vec::new();
    for r in rows {
        if !r.family.is_empty() && !v.contains(&r.family.as_str()) {
            v.push(&r.family);
        }
    }
    v
}

/// Each mode's Services-sweep points as a ratio to `direct` at the same
/// switch, family, load and Service count (measured in the same run): the
/// figure a data-path change must not lower.
fn against_direct(s: &mut String, rows: &[Row]) {
    let pts: Vec<(&Row, f64)> = rows
        .iter()
        .filter(|r| r.experiment == "services" && r.mode != "direct" && r.requests > 0)
        .filter_map(|r| Some((r, r.rps / find(rows, At::of(r), "direct")?.rps)))
        .collect();
    if pts.is_empty() {
        return;
    }
    writeln!(
        s,
        "## Against direct
"
    )
    .unwrap();
    writeln!(
        s,
        "Requests per second ÷ direct's at the same switch, family, load and Service count. For IPv6, every mode runs on a lab of its own whose Services are IPv6 single-stack (ip6tables, table `ip6 kube-proxy`); pods are dual-stack and the underlay IPv4.\n"
    )
    .unwrap();
    writeln!(s, "| mode | switch | family | conn | Services | ÷ direct |").unwrap();
    writeln!(s, "|---|---|---|---|---:|---:|").unwrap();
    for (r, ratio) in pts {
        writeln!(
            s,
            "| {} | {} | {} | {} | {} | {ratio:.2} |",
            r.mode, r.switch, r.family, r.proto, r.services
        )
        .unwrap();
    }
    writeln!(s).unwrap();
}

/// The switches of a run, in the order they ran.
fn switches_of(rows: &[Row], cons: &[ConsistencyRow]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for name in rows
        .iter()
        .map(|r| &r.switch)
        .chain(cons.iter().map(|c| &c.switch))
    {
        if !name.is_empty() && !v.contains(name) {
            v.push(name.clone());
        }
    }
    v
}

/// The first switch's points next to each other switch's at the same mode,
/// load, Services and concurrency, with the ratios (both measured in the
/// same run).
fn side_by_side(s: &mut String, rows: &[Row], switches: &[String]) {
    let Some((first, others)) = switches.split_first() else {
        return;
    };
    for other in others {
        writeln!(s, "## {first} and {other} side by side\n").unwrap();
        writeln!(
            s,
            "| mode | family | conn | Services | concurrency | req/s {first} | req/s {other} | req/s {first} ÷ {other} | p50 µs {first} | p50 µs {other} | p99 µs {first} | p99 µs {other} | p50 {other} ÷ {first} | CPU µs/req {first} | CPU µs/req {other} | errors {first} / {other} |"
        )
        .unwrap();
        writeln!(
            s,
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )
        .unwrap();
        let mut seen = Vec::new();
        for a in rows.iter().filter(|r| &r.switch == first && r.requests > 0) {
            let key = (&a.mode, &a.family, &a.proto, a.services, a.concurrency);
            if seen.contains(&key) {
                continue;
            }
            let Some(b) = rows.iter().find(|b| {
                &b.switch == other
                    && (&b.mode, &b.family, &b.proto, b.services, b.concurrency) == key
                    && b.requests > 0
            }) else {
                continue;
            };
            seen.push(key);
            writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {} / {} |",
                a.mode, a.family, a.proto, a.services, a.concurrency, a.rps, b.rps, a.rps / b.rps,
                a.p50_us, b.p50_us, a.p99_us, b.p99_us, b.p50_us / a.p50_us,
                a.cpu_us_per_req, b.cpu_us_per_req, a.errors, b.errors
            )
            .unwrap();
        }
        writeln!(s).unwrap();
    }
}

/// The external clients' points, with each mode's ratio to direct on the
/// same switch at the same Service count (measured in the same run).
fn external_section(s: &mut String, rows: &[Row]) {
    let ext: Vec<&Row> = rows.iter().filter(|r| r.experiment == "external").collect();
    if ext.is_empty() {
        return;
    }
    writeln!(s, "## External clients against Services\n").unwrap();
    writeln!(
        s,
        "Short connections from external host x0 (outside the cluster, no agent) to the LoadBalancer IP of every external Service \
         (talaria: balanced by the switch; iptables, nftables: routed to node-0, DNATed and masqueraded there, as behind a cloud load balancer; \
         direct: to the Services' endpoints, the lower bound).\n"
    )
    .unwrap();
    writeln!(s, "| mode | switch | Services | concurrency | req/s | ÷ direct | p50 µs | p99 µs | CPU µs/req | kernel µs/req | errors |").unwrap();
    writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    for r in &ext {
        let direct = find(rows, At::of(r), "direct");
        let ratio = direct.map_or("-".to_string(), |d| format!("{:.2}", r.rps / d.rps));
        writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} | {ratio} | {:.0} | {:.0} | {:.1} | {:.1} | {} |",
            r.mode,
            r.switch,
            r.services,
            r.concurrency,
            r.rps,
            r.p50_us,
            r.p99_us,
            r.cpu_us_per_req,
            r.kernel_cpu_us_per_req,
            r.errors
        )
        .unwrap();
    }
    writeln!(s).unwrap();
}

#[allow(clippy::too_many_arguments)]
fn summary(
    command: &str,
    rows: &[Row],
    cons: &[ConsistencyRow],
    notes: &[String],
    plots: &[String],
    took: Duration,
    a: &BenchArgs,
    secs: u64,
    load: (&str, &str),
) -> String {
    let mut s = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    writeln!(s, "# talaria-lab benchmark results\n").unwrap();
    writeln!(
        s,
        "Command (from the repository root, as root):\n\n```sh\n{command}\n```\n"
    )
    .unwrap();
    writeln!(
        s,
        "Machine: kernel {}, {} CPUs. Took {:.0} s. {} s per point, sweep concurrency {}, concurrency sweep at {} Services. \
         Clients: one load generator in pod-n0-0 (node-0), targets: 8 Services spread over the programmed range. \
         Topology: 1 switch, 3 nodes, 4 pods per node, 3 endpoints per Service on node-1/node-2.\n",
        kernel.trim(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        took.as_secs_f64(),
        secs,
        a.sweep_concurrency,
        a.sweep_services
    )
    .unwrap();
    writeln!(
        s,
        "Load average (1, 5, 15 min) at the start: {}; at the end: {}. The lab itself keeps about 2 busy; more means other work shared the CPUs with every mode.\n",
        load.0, load.1
    )
    .unwrap();
    writeln!(s, "CPU per request: host-wide non-idle time from /proc/stat over the run / requests; `app` is the lab's own load generator and servers (/proc/<pid>/stat), `kernel` the rest (packet path: veths, netfilter, routing, eBPF). All nodes share one kernel, so client and backend node shares cannot be separated.\n").unwrap();
    if !notes.is_empty() {
        writeln!(s, "## Not measured\n").unwrap();
        for n in notes {
            writeln!(s, "- {n}").unwrap();
        }
        writeln!(s).unwrap();
    }
    let switches = switches_of(rows, cons);
    side_by_side(&mut s, rows, &switches);
    for (exp, title) in [
        ("services", "Throughput and latency against Services"),
        ("concurrency", "Throughput and latency against concurrency"),
    ] {
        writeln!(s, "## {title}\n").unwrap();
        writeln!(s, "| mode | switch | family | conn | Services | concurrency | req/s | avg µs | p50 µs | p90 µs | p99 µs | CPU µs/req | kernel µs/req | errors | rules s |").unwrap();
        writeln!(
            s,
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )
        .unwrap();
        for r in rows.iter().filter(|r| r.experiment == exp) {
            writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {:.2} |",
                r.mode, r.switch, r.family, r.proto, r.services, r.concurrency, r.rps, r.avg_us, r.p50_us, r.p90_us, r.p99_us, r.cpu_us_per_req, r.kernel_cpu_us_per_req, r.errors, r.rule_apply_s
            )
            .unwrap();
        }
        writeln!(s).unwrap();
    }
    against_direct(&mut s, rows);
    external_section(&mut s, rows);
    writeln!(s, "## Connection consistency\n").unwrap();
    writeln!(s, "Switch entries (all tables): before the connections open / with all open / after the last change. Timestamp cookies: packets the switch sent by an outside client's cookie / that echoed none valid.\n").unwrap();
    writeln!(s, "| variant | switch | connections | pool changes | broken | moved backend | requests | switch entries | ts cookie hit / miss | note |").unwrap();
    writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|").unwrap();
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    for c in cons {
        let entries = match (c.entries_before, c.entries_held, c.entries_after) {
            (None, None, None) => "-".to_string(),
            (b, h, a) => format!("{} / {} / {}", opt(b), opt(h), opt(a)),
        };
        let ts = match (c.ts_cookie_hits, c.ts_cookie_misses) {
            (None, None) => "-".to_string(),
            (h, m) => format!("{} / {}", opt(h), opt(m)),
        };
        writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {entries} | {ts} | {} |",
            c.variant, c.switch, c.connections, c.changes, c.broken, c.moved, c.requests, c.note
        )
        .unwrap();
    }
    writeln!(s).unwrap();
    writeln!(s, "## Targets\n").unwrap();
    let big = rows
        .iter()
        .filter(|r| r.experiment == "services")
        .map(|r| r.services)
        .max()
        .unwrap_or(0);
    let families = families_of(rows);
    for (switch, family, proto) in switches.iter().flat_map(|sw| {
        families
            .iter()
            .flat_map(move |f| ["HttpShort", "HttpLong"].map(|p| (sw, *f, p)))
    }) {
        let at = At {
            exp: "services",
            switch,
            family,
            proto,
            services: big,
        };
        let g = |m| find(rows, at, m);
        match (g("talaria"), g("iptables"), g("direct")) {
            (Some(t), Some(i), Some(d)) => writeln!(
                s,
                "- {switch}, {family}, {proto} at {big} Services: talaria/iptables = {:.2} (target >= 1.5), talaria/direct = {:.2} (target >= 0.85), CPU/req talaria vs iptables {:+.0}% (target <= -40%)",
                t.rps / i.rps,
                t.rps / d.rps,
                (t.cpu_us_per_req / i.cpu_us_per_req - 1.0) * 100.0
            )
            .unwrap(),
            (None, Some(i), Some(d)) => writeln!(
                s,
                "- {switch}, {family}, {proto} at {big} Services: talaria not measured; iptables/direct = {:.2}, CPU/req iptables vs direct {:+.0}%",
                i.rps / d.rps,
                (i.cpu_us_per_req / d.cpu_us_per_req - 1.0) * 100.0
            )
            .unwrap(),
            _ => writeln!(s, "- {switch}, {family}, {proto} at {big} Services: not enough modes measured to compare").unwrap(),
        }
    }
    for switch in &switches {
        let broken = |v: &str| {
            cons.iter()
                .find(|c| c.variant == v && &c.switch == switch && c.connections > 0)
                .map(|c| c.broken)
        };
        match (broken("talaria"), broken("talaria-hash-only")) {
            (Some(t), Some(h)) => writeln!(
                s,
                "- Consistency on {switch}: talaria {t} broken (target 0), hash-only {h} broken (target > 0, measured)"
            )
            .unwrap(),
            _ => writeln!(s, "- Consistency on {switch}: not measured for both talaria variants").unwrap(),
        }
        if let (Some(t), Some(i)) = (broken("talaria-outside"), broken("iptables-outside")) {
            let h = broken("talaria-hash-only-outside")
                .map_or_else(|| "not measured".into(), |h| format!("{h} broken"));
            writeln!(
                s,
                "- Consistency from outside on {switch}: talaria {t} broken (target 0), without the timestamp cookie {h}, iptables {i} broken"
            )
            .unwrap();
        }
    }
    writeln!(s).unwrap();
    if !plots.is_empty() {
        writeln!(s, "## Plots\n").unwrap();
        for p in plots {
            writeln!(s, "- [{p}]({p})").unwrap();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_side_by_side_with_ratios() {
        let row = |switch: &str, rps, p50_us| Row {
            experiment: "concurrency".into(),
            mode: "talaria".into(),
            switch: switch.into(),
            proto: "HttpShort".into(),
            family: "ipv4".into(),
            services: 100,
            concurrency: 10,
            requests: 100,
            rps,
            p50_us,
            p99_us: p50_us * 2.0,
            ..Default::default()
        };
        let mut rows = vec![
            row("switch-agent", 15000.0, 500.0),
            row("bmv2", 600.0, 6000.0),
        ];
        // A point one switch did not measure has no pair.
        rows.push(Row {
            concurrency: 1,
            ..row("switch-agent", 9000.0, 100.0)
        });
        let switches = switches_of(&rows, &[]);
        assert_eq!(switches, ["switch-agent", "bmv2"]);
        let mut s = String::new();
        side_by_side(&mut s, &rows, &switches);
        assert!(
            s.starts_with("## switch-agent and bmv2 side by side"),
            "{s}"
        );
        let lines: Vec<&str> = s.lines().filter(|l| l.starts_with("| talaria")).collect();
        assert_eq!(
            lines,
            ["| talaria | ipv4 | HttpShort | 100 | 10 | 15000 | 600 | 25.0 | 500 | 6000 | 1000 | 12000 | 12.0 | 0.0 | 0.0 | 0 / 0 |"]
        );
    }

    #[test]
    fn csv_has_header_and_rows() {
        let rows = vec![Row {
            mode: "direct".into(),
            rps: 1.5,
            requests: 3,
            ..Default::default()
        }];
        let c = csv(&rows);
        let mut l = c.lines();
        assert!(l
            .next()
            .unwrap()
            .starts_with("experiment,mode,switch,proto,family,services"));
        assert!(l
            .next()
            .unwrap()
            .starts_with("\"\",\"direct\",\"\",\"\",\"\",0,0,0.00,3,0,1.50"));
    }

    /// Each mode's points over direct's at the same switch, family, load
    /// and Service count, never across families.
    #[test]
    fn ratios_to_direct_stay_within_a_family() {
        let row = |mode: &str, family: &str, services, rps| Row {
            experiment: "services".into(),
            mode: mode.into(),
            switch: "switch-agent".into(),
            proto: "HttpShort".into(),
            family: family.into(),
            services,
            requests: 10,
            rps,
            ..Default::default()
        };
        let rows = [
            row("direct", "ipv4", 10, 1000.0),
            row("talaria", "ipv4", 10, 950.0),
            row("direct", "ipv6", 10, 800.0),
            row("talaria", "ipv6", 10, 720.0),
            // No direct point at 10,000 IPv6 Services: no ratio.
            row("talaria", "ipv6", 10000, 700.0),
        ];
        let mut s = String::new();
        against_direct(&mut s, &rows);
        let lines: Vec<&str> = s.lines().filter(|l| l.starts_with("| talaria")).collect();
        assert_eq!(
            lines,
            [
                "| talaria | switch-agent | ipv4 | HttpShort | 10 | 0.95 |",
                "| talaria | switch-agent | ipv6 | HttpShort | 10 | 0.90 |"
            ]
        );
        assert_eq!(families_of(&rows), ["ipv4", "ipv6"]);
    }
}
