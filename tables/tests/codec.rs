//! P4Runtime encoding and validated decoding, for every table, driven by
//! the definitions themselves: any entry survives a round trip, and every
//! malformed request gets the error and code P4Runtime asks for.

use proptest::prelude::*;
use talaria_p4rt::google::rpc::Code;
use talaria_p4rt::p4::v1::{field_match, table_action, FieldMatch, TableEntry};
use talaria_tables::def::{MatchKind, Scope};
use talaria_tables::p4runtime::{decode, encode, encode_default, encode_key, ActionUse, Decoded};
use talaria_tables::value::Ipv4Prefix;
use talaria_tables::{lb_bucket, service_v4, Entry, EntryKey, FieldValue, Table};

fn mask(bits: u32) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1 << bits) - 1
    }
}

/// Any entry of any table, built from the table's description.
fn any_entry() -> impl Strategy<Value = Entry> {
    (
        0..Table::ALL.len(),
        any::<[u128; 4]>(),
        any::<[u8; 4]>(),
        any::<[u128; 4]>(),
        any::<usize>(),
    )
        .prop_map(|(t, keys, lens, params, pick)| {
            let table = Table::ALL[t];
            let def = table.def();
            let key: Vec<FieldValue> = def
                .fields
                .iter()
                .zip(keys.iter().zip(lens))
                .map(|(f, (v, len))| match f.kind {
                    MatchKind::Exact => FieldValue {
                        value: v & mask(f.bits),
                        prefix_len: None,
                    },
                    MatchKind::Lpm => {
                        let len = u32::from(len) % (f.bits + 1);
                        let host = mask(f.bits) >> len.min(127);
                        let host = if len == 0 { mask(f.bits) } else { host };
                        FieldValue {
                            value: v & mask(f.bits) & !host,
                            prefix_len: Some(len as u8),
                        }
                    }
                })
                .collect();
            let entry_actions: Vec<_> = def
                .actions
                .iter()
                .filter(|(_, s)| *s == Scope::TableAndDefault)
                .collect();
            let (a, _) = entry_actions[pick % entry_actions.len()];
            let params: Vec<u128> = a
                .params
                .iter()
                .zip(params)
                .map(|(p, v)| v & mask(p.bits))
                .collect();
            Entry::from_parts(table, &key, a.id, &params).expect("a well-formed entry")
        })
}

/// Any `TableEntry`, mostly nonsense: table ids of the program and others,
/// field ids, match kinds and byte strings of any length, action ids and
/// parameters.
fn any_table_entry() -> impl Strategy<Value = TableEntry> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..20);
    let table_id = prop_oneof![
        (0..Table::ALL.len()).prop_map(|i| Table::ALL[i].id()),
        any::<u32>(),
    ];
    let field =
        (0u32..5, 0u8..4, bytes(), bytes(), any::<u8>()).prop_map(|(id, kind, v, m, len)| {
            let field_match_type = match kind {
                0 => field_match::FieldMatchType::Exact(field_match::Exact { value: v }),
                1 => field_match::FieldMatchType::Lpm(field_match::Lpm {
                    value: v,
                    prefix_len: i32::from(len),
                }),
                2 => {
                    field_match::FieldMatchType::Ternary(field_match::Ternary { value: v, mask: m })
                }
                _ => field_match::FieldMatchType::Optional(field_match::Optional { value: v }),
            };
            FieldMatch {
                field_id: id,
                field_match_type: Some(field_match_type),
            }
        });
    let action_id = prop_oneof![
        (0..Table::ALL.len(), any::<usize>()).prop_map(|(t, i)| {
            let actions = Table::ALL[t].def().actions;
            actions[i % actions.len()].0.id
        }),
        any::<u32>(),
    ];
    let param = (0u32..5, bytes())
        .prop_map(|(param_id, value)| talaria_p4rt::p4::v1::action::Param { param_id, value });
    (
        table_id,
        proptest::collection::vec(field, 0..4),
        proptest::option::of((action_id, proptest::collection::vec(param, 0..4))),
        any::<bool>(),
    )
        .prop_map(
            |(table_id, r#match, action, is_default_action)| TableEntry {
                table_id,
                r#match,
                action: action.map(|(action_id, params)| talaria_p4rt::p4::v1::TableAction {
                    r#type: Some(table_action::Type::Action(talaria_p4rt::p4::v1::Action {
                        action_id,
                        params,
                    })),
                }),
                is_default_action,
                ..Default::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Whatever a client sends: refused with an error, or decoded into an
    /// entry that encodes back to the same entry. Never a panic.
    #[test]
    fn any_table_entry_is_refused_or_round_trips(te in any_table_entry()) {
        for usage in [ActionUse::Required, ActionUse::Ignored] {
            match decode(&te, usage) {
                Ok(Decoded::Entry(e)) => {
                    prop_assert_eq!(decode(&encode(&e), ActionUse::Required), Ok(Decoded::Entry(e)));
                }
                Ok(Decoded::Key(k)) => {
                    prop_assert_eq!(decode(&encode_key(&k), ActionUse::Ignored), Ok(Decoded::Key(k)));
                }
                Ok(_) | Err(_) => {}
            }
        }
    }
}

