//! Flow state: the client side's cookie cache and the backend side's
//! reverse-flow entries (with substitute client ports where two Services'
//! flows share a 4-tuple), with FIN/RST tracking.

use aya_ebpf::maps::{lpm_trie::Key, LruHashMap};
use talaria_common::{
    be::{Be16, Be32},
    drop::DropReason,
    maps::{
        finished, node_flags, node_stat, port_policy, reverse_state, ts_flags, AffinityBackend,
        AffinityEntry, AffinityKey, AffinityKey6, BackendKey, CookieEntry, FlowKey, PortPolicy,
        ReverseEntry, ServiceKey, FIN_ACKED, FIN_FROM_BACKEND, FIN_FROM_CLIENT,
    },
    net::{tcp_flags, IPPROTO_UDP},
    wire::{flags, TalariaOpt},
};

use crate::{
    maps::{
        add_fin, drop_pkt, release_flow_slot, remove_flow, stat, take_flow_slot, FlowTable,
        NODE_AFFINITY, NODE_AFFINITY_BACKENDS, NODE_AFFINITY_V6, NODE_COOKIES, NODE_FLAGS,
        NODE_PORT_POLICY, NODE_REVERSE, NODE_SERVICES, NODE_SVC_CIDRS,
    },
    skb::now_ns,
    subst::{Held, Keyed},
    tstamp::new_flow_cookie,
};

/// What a tunnelled packet tells the flow tables: its cookie and TCP flags
/// (none for UDP).
struct Learned {
    service_id: u16,
    backend_id: u32,
    syn: bool,
    fin: bool,
    rst: bool,
}

impl Learned {
    #[inline(always)]
    fn from(opt: &TalariaOpt, tcp: u8) -> Self {
        Self {
            service_id: opt.service_id.get(),
            backend_id: opt.backend_id.get(),
            syn: tcp & tcp_flags::SYN != 0,
            fin: tcp & tcp_flags::FIN != 0,
            rst: tcp & tcp_flags::RST != 0,
        }
    }
}

/// Client side: remember which backend the switch chose for this flow.
#[inline(always)]
pub(crate) fn learn_cookie(key: &FlowKey, opt: &TalariaOpt, tcp: u8) {
    let Learned {
        service_id,
        backend_id,
        syn,
        fin,
        rst,
    } = Learned::from(opt, tcp);
    if rst {
        // SAFETY: read-only copy of a map value.
        if let Some(e) = unsafe { NODE_COOKIES.get(key) }.copied() {
            if remove_flow(&NODE_COOKIES, key, e.fin_seen, FlowTable::Cookies) {
                stat(node_stat::FLOW_RESET);
            }
        }
        return;
    }
    if opt.flags & flags::COOKIE_VALID == 0 {
        return;
    }
    if NODE_FLAGS
        .get(node_flags::IGNORE_COOKIES)
        .is_some_and(|v| *v != 0)
    {
        return;
    }
    let fin_bit = if fin { FIN_FROM_BACKEND } else { 0 };
    if let Some(e) = NODE_COOKIES.get_ptr_mut(key) {
        // SAFETY: a map value pointer, valid during this run.
        let e = unsafe { &mut *e };
        if e.backend_id == backend_id && e.service_id == service_id {
            e.last_seen_ns = now_ns();
            if !syn {
                add_fin(&mut e.fin_seen, fin_bit, key.src, FlowTable::Cookies);
                return;
            }
            // A SYN-ACK answers a new connection on a reused 4-tuple: the
            // old connection's FINs must not end it in the GC, and a
            // finished entry counts again.
            if finished(e.fin_seen) && !take_flow_slot(key.src, FlowTable::Cookies) {
                let _ = NODE_COOKIES.remove(key);
                stat(node_stat::COOKIE_REFUSED);
                return;
            }
            e.fin_seen = fin_bit;
            return;
        }
    }
    // A reply to a flow this node did not steer (a client of another
    // node's nodePort, which goes plain through the switch): no packet
    // would carry its cookie, and the entry would hold one of the
    // client's flow slots.
    if !steers(key) {
        return;
    }
    let entry = CookieEntry {
        service_id,
        fin_seen: fin_bit,
        _pad: 0,
        backend_id,
        last_seen_ns: now_ns(),
    };
    // A changed cookie replaces the flow's entry; only a new flow (or one
    // replacing a finished entry) takes a slot of the client pod's share.
    // SAFETY: read-only copy of a map value.
    let new_flow = unsafe { NODE_COOKIES.get(key) }.is_none_or(|e| finished(e.fin_seen));
    if new_flow && !take_flow_slot(key.src, FlowTable::Cookies) {
        stat(node_stat::COOKIE_REFUSED);
        return;
    }
    if NODE_COOKIES.insert(key, entry, 0).is_ok() {
        stat(node_stat::COOKIE_LEARN);
        let client = AffinityKey {
            client: key.src,
            service_id,
            _pad: 0,
        };
        // SAFETY: read-only lookup.
        let policy = unsafe { NODE_PORT_POLICY.get(&key.service_key()) };
        remember_affinity(client, policy, backend_id);
    } else if new_flow {
        // The table is full: the flow goes on uncached.
        release_flow_slot(key.src, FlowTable::Cookies);
        stat(node_stat::COOKIE_REFUSED);
    }
}

