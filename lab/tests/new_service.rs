//! Root-only: `talaria-lab bench-new-service` with 3 Services. A lab whose
//! controller reads the fake Kubernetes API and whose node agents run in
//! Kubernetes mode serves each new Service from a remote node, answered by
//! the Service's endpoint. Latencies are measured, not asserted (the full
//! run is in `bench/results/new-service/`).
//!
//! Skipped (with one line) when not root or bpffs cannot be mounted, and
//! failed instead under `CI=true` (`talaria_preflight::require!`). Without
//! the component binaries it says so and returns, except under `CI=true`.
//! The lab is torn down even when an assertion fails; the test checks
//! nothing of it is left.

use talaria_lab::new_service::{self, NewServiceArgs};
use talaria_lab::switch::SwitchKind;
use talaria_preflight::require;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_new_service_is_served_from_a_remote_node() {
    let switch = SwitchKind::SwitchAgent;
    require!(common::lab_needs(&switch));
    if !common::talaria_ready(&switch) {
        return;
    }
    let a = NewServiceArgs {
        services: 3,
        gap_ms: 10,
        ..NewServiceArgs::default()
    };
    let r = new_service::measure(&a, &switch)
        .await
        .expect("bench-new-service ran");
    common::assert_gone(&r.prefix);
    assert!(r.warm_up.ok(), "warm-up: {:#?}", r.warm_up);
    assert_eq!(r.samples.len(), 3);
    for s in &r.samples {
        assert!(s.ok(), "{s:#?}");
        assert_eq!(s.backend.as_deref(), Some(s.endpoint.as_str()));
    }
    assert_eq!(r.failures(), 0);
    eprintln!("{}", new_service::table(&r));
}
