//! Root-only: controller high availability under load (issue 11 item 8).
//! A talaria-mode lab on switch-agent runs two controllers with leader
//! election on a fake Lease API server (`talaria-lab lease-server` in the
//! switch netns; lease 3 s, renew deadline 2 s, retry period 1 s). While
//! 100 long connections and a short-connection load run, the leader is
//! killed with SIGKILL: the standby must take over within the lease's
//! bounds without changing an id in the switch (`service_v4` and `backend`
//! compared entry for entry, ids included) and without writing, so no
//! long connection breaks (`talaria-lab faults --ha --kill leader`).
//!
//! Skipped (with one line) when not root or bpffs cannot be mounted, and
//! failed instead under `CI=true` (`talaria_preflight::require!`). Without
//! the component binaries it says so and returns, except under `CI=true`.
//! The lab is torn down even when an assertion fails; the test checks
//! nothing of it is left.

use talaria_lab::bringup::{Daemon, HA_LEASE};
use talaria_lab::faults::{self, FaultsArgs, PhaseRow};
use talaria_lab::switch::SwitchKind;
use talaria_preflight::require;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_without_changing_an_id() {
    let switch = SwitchKind::SwitchAgent;
    require!(common::lab_needs(&switch));
    if !common::talaria_ready(&switch) {
        return;
    }
    let a = FaultsArgs {
        connections: 100,
        short_concurrency: 2,
        seconds: 3,
        kill: vec![Daemon::Leader],
        ha: true,
        ..FaultsArgs::default()
    };
    let r = faults::measure(&a, &switch).await.expect("faults ran");
    common::assert_gone(&r.prefix);
    let table = |p: &PhaseRow| format!("{p:#?}");
    let phases: Vec<&str> = r.phases.iter().map(|p| p.phase.as_str()).collect();
    assert_eq!(phases, ["baseline", "leader"], "{:#?}", r.phases);
    assert_eq!(r.long.connections, 100, "{:?}", r.long);
    // 0 broken long connections; per phase: back, short errors bounded,
    // every table the same entry for entry (ids included), the same
    // service ids from the controllers and the node agents, and nothing
    // written by the new leader (it adopted the switch's ids).
    common::assert_survived(&r, a.short_concurrency);
    let leader = &r.phases[1];
    // The standby leads a lease duration after it last saw a renewal, which
    // it looks for every retry period plus up to 1.2 × of it.
    let (lease, _, retry) = HA_LEASE;
    let bound = f64::from(lease) + 2.0 * 2.2 * f64::from(retry);
    assert!(
        leader.takeover_s > 0.0 && leader.takeover_s <= bound,
        "takeover {:.2} s, bound {bound} s: {}",
        leader.takeover_s,
        table(leader)
    );
    assert!(leader.in_sync_s >= leader.takeover_s, "{}", table(leader));
    eprintln!(
        "HA: broken long connections {}/{}, short errors {}/{}, takeover {:.2} s, in sync {:.2} s, \
         tables identical {}, writes {}",
        r.long.broken,
        r.long.connections,
        leader.short_errors,
        leader.short_requests + leader.short_errors,
        leader.takeover_s,
        leader.in_sync_s,
        leader.tables_identical,
        leader.controller_writes
    );
}
