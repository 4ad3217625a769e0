//! The planner: model + fabric config + id allocation + bucket assignment →
//! desired [`SwitchState`]. It keeps the ids and bucket assignments from one
//! plan to the next (that is what makes buckets resilient and ids stable),
//! and adopts them from the switch on start, so a restarted controller
//! computes exactly what the switch already holds.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{
    buckets::{self, BucketPolicy},
    ids::{IdError, IdPool},
    model::{Model, ObjectRef},
    state::SwitchState,
    types::{Backend, Ipv4Prefix, Mac, RouteAction, ServiceAction, ServiceKey},
};

/// A static route of the fabric (`ipv4_route`), from the config: fabric
/// routing is configured, not derived from Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination prefix, e.g. `192.168.0.11/32`.
    pub prefix: Ipv4Prefix,
    /// Egress port; absent = drop.
    #[serde(default)]
    pub port: Option<u16>,
    /// Source MAC written on egress.
    #[serde(default)]
    pub src_mac: Mac,
    /// Destination MAC written on egress (next hop).
    #[serde(default)]
    pub dst_mac: Mac,
}

/// Switch configuration that does not come from Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FabricConfig {
    /// The switch's tunnel addresses (`switch_addr`): Geneve packets to these
    /// are terminated and load-balanced.
    pub switch_addrs: Vec<Ipv4Addr>,
    /// `ipv4_route` entries.
    pub routes: Vec<RouteConfig>,
}

/// What the planner decided for one service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedPort {
    /// The Service.
    pub service: ObjectRef,
    /// Port name.
    pub port_name: String,
    /// Switch key.
    pub key: ServiceKey,
    /// Allocated service id.
    pub service_id: u16,
    /// Bucket count (0 = no backends, service entry absent).
    pub buckets: usize,
    /// Backends taking new flows, by id.
    pub active: BTreeMap<u32, Backend>,
    /// Backends keeping established flows only, by id.
    pub draining: BTreeMap<u32, Backend>,
}

/// A plan: the desired state and what it is made of.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// Desired switch state.
    pub state: SwitchState,
    /// Per service port.
    pub ports: BTreeMap<ServiceKey, PlannedPort>,
    /// Ports left out (id exhaustion), one line each.
    pub errors: Vec<String>,
}

/// Keeps ids and bucket assignments across plans.
#[derive(Debug, Clone)]
pub struct Planner {
    policy: BucketPolicy,
    service_ids: IdPool<ServiceKey>,
    backend_ids: IdPool<Backend>,
    /// Current assignment per service id.
    buckets: BTreeMap<u16, Vec<u32>>,
    /// Backends (active or draining) per service id in the last plan.
    members: BTreeMap<u16, BTreeMap<u32, Backend>>,
    /// Backends that left a service, with when they left. Their cookies stay
    /// valid for the quarantine, as kube-proxy's conntrack keeps an
    /// established flow on a removed endpoint: the pod may still be serving.
    departed: BTreeMap<u16, BTreeMap<u32, (Backend, Instant)>>,
    quarantine: Duration,
}

impl Planner {
    /// A planner with no history.
    pub fn new(policy: BucketPolicy, quarantine: Duration) -> Self {
        Self {
            policy: policy.normalized(),
            service_ids: IdPool::new("service", u64::from(u16::MAX), quarantine),
            backend_ids: IdPool::new("backend", u64::from(u32::MAX), quarantine),
            buckets: BTreeMap::new(),
            members: BTreeMap::new(),
            departed: BTreeMap::new(),
            quarantine,
        }
    }

    /// Adopts ids and bucket assignments read back from a switch. Returns
    /// one line per entry that could not be adopted (it will be deleted by
    /// the next diff).
    pub fn adopt(&mut self, actual: &SwitchState) -> Vec<String> {
        let mut warnings = Vec::new();
        for (key, a) in &actual.service_v4 {
            if let Err(e) = self.service_ids.adopt(*key, u64::from(a.service_id)) {
                warnings.push(format!("service_v4 {key}: {e}"));
                continue;
            }
            let size = usize::from(a.bucket_mask) + 1;
            if !size.is_power_of_two() {
                warnings.push(format!(
                    "service_v4 {key}: bucket_mask {} not 2^k-1",
                    a.bucket_mask
                ));
                continue;
            }
            let v: Vec<u32> = (0..size)
                .map(|b| {
                    actual
                        .lb_bucket
                        .get(&(a.service_id, b as u16))
                        .copied()
                        .unwrap_or(0)
                })
                .collect();
            self.buckets.insert(a.service_id, v);
        }
        for (id, b) in &actual.backend {
            if let Err(e) = self.backend_ids.adopt(*b, u64::from(*id)) {
                warnings.push(format!("backend {id} ({b}): {e}"));
            }
        }
        warnings
    }