proptest! {
    #[test]
    fn every_entry_round_trips(e in any_entry()) {
        let te = encode(&e);
        prop_assert_eq!(decode(&te, ActionUse::Required), Ok(Decoded::Entry(e)));
        prop_assert_eq!(decode(&te, ActionUse::Ignored), Ok(Decoded::Key(e.key())));
        prop_assert_eq!(decode(&encode_key(&e.key()), ActionUse::Ignored), Ok(Decoded::Key(e.key())));
        // Receivers accept bytestrings padded with leading zeros.
        let mut padded = te.clone();
        for m in &mut padded.r#match {
            if let Some(field_match::FieldMatchType::Exact(x)) = &mut m.field_match_type {
                x.value.insert(0, 0);
            }
        }
        prop_assert_eq!(decode(&padded, ActionUse::Required), Ok(Decoded::Entry(e)));
    }
}

fn service() -> Entry {
    service_v4::Entry {
        key: service_v4::Key {
            vip: [10, 96, 0, 10].into(),
            port: 80,
            proto: 6,
        },
        action: service_v4::Action::SetService {
            service_id: 7,
            bucket_mask: 15,
            hash_mode: 0,
        },
    }
    .into()
}

#[track_caller]
fn rejected(te: TableEntry, code: Code, text: &str) {
    let e = decode(&te, ActionUse::Required).expect_err("must be rejected");
    assert_eq!(e.code(), code, "{e}");
    assert!(e.to_string().contains(text), "{text:?} not in {e}");
}

