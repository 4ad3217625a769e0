//! The planner: model + fabric config + id allocation + bucket assignment →
//! the desired switch state ([`Desired`]). It keeps the ids and bucket
//! assignments from one plan to the next (that is what makes buckets
//! resilient and ids stable), and adopts them from the switch on start, so a
//! restarted controller computes exactly what the switch already holds.
//!
//! Planning is per service port: [`Planner::replan`] re-plans only the ports
//! a change touched (plus those whose departed backends' quarantine ended)
//! and reports what changed ([`PlanChanges`]); [`Planner::plan_full`]
//! re-plans every port (start, relist, Node changes, periodic safety
//! resync). Both give the same result for the same history: the full plan
//! is the incremental one over every key, plus releasing ids that nothing
//! holds (ids adopted from a switch but no longer wanted).
//!
//! The desired state is kept compact, per port ([`PortPlan`]: its bucket
//! vector and backend maps), shared with the switch tasks by `Arc`, so a
//! consistent snapshot for a full sync is cheap.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Bound,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use talaria_common::ts_cookie::{self as cookies, CookieKey};
use talaria_tables::{
    backend, backend_v6, endpoint_reply, ipv4_route, ipv6_route, lb_bucket, pod_node, pod_node_v6,
    spoofed_source, switch_addr, ts_cookie, tunnel_peer, tunnel_source, Contents, Entry, EntryKey,
    Table,
};

use crate::{
    buckets::{self, BucketPolicy},
    entries::{cookie_entry, Tables, INSERT_ORDER},
    ids::IdPool,
    model::{Frontend, Model, ObjectRef, ServicePort},
    types::{Backend, HashMode, IpPrefix, Ipv4Prefix, Mac, Proto, ServiceKey},
};

/// A static route of the fabric (`ipv4_route`, or `ipv6_route` for an IPv6
/// prefix), from the config: fabric routing is configured, not derived
/// from Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination prefix, e.g. `192.168.0.11/32` or `fd00:10:244::/48`.
    pub prefix: IpPrefix,
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
    /// `ipv4_route` entries. The route to each node's address also names
    /// the port its tunnels must come in on (`tunnel_peer`).
    pub routes: Vec<RouteConfig>,
    /// Source addresses no switch port may send from (`spoofed_source`),
    /// besides `switch_addrs`, which are always in it.
    pub spoofed_sources: Vec<Ipv4Addr>,
}

/// What the planner decided for one service port (the REST view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedPort {
    /// The Service.
    pub service: ObjectRef,
    /// Port name.
    pub port_name: String,
    /// Switch key.
    pub key: ServiceKey,
    /// What `key.vip` is: a ClusterIP, a node's address (nodePort), or an
    /// external address (`externalIPs`, LoadBalancer ingress).
    pub frontend: Frontend,
    /// Allocated service id.
    pub service_id: u16,
    /// Bucket count (0 = no backends, service entry absent).
    pub buckets: usize,
    /// Backends taking new flows, by id.
    pub active: BTreeMap<u32, Backend>,
    /// Backends keeping established flows only, by id.
    pub draining: BTreeMap<u32, Backend>,
    /// Node InternalIP → the only backend ids its clients' new flows may
    /// go to (`internalTrafficPolicy: Local`, topology hints).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub preferred: BTreeMap<Ipv4Addr, Vec<u32>>,
    /// `internalTrafficPolicy: Local`: a node not in `preferred` drops its
    /// clients' new flows.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub local_only: bool,
    /// Some backend taking flows runs no agent: the switch delivers to it
    /// plain, and the client's node restores the VIP on its replies from
    /// the flow state it records for each new flow to the port.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub agentless: bool,
    /// `sessionAffinity: ClientIP`: its `timeoutSeconds`. Each client's
    /// node keeps the backend of the client's last new flow for that
    /// long, while it stays `active` (or preferred).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity_timeout_seconds: Option<u32>,
}

/// Everything one service port's entries derive from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    /// The Service.
    pub service: ObjectRef,
    /// Port name.
    pub port_name: String,
    /// Switch key.
    pub key: ServiceKey,
    /// See [`PlannedPort::frontend`].
    pub frontend: Frontend,
    /// Allocated service id.
    pub service_id: u16,
    /// sessionAffinity → hash mode.
    pub hash_mode: HashMode,
    /// See [`PlannedPort::affinity_timeout_seconds`].
    pub affinity_timeout_secs: Option<u32>,
    /// Bucket → backend id; empty = no active backend.
    pub buckets: Vec<u32>,
    /// Backends taking new flows, by id.
    pub active: BTreeMap<u32, Backend>,
    /// Backends keeping established flows only, by id.
    pub draining: BTreeMap<u32, Backend>,
    /// Backends that left, with when: their cookies stay valid for the
    /// quarantine, as kube-proxy's conntrack keeps an established flow on a
    /// removed endpoint (the pod may still be serving).
    pub departed: BTreeMap<u32, (Backend, Instant)>,
    /// See [`PlannedPort::preferred`].
    pub preferred: BTreeMap<Ipv4Addr, Vec<u32>>,
    /// See [`PlannedPort::local_only`].
    pub local_only: bool,
}

impl PortPlan {
    /// True when the port has switch entries: it has active backends, or
    /// established flows on draining or departed ones. Without active
    /// backends its `service_v4` entry has no buckets behind it: new flows
    /// are dropped (`no_backend`) while those with a valid cookie, and
    /// their replies, go on.
    pub fn has_entries(&self) -> bool {
        !self.buckets.is_empty() || !self.draining.is_empty() || !self.departed.is_empty()
    }

    /// The `service_v4` (or, for an IPv6 VIP, `service_v6`) entry, when
    /// the port has entries.
    pub fn service_entry(&self) -> Option<Entry> {
        self.has_entries().then(|| {
            self.key.entry(
                self.service_id,
                self.buckets.len().saturating_sub(1) as u16,
                self.hash_mode.value(),
            )
        })
    }

    /// The `lb_bucket` entries from bucket `first` on.
    pub fn bucket_entries(&self, first: usize) -> impl Iterator<Item = lb_bucket::Entry> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .skip(first)
            .map(|(b, id)| lb_bucket::Entry {
                key: lb_bucket::Key {
                    service_id: self.service_id,
                    bucket: b as u16,
                },
                action: lb_bucket::Action::SelectBackend { backend_id: *id },
            })
    }

    /// Backends with `backend` and `cookie_check` entries, by ascending id
    /// (none when the port has no entries).
    pub fn entry_backends(&self) -> Vec<(u32, Backend)> {
        if !self.has_entries() {
            return Vec::new();
        }
        let mut v: Vec<(u32, Backend)> = self
            .active
            .iter()
            .chain(&self.draining)
            .map(|(id, b)| (*id, *b))
            .chain(self.departed.iter().map(|(id, (b, _))| (*id, *b)))
            .collect();
        v.sort_unstable();
        v
    }

    /// The `ts_cookie` entries, by cookie: each entry backend's cookie under
    /// each of `keys`, for a TCP port outside clients reach (a nodePort, an
    /// external address). None when some backend runs no agent: its real
    /// TSvals, unstamped, could pass for another backend's cookie. A cookie
    /// two backends share (1 in 65,536 per pair and key) names neither:
    /// their connections follow the hash, as without cookies, rather than
    /// risk going to the other one.
    pub fn ts_cookie_entries(&self, keys: &[CookieKey]) -> Vec<ts_cookie::Entry> {
        if keys.is_empty() || !self.frontend.is_outside() || self.key.proto != Proto::Tcp {
            return Vec::new();
        }
        let backends = self.entry_backends();
        if !backends.iter().all(|(_, b)| b.has_agent()) {
            return Vec::new();
        }
        let mut named: BTreeMap<u16, Option<u32>> = BTreeMap::new();
        for (id, _) in backends {
            for key in keys {
                let c = cookies::cookie(key, self.service_id, id);
                named
                    .entry(c)
                    .and_modify(|b| {
                        if *b != Some(id) {
                            *b = None;
                        }
                    })
                    .or_insert(Some(id));
            }
        }
        named
            .into_iter()
            .filter_map(|(cookie, id)| {
                Some(ts_cookie::Entry {
                    key: ts_cookie::Key {
                        service_id: self.service_id,
                        cookie,
                    },
                    action: ts_cookie::Action::TsCookieHit { backend_id: id? },
                })
            })
            .collect()
    }

    /// When the first departed backend's quarantine ends.
    fn next_expiry(&self, quarantine: Duration) -> Option<Instant> {
        self.departed
            .values()
            .map(|(_, since)| *since + quarantine)
            .min()
    }

    /// The REST view.
    pub fn view(&self) -> PlannedPort {
        PlannedPort {
            service: self.service.clone(),
            port_name: self.port_name.clone(),
            key: self.key,
            frontend: self.frontend,
            service_id: self.service_id,
            buckets: self.buckets.len(),
            active: self.active.clone(),
            draining: self.draining.clone(),
            preferred: self.preferred.clone(),
            local_only: self.local_only,
            agentless: self
                .active
                .values()
                .chain(self.draining.values())
                .any(|b| !b.has_agent()),
            affinity_timeout_seconds: self.affinity_timeout_secs,
        }
    }
}