/// Whether this node steers its clients' flow `key` (client → Service) to
/// the switch: to an address in `NODE_SVC_CIDRS` (Service CIDRs, external
/// addresses), or to one of its own nodePorts.
#[inline(always)]
pub(crate) fn steers(key: &FlowKey) -> bool {
    NODE_SVC_CIDRS.get(Key::new(32, key.dst)).is_some()
        || is_own_node_port(key.dst, key.dst_port, key.proto)
}

/// Whether (`addr`, `port`, `proto`) is one of this node's own nodePorts
/// (`port_policy::NODE_PORT`, which the agent sets for its own address
/// only).
#[inline(always)]
pub(crate) fn is_own_node_port(addr: Be32, port: Be16, proto: u8) -> bool {
    let key = ServiceKey {
        vip: addr,
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: read-only use of a map value.
    unsafe { NODE_PORT_POLICY.get(&key) }.is_some_and(|p| p.flags & port_policy::NODE_PORT != 0)
}

/// A family's session-affinity map, by its key: a client and a port (by
/// its service id).
pub(crate) trait Affinity: Copy + 'static {
    fn service_id(&self) -> u16;
    fn map() -> &'static LruHashMap<Self, AffinityEntry>;
}

impl Affinity for AffinityKey {
    #[inline(always)]
    fn service_id(&self) -> u16 {
        self.service_id
    }

    #[inline(always)]
    fn map() -> &'static LruHashMap<Self, AffinityEntry> {
        &NODE_AFFINITY
    }
}

impl Affinity for AffinityKey6 {
    #[inline(always)]
    fn service_id(&self) -> u16 {
        self.service_id
    }

    #[inline(always)]
    fn map() -> &'static LruHashMap<Self, AffinityEntry> {
        &NODE_AFFINITY_V6
    }
}

/// The backend the session affinity `key` (a client, a port of `policy`)
/// names, while it is younger than the port's timeout and still takes new
/// flows; its clock restarts, as kube-proxy's affinity set is updated by
/// every new connection.
#[inline(always)]
pub(crate) fn affinity_backend<K: Affinity>(key: K, policy: &PortPolicy) -> Option<u32> {
    if policy.flags & port_policy::AFFINITY == 0 {
        return None;
    }
    // SAFETY: a map value pointer, valid during this run; a race with
    // another CPU only loses a timestamp.
    let e = unsafe { &mut *K::map().get_ptr_mut(&key)? };
    let live = AffinityBackend {
        service_id: policy.service_id,
        _pad: 0,
        backend_id: e.backend_id,
    };
    let now = now_ns();
    let timeout_ns = u64::from(policy.affinity_timeout_s) * 1_000_000_000;
    // SAFETY: read-only lookup.
    if now.wrapping_sub(e.last_ns) >= timeout_ns
        || unsafe { NODE_AFFINITY_BACKENDS.get(&live) }.is_none()
    {
        return None;
    }
    e.last_ns = now;
    Some(e.backend_id)
}

/// A client's flow learned its backend: for a port with session affinity
/// (`policy`, the port's), that backend is the client's (`key`) until the
/// timeout.
#[inline(always)]
pub(crate) fn remember_affinity<K: Affinity>(key: K, policy: Option<&PortPolicy>, backend_id: u32) {
    let Some(policy) = policy else {
        return;
    };
    if policy.flags & port_policy::AFFINITY == 0 || policy.service_id != key.service_id() {
        return;
    }
    let entry = AffinityEntry {
        backend_id,
        _pad: 0,
        last_ns: now_ns(),
    };
    let _ = K::map().insert(&key, &entry, 0);
}

/// Backend side: a request of a flow in `state`, with the option's flags
/// `fl`: whether it is the one after which the client's node must be told
/// the cookie ([`reverse_state`]).
#[inline(always)]
fn one_way_request(state: &mut u8, fl: u8) -> bool {
    if fl & flags::NEW_FLOW == 0 || *state & (reverse_state::REPLIED | reverse_state::NOTIFIED) != 0
    {
        return false;
    }
    let n = (*state & reverse_state::REQUESTS) + 1;
    if n >= reverse_state::NOTIFY_AFTER {
        *state |= reverse_state::NOTIFIED;
        return true;
    }
    *state = (*state & !reverse_state::REQUESTS) | n;
    false
}

/// What [`learn_reverse`] tells the uplink about a request.
pub(crate) struct Reversed {
    /// The client port the backend pod must see: the client's own, or a
    /// substitute when another Service's flow holds the 4-tuple
    /// ([`talaria_common::maps::PortSubstKey`]).
    pub(crate) port: Be16,
    /// A UDP flow's request that must tell the client's node its cookie
    /// (`flags::NOTIFY`).
    pub(crate) notify: bool,
    /// The flow's `ts_flags` and `ts_last_real`, for restoring an outside
    /// client's echo (`tstamp::restore_echo`); zero for a new flow.
    pub(crate) ts: (u8, u32),
}

