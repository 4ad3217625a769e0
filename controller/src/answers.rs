//! What node agents read from `/v1/services`: every Service's report, kept
//! serialised with the plan version it last changed at. A long poll that
//! names the version (and epoch) it holds is answered with only the
//! Services that changed after it and those removed since: at 10,000
//! Services the whole answer is megabytes, a new Service a few hundred
//! bytes, and every node reads it on every change.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::body::Bytes;
use serde::Serialize;

use crate::{
    model::{Model, ObjectRef, ServiceView},
    plan::{Desired, PlannedPort},
    types::ServiceKey,
};

/// A Service with what the controller programmed for it.
#[derive(Debug, Serialize)]
pub struct ServiceReport {
    /// The model's view (ports, notes, …).
    #[serde(flatten)]
    pub view: ServiceView,
    /// Per data-path port: ids, buckets and backends.
    pub data_path: Vec<PlannedPort>,
}

impl ServiceReport {
    /// `view` with the plan of each of its data-path ports.
    pub fn new(desired: &Desired, view: &ServiceView) -> Self {
        Self {
            view: view.clone(),
            data_path: view
                .keys
                .iter()
                .filter_map(|k| desired.port(k).map(|p| p.view()))
                .collect(),
        }
    }
}

/// Tombstones kept for deltas; past this many, every agent behind gets a
/// full answer once instead.
const MAX_REMOVED: usize = 65_536;

/// One Service's report as last serialised.
#[derive(Debug)]
struct Fragment {
    /// The plan version at which `json` last changed.
    changed: u64,
    json: Bytes,
    /// Its data-path ports, to find it again when one of them changes.
    keys: Vec<ServiceKey>,
}

/// The node agents' view of the plan, kept up to date per Service.
#[derive(Debug)]
pub struct NodeAnswers {
    /// Random per controller process: another process's versions (or this
    /// one's before a restart) mean nothing here.
    epoch: u64,
    reports: BTreeMap<ObjectRef, Fragment>,
    /// Removed Services, with the version they went at.
    removed: BTreeMap<ObjectRef, u64>,
    /// Which Service each data-path port belongs to in `reports`.
    owners: HashMap<ServiceKey, ObjectRef>,
    /// Deltas are given after this version or a later one; an agent that
    /// holds an older one gets everything.
    horizon: u64,
}

impl Default for NodeAnswers {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        Self {
            // RandomState is seeded from the OS per process.
            epoch: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            reports: BTreeMap::new(),
            removed: BTreeMap::new(),
            owners: HashMap::new(),
            horizon: 0,
        }
    }
}

/// A `/v1/services` answer to a node agent.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Every Service: a JSON array of [`ServiceReport`]s.
    Full(Bytes),
    /// What changed after the version the agent holds: a JSON object,
    /// `{"services": [ServiceReport…], "removed": [{namespace, name}…]}`.
    Delta(Bytes),
}

