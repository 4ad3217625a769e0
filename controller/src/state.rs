//! Switch state as typed table entries: what the controller wants
//! (desired) or what it read back (actual). One field per P4 table.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
    ops::Bound,
};

use serde::Serialize;

use crate::types::{Backend, Ipv4Prefix, RouteAction, ServiceAction, ServiceKey};

/// Every table the controller writes, named by its P4Info name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Table {
    /// `TalariaIngress.ipv4_route`.
    Ipv4Route,
    /// `TalariaIngress.switch_addr`.
    SwitchAddr,
    /// `TalariaIngress.pod_node`.
    PodNode,
    /// `TalariaIngress.backend`.
    Backend,
    /// `TalariaIngress.cookie_check`.
    CookieCheck,
    /// `TalariaIngress.lb_bucket`.
    LbBucket,
    /// `TalariaIngress.service_v4`.
    ServiceV4,
}

impl Table {
    /// All tables, in insert order: referenced before referencing.
    pub const INSERT_ORDER: [Table; 7] = [
        Table::Ipv4Route,
        Table::SwitchAddr,
        Table::PodNode,
        Table::Backend,
        Table::CookieCheck,
        Table::LbBucket,
        Table::ServiceV4,
    ];

    /// Full P4Info name.
    pub fn p4_name(self) -> &'static str {
        match self {
            Table::Ipv4Route => "TalariaIngress.ipv4_route",
            Table::SwitchAddr => "TalariaIngress.switch_addr",
            Table::PodNode => "TalariaIngress.pod_node",
            Table::Backend => "TalariaIngress.backend",
            Table::CookieCheck => "TalariaIngress.cookie_check",
            Table::LbBucket => "TalariaIngress.lb_bucket",
            Table::ServiceV4 => "TalariaIngress.service_v4",
        }
    }

    /// Short name (`service_v4`), as used in the REST paths.
    pub fn short_name(self) -> &'static str {
        self.p4_name().rsplit('.').next().unwrap_or_default()
    }

    /// Parses a short or full name.
    pub fn from_name(s: &str) -> Option<Table> {
        Self::INSERT_ORDER
            .into_iter()
            .find(|t| t.short_name() == s || t.p4_name() == s)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// One table entry, key and action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "table", rename_all = "snake_case")]
pub enum Entry {
    /// `ipv4_route`: prefix → forward/drop.
    Ipv4Route {
        /// LPM key.
        prefix: Ipv4Prefix,
        /// Action.
        action: RouteAction,
    },
    /// `switch_addr`: the switch's tunnel address → terminate_tunnel.
    SwitchAddr {
        /// Exact key.
        addr: Ipv4Addr,
    },
    /// `pod_node`: pod CIDR → set_client_node(node_ip).
    PodNode {
        /// LPM key.
        prefix: Ipv4Prefix,
        /// Node InternalIP.
        node_ip: Ipv4Addr,
    },
    /// `backend`: backend id → set_backend(ip, port, node_ip).
    Backend {
        /// Exact key.
        backend_id: u32,
        /// Action data.
        backend: Backend,
    },
    /// `cookie_check`: (service id, backend id) → cookie_valid.
    CookieCheck {
        /// Key part 1.
        service_id: u16,
        /// Key part 2.
        backend_id: u32,
    },
    /// `lb_bucket`: (service id, bucket) → select_backend(backend id).
    LbBucket {
        /// Key part 1.
        service_id: u16,
        /// Key part 2.
        bucket: u16,
        /// Action data.
        backend_id: u32,
    },
    /// `service_v4`: (vip, port, proto) → set_service(...).
    ServiceV4 {
        /// Key.
        key: ServiceKey,
        /// Action data.
        action: ServiceAction,
    },
}

/// The match key of an entry, ordered as the tables order their keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKey {
    /// `ipv4_route`.
    Ipv4Route(Ipv4Prefix),
    /// `switch_addr`.
    SwitchAddr(Ipv4Addr),
    /// `pod_node`.
    PodNode(Ipv4Prefix),
    /// `backend`.
    Backend(u32),
    /// `cookie_check`: (service id, backend id).
    CookieCheck(u16, u32),
    /// `lb_bucket`: (service id, bucket).
    LbBucket(u16, u16),
    /// `service_v4`.
    ServiceV4(ServiceKey),
}

