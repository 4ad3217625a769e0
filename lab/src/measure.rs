//! One measured point: the row every experiment records, and its
//! measurement on a running lab (used by the demo, the benchmarks and
//! `talaria-lab run`).

use crate::bringup::lab_for;
use crate::cpu::{clk_tck, process_jiffies, CpuTimes};
use crate::manifests::ServiceSet;
use crate::modes::{self, run_load, Client, LoadRun, Mode};
use crate::netns::Lab;
use crate::switch::SwitchKind;
use crate::topology::pick_services;
use crate::topology::{IpFamily, Topology};
use crate::traffic::{LoadResult, Proto};
use anyhow::Result;
use serde::Serialize;
use std::time::Duration;

/// One measured point.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    /// Experiment: `services` or `concurrency` sweep, or `single`.
    pub experiment: String,
    /// Mode.
    pub mode: String,
    /// What forwarded between nodes (`switch-agent` or `bmv2`).
    pub switch: String,
    /// Load kind.
    pub proto: String,
    /// Address family of the targets (`ipv4`, `ipv6`).
    pub family: String,
    /// Services programmed.
    pub services: u32,
    /// Concurrency.
    pub concurrency: u32,
    /// Seconds measured.
    pub duration_s: f64,
    /// Successful requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Requests per second.
    pub rps: f64,
    /// Latency, µs.
    pub avg_us: f64,
    /// Latency, µs.
    pub p50_us: f64,
    /// Latency, µs.
    pub p90_us: f64,
    /// Latency, µs.
    pub p99_us: f64,
    /// Host CPU (all non-idle time) per request, µs.
    pub cpu_us_per_req: f64,
    /// CPU of the lab's load generator and servers per request, µs.
    pub app_cpu_us_per_req: f64,
    /// The rest (kernel packet path etc.) per request, µs.
    pub kernel_cpu_us_per_req: f64,
    /// softirq + irq per request, µs.
    pub softirq_us_per_req: f64,
    /// Seconds to program the mode's rules on all nodes.
    pub rule_apply_s: f64,
    /// Free-text note (skips, failures).
    pub note: String,
}

/// Measures one point on a running lab, from the first client pod (to 8
/// Services spread over the range, at their primary family's ClusterIPs)
/// or from external host 0 (to every external Service's LoadBalancer IP).
pub async fn measure(
    lab: &mut Lab,
    mode: Mode,
    set: &ServiceSet,
    proto: Proto,
    concurrency: u32,
    duration: Duration,
    outside: bool,
) -> Result<Row> {
    let (client, targets) = if outside {
        let targets = modes::external_targets(&lab.topo, set, mode, proto);
        anyhow::ensure!(
            !targets.is_empty(),
            "no external Service to reach from outside"
        );
        (Client::External(0), targets)
    } else {
        let picked = pick_services(set.services.len() as u32, 8);
        let targets = modes::targets(&lab.topo, set, mode, proto, &picked);
        (lab.topo.client_pods()[0].into(), targets)
    };
    let family = targets
        .first()
        .map_or(lab.topo.service_families[0], |a| IpFamily::of(a.ip()));
    let servers = lab.pids("serve-");
    let app0: u64 = servers.iter().map(|&p| process_jiffies(p)).sum();
    let cpu0 = CpuTimes::now();
    let r: LoadResult = run_load(
        lab,
        &LoadRun {
            client,
            proto,
            targets,
            concurrency,
            duration,
            timeout: Duration::from_secs(1),
            interval: Duration::from_millis(20),
            stop_file: None,
        },
    )
    .await?;
    let cpu = CpuTimes::now().since(&cpu0);
    let app: u64 = servers
        .iter()
        .map(|&p| process_jiffies(p))
        .sum::<u64>()
        .saturating_sub(app0);
    let us = 1e6 / clk_tck() as f64;
    // No successful request: no per-request figures (not infinity).
    let req = if r.requests == 0 {
        f64::INFINITY
    } else {
        r.requests as f64
    };
    let total = cpu.busy() as f64 * us;
    let app_us = app as f64 * us + r.self_cpu_us;
    Ok(Row {
        experiment: "single".into(),
        mode: mode.name().into(),
        switch: lab.switch.name().into(),
        proto: r.proto.clone(),
        family: family.name().into(),
        services: set.services.len() as u32,
        concurrency,
        duration_s: r.duration_s,
        requests: r.requests,
        errors: r.errors,
        rps: r.rps,
        avg_us: r.latency.avg_us,
        p50_us: r.latency.p50_us,
        p90_us: r.latency.p90_us,
        p99_us: r.latency.p99_us,
        cpu_us_per_req: total / req,
        app_cpu_us_per_req: app_us / req,
        kernel_cpu_us_per_req: (total - app_us).max(0.0) / req,
        softirq_us_per_req: cpu.irq as f64 * us / req,
        rule_apply_s: 0.0,
        note: String::new(),
    })
}

/// `talaria-lab run`: one point on a fresh lab.
pub async fn single_run(
    t: Topology,
    mode: Mode,
    switch: &SwitchKind,
    proto: Proto,
    concurrency: u32,
    duration: Duration,
) -> Result<Row> {
    let (mut lab, set) = lab_for(t, mode, switch).await?;
    let r = measure(&mut lab, mode, &set, proto, concurrency, duration, false).await;
    let problems = lab.down();
    anyhow::ensure!(problems.is_empty(), "teardown: {problems:?}");
    r
}
