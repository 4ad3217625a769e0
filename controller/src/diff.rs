//! Desired vs actual switch state → ordered write batches.
//!
//! Order never leaves a dangling reference on the switch:
//! 1. inserts and modifies, table by table in [`INSERT_ORDER`]
//!    (routes, switch address, pod nodes, then backend → backend_v6 →
//!    cookie_check → ts_cookie → lb_bucket → service_v4 → service_v6):
//!    whatever an entry points at exists first;
//! 2. deletes in the reverse order (service_v6 → service_v4 → lb_bucket →
//!    ts_cookie → cookie_check → backend_v6 → backend): nothing still
//!    points at what goes away.
//!
//! A shrinking service therefore gets its smaller `bucket_mask` (modify, in
//! step 1) before its high buckets are deleted (step 2); a removed backend
//! has its buckets re-pointed (step 1) before its cookie_check and backend
//! entries go (step 2).
//!
//! Three ways to diff, all with that order and one merge of key-ordered
//! entry streams ([`FullDiff`]):
//! - [`diff`]: two [`Contents`] (small states, tests);
//! - [`region_diff`]: only the part of the tables a [`PlanChanges`] touches
//!   (the incremental path: a change to one Service diffs that Service's
//!   entries, not the whole switch);
//! - [`FullDiff`]: everything, produced chunk by chunk from the compact
//!   desired state, so a full sync never holds the whole diff in memory.

use std::collections::BTreeSet;

use serde::Serialize;
use talaria_tables::{
    backend, backend_v6, cookie_check, lb_bucket, ts_cookie, Contents, Entry, EntryKey, Table,
};

use crate::{
    entries::{cookie_entry, Tables, INSERT_ORDER},
    plan::{Desired, PlanChanges},
    types::ServiceKey,
};

/// The kind of a P4Runtime update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Op {
    /// `INSERT`.
    Insert,
    /// `MODIFY`.
    Modify,
    /// `DELETE`.
    Delete,
}

/// Updates of one kind to one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Batch {
    /// Update kind.
    pub op: Op,
    /// Table.
    pub table: Table,
    /// Entries (for deletes only the key matters).
    pub entries: Vec<Entry>,
}

/// Applies `batches` to `state`, as the switch would.
pub fn apply(state: &mut Contents, batches: &[Batch]) {
    for b in batches {
        for e in &b.entries {
            match b.op {
                Op::Delete => {
                    state.remove(&e.key());
                }
                Op::Insert | Op::Modify => {
                    state.insert(*e);
                }
            }
        }
    }
}

/// The ordered batches that turn `have` into `want`. Empty when equal.
pub fn diff(want: &Contents, have: &Contents) -> Vec<Batch> {
    let mut full = FullDiff::default();
    let mut out: Vec<Batch> = Vec::new();
    while let Some(c) = full.next_chunk(want, have, usize::MAX) {
        out.push(Batch {
            op: c.op,
            table: c.table,
            entries: c.entries,
        });
    }
    out
}

/// Total updates in `batches`.
pub fn update_count(batches: &[Batch]) -> usize {
    batches.iter().map(|b| b.entries.len()).sum()
}

