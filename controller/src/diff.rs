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

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::state::{Entry, SwitchState, Table};

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