impl Reversed {
    #[inline(always)]
    fn port(port: Be16) -> Self {
        Self {
            port,
            notify: false,
            ts: (0, 0),
        }
    }
}

/// Backend side: remember how to send this flow's replies. `key` is the
/// backend's view of the flow as it arrived (src = backend pod, dst =
/// client). `fin_ack`: for a client's TCP FIN, the low byte of the
/// acknowledgment that covers it (`ReverseEntry::state`).
#[inline(always)]
pub(crate) fn learn_reverse(
    key: &FlowKey,
    opt: &TalariaOpt,
    tcp: u8,
    fin_ack: u8,
) -> Result<Reversed, i32> {
    let Learned {
        service_id,
        backend_id,
        syn,
        fin,
        rst,
    } = Learned::from(opt, tcp);
    // Which entry holds this flow: the 4-tuple's own, or its substitute's.
    let held = Held::of(key, service_id);
    if rst {
        let Some(port) = held.reset(key, service_id) else {
            return Ok(Reversed::port(key.dst_port));
        };
        let k = key.with_client_port(port);
        // SAFETY: read-only copy of a map value.
        if let Some(e) = unsafe { NODE_REVERSE.get(&k) }.copied() {
            if remove_flow(&NODE_REVERSE, &k, e.fin_seen, FlowTable::Reverse) {
                stat(node_stat::FLOW_RESET);
            }
        }
        return Ok(Reversed::port(port));
    }
    if opt.flags & flags::COOKIE_VALID == 0 {
        return Err(drop_pkt(DropReason::NoBackend));
    }
    let Keyed { port, client_port } = held.keyed(key, service_id)?;
    let k = key.with_client_port(port);
    let fin_bit = if fin { FIN_FROM_CLIENT } else { 0 };
    let udp = key.proto == IPPROTO_UDP;
    if let Some(e) = NODE_REVERSE.get_ptr_mut(&k) {
        // SAFETY: a map value pointer, valid during this run.
        let e = unsafe { &mut *e };
        // This flow's entry, not another client port's that had this one
        // as its substitute (a client may use any port).
        if e.backend_id == backend_id && e.service_id == service_id && e.client_port == client_port
        {
            e.last_seen_ns = now_ns();
            if !syn {
                add_fin(&mut e.fin_seen, fin_bit, key.src, FlowTable::Reverse);
                if fin {
                    e.state = fin_ack;
                } else if !udp && finished(e.fin_seen) {
                    // After both FINs the client only acknowledges.
                    e.fin_seen |= FIN_ACKED;
                }
                let notify = udp && one_way_request(&mut e.state, opt.flags);
                return Ok(Reversed {
                    port,
                    notify,
                    ts: (e.ts_flags, e.ts_last_real),
                });
            }
            // A SYN opens a new connection on a reused 4-tuple: the old
            // connection's FINs must not end it in the GC, and a finished
            // entry counts again.
            let reused = finished(e.fin_seen);
            if reused && !take_flow_slot(key.src, FlowTable::Reverse) {
                return Err(drop_pkt(DropReason::FlowLimit));
            }
            e.fin_seen = fin_bit;
            // A new connection gets its cookie afresh; a repeated SYN of a
            // stamping one keeps it (its SYN-ACK may have gone stamped).
            if reused || e.ts_flags & ts_flags::STAMP == 0 {
                (e.ts_cookie, e.ts_flags) = new_flow_cookie(opt, key.proto);
                e.ts_last_real = 0;
            }
            return Ok(Reversed::port(port));
        }
    }
    // SAFETY: read-only copy of a map value.
    let svc = match unsafe { NODE_SERVICES.get(service_id as u32) } {
        Some(s) => *s,
        None => return Err(drop_pkt(DropReason::NoService)),
    };
    let (ts_cookie, ts_flags) = new_flow_cookie(opt, key.proto);
    let mut entry = ReverseEntry {
        vip: svc.vip,
        vip_port: svc.port,
        service_id,
        backend_id,
        fin_seen: fin_bit,
        state: 0,
        client_port,
        last_seen_ns: now_ns(),
        ts_last_real: 0,
        ts_cookie,
        ts_flags,
        _pad: 0,
    };
    if udp {
        one_way_request(&mut entry.state, opt.flags);
    } else if fin {
        entry.state = fin_ack;
    }
    // Replacing another open flow's entry (a reused 4-tuple of the same
    // Service) takes no new slot.
    // SAFETY: read-only copy of a map value.
    let new_flow = unsafe { NODE_REVERSE.get(&k) }.is_none_or(|e| finished(e.fin_seen));
    if new_flow && !take_flow_slot(key.src, FlowTable::Reverse) {
        return Err(drop_pkt(DropReason::FlowLimit));
    }
    if NODE_REVERSE.insert(&k, &entry, 0).is_err() {
        // The table is full; a flow whose replies cannot be reverse-NATed
        // must not start.
        if new_flow {
            release_flow_slot(key.src, FlowTable::Reverse);
        }
        return Err(drop_pkt(DropReason::FlowLimit));
    }
    stat(node_stat::REVERSE_LEARN);
    Ok(Reversed::port(port))
}