    /// Computes the desired state for `model` at `now`.
    pub fn plan(&mut self, model: &Model, fabric: &FabricConfig, now: Instant) -> Plan {
        let mut plan = Plan::default();
        let st = &mut plan.state;
        st.switch_addr.extend(fabric.switch_addrs.iter().copied());
        for r in &fabric.routes {
            let action = match r.port {
                Some(port) => RouteAction::Forward {
                    port,
                    src_mac: r.src_mac,
                    dst_mac: r.dst_mac,
                },
                None => RouteAction::Drop,
            };
            st.ipv4_route.insert(r.prefix, action);
        }
        st.pod_node
            .extend(model.pod_nodes.iter().map(|(p, n)| (*p, *n)));

        let mut live_services = BTreeSet::new();
        let mut live_backends = BTreeSet::new();
        for (key, port) in &model.ports {
            let sid = match self.service_ids.acquire(key, now) {
                Ok(id) => id as u16,
                Err(e) => {
                    plan.errors.push(format!("{key} ({}): {e}", port.service));
                    continue;
                }
            };
            live_services.insert(*key);
            let mut ids = |set: &BTreeSet<Backend>,
                           errors: &mut Vec<String>|
             -> BTreeMap<u32, Backend> {
                let mut out = BTreeMap::new();
                for b in set {
                    match self.backend_ids.acquire(b, now) {
                        Ok(id) => {
                            live_backends.insert(*b);
                            out.insert(id as u32, *b);
                        }
                        Err(e @ IdError::Exhausted { .. }) | Err(e @ IdError::Conflict { .. }) => {
                            errors.push(format!("{key} backend {b}: {e}"));
                        }
                    }
                }
                out
            };
            let active = ids(&port.active, &mut plan.errors);
            let draining = ids(&port.draining, &mut plan.errors);
            let active_ids: BTreeSet<u32> = active.keys().copied().collect();
            let departed = self.note_departures(sid, &active, &draining, now);
            let old = self.buckets.get(&sid).map(Vec::as_slice).unwrap_or(&[]);
            let assignment = buckets::assign(old, &active_ids, &self.policy);
            if assignment.is_empty() {
                self.buckets.remove(&sid);
            } else {
                for (b, id) in assignment.iter().enumerate() {
                    st.lb_bucket.insert((sid, b as u16), *id);
                }
                for (id, b) in active.iter().chain(&draining).chain(&departed) {
                    st.backend.insert(*id, *b);
                    st.cookie_check.insert((sid, *id));
                }
                st.service_v4.insert(
                    *key,
                    ServiceAction {
                        service_id: sid,
                        bucket_mask: (assignment.len() - 1) as u16,
                        hash_mode: port.hash_mode,
                    },
                );
                self.buckets.insert(sid, assignment.clone());
            }
            plan.ports.insert(
                *key,
                PlannedPort {
                    service: port.service.clone(),
                    port_name: port.port_name.clone(),
                    key: *key,
                    service_id: sid,
                    buckets: assignment.len(),
                    active,
                    draining,
                },
            );
        }
        self.service_ids
            .release_unless(now, |k| live_services.contains(k));
        self.backend_ids
            .release_unless(now, |b| live_backends.contains(b));
        self.service_ids.sweep(now);
        self.backend_ids.sweep(now);
        // Forget assignments of services whose id is gone or not live.
        let live_ids: BTreeSet<u16> = plan.ports.values().map(|p| p.service_id).collect();
        self.buckets.retain(|sid, _| live_ids.contains(sid));
        self.members.retain(|sid, _| live_ids.contains(sid));
        self.departed.retain(|sid, _| live_ids.contains(sid));
        plan
    }

    /// Records which backends left service `sid` since the last plan and
    /// returns those still within their quarantine (a backend that comes
    /// back is no longer departed).
    fn note_departures(
        &mut self,
        sid: u16,
        active: &BTreeMap<u32, Backend>,
        draining: &BTreeMap<u32, Backend>,
        now: Instant,
    ) -> BTreeMap<u32, Backend> {
        let present = |id: &u32| active.contains_key(id) || draining.contains_key(id);
        let departed = self.departed.entry(sid).or_default();
        if let Some(previous) = self.members.get(&sid) {
            for (id, b) in previous.iter().filter(|(id, _)| !present(id)) {
                departed.entry(*id).or_insert((*b, now));
            }
        }
        let quarantine = self.quarantine;
        departed.retain(|id, (_, since)| !present(id) && now.duration_since(*since) < quarantine);
        self.members.insert(
            sid,
            active
                .iter()
                .chain(draining)
                .map(|(id, b)| (*id, *b))
                .collect(),
        );
        departed.iter().map(|(id, (b, _))| (*id, *b)).collect()
    }

    /// (in use, quarantined) service ids.
    pub fn service_id_usage(&self) -> (usize, usize) {
        (self.service_ids.in_use(), self.service_ids.quarantined())
    }