/// The ordered batches that bring the region `ch` touches from `have` to
/// `want`, plus the (small) fabric tables in full.
///
/// The region is closed over the references between tables: the ports
/// `ch` names, every service id those ports have in `want` or `have`, every
/// port (in either) holding one of those ids, and every backend id their
/// cookie_check or lb_bucket entries name in either. Outside the region
/// `have` is assumed to match `want` (the switch task keeps that true by
/// diffing every change it is told about, and resyncing in full otherwise),
/// so a backend entry is deleted only when no port wants it at all.
pub fn region_diff(want: &Desired, have: &Contents, ch: &PlanChanges) -> Vec<Batch> {
    let mut keys: BTreeSet<ServiceKey> = ch.keys.clone();
    let mut sids: BTreeSet<u16> = ch.sids.clone();
    // The service ids of the switch's service_v4 and service_v6 entries.
    let have_services = || {
        have.entries(Table::ServiceV4)
            .chain(have.entries(Table::ServiceV6))
            .filter_map(|e| ServiceKey::from_entry(&e)?.ok())
    };
    let sid_of = |e: Entry| Some(ServiceKey::from_entry(&e)?.ok()?.1 .0);
    loop {
        let before = (keys.len(), sids.len());
        for k in &keys {
            sids.extend(want.port(k).map(|p| p.service_id));
            sids.extend(have.get(&k.entry_key()).and_then(sid_of));
        }
        for s in &sids {
            keys.extend(want.port_by_sid(*s).map(|p| p.key));
        }
        keys.extend(
            have_services()
                .filter(|(_, (sid, _, _))| sids.contains(sid))
                .map(|(k, _)| k),
        );
        if (keys.len(), sids.len()) == before {
            break;
        }
    }
    let fabric = |c: &Contents| Contents {
        ipv4_route: c.ipv4_route.clone(),
        switch_addr: c.switch_addr.clone(),
        pod_node: c.pod_node.clone(),
        pod_node_v6: c.pod_node_v6.clone(),
        ..Contents::default()
    };
    let mut w = fabric(&want.fabric);
    let mut h = fabric(have);
    // A handful of endpoints without an agent: compared whole.
    for e in want.entries_after(Table::EndpointReply, None) {
        w.insert(e);
    }
    h.endpoint_reply = have.endpoint_reply.clone();
    let mut backends: BTreeSet<u32> = ch.backends.clone();
    for k in &keys {
        if let Some(e) = want.port(k).and_then(|p| p.service_entry()) {
            w.insert(e);
        }
        if let Some(e) = have.get(&k.entry_key()) {
            h.insert(e);
        }
    }
    for &s in &sids {
        if let Some(p) = want.port_by_sid(s) {
            for e in p.bucket_entries(0) {
                w.insert(e.into());
            }
            for (id, _) in p.entry_backends() {
                w.insert(cookie_entry(s, id));
                backends.insert(id);
            }
            for e in want.ts_cookie_entries(p) {
                w.insert(e.into());
            }
        }
        let stamps = ts_cookie::Key {
            service_id: s,
            cookie: 0,
        }..=ts_cookie::Key {
            service_id: s,
            cookie: u16::MAX,
        };
        for (k, a) in have.ts_cookie.range(stamps) {
            h.ts_cookie.insert(*k, *a);
        }
        let buckets = lb_bucket::Key {
            service_id: s,
            bucket: 0,
        }..=lb_bucket::Key {
            service_id: s,
            bucket: u16::MAX,
        };
        for (k, a) in have.lb_bucket.range(buckets) {
            h.lb_bucket.insert(*k, *a);
            let lb_bucket::Action::SelectBackend { backend_id } = *a;
            backends.insert(backend_id);
        }
        let cookies = cookie_check::Key {
            service_id: s,
            backend_id: 0,
        }..=cookie_check::Key {
            service_id: s,
            backend_id: u32::MAX,
        };
        for (k, a) in have.cookie_check.range(cookies) {
            h.cookie_check.insert(*k, *a);
            backends.insert(k.backend_id);
        }
    }
    // An id is in one table or the other (one id space); a switch may
    // hold it in both, which the diff then cleans up.
    for id in backends {
        if let Some(b) = want.backend(id) {
            w.insert(b.entry(id));
        }
        let key = backend::Key { backend_id: id };
        if let Some(a) = have.backend.get(&key) {
            h.backend.insert(key, *a);
        }
        let key = backend_v6::Key { backend_id: id };
        if let Some(a) = have.backend_v6.get(&key) {
            h.backend_v6.insert(key, *a);
        }
    }
    diff(&w, &h)
}

