//! P4Runtime over a real loopback gRPC socket against the in-memory target:
//! arbitration, pipeline config, Write semantics and error details, Read.

mod common;

use common::*;
use prost::Message;
use talaria_common::maps::PacketBytes;
use talaria_p4rt::p4::v1::{
    entity, get_forwarding_pipeline_config_request::ResponseType,
    set_forwarding_pipeline_config_request::Action as SetAction, update::Type, CapabilitiesRequest,
    CounterEntry, DirectCounterEntry, Entity, GetForwardingPipelineConfigRequest, Index,
    TableEntry,
};
use talaria_switch::{
    entry::{CounterId, TableKind},
    server::write::decode_batch_status,
};
use tonic::Code;

#[tokio::test]
async fn capabilities_report_the_bmv2_api_version() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let r = c
        .capabilities(CapabilitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.p4runtime_api_version, "1.3.0");
    server.stop().await;
}

#[tokio::test]
async fn arbitration_primary_backup_and_takeover() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let mut a = Stream::primary(&mut c, 10).await;
    let mut b = Stream::open(&mut c).await;
    b.send_arbitration(1, 5).await;
    assert_eq!(b.arbitration_code().await, Code::AlreadyExists);

    // The backup may not push a pipeline or write.
    let err = c
        .set_forwarding_pipeline_config(set_pipeline_request(
            SetAction::VerifyAndCommit,
            Some(talaria_p4info()),
            5,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    c.set_forwarding_pipeline_config(set_pipeline_request(
        SetAction::VerifyAndCommit,
        Some(talaria_p4info()),
        10,
    ))
    .await
    .unwrap();
    let builder = Builder {
        layout: server.layout.clone(),
    };
    let err = c
        .write(write_request(
            5,
            vec![update(Type::Insert, builder.backend(1))],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // A higher election id takes over; everyone hears of it.
    b.send_arbitration(1, 20).await;
    assert_eq!(b.arbitration_code().await, Code::Ok);
    assert_eq!(a.arbitration_code().await, Code::AlreadyExists);
    c.write(write_request(
        20,
        vec![update(Type::Insert, builder.backend(1))],
    ))
    .await
    .unwrap();
    let err = c
        .write(write_request(
            10,
            vec![update(Type::Insert, builder.backend(2))],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The primary leaves: the backup becomes primary.
    drop(b);
    assert_eq!(a.arbitration_code().await, Code::Ok);
    c.write(write_request(
        10,
        vec![update(Type::Insert, builder.backend(2))],
    ))
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn arbitration_errors_end_the_stream() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let mut s = Stream::open(&mut c).await;
    s.send_arbitration(2, 1).await;
    assert_eq!(s.next().await.unwrap_err().code(), Code::NotFound);

    let _a = Stream::primary(&mut c, 7).await;
    let mut dup = Stream::open(&mut c).await;
    dup.send_arbitration(1, 7).await;
    assert_eq!(dup.next().await.unwrap_err().code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn pipeline_verify_commit_get_and_wrong_p4info() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let _s = Stream::primary(&mut c, 1).await;
    let builder = Builder {
        layout: server.layout.clone(),
    };

    // Nothing works before a pipeline is set.
    let err = c
        .write(write_request(
            1,
            vec![update(Type::Insert, builder.backend(1))],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        read_entities(&mut c, vec![table_filter(0)])
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    let get = |rt: ResponseType| GetForwardingPipelineConfigRequest {
        device_id: 1,
        response_type: rt as i32,
    };
    assert_eq!(
        c.get_forwarding_pipeline_config(get(ResponseType::All))
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );

    // Another program's P4Info is refused with a clear message.
    let mut other = talaria_p4info();
    other.tables[0].preamble.as_mut().unwrap().name = "MyIngress.ipv4_lpm".into();
    let err = c
        .set_forwarding_pipeline_config(set_pipeline_request(
            SetAction::VerifyAndCommit,
            Some(other),
            1,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("talaria") && err.message().contains("ipv4_route"),
        "{}",
        err.message()
    );

    // VERIFY checks without committing.
    c.set_forwarding_pipeline_config(set_pipeline_request(
        SetAction::Verify,
        Some(talaria_p4info()),
        1,
    ))
    .await
    .unwrap();
    assert!(!server.switch.configured());

    // A P4Info that went through a binary round trip, with docs and
    // annotations changed, is the same pipeline.
    let mut p4info =
        talaria_p4rt::p4::config::v1::P4Info::decode(talaria_p4info().encode_to_vec().as_slice())
            .unwrap();
    p4info.tables[1].preamble.as_mut().unwrap().doc = Some(Default::default());
    p4info.actions[2]
        .preamble
        .as_mut()
        .unwrap()
        .annotations
        .push("@brief(\"x\")".into());
    c.set_forwarding_pipeline_config(set_pipeline_request(
        SetAction::VerifyAndSave,
        Some(p4info),
        1,
    ))
    .await
    .unwrap();
    let mut commit = set_pipeline_request(SetAction::Commit, None, 1);
    commit.config = None;
    c.set_forwarding_pipeline_config(commit).await.unwrap();
    assert!(server.switch.configured());

    let all = c
        .get_forwarding_pipeline_config(get(ResponseType::All))
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert!(all.p4info.is_some());
    assert_eq!(all.p4_device_config, b"{\"program\": \"talaria.json\"}");
    assert_eq!(all.cookie.unwrap().cookie, 0x7a1a);
    let ck = c
        .get_forwarding_pipeline_config(get(ResponseType::CookieOnly))
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert!(ck.p4info.is_none() && ck.p4_device_config.is_empty() && ck.cookie.is_some());
    let pc = c
        .get_forwarding_pipeline_config(get(ResponseType::P4infoAndCookie))
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert!(pc.p4info.is_some() && pc.p4_device_config.is_empty() && pc.cookie.is_some());
    let dc = c
        .get_forwarding_pipeline_config(get(ResponseType::DeviceConfigAndCookie))
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert!(dc.p4info.is_none() && !dc.p4_device_config.is_empty() && dc.cookie.is_some());

    // RECONCILE_AND_COMMIT keeps entries; VERIFY_AND_COMMIT resets them.
    c.write(write_request(
        1,
        vec![update(Type::Insert, builder.backend(1))],
    ))
    .await
    .unwrap();
    c.set_forwarding_pipeline_config(set_pipeline_request(
        SetAction::ReconcileAndCommit,
        Some(talaria_p4info()),
        1,
    ))
    .await
    .unwrap();
    assert_eq!(server.target.len(TableKind::Backend), 1);
    c.set_forwarding_pipeline_config(set_pipeline_request(
        SetAction::VerifyAndCommit,
        Some(talaria_p4info()),
        1,
    ))
    .await
    .unwrap();
    assert_eq!(server.target.len(TableKind::Backend), 0);
    server.stop().await;
}

#[tokio::test]
async fn insert_modify_delete_and_read() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let _s = configured(&mut c, 1).await;
    let b = Builder {
        layout: server.layout.clone(),
    };

    let route = b.entry(
        "ipv4_route",
        &[("dst_addr", &[10, 0, 0, 0], 8)],
        "forward",
        &[
            ("port", &[2]),
            ("src_mac", &[2, 0, 0, 0, 0, 1]),
            ("dst_mac", &[2, 0, 0, 0, 0, 2]),
        ],
    );
    let svc = b.entry(
        "service_v4",
        &[
            ("vip", &[10, 96, 0, 10], 0),
            ("port", &[0, 80], 0),
            ("proto", &[6], 0),
        ],
        "set_service",
        &[
            ("service_id", &[0, 7]),
            ("bucket_mask", &[0, 15]),
            ("hash_mode", &[0]),
        ],
    );
    c.write(write_request(
        1,
        vec![
            update(Type::Insert, route.clone()),
            update(Type::Insert, svc.clone()),
        ],
    ))
    .await
    .unwrap();

    // Wildcard over every table returns both, canonical and in P4Info form.
    let all = table_entries(read_entities(&mut c, vec![table_filter(0)]).await.unwrap());
    assert_eq!(all.len(), 2);
    let got_svc = all
        .iter()
        .find(|t| t.table_id == b.table_id("service_v4"))
        .unwrap();
    let mut want = svc.clone();
    // Canonical form: no leading zero bytes.
    want = canonical(want);
    assert_eq!(got_svc, &want);

    // Per-table wildcard and a specific key.
    let routes = table_entries(
        read_entities(&mut c, vec![table_filter(b.table_id("ipv4_route"))])
            .await
            .unwrap(),
    );
    assert_eq!(routes, vec![route.clone()]);
    let key_only = TableEntry {
        action: None,
        ..svc.clone()
    };
    let one = read_entities(
        &mut c,
        vec![Entity {
            entity: Some(entity::Entity::TableEntry(key_only.clone())),
        }],
    )
    .await
    .unwrap();
    assert_eq!(table_entries(one).len(), 1);

    // MODIFY changes the action; DELETE needs only the key.
    let svc2 = b.entry(
        "service_v4",
        &[
            ("vip", &[10, 96, 0, 10], 0),
            ("port", &[0, 80], 0),
            ("proto", &[6], 0),
        ],
        "set_service",
        &[
            ("service_id", &[0, 7]),
            ("bucket_mask", &[0, 31]),
            ("hash_mode", &[1]),
        ],
    );
    c.write(write_request(1, vec![update(Type::Modify, svc2.clone())]))
        .await
        .unwrap();
    let one = table_entries(
        read_entities(
            &mut c,
            vec![Entity {
                entity: Some(entity::Entity::TableEntry(key_only.clone())),
            }],
        )
        .await
        .unwrap(),
    );
    assert_eq!(one, vec![canonical(svc2)]);
    c.write(write_request(
        1,
        vec![update(Type::Delete, key_only.clone())],
    ))
    .await
    .unwrap();
    let one = read_entities(
        &mut c,
        vec![Entity {
            entity: Some(entity::Entity::TableEntry(key_only)),
        }],
    )
    .await
    .unwrap();
    assert!(one.is_empty());

    // The default entry reads back as the initial default action, and
    // MODIFY to that same action is accepted.
    let default_filter = TableEntry {
        table_id: b.table_id("backend"),
        is_default_action: true,
        ..Default::default()
    };
    let d = table_entries(
        read_entities(
            &mut c,
            vec![Entity {
                entity: Some(entity::Entity::TableEntry(default_filter)),
            }],
        )
        .await
        .unwrap(),
    );
    assert_eq!(d.len(), 1);
    assert!(d[0].is_default_action);
    c.write(write_request(1, vec![update(Type::Modify, d[0].clone())]))
        .await
        .unwrap();
    server.stop().await;
}

/// `te` with every byte string in canonical form.
fn canonical(mut te: TableEntry) -> TableEntry {
    let strip = |v: &mut Vec<u8>| {
        let first = v.iter().position(|b| *b != 0).unwrap_or(v.len() - 1);
        v.drain(..first);
    };
    for m in &mut te.r#match {
        match m.field_match_type.as_mut().unwrap() {
            talaria_p4rt::p4::v1::field_match::FieldMatchType::Exact(e) => strip(&mut e.value),
            talaria_p4rt::p4::v1::field_match::FieldMatchType::Lpm(l) => strip(&mut l.value),
            _ => unreachable!(),
        }
    }
    if let Some(talaria_p4rt::p4::v1::table_action::Type::Action(a)) =
        te.action.as_mut().and_then(|a| a.r#type.as_mut())
    {
        for p in &mut a.params {
            strip(&mut p.value);
        }
    }
    te
}

#[tokio::test]
async fn per_update_errors_come_back_in_grpc_status_details() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let _s = configured(&mut c, 1).await;
    let b = Builder {
        layout: server.layout.clone(),
    };

    c.write(write_request(1, vec![update(Type::Insert, b.backend(1))]))
        .await
        .unwrap();
    // Batch: new entry (OK), duplicate (ALREADY_EXISTS), modify of a missing
    // entry (NOT_FOUND), delete of a missing entry (NOT_FOUND).
    let err = c
        .write(write_request(
            1,
            vec![
                update(Type::Insert, b.backend(2)),
                update(Type::Insert, b.backend(1)),
                update(Type::Modify, b.backend(3)),
                update(Type::Delete, b.backend(4)),
            ],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown);
    let codes: Vec<Code> = decode_batch_status(&err)
        .expect("p4.v1.Error details")
        .iter()
        .map(|e| e.code)
        .collect();
    assert_eq!(
        codes,
        vec![
            Code::Ok,
            Code::AlreadyExists,
            Code::NotFound,
            Code::NotFound
        ]
    );
    // CONTINUE_ON_ERROR: the good update was applied.
    assert_eq!(server.target.len(TableKind::Backend), 2);

    // Other atomicity modes are not implemented.
    let mut req = write_request(1, vec![update(Type::Insert, b.backend(9))]);
    req.atomicity = 1;
    assert_eq!(c.write(req).await.unwrap_err().code(), Code::Unimplemented);
    server.stop().await;
}

#[tokio::test]
async fn validation_errors_have_p4runtime_codes() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let _s = configured(&mut c, 1).await;
    let b = Builder {
        layout: server.layout.clone(),
    };
    let fwd = |port: &[u8], prefix: &[u8], len: i32| {
        b.entry(
            "ipv4_route",
            &[("dst_addr", prefix, len)],
            "forward",
            &[
                ("port", port),
                ("src_mac", &[0, 0, 0, 0, 0, 1]),
                ("dst_mac", &[0, 0, 0, 0, 0, 2]),
            ],
        )
    };
    let mut missing_param = b.backend(5);
    if let Some(talaria_p4rt::p4::v1::table_action::Type::Action(a)) = missing_param
        .action
        .as_mut()
        .and_then(|a| a.r#type.as_mut())
    {
        a.params.pop();
    }
    let mut wrong_action = b.backend(6);
    if let Some(talaria_p4rt::p4::v1::table_action::Type::Action(a)) =
        wrong_action.action.as_mut().and_then(|a| a.r#type.as_mut())
    {
        a.action_id = b.layout.tables()[0].actions[0].id; // forward: not a backend action
    }
    let mut with_priority = b.backend(7);
    with_priority.priority = 10;
    let mut unknown_table = b.backend(8);
    unknown_table.table_id = 0x0200_0099;
    let mut missing_key = b.backend(9);
    missing_key.r#match.clear();
    let defaultonly = b.entry(
        "backend",
        &[("backend_id", &[0, 0, 0, 10], 0)],
        "backend_miss",
        &[],
    );
    let cases: Vec<(TableEntry, Code)> = vec![
        // port is bit<9>: 511 fits, 512 does not.
        (fwd(&[1, 255], &[10, 0, 0, 0], 8), Code::Ok),
        (fwd(&[2, 0], &[11, 0, 0, 0], 8), Code::OutOfRange),
        // Non-canonical: zero-padded values are fine.
        (fwd(&[0, 0, 0, 3], &[0, 12, 0, 0, 0], 8), Code::Ok),
        // An IPv4 key wider than 32 bits.
        (fwd(&[3], &[1, 13, 0, 0, 0], 8), Code::OutOfRange),
        (fwd(&[3], &[], 8), Code::OutOfRange),
        // Host bits beyond the prefix, prefix too long, an exact match on an
        // LPM field.
        (fwd(&[3], &[14, 0, 0, 1], 8), Code::InvalidArgument),
        (fwd(&[3], &[15, 0, 0, 0], 33), Code::InvalidArgument),
        (fwd(&[3], &[0, 0, 0, 0], 0 - 1), Code::InvalidArgument),
        (missing_param, Code::InvalidArgument),
        (wrong_action, Code::InvalidArgument),
        (with_priority, Code::InvalidArgument),
        (unknown_table, Code::NotFound),
        (missing_key, Code::InvalidArgument),
        (defaultonly, Code::InvalidArgument),
    ];
    let n = cases.len();
    let (entries, want): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
    let err = c
        .write(write_request(
            1,
            entries
                .into_iter()
                .map(|te| update(Type::Insert, te))
                .collect(),
        ))
        .await
        .unwrap_err();
    let got = decode_batch_status(&err).unwrap();
    assert_eq!(got.len(), n);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.code, *w, "case {i}: {}", g.message);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_full_table_is_resource_exhausted() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let _s = configured(&mut c, 1).await;
    let b = Builder {
        layout: server.layout.clone(),
    };
    let size = server.layout.size(TableKind::SwitchAddr);
    let addr = |i: u32| {
        b.entry(
            "switch_addr",
            &[("dst_addr", &(0x0a00_0000 + i).to_be_bytes(), 0)],
            "terminate_tunnel",
            &[],
        )
    };
    c.write(write_request(
        1,
        (0..size).map(|i| update(Type::Insert, addr(i))).collect(),
    ))
    .await
    .unwrap();
    let err = c
        .write(write_request(1, vec![update(Type::Insert, addr(size))]))
        .await
        .unwrap_err();
    let got = decode_batch_status(&err).unwrap();
    assert_eq!(got[0].code, Code::ResourceExhausted, "{}", got[0].message);
    server.stop().await;
}

#[tokio::test]
async fn counters_and_direct_counters_read_back() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let _s = configured(&mut c, 1).await;
    let b = Builder {
        layout: server.layout.clone(),
    };
    c.write(write_request(1, vec![update(Type::Insert, b.backend(4))]))
        .await
        .unwrap();
    server.target.set_counter(
        CounterId::Drop,
        8,
        PacketBytes {
            packets: 3,
            bytes: 0,
        },
    );
    server.target.set_backend_counter(
        4,
        PacketBytes {
            packets: 5,
            bytes: 700,
        },
    );
    let drop_id = server
        .layout
        .counters
        .iter()
        .find(|c| c.counter == CounterId::Drop)
        .unwrap()
        .id;

    let one = read_entities(
        &mut c,
        vec![Entity {
            entity: Some(entity::Entity::CounterEntry(CounterEntry {
                counter_id: drop_id,
                index: Some(Index { index: 8 }),
                data: None,
            })),
        }],
    )
    .await
    .unwrap();
    let Some(entity::Entity::CounterEntry(ce)) = &one[0].entity else {
        panic!("{one:?}")
    };
    assert_eq!(ce.data.unwrap().packet_count, 3);

    // counter_id 0 and no index: every cell of every counter.
    let all = read_entities(
        &mut c,
        vec![Entity {
            entity: Some(entity::Entity::CounterEntry(CounterEntry::default())),
        }],
    )
    .await
    .unwrap();
    let cells: i64 = server
        .layout
        .counters
        .iter()
        .map(|c| i64::from(c.size))
        .sum();
    assert_eq!(all.len() as i64, cells);

    let direct = read_entities(
        &mut c,
        vec![Entity {
            entity: Some(entity::Entity::DirectCounterEntry(
                DirectCounterEntry::default(),
            )),
        }],
    )
    .await
    .unwrap();
    let Some(entity::Entity::DirectCounterEntry(dc)) = &direct[0].entity else {
        panic!("{direct:?}")
    };
    assert_eq!(dc.data.unwrap().byte_count, 700);
    assert_eq!(
        dc.table_entry.as_ref().unwrap().table_id,
        b.table_id("backend")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_restarted_server_keeps_its_pipeline_and_entries() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(Some(dir.path().into()), None).await;
    let (layout, target) = (server.layout.clone(), server.target.clone());
    let mut c = server.client().await;
    let s = configured(&mut c, 1).await;
    let b = Builder {
        layout: layout.clone(),
    };
    c.write(write_request(
        1,
        vec![
            update(Type::Insert, b.backend(1)),
            update(Type::Insert, b.backend(2)),
        ],
    ))
    .await
    .unwrap();
    drop(s);
    server.stop().await;

    // Same tables (pinned maps survive), new server process state.
    let server = Server::start_on(layout, target, Some(dir.path().into())).await;
    assert!(server.switch.configured());
    let mut c = server.client().await;
    let got = table_entries(
        read_entities(&mut c, vec![table_filter(b.table_id("backend"))])
            .await
            .unwrap(),
    );
    assert_eq!(got.len(), 2);
    let cfg = c
        .get_forwarding_pipeline_config(GetForwardingPipelineConfigRequest {
            device_id: 1,
            response_type: ResponseType::CookieOnly as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cfg.config.unwrap().cookie.unwrap().cookie, 0x7a1a);
    server.stop().await;
}
