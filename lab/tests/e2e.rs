//! Root-only end-to-end tests of the lab topology: 1 switch, 2 nodes, 2 pods
//! per node, real TCP and UDP through the switch netns, every mode on
//! switch-agent and on bmv2 in the same run.
//!
//! Skipped (with one line) when not root, when bpffs cannot be mounted, or
//! (bmv2) when p4c and `simple_switch_grpc` are not found, and failed
//! instead under `CI=true` (`talaria_preflight::require!`). Each test's lab
//! is torn down by `Lab`'s Drop even when an assertion panics; the test
//! then checks that no namespace with its prefix is left.
//!
//! Every mode forwards through the lab's switch, whose routes the
//! controller writes; talaria mode also runs the node agents. The binaries
//! are found next to talaria-lab (`cargo test --workspace` builds them).
//! Without them a test says so and returns, except under `CI=true`, where
//! that is a failure.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use talaria_lab::bringup::lab_for;
use talaria_lab::demo;
use talaria_lab::manifests::ServiceSet;
use talaria_lab::modes::{external_targets, run_load, targets_of, Client, LoadRun, Mode};
use talaria_lab::netns::{self, Lab, State, LAB_NEEDS};
use talaria_lab::switch::SwitchKind;
use talaria_lab::topology::{IpFamily, Topology};
use talaria_lab::traffic::Proto;
use talaria_preflight::{require, Need};

mod common;

/// What a test of `mode` on `switch` needs from the machine.
fn needs(mode: Mode, switch: &SwitchKind) -> Vec<Need> {
    let mut v = common::lab_needs(switch);
    v.extend_from_slice(mode.needs());
    v
}

fn small() -> Topology {
    Topology::from_yaml(include_str!("../topologies/small.yaml")).unwrap()
}

/// Whether `mode`'s components are built (under CI they must be).
fn components_built(mode: Mode, switch: &SwitchKind) -> bool {
    let missing = if mode == Mode::Talaria {
        talaria_lab::components::talaria_missing(switch)
    } else {
        talaria_lab::components::fabric_missing(switch)
    };
    missing.is_empty()
        || talaria_preflight::skip(&format!("{mode:?} needs components: {missing:?}"))
}

async fn exercise(mode: Mode, switch: SwitchKind) {
    exercise_on(small(), mode, switch).await;
}

/// [`small`] with dual-stack Services: every ClusterIP of both families
/// must work, IPv6 the same way as IPv4.
fn small_dual_stack() -> Topology {
    Topology {
        service_families: vec![IpFamily::IPv4, IpFamily::IPv6],
        ..small()
    }
}

