//! An in-memory object set: the YAML source fills it from files, tests and
//! the bench fill it directly. It records which objects changed, so the
//! controller re-evaluates only those.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, RwLock},
};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
    networking::v1::ServiceCIDR,
};
use tokio::sync::Notify;

use crate::{
    controller::Source,
    model::{self, Changes, Delta, Lookup, Model, ObjectRef},
};

/// Services, EndpointSlices, Nodes and ServiceCIDRs by namespace/name.
/// Change them through the `put_*`/`remove_*` methods: those record what
/// changed.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    services: BTreeMap<ObjectRef, Arc<Service>>,
    slices: BTreeMap<ObjectRef, Arc<EndpointSlice>>,
    nodes: BTreeMap<ObjectRef, Arc<Node>>,
    service_cidrs: BTreeMap<ObjectRef, Arc<ServiceCIDR>>,
    changes: Changes,
}

impl PartialEq for Objects {
    fn eq(&self, other: &Self) -> bool {
        self.services == other.services
            && self.slices == other.slices
            && self.nodes == other.nodes
            && self.service_cidrs == other.service_cidrs
    }
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectRef {
    ObjectRef {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// The keys whose value differs between `a` and `b` (present in one only,
/// or different).
fn changed_keys<V: PartialEq>(
    a: &BTreeMap<ObjectRef, Arc<V>>,
    b: &BTreeMap<ObjectRef, Arc<V>>,
) -> impl Iterator<Item = ObjectRef> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            Some(w) if Arc::ptr_eq(v, w) || v == w => {}
            _ => out.push(k.clone()),
        }
    }
    out.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
    out.into_iter()
}

impl Objects {
    /// Adds or replaces a Service.
    pub fn put_service(&mut self, s: Service) {
        let k = key(&s.metadata);
        self.changes.services.insert(k.clone());
        self.services.insert(k, Arc::new(s));
    }
    /// Adds or replaces an EndpointSlice.
    pub fn put_slice(&mut self, s: EndpointSlice) {
        let k = key(&s.metadata);
        self.changes.slices.insert(k.clone());
        self.slices.insert(k, Arc::new(s));
    }
    /// Adds or replaces a Node.
    pub fn put_node(&mut self, n: Node) {
        self.changes.nodes = true;
        self.nodes.insert(key(&n.metadata), Arc::new(n));
    }
    /// Adds or replaces a ServiceCIDR.
    pub fn put_service_cidr(&mut self, c: ServiceCIDR) {
        self.changes.service_cidrs = true;
        self.service_cidrs.insert(key(&c.metadata), Arc::new(c));
    }
    /// Removes a Service.
    pub fn remove_service(&mut self, r: &ObjectRef) {
        if self.services.remove(r).is_some() {
            self.changes.services.insert(r.clone());
        }
    }
    /// Removes an EndpointSlice.
    pub fn remove_slice(&mut self, r: &ObjectRef) {
        if self.slices.remove(r).is_some() {
            self.changes.slices.insert(r.clone());
        }
    }
    /// Removes a Node.
    pub fn remove_node(&mut self, r: &ObjectRef) {
        if self.nodes.remove(r).is_some() {
            self.changes.nodes = true;
        }
    }
    /// Adds every object of `other`, shared rather than copied; an object
    /// of the same namespace/name is replaced.
    pub fn extend(&mut self, other: &Objects) {
        for (k, v) in &other.services {
            self.changes.services.insert(k.clone());
            self.services.insert(k.clone(), Arc::clone(v));
        }
        for (k, v) in &other.slices {
            self.changes.slices.insert(k.clone());
            self.slices.insert(k.clone(), Arc::clone(v));
        }
        if !other.nodes.is_empty() {
            self.changes.nodes = true;
        }
        for (k, v) in &other.nodes {
            self.nodes.insert(k.clone(), Arc::clone(v));
        }
        if !other.service_cidrs.is_empty() {
            self.changes.service_cidrs = true;
        }
        for (k, v) in &other.service_cidrs {
            self.service_cidrs.insert(k.clone(), Arc::clone(v));
        }
    }
    /// Removes a ServiceCIDR.
    pub fn remove_service_cidr(&mut self, r: &ObjectRef) {
        if self.service_cidrs.remove(r).is_some() {
            self.changes.service_cidrs = true;
        }
    }
    /// Services.
    pub fn services(&self) -> &BTreeMap<ObjectRef, Arc<Service>> {
        &self.services
    }
    /// EndpointSlices.
    pub fn slices(&self) -> &BTreeMap<ObjectRef, Arc<EndpointSlice>> {
        &self.slices
    }
    /// Nodes (namespace "").
    pub fn nodes(&self) -> &BTreeMap<ObjectRef, Arc<Node>> {
        &self.nodes
    }
    /// ServiceCIDRs (namespace "").
    pub fn service_cidrs(&self) -> &BTreeMap<ObjectRef, Arc<ServiceCIDR>> {
        &self.service_cidrs
    }

