//! `talaria-lab demo`: a topology in talaria mode, echo traffic to
//! ClusterIPs, and a results table.

use crate::bringup::{start_talaria, CONTROLLER_REST};
use crate::components::{talaria_missing, Component};
use crate::manifests::ServiceSet;
use crate::measure::{measure, Row};
use crate::modes::Mode;
use crate::netns::Lab;
use crate::switch::SwitchKind;
use crate::topology::Topology;
use crate::traffic::Proto;
use anyhow::{bail, Result};
use std::time::Duration;
use talaria_preflight::Outcome;

fn step(i: u32, n: u32, msg: &str) {
    println!("[{i}/{n}] {msg}");
}

fn table(rows: &[(String, Row)]) {
    println!();
    println!(
        "{:<46} {:>8} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "test", "requests", "errors", "req/s", "avg µs", "p50 µs", "p99 µs", "backends"
    );
    for (name, r) in rows {
        println!(
            "{:<46} {:>8} {:>7} {:>10.0} {:>8.0} {:>8.0} {:>8.0} {:>8}",
            name, r.requests, r.errors, r.rps, r.avg_us, r.p50_us, r.p99_us, r.note
        );
    }
    println!();
}

/// The demo: a topology in talaria mode on `switch`, HTTP and UDP echo
/// from a pod to ClusterIPs, a results table, teardown (or `keep`).
/// Returns the table's rows.
///
/// While the talaria components are not usable it still builds the
/// topology and proves it with pod-to-pod traffic across the switch, then
/// fails naming what is missing; it never prints ClusterIP results it did
/// not measure.
pub async fn run(
    t: Topology,
    keep: bool,
    per_test: Duration,
    switch: SwitchKind,
) -> Result<Vec<(String, Row)>> {
    let n = 5;
    println!(
        "talaria demo: 1 switch ({}), {} nodes, {} pods per node, {} Services",
        switch.name(),
        t.nodes,
        t.pods_per_node,
        t.services
    );
    step(1, n, "checking talaria components");
    let mut missing = talaria_missing(&switch);
    for c in Component::ALL {
        if c == Component::SwitchAgent && switch != SwitchKind::SwitchAgent {
            continue;
        }
        match c.usable() {
            Ok(p) => println!("      {:<26} {}", c.binary(), p.display()),
            Err(e) => println!("      {:<26} MISSING: {e}", c.binary()),
        }
    }
    for need in switch.needs() {
        match talaria_preflight::check(need) {
            Outcome::Unmet(u) => {
                println!("      {:<26} MISSING: {u}", need.to_string());
                missing.push(u.to_string());
            }
            found => println!("      {:<26} {}", need.to_string(), outcome_detail(&found)),
        }
    }
    step(
        2,
        n,
        "building the topology (network namespaces, veths, routes, static neighbours)",
    );
    let mut lab = Lab::create(t.clone(), "talaria", switch.clone())?;
    println!(
        "      lab {}: {} namespaces, manifests in {}",
        lab.prefix(),
        lab.state().netns.len(),
        lab.run_dir.display()
    );
    step(3, n, "starting the HTTP + UDP echo server in every pod");
    lab.start_servers()?;
    let set = ServiceSet::from_topology(&t);
    let mut rows: Vec<(String, Row)> = Vec::new();
    let mut talaria_up = false;
    step(
        4,
        n,
        &format!("starting {}, controller and node agents", switch.name()),
    );
    if missing.is_empty() {
        match start_talaria(&mut lab).await {
            Ok(()) => talaria_up = true,
            Err(e) => println!("      FAILED: {e:#}"),
        }
    } else {
        println!("      NOT STARTED: missing {}", missing.join("; "));
    }
    let client = Topology::pod_name(t.client_pods()[0].0, t.client_pods()[0].1);
    if talaria_up {
        step(
            5,
            n,
            &format!(
                "traffic from {client} to ClusterIPs ({} s per test)",
                per_test.as_secs()
            ),
        );
        for (proto, name) in [
            (Proto::HttpShort, "HTTP, connection per request"),
            (Proto::HttpLong, "HTTP keep-alive"),
            (Proto::Udp, "UDP echo"),
        ] {
            println!("      {name} ...");
            let mut r = measure(&mut lab, Mode::Talaria, &set, proto, 4, per_test, false).await?;
            r.note = backends_note(&lab, &r);
            rows.push((format!("talaria ClusterIP: {name}"), r));
        }
    } else {
        step(5, n, &format!("talaria is not running: proving the topology with {client} -> backend pod IPs (direct mode, no Service LB)"));
        for (proto, name) in [
            (Proto::HttpShort, "HTTP, connection per request"),
            (Proto::Udp, "UDP echo"),
        ] {
            println!("      {name} ...");
            let r = measure(&mut lab, Mode::Direct, &set, proto, 4, per_test, false).await?;
            rows.push((format!("direct pod IP: {name}"), r));
        }
    }
    table(&rows);
    if keep {
        let prefix = lab.prefix().to_string();
        lab.keep();
        println!("The lab stays up ({prefix}). Try:");
        println!(
            "  ip netns exec {} curl -s http://{}/",
            lab.names.pod(0, 0),
            t.cluster_ip(0)
        );
        let ctl = Component::Talariactl
            .find()
            .map(|p| p.display().to_string())
            .unwrap_or("talariactl".into());
        println!(
            "  ip netns exec {} {ctl} --server http://{CONTROLLER_REST} services",
            lab.names.switch()
        );
        println!("  ip netns exec {} {ctl} --server http://{CONTROLLER_REST} tables dump --table service_v4", lab.names.switch());
        println!("  ip netns exec {} curl -s http://{CONTROLLER_REST}/v1/status      # the REST API (lives in the switch netns)", lab.names.switch());
        println!("  talaria-lab down {prefix}                    # remove it");
    } else {
        let problems = lab.down();
        anyhow::ensure!(problems.is_empty(), "teardown: {problems:?}");
        println!("torn down.");
    }
    if !talaria_up {
        bail!(
            "demo incomplete: talaria mode did not run ({}); only the direct pod-IP path above was measured",
            if missing.is_empty() { "components failed to start".to_string() } else { missing.join("; ") }
        );
    }
    Ok(rows)
}

fn outcome_detail(o: &Outcome) -> &str {
    match o {
        Outcome::Met(d) | Outcome::Fixed(d) => d,
        Outcome::Unmet(u) => &u.problem,
    }
}

fn backends_note(_lab: &Lab, r: &Row) -> String {
    if r.requests > 0 {
        "ok".into()
    } else {
        "none".into()
    }
}
