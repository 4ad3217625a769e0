//! Root-only end-to-end tests of the lab topology: 1 switch, 2 nodes, 2 pods
//! per node, real TCP and UDP through the switch netns.
//!
//! Skipped (with one line) when not root or bpffs cannot be mounted, and
//! failed instead under `CI=true` (`talaria_preflight`). Each test's lab is torn down by
//! `Lab`'s Drop even when an assertion panics; the test then checks that no
//! namespace with its prefix is left.
//!
//! Every mode forwards through switch-agent, whose routes the controller
//! writes; talaria mode also runs the node agents. The binaries are found
//! next to talaria-lab (`cargo test --workspace` builds them). Without them a
//! test says so and returns, except under `CI=true`, where that is a failure.

use std::collections::BTreeSet;
use std::time::Duration;
use talaria_lab::bench::lab_for;
use talaria_lab::manifests::ServiceSet;
use talaria_lab::modes::{run_in_pod, targets, LoadRun, Mode};
use talaria_lab::netns::{self, Lab, State, LAB_NEEDS};
use talaria_lab::topology::Topology;
use talaria_lab::traffic::Proto;

fn lab_ready() -> bool {
    talaria_preflight::test_ready(&LAB_NEEDS)
}

fn small() -> Topology {
    Topology::from_yaml(include_str!("../topologies/small.yaml")).unwrap()
}

fn state_dir_for_tests() {
    // Keep test labs apart from interactive ones; pods run the real binary.
    std::env::set_var("TALARIA_LAB_STATE_DIR", "/run/talaria-lab-test");
    std::env::set_var("TALARIA_LAB_EXE", env!("CARGO_BIN_EXE_talaria-lab"));
}

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
}

/// Whether `mode`'s components are built (under CI they must be).
fn components_built(mode: Mode) -> bool {
    let missing = if mode == Mode::Talaria {
        talaria_lab::components::talaria_missing()
    } else {
        talaria_lab::components::fabric_missing()
    };
    missing.is_empty()
        || talaria_preflight::skip(&format!("{mode:?} needs components: {missing:?}"))
}

async fn exercise(mode: Mode) {
    if !components_built(mode) {
        return;
    }
    let t = small();
    let (mut lab, set): (Lab, ServiceSet) = lab_for(t.clone(), mode).await.expect("lab up");
    let prefix = lab.prefix().to_string();
    assert_eq!(lab.state().netns.len(), 1 + 2 + 4);
    let client = t.client_pods()[0];
    for proto in [Proto::HttpShort, Proto::HttpLong, Proto::Udp] {
        let tg = targets(&t, &set, mode, proto, &[0, 1, 2, 3]);
        let r = run_in_pod(
            &mut lab,
            &LoadRun {
                client,
                proto,
                targets: tg,
                concurrency: 4,
                duration: Duration::from_millis(700),
                timeout: Duration::from_secs(1),
                interval: Duration::from_millis(20),
                stop_file: None,
            },
        )
        .await
        .expect("load ran");
        assert!(r.requests > 20, "{mode:?} {proto:?}: {r:?}");
        assert_eq!(r.errors, 0, "{mode:?} {proto:?}: {r:?}");
        // Only endpoints of the targeted Services answer, and more than one
        // (the rules balance).
        let allowed: BTreeSet<String> = set.services[..4]
            .iter()
            .flat_map(|s| s.endpoints.iter().map(|&(n, p)| Topology::pod_name(n, p)))
            .collect();
        let seen: BTreeSet<String> = r.backends.keys().cloned().collect();
        assert!(seen.is_subset(&allowed), "{seen:?} not within {allowed:?}");
        // Keep-alive: 4 connections may all land on one backend (p = 1/8).
        if proto != Proto::HttpLong {
            assert!(
                seen.len() >= 2,
                "{mode:?} {proto:?}: one backend only: {seen:?}"
            );
        }
    }
    // Down removes everything.
    let problems = lab.down();
    assert!(problems.is_empty(), "{problems:?}");
    assert_gone(&prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_end_to_end() {
    if !lab_ready() {
        return;
    }
    state_dir_for_tests();
    exercise(Mode::Direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_mode_end_to_end() {
    if !lab_ready() {
        return;
    }
    state_dir_for_tests();
    exercise(Mode::Iptables).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nftables_mode_end_to_end() {
    if !lab_ready() {
        return;
    }
    state_dir_for_tests();
    exercise(Mode::Nftables).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talaria_mode_end_to_end() {
    if !lab_ready() {
        return;
    }
    state_dir_for_tests();
    exercise(Mode::Talaria).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipvs_mode_end_to_end() {
    if !lab_ready() {
        return;
    }
    if let Some(why) = talaria_lab::modes::ipvs_unavailable() {
        // The mode must say why it cannot run, never half-run.
        assert!(why.starts_with("ipvs: skipped: "), "{why}");
        let err = lab_for(small(), Mode::Ipvs).await.err().expect("refused");
        assert_eq!(err.to_string(), why);
        eprintln!("{why}");
        return;
    }
    state_dir_for_tests();
    exercise(Mode::Ipvs).await;
}

#[test]
fn down_removes_a_crashed_lab() {
    if !lab_ready() {
        return;
    }
    state_dir_for_tests();
    // A lab whose owner "crashed": kept, handle forgotten, then removed from
    // its state file alone.
    let mut lab = Lab::create(small(), "direct").expect("lab up");
    lab.start_servers().expect("servers");
    let prefix = lab.prefix().to_string();
    lab.keep();
    drop(lab);
    assert!(std::path::Path::new("/run/netns")
        .join(format!("{prefix}-sw"))
        .exists());
    let st = State::load(&State::path(&prefix)).unwrap();
    assert_eq!(st.procs.len(), 4);
    let problems = netns::teardown(&st);
    assert!(problems.is_empty(), "{problems:?}");
    assert_gone(&prefix);
}

#[test]
fn drop_tears_down_on_panic() {
    if !lab_ready() {
        return;
    }
    state_dir_for_tests();
    let r = std::panic::catch_unwind(|| {
        let lab = Lab::create(small(), "direct").expect("lab up");
        let prefix = lab.prefix().to_string();
        std::fs::write("/run/talaria-lab-test/last-panic-prefix", &prefix).unwrap();
        panic!("boom");
    });
    assert!(r.is_err());
    let prefix = std::fs::read_to_string("/run/talaria-lab-test/last-panic-prefix").unwrap();
    std::fs::remove_file("/run/talaria-lab-test/last-panic-prefix").unwrap();
    assert_gone(&prefix);
}