async fn exercise_on(t: Topology, mode: Mode, switch: SwitchKind) {
    if !components_built(mode, &switch) {
        return;
    }
    let (mut lab, set): (Lab, ServiceSet) =
        lab_for(t.clone(), mode, &switch).await.expect("lab up");
    let prefix = lab.prefix().to_string();
    // The switch, 2 nodes, 4 pods, the external host.
    assert_eq!(lab.state().netns.len(), 1 + 2 + 4 + 1);
    assert_eq!(lab.state().switch, switch.name());
    let client = Client::from(t.client_pods()[0]);
    let external: Vec<u32> = set.external().map(|(s, _)| s.index).collect();
    assert_eq!(external.len(), 2, "small.yaml's external Services");
    // bmv2 forwards thousands of packets per second, not a million: give
    // it a longer run for the same request count.
    let duration = match switch {
        SwitchKind::SwitchAgent => Duration::from_millis(700),
        SwitchKind::Bmv2 { .. } => Duration::from_millis(1500),
    };
    // From a pod to 4 ClusterIPs of each Service family, and from outside
    // the cluster to the LoadBalancer IPs of the 2 external Services (IPVS
    // mode has no rules for them). Keep-alive once, over the primary
    // family.
    let all = vec![0, 1, 2, 3];
    let mut loads: Vec<(Client, Proto, Vec<SocketAddr>, Vec<u32>)> = Vec::new();
    for (i, &family) in t.service_families.iter().enumerate() {
        let protos: &[Proto] = if i == 0 {
            &[Proto::HttpShort, Proto::HttpLong, Proto::Udp]
        } else {
            &[Proto::HttpShort, Proto::Udp]
        };
        for &proto in protos {
            let tg = targets_of(&t, &set, mode, proto, &all, family);
            assert_eq!(tg.len(), if mode == Mode::Direct { 8 } else { 4 });
            assert!(tg.iter().all(|a| IpFamily::of(a.ip()) == family), "{tg:?}");
            loads.push((client, proto, tg, all.clone()));
        }
    }
    if mode != Mode::Ipvs {
        for proto in [Proto::HttpShort, Proto::Udp] {
            let tg = external_targets(&t, &set, mode, proto);
            loads.push((Client::External(0), proto, tg, external.clone()));
        }
    }
    for (client, proto, tg, services) in loads {
        let what = format!(
            "{mode:?} on {} {proto:?} from {client:?} to {}",
            switch.name(),
            tg[0]
        );
        let r = run_load(
            &mut lab,
            &LoadRun {
                client,
                proto,
                targets: tg,
                concurrency: 4,
                duration,
                timeout: Duration::from_secs(1),
                interval: Duration::from_millis(20),
                stop_file: None,
            },
        )
        .await
        .expect("load ran");
        assert!(r.requests > 20, "{what}: {r:?}");
        if r.errors != 0 {
            panic!("{what}: {r:?}\n{}", diagnose(&lab, &t));
        }
        // Only endpoints of the targeted Services answer, and more than one
        // (the rules balance).
        let allowed: BTreeSet<String> = services
            .iter()
            .flat_map(|&k| &set.services[k as usize].endpoints)
            .map(|&(n, p)| Topology::pod_name(n, p))
            .collect();
        let seen: BTreeSet<String> = r.backends.keys().cloned().collect();
        assert!(seen.is_subset(&allowed), "{seen:?} not within {allowed:?}");
        // Keep-alive: 4 connections may all land on one backend (p = 1/8).
        if proto != Proto::HttpLong {
            assert!(seen.len() >= 2, "{what}: one backend only: {seen:?}");
        }
    }
    // Only the switch handled the traffic: the switch netns' own stack
    // neither forwarded, nor refused, nor answered any of it.
    let snmp = switch_stack_counters(&prefix);
    for counter in [
        "Ip:ForwDatagrams",
        "Ip:InAddrErrors",
        "Udp:NoPorts",
        "Icmp:OutMsgs",
    ] {
        assert_eq!(
            snmp.get(counter),
            Some(&0),
            "{counter} in the switch netns: {snmp:?}"
        );
    }
    // Down removes everything.
    let problems = lab.down();
    assert!(problems.is_empty(), "{problems:?}");
    common::assert_gone(&prefix);
}

/// What a failed run leaves to look at: each node agent's counters and
/// drops (`talaria-node status`), the switch netns' links (veth drops) and
/// every namespace's non-zero stack counters (`nstat`).
fn diagnose(lab: &Lab, t: &Topology) -> String {
    let run = |cmd: &str, args: &[&str]| match std::process::Command::new(cmd).args(args).output() {
        Ok(o) => format!(
            "$ {cmd} {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("$ {cmd}: {e}\n"),
    };
    let node = talaria_lab::components::Component::NodeAgent
        .find()
        .map(|p| p.to_string_lossy().into_owned());
    let mut out = String::new();
    for n in 0..t.nodes {
        let dir = talaria_lab::bringup::node_pin_dir(lab, n);
        match &node {
            Some(bin) => out += &run(bin, &["status", "--pin-dir", &dir.to_string_lossy()]),
            None => out += "talaria-node not found\n",
        }
    }
    let sw = format!("{}-sw", lab.prefix());
    out += &run("ip", &["-n", &sw, "-s", "link"]);
    for ns in &lab.state().netns {
        out += &run("ip", &["netns", "exec", ns, "nstat", "-as"]);
    }
    out
}

/// The switch netns' IP stack counters (`/proc/net/snmp`), as
/// `"Proto:Name" → value`.
fn switch_stack_counters(prefix: &str) -> std::collections::BTreeMap<String, u64> {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{prefix}-sw"),
            "cat",
            "/proc/net/snmp",
        ])
        .output()
        .expect("ip netns exec");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut counters = std::collections::BTreeMap::new();
    // Header and value lines alternate: "Ip: Forwarding ..." / "Ip: 1 ...".
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (proto, names) = names.split_once(": ").unwrap();
        let values = values.split_once(": ").unwrap().1;
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse() {
                counters.insert(format!("{proto}:{n}"), v);
            }
        }
    }
    counters
}

