//! The node's BPF maps (pinned by name under the agent's pin directory)
//! and the counters kept in them.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use talaria_common::{
    be::{Be16, Be32},
    drop::{DropReason, DROP_REASON_COUNT},
    maps::{
        finished, mtu, mtu_stat, node_flags, node_stat, AffinityBackend, AffinityEntry,
        AffinityKey, AffinityKey6, CookieEntry, FlowKey, FlowKey6, FragEntry, FragKey, NodeConfig,
        NodeTsCookie, PodEntry, PodFlows, PortPolicy, PortSubstKey, PortSubstKey6,
        RequestFragEntry, ReverseEntry, ReverseEntry6, ServiceAddr, ServiceAddr6, ServiceKey,
        FIN_BACKEND_FIRST, FIN_FROM_BACKEND, FIN_FROM_CLIENT,
    },
};

use core::intrinsics::{atomic_xadd, atomic_xsub, AtomicOrdering::Relaxed};

use crate::{skb::SHOT, uplink_ingress::NoticeScratch};

/// Client side cookie cache: the client pod's flow towards a VIP → the
/// service and backend id the switch chose (learned from the first reply).
/// A hash map, not an LRU: a live flow's entry never gives way to another's
/// (entries leave on RST, FIN in both directions or UDP idleness, by the
/// agent's GC); the agent sets its size (default 1M).
#[map]
pub(crate) static NODE_COOKIES: HashMap<FlowKey, CookieEntry> =
    HashMap::pinned(1 << 20, BPF_F_NO_PREALLOC);

/// Session affinity (`sessionAffinity: ClientIP`): the backend of each
/// client's last new flow to such a port, and when. An LRU: a forgotten
/// client is balanced by the switch's client-address hash, as after its
/// timeout.
#[map]
pub(crate) static NODE_AFFINITY: LruHashMap<AffinityKey, AffinityEntry> =
    LruHashMap::pinned(65536, 0);

/// [`NODE_AFFINITY`] of IPv6 clients.
#[map]
pub(crate) static NODE_AFFINITY_V6: LruHashMap<AffinityKey6, AffinityEntry> =
    LruHashMap::pinned(65536, 0);

/// The backends a remembered affinity may still name (`AffinityBackend`),
/// written by the agent.
#[map]
pub(crate) static NODE_AFFINITY_BACKENDS: HashMap<AffinityBackend, u8> =
    HashMap::pinned(65536, BPF_F_NO_PREALLOC);

/// Backend side reverse-flow entries: a backend pod's flow towards the
/// client → the VIP:port to restore and the ids to stamp on replies. A
/// hash map for the same reason: losing one would send the backend's
/// replies un-NATed, and the client would reset the connection.
#[map]
pub(crate) static NODE_REVERSE: HashMap<FlowKey, ReverseEntry> =
    HashMap::pinned(1 << 20, BPF_F_NO_PREALLOC);

/// Flow entries each local pod holds (`PodFlows`), against the per-pod
/// limit in `NODE_FLAGS`; the agent recounts them on every GC sweep.
#[map]
pub(crate) static NODE_POD_FLOWS: HashMap<Be32, PodFlows> = HashMap::pinned(4096, 0);

/// Backend side flows whose client port the backend pod sees replaced,
/// because another Service's flow holds their 4-tuple (`PortSubstKey`).
/// LRU; an entry outlives its flow only until evicted or collected.
#[map]
pub(crate) static NODE_PORT_SUBST: LruHashMap<PortSubstKey, Be16> = LruHashMap::pinned(1 << 16, 0);

/// Backend side: reply datagrams whose first fragment was reverse-NATed,
/// for their other fragments (`FragKey`). LRU: a datagram's fragments
/// follow each other within microseconds.
#[map]
pub(crate) static NODE_FRAGS: LruHashMap<FragKey, FragEntry> = LruHashMap::pinned(8192, 0);

/// Pods hosted on this node: pod IP → host-side veth and MACs.
#[map]
pub(crate) static NODE_PODS: HashMap<Be32, PodEntry> = HashMap::pinned(4096, 0);

/// The local pods' IPv6 addresses → their host-side veth and MACs (as
/// `NODE_PODS`): the source check, and delivery of IPv6 Service traffic.
#[map]
pub(crate) static NODE_PODS_V6: HashMap<[u8; 16], PodEntry> = HashMap::pinned(4096, 0);

/// IPv6 Service CIDRs (LPM on the destination): traffic steered to the
/// switch, inner IPv6 in the IPv4 tunnel.
#[map]
pub(crate) static NODE_SVC_CIDRS_V6: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(64, 0);