/// One Write's worth of updates: one kind, one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Chunks of one phase have no dependencies among them (they may be
    /// written in parallel); a phase starts after the previous one is done.
    pub phase: usize,
    /// Update kind.
    pub op: Op,
    /// Table.
    pub table: Table,
    /// Entries.
    pub entries: Vec<Entry>,
}

/// Splits batches into chunks of at most `max` entries, one phase per batch.
pub fn chunks(batches: Vec<Batch>, max: usize) -> Vec<Chunk> {
    let max = max.max(1);
    let mut out = Vec::new();
    for (phase, b) in batches.into_iter().enumerate() {
        if b.entries.len() <= max {
            out.push(Chunk {
                phase,
                op: b.op,
                table: b.table,
                entries: b.entries,
            });
            continue;
        }
        for c in b.entries.chunks(max) {
            out.push(Chunk {
                phase,
                op: b.op,
                table: b.table,
                entries: c.to_vec(),
            });
        }
    }
    out
}

/// The phases of a full diff: inserts and modifies table by table in
/// [`INSERT_ORDER`], then deletes in reverse.
fn full_phases() -> Vec<(Op, Table)> {
    let mut v = Vec::new();
    for t in INSERT_ORDER {
        v.push((Op::Insert, t));
        v.push((Op::Modify, t));
    }
    for t in INSERT_ORDER.into_iter().rev() {
        v.push((Op::Delete, t));
    }
    v
}

/// A full diff produced lazily, chunk by chunk, in dependency order.
///
/// It keeps a cursor (the last key handed out) instead of the diff itself;
/// each [`FullDiff::next_chunk`] merges `want` and `have` from the cursor on.
/// `have` may be updated with the results of chunks already handed out:
/// those keys are behind the cursor.
#[derive(Debug, Clone)]
pub struct FullDiff {
    phases: Vec<(Op, Table)>,
    phase: usize,
    cursor: Option<EntryKey>,
}

impl Default for FullDiff {
    fn default() -> Self {
        Self {
            phases: full_phases(),
            phase: 0,
            cursor: None,
        }
    }
}

