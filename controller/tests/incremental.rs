//! Incremental reconcile ≡ full reconcile.
//!
//! A random history of object changes (Services, EndpointSlices, Nodes,
//! with clock steps across the id quarantine; IPv4, IPv6 and dual-stack
//! Services, IPv4 and IPv6 slices and pod CIDRs) is fed two ways:
//! - incrementally, as the controller does: the source's change log →
//!   `Model::apply` → `Planner::replan` → `region_diff` applied to a
//!   simulated switch;
//! - from scratch at every step: `model::build` of all objects and
//!   `Planner::plan_full`.
//!
//! After every step the two models, the two desired states, the errors and
//! the id usage must be equal, and the simulated switch must hold exactly
//! the desired state. Every batch is applied in order and the switch must
//! never hold a dangling reference in between (dependency order). At the
//! end a restarted planner adopting the switch must want no write at all.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use proptest::prelude::*;
use talaria_common::ts_cookie::CookieKey;
use talaria_controller::{
    buckets::BucketPolicy,
    controller::Source,
    diff::{self, Batch, FullDiff},
    model::{Delta, Model, ObjectRef},
    plan::{FabricConfig, PlanChanges, Planner},
    source::{MemorySource, Objects},
};
use talaria_tables::{
    backend, backend_v6, cookie_check, lb_bucket, service_v4, service_v6, ts_cookie, Contents,
};

const QUARANTINE: Duration = Duration::from_secs(30);
const VIPS: [&str; 3] = ["10.96.0.10", "10.96.0.11", "10.96.0.12"];
const VIPS6: [&str; 3] = ["fd00:96::a", "fd00:96::b", "fd00:96::c"];
const SERVICES: usize = 4;

#[derive(Debug, Clone)]
enum Change {
    PutService {
        svc: usize,
        vip: usize,
        ports: u8,
        affinity: bool,
        /// 0: IPv4 (the common case), 1: dual-stack, 2: IPv6 only.
        families: u8,
    },
    RemoveService(usize),
    PutSlice {
        svc: usize,
        slot: usize,
        /// The Service its label names (usually `svc`).
        label: usize,
        /// (pod index, condition: 0 ready, 1 serving+terminating, 2 not ready)
        endpoints: Vec<(u8, u8)>,
        /// An IPv6 slice (pod 11 is then outside every IPv6 pod CIDR).
        v6: bool,
    },
    RemoveSlice {
        svc: usize,
        slot: usize,
    },
    /// Moves node n2's InternalIP (a Node change: full rebuild).
    MoveNode(bool),
    Tick(u64),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (
            0..SERVICES,
            0..VIPS.len(),
            1u8..4,
            any::<bool>(),
            prop_oneof![2 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)],
        )
            .prop_map(|(svc, vip, ports, affinity, families)| Change::PutService {
                svc,
                vip,
                ports,
                affinity,
                families,
            }),
        1 => (0..SERVICES).prop_map(Change::RemoveService),
        6 => (
            0..SERVICES,
            0..2usize,
            prop_oneof![4 => Just(None), 1 => (0..SERVICES).prop_map(Some)],
            proptest::collection::vec((0u8..12, 0u8..3), 0..6),
            prop_oneof![3 => Just(false), 2 => Just(true)],
        )
            .prop_map(|(svc, slot, label, endpoints, v6)| Change::PutSlice {
                svc,
                slot,
                label: label.unwrap_or(svc),
                endpoints,
                v6,
            }),
        1 => (0..SERVICES, 0..2usize).prop_map(|(svc, slot)| Change::RemoveSlice { svc, slot }),
        1 => any::<bool>().prop_map(Change::MoveNode),
        2 => (0u64..25).prop_map(Change::Tick),
    ]
}

fn yaml<T: serde::de::DeserializeOwned>(y: &str) -> T {
    serde_yaml::from_str(y).unwrap()
}