/// IPv6 Services by id → VIP6, port and protocol (one id space with
/// `NODE_SERVICES`).
#[map]
pub(crate) static NODE_SERVICES_V6: HashMap<u32, ServiceAddr6> = HashMap::pinned(65536, 0);

/// `NODE_COOKIES` of IPv6 flows (client → VIP6). Sized by the agent
/// like `NODE_COOKIES`.
#[map]
pub(crate) static NODE_COOKIES_V6: HashMap<FlowKey6, CookieEntry> =
    HashMap::pinned(1 << 20, BPF_F_NO_PREALLOC);

/// `NODE_REVERSE` of IPv6 flows (backend pod → client).
#[map]
pub(crate) static NODE_REVERSE_V6: HashMap<FlowKey6, ReverseEntry6> =
    HashMap::pinned(1 << 20, BPF_F_NO_PREALLOC);

/// `NODE_PORT_SUBST` of IPv6 flows (`PortSubstKey6`).
#[map]
pub(crate) static NODE_PORT_SUBST_V6: LruHashMap<PortSubstKey6, Be16> =
    LruHashMap::pinned(1 << 16, 0);

/// Service CIDRs (LPM on the destination): traffic steered to the switch.
#[map]
pub(crate) static NODE_SVC_CIDRS: LpmTrie<Be32, u32> = LpmTrie::pinned(64, 0);

/// Services by id → VIP, port and protocol, to reverse-NAT replies.
#[map]
pub(crate) static NODE_SERVICES: HashMap<u32, ServiceAddr> = HashMap::pinned(65536, 0);

/// How the first fragment of a client's datagram to a VIP was sent, for
/// its later fragments ([`RequestFragEntry`]).
#[map]
pub(crate) static NODE_REQUEST_FRAGS: LruHashMap<FragKey, RequestFragEntry> =
    LruHashMap::pinned(8192, 0);

/// (VIP, port, protocol) → what a new flow to it does instead of the
/// switch's hash ([`PortPolicy`]): refused at once (no usable endpoint,
/// kube-proxy's REJECT), or sent to a preferred backend (Local, topology).
#[map]
pub(crate) static NODE_PORT_POLICY: HashMap<ServiceKey, PortPolicy> = HashMap::pinned(65536, 0);

/// [`NODE_PORT_POLICY`] of IPv6 ports: (VIP6, port, protocol) → refused,
/// or preferred backends (session affinity and agentless endpoints are
/// not for IPv6).
#[map]
pub(crate) static NODE_PORT_POLICY_V6: HashMap<ServiceAddr6, PortPolicy> =
    HashMap::pinned(65536, 0);

/// Node-wide settings, element 0. All zero = not configured: pass all.
#[map]
static NODE_CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

/// The key outside TCP clients' timestamps are stamped with, element 0
/// (`NodeTsCookie`; disabled when the agent has no key file).
#[map]
pub(crate) static NODE_TS_COOKIE: Array<NodeTsCookie> = Array::pinned(1, 0);

/// Scratch space of `uplink_ingress::notify_client` (one per-CPU
/// element; not pinned: it holds nothing between runs).
#[map]
pub(crate) static NODE_NOTICE_SCRATCH: PerCpuArray<NoticeScratch> =
    PerCpuArray::with_max_entries(1, 0);

/// Per-CPU event counters, indexed by `node_stat`.
#[map]
static NODE_STATS: PerCpuArray<u64> = PerCpuArray::pinned(node_stat::COUNT, 0);

/// Per-CPU drop counters, indexed by `DropReason` code.
#[map]
static NODE_DROPS: PerCpuArray<u64> = PerCpuArray::pinned(DROP_REASON_COUNT, 0);

/// Path MTU settings, indexed by `talaria_common::maps::mtu` (the uplink MTU).
#[map]
pub(crate) static NODE_MTU: Array<u32> = Array::pinned(mtu::COUNT, 0);

/// Data path switches, indexed by `talaria_common::maps::node_flags`.
#[map]
pub(crate) static NODE_FLAGS: Array<u32> = Array::pinned(node_flags::COUNT, 0);

/// Per-CPU counters of the MTU check, indexed by `talaria_common::maps::mtu_stat`.
#[map]
static NODE_MTU_STATS: PerCpuArray<u64> = PerCpuArray::pinned(mtu_stat::COUNT, 0);

