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
    common::assert_survived(&r, a.short_concurrency);
    let node = &r.phases[3];
    assert!(node.node_flows.starts_with("reverse "), "{}", table(node));
}
