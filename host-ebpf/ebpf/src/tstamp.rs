//! The timestamp cookie of TCP clients outside the cluster
//! (`talaria_common::ts_cookie`, after Cheetah): the backend's TSvals
//! leave stamped with the flow's cookie, the client's echoes of them come
//! back restored, so neither end's TCP sees the cookie.
//!
//! Its entry points are BPF subprograms (`inline(never)`), with small
//! frames: inlined, they would push `node_uplink_ingress` past the 512
//! bytes of stack a program and its calls may use. The option walk runs in
//! a `bpf_loop` callback, one option per iteration.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{bpf_loop, bpf_skb_load_bytes},
    programs::TcContext,
};
use talaria_common::{
    be::Be32,
    maps::{node_stat, ts_flags, NodeTsCookie, ReverseEntry},
    net::{tcp_flags, tcp_opt, IPPROTO_TCP, TCP_HDR_LEN},
    ts_cookie::{cookie, restore, stamp},
    wire::{flags, TalariaOpt},
};

use crate::maps::{stat, NODE_TS_COOKIE};

/// The timestamp fields of a new reverse-flow entry (`ts_cookie`,
/// `ts_flags`): stamping, with the cookie of the option's (service,
/// backend) under this node's key, for an outside client's TCP flow
/// (`EXTERNAL | COOKIE_VALID`) when the node has a key; else none.
#[inline(never)]
pub(crate) fn new_flow_cookie(opt: &TalariaOpt, proto: u8) -> (u16, u8) {
    let external = flags::EXTERNAL | flags::COOKIE_VALID;
    if proto != IPPROTO_TCP || opt.flags & external != external {
        return (0, 0);
    }
    match NODE_TS_COOKIE.get(0) {
        Some(NodeTsCookie { key, enabled, .. }) if *enabled != 0 => (
            cookie(key, opt.service_id.get(), opt.backend_id.get()),
            ts_flags::STAMP,
        ),
        _ => (0, 0),
    }
}

/// The state of a walk over a TCP header's options, shared with
/// [`walk_option`] through `bpf_loop`.
#[repr(C)]
struct OptWalk {
    skb: *mut __sk_buff,
    /// Packet offset of the first option byte.
    opts: u64,
    /// Option bytes in the header.
    len: u64,
    /// Index of the next option.
    i: u64,
    /// Index of the Timestamps option; [`NOT_FOUND`] while none.
    found: u64,
}

const NOT_FOUND: u64 = u64::MAX;

/// One `bpf_loop` iteration: [`tcp_opt::step`] on the option at `w.i`.
/// Returns 0 to go on, 1 to stop.
extern "C" fn walk_option(_index: u64, w: *mut c_void) -> i64 {
    // SAFETY: `bpf_loop` passes the `OptWalk` of `timestamps_off`'s frame.
    let w = unsafe { &mut *w.cast::<OptWalk>() };
    let (skb, opts) = (w.skb, w.opts);
    let byte = |i: usize| {
        let mut b = 0u8;
        // SAFETY: a one-byte copy into a local.
        let r = unsafe {
            bpf_skb_load_bytes(
                skb as *const c_void,
                (opts + i as u64) as u32,
                (&raw mut b).cast(),
                1,
            )
        };
        (r == 0).then_some(b)
    };
    match tcp_opt::step(w.len as usize, w.i as usize, byte) {
        tcp_opt::Step::Next(next) => {
            w.i = next as u64;
            0
        }
        tcp_opt::Step::Found(at) => {
            w.found = at as u64;
            1
        }
        tcp_opt::Step::End => 1,
    }
}

/// Where the Timestamps option of the TCP header at `l4_off` is (the
/// packet offset of its kind byte), if it has a well-formed one. The
/// options are walked with `bpf_loop` (its callback is verified once),
/// reading the packet a byte at a time.
#[inline(always)]
fn timestamps_off(ctx: &TcContext, l4_off: usize) -> Option<usize> {
    let doff = usize::from(ctx.load::<u8>(l4_off + 12).ok()? >> 4) * 4;
    let len = doff.checked_sub(TCP_HDR_LEN)?;
    if len == 0 {
        return None;
    }
    let mut w = OptWalk {
        skb: ctx.skb.skb,
        opts: (l4_off + TCP_HDR_LEN) as u64,
        len: len as u64,
        i: 0,
        found: NOT_FOUND,
    };
    // SAFETY: a static callback and a context on this frame.
    unsafe {
        bpf_loop(
            tcp_opt::MAX_LEN as u32,
            walk_option as *mut c_void,
            (&raw mut w).cast(),
            0,
        )
    };
    (w.found != NOT_FOUND).then(|| (w.opts + w.found) as usize)
}

/// Replaces the 32-bit word at `off` of the TCP segment at `l4_off` with
/// `new`, the checksum updated incrementally (CHECKSUM_PARTIAL and GSO
/// packets included: the word is not in the pseudo-header).
#[inline(always)]
fn rewrite_word(ctx: &TcContext, l4_off: usize, off: usize, old: Be32, new: Be32) -> Option<()> {
    let raw = |v: Be32| u64::from(u32::from_ne_bytes(v.0));
    ctx.l4_csum_replace(l4_off + 16, raw(old), raw(new), 4)
        .ok()?;
    ctx.store(off, &new, 0).ok()
}

/// A backend's TCP segment (header at `l4_off`) on a flow whose entry
/// stamps: its TSval, if it carries one, becomes the stamped one, and the
/// real one is kept in `entry` for the client's echoes. Anything
/// malformed or without timestamps goes as it is.
#[inline(never)]
pub(crate) fn stamp_reply(ctx: &TcContext, l4_off: usize, entry: &mut ReverseEntry) {
    if entry.ts_flags & ts_flags::STAMP == 0 {
        return;
    }
    let Some(ts) = timestamps_off(ctx, l4_off) else {
        return;
    };
    let Ok(real) = ctx.load::<Be32>(ts + 2) else {
        return;
    };
    entry.ts_last_real = real.get();
    entry.ts_flags |= ts_flags::SENT;
    let stamped = Be32::new(stamp(real.get(), entry.ts_cookie));
    if stamped == real || rewrite_word(ctx, l4_off, ts + 2, real, stamped).is_some() {
        stat(node_stat::TS_STAMPED);
    }
}

/// An outside client's TCP segment (header at `l4_off`, with TCP flags
/// `tcp`) on a flow whose entry's `ts_flags` and `ts_last_real` are `ts`:
/// when it stamps and has sent a stamped TSval, the TSecr of an
/// acknowledgment becomes what the backend really sent ([`restore`]). A
/// SYN's TSecr is 0 and goes as it is.
#[inline(never)]
pub(crate) fn restore_echo(ctx: &TcContext, l4_off: usize, tcp: u8, ts: (u8, u32)) {
    let (flags, last_real) = ts;
    let sent = ts_flags::STAMP | ts_flags::SENT;
    if flags & sent != sent || tcp & tcp_flags::ACK == 0 {
        return;
    }
    let Some(ts) = timestamps_off(ctx, l4_off) else {
        return;
    };
    let Ok(echoed) = ctx.load::<Be32>(ts + 6) else {
        return;
    };
    let real = Be32::new(restore(echoed.get(), last_real));
    if real == echoed || rewrite_word(ctx, l4_off, ts + 6, echoed, real).is_some() {
        stat(node_stat::TS_RESTORED);
    }
}