/// A backend id's references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendRefs {
    /// The backend holding the id.
    pub backend: Backend,
    /// Ports naming it active or draining (the id is in use while > 0).
    live: u32,
    /// Ports with entries naming it (its `backend` entry exists while > 0).
    entries: u32,
}

/// The desired switch state, compact: per port plus the backend table.
/// Cloning it is cheap enough for a consistent full-sync snapshot (the
/// ports are shared).
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// The fabric tables: `ipv4_route`, `switch_addr`, `pod_node`,
    /// `tunnel_peer`, `spoofed_source` (the other tables empty).
    pub fabric: Contents,
    /// Ports by key.
    by_key: BTreeMap<ServiceKey, Arc<PortPlan>>,
    /// Ports by service id.
    by_sid: BTreeMap<u16, Arc<PortPlan>>,
    /// Backend ids in use or with entries.
    backends: BTreeMap<u32, BackendRefs>,
    /// `endpoint_reply`: for each endpoint without an agent (by the port
    /// its replies come in on, address, port, protocol), the cookies of
    /// every service port with entries naming it. The lowest service id's
    /// is written; more than one is a conflict ([`Planner::errors`]).
    endpoint_replies: BTreeMap<endpoint_reply::Key, BTreeSet<(u16, u32)>>,
    /// The fabric's routes, which give those ports.
    routes: Vec<RouteConfig>,
    /// The timestamp-cookie keys, current first: `ts_cookie` holds each
    /// port's cookies under all of them.
    ts_cookie_keys: Arc<[CookieKey]>,
}

impl Desired {
    /// The port planned for `key`.
    pub fn port(&self, key: &ServiceKey) -> Option<&PortPlan> {
        self.by_key.get(key).map(AsRef::as_ref)
    }

    /// The port holding service id `sid`.
    pub fn port_by_sid(&self, sid: u16) -> Option<&PortPlan> {
        self.by_sid.get(&sid).map(AsRef::as_ref)
    }

    /// Every planned port, by key.
    pub fn ports(&self) -> impl Iterator<Item = &PortPlan> {
        self.by_key.values().map(AsRef::as_ref)
    }

    /// The desired `backend` entry for `id`.
    pub fn backend(&self, id: u32) -> Option<Backend> {
        self.backends
            .get(&id)
            .filter(|r| r.entries > 0)
            .map(|r| r.backend)
    }

    /// The `ts_cookie` entries of port `p`.
    pub fn ts_cookie_entries(&self, p: &PortPlan) -> Vec<ts_cookie::Entry> {
        p.ts_cookie_entries(&self.ts_cookie_keys)
    }

    /// The `endpoint_reply` entries `p` asks for: one per backend without
    /// an agent that the fabric routes to.
    fn endpoint_reply_keys(
        &self,
        p: &PortPlan,
    ) -> impl Iterator<Item = (endpoint_reply::Key, (u16, u32))> + '_ {
        let (sid, proto) = (p.service_id, p.key.proto.number());
        p.entry_backends()
            .into_iter()
            .filter(|(_, b)| !b.has_agent())
            .filter_map(move |(id, b)| {
                // IPv4 only: the model skips IPv6 endpoints without an agent.
                let IpAddr::V4(ip) = b.ip else {
                    return None;
                };
                let port = route_port(&self.routes, ip)?;
                let key = endpoint_reply::Key {
                    port,
                    endpoint_addr: ip,
                    endpoint_port: b.port,
                    proto,
                };
                Some((key, (sid, id)))
            })
    }

    fn add_endpoint_replies(&mut self, p: &PortPlan) {
        let add: Vec<_> = self.endpoint_reply_keys(p).collect();
        for (k, cookie) in add {
            self.endpoint_replies.entry(k).or_default().insert(cookie);
        }
    }

    fn remove_endpoint_replies(&mut self, p: &PortPlan) {
        let gone: Vec<_> = self.endpoint_reply_keys(p).collect();
        for (k, cookie) in gone {
            if let Some(set) = self.endpoint_replies.get_mut(&k) {
                set.remove(&cookie);
                if set.is_empty() {
                    self.endpoint_replies.remove(&k);
                }
            }
        }
    }

    /// New routes: the ports of every `endpoint_reply` entry again.
    fn set_routes(&mut self, routes: &[RouteConfig]) {
        if self.routes == routes {
            return;
        }
        self.routes = routes.to_vec();
        self.endpoint_replies.clear();
        let ports: Vec<Arc<PortPlan>> = self.by_key.values().cloned().collect();
        for p in ports {
            self.add_endpoint_replies(&p);
        }
    }

    /// The `endpoint_reply` entries from `from` on.
    fn endpoint_reply_entries(
        &self,
        from: Bound<endpoint_reply::Key>,
    ) -> impl Iterator<Item = Entry> + '_ {
        self.endpoint_replies
            .range((from, Bound::Unbounded))
            .filter_map(|(k, cookies)| {
                let (service_id, backend_id) = *cookies.first()?;
                Some(
                    endpoint_reply::Entry {
                        key: *k,
                        action: endpoint_reply::Action::SetEndpointReply {
                            service_id,
                            backend_id,
                        },
                    }
                    .into(),
                )
            })
    }

    /// Endpoints without an agent that several service ports share: the
    /// switch can tunnel their replies with one cookie only, so clients
    /// of the others get them from the endpoint's own address.
    fn endpoint_conflicts(&self) -> impl Iterator<Item = String> + '_ {
        self.endpoint_replies
            .iter()
            .filter(|(_, c)| c.len() > 1)
            .map(|(k, c)| {
                let sids: Vec<String> = c.iter().map(|(s, _)| s.to_string()).collect();
                format!(
                    "endpoint {}:{} (protocol {}) serves service ids {}: its replies name the first only",
                    k.endpoint_addr,
                    k.endpoint_port,
                    k.proto,
                    sids.join(", ")
                )
            })
    }

    /// Entries per table.
    pub fn counts(&self) -> BTreeMap<Table, usize> {
        let mut c = self.fabric.counts();
        c.insert(Table::EndpointReply, self.endpoint_replies.len());
        let with = || self.by_key.values().filter(|p| p.has_entries());
        c.insert(
            Table::ServiceV4,
            with().filter(|p| p.key.vip.is_ipv4()).count(),
        );
        c.insert(
            Table::ServiceV6,
            with().filter(|p| p.key.vip.is_ipv6()).count(),
        );
        c.insert(Table::LbBucket, with().map(|p| p.buckets.len()).sum());
        c.insert(
            Table::CookieCheck,
            with()
                .map(|p| p.active.len() + p.draining.len() + p.departed.len())
                .sum(),
        );
        c.insert(
            Table::TsCookie,
            with().map(|p| self.ts_cookie_entries(p).len()).sum(),
        );
        let backends = |table| {
            self.backends
                .values()
                .filter(|r| r.entries > 0 && r.backend.table() == table)
                .count()
        };
        c.insert(
            Table::Backend,
            self.fabric.backend.len() + backends(Table::Backend),
        );
        c.insert(
            Table::BackendV6,
            self.fabric.backend_v6.len() + backends(Table::BackendV6),
        );
        c
    }

    /// Total entries.
    pub fn len(&self) -> usize {
        self.counts().values().sum()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole desired state as tables (tests, tools: this is the big
    /// representation the controller otherwise avoids).
    pub fn state(&self) -> Contents {
        let mut s = Contents::default();
        for t in INSERT_ORDER {
            for e in self.entries_after(t, None) {
                s.insert(e);
            }
        }
        s
    }
}

impl Tables for Desired {
    fn entries_after<'a>(
        &'a self,
        t: Table,
        after: Option<&EntryKey>,
    ) -> Box<dyn Iterator<Item = Entry> + 'a> {
        match (t, after) {
            (
                Table::Ipv4Route
                | Table::Ipv6Route
                | Table::SwitchAddr
                | Table::PodNode
                | Table::TunnelPeer
                | Table::TunnelSource
                | Table::SpoofedSource
                | Table::PodNodeV6,
                _,
            ) => self.fabric.entries_after(t, after),
            (Table::EndpointReply, after) => {
                let from = match after {
                    Some(EntryKey::EndpointReply(k)) => Bound::Excluded(*k),
                    _ => Bound::Unbounded,
                };
                Box::new(self.endpoint_reply_entries(from))
            }
            // One id space, two tables: each backend in its family's.
            (Table::Backend | Table::BackendV6, after) => {
                let from = match after {
                    Some(EntryKey::Backend(k)) => Bound::Excluded(k.backend_id),
                    Some(EntryKey::BackendV6(k)) => Bound::Excluded(k.backend_id),
                    _ => Bound::Unbounded,
                };
                Box::new(
                    self.backends
                        .range((from, Bound::Unbounded))
                        .filter(move |(_, r)| r.entries > 0 && r.backend.table() == t)
                        .map(|(id, r)| r.backend.entry(*id)),
                )
            }
            (Table::CookieCheck, after) => {
                let (sid, after) = match after {
                    Some(EntryKey::CookieCheck(k)) => (
                        Bound::Included(k.service_id),
                        Some((k.service_id, k.backend_id)),
                    ),
                    _ => (Bound::Unbounded, None),
                };
                Box::new(
                    self.by_sid
                        .range((sid, Bound::Unbounded))
                        .flat_map(|(s, p)| {
                            p.entry_backends().into_iter().map(move |(id, _)| (*s, id))
                        })
                        .filter(move |k| after.is_none_or(|a| *k > a))
                        .map(|(s, id)| cookie_entry(s, id)),
                )
            }
            (Table::TsCookie, after) => {
                let (sid, after) = match after {
                    Some(EntryKey::TsCookie(k)) => (Bound::Included(k.service_id), Some(*k)),
                    _ => (Bound::Unbounded, None),
                };
                Box::new(
                    self.by_sid
                        .range((sid, Bound::Unbounded))
                        .flat_map(|(_, p)| self.ts_cookie_entries(p))
                        .filter(move |e| after.is_none_or(|a| e.key > a))
                        .map(Entry::from),
                )
            }
            (Table::LbBucket, after) => {
                let (sid, after) = match after {
                    Some(EntryKey::LbBucket(k)) => (
                        Bound::Included(k.service_id),
                        Some((k.service_id, k.bucket)),
                    ),
                    _ => (Bound::Unbounded, None),
                };
                Box::new(
                    self.by_sid
                        .range((sid, Bound::Unbounded))
                        .flat_map(move |(s, p)| {
                            let first = match after {
                                Some((a, b)) if a == *s => usize::from(b) + 1,
                                _ => 0,
                            };
                            p.bucket_entries(first).map(Entry::from)
                        }),
                )
            }
            (Table::ServiceV4 | Table::ServiceV6, after) => {
                // Ports are ordered by ServiceKey, which orders like the
                // table keys (IPv4 VIPs before IPv6 ones, TCP 6 before UDP
                // 17); a cursor read from the switch may name a protocol no
                // port has, so start at its (vip, port) and compare table
                // keys.
                let cursor = |vip: IpAddr, port| ServiceKey {
                    vip,
                    port,
                    proto: Proto::Tcp,
                };
                let from = match after {
                    Some(EntryKey::ServiceV4(k)) => Bound::Included(cursor(k.vip.into(), k.port)),
                    Some(EntryKey::ServiceV6(k)) => Bound::Included(cursor(k.vip.into(), k.port)),
                    _ if t == Table::ServiceV6 => {
                        Bound::Included(cursor(Ipv6Addr::UNSPECIFIED.into(), 0))
                    }
                    _ => Bound::Unbounded,
                };
                let after = after.copied();
                Box::new(
                    self.by_key
                        .range((from, Bound::Unbounded))
                        .take_while(move |(k, _)| k.table() == t)
                        .filter_map(|(_, p)| p.service_entry())
                        .filter(move |e| after.is_none_or(|a| e.key() > a)),
                )
            }
        }
    }
}

