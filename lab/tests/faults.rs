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

use std::path::Path;
use talaria_lab::faults::{self, FaultsArgs, PhaseRow};
use talaria_lab::netns::{State, LAB_NEEDS};
use talaria_lab::switch::SwitchKind;
use talaria_preflight::require;

/// Short-connection errors allowed per phase: one failed request per
/// worker, i.e. less than one request timeout (1 s) of lost forwarding. A
/// data plane that stopped while a component was down would cost each
/// worker a timeout per second of it, and break the long connections.
const SHORT_ERRORS_PER_WORKER: u64 = 1;

fn assert_gone(prefix: &str) {
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!State::path(prefix).exists(), "state file left behind");
    let pins = Path::new("/sys/fs/bpf/talaria-lab").join(prefix);
    assert!(!pins.exists(), "pins left behind in {}", pins.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_connections_and_tables_survive_kill_9_of_each_component() {
    let switch = SwitchKind::SwitchAgent;
    let mut needs = LAB_NEEDS.to_vec();
    needs.extend(switch.needs());
    require!(needs);
    std::env::set_var("TALARIA_LAB_STATE_DIR", "/run/talaria-lab-test");
    std::env::set_var("TALARIA_LAB_EXE", env!("CARGO_BIN_EXE_talaria-lab"));
    let missing = talaria_lab::components::talaria_missing(&switch);
    if !missing.is_empty() && !talaria_preflight::skip(&format!("components missing: {missing:?}"))
    {
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
    assert_gone(&r.prefix);
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
