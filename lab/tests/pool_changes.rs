//! Root-only: what established flows do when their endpoint stops being
//! usable, as kube-proxy defines it. On a talaria-mode lab (switch-agent),
//! one Service of two endpoints carries long TCP connections and a UDP
//! flow (one socket, so one 5-tuple). Then both endpoints turn not ready
//! and a third one takes over; later the two are deleted, and at last the
//! third one too.
//!
//! - TCP: connections on a not-ready endpoint keep going (kube-proxy leaves
//!   their conntrack entries alone), and so do those on a deleted one for
//!   the id quarantine (the pod may still be serving), even once the
//!   Service has no endpoint left.
//! - UDP: the flow moves to the new endpoint at once (kube-proxy deletes
//!   the UDP conntrack entries of endpoints that are not serving), instead
//!   of staying pinned by its cookie.
//! - With no usable endpoint left, a new connection is refused at once
//!   (kube-proxy's REJECT: ICMP port unreachable from the VIP), not left to
//!   time out.
//!
//! Skipped (with one line) when not root or bpffs cannot be mounted, and
//! failed instead under `CI=true`. The lab is torn down even when an
//! assertion fails.

use std::collections::BTreeSet;
use std::time::Duration;
use talaria_lab::bringup::{lab_for, talaria_apply_services};
use talaria_lab::modes::{run_load, start_load, targets, wait_load, LoadRun, Mode};
use talaria_lab::switch::SwitchKind;
use talaria_lab::topology::Topology;
use talaria_lab::traffic::Proto;
use talaria_preflight::require;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_stays_on_unready_and_deleted_endpoints_udp_moves_new_flows_refused() {
    let switch = SwitchKind::SwitchAgent;
    require!(common::lab_needs(&switch));
    if !common::talaria_ready(&switch) {
        return;
    }
    // Node 1 hosts three backend pods: two serve the Service, one is spare.
    let t = Topology {
        nodes: 2,
        pods_per_node: 3,
        services: 1,
        endpoints_per_service: 2,
        ..Topology::default()
    };
    let (mut lab, mut set) = lab_for(t.clone(), Mode::Talaria, &switch)
        .await
        .expect("lab up");
    let first = set.services[0].endpoints.clone();
    let spare = *t
        .backend_pods()
        .iter()
        .find(|p| !first.contains(p))
        .expect("a spare backend pod");
    let clients = t.client_pods();
    let run = |client, proto, concurrency, stop: &str| LoadRun {
        client,
        proto,
        targets: targets(&t, &set, Mode::Talaria, proto, &[0]),
        concurrency,
        duration: Duration::from_secs(30),
        timeout: Duration::from_secs(1),
        interval: Duration::from_millis(50),
        stop_file: Some(lab.run_dir.join(stop)),
    };
    let hold_run = run(clients[0].into(), Proto::Hold, 8, "hold.stop");
    let udp_run = run(clients[1].into(), Proto::Udp, 1, "udp.stop");
    let hold = start_load(&mut lab, &hold_run).expect("hold load");
    let udp = start_load(&mut lab, &udp_run).expect("udp load");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Both endpoints not ready; the spare one takes new flows.
    let s = &mut set.services[0];
    s.not_ready = first.clone();
    s.endpoints = vec![spare];
    lab.write_configs(&set).expect("manifests");
    talaria_apply_services(&mut lab, &set)
        .await
        .expect("pool applied");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Then deleted.
    set.services[0].not_ready.clear();
    lab.write_configs(&set).expect("manifests");
    talaria_apply_services(&mut lab, &set)
        .await
        .expect("pool applied");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Then the last endpoint goes too: no endpoint at all, but the TCP
    // connections' endpoints are in their quarantine, so they go on. The
    // UDP flow stops first: from now on every datagram would go
    // unanswered, as many as fit the time until the end, which a loaded
    // machine stretches.
    std::fs::write(udp_run.stop_file.as_ref().unwrap(), b"stop").unwrap();
    set.services[0].endpoints.clear();
    lab.write_configs(&set).expect("manifests");
    talaria_apply_services(&mut lab, &set)
        .await
        .expect("pool applied");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A new connection now is refused at once (kube-proxy's REJECT), while
    // the old ones go on: one worker for a second, so a refusal that
    // waited for the 1 s timeout would count once, not tens of times.
    let refused = run_load(
        &mut lab,
        &LoadRun {
            proto: Proto::HttpShort,
            concurrency: 1,
            duration: Duration::from_secs(1),
            stop_file: None,
            ..hold_run.clone()
        },
    )
    .await
    .expect("short load");

    for r in [&hold_run, &udp_run] {
        std::fs::write(r.stop_file.as_ref().unwrap(), b"stop").unwrap();
    }
    let hold = wait_load(&mut lab, hold).await.expect("hold result");
    let udp = wait_load(&mut lab, udp).await.expect("udp result");
    let problems = lab.down();
    assert!(problems.is_empty(), "{problems:?}");

    let name = |&(n, p): &(u32, u32)| Topology::pod_name(n, p);
    let first: BTreeSet<String> = first.iter().map(name).collect();
    eprintln!(
        "refused: {} connects in {:.2} s, {:?}",
        refused.errors, refused.duration_s, refused.error_kinds
    );
    assert_eq!(refused.requests, 0, "{refused:?}");
    assert!(
        refused.errors >= 10 && refused.error_kinds.keys().all(|k| k.contains("refused")),
        "every connect refused, at once: {refused:?}"
    );
    // TCP: every connection opened on the first two endpoints and stayed.
    assert_eq!((hold.connections, hold.broken), (8, 0), "{hold:?}");
    let held: BTreeSet<String> = hold.backends.keys().cloned().collect();
    assert!(held.is_subset(&first), "{held:?} not within {first:?}");
    // UDP: one flow, first on one of the two, then on the spare endpoint,
    // answered all along but for the datagrams in flight at the change.
    let spare = name(&spare);
    let before: u64 = first.iter().filter_map(|b| udp.backends.get(b)).sum();
    let after = udp.backends.get(&spare).copied().unwrap_or(0);
    assert!(before > 0, "UDP answered before the change: {udp:?}");
    assert!(
        after > before,
        "UDP moved to {spare} and stayed there for the 3 s after the change: {udp:?}"
    );
    // Unanswered: the datagrams in flight at the two changes, and the one
    // in flight when the flow stopped.
    assert!(udp.errors <= 3, "{udp:?}");
}
