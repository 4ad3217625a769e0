//! Root-only: faults under load, shortened. A talaria-mode lab on
//! switch-agent holds 20 long connections and runs a short-connection load
//! while switch-agent, the controller and node 1's agent (it hosts
//! backends) are killed with SIGKILL in turn and started again
//! (`talaria-lab faults` with 2 s per phase; the full run is in
//! `bench/results/faults/`).
//!
//! Skipped (with one line) when not root or bpffs cannot be mounted, and
//! failed instead under `CI=true` (`talaria_preflight::require!`). Without
//! the component binaries (next to talaria-lab: `cargo build --workspace`)
//! it says so and returns, except under `CI=true`. The lab is torn down
//! even when an assertion fails; the test checks nothing of it is left.

use talaria_lab::faults::{self, FaultsArgs, PhaseRow};
use talaria_lab::switch::SwitchKind;
use talaria_preflight::require;

mod common;

/// Short-connection errors allowed per phase: one failed request per
/// worker, i.e. less than one request timeout (1 s) of lost forwarding. A
/// data plane that stopped while a component was down would cost each
/// worker a timeout per second of it, and break the long connections.
const SHORT_ERRORS_PER_WORKER: u64 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_connections_and_tables_survive_kill_9_of_each_component() {
    let switch = SwitchKind::SwitchAgent;
    require!(common::lab_needs(&switch));
    if !common::talaria_ready(&switch) {
        return;
    }
    let a = FaultsArgs {
        connections: 20,
        short_concurrency: 2,
        seconds: 2,
        down_ms: 500,
        ..FaultsArgs::default()
    };
    let r = faults::measure(&a, &switch).await.expect("faults ran");
    common::assert_gone(&r.prefix);
    let table = |p: &PhaseRow| format!("{p:#?}");
    let phases: Vec<&str> = r.phases.iter().map(|p| p.phase.as_str()).collect();
    assert_eq!(
        phases,
        ["baseline", "switch-agent", "controller", "node-1"],
        "{:#?}",
        r.phases
    );
    assert_eq!(r.long.connections, 20, "{:?}", r.long);
    assert_eq!(
        r.long.broken, 0,
        "long connections broke: {:#?}\n{:#?}",
        r.breaks, r.phases
    );
    for p in &r.phases {
        assert!(p.back, "{} did not come back: {}", p.phase, table(p));
        assert!(p.short_requests > 0, "no short requests: {}", table(p));
        assert!(
            p.short_errors <= SHORT_ERRORS_PER_WORKER * u64::from(a.short_concurrency),
            "short-connection errors above the bound: {}",
            table(p)
        );
        // Same entries, same ids, before and after; never read empty.
        assert!(p.tables_identical, "tables changed: {}", table(p));
        assert!(p.service_ids_same, "service ids changed: {}", table(p));
        assert!(p.reads_ok > 0, "no table read in the phase: {}", table(p));
        assert!(!p.saw_empty_table(), "a table was read empty: {}", table(p));
        assert!(!p.entries_before.contains('?'), "{}", table(p));
        // Back in sync without rewriting: the controller wrote nothing.
        assert_eq!(p.controller_writes, 0, "controller rewrote: {}", table(p));
        assert_eq!(p.controller_write_errors, 0, "{}", table(p));
    }
    let node = &r.phases[3];
    assert!(node.node_flows.starts_with("reverse "), "{}", table(node));
    assert!(r.all_survived());
}
