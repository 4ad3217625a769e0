//! Flow state: the client side's cookie cache and the backend side's
//! reverse-flow entries (with substitute client ports where two Services'
//! flows share a 4-tuple), with FIN/RST tracking.

use talaria_common::{
    be::Be16,
    drop::DropReason,
    maps::{
        node_flags, node_stat, CookieEntry, FlowKey, PortSubstKey, ReverseEntry, FIN_FROM_BACKEND,
        FIN_FROM_CLIENT, SUBST_PORT_COUNT, SUBST_PORT_FIRST,
    },
    net::tcp_flags,
    wire::{flags, TalariaOpt},
};

use crate::{
    maps::{
        drop_pkt, release_flow_slot, stat, take_flow_slot, FlowTable, NODE_COOKIES, NODE_FLAGS,
        NODE_PORT_SUBST, NODE_REVERSE, NODE_SERVICES,
    },
    skb::now_ns,
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
        if NODE_COOKIES.remove(key).is_ok() {
            release_flow_slot(key.src, FlowTable::Cookies);
            stat(node_stat::FLOW_RESET);
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
            // A SYN-ACK answers a new connection on a reused 4-tuple: the
            // old connection's FINs must not end it in the GC.
            e.fin_seen = if syn { fin_bit } else { e.fin_seen | fin_bit };
            return;
        }
    }
    let entry = CookieEntry {
        service_id,
        fin_seen: fin_bit,
        _pad: 0,
        backend_id,
        last_seen_ns: now_ns(),
    };
    // A changed cookie replaces the flow's entry; only a new flow takes a
    // slot of the client pod's share.
    // SAFETY: only tests for presence.
    let new_flow = unsafe { NODE_COOKIES.get(key) }.is_none();
    if new_flow && !take_flow_slot(key.src, FlowTable::Cookies) {
        stat(node_stat::COOKIE_REFUSED);
        return;
    }
    if NODE_COOKIES.insert(key, entry, 0).is_ok() {
        stat(node_stat::COOKIE_LEARN);
    } else if new_flow {
        // The table is full: the flow goes on uncached.
        release_flow_slot(key.src, FlowTable::Cookies);
        stat(node_stat::COOKIE_REFUSED);
    }
}

/// The client port a backend's new flow gets when another Service's flow
/// holds its 4-tuple: the first of a few hashed candidates in the
/// substitute range that no flow uses.
#[inline(always)]
fn free_substitute(key: &FlowKey, service_id: u16) -> Option<Be16> {
    let h = (u32::from_ne_bytes(key.dst.0) ^ u32::from(key.dst_port.get()).rotate_left(16))
        .wrapping_add(u32::from(service_id))
        .wrapping_mul(0x9e37_79b1);
    for i in 0..SUBST_TRIES {
        let offset = (h >> 16).wrapping_add(i.wrapping_mul(2654)) % u32::from(SUBST_PORT_COUNT);
        let port = Be16::new(SUBST_PORT_FIRST + offset as u16);
        let candidate = FlowKey {
            dst_port: port,
            ..*key
        };
        // SAFETY: only tests for presence.
        if unsafe { NODE_REVERSE.get(&candidate) }.is_none() {
            return Some(port);
        }
    }
    None
}

/// Candidates tried before a flow is refused (`port_exhausted`).
const SUBST_TRIES: u32 = 8;

/// Backend side: remember how to send this flow's replies. `key` is the
/// backend's view of the flow as it arrived (src = backend pod, dst =
/// client). Returns the client port the backend pod must see: the
/// client's own, or a substitute when another Service's flow holds the
/// 4-tuple ([`PortSubstKey`]).
#[inline(always)]
pub(crate) fn learn_reverse(key: &FlowKey, opt: &TalariaOpt, tcp: u8) -> Result<Be16, i32> {
    let Learned {
        service_id,
        backend_id,
        syn,
        fin,
        rst,
    } = Learned::from(opt, tcp);
    let subst_key = PortSubstKey {
        flow: *key,
        service_id,
        _pad: [0; 2],
    };
    // Which entry holds this flow: the 4-tuple's own, or its substitute's.
    // SAFETY: read-only copies of map values.
    let own = unsafe { NODE_REVERSE.get(key) }.map(|e| e.service_id);
    let substitute = match own {
        Some(s) if s == service_id => None,
        // Another Service's flow has the 4-tuple, or had it when this one
        // started (a substituted flow keeps its port after the other ends).
        _ => unsafe { NODE_PORT_SUBST.get(&subst_key) }.copied(),
    };
    if rst {
        let k = FlowKey {
            dst_port: substitute.unwrap_or(key.dst_port),
            ..*key
        };
        if NODE_REVERSE.remove(&k).is_ok() {
            release_flow_slot(key.src, FlowTable::Reverse);
            stat(node_stat::FLOW_RESET);
        }
        if substitute.is_some() {
            let _ = NODE_PORT_SUBST.remove(&subst_key);
        }
        return Ok(k.dst_port);
    }
    if opt.flags & flags::COOKIE_VALID == 0 {
        return Err(drop_pkt(DropReason::NoBackend));
    }
    let port = match (own, substitute) {
        (_, Some(p)) => p,
        (Some(s), None) if s != service_id => {
            let p = free_substitute(key, service_id)
                .ok_or_else(|| drop_pkt(DropReason::PortExhausted))?;
            if NODE_PORT_SUBST.insert(&subst_key, &p, 0).is_err() {
                return Err(drop_pkt(DropReason::PortExhausted));
            }
            stat(node_stat::PORT_SUBST);
            p
        }
        _ => key.dst_port,
    };
    let k = FlowKey {
        dst_port: port,
        ..*key
    };
    let fin_bit = if fin { FIN_FROM_CLIENT } else { 0 };
    if let Some(e) = NODE_REVERSE.get_ptr_mut(&k) {
        // SAFETY: a map value pointer, valid during this run.
        let e = unsafe { &mut *e };
        if e.backend_id == backend_id && e.service_id == service_id {
            e.last_seen_ns = now_ns();
            // A SYN opens a new connection on a reused 4-tuple: the old
            // connection's FINs must not end it in the GC.
            e.fin_seen = if syn { fin_bit } else { e.fin_seen | fin_bit };
            return Ok(port);
        }
    }
    // SAFETY: read-only copy of a map value.
    let svc = match unsafe { NODE_SERVICES.get(service_id as u32) } {
        Some(s) => *s,
        None => return Err(drop_pkt(DropReason::NoService)),
    };
    let entry = ReverseEntry {
        vip: svc.vip,
        vip_port: svc.port,
        service_id,
        backend_id,
        fin_seen: fin_bit,
        _pad: 0,
        client_port: if port == key.dst_port {
            Be16::new(0)
        } else {
            key.dst_port
        },
        last_seen_ns: now_ns(),
    };
    // Replacing another flow's entry (a reused 4-tuple of the same
    // Service) takes no new slot.
    // SAFETY: only tests for presence.
    let new_flow = unsafe { NODE_REVERSE.get(&k) }.is_none();
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
    Ok(port)
}