impl Entry {
    /// The match key.
    pub fn key(&self) -> EntryKey {
        match *self {
            Entry::Ipv4Route { prefix, .. } => EntryKey::Ipv4Route(prefix),
            Entry::SwitchAddr { addr } => EntryKey::SwitchAddr(addr),
            Entry::PodNode { prefix, .. } => EntryKey::PodNode(prefix),
            Entry::Backend { backend_id, .. } => EntryKey::Backend(backend_id),
            Entry::CookieCheck {
                service_id,
                backend_id,
            } => EntryKey::CookieCheck(service_id, backend_id),
            Entry::LbBucket {
                service_id, bucket, ..
            } => EntryKey::LbBucket(service_id, bucket),
            Entry::ServiceV4 { key, .. } => EntryKey::ServiceV4(key),
        }
    }

    /// The table this entry belongs to.
    pub fn table(&self) -> Table {
        match self {
            Entry::Ipv4Route { .. } => Table::Ipv4Route,
            Entry::SwitchAddr { .. } => Table::SwitchAddr,
            Entry::PodNode { .. } => Table::PodNode,
            Entry::Backend { .. } => Table::Backend,
            Entry::CookieCheck { .. } => Table::CookieCheck,
            Entry::LbBucket { .. } => Table::LbBucket,
            Entry::ServiceV4 { .. } => Table::ServiceV4,
        }
    }
}

/// The contents of all controller-owned tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SwitchState {
    /// `ipv4_route`.
    pub ipv4_route: BTreeMap<Ipv4Prefix, RouteAction>,
    /// `switch_addr`.
    pub switch_addr: BTreeSet<Ipv4Addr>,
    /// `pod_node`.
    pub pod_node: BTreeMap<Ipv4Prefix, Ipv4Addr>,
    /// `backend`.
    pub backend: BTreeMap<u32, Backend>,
    /// `cookie_check`.
    pub cookie_check: BTreeSet<(u16, u32)>,
    /// `lb_bucket`: (service id, bucket) → backend id.
    pub lb_bucket: BTreeMap<(u16, u16), u32>,
    /// `service_v4`.
    pub service_v4: BTreeMap<ServiceKey, ServiceAction>,
}

/// The range of `map` after `from` (all of it for `None`), as entries.
fn map_after<'a, K: Ord + Copy + 'a, V: Copy + 'a>(
    map: &'a BTreeMap<K, V>,
    from: Option<K>,
    entry: impl Fn(K, V) -> Entry + 'a,
) -> Box<dyn Iterator<Item = Entry> + 'a> {
    let lower = from.map_or(Bound::Unbounded, Bound::Excluded);
    Box::new(
        map.range((lower, Bound::Unbounded))
            .map(move |(k, v)| entry(*k, *v)),
    )
}

/// [`map_after`] for the tables whose actions have no data.
fn set_after<'a, K: Ord + Copy + 'a>(
    set: &'a BTreeSet<K>,
    from: Option<K>,
    entry: impl Fn(K) -> Entry + 'a,
) -> Box<dyn Iterator<Item = Entry> + 'a> {
    let lower = from.map_or(Bound::Unbounded, Bound::Excluded);
    Box::new(set.range((lower, Bound::Unbounded)).map(move |k| entry(*k)))
}

impl SwitchState {
    /// Adds an entry (replacing one with the same key).
    pub fn insert(&mut self, e: Entry) {
        match e {
            Entry::Ipv4Route { prefix, action } => {
                self.ipv4_route.insert(prefix, action);
            }
            Entry::SwitchAddr { addr } => {
                self.switch_addr.insert(addr);
            }
            Entry::PodNode { prefix, node_ip } => {
                self.pod_node.insert(prefix, node_ip);
            }
            Entry::Backend {
                backend_id,
                backend,
            } => {
                self.backend.insert(backend_id, backend);
            }
            Entry::CookieCheck {
                service_id,
                backend_id,
            } => {
                self.cookie_check.insert((service_id, backend_id));
            }
            Entry::LbBucket {
                service_id,
                bucket,
                backend_id,
            } => {
                self.lb_bucket.insert((service_id, bucket), backend_id);
            }
            Entry::ServiceV4 { key, action } => {
                self.service_v4.insert(key, action);
            }
        }
    }