#[test]
fn malformed_entries_get_p4runtime_codes() {
    let good = encode(&service());
    let mut t = good.clone();
    t.table_id = 0x0200_00ff;
    rejected(t, Code::NotFound, "unknown table id");

    let mut t = good.clone();
    t.r#match.remove(1);
    rejected(t, Code::InvalidArgument, "match field port: missing");

    let mut t = good.clone();
    t.r#match.push(t.r#match[0].clone());
    rejected(t, Code::InvalidArgument, "match field vip: given twice");

    let mut t = good.clone();
    t.r#match[2].field_match_type = Some(field_match::FieldMatchType::Exact(field_match::Exact {
        value: vec![1, 6],
    }));
    rejected(t, Code::OutOfRange, "match field proto");

    let mut t = good.clone();
    t.r#match[0].field_match_type = Some(field_match::FieldMatchType::Lpm(field_match::Lpm {
        value: vec![10, 96, 0, 10],
        prefix_len: 32,
    }));
    rejected(t, Code::InvalidArgument, "expected exact match");

    let mut t = good.clone();
    t.r#match.push(FieldMatch {
        field_id: 9,
        field_match_type: None,
    });
    rejected(t, Code::InvalidArgument, "unknown match field id 9");

    let mut t = good.clone();
    t.priority = 10;
    rejected(t, Code::InvalidArgument, "priority must be 0");

    let mut t = good.clone();
    t.action = None;
    rejected(t, Code::InvalidArgument, "entry has no action");

    let set_action = |t: &mut TableEntry, f: &dyn Fn(&mut talaria_p4rt::p4::v1::Action)| {
        if let Some(table_action::Type::Action(a)) =
            t.action.as_mut().and_then(|a| a.r#type.as_mut())
        {
            f(a)
        }
    };
    let mut t = good.clone();
    set_action(&mut t, &|a| {
        a.action_id = service_v4::actions::ServiceMiss.id
    });
    rejected(t, Code::PermissionDenied, "is @defaultonly");
    let mut t = good.clone();
    set_action(&mut t, &|a| {
        a.action_id = lb_bucket::actions::SelectBackend.id
    });
    rejected(t, Code::InvalidArgument, "is not an action of this table");
    let mut t = good.clone();
    set_action(&mut t, &|a| {
        a.params.pop();
    });
    rejected(t, Code::InvalidArgument, "parameter hash_mode: missing");
    let mut t = good.clone();
    set_action(&mut t, &|a| a.params[0].value = vec![1, 0, 0]);
    rejected(t, Code::OutOfRange, "parameter service_id");
    let mut t = good.clone();
    set_action(&mut t, &|a| a.params[0].param_id = 7);
    rejected(t, Code::InvalidArgument, "unknown parameter id 7");
}

#[test]
fn lpm_fields_carry_prefixes_and_wildcards() {
    let route = |p: &str| {
        Entry::from(talaria_tables::pod_node::Entry {
            key: talaria_tables::pod_node::Key {
                pod_addr: p.parse::<Ipv4Prefix>().unwrap(),
            },
            action: talaria_tables::pod_node::Action::SetClientNode {
                node_ip: [192, 0, 2, 1].into(),
            },
        })
    };
    // /0 travels as an omitted field and comes back as /0.
    let te = encode(&route("0.0.0.0/0"));
    assert!(te.r#match.is_empty());
    assert_eq!(
        decode(&te, ActionUse::Required),
        Ok(Decoded::Entry(route("0.0.0.0/0")))
    );

    let mut te = encode(&route("10.244.1.0/24"));
    if let Some(field_match::FieldMatchType::Lpm(l)) = &mut te.r#match[0].field_match_type {
        l.value = vec![10, 244, 1, 7];
    }
    rejected(
        te.clone(),
        Code::InvalidArgument,
        "bits beyond the /24 prefix are set",
    );
    if let Some(field_match::FieldMatchType::Lpm(l)) = &mut te.r#match[0].field_match_type {
        l.value = vec![0];
        l.prefix_len = 0;
    }
    rejected(te, Code::InvalidArgument, "omit the field for a wildcard");
}

#[test]
fn default_entries() {
    for t in Table::ALL {
        let te = encode_default(*t);
        assert_eq!(
            decode(&te, ActionUse::Required),
            Ok(Decoded::InitialDefault(*t))
        );
    }
    let mut te = encode_default(Table::ServiceV4);
    if let Some(table_action::Type::Action(a)) = te.action.as_mut().and_then(|a| a.r#type.as_mut())
    {
        a.action_id = service_v4::actions::SetService.id;
    }
    rejected(te, Code::Unimplemented, "only the initial default action");
    let key = EntryKey::from_values(
        Table::LbBucket,
        &[
            FieldValue {
                value: 3,
                prefix_len: None,
            },
            FieldValue {
                value: 9,
                prefix_len: None,
            },
        ],
    )
    .unwrap();
    assert_eq!(
        key,
        EntryKey::LbBucket(lb_bucket::Key {
            service_id: 3,
            bucket: 9
        })
    );
}