#[inline(always)]
pub(crate) fn stat(idx: u32) {
    if let Some(p) = NODE_STATS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub(crate) fn drop_pkt(reason: DropReason) -> i32 {
    if let Some(p) = NODE_DROPS.get_ptr_mut(reason.code() as u32) {
        // SAFETY: per-CPU slot.
        unsafe { *p += 1 };
    }
    SHOT
}

#[inline(always)]
pub(crate) fn config() -> Option<&'static NodeConfig> {
    let cfg = NODE_CONFIG.get(0)?;
    (cfg.node_ip.0 != [0; 4]).then_some(cfg)
}

/// Counts an event of the MTU check.
#[inline(always)]
pub(crate) fn count_mtu(idx: u32) {
    if let Some(p) = NODE_MTU_STATS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot.
        unsafe { *p += 1 };
    }
}

/// Adds FIN `bits` to an entry of `pod` in `table`; its slot frees when
/// they finish the connection.
#[inline(always)]
pub(crate) fn add_fin(fin_seen: &mut u8, bits: u8, pod: Be32, table: FlowTable) {
    let was = finished(*fin_seen);
    if bits & FIN_FROM_BACKEND != 0 && *fin_seen & FIN_FROM_CLIENT == 0 {
        *fin_seen |= FIN_BACKEND_FIRST;
    }
    *fin_seen |= bits;
    if !was && finished(*fin_seen) {
        release_flow_slot(pod, table);
    }
}

/// Removes the entry `key` (whose FIN bits were `fin_seen`) of its pod in
/// `table`: an RST, a stale cookie. Frees its slot if the connection was
/// open; returns whether there was an entry.
#[inline(always)]
pub(crate) fn remove_flow<V>(
    map: &HashMap<FlowKey, V>,
    key: &FlowKey,
    fin_seen: u8,
    table: FlowTable,
) -> bool {
    let removed = map.remove(key).is_ok();
    if removed && !finished(fin_seen) {
        release_flow_slot(key.src, table);
    }
    removed
}

/// Which flow table a pod's entry is in.
#[derive(Clone, Copy)]
pub(crate) enum FlowTable {
    Cookies,
    Reverse,
}

/// The pod's count in `table`.
#[inline(always)]
fn pod_count(pod: Be32, table: FlowTable) -> Option<*mut u64> {
    let p = match NODE_POD_FLOWS.get_ptr_mut(&pod) {
        Some(p) => p,
        None => {
            // A pod the agent has not counted yet; another CPU may race us
            // here, and then both see one entry.
            let _ = NODE_POD_FLOWS.insert(&pod, &PodFlows::default(), BPF_NOEXIST as u64);
            NODE_POD_FLOWS.get_ptr_mut(&pod)?
        }
    };
    // SAFETY: a map value pointer, valid for this run.
    Some(unsafe {
        match table {
            FlowTable::Cookies => &raw mut (*p).cookies,
            FlowTable::Reverse => &raw mut (*p).reverse,
        }
    })
}

/// Takes a slot for a new entry of `pod` in `table`: false when the pod
/// holds its share already (`node_flags::POD_FLOW_LIMIT`; 0 = none).
///
/// The counters are shared by every CPU, so they change by atomic adds
/// (BPF `XADD`, through the compiler intrinsic: the BPF target has no
/// `core::sync::atomic` read-modify-write).
#[inline(always)]
pub(crate) fn take_flow_slot(pod: Be32, table: FlowTable) -> bool {
    let Some(count) = pod_count(pod, table) else {
        return true;
    };
    let limit = NODE_FLAGS
        .get(node_flags::POD_FLOW_LIMIT)
        .copied()
        .unwrap_or(0);
    // Check, then add: concurrent new flows of one pod may overshoot by
    // the number of CPUs, never more.
    // An aligned 64-bit load is atomic on BPF (the generic CPU has no
    // atomic-load instruction to ask for).
    // Read as signed: the agent's recount can land between a flow's take
    // and its release, leaving the count below the truth, even below zero,
    // until the next recount; that must not read as a full share.
    // SAFETY: an aligned u64 in a map value.
    if limit != 0 && unsafe { core::ptr::read_volatile(count) } as i64 >= i64::from(limit) {
        return false;
    }
    // SAFETY: as above.
    unsafe { atomic_xadd::<u64, u64, { Relaxed }>(count, 1) };
    true
}

/// Gives back a slot of `pod` in `table` (its entry was removed, or could
/// not be inserted).
#[inline(always)]
pub(crate) fn release_flow_slot(pod: Be32, table: FlowTable) {
    if let Some(count) = pod_count(pod, table) {
        // SAFETY: as in `take_flow_slot`.
        unsafe { atomic_xsub::<u64, u64, { Relaxed }>(count, 1) };
    }
}
