//! Substitute client ports of backend-side flows, for both families
//! ([`PortSubstKey`]): when another Service's flow holds a request's
//! 4-tuple at the backend, the new flow is keyed, and seen by the backend
//! pod, on a free port of the substitute range instead.

use aya_ebpf::maps::{HashMap, LruHashMap};
use talaria_common::{
    be::Be16,
    drop::DropReason,
    maps::{
        node_stat, reusable, BackendKey, FlowKey, FlowKey6, PortSubstKey, ReverseEntry,
        ReverseEntry6, ReverseFlow,
    },
};

use crate::maps::{
    drop_pkt, stat, NODE_PORT_SUBST, NODE_PORT_SUBST_V6, NODE_REVERSE, NODE_REVERSE_V6,
};

/// A family's backend-side flow maps, by its flow key: the reverse-flow
/// entries and the substitutes.
pub(crate) trait Backend: BackendKey + 'static {
    type Entry: ReverseFlow + Copy + 'static;
    fn reverse() -> &'static HashMap<Self, Self::Entry>;
    fn substitutes() -> &'static LruHashMap<PortSubstKey<Self>, Be16>;
}

impl Backend for FlowKey {
    type Entry = ReverseEntry;

    #[inline(always)]
    fn reverse() -> &'static HashMap<Self, ReverseEntry> {
        &NODE_REVERSE
    }

    #[inline(always)]
    fn substitutes() -> &'static LruHashMap<PortSubstKey<Self>, Be16> {
        &NODE_PORT_SUBST
    }
}

impl Backend for FlowKey6 {
    type Entry = ReverseEntry6;

    #[inline(always)]
    fn reverse() -> &'static HashMap<Self, ReverseEntry6> {
        &NODE_REVERSE_V6
    }

    #[inline(always)]
    fn substitutes() -> &'static LruHashMap<PortSubstKey<Self>, Be16> {
        &NODE_PORT_SUBST_V6
    }
}

/// Candidates tried before a flow is refused (`port_exhausted`).
const SUBST_TRIES: u32 = 8;

/// The client port a backend's new flow gets when another Service's flow
/// holds its 4-tuple: the first of a few hashed candidates in the
/// substitute range that no flow uses.
#[inline(always)]
fn free_substitute<K: Backend>(key: &K, service_id: u16) -> Option<Be16> {
    for i in 0..SUBST_TRIES {
        let port = key.subst_candidate(service_id, i);
        // SAFETY: read-only copy of a map value.
        let e = unsafe { K::reverse().get(&key.with_client_port(port)) };
        if e.is_none_or(|e| reusable(e.fin_seen())) {
            return Some(port);
        }
    }
    None
}

/// Whether the reverse entry on substitute `port` is the flow `subst`'s,
/// or the port is free. A substitute whose flow ended can be taken by
/// another flow before the GC drops it from the substitutes; it is not
/// this flow's any more.
#[inline(always)]
fn holds_or_free<K: Backend>(subst: &PortSubstKey<K>, port: Be16) -> bool {
    // SAFETY: read-only copy of a map value.
    match unsafe { K::reverse().get(&subst.flow.with_client_port(port)) } {
        Some(e) => subst.held_by(e) || reusable(e.fin_seen()),
        None => true,
    }
}

/// Where a backend-side flow (the backend's key with the client's own
/// port, and its Service) stands, before its request is learned.
#[derive(Clone, Copy)]
pub(crate) struct Held {
    /// Another flow holds the 4-tuple: another Service's, or another
    /// client port's substitute that happens to be this client's port
    /// (clients may use any port, substitutes included). An entry whose
    /// backend kept no TIME_WAIT (the client closed first) holds nothing:
    /// a new flow takes its 4-tuple over.
    taken: bool,
    /// The flow's substitute, while its port is free or still this
    /// flow's (a substituted flow keeps its port after the other ends).
    substitute: Option<Be16>,
}

/// The client port a flow's entry is keyed on, and what the entry records
/// of the client's own (`client_port`: 0 when they are the same).
pub(crate) struct Keyed {
    pub(crate) port: Be16,
    pub(crate) client_port: Be16,
}