    /// Removes the entry with `e`'s key.
    pub fn remove(&mut self, e: &Entry) {
        match e {
            Entry::Ipv4Route { prefix, .. } => {
                self.ipv4_route.remove(prefix);
            }
            Entry::SwitchAddr { addr } => {
                self.switch_addr.remove(addr);
            }
            Entry::PodNode { prefix, .. } => {
                self.pod_node.remove(prefix);
            }
            Entry::Backend { backend_id, .. } => {
                self.backend.remove(backend_id);
            }
            Entry::CookieCheck {
                service_id,
                backend_id,
            } => {
                self.cookie_check.remove(&(*service_id, *backend_id));
            }
            Entry::LbBucket {
                service_id, bucket, ..
            } => {
                self.lb_bucket.remove(&(*service_id, *bucket));
            }
            Entry::ServiceV4 { key, .. } => {
                self.service_v4.remove(key);
            }
        }
    }

    /// Applies a diff's updates, as the switch would.
    pub fn apply(&mut self, batches: &[crate::diff::Batch]) {
        for b in batches {
            for e in &b.entries {
                match b.op {
                    crate::diff::Op::Delete => self.remove(e),
                    _ => self.insert(*e),
                }
            }
        }
    }

    /// Entries of table `t` in key order, starting after `after` (an entry
    /// of the same table; only its key counts).
    pub fn entries_after<'a>(
        &'a self,
        t: Table,
        after: Option<&Entry>,
    ) -> Box<dyn Iterator<Item = Entry> + 'a> {
        let key = after.map(Entry::key);
        match t {
            Table::Ipv4Route => {
                let from = key.and_then(|k| match k {
                    EntryKey::Ipv4Route(p) => Some(p),
                    _ => None,
                });
                map_after(&self.ipv4_route, from, |prefix, action| Entry::Ipv4Route {
                    prefix,
                    action,
                })
            }
            Table::SwitchAddr => {
                let from = key.and_then(|k| match k {
                    EntryKey::SwitchAddr(a) => Some(a),
                    _ => None,
                });
                set_after(&self.switch_addr, from, |addr| Entry::SwitchAddr { addr })
            }
            Table::PodNode => {
                let from = key.and_then(|k| match k {
                    EntryKey::PodNode(p) => Some(p),
                    _ => None,
                });
                map_after(&self.pod_node, from, |prefix, node_ip| Entry::PodNode {
                    prefix,
                    node_ip,
                })
            }
            Table::Backend => {
                let from = key.and_then(|k| match k {
                    EntryKey::Backend(id) => Some(id),
                    _ => None,
                });
                map_after(&self.backend, from, |backend_id, backend| Entry::Backend {
                    backend_id,
                    backend,
                })
            }
            Table::CookieCheck => {
                let from = key.and_then(|k| match k {
                    EntryKey::CookieCheck(s, b) => Some((s, b)),
                    _ => None,
                });
                set_after(&self.cookie_check, from, |(service_id, backend_id)| {
                    Entry::CookieCheck {
                        service_id,
                        backend_id,
                    }
                })
            }
            Table::LbBucket => {
                let from = key.and_then(|k| match k {
                    EntryKey::LbBucket(s, b) => Some((s, b)),
                    _ => None,
                });
                map_after(&self.lb_bucket, from, |(service_id, bucket), backend_id| {
                    Entry::LbBucket {
                        service_id,
                        bucket,
                        backend_id,
                    }
                })
            }
            Table::ServiceV4 => {
                let from = key.and_then(|k| match k {
                    EntryKey::ServiceV4(k) => Some(k),
                    _ => None,
                });
                map_after(&self.service_v4, from, |key, action| Entry::ServiceV4 {
                    key,
                    action,
                })
            }
        }
    }

    /// Rebuilds the big maps in one pass, so their nodes are full: maps
    /// filled by scattered inserts are about half empty.
    pub fn compact(&mut self) {
        self.lb_bucket = std::mem::take(&mut self.lb_bucket).into_iter().collect();
        self.cookie_check = std::mem::take(&mut self.cookie_check).into_iter().collect();
        self.backend = std::mem::take(&mut self.backend).into_iter().collect();
    }

    /// Entries per table.
    pub fn counts(&self) -> BTreeMap<Table, usize> {
        [
            (Table::Ipv4Route, self.ipv4_route.len()),
            (Table::SwitchAddr, self.switch_addr.len()),
            (Table::PodNode, self.pod_node.len()),
            (Table::Backend, self.backend.len()),
            (Table::CookieCheck, self.cookie_check.len()),
            (Table::LbBucket, self.lb_bucket.len()),
            (Table::ServiceV4, self.service_v4.len()),
        ]
        .into()
    }

    /// Total entries.
    pub fn len(&self) -> usize {
        self.counts().values().sum()
    }

    /// True when every table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
