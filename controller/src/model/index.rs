//! The incremental side of the model: each object's last evaluation, who
//! claims which switch key, and how a change to one object updates the
//! ports and views without re-evaluating the rest.

use std::collections::{BTreeMap, BTreeSet};

use super::{kube_proxy::SliceInfo, skip, Model, ObjectRef, ServicePort, ServiceView, Skipped};
use crate::types::ServiceKey;

/// A slice after evaluation: the Service it feeds (from its label) and
/// what it contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SliceEntry {
    /// The Service named by the `kubernetes.io/service-name` label.
    pub(super) service: Option<ObjectRef>,
    /// Ports and endpoints (empty when skipped).
    pub(super) info: SliceInfo,
    /// What was skipped in it.
    pub(super) skipped: Vec<Skipped>,
}

/// A Service after evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ServiceEntry {
    /// Every data-path port it asks for, in spec order; it gets the keys it
    /// owns (see [`Index::claims`]).
    pub(super) candidates: Vec<ServicePort>,
    /// What was skipped in it, apart from `duplicate_key`.
    pub(super) skipped: Vec<Skipped>,
    /// `duplicate_key` skips from the last key resolution.
    pub(super) duplicates: Vec<Skipped>,
    /// Protocols of the ports refused for their protocol, one per port.
    pub(super) unsupported: Vec<String>,
}

/// The incremental side of the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Index {
    pub(super) node_skipped: Vec<Skipped>,
    /// What was skipped in the ServiceCIDRs.
    pub(super) cidr_skipped: Vec<Skipped>,
    pub(super) slices: BTreeMap<ObjectRef, SliceEntry>,
    /// Service → the slices labelled with its name.
    by_service: BTreeMap<ObjectRef, VecSet<ObjectRef>>,
    pub(super) services: BTreeMap<ObjectRef, ServiceEntry>,
    /// Key → the Services asking for it. The smallest namespace/name that
    /// asks for it as a ClusterIP owns it, else the smallest of all
    /// (independent of list order, so an incremental update resolves a
    /// conflict exactly as a full build does; see [`Index::owner`]).
    claims: BTreeMap<ServiceKey, VecSet<ObjectRef>>,
}

/// A sorted set in one `Vec`. The index's sets nearly always hold one
/// element, where a `BTreeSet` allocates a node for eleven: at 10k
/// Services that is megabytes of empty slots.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VecSet<T>(Vec<T>);

impl<T> Default for VecSet<T> {
    fn default() -> Self {
        VecSet(Vec::new())
    }
}

impl<T: Ord> VecSet<T> {
    fn insert(&mut self, v: T) {
        if let Err(i) = self.0.binary_search(&v) {
            self.0.insert(i, v);
        }
    }
    fn remove(&mut self, v: &T) {
        if let Ok(i) = self.0.binary_search(v) {
            self.0.remove(i);
        }
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a, T> IntoIterator for &'a VecSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Index {
    /// Who owns `key`, and its port: the first claimant of the first
    /// [`Frontend`](super::Frontend) kind asking for it (see
    /// [`Index::claims`]).
    fn owner(&self, key: &ServiceKey) -> Option<(&ObjectRef, &ServicePort)> {
        let port_of = |r: &ObjectRef| {
            let e = self.services.get(r)?;
            e.candidates.iter().find(|p| p.key == *key)
        };
        self.claims
            .get(key)?
            .into_iter()
            .filter_map(|r| Some((r, port_of(r)?)))
            .min_by_key(|(_, p)| p.frontend)
    }
}

impl Model {
    pub(super) fn slice_infos(&self, service: &ObjectRef) -> Vec<SliceInfo> {
        self.index
            .by_service
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|s| self.index.slices.get(s))
            .map(|e| e.info.clone())
            .collect()
    }