    /// (in use, quarantined) backend ids.
    pub fn backend_id_usage(&self) -> (usize, usize) {
        (self.backend_ids.in_use(), self.backend_ids.quarantined())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{diff::diff, model, model::tests::objs};

    const SVC: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
"#;

    fn model_with(eps: &[(&str, &str)]) -> Model {
        let mut y = format!("{}\n---\n{}", model::tests::NODES, SVC);
        for (ip, cond) in eps {
            y.push_str(&format!(
                "- {{addresses: [{ip}], nodeName: n1, conditions: {cond}}}\n"
            ));
        }
        if eps.is_empty() {
            y.push_str("  []\n");
        }
        let (s, e, n) = objs(&y);
        model::build(&s, &e, &n)
    }

    fn fabric() -> FabricConfig {
        FabricConfig {
            switch_addrs: vec!["192.168.0.1".parse().unwrap()],
            routes: vec![RouteConfig {
                prefix: "192.168.0.11/32".parse().unwrap(),
                port: Some(1),
                src_mac: "02:00:00:00:00:01".parse().unwrap(),
                dst_mac: "02:00:00:00:00:11".parse().unwrap(),
            }],
        }
    }

    const READY: &str = "{ready: true}";
    const TERM: &str = "{ready: false, serving: true, terminating: true}";

    #[test]
    fn plan_builds_all_tables() {
        let m = model_with(&[
            ("10.244.1.5", READY),
            ("10.244.1.6", READY),
            ("10.244.1.7", TERM),
        ]);
        let mut p = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        let plan = p.plan(&m, &fabric(), Instant::now());
        let s = &plan.state;
        assert_eq!(s.switch_addr.len(), 1);
        assert_eq!(s.ipv4_route.len(), 1);
        assert_eq!(s.pod_node.len(), 2);
        assert_eq!(s.service_v4.len(), 1);
        let a = s.service_v4.values().next().unwrap();
        assert_eq!(
            a.bucket_mask, 15,
            "2 × 4 per backend, raised to the minimum 16"
        );
        assert_eq!(s.lb_bucket.len(), 16);
        assert_eq!(s.backend.len(), 3);
        assert_eq!(s.cookie_check.len(), 3, "draining backend keeps its cookie");
        let draining_id = plan
            .ports
            .values()
            .next()
            .unwrap()
            .draining
            .keys()
            .next()
            .copied()
            .unwrap();
        assert!(
            s.lb_bucket.values().all(|b| *b != draining_id),
            "no buckets for draining"
        );
        assert!(s.backend.keys().all(|id| *id != 0));
    }

    #[test]
    fn replan_is_stable_and_restart_adopts() {
        let m = model_with(&[("10.244.1.5", READY), ("10.244.1.6", READY)]);
        let t0 = Instant::now();
        let mut p = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        let first = p.plan(&m, &fabric(), t0).state;
        assert_eq!(p.plan(&m, &fabric(), t0).state, first);
        // A new controller adopting the switch contents plans the same.
        let mut q = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        assert!(q.adopt(&first).is_empty());
        let again = q.plan(&m, &fabric(), t0).state;
        assert!(diff(&again, &first).is_empty());
    }

    #[test]
    fn removed_backend_id_is_quarantined() {
        let t0 = Instant::now();
        let q = Duration::from_secs(300);
        let mut p = Planner::new(BucketPolicy::default(), q);
        let s1 = p
            .plan(
                &model_with(&[("10.244.1.5", READY), ("10.244.1.6", READY)]),
                &fabric(),
                t0,
            )
            .state;
        let s2 = p
            .plan(&model_with(&[("10.244.1.5", READY)]), &fabric(), t0)
            .state;
        let gone: Vec<u32> = s1
            .backend
            .keys()
            .filter(|k| !s2.lb_bucket.values().any(|b| b == *k))
            .copied()
            .collect();
        assert_eq!(gone.len(), 1);
        // Its established flows keep their cookie through the quarantine.
        assert!(s2.backend.contains_key(&gone[0]));
        assert!(s2.cookie_check.iter().any(|(_, id)| *id == gone[0]));
        let s3 = p
            .plan(
                &model_with(&[("10.244.1.5", READY), ("10.244.1.9", READY)]),
                &fabric(),
                t0,
            )
            .state;
        assert_eq!(s3.backend.len(), 3, "new id, old one still draining");
        assert!(!s3.lb_bucket.values().any(|b| *b == gone[0]));
        assert_eq!(p.backend_id_usage(), (2, 1));
        let s4 = p
            .plan(
                &model_with(&[("10.244.1.5", READY), ("10.244.1.9", READY)]),
                &fabric(),
                t0 + q,
            )
            .state;
        assert!(
            !s4.backend.contains_key(&gone[0]),
            "expired with the quarantine"
        );
        assert!(!s4.cookie_check.iter().any(|(_, id)| *id == gone[0]));
        assert_eq!(p.backend_id_usage(), (2, 0));
    }

    #[test]
    fn no_endpoints_means_no_service_entry_but_id_kept() {
        let t0 = Instant::now();
        let mut p = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        let s1 = p.plan(&model_with(&[("10.244.1.5", READY)]), &fabric(), t0);
        let plan = p.plan(&model_with(&[]), &fabric(), t0);
        assert!(plan.state.service_v4.is_empty() && plan.state.lb_bucket.is_empty());
        let s3 = p.plan(&model_with(&[("10.244.1.5", READY)]), &fabric(), t0);
        assert_eq!(s1.state, s3.state);
    }
}