/// What a plan changed: the region of the tables a switch must diff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanChanges {
    /// Everything may have changed (full plan): diff every table.
    pub full: bool,
    /// Service ports whose plan changed (or that came or went).
    pub keys: BTreeSet<ServiceKey>,
    /// Their service ids, before and after.
    pub sids: BTreeSet<u16>,
    /// Backend ids they named, before and after.
    pub backends: BTreeSet<u32>,
}

impl PlanChanges {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.full && self.keys.is_empty() && self.sids.is_empty() && self.backends.is_empty()
    }

    /// Adds `other`.
    pub fn merge(&mut self, other: &PlanChanges) {
        self.full |= other.full;
        self.keys.extend(&other.keys);
        self.sids.extend(&other.sids);
        self.backends.extend(&other.backends);
    }

    fn note(&mut self, p: &PortPlan) {
        self.keys.insert(p.key);
        self.sids.insert(p.service_id);
        self.backends.extend(
            p.active
                .keys()
                .chain(p.draining.keys())
                .chain(p.departed.keys()),
        );
    }
}

/// Keeps ids, bucket assignments and the desired state across plans.
#[derive(Debug, Clone)]
pub struct Planner {
    policy: BucketPolicy,
    quarantine: Duration,
    service_ids: IdPool<ServiceKey>,
    backend_ids: IdPool<Backend>,
    desired: Desired,
    /// Bucket assignments read back from a switch, used by a port's first
    /// plan (until the first full plan).
    adopted: BTreeMap<u16, Vec<u32>>,
    /// The backends a switch's `cookie_check` lets each service id's
    /// cookies name, read back with the buckets: those the model no longer
    /// has start their quarantine again in the port's first plan, so a
    /// controller restart keeps the flows of departed backends working.
    adopted_cookies: BTreeMap<u16, BTreeMap<u32, Backend>>,
    /// Ports left out or partly planned (ids exhausted), one line each.
    errors: BTreeMap<ServiceKey, Vec<String>>,
    /// When ports' departed backends leave their quarantine.
    expiries: BTreeSet<(Instant, ServiceKey)>,
}

impl Planner {
    /// A planner with no history.
    pub fn new(policy: BucketPolicy, quarantine: Duration) -> Self {
        Self {
            policy: policy.normalized(),
            quarantine,
            service_ids: IdPool::new("service", u64::from(u16::MAX), quarantine),
            backend_ids: IdPool::new("backend", u64::from(u32::MAX), quarantine),
            desired: Desired::default(),
            adopted: BTreeMap::new(),
            adopted_cookies: BTreeMap::new(),
            errors: BTreeMap::new(),
            expiries: BTreeSet::new(),
        }
    }

    /// The planner with timestamp-cookie `keys`, the current one first
    /// ([`crate::config::Config::ts_cookie_keys`]).
    pub fn with_ts_cookie_keys(mut self, keys: Vec<CookieKey>) -> Self {
        self.desired.ts_cookie_keys = keys.into();
        self
    }

    /// The desired state.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// Ports left out or partly planned (ids exhausted), and endpoints
    /// without an agent shared by several ports, one line each.
    pub fn errors(&self) -> Vec<String> {
        self.errors
            .values()
            .flatten()
            .cloned()
            .chain(self.desired.endpoint_conflicts())
            .collect()
    }

    /// When the next departed backend leaves its quarantine (re-plan then).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// Adopts ids and bucket assignments read back from a switch. Returns
    /// one line per entry that could not be adopted (it will be deleted by
    /// the next diff).
    pub fn adopt(&mut self, actual: &Contents) -> Vec<String> {
        let mut warnings = Vec::new();
        for e in service_entries(actual) {
            let (key, (service_id, bucket_mask, _)) = match e {
                Ok(k) => k,
                Err(what) => {
                    warnings.push(format!("{what}: not balanced"));
                    continue;
                }
            };
            let table = key.table().alias();
            if let Err(e) = self.service_ids.adopt(key, u64::from(service_id)) {
                warnings.push(format!("{table} {key}: {e}"));
                continue;
            }
            let size = usize::from(bucket_mask) + 1;
            if !size.is_power_of_two() {
                warnings.push(format!(
                    "{table} {key}: bucket_mask {bucket_mask} not 2^k-1"
                ));
                continue;
            }
            let v: Vec<u32> = (0..size)
                .map(|b| {
                    let k = lb_bucket::Key {
                        service_id,
                        bucket: b as u16,
                    };
                    actual.lb_bucket.get(&k).map_or(0, |a| {
                        let lb_bucket::Action::SelectBackend { backend_id } = *a;
                        backend_id
                    })
                })
                .collect();
            self.adopted.insert(service_id, v);
        }
        for (id, b) in backend_entries(actual) {
            if let Err(e) = self.backend_ids.adopt(b, u64::from(id)) {
                warnings.push(format!("{} {id} ({b}): {e}", b.table().alias()));
            }
        }
        for k in actual.cookie_check.keys() {
            if let Some(b) = backend_of(actual, k.backend_id) {
                self.adopted_cookies
                    .entry(k.service_id)
                    .or_default()
                    .insert(k.backend_id, b);
            }
        }
        warnings
    }

