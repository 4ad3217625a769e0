//! An in-memory object set: the YAML source fills it from files, tests and
//! the bench fill it directly.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use tokio::sync::Notify;

use crate::{
    controller::Source,
    model::{self, Model, ObjectRef},
};

/// Services, EndpointSlices and Nodes by namespace/name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Objects {
    /// Services.
    pub services: BTreeMap<ObjectRef, Service>,
    /// EndpointSlices.
    pub slices: BTreeMap<ObjectRef, EndpointSlice>,
    /// Nodes (namespace "").
    pub nodes: BTreeMap<ObjectRef, Node>,
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectRef {
    ObjectRef {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

impl Objects {
    /// Adds or replaces a Service.
    pub fn put_service(&mut self, s: Service) {
        self.services.insert(key(&s.metadata), s);
    }
    /// Adds or replaces an EndpointSlice.
    pub fn put_slice(&mut self, s: EndpointSlice) {
        self.slices.insert(key(&s.metadata), s);
    }
    /// Adds or replaces a Node.
    pub fn put_node(&mut self, n: Node) {
        self.nodes.insert(key(&n.metadata), n);
    }
}

/// A [`Source`] over an [`Objects`] behind a lock; every change pokes
/// `changed`.
#[derive(Debug, Default)]
pub struct MemorySource {
    objects: RwLock<Objects>,
    ready: std::sync::atomic::AtomicBool,
    /// Poked on every change.
    pub changed: Arc<Notify>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Replaces everything; pokes only if something changed.
    pub fn replace(&self, objects: Objects) -> bool {
        let mut o = self.objects.write().expect("poisoned");
        let first = !self.ready.swap(true, std::sync::atomic::Ordering::SeqCst);
        if *o == objects && !first {
            return false;
        }
        *o = objects;
        self.changed.notify_one();
        true
    }

    /// Edits the objects in place and pokes.
    pub fn update(&self, f: impl FnOnce(&mut Objects)) {
        f(&mut self.objects.write().expect("poisoned"));
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_one();
    }
}

impl Source for MemorySource {
    fn model(&self) -> Model {
        let o = self.objects.read().expect("poisoned");
        model::build(o.services.values(), o.slices.values(), o.nodes.values())
    }

    fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::SeqCst)
    }
}