/// A Node with an IPv4 and an IPv6 pod CIDR.
fn node(name: &str, cidr: &str, cidr6: &str, ip: &str) -> Node {
    yaml(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{podCIDR: {cidr}, podCIDRs: [{cidr}, \"{cidr6}\"]}}\nstatus: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n"
    ))
}

fn service(svc: usize, vip: usize, ports: u8, affinity: bool, families: u8) -> Service {
    let mut p = Vec::new();
    if ports & 1 != 0 {
        p.push("{name: http, port: 80, targetPort: http}");
    }
    if ports & 2 != 0 {
        p.push("{name: dns, port: 53, protocol: UDP, targetPort: 5353}");
    }
    let aff = if affinity { "ClientIP" } else { "None" };
    let ips = match families {
        0 => VIPS[vip].to_string(),
        1 => format!("{}, \"{}\"", VIPS[vip], VIPS6[vip]),
        _ => format!("\"{}\"", VIPS6[vip]),
    };
    yaml(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: s{svc}, namespace: ns}}\nspec: {{clusterIPs: [{ips}], externalIPs: [203.0.113.{svc}], sessionAffinity: {aff}, selector: {{app: s{svc}}}, ports: [{}]}}\n",
        p.join(", ")
    ))
}

fn slice(svc: usize, slot: usize, label: usize, endpoints: &[(u8, u8)], v6: bool) -> EndpointSlice {
    let mut eps = String::new();
    for (pod, cond) in endpoints {
        let cond = match cond {
            0 => "{ready: true}",
            1 => "{ready: false, serving: true, terminating: true}",
            _ => "{ready: false}",
        };
        // Pods 0..6 on n1, 6..12 on n2 (found through the pod CIDR); IPv6
        // pod 11 is in no pod CIDR (no agent: skipped).
        let (ip, node) = match (v6, *pod) {
            (false, p @ 0..6) => (format!("10.244.1.{}", p + 1), "nodeName: n1, "),
            (false, p) => (format!("10.244.2.{}", p + 1), ""),
            (true, p @ 0..6) => (format!("\"fd00:1::{}\"", p + 1), "nodeName: n1, "),
            (true, 11) => ("\"fd99::1\"".to_string(), ""),
            (true, p) => (format!("\"fd00:2::{}\"", p + 1), ""),
        };
        eps.push_str(&format!(
            "- {{addresses: [{ip}], {node}conditions: {cond}}}\n"
        ));
    }
    if eps.is_empty() {
        eps.push_str("  []\n");
    }
    yaml(&format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{svc}-{slot}, namespace: ns, labels: {{kubernetes.io/service-name: s{label}}}}}\naddressType: {}\nports: [{{name: http, port: 8080}}, {{name: dns, port: 5353, protocol: UDP}}]\nendpoints:\n{eps}",
        if v6 { "IPv6" } else { "IPv4" }
    ))
}

fn oref(name: String) -> ObjectRef {
    ObjectRef {
        namespace: "ns".into(),
        name,
    }
}

fn fabric() -> FabricConfig {
    FabricConfig {
        switch_addrs: vec!["192.168.0.1".parse().unwrap()],
        ..FabricConfig::default()
    }
}

/// Two timestamp-cookie keys, as during a rotation: every external TCP
/// port's cookies under both.
fn planner() -> Planner {
    let key = |k0, k1| CookieKey { k0, k1 };
    Planner::new(policy(), QUARANTINE).with_ts_cookie_keys(vec![key(1, 2), key(3, 4)])
}

fn policy() -> BucketPolicy {
    BucketPolicy {
        per_backend: 2,
        min: 4,
        max: 16,
        shrink_factor: 2,
    }
}