    /// Whether the ids this planner holds agree with a switch's tables: no
    /// key the switch names has another id here, and no id the switch uses
    /// names another key here (a service port or backend the planner does
    /// not know yet is no disagreement). A standby that disagrees adopts
    /// the switch's ids afresh.
    pub fn agrees_with(&self, actual: &Contents) -> bool {
        let services = service_entries(actual).all(|e| {
            let Ok((key, (service_id, _, _))) = e else {
                return true;
            };
            let sid = u64::from(service_id);
            self.service_ids.get(&key).is_none_or(|id| id == sid)
                && self.service_ids.key_of(sid).is_none_or(|k| *k == key)
        });
        services
            && backend_entries(actual).all(|(id, b)| {
                let bid = u64::from(id);
                self.backend_ids.get(&b).is_none_or(|id| id == bid)
                    && self.backend_ids.key_of(bid).is_none_or(|x| *x == b)
            })
    }

    /// Re-plans every port of `model`, and the fabric tables, at `now`.
    pub fn plan_full(&mut self, model: &Model, fabric: &FabricConfig, now: Instant) -> PlanChanges {
        self.desired.fabric = fabric_state(model, fabric);
        self.desired.set_routes(&fabric.routes);
        let keys: BTreeSet<ServiceKey> = model
            .ports
            .keys()
            .chain(self.desired.by_key.keys())
            .chain(self.errors.keys())
            .copied()
            .collect();
        let mut ch = self.replan(model, keys, now);
        // Ids adopted from a switch that no port wants any more.
        let by_key = &self.desired.by_key;
        self.service_ids
            .release_unless(now, |k| by_key.contains_key(k));
        let live: BTreeSet<Backend> = self
            .desired
            .backends
            .values()
            .filter(|r| r.live > 0)
            .map(|r| r.backend)
            .collect();
        self.backend_ids.release_unless(now, |b| live.contains(b));
        self.service_ids.sweep(now);
        self.backend_ids.sweep(now);
        self.adopted.clear();
        self.adopted_cookies.clear();
        ch.full = true;
        ch
    }

    /// Re-plans the ports `keys` of `model` at `now`, and every port whose
    /// departed backends' quarantine has ended by then.
    pub fn replan(
        &mut self,
        model: &Model,
        keys: impl IntoIterator<Item = ServiceKey>,
        now: Instant,
    ) -> PlanChanges {
        let mut keys: BTreeSet<ServiceKey> = keys.into_iter().collect();
        while let Some(&(t, k)) = self.expiries.first() {
            if t > now {
                break;
            }
            self.expiries.pop_first();
            keys.insert(k);
        }
        let mut ch = PlanChanges::default();
        let mut dropped: Vec<u32> = Vec::new();
        let mut released_keys: Vec<ServiceKey> = Vec::new();
        for key in keys {
            let old = self.desired.by_key.get(&key).cloned();
            let new = match model.ports.get(&key) {
                Some(port) => self.plan_port(port, old.as_deref(), now),
                None => {
                    self.errors.remove(&key);
                    if old.is_some() {
                        released_keys.push(key);
                    }
                    None
                }
            };
            // The new plan took its references in plan_port; drop the old's.
            if let Some(o) = &old {
                self.unref(o, &mut dropped);
                if let Some(t) = o.next_expiry(self.quarantine) {
                    self.expiries.remove(&(t, key));
                }
                if self
                    .desired
                    .by_sid
                    .get(&o.service_id)
                    .is_some_and(|p| p.key == key)
                {
                    self.desired.by_sid.remove(&o.service_id);
                }
                self.desired.by_key.remove(&key);
            }
            if let Some(n) = &new {
                self.add_entries(n);
                if let Some(t) = n.next_expiry(self.quarantine) {
                    self.expiries.insert((t, key));
                }
            }
            if old.as_deref() != new.as_ref() {
                if let Some(o) = &old {
                    ch.note(o);
                }
                if let Some(n) = &new {
                    ch.note(n);
                }
                ch.keys.insert(key);
            }
            if let Some(n) = new {
                // Unchanged plans keep their Arc (snapshots share it).
                let n = match old {
                    Some(o) if *o == n => o,
                    _ => Arc::new(n),
                };
                self.desired.by_sid.insert(n.service_id, n.clone());
                self.desired.by_key.insert(key, n);
            }
        }
        for id in dropped {
            if let Some(r) = self.desired.backends.get(&id).copied() {
                if r.live == 0 {
                    self.backend_ids.release(&r.backend, now);
                    if r.entries == 0 {
                        self.desired.backends.remove(&id);
                    }
                }
            }
        }
        for key in released_keys {
            self.service_ids.release(&key, now);
        }
        self.service_ids.sweep(now);
        self.backend_ids.sweep(now);
        ch
    }

    /// Plans one port; takes the `live` references of its backends.
    fn plan_port(
        &mut self,
        port: &ServicePort,
        old: Option<&PortPlan>,
        now: Instant,
    ) -> Option<PortPlan> {
        let key = port.key;
        let mut errors = Vec::new();
        let sid = match self.service_ids.acquire(&key, now) {
            Ok(id) => id as u16,
            Err(e) => {
                self.errors
                    .insert(key, vec![format!("{key} ({}): {e}", port.service)]);
                return None;
            }
        };
        let active = self.acquire_backends(&port.active, key, now, &mut errors);
        let draining = self.acquire_backends(&port.draining, key, now, &mut errors);
        if errors.is_empty() {
            self.errors.remove(&key);
        } else {
            self.errors.insert(key, errors);
        }
        let present = |id: &u32| active.contains_key(id) || draining.contains_key(id);
        let mut departed = old.map(|o| o.departed.clone()).unwrap_or_default();
        let before: Vec<(&u32, &Backend)> = match old {
            Some(o) => o.active.iter().chain(&o.draining).collect(),
            // A switch read back: when its backends left is not known, so
            // their quarantine starts now (never shorter than it was).
            None => self
                .adopted_cookies
                .get(&sid)
                .map(|c| c.iter().collect())
                .unwrap_or_default(),
        };
        for (id, b) in before {
            if !present(id) {
                departed.entry(*id).or_insert((*b, now));
            }
        }
        // A departed backend's cookies keep established TCP flows on it for
        // the quarantine; UDP flows move to a live backend at once, as
        // kube-proxy deletes the conntrack entries of removed UDP endpoints.
        let quarantine = if key.proto == Proto::Udp {
            Duration::ZERO
        } else {
            self.quarantine
        };
        departed.retain(|id, (_, since)| !present(id) && now.duration_since(*since) < quarantine);
        let old_buckets = match old {
            Some(o) => o.buckets.as_slice(),
            None => self.adopted.get(&sid).map(Vec::as_slice).unwrap_or(&[]),
        };
        let active_ids: BTreeSet<u32> = active.keys().copied().collect();
        let buckets = buckets::assign(old_buckets, &active_ids, &self.policy);
        let id_of: BTreeMap<&Backend, u32> = active
            .iter()
            .chain(&draining)
            .map(|(id, b)| (b, *id))
            .collect();
        let preferred = port
            .preferred
            .iter()
            .map(|(node, set)| {
                let ids = set.iter().filter_map(|b| id_of.get(b).copied()).collect();
                (*node, ids)
            })
            .collect();
        Some(PortPlan {
            service: port.service.clone(),
            port_name: port.port_name.clone(),
            key,
            frontend: port.frontend,
            service_id: sid,
            hash_mode: port.hash_mode,
            affinity_timeout_secs: port.affinity_timeout_secs,
            buckets,
            active,
            draining,
            departed,
            preferred,
            local_only: port.local_only,
        })
    }

    fn acquire_backends(
        &mut self,
        set: &BTreeSet<Backend>,
        key: ServiceKey,
        now: Instant,
        errors: &mut Vec<String>,
    ) -> BTreeMap<u32, Backend> {
        let mut out = BTreeMap::new();
        for b in set {
            match self.backend_ids.acquire(b, now) {
                Ok(id) => {
                    let id = id as u32;
                    let r = self.desired.backends.entry(id).or_insert(BackendRefs {
                        backend: *b,
                        live: 0,
                        entries: 0,
                    });
                    // An id is only handed to another backend once nothing
                    // names it any more.
                    r.backend = *b;
                    r.live += 1;
                    out.insert(id, *b);
                }
                Err(e) => errors.push(format!("{key} backend {b}: {e}")),
            }
        }
        out
    }

    fn add_entries(&mut self, p: &PortPlan) {
        self.desired.add_endpoint_replies(p);
        for (id, b) in p.entry_backends() {
            let r = self.desired.backends.entry(id).or_insert(BackendRefs {
                backend: b,
                live: 0,
                entries: 0,
            });
            r.entries += 1;
        }
    }

