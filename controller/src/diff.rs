//! Desired vs actual switch state → ordered write batches.
//!
//! Order never leaves a dangling reference on the switch:
//! 1. inserts and modifies, table by table in [`Table::INSERT_ORDER`]
//!    (routes, switch address, pod nodes, then backend → cookie_check →
//!    lb_bucket → service_v4): whatever an entry points at exists first;
//! 2. deletes in the reverse order (service_v4 → lb_bucket → cookie_check →
//!    backend): nothing still points at what goes away.
//!
//! A shrinking service therefore gets its smaller `bucket_mask` (modify, in
//! step 1) before its high buckets are deleted (step 2); a removed backend
//! has its buckets re-pointed (step 1) before its cookie_check and backend
//! entries go (step 2).
//!
//! Three ways to diff, all with that order:
//! - [`diff`]: two [`SwitchState`]s (small states, tests);
//! - [`region_diff`]: only the part of the tables a [`PlanChanges`] touches
//!   (the incremental path: a change to one Service diffs that Service's
//!   entries, not the whole switch);
//! - [`FullDiff`]: everything, produced chunk by chunk from the compact
//!   desired state, so a full sync never holds the whole diff in memory.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::{
    plan::{Desired, PlanChanges},
    state::{Entry, SwitchState, Table},
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

fn map_diff<K: Ord + Copy, V: PartialEq + Copy>(
    want: &BTreeMap<K, V>,
    have: &BTreeMap<K, V>,
    mk: impl Fn(K, V) -> Entry,
) -> (Vec<Entry>, Vec<Entry>, Vec<Entry>) {
    let mut ins = Vec::new();
    let mut modi = Vec::new();
    let mut del = Vec::new();
    for (k, v) in want {
        match have.get(k) {
            None => ins.push(mk(*k, *v)),
            Some(h) if h != v => modi.push(mk(*k, *v)),
            _ => {}
        }
    }
    for (k, v) in have {
        if !want.contains_key(k) {
            del.push(mk(*k, *v));
        }
    }
    (ins, modi, del)
}

fn set_diff<K: Ord + Copy>(
    want: &BTreeSet<K>,
    have: &BTreeSet<K>,
    mk: impl Fn(K) -> Entry,
) -> (Vec<Entry>, Vec<Entry>, Vec<Entry>) {
    (
        want.difference(have).map(|k| mk(*k)).collect(),
        Vec::new(),
        have.difference(want).map(|k| mk(*k)).collect(),
    )
}

/// The per-table (inserts, modifies, deletes).
fn table_diff(
    t: Table,
    want: &SwitchState,
    have: &SwitchState,
) -> (Vec<Entry>, Vec<Entry>, Vec<Entry>) {
    match t {
        Table::Ipv4Route => map_diff(&want.ipv4_route, &have.ipv4_route, |prefix, action| {
            Entry::Ipv4Route { prefix, action }
        }),
        Table::SwitchAddr => set_diff(&want.switch_addr, &have.switch_addr, |addr| {
            Entry::SwitchAddr { addr }
        }),
        Table::PodNode => map_diff(&want.pod_node, &have.pod_node, |prefix, node_ip| {
            Entry::PodNode { prefix, node_ip }
        }),
        Table::Backend => map_diff(&want.backend, &have.backend, |backend_id, backend| {
            Entry::Backend {
                backend_id,
                backend,
            }
        }),
        Table::CookieCheck => set_diff(
            &want.cookie_check,
            &have.cookie_check,
            |(service_id, backend_id)| Entry::CookieCheck {
                service_id,
                backend_id,
            },
        ),
        Table::LbBucket => map_diff(
            &want.lb_bucket,
            &have.lb_bucket,
            |(service_id, bucket), backend_id| Entry::LbBucket {
                service_id,
                bucket,
                backend_id,
            },
        ),
        Table::ServiceV4 => map_diff(&want.service_v4, &have.service_v4, |key, action| {
            Entry::ServiceV4 { key, action }
        }),
    }
}

