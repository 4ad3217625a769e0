//! Random sequences of P4Runtime updates against both targets, the
//! in-memory one and the eBPF data plane (root only), each compared with a
//! model of P4Runtime's write semantics: an insert of a present key fails
//! ALREADY_EXISTS, a modify or delete of an absent one NOT_FOUND, anything
//! else succeeds, and a read returns exactly what the model holds. Keys
//! come from a small space so that updates meet each other.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use proptest::prelude::*;
use talaria_p4rt::p4::v1::{entity, update::Type as UpdateType, Entity, Update};
use talaria_preflight::{require, LOADS_BPF};
use talaria_switch::{memory::MemoryTarget, server::write::apply};
use talaria_switch_dataplane::{testing::TestSwitch, Target};
use talaria_tables::{
    build,
    p4runtime::{encode, encode_key},
    value::Ipv6Prefix,
    Entry, EntryKey, Table,
};
use tonic::Code;

/// An entry of any table, from a few keys per table and any action data.
fn any_entry() -> impl Strategy<Value = Entry> {
    (0u8..13, 0u8..3, any::<u16>(), any::<u32>()).prop_map(|(table, k, a, b)| {
        let ip = |x: u8| Ipv4Addr::new(10, 0, x, 1);
        let ip6 = |x: u16| Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, x);
        match table {
            0 => build::route(
                build::prefix(Ipv4Addr::new(10, k, 0, 0), 16),
                a % 512,
                [2; 6],
                [3; 6],
            ),
            1 => build::switch_addr(ip(k)),
            2 => build::service(ip(k), 80, 6, a, 15, (b % 2) as u8),
            3 => build::cookie(u16::from(k), b % 4),
            4 => build::bucket(u16::from(k), a % 4, b),
            5 => build::backend(u32::from(k), ip(a as u8), a, ip(b as u8)),
            6 => build::pod_node(build::prefix(Ipv4Addr::new(10, 244, k, 0), 24), ip(a as u8)),
            7 => build::tunnel_peer(u16::from(k) + 1, ip(a as u8 % 2)),
            8 => build::ts_cookie(u16::from(k), a % 4, b),
            9 => build::service_v6(ip6(u16::from(k)), 80, 17, a, 3, (b % 2) as u8),
            10 => build::backend_v6(u32::from(k), ip6(a), a, ip(b as u8)),
            11 => build::pod_node_v6(
                Ipv6Prefix::new(
                    Ipv6Addr::new(0xfd00, 0x244, u16::from(k), 0, 0, 0, 0, 0),
                    64,
                )
                .expect("a /64"),
                ip(a as u8),
            ),
            _ => build::spoofed_source(ip(k)),
        }
    })
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Insert,
    Modify,
    Delete,
}

fn ops() -> impl Strategy<Value = Vec<(Op, Entry)>> {
    let op = prop_oneof![Just(Op::Insert), Just(Op::Modify), Just(Op::Delete)];
    proptest::collection::vec((op, any_entry()), 1..40)
}

/// Runs `ops` on `target` and on the model; returns the first difference.
fn differences(target: &dyn Target, ops: &[(Op, Entry)]) -> Option<String> {
    let mut model: BTreeMap<EntryKey, Entry> = BTreeMap::new();
    for (i, (op, e)) in ops.iter().enumerate() {
        let present = model.contains_key(&e.key());
        let (kind, te, want) = match op {
            Op::Insert => (
                UpdateType::Insert,
                encode(e),
                (!present).then_some(()).ok_or(Code::AlreadyExists),
            ),
            Op::Modify => (
                UpdateType::Modify,
                encode(e),
                present.then_some(()).ok_or(Code::NotFound),
            ),
            Op::Delete => (
                UpdateType::Delete,
                encode_key(&e.key()),
                present.then_some(()).ok_or(Code::NotFound),
            ),
        };
        let update = Update {
            r#type: kind as i32,
            entity: Some(Entity {
                entity: Some(entity::Entity::TableEntry(te)),
            }),
        };
        let got = apply(target, &update).map_err(|e| e.code);
        if got != want {
            return Some(format!(
                "update {i} {op:?} {e:?}: got {got:?}, expected {want:?}"
            ));
        }
        if want.is_ok() {
            match op {
                Op::Delete => {
                    model.remove(&e.key());
                }
                _ => {
                    model.insert(e.key(), *e);
                }
            }
        }
    }
    for table in Table::ALL.iter().copied() {
        let mut got = target.entries(table).ok()?;
        got.sort_by_key(|e| e.key());
        let want: Vec<Entry> = model
            .values()
            .filter(|e| e.table() == table)
            .copied()
            .collect();
        if got != want {
            return Some(format!("{}: read {got:?}, expected {want:?}", table.name()));
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_memory_target_keeps_p4runtime_write_semantics(ops in ops()) {
        let t = MemoryTarget::new();
        prop_assert_eq!(differences(&t, &ops), None);
    }
}

#[test]
fn the_ebpf_target_keeps_p4runtime_write_semantics() {
    require!(LOADS_BPF);
    let sw = TestSwitch::new("writefuzz", 2);
    let dp = sw.dp();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    runner
        .run(&ops(), |ops| {
            // Each case starts from empty tables.
            for table in Table::ALL.iter().copied() {
                for e in dp.entries(table).unwrap() {
                    dp.delete(&e.key()).unwrap();
                }
            }
            prop_assert_eq!(differences(dp, &ops), None);
            Ok(())
        })
        .unwrap();
}