    /// Drops the references of `p`; `dropped` collects ids that lost one.
    fn unref(&mut self, p: &PortPlan, dropped: &mut Vec<u32>) {
        self.desired.remove_endpoint_replies(p);
        for id in p.active.keys().chain(p.draining.keys()) {
            if let Some(r) = self.desired.backends.get_mut(id) {
                r.live = r.live.saturating_sub(1);
                dropped.push(*id);
            }
        }
        for (id, _) in p.entry_backends() {
            if let Some(r) = self.desired.backends.get_mut(&id) {
                r.entries = r.entries.saturating_sub(1);
                dropped.push(id);
            }
        }
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

/// The fabric tables: configured routes and switch addresses, pod CIDRs,
/// the nodes that may send tunnels, the sources no port may use.
fn fabric_state(model: &Model, fabric: &FabricConfig) -> Contents {
    let mut st = Contents::default();
    for a in &fabric.switch_addrs {
        st.switch_addr.insert(
            switch_addr::Key { dst_addr: *a },
            switch_addr::Action::TerminateTunnel {},
        );
    }
    for r in &fabric.routes {
        let (src_mac, dst_mac) = (r.src_mac, r.dst_mac);
        match (r.prefix, r.port) {
            (IpPrefix::V4(dst_addr), port) => {
                let action = port.map_or(ipv4_route::Action::Drop {}, |port| {
                    ipv4_route::Action::Forward {
                        port,
                        src_mac,
                        dst_mac,
                    }
                });
                st.ipv4_route.insert(ipv4_route::Key { dst_addr }, action);
            }
            (IpPrefix::V6(dst_addr), port) => {
                let action = port.map_or(ipv6_route::Action::Drop {}, |port| {
                    ipv6_route::Action::ForwardV6 {
                        port,
                        src_mac,
                        dst_mac,
                    }
                });
                st.ipv6_route.insert(ipv6_route::Key { dst_addr }, action);
            }
        }
    }
    for (p, n) in &model.pod_nodes {
        st.pod_node.insert(
            pod_node::Key { pod_addr: *p },
            pod_node::Action::SetClientNode { node_ip: *n },
        );
    }
    // IPv6 clients' replies: their node is reached over the IPv4 underlay.
    // (Host-network IPv6 clients, at a node's own IPv6 address, are not
    // served: the model knows nodes by their IPv4 InternalIP only.)
    for (p, n) in &model.pod_nodes_v6 {
        st.pod_node_v6.insert(
            pod_node_v6::Key { pod_addr: *p },
            pod_node_v6::Action::SetClientNode { node_ip: *n },
        );
    }
    // Host-network clients: replies to a node's own address go back to it.
    for n in model.node_ips.values().chain(model.pod_nodes.values()) {
        st.pod_node.insert(
            pod_node::Key {
                pod_addr: Ipv4Prefix::new(*n, 32).expect("a /32"),
            },
            pod_node::Action::SetClientNode { node_ip: *n },
        );
    }
    // A node may tunnel to the switch from the port the switch routes its
    // address to (and from no other); the switch tunnels plain packets
    // (external requests, endpoint replies) to it from the first switch
    // address, which its agent accepts tunnels from.
    let nodes = model.node_ips.values().chain(model.pod_nodes.values());
    for node_ip in nodes {
        if let Some(a) = fabric.switch_addrs.first() {
            st.tunnel_source.insert(
                tunnel_source::Key { node_ip: *node_ip },
                tunnel_source::Action::SetTunnelSource { switch_ip: *a },
            );
        }
        if let Some(port) = route_port(&fabric.routes, *node_ip) {
            st.tunnel_peer.insert(
                tunnel_peer::Key {
                    port,
                    node_ip: *node_ip,
                },
                tunnel_peer::Action::AcceptTunnel {},
            );
        }
    }
    for a in fabric.switch_addrs.iter().chain(&fabric.spoofed_sources) {
        st.spoofed_source.insert(
            spoofed_source::Key { src_addr: *a },
            spoofed_source::Action::DropSpoofed {},
        );
    }
    st
}

/// The first `backend` key a backend holds: ids start at 1 ([`IdPool`]).
/// A switch programmed by an older controller may hold entry 0 (the
/// tunnel source before `tunnel_source`): not a backend, and deleted.
const FIRST_BACKEND_KEY: backend::Key = backend::Key { backend_id: 1 };
/// [`FIRST_BACKEND_KEY`] of `backend_v6`.
const FIRST_BACKEND_V6_KEY: backend_v6::Key = backend_v6::Key { backend_id: 1 };

/// The service ports of a switch's `service_v4` and `service_v6` entries,
/// with their `set_service` parameters (an entry whose protocol is not
/// balanced as `Err`, shown).
#[allow(clippy::type_complexity)]
fn service_entries(
    actual: &Contents,
) -> impl Iterator<Item = Result<(ServiceKey, (u16, u16, u8)), String>> + '_ {
    actual
        .entries(Table::ServiceV4)
        .chain(actual.entries(Table::ServiceV6))
        .filter_map(|e| ServiceKey::from_entry(&e))
}

/// The backends of a switch's `backend` and `backend_v6` entries, by id
/// (from 1).
fn backend_entries(actual: &Contents) -> impl Iterator<Item = (u32, Backend)> + '_ {
    let v4 = actual
        .backend
        .range(FIRST_BACKEND_KEY..)
        .map(|(k, a)| (k.backend_id, Backend::from_action(a)));
    let v6 = actual
        .backend_v6
        .range(FIRST_BACKEND_V6_KEY..)
        .map(|(k, a)| (k.backend_id, Backend::from_action_v6(a)));
    v4.chain(v6)
}

/// The backend a switch holds under `id`, in either table.
fn backend_of(actual: &Contents, id: u32) -> Option<Backend> {
    let v4 = actual.backend.get(&backend::Key { backend_id: id });
    let v6 = || actual.backend_v6.get(&backend_v6::Key { backend_id: id });
    v4.map(Backend::from_action)
        .or_else(|| v6().map(Backend::from_action_v6))
}