/// `mode` on `switch`, from the guard to the teardown check.
async fn end_to_end(mode: Mode, switch: SwitchKind) {
    require!(needs(mode, &switch));
    common::use_test_labs();
    exercise(mode, switch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_over_switch_agent() {
    end_to_end(Mode::Direct, SwitchKind::SwitchAgent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_mode_over_switch_agent() {
    end_to_end(Mode::Iptables, SwitchKind::SwitchAgent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nftables_mode_over_switch_agent() {
    end_to_end(Mode::Nftables, SwitchKind::SwitchAgent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talaria_mode_over_switch_agent() {
    end_to_end(Mode::Talaria, SwitchKind::SwitchAgent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_over_bmv2() {
    end_to_end(Mode::Direct, SwitchKind::bmv2()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_mode_over_bmv2() {
    end_to_end(Mode::Iptables, SwitchKind::bmv2()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nftables_mode_over_bmv2() {
    end_to_end(Mode::Nftables, SwitchKind::bmv2()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talaria_mode_over_bmv2() {
    end_to_end(Mode::Talaria, SwitchKind::bmv2()).await;
}

/// `mode` on `switch` with dual-stack Services: IPv6 ClusterIPs through
/// the switch (talaria), through ip6tables and table `ip6 kube-proxy`
/// (the baselines), and IPv6 pod addresses routed by the switch (direct).
async fn dual_stack(mode: Mode, switch: SwitchKind) {
    require!(needs(mode, &switch));
    common::use_test_labs();
    exercise_on(small_dual_stack(), mode, switch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_direct_over_switch_agent() {
    dual_stack(Mode::Direct, SwitchKind::SwitchAgent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_iptables_over_switch_agent() {
    dual_stack(Mode::Iptables, SwitchKind::SwitchAgent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_nftables_over_switch_agent() {
    dual_stack(Mode::Nftables, SwitchKind::SwitchAgent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_talaria_over_switch_agent() {
    dual_stack(Mode::Talaria, SwitchKind::SwitchAgent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_talaria_over_bmv2() {
    dual_stack(Mode::Talaria, SwitchKind::bmv2()).await;
}

/// IPVS where the kernel has it; elsewhere the mode must say why it
/// cannot run, never half-run.
async fn ipvs_end_to_end(switch: SwitchKind) {
    let mut base = LAB_NEEDS.to_vec();
    base.extend(switch.needs());
    require!(base);
    if let Some(why) = talaria_lab::modes::ipvs_unavailable() {
        assert!(why.starts_with("ipvs: skipped: "), "{why}");
        let err = lab_for(small(), Mode::Ipvs, &switch)
            .await
            .err()
            .expect("refused");
        assert_eq!(err.to_string(), why);
        eprintln!("{why}");
        return;
    }
    end_to_end(Mode::Ipvs, switch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipvs_mode_over_switch_agent() {
    ipvs_end_to_end(SwitchKind::SwitchAgent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipvs_mode_over_bmv2() {
    ipvs_end_to_end(SwitchKind::bmv2()).await;
}

/// The demo's own code path (`talaria-lab --switch bmv2 demo`) on the
/// small topology: every row of its table is a talaria ClusterIP
/// measurement that served requests without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_over_bmv2() {
    let switch = SwitchKind::bmv2();
    require!(needs(Mode::Talaria, &switch));
    common::use_test_labs();
    if !components_built(Mode::Talaria, &switch) {
        return;
    }
    let rows = demo::run(small(), false, Duration::from_secs(1), switch)
        .await
        .expect("the demo ran in talaria mode");
    let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "talaria ClusterIP: HTTP, connection per request",
            "talaria ClusterIP: HTTP keep-alive",
            "talaria ClusterIP: UDP echo"
        ]
    );
    for (name, r) in &rows {
        assert_eq!(r.switch, "bmv2", "{name}");
        assert!(r.requests > 0, "{name}: {r:?}");
        assert_eq!(r.errors, 0, "{name}: {r:?}");
    }
}

#[test]
fn down_removes_a_crashed_lab() {
    require!(LAB_NEEDS);
    common::use_test_labs();
    // A lab whose owner "crashed": kept, handle forgotten, then removed from
    // its state file alone.
    let mut lab = Lab::create(small(), "direct", SwitchKind::SwitchAgent).expect("lab up");
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
    common::assert_gone(&prefix);
}

#[test]
fn drop_tears_down_on_panic() {
    require!(LAB_NEEDS);
    common::use_test_labs();
    let r = std::panic::catch_unwind(|| {
        let lab = Lab::create(small(), "direct", SwitchKind::SwitchAgent).expect("lab up");
        let prefix = lab.prefix().to_string();
        std::fs::write("/run/talaria-lab-test/last-panic-prefix", &prefix).unwrap();
        panic!("boom");
    });
    assert!(r.is_err());
    let prefix = std::fs::read_to_string("/run/talaria-lab-test/last-panic-prefix").unwrap();
    std::fs::remove_file("/run/talaria-lab-test/last-panic-prefix").unwrap();
    common::assert_gone(&prefix);
}