impl NodeAnswers {
    /// This controller process's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The Services whose reports may have changed with the ports `keys`:
    /// their owners before and after.
    pub fn owners_of<'a>(
        &self,
        model: &Model,
        keys: impl IntoIterator<Item = &'a ServiceKey>,
    ) -> BTreeSet<ObjectRef> {
        let mut out = BTreeSet::new();
        for k in keys {
            out.extend(self.owners.get(k).cloned());
            out.extend(model.ports.get(k).map(|p| p.service.clone()));
        }
        out
    }

    /// Brings the reports of `touched` (every Service when `None`) up to
    /// `model` and `desired` at plan `version`. A report that serialises
    /// as before keeps its version, so a full re-plan sends nothing new.
    pub fn update(
        &mut self,
        version: u64,
        model: &Model,
        desired: &Desired,
        touched: Option<&BTreeSet<ObjectRef>>,
    ) {
        let gone: Vec<ObjectRef> = match touched {
            Some(t) => t
                .iter()
                .filter(|s| !model.services.contains_key(s))
                .cloned()
                .collect(),
            None => self
                .reports
                .keys()
                .filter(|s| !model.services.contains_key(s))
                .cloned()
                .collect(),
        };
        for s in gone {
            if let Some(f) = self.reports.remove(&s) {
                self.forget_keys(&s, &f.keys);
                self.removed.insert(s, version);
            }
        }
        let views: Box<dyn Iterator<Item = &ServiceView>> = match touched {
            Some(t) => Box::new(t.iter().filter_map(|s| model.services.get(s))),
            None => Box::new(model.services.values()),
        };
        for view in views {
            let report = ServiceReport::new(desired, view);
            let json = Bytes::from(serde_json::to_vec(&report).expect("a report serialises"));
            let name = &view.service;
            if self.reports.get(name).is_some_and(|f| f.json == json) {
                continue;
            }
            let keys: Vec<ServiceKey> = report.data_path.iter().map(|p| p.key).collect();
            if let Some(old) = self.reports.remove(name) {
                self.forget_keys(name, &old.keys);
            }
            for k in &keys {
                self.owners.insert(*k, name.clone());
            }
            self.removed.remove(name);
            self.reports.insert(
                name.clone(),
                Fragment {
                    changed: version,
                    json,
                    keys,
                },
            );
        }
        if self.removed.len() > MAX_REMOVED {
            self.removed.clear();
            self.horizon = version;
        }
    }

    fn forget_keys(&mut self, name: &ObjectRef, keys: &[ServiceKey]) {
        for k in keys {
            if self.owners.get(k) == Some(name) {
                self.owners.remove(k);
            }
        }
    }

    /// The answer for an agent that holds `held` (epoch, version), at plan
    /// `version`: a delta when `held` is of this epoch, not older than the
    /// horizon and not newer than `version`; else everything.
    pub fn answer(&self, version: u64, held: Option<(u64, u64)>) -> Answer {
        match held {
            Some((epoch, after))
                if epoch == self.epoch && after >= self.horizon && after <= version =>
            {
                Answer::Delta(self.delta(after))
            }
            _ => Answer::Full(self.full()),
        }
    }

    fn full(&self) -> Bytes {
        let len = self
            .reports
            .values()
            .map(|f| f.json.len() + 1)
            .sum::<usize>();
        let mut body = Vec::with_capacity(len + 2);
        body.push(b'[');
        join(&mut body, self.reports.values().map(|f| &f.json[..]));
        body.push(b']');
        Bytes::from(body)
    }

    fn delta(&self, after: u64) -> Bytes {
        let mut body = b"{\"services\":[".to_vec();
        join(
            &mut body,
            self.reports
                .values()
                .filter(|f| f.changed > after)
                .map(|f| &f.json[..]),
        );
        body.extend_from_slice(b"],\"removed\":");
        let removed: Vec<&ObjectRef> = self
            .removed
            .iter()
            .filter(|(_, v)| **v > after)
            .map(|(s, _)| s)
            .collect();
        serde_json::to_writer(&mut body, &removed).expect("names serialise");
        body.push(b'}');
        Bytes::from(body)
    }
}