/// The port of the longest configured route to `addr`, if it forwards.
fn route_port(routes: &[RouteConfig], addr: Ipv4Addr) -> Option<u16> {
    routes
        .iter()
        .filter_map(|r| match r.prefix {
            IpPrefix::V4(p) if p.contains(addr) => Some((p.len, r.port)),
            _ => None,
        })
        .max_by_key(|(len, _)| *len)
        .and_then(|(_, port)| port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{diff::diff, model, model::tests::objs};
    use talaria_tables::service_v4;

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
        let route = |prefix: &str, port| RouteConfig {
            prefix: prefix.parse().unwrap(),
            port,
            src_mac: "02:00:00:00:00:01".parse().unwrap(),
            dst_mac: "02:00:00:00:00:11".parse().unwrap(),
        };
        FabricConfig {
            switch_addrs: vec!["192.168.0.1".parse().unwrap()],
            // n1 (192.168.0.11) by its /32, n2 by the /24.
            routes: vec![
                route("192.168.0.11/32", Some(1)),
                route("192.168.0.0/24", Some(2)),
                route("192.168.0.12/32", None),
                route("fd00:10:244:1::/64", Some(1)),
                route("fd00:dead::/32", None),
            ],
            spoofed_sources: vec!["10.96.0.1".parse().unwrap()],
        }
    }

    /// IPv6 routes go to `ipv6_route` (a port-less one as a blackhole),
    /// IPv4 ones to `ipv4_route`; only IPv4 routes name the port a node's
    /// tunnels come in on, since tunnels are IPv4.
    #[test]
    fn routes_go_to_the_table_of_their_family() {
        let st = fabric_state(&model_with(&[]), &fabric());
        let v6: Vec<(String, Option<u16>)> = st
            .ipv6_route
            .iter()
            .map(|(k, a)| {
                let port = match a {
                    ipv6_route::Action::ForwardV6 { port, .. } => Some(*port),
                    ipv6_route::Action::Drop {} => None,
                };
                (k.dst_addr.to_string(), port)
            })
            .collect();
        assert_eq!(
            v6,
            [
                ("fd00:10:244:1::/64".to_string(), Some(1)),
                ("fd00:dead::/32".to_string(), None),
            ]
        );
        assert_eq!(st.ipv4_route.len(), 3);
        let peers: Vec<(u16, String)> = st
            .tunnel_peer
            .keys()
            .map(|k| (k.port, k.node_ip.to_string()))
            .collect();
        assert_eq!(peers, [(1, "192.168.0.11".to_string())]);
    }

    /// A full plan, as tables.
    /// A node's preferred backends (`internalTrafficPolicy: Local`) reach
    /// the REST view as the ids the switch knows them by.
    #[test]
    fn preferred_backends_are_planned_as_ids() {
        let mut m = model_with(&[("10.244.1.5", READY), ("10.244.1.6", READY)]);
        let port = m.ports.values_mut().next().unwrap();
        let n1: Ipv4Addr = "192.168.0.11".parse().unwrap();
        let local = *port.active.iter().next().unwrap();
        port.preferred = [(n1, [local].into())].into();
        port.local_only = true;
        let mut p = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        p.plan_full(&m, &fabric(), Instant::now());
        let view = p.desired().ports().next().unwrap().view();
        let id = view.active.iter().find(|(_, b)| **b == local).unwrap().0;
        assert_eq!(view.preferred, [(n1, vec![*id])].into());
        assert!(view.local_only);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["preferred"]["192.168.0.11"], serde_json::json!([id]));
    }

    /// Endpoints outside every pod CIDR (a node's address: the API
    /// server; an off-cluster one) have no agent: their `backend` entry
    /// names no node, and their replies get an `endpoint_reply` entry on
    /// the port the fabric routes them to; one routed nowhere gets none.
    /// Two Services sharing one is reported, the lower service id wins.
    #[test]
    fn endpoints_without_an_agent_get_endpoint_reply_entries() {
        let mut y = format!("{}\n---\n{}", model::tests::NODES, SVC);
        y.push_str(
            "- {addresses: [192.168.0.11], nodeName: n1}\n- {addresses: [172.16.0.9]}\n- {addresses: [10.244.1.5], nodeName: n1}\n",
        );
        // A second Service with the node's endpoint.
        y.push_str("---");
        y.push_str(
            &SVC.replace("name: web", "name: web2")
                .replace("10.96.0.10", "10.96.0.20")
                .replace("web-abc", "web2-abc"),
        );
        y.push_str("- {addresses: [192.168.0.11], nodeName: n1}\n");
        let (sv, e, n) = objs(&y);
        let m = model::build(&sv, &e, &n);
        let mut p = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        let s = plan_state(&mut p, &m, Instant::now());
        let nodes: BTreeSet<(String, String)> = s
            .backend
            .range(FIRST_BACKEND_KEY..)
            .map(|(_, a)| {
                let b = Backend::from_action(a);
                (b.ip.to_string(), b.node_ip.to_string())
            })
            .collect();
        let pairs = |v: &[(&str, &str)]| -> BTreeSet<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            nodes,
            pairs(&[
                ("10.244.1.5", "192.168.0.11"),
                ("172.16.0.9", "0.0.0.0"),
                ("192.168.0.11", "0.0.0.0"),
            ])
        );
        // 172.16.0.9 has no route: no entry; the node's address comes in
        // on port 1, and both Services' cookies want it.
        let web = p
            .desired()
            .ports()
            .find(|q| q.key.vip.to_string() == "10.96.0.10")
            .unwrap();
        let (id, _) = web
            .active
            .iter()
            .find(|(_, b)| b.ip.to_string() == "192.168.0.11")
            .unwrap();
        let expected = endpoint_reply::Entry {
            key: endpoint_reply::Key {
                port: 1,
                endpoint_addr: "192.168.0.11".parse().unwrap(),
                endpoint_port: 8080,
                proto: 6,
            },
            action: endpoint_reply::Action::SetEndpointReply {
                // The same backend for both; the lower service id wins.
                service_id: p.desired().ports().map(|q| q.service_id).min().unwrap(),
                backend_id: *id,
            },
        };
        let got: Vec<_> = s.endpoint_reply.iter().map(|(k, a)| (*k, *a)).collect();
        assert_eq!(got, [(expected.key, expected.action)]);
        assert!(web.view().agentless);
        let errors = p.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("192.168.0.11:8080"), "{errors:?}");
        // The desired state diffs to nothing against itself, and a switch
        // without the entry gets exactly it.
        assert!(diff(&s, &s).is_empty());
        let mut without = s.clone();
        without.endpoint_reply.clear();
        let ch = p.plan_full(&m, &fabric(), Instant::now());
        let b = crate::diff::region_diff(p.desired(), &without, &ch);
        assert_eq!(crate::diff::update_count(&b), 1);
    }

    fn plan_state(p: &mut Planner, m: &Model, now: Instant) -> Contents {
        p.plan_full(m, &fabric(), now);
        p.desired().state()
    }

    /// The backend ids the buckets name.
    fn bucket_ids(s: &Contents) -> Vec<u32> {
        s.lb_bucket
            .values()
            .map(|a| {
                let lb_bucket::Action::SelectBackend { backend_id } = *a;
                backend_id
            })
            .collect()
    }

    fn backend_ids(s: &Contents) -> Vec<u32> {
        // Not the reserved tunnel-source entry.
        s.backend
            .range(FIRST_BACKEND_KEY..)
            .map(|(k, _)| k.backend_id)
            .collect()
    }

    fn cookie_ids(s: &Contents) -> Vec<u32> {
        s.cookie_check.keys().map(|k| k.backend_id).collect()
    }

    const READY: &str = "{ready: true}";
    const TERM: &str = "{ready: false, serving: true, terminating: true}";

    /// The planned `ts_cookie` entries of a model whose Service also has
    /// the external address 203.0.113.7, as (service id, cookie, backend).
    fn ts_cookies(m: &Model, keys: &[CookieKey]) -> (Planner, Vec<(u16, u16, u32)>) {
        let mut p = Planner::new(BucketPolicy::default(), Duration::from_secs(300))
            .with_ts_cookie_keys(keys.to_vec());
        let s = plan_state(&mut p, m, Instant::now());
        let v = s
            .ts_cookie
            .iter()
            .map(|(k, a)| {
                let ts_cookie::Action::TsCookieHit { backend_id } = *a;
                (k.service_id, k.cookie, backend_id)
            })
            .collect();
        (p, v)
    }

    fn external_model(eps: &str) -> Model {
        let svc = SVC.replace(
            "clusterIP: 10.96.0.10",
            "clusterIP: 10.96.0.10\n  externalIPs: [203.0.113.7]",
        );
        let (s, e, n) = objs(&format!("{}\n---\n{svc}{eps}", model::tests::NODES));
        model::build(&s, &e, &n)
    }

    const THREE_PODS: &str = "- {addresses: [10.244.1.5], nodeName: n1}\n- {addresses: [10.244.1.6], nodeName: n1}\n- {addresses: [10.244.2.7]}\n";

    /// Outside clients' timestamp cookies: one entry per backend and key
    /// for the external address's TCP port, computed as the nodes stamp
    /// them; none for the ClusterIP, none without keys, none when a
    /// backend runs no agent; a cookie two backends share names neither.
    #[test]
    fn ts_cookies_name_the_backends_of_external_tcp_ports() {
        let m = external_model(THREE_PODS);
        let k1 = CookieKey { k0: 7, k1: 11 };
        let k2 = CookieKey { k0: 13, k1: 17 };
        let (p, got) = ts_cookies(&m, &[k1]);
        let ext = p
            .desired()
            .ports()
            .find(|q| q.frontend == Frontend::External)
            .unwrap();
        let ids: Vec<u32> = ext.active.keys().copied().collect();
        assert_eq!(ids.len(), 3);
        let want = |keys: &[CookieKey]| {
            let mut v: Vec<(u16, u16, u32)> = keys
                .iter()
                .flat_map(|k| {
                    ids.iter()
                        .map(|id| (ext.service_id, cookies::cookie(k, ext.service_id, *id), *id))
                })
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(got, want(&[k1]));
        // A rotation: the cookies under both keys.
        assert_eq!(ts_cookies(&m, &[k2, k1]).1, want(&[k1, k2]));
        assert_eq!(p.desired().counts()[&Table::TsCookie], 3);
        assert!(ts_cookies(&m, &[]).1.is_empty());
        // 172.16.0.9 runs no agent: its real TSvals could pass for cookies.
        let agentless = external_model(&format!("{THREE_PODS}- {{addresses: [172.16.0.9]}}\n"));
        assert!(ts_cookies(&agentless, &[k1]).1.is_empty());

        // A key under which backends 1 and 2 share a cookie: only 3's stays.
        let sid = ext.service_id;
        let (a, b, c) = (ids[0], ids[1], ids[2]);
        let clash = (1..)
            .map(|k0| CookieKey { k0, k1: 5 })
            .find(|k| {
                cookies::cookie(k, sid, a) == cookies::cookie(k, sid, b)
                    && cookies::cookie(k, sid, c) != cookies::cookie(k, sid, a)
            })
            .unwrap();
        assert_eq!(
            ts_cookies(&m, &[clash]).1,
            vec![(sid, cookies::cookie(&clash, sid, c), c)]
        );
    }

    #[test]
    fn plan_builds_all_tables() {
        let m = model_with(&[
            ("10.244.1.5", READY),
            ("10.244.1.6", READY),
            ("10.244.1.7", TERM),
        ]);
        let mut p = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        let s = &plan_state(&mut p, &m, Instant::now());
        assert_eq!(s.switch_addr.len(), 1);
        assert_eq!(s.ipv4_route.len(), 3);
        // Two pod CIDRs, and each node's own address (host clients).
        assert_eq!(s.pod_node.len(), 4);
        for n in ["192.168.0.11", "192.168.0.12"] {
            let key = pod_node::Key {
                pod_addr: Ipv4Prefix::new(n.parse().unwrap(), 32).unwrap(),
            };
            assert!(s.pod_node.contains_key(&key), "{n}/32");
        }
        // Each node tunnels from the port of its longest route; n2's is a
        // blackhole, so n2 may not tunnel at all.
        let peers: Vec<(u16, String)> = s
            .tunnel_peer
            .keys()
            .map(|k| (k.port, k.node_ip.to_string()))
            .collect();
        assert_eq!(peers, [(1, "192.168.0.11".to_string())]);
        let spoofed: Vec<String> = s
            .spoofed_source
            .keys()
            .map(|k| k.src_addr.to_string())
            .collect();
        assert_eq!(spoofed, ["10.96.0.1", "192.168.0.1"]);
        assert_eq!(s.service_v4.len(), 1);
        let service_v4::Action::SetService { bucket_mask, .. } =
            *s.service_v4.values().next().unwrap();
        assert_eq!(
            bucket_mask, 15,
            "2 × 4 per backend, raised to the minimum 16"
        );
        assert_eq!(s.lb_bucket.len(), 16);
        assert_eq!(backend_ids(s).len(), 3);
        assert_eq!(s.cookie_check.len(), 3, "draining backend keeps its cookie");
        let draining_id = p
            .desired()
            .ports()
            .next()
            .unwrap()
            .draining
            .keys()
            .next()
            .copied()
            .unwrap();
        assert!(
            bucket_ids(s).iter().all(|b| *b != draining_id),
            "no buckets for draining"
        );
        assert!(backend_ids(s).iter().all(|id| *id != 0));
    }

    /// A dual-stack Service and its IPv6 endpoints and pod CIDR.
    const DUAL: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIPs: [10.96.0.10, "fd00:96::a"]
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: PreferDualStack
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-4, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.244.1.5], nodeName: n1}
- {addresses: [10.244.1.6], nodeName: n1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-6, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
"#;

    fn dual_stack(v6_eps: &[&str]) -> Model {
        let mut y = format!("{}\n---\n{DUAL}", model::tests::NODES);
        for ip in v6_eps {
            y.push_str(&format!("- {{addresses: [\"{ip}\"], nodeName: n1}}\n"));
        }
        if v6_eps.is_empty() {
            y.push_str("  []\n");
        }
        let (s, e, n) = objs(&y);
        model::build(&s, &e, &n)
    }

    /// A dual-stack Service: a `service_v4` and a `service_v6` entry, each
    /// with a service id and buckets of its own naming its family's
    /// backends only; the IPv6 backends in `backend_v6`, with ids from the
    /// one backend id space; the IPv6 pod CIDR in `pod_node_v6`. A
    /// restarted planner adopts it all and writes nothing.
    #[test]
    fn dual_stack_services_get_a_port_per_family() {
        let m = dual_stack(&["fd00::5", "fd00::6", "fd00::7"]);
        let t0 = Instant::now();
        let mut p = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        let s = plan_state(&mut p, &m, t0);
        assert_eq!((s.service_v4.len(), s.service_v6.len()), (1, 1));
        assert_eq!((s.backend.len(), s.backend_v6.len()), (2, 3));
        let pod6: Vec<(String, String)> = s
            .pod_node_v6
            .iter()
            .map(|(k, a)| {
                let pod_node_v6::Action::SetClientNode { node_ip } = *a;
                (k.pod_addr.to_string(), node_ip.to_string())
            })
            .collect();
        assert_eq!(
            pod6,
            [("fd00::/64".to_string(), "192.168.0.11".to_string())]
        );
        let (v4, v6) = {
            let mut ports = p.desired().ports().cloned();
            (ports.next().unwrap(), ports.next().unwrap())
        };
        assert!(v4.key.vip.is_ipv4() && v6.key.vip.is_ipv6());
        assert_ne!(v4.service_id, v6.service_id);
        let (ids4, ids6): (BTreeSet<u32>, BTreeSet<u32>) = (
            v4.active.keys().copied().collect(),
            v6.active.keys().copied().collect(),
        );
        assert!(ids4.is_disjoint(&ids6), "one backend id space");
        assert_eq!(
            s.backend_v6
                .keys()
                .map(|k| k.backend_id)
                .collect::<BTreeSet<_>>(),
            ids6
        );
        for (sid, ids) in [(v4.service_id, &ids4), (v6.service_id, &ids6)] {
            let named: BTreeSet<u32> = s
                .lb_bucket
                .iter()
                .filter(|(k, _)| k.service_id == sid)
                .map(|(_, a)| {
                    let lb_bucket::Action::SelectBackend { backend_id } = *a;
                    backend_id
                })
                .collect();
            assert_eq!(&named, ids, "service {sid}'s buckets");
        }
        let view = serde_json::to_value(v6.view()).unwrap();
        assert_eq!(view["key"]["vip"], "fd00:96::a");
        let counts = p.desired().counts();
        assert_eq!(counts[&Table::ServiceV6], 1);
        assert_eq!(counts[&Table::BackendV6], 3);
        assert_eq!(counts[&Table::Backend], 2);
        assert_eq!(p.desired().len(), s.total());

        // A restart adopts both families' ids and writes nothing.
        let mut q = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        assert!(q.adopt(&s).is_empty());
        assert!(q.agrees_with(&s));
        assert!(diff(&plan_state(&mut q, &m, t0), &s).is_empty());

        // An IPv6 endpoint leaves: its id is quarantined, and the region
        // diff touches the IPv6 port only.
        let fewer = dual_stack(&["fd00::5", "fd00::6"]);
        let ch = p.replan(&fewer, fewer.ports.keys().copied(), t0);
        assert_eq!(ch.sids, [v6.service_id].into());
        let b = crate::diff::region_diff(p.desired(), &s, &ch);
        let tables: BTreeSet<Table> = b.iter().map(|b| b.table).collect();
        assert_eq!(tables, [Table::LbBucket].into(), "{b:?}");
        let later = t0 + Duration::from_secs(301);
        let ch = p.replan(&fewer, [], later);
        let mut have = s.clone();
        crate::diff::apply(&mut have, &crate::diff::region_diff(p.desired(), &s, &ch));
        assert_eq!(have.backend_v6.len(), 2);
        assert_eq!(have.service_v6.len(), 1);
        assert_eq!(have, p.desired().state());
        // The IPv6 port's endpoints all go: after the quarantine its
        // entries are deleted, the IPv4 port's kept.
        let none = dual_stack(&[]);
        p.replan(&none, none.ports.keys().copied(), later);
        let s2 = plan_state(&mut p, &none, later + Duration::from_secs(301));
        assert_eq!((s2.service_v4.len(), s2.service_v6.len()), (1, 0));
        assert_eq!((s2.backend.len(), s2.backend_v6.len()), (2, 0));
    }

    /// A full diff writes the IPv6 tables in dependency order, also when
    /// produced chunk by chunk from the compact desired state.
    #[test]
    fn ipv6_tables_are_written_after_what_they_reference() {
        let m = dual_stack(&["fd00::5"]);
        let mut p = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        let s = plan_state(&mut p, &m, Instant::now());
        let order: Vec<Table> = diff(&s, &Contents::default())
            .iter()
            .map(|b| b.table)
            .collect();
        let at = |t| order.iter().position(|x| *x == t).unwrap();
        assert!(at(Table::PodNode) < at(Table::PodNodeV6));
        assert!(at(Table::BackendV6) < at(Table::CookieCheck));
        assert!(at(Table::BackendV6) < at(Table::LbBucket));
        assert!(at(Table::LbBucket) < at(Table::ServiceV6));
        let mut gen = crate::diff::FullDiff::default();
        let mut have = Contents::default();
        while let Some(c) = gen.next_chunk(p.desired(), &have, 1) {
            for e in c.entries {
                have.insert(e);
            }
        }
        assert_eq!(have, s);
    }

    #[test]
    fn replan_is_stable_and_restart_adopts() {
        let m = model_with(&[("10.244.1.5", READY), ("10.244.1.6", READY)]);
        let t0 = Instant::now();
        let mut p = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        let first = plan_state(&mut p, &m, t0);
        assert_eq!(plan_state(&mut p, &m, t0), first);
        // A new controller adopting the switch contents plans the same.
        let mut q = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        assert!(q.adopt(&first).is_empty());
        let again = plan_state(&mut q, &m, t0);
        assert!(diff(&again, &first).is_empty());
    }

    /// A standby planned the same Services with ids of its own; adopting
    /// the leader's switch afresh makes its plan write nothing there.
    #[test]
    fn a_standby_with_other_ids_disagrees_then_adopts() {
        let m = model_with(&[("10.244.1.5", READY), ("10.244.1.6", READY)]);
        let t0 = Instant::now();
        let mut leader = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        let on_switch = plan_state(&mut leader, &m, t0);
        assert!(leader.agrees_with(&on_switch));
        let mut standby = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        // Ids taken by a Service the leader never saw shift the standby's.
        let other = model_with(&[("10.244.1.7", READY)]);
        plan_state(&mut standby, &other, t0);
        let own = plan_state(&mut standby, &m, t0);
        assert!(!standby.agrees_with(&on_switch));
        assert!(!diff(&own, &on_switch).is_empty(), "its own ids differ");
        let mut fresh = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        assert!(fresh.adopt(&on_switch).is_empty());
        let adopted = plan_state(&mut fresh, &m, t0);
        assert!(diff(&adopted, &on_switch).is_empty());
        assert!(fresh.agrees_with(&on_switch));
        // An empty switch disagrees with nothing.
        assert!(standby.agrees_with(&Contents::default()));
    }

    #[test]
    fn removed_backend_id_is_quarantined() {
        let t0 = Instant::now();
        let q = Duration::from_secs(300);
        let mut p = Planner::new(BucketPolicy::default(), q);
        let s1 = plan_state(
            &mut p,
            &model_with(&[("10.244.1.5", READY), ("10.244.1.6", READY)]),
            t0,
        );
        let s2 = plan_state(&mut p, &model_with(&[("10.244.1.5", READY)]), t0);
        let gone: Vec<u32> = backend_ids(&s1)
            .into_iter()
            .filter(|k| !bucket_ids(&s2).contains(k))
            .collect();
        assert_eq!(gone.len(), 1);
        // Its established flows keep their cookie through the quarantine.
        assert!(backend_ids(&s2).contains(&gone[0]));
        assert!(cookie_ids(&s2).contains(&gone[0]));
        let s3 = plan_state(
            &mut p,
            &model_with(&[("10.244.1.5", READY), ("10.244.1.9", READY)]),
            t0,
        );
        assert_eq!(backend_ids(&s3).len(), 3, "new id, old one still draining");
        assert!(!bucket_ids(&s3).contains(&gone[0]));
        assert_eq!(p.backend_id_usage(), (2, 1));
        let s4 = plan_state(
            &mut p,
            &model_with(&[("10.244.1.5", READY), ("10.244.1.9", READY)]),
            t0 + q,
        );
        assert!(
            !backend_ids(&s4).contains(&gone[0]),
            "expired with the quarantine"
        );
        assert!(!cookie_ids(&s4).contains(&gone[0]));
        assert_eq!(p.backend_id_usage(), (2, 0));
    }

    /// A controller restarted while a departed backend is in quarantine
    /// keeps its `backend` and `cookie_check` entries (its flows go on) and
    /// its id out of use, for a whole quarantine from the restart.
    #[test]
    fn restart_keeps_departed_backends_in_quarantine() {
        let t0 = Instant::now();
        let q = Duration::from_secs(300);
        let mut p = Planner::new(BucketPolicy::default(), q);
        let two = model_with(&[("10.244.1.5", READY), ("10.244.1.6", READY)]);
        let one = model_with(&[("10.244.1.5", READY)]);
        let s1 = plan_state(&mut p, &two, t0);
        let on_switch = plan_state(&mut p, &one, t0);
        let gone: Vec<u32> = backend_ids(&s1)
            .into_iter()
            .filter(|k| !bucket_ids(&on_switch).contains(k))
            .collect();
        assert_eq!(gone.len(), 1);

        // A new controller, half a quarantine later, reads the switch back.
        let t1 = t0 + q / 2;
        let mut r = Planner::new(BucketPolicy::default(), q);
        assert!(r.adopt(&on_switch).is_empty());
        let after = plan_state(&mut r, &one, t1);
        assert!(
            diff(&after, &on_switch).is_empty(),
            "the restart writes nothing"
        );
        assert_eq!(r.backend_id_usage(), (1, 1));
        // A new backend does not get the departed one's id.
        let three = model_with(&[("10.244.1.5", READY), ("10.244.1.9", READY)]);
        let s = plan_state(&mut r, &three, t1);
        assert!(cookie_ids(&s).contains(&gone[0]));
        assert_eq!(backend_ids(&s).len(), 3);
        // The quarantine counts from the restart: still there at t0 + q ...
        let s = plan_state(&mut r, &three, t0 + q);
        assert!(cookie_ids(&s).contains(&gone[0]));
        // ... and gone a quarantine after it.
        let s = plan_state(&mut r, &three, t1 + q);
        assert!(!cookie_ids(&s).contains(&gone[0]));
        assert!(!backend_ids(&s).contains(&gone[0]));
    }

    #[test]
    fn no_endpoints_keeps_established_flows_then_the_entry_goes_id_kept() {
        let t0 = Instant::now();
        let q = Duration::from_secs(300);
        let mut p = Planner::new(BucketPolicy::default(), q);
        let s1 = plan_state(&mut p, &model_with(&[("10.244.1.5", READY)]), t0);
        // The last endpoint left: no buckets, so new flows are dropped, but
        // the service entry and the departed backend's cookie stay for
        // the flows it still serves.
        let s2 = plan_state(&mut p, &model_with(&[]), t0);
        assert!(s2.lb_bucket.is_empty());
        let service_v4::Action::SetService { bucket_mask, .. } =
            *s2.service_v4.values().next().expect("service entry kept");
        assert_eq!(bucket_mask, 0);
        assert_eq!(cookie_ids(&s2), cookie_ids(&s1));
        // Not ready but listed: the same, for as long as it is listed.
        let s2b = plan_state(
            &mut p,
            &model_with(&[("10.244.1.5", "{ready: false}")]),
            t0 + q,
        );
        assert_eq!((s2b.service_v4.len(), s2b.lb_bucket.len()), (1, 0));
        assert_eq!(cookie_ids(&s2b), cookie_ids(&s1));
        // Gone a quarantine after it left: no entries at all.
        let _ = plan_state(&mut p, &model_with(&[]), t0 + q);
        let s3 = plan_state(&mut p, &model_with(&[]), t0 + q * 3);
        assert!(s3.service_v4.is_empty() && s3.lb_bucket.is_empty() && s3.cookie_check.is_empty());
        // Back: the same service id as before (the port never left).
        let s4 = plan_state(&mut p, &model_with(&[("10.244.1.5", READY)]), t0 + q * 3);
        assert_eq!(s1.service_v4, s4.service_v4);
    }

    /// One Service with a TCP and a UDP port on the same endpoints.
    fn tcp_and_udp(eps: &[(&str, &str)]) -> Model {
        let mut y = format!(
            "{}\n---\n{}",
            model::tests::NODES,
            r#"
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: tcp, port: 53, protocol: TCP}, {name: udp, port: 53, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dns-1, namespace: default, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports: [{name: tcp, port: 53, protocol: TCP}, {name: udp, port: 53, protocol: UDP}]
endpoints:
"#
        );
        for (ip, cond) in eps {
            y.push_str(&format!(
                "- {{addresses: [{ip}], nodeName: n1, conditions: {cond}}}\n"
            ));
        }
        let (s, e, n) = objs(&y);
        model::build(&s, &e, &n)
    }

    /// The backend addresses whose cookies the port `proto` accepts.
    fn cookie_ips(p: &Planner, proto: Proto) -> BTreeSet<String> {
        let port = p.desired().ports().find(|x| x.key.proto == proto).unwrap();
        port.active
            .values()
            .chain(port.draining.values())
            .chain(port.departed.values().map(|(b, _)| b))
            .map(|b| b.ip.to_string())
            .collect()
    }

    #[test]
    fn udp_flows_leave_removed_and_unready_endpoints_at_once() {
        let both = [("10.244.1.5", READY), ("10.244.1.6", READY)];
        let t0 = Instant::now();
        let mut p = Planner::new(BucketPolicy::default(), Duration::from_secs(300));
        p.plan_full(&tcp_and_udp(&both), &fabric(), t0);
        let all: BTreeSet<String> = ["10.244.1.5".into(), "10.244.1.6".into()].into();
        assert_eq!(cookie_ips(&p, Proto::Tcp), all);
        assert_eq!(cookie_ips(&p, Proto::Udp), all);
        // Not ready: TCP keeps established flows on it, UDP moves them.
        let unready = [("10.244.1.5", READY), ("10.244.1.6", "{ready: false}")];
        p.plan_full(&tcp_and_udp(&unready), &fabric(), t0);
        assert_eq!(cookie_ips(&p, Proto::Tcp), all);
        assert_eq!(cookie_ips(&p, Proto::Udp), ["10.244.1.5".into()].into());
        // Removed: TCP cookies last the quarantine, UDP ones end now.
        p.plan_full(&tcp_and_udp(&both[..1]), &fabric(), t0);
        assert_eq!(cookie_ips(&p, Proto::Tcp), all);
        assert_eq!(cookie_ips(&p, Proto::Udp), ["10.244.1.5".into()].into());
        let later = t0 + Duration::from_secs(301);
        p.plan_full(&tcp_and_udp(&both[..1]), &fabric(), later);
        assert_eq!(cookie_ips(&p, Proto::Tcp), ["10.244.1.5".into()].into());
    }
}