    pub(super) fn put_slice_entry(&mut self, r: ObjectRef, entry: Option<SliceEntry>) {
        if let Some(old) = self.index.slices.remove(&r) {
            if let Some(svc) = &old.service {
                if let Some(set) = self.index.by_service.get_mut(svc) {
                    set.remove(&r);
                    if set.is_empty() {
                        self.index.by_service.remove(svc);
                    }
                }
            }
        }
        if let Some(e) = entry {
            if let Some(svc) = &e.service {
                self.index
                    .by_service
                    .entry(svc.clone())
                    .or_default()
                    .insert(r.clone());
            }
            self.index.slices.insert(r, e);
        }
    }

    /// Replaces a Service's evaluation; `keys` collects every key it asked
    /// for before or after (their owner may change).
    pub(super) fn put_service_entry(
        &mut self,
        r: ObjectRef,
        view: Option<ServiceView>,
        entry: Option<ServiceEntry>,
        keys: &mut BTreeSet<ServiceKey>,
    ) {
        if let Some(old) = self.index.services.remove(&r) {
            for p in &old.candidates {
                keys.insert(p.key);
                if let Some(c) = self.index.claims.get_mut(&p.key) {
                    c.remove(&r);
                    if c.is_empty() {
                        self.index.claims.remove(&p.key);
                    }
                }
            }
        }
        self.services.remove(&r);
        self.health_checks.remove(&r);
        if let Some(v) = view {
            if let Some(hc) = &v.health_check {
                self.health_checks.insert(r.clone(), hc.clone());
            }
            self.services.insert(r.clone(), v);
        }
        if let Some(e) = entry {
            for p in &e.candidates {
                keys.insert(p.key);
                self.index
                    .claims
                    .entry(p.key)
                    .or_default()
                    .insert(r.clone());
            }
            self.index.services.insert(r, e);
        }
    }

    /// Settles the owner of each of `keys`, updates `ports` and the views
    /// and duplicate notes of every Service involved. Returns the keys whose
    /// port changed.
    pub(super) fn resolve(&mut self, keys: &BTreeSet<ServiceKey>) -> BTreeSet<ServiceKey> {
        let mut changed = BTreeSet::new();
        let mut involved = BTreeSet::new();
        for key in keys {
            involved.extend(self.index.claims.get(key).into_iter().flatten().cloned());
            let port = self.index.owner(key).map(|(_, p)| p.clone());
            let old = match port {
                Some(p) => self.ports.insert(*key, p),
                None => self.ports.remove(key),
            };
            if old.as_ref() != self.ports.get(key) {
                changed.insert(*key);
            }
        }
        for r in involved {
            let Some(e) = self.index.services.get(&r) else {
                continue;
            };
            let mut owned = Vec::new();
            let mut duplicates = Vec::new();
            for p in &e.candidates {
                let owner = self.index.owner(&p.key).map(|(o, _)| o);
                if owner == Some(&r) && !owned.contains(&p.key) {
                    owned.push(p.key);
                } else {
                    let owner = owner.map(ToString::to_string).unwrap_or_default();
                    skip(
                        &mut duplicates,
                        "Service",
                        &r,
                        "duplicate_key",
                        format!("{} already served by {owner}", p.key),
                    );
                }
            }
            if let Some(e) = self.index.services.get_mut(&r) {
                e.duplicates = duplicates;
            }
            if let Some(v) = self.services.get_mut(&r) {
                v.keys = owned;
            }
        }
        changed
    }

    pub(super) fn collect_skipped(&mut self) {
        let i = &self.index;
        let mut v: Vec<Skipped> = i
            .node_skipped
            .iter()
            .chain(&i.cidr_skipped)
            .chain(i.slices.values().flat_map(|e| &e.skipped))
            .chain(
                i.services
                    .values()
                    .flat_map(|e| e.skipped.iter().chain(&e.duplicates)),
            )
            .cloned()
            .collect();
        v.sort();
        v.dedup();
        self.skipped = v;
        let mut unsupported = BTreeMap::new();
        for p in i.services.values().flat_map(|e| &e.unsupported) {
            *unsupported.entry(p.clone()).or_default() += 1;
        }
        self.unsupported_ports = unsupported;
    }
}