/// The ordered batches that turn `have` into `want`. Empty when equal.
pub fn diff(want: &SwitchState, have: &SwitchState) -> Vec<Batch> {
    let mut forward = Vec::new();
    let mut deletes = Vec::new();
    for t in Table::INSERT_ORDER {
        let (ins, modi, del) = table_diff(t, want, have);
        if !ins.is_empty() {
            forward.push(Batch {
                op: Op::Insert,
                table: t,
                entries: ins,
            });
        }
        if !modi.is_empty() {
            forward.push(Batch {
                op: Op::Modify,
                table: t,
                entries: modi,
            });
        }
        if !del.is_empty() {
            deletes.push(Batch {
                op: Op::Delete,
                table: t,
                entries: del,
            });
        }
    }
    deletes.reverse();
    forward.extend(deletes);
    forward
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
pub fn region_diff(want: &Desired, have: &SwitchState, ch: &PlanChanges) -> Vec<Batch> {
    let mut keys: BTreeSet<ServiceKey> = ch.keys.clone();
    let mut sids: BTreeSet<u16> = ch.sids.clone();
    loop {
        let before = (keys.len(), sids.len());
        for k in &keys {
            sids.extend(want.port(k).map(|p| p.service_id));
            sids.extend(have.service_v4.get(k).map(|a| a.service_id));
        }
        for s in &sids {
            keys.extend(want.port_by_sid(*s).map(|p| p.key));
        }
        keys.extend(
            have.service_v4
                .iter()
                .filter(|(_, a)| sids.contains(&a.service_id))
                .map(|(k, _)| *k),
        );
        if (keys.len(), sids.len()) == before {
            break;
        }
    }
    let mut w = SwitchState {
        ipv4_route: want.fabric.ipv4_route.clone(),
        switch_addr: want.fabric.switch_addr.clone(),
        pod_node: want.fabric.pod_node.clone(),
        ..SwitchState::default()
    };
    let mut h = SwitchState {
        ipv4_route: have.ipv4_route.clone(),
        switch_addr: have.switch_addr.clone(),
        pod_node: have.pod_node.clone(),
        ..SwitchState::default()
    };
    let mut backends: BTreeSet<u32> = ch.backends.clone();
    for k in &keys {
        if let Some(action) = want.port(k).and_then(|p| p.action()) {
            w.service_v4.insert(*k, action);
        }
        if let Some(a) = have.service_v4.get(k) {
            h.service_v4.insert(*k, *a);
        }
    }
    for s in &sids {
        if let Some(p) = want.port_by_sid(*s) {
            for (b, id) in p.buckets.iter().enumerate() {
                w.lb_bucket.insert((*s, b as u16), *id);
            }
            for (id, _) in p.entry_backends() {
                w.cookie_check.insert((*s, id));
                backends.insert(id);
            }
        }
        for (k, id) in have.lb_bucket.range((*s, 0)..=(*s, u16::MAX)) {
            h.lb_bucket.insert(*k, *id);
            backends.insert(*id);
        }
        for k in have.cookie_check.range((*s, 0)..=(*s, u32::MAX)) {
            h.cookie_check.insert(*k);
            backends.insert(k.1);
        }
    }
    for id in backends {
        if let Some(b) = want.backend(id) {
            w.backend.insert(id, b);
        }
        if let Some(b) = have.backend.get(&id) {
            h.backend.insert(id, *b);
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
/// [`Table::INSERT_ORDER`], then deletes in reverse.
fn full_phases() -> Vec<(Op, Table)> {
    let mut v = Vec::new();
    for t in Table::INSERT_ORDER {
        v.push((Op::Insert, t));
        v.push((Op::Modify, t));
    }
    for t in Table::INSERT_ORDER.into_iter().rev() {
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
    cursor: Option<Entry>,
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
    pub fn next_chunk(&mut self, want: &Desired, have: &SwitchState, max: usize) -> Option<Chunk> {
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
                self.cursor = out.last().copied();
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
    use crate::types::{Backend, HashMode, Proto, ServiceAction, ServiceKey};

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

    fn svc(id: u16, buckets: u16, backends: &[u32]) -> SwitchState {
        let mut s = SwitchState::default();
        for &b in backends {
            s.backend.insert(b, be(b as u8));
            s.cookie_check.insert((id, b));
        }
        for k in 0..buckets {
            s.lb_bucket
                .insert((id, k), backends[k as usize % backends.len()]);
        }
        s.service_v4.insert(
            key(),
            ServiceAction {
                service_id: id,
                bucket_mask: buckets - 1,
                hash_mode: HashMode::FiveTuple,
            },
        );
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
        let b = diff(&s, &SwitchState::default());
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
        let mut have = SwitchState::default();
        have.apply(&b);
        assert_eq!(have, s);
    }

    #[test]
    fn full_delete_is_reverse_order() {
        let s = svc(1, 4, &[1, 2]);
        let b = diff(&SwitchState::default(), &s);
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
        s.apply(&b);
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