fn join<'a>(out: &mut Vec<u8>, parts: impl Iterator<Item = &'a [u8]>) {
    for (i, p) in parts.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(p);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    use super::*;
    use crate::{buckets::BucketPolicy, model::tests::run, plan::Planner};

    /// A Service `name` at `vip` with one endpoint at `ep`, or none.
    fn service(name: &str, vip: &str, ep: Option<&str>) -> String {
        let endpoints = match ep {
            Some(ip) => format!("[{{addresses: [{ip}], nodeName: n1}}]"),
            None => "[]".into(),
        };
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec: {{clusterIP: {vip}, selector: {{app: {name}}}, ports: [{{port: 80}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{port: 80}}]\nendpoints: {endpoints}\n---\n"
        )
    }

    fn json(b: &Bytes) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    fn names(v: &Value) -> Vec<&str> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["service"]["name"].as_str().unwrap())
            .collect()
    }

    fn delta(a: &NodeAnswers, version: u64, after: u64) -> (Vec<String>, Value) {
        match a.answer(version, Some((a.epoch(), after))) {
            Answer::Delta(b) => {
                let v = json(&b);
                let changed = names(&v["services"])
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                (changed, v["removed"].clone())
            }
            Answer::Full(_) => panic!("a full answer after {after} at {version}"),
        }
    }

    #[test]
    fn deltas_carry_what_changed_after_the_version_held() {
        let now = Instant::now();
        let mut planner = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        let mut answers = NodeAnswers::default();
        let m1 = run(&(service("web", "10.96.0.10", Some("10.244.1.5"))
            + &service("db", "10.96.0.11", Some("10.244.1.6"))));
        planner.plan_full(&m1, &Default::default(), now);
        answers.update(1, &m1, planner.desired(), None);
        let Answer::Full(full) = answers.answer(1, None) else {
            panic!("no version held: everything")
        };
        assert_eq!(names(&json(&full)), ["db", "web"]);
        assert_eq!(json(&full)[1]["data_path"][0]["key"]["vip"], "10.96.0.10");
        assert_eq!(delta(&answers, 1, 0).0, ["db", "web"]);
        assert_eq!(delta(&answers, 1, 1), (vec![], json!([])));

        // web's endpoint goes: only its ports are re-planned and sent.
        let m2 = run(&(service("web", "10.96.0.10", None)
            + &service("db", "10.96.0.11", Some("10.244.1.6"))));
        let changes = planner.replan(&m2, m1.ports.keys().copied(), now);
        let touched = answers.owners_of(&m2, &changes.keys);
        assert_eq!(touched.len(), 1);
        answers.update(2, &m2, planner.desired(), Some(&touched));
        assert_eq!(delta(&answers, 2, 1).0, ["web"]);
        assert_eq!(delta(&answers, 2, 0).0, ["db", "web"]);

        // db goes; a full update finds it gone and keeps web's version.
        let m3 = run(&service("web", "10.96.0.10", None));
        planner.plan_full(&m3, &Default::default(), now);
        answers.update(3, &m3, planner.desired(), None);
        let gone = json!([{"namespace": "default", "name": "db"}]);
        assert_eq!(delta(&answers, 3, 2), (vec![], gone.clone()));
        assert_eq!(delta(&answers, 3, 1), (vec!["web".into()], gone.clone()));
        answers.update(4, &m3, planner.desired(), None);
        assert_eq!(delta(&answers, 4, 3), (vec![], json!([])), "nothing new");

        // db comes back: no longer a tombstone.
        planner.plan_full(&m1, &Default::default(), now);
        answers.update(5, &m1, planner.desired(), None);
        assert_eq!(
            delta(&answers, 5, 2),
            (vec!["db".into(), "web".into()], json!([]))
        );

        // Another epoch's version, or one from the future: everything.
        for held in [(answers.epoch() ^ 1, 5), (answers.epoch(), 6)] {
            assert!(matches!(answers.answer(5, Some(held)), Answer::Full(_)));
        }
    }

    #[test]
    fn too_many_tombstones_send_agents_behind_a_full_answer() {
        let mut answers = NodeAnswers::default();
        let (model, desired) = (Model::default(), Desired::default());
        for i in 0..=MAX_REMOVED {
            let name = ObjectRef {
                namespace: "ns".into(),
                name: format!("s{i}"),
            };
            answers.reports.insert(
                name,
                Fragment {
                    changed: 1,
                    json: Bytes::from_static(b"{}"),
                    keys: Vec::new(),
                },
            );
        }
        answers.update(2, &model, &desired, None);
        assert!(answers.removed.is_empty());
        assert!(matches!(
            answers.answer(2, Some((answers.epoch(), 1))),
            Answer::Full(_)
        ));
        assert!(matches!(
            answers.answer(2, Some((answers.epoch(), 2))),
            Answer::Delta(_)
        ));
    }
}