impl Held {
    /// Where the flow `key` (the backend's view, client port as the client
    /// sent it) of Service `service_id` stands.
    #[inline(always)]
    pub(crate) fn of<K: Backend>(key: &K, service_id: u16) -> Self {
        // SAFETY: read-only copies of map values.
        let own = unsafe { K::reverse().get(key) }.filter(|e| !reusable(e.fin_seen()));
        let own_is_ours =
            own.is_some_and(|e| e.service_id() == service_id && e.client_port().get() == 0);
        let substitute = if own_is_ours {
            None
        } else {
            let subst = PortSubstKey::new(*key, service_id);
            // SAFETY: as above.
            unsafe { K::substitutes().get(&subst) }
                .copied()
                .filter(|p| holds_or_free(&subst, *p))
        };
        Self {
            taken: own.is_some() && !own_is_ours,
            substitute,
        }
    }

    /// An RST of the flow: the client port its entry is keyed on, if it
    /// has one (none: another flow's 4-tuple, and no substitute of this
    /// one, so nothing to end here). Its substitute is forgotten.
    #[inline(always)]
    pub(crate) fn reset<K: Backend>(self, key: &K, service_id: u16) -> Option<Be16> {
        match (self.taken, self.substitute) {
            (_, Some(p)) => {
                let _ = K::substitutes().remove(&PortSubstKey::new(*key, service_id));
                Some(p)
            }
            (false, None) => Some(key.client_port()),
            (true, None) => None,
        }
    }

    /// A request of the flow: the port its entry is keyed on, its
    /// substitute, or a new one when another flow holds the 4-tuple
    /// (`port_subst`; none free: `port_exhausted`), else the client's own.
    #[inline(always)]
    pub(crate) fn keyed<K: Backend>(self, key: &K, service_id: u16) -> Result<Keyed, i32> {
        let port = match self.substitute {
            Some(p) => p,
            None if self.taken => {
                let p = free_substitute(key, service_id)
                    .ok_or_else(|| drop_pkt(DropReason::PortExhausted))?;
                let subst = PortSubstKey::new(*key, service_id);
                if K::substitutes().insert(&subst, &p, 0).is_err() {
                    return Err(drop_pkt(DropReason::PortExhausted));
                }
                stat(node_stat::PORT_SUBST);
                p
            }
            None => key.client_port(),
        };
        let own = key.client_port();
        Ok(Keyed {
            port,
            client_port: if port == own { Be16::new(0) } else { own },
        })
    }
}

/// The backend side's entry of the flow `key` (the backend's view, client
/// port as the client sent it) of Service `service_id`, and the client
/// port it is keyed on: the client's own, or the flow's substitute.
#[inline(always)]
pub(crate) fn find_reverse<K: Backend>(
    key: &K,
    service_id: u16,
) -> Option<(Be16, &'static K::Entry)> {
    // SAFETY: read-only uses of map values, valid during this run.
    if let Some(e) = unsafe { K::reverse().get(key) } {
        if e.service_id() == service_id && e.client_port().get() == 0 {
            return Some((key.client_port(), e));
        }
    }
    let subst_key = PortSubstKey::new(*key, service_id);
    // SAFETY: as above.
    let port = unsafe { K::substitutes().get(&subst_key) }.copied()?;
    // SAFETY: as above.
    let e = unsafe { K::reverse().get(&key.with_client_port(port)) }?;
    subst_key.held_by(e).then_some((port, e))
}

/// The backend reset the flow whose entry `e` is keyed on `key` (the
/// backend's view, as its packet left): its substitute goes too. A BPF
/// subprogram: its two keys in `reply6`'s frame would overflow the
/// 512-byte stack of the pod hook's IPv6 call chain.
#[inline(never)]
pub(crate) fn forget_substitute<K: Backend>(key: &K, e: &K::Entry) {
    if e.client_port().get() != 0 {
        let flow = key.with_client_port(e.client_port());
        let _ = K::substitutes().remove(&PortSubstKey::new(flow, e.service_id()));
    }
}