/// Panics if `s` holds an entry that points at a missing one.
fn check_references(s: &Contents, when: &str) {
    let services = s
        .service_v4
        .iter()
        .map(|(k, a)| {
            let service_v4::Action::SetService {
                service_id,
                bucket_mask,
                ..
            } = *a;
            (format!("{k:?}"), service_id, bucket_mask)
        })
        .chain(s.service_v6.iter().map(|(k, a)| {
            let service_v6::Action::SetService {
                service_id,
                bucket_mask,
                ..
            } = *a;
            (format!("{k:?}"), service_id, bucket_mask)
        }));
    let has_backend = |backend_id| {
        s.backend.contains_key(&backend::Key { backend_id })
            || s.backend_v6.contains_key(&backend_v6::Key { backend_id })
    };
    for (key, service_id, bucket_mask) in services {
        // Mask 0 and no bucket: a port without active backends, kept for
        // the flows of its draining and departed ones.
        let bucketless = bucket_mask == 0
            && !s.lb_bucket.contains_key(&lb_bucket::Key {
                service_id,
                bucket: 0,
            });
        if bucketless {
            continue;
        }
        for bucket in 0..=bucket_mask {
            assert!(
                s.lb_bucket
                    .contains_key(&lb_bucket::Key { service_id, bucket }),
                "{when}: {key:?} (mask {bucket_mask}) lacks bucket {bucket}",
            );
        }
    }
    for (k, a) in &s.lb_bucket {
        let lb_bucket::Action::SelectBackend { backend_id } = *a;
        let cookie = cookie_check::Key {
            service_id: k.service_id,
            backend_id,
        };
        assert!(
            s.cookie_check.contains_key(&cookie) && has_backend(backend_id),
            "{when}: bucket {k:?} names backend {backend_id} without its entries"
        );
    }
    for (k, a) in &s.ts_cookie {
        let ts_cookie::Action::TsCookieHit { backend_id } = *a;
        let cookie = cookie_check::Key {
            service_id: k.service_id,
            backend_id,
        };
        assert!(
            s.cookie_check.contains_key(&cookie),
            "{when}: ts_cookie {k:?} names backend {backend_id} without its cookie_check entry"
        );
    }
    for k in s.cookie_check.keys() {
        assert!(
            has_backend(k.backend_id),
            "{when}: cookie_check {k:?} without backend"
        );
    }
    // Every port's buckets name a backend in its family's table (the one
    // the switch reads for its packets).
    let v6_sids: std::collections::BTreeSet<u16> = s
        .service_v6
        .values()
        .map(|a| {
            let service_v6::Action::SetService { service_id, .. } = *a;
            service_id
        })
        .collect();
    let v4_sids: std::collections::BTreeSet<u16> = s
        .service_v4
        .values()
        .map(|a| {
            let service_v4::Action::SetService { service_id, .. } = *a;
            service_id
        })
        .collect();
    for (k, a) in &s.lb_bucket {
        let lb_bucket::Action::SelectBackend { backend_id } = *a;
        // Before its service entry is written (or after it is deleted), a
        // service id's family is not known here: either table will do.
        let v4 = s.backend.contains_key(&backend::Key { backend_id });
        let v6 = s.backend_v6.contains_key(&backend_v6::Key { backend_id });
        let found = if v6_sids.contains(&k.service_id) {
            v6
        } else if v4_sids.contains(&k.service_id) {
            v4
        } else {
            v4 || v6
        };
        assert!(
            found,
            "{when}: bucket {k:?} names backend {backend_id}, not in its family's table"
        );
    }
}

fn apply_checked(have: &mut Contents, batches: &[Batch], when: &str) {
    for b in batches {
        diff::apply(have, std::slice::from_ref(b));
        check_references(have, when);
    }
}

/// What the switch task does with a plan change.
fn sync(planner: &Planner, have: &mut Contents, ch: &PlanChanges, when: &str) {
    if ch.full {
        let want = planner.desired().clone();
        let mut gen = FullDiff::default();
        // Small chunks, applied one at a time, in order.
        while let Some(c) = gen.next_chunk(&want, &*have, 3) {
            let b = Batch {
                op: c.op,
                table: c.table,
                entries: c.entries,
            };
            apply_checked(have, &[b], when);
        }
    } else {
        let batches = diff::region_diff(planner.desired(), have, ch);
        apply_checked(have, &batches, when);
    }
}