    /// What differs from `old` to `self`.
    fn changes_from(&self, old: &Objects) -> Changes {
        Changes {
            all: false,
            nodes: changed_keys(&old.nodes, &self.nodes).next().is_some(),
            services: changed_keys(&old.services, &self.services).collect(),
            slices: changed_keys(&old.slices, &self.slices).collect(),
            service_cidrs: changed_keys(&old.service_cidrs, &self.service_cidrs)
                .next()
                .is_some(),
        }
    }

    /// Builds a model of everything.
    pub fn model(&self) -> Model {
        let mut m = model::build(
            self.services.values().map(AsRef::as_ref),
            self.slices.values().map(AsRef::as_ref),
            self.nodes.values().map(AsRef::as_ref),
        );
        m.set_service_cidrs(self.service_cidrs.values().map(AsRef::as_ref));
        m
    }

    fn rebuild(&self, m: &mut Model) {
        m.rebuild(
            self.services.values().map(AsRef::as_ref),
            self.slices.values().map(AsRef::as_ref),
            self.nodes.values().map(AsRef::as_ref),
        );
    }
}

impl Lookup for Objects {
    fn service(&self, r: &ObjectRef) -> Option<Arc<Service>> {
        self.services.get(r).cloned()
    }
    fn slice(&self, r: &ObjectRef) -> Option<Arc<EndpointSlice>> {
        self.slices.get(r).cloned()
    }
    fn service_cidrs(&self) -> Vec<Arc<ServiceCIDR>> {
        self.service_cidrs.values().cloned().collect()
    }
}

/// A [`Source`] over an [`Objects`] behind a lock; every change pokes
/// `changed`.
#[derive(Debug, Default)]
pub struct MemorySource {
    objects: RwLock<Objects>,
    /// Changes not yet taken by [`Source::update_model`]; starts as "all".
    pending: Mutex<Changes>,
    ready: std::sync::atomic::AtomicBool,
    /// Poked on every change.
    pub changed: Arc<Notify>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Arc<Self> {
        let s = Self::default();
        s.pending.lock().expect("poisoned").all = true;
        Arc::new(s)
    }

    /// Replaces everything; pokes only if something changed.
    pub fn replace(&self, mut objects: Objects) -> bool {
        let mut o = self.objects.write().expect("poisoned");
        let first = !self.ready.swap(true, std::sync::atomic::Ordering::SeqCst);
        let changes = objects.changes_from(&o);
        if changes.is_empty() && !first {
            return false;
        }
        objects.changes = Changes::default();
        *o = objects;
        self.pending.lock().expect("poisoned").merge(changes);
        self.changed.notify_one();
        true
    }

    /// Edits the objects in place (through the recording methods) and pokes.
    pub fn update(&self, f: impl FnOnce(&mut Objects)) {
        let mut o = self.objects.write().expect("poisoned");
        f(&mut o);
        let changes = std::mem::take(&mut o.changes);
        self.pending.lock().expect("poisoned").merge(changes);
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_one();
    }
}

impl Source for MemorySource {
    fn model(&self) -> Model {
        self.objects.read().expect("poisoned").model()
    }

    fn update_model(&self, model: &mut Model, full: bool) -> Delta {
        let o = self.objects.read().expect("poisoned");
        let mut changes = std::mem::take(&mut *self.pending.lock().expect("poisoned"));
        changes.all |= full;
        model.apply(&changes, &*o, |m| o.rebuild(m))
    }

    fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::SeqCst)
    }
}