impl FullDiff {
    /// The next chunk of at most `max` updates, or `None` when done.
    pub fn next_chunk(
        &mut self,
        want: &impl Tables,
        have: &impl Tables,
        max: usize,
    ) -> Option<Chunk> {
        let max = max.max(1);
        while let Some(&(op, table)) = self.phases.get(self.phase) {
            let mut w = want.entries_after(table, self.cursor.as_ref()).peekable();
            let mut h = have.entries_after(table, self.cursor.as_ref()).peekable();
            let mut out = Vec::new();
            let exhausted = loop {
                if out.len() >= max {
                    break false;
                }
                let (a, b) = (w.peek(), h.peek());
                match (a, b, op) {
                    (None, None, _)
                    | (None, _, Op::Insert | Op::Modify)
                    | (_, None, Op::Modify | Op::Delete) => break true,
                    (Some(a), None, _) => {
                        out.push(*a);
                        w.next();
                    }
                    (None, Some(b), _) => {
                        out.push(*b);
                        h.next();
                    }
                    (Some(a), Some(b), _) => match a.key().cmp(&b.key()) {
                        std::cmp::Ordering::Less => {
                            if op == Op::Insert {
                                out.push(*a);
                            }
                            w.next();
                        }
                        std::cmp::Ordering::Greater => {
                            if op == Op::Delete {
                                out.push(*b);
                            }
                            h.next();
                        }
                        std::cmp::Ordering::Equal => {
                            if op == Op::Modify && a != b {
                                out.push(*a);
                            }
                            w.next();
                            h.next();
                        }
                    },
                }
            };
            let phase = self.phase;
            if exhausted {
                self.phase += 1;
                self.cursor = None;
            } else {
                self.cursor = out.last().map(Entry::key);
            }
            if !out.is_empty() {
                return Some(Chunk {
                    phase,
                    op,
                    table,
                    entries: out,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Backend, HashMode, Proto, ServiceKey};

    fn be(i: u8) -> Backend {
        Backend {
            ip: [10, 244, 1, i].into(),
            port: 80,
            node_ip: [192, 168, 0, 11].into(),
        }
    }

    fn key() -> ServiceKey {
        ServiceKey {
            vip: [10, 96, 0, 10].into(),
            port: 80,
            proto: Proto::Tcp,
        }
    }

    fn svc(id: u16, buckets: u16, backends: &[u32]) -> Contents {
        let mut s = Contents::default();
        for &b in backends {
            s.insert(be(b as u8).entry(b));
            s.insert(cookie_entry(id, b));
        }
        for k in 0..buckets {
            s.lb_bucket.insert(
                lb_bucket::Key {
                    service_id: id,
                    bucket: k,
                },
                lb_bucket::Action::SelectBackend {
                    backend_id: backends[k as usize % backends.len()],
                },
            );
        }
        s.insert(key().entry(id, buckets - 1, HashMode::FiveTuple.value()));
        s
    }

    fn order(b: &[Batch]) -> Vec<(Op, Table)> {
        b.iter().map(|b| (b.op, b.table)).collect()
    }

    #[test]
    fn equal_states_give_nothing() {
        let s = svc(1, 4, &[1, 2]);
        assert!(diff(&s, &s).is_empty());
    }

    #[test]
    fn fresh_insert_order() {
        let s = svc(1, 4, &[1, 2]);
        let b = diff(&s, &Contents::default());
        assert_eq!(
            order(&b),
            vec![
                (Op::Insert, Table::Backend),
                (Op::Insert, Table::CookieCheck),
                (Op::Insert, Table::LbBucket),
                (Op::Insert, Table::ServiceV4)
            ]
        );
        assert_eq!(update_count(&b), 2 + 2 + 4 + 1);
        let mut have = Contents::default();
        apply(&mut have, &b);
        assert_eq!(have, s);
    }

    #[test]
    fn full_delete_is_reverse_order() {
        let s = svc(1, 4, &[1, 2]);
        let b = diff(&Contents::default(), &s);
        assert_eq!(
            order(&b),
            vec![
                (Op::Delete, Table::ServiceV4),
                (Op::Delete, Table::LbBucket),
                (Op::Delete, Table::CookieCheck),
                (Op::Delete, Table::Backend)
            ]
        );
    }

    #[test]
    fn backend_swap_repoints_before_deleting() {
        let have = svc(1, 4, &[1, 2]);
        let want = svc(1, 4, &[1, 3]);
        let b = diff(&want, &have);
        assert_eq!(
            order(&b),
            vec![
                (Op::Insert, Table::Backend),
                (Op::Insert, Table::CookieCheck),
                (Op::Modify, Table::LbBucket),
                (Op::Delete, Table::CookieCheck),
                (Op::Delete, Table::Backend)
            ]
        );
        let mut s = have.clone();
        apply(&mut s, &b);
        assert_eq!(s, want);
    }

    #[test]
    fn shrink_modifies_mask_before_deleting_buckets() {
        let have = svc(1, 8, &[1, 2]);
        let want = svc(1, 4, &[1, 2]);
        let b = diff(&want, &have);
        assert_eq!(
            order(&b),
            vec![
                (Op::Modify, Table::ServiceV4),
                (Op::Delete, Table::LbBucket)
            ]
        );
        assert_eq!(b[1].entries.len(), 4);
    }

    #[test]
    fn grow_inserts_buckets_before_mask() {
        let have = svc(1, 4, &[1, 2]);
        let want = svc(1, 8, &[1, 2]);
        let b = diff(&want, &have);
        assert_eq!(
            order(&b),
            vec![
                (Op::Insert, Table::LbBucket),
                (Op::Modify, Table::ServiceV4)
            ]
        );
    }
}