fn run(history: Vec<Change>) {
    let t0 = Instant::now();
    let mut now = t0;
    let src = MemorySource::new();
    let mut objects = Objects::default();
    objects.put_node(node("n1", "10.244.1.0/24", "fd00:1::/64", "192.168.0.11"));
    objects.put_node(node("n2", "10.244.2.0/24", "fd00:2::/64", "192.168.0.12"));
    src.replace(objects.clone());

    let mut model = Model::default();
    let mut inc = planner();
    let mut full = planner();
    let mut have = Contents::default();

    for (step, c) in std::iter::once(None)
        .chain(history.into_iter().map(Some))
        .enumerate()
    {
        let when = format!("step {step} ({c:?})");
        match c {
            None => {}
            Some(Change::PutService {
                svc,
                vip,
                ports,
                affinity,
                families,
            }) => src.update(|o| o.put_service(service(svc, vip, ports, affinity, families))),
            Some(Change::RemoveService(svc)) => {
                src.update(|o| o.remove_service(&oref(format!("s{svc}"))))
            }
            Some(Change::PutSlice {
                svc,
                slot,
                label,
                endpoints,
                v6,
            }) => src.update(|o| o.put_slice(slice(svc, slot, label, &endpoints, v6))),
            Some(Change::RemoveSlice { svc, slot }) => {
                src.update(|o| o.remove_slice(&oref(format!("s{svc}-{slot}"))))
            }
            Some(Change::MoveNode(moved)) => {
                let ip = if moved {
                    "192.168.0.22"
                } else {
                    "192.168.0.12"
                };
                src.update(|o| o.put_node(node("n2", "10.244.2.0/24", "fd00:2::/64", ip)))
            }
            Some(Change::Tick(s)) => now += Duration::from_secs(s),
        }

        // Incremental, as the reconciler does it.
        let ch = match src.update_model(&mut model, false) {
            Delta::Rebuilt => inc.plan_full(&model, &fabric(), now),
            Delta::Ports(keys) => inc.replan(&model, keys, now),
        };
        sync(&inc, &mut have, &ch, &when);

        // From scratch.
        let reference = src.model();
        full.plan_full(&reference, &fabric(), now);

        assert_eq!(model, reference, "{when}: model");
        let want = full.desired().state();
        assert_eq!(inc.desired().state(), want, "{when}: desired state");
        assert_eq!(inc.errors(), full.errors(), "{when}: errors");
        assert_eq!(inc.backend_id_usage(), full.backend_id_usage(), "{when}");
        assert_eq!(inc.service_id_usage(), full.service_id_usage(), "{when}");
        assert_eq!(have, want, "{when}: switch differs from the plan");
    }

    // Once departed backends are out of quarantine (a restart forgets
    // departures), a restarted controller adopts what the switch holds and
    // writes nothing.
    now += QUARANTINE * 2;
    let ch = inc.replan(&model, [], now);
    sync(&inc, &mut have, &ch, "after the quarantine");
    assert_eq!(have, inc.desired().state());
    let mut restarted = planner();
    assert!(restarted.adopt(&have).is_empty());
    restarted.plan_full(&model, &fabric(), now);
    let batches = diff::diff(&restarted.desired().state(), &have);
    assert!(batches.is_empty(), "restart would write {batches:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn incremental_equals_full(history in proptest::collection::vec(change(), 1..40)) {
        run(history);
    }
}

#[test]
fn departed_backend_expires_without_other_changes() {
    run(vec![
        Change::PutService {
            svc: 0,
            vip: 0,
            ports: 1,
            affinity: false,
            families: 0,
        },
        Change::PutSlice {
            svc: 0,
            slot: 0,
            label: 0,
            endpoints: vec![(0, 0), (1, 0)],
            v6: false,
        },
        Change::PutSlice {
            svc: 0,
            slot: 0,
            label: 0,
            endpoints: vec![(0, 0)],
            v6: false,
        },
        Change::Tick(20),
        Change::Tick(20),
    ]);
}

/// A dual-stack Service whose IPv6 slice turns into an IPv4 one and back,
/// with an IPv6 endpoint leaving and its id expiring, and the Service
/// becoming IPv6-only: both families' tables follow, in order.
#[test]
fn dual_stack_service_through_family_changes() {
    let put = |endpoints: Vec<(u8, u8)>, v6| Change::PutSlice {
        svc: 0,
        slot: 1,
        label: 0,
        endpoints,
        v6,
    };
    let service = |families| Change::PutService {
        svc: 0,
        vip: 1,
        ports: 3,
        affinity: false,
        families,
    };
    run(vec![
        service(1),
        Change::PutSlice {
            svc: 0,
            slot: 0,
            label: 0,
            endpoints: vec![(0, 0), (7, 0)],
            v6: false,
        },
        put(vec![(0, 0), (1, 0), (7, 1), (11, 0)], true),
        put(vec![(0, 0), (7, 1)], true),
        Change::Tick(20),
        put(vec![(0, 0), (2, 0)], false),
        Change::Tick(20),
        put(vec![(3, 0), (8, 2)], true),
        service(2),
        Change::MoveNode(true),
        Change::Tick(40),
        service(0),
        Change::RemoveService(0),
    ]);
}
