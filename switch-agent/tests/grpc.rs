//! P4Runtime over a real loopback gRPC socket against the in-memory target,
//! where a test looks inside switch-agent: pipeline config and a foreign
//! P4Info, counters set in the store, a restart with a state directory.
//!
//! What any P4Runtime server must do (arbitration, pipeline push, Write
//! semantics and per-update errors, reads, counters) is tested once for
//! switch-agent in process, the switch-agent binary and bmv2 alike in
//! `bmv2-testbed/tests/p4runtime.rs`.

mod common;

use common::*;
use prost::Message;
use talaria_common::maps::PacketBytes;
use talaria_p4rt::p4::v1::{
    entity, get_forwarding_pipeline_config_request::ResponseType,
    set_forwarding_pipeline_config_request::Action as SetAction, update::Type, CounterEntry,
    DirectCounterEntry, Entity, GetForwardingPipelineConfigRequest, Index,
};
use talaria_switch::entry::{CounterId, Table};
use tonic::Code;

#[tokio::test]
async fn pipeline_verify_commit_get_and_wrong_p4info() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let _s = Stream::primary(&mut c, 1).await;

    // Nothing works before a pipeline is set.
    let err = c
        .write(write_request(1, vec![update(Type::Insert, backend(1))]))
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
    c.write(write_request(1, vec![update(Type::Insert, backend(1))]))
        .await
        .unwrap();
    c.set_forwarding_pipeline_config(set_pipeline_request(
        SetAction::ReconcileAndCommit,
        Some(talaria_p4info()),
        1,
    ))
    .await
    .unwrap();
    assert_eq!(server.target.len(Table::Backend), 1);
    c.set_forwarding_pipeline_config(set_pipeline_request(
        SetAction::VerifyAndCommit,
        Some(talaria_p4info()),
        1,
    ))
    .await
    .unwrap();
    assert_eq!(server.target.len(Table::Backend), 0);
    server.stop().await;
}

#[tokio::test]
async fn counters_and_direct_counters_read_back() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let _s = configured(&mut c, 1).await;
    c.write(write_request(1, vec![update(Type::Insert, backend(4))]))
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
    let drop_id = CounterId::Drop.def().id;

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
    let cells: i64 = CounterId::ALL
        .iter()
        .map(|(_, def)| i64::from(def.size))
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
        Table::Backend.id()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_restarted_server_keeps_its_pipeline_and_entries() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(Some(dir.path().into()), None).await;
    let target = server.target.clone();
    let mut c = server.client().await;
    let s = configured(&mut c, 1).await;
    c.write(write_request(
        1,
        vec![
            update(Type::Insert, backend(1)),
            update(Type::Insert, backend(2)),
        ],
    ))
    .await
    .unwrap();
    drop(s);
    server.stop().await;

    // Same tables (pinned maps survive), new server process state.
    let server = Server::start_on(target, Some(dir.path().into())).await;
    assert!(server.switch.configured());
    let mut c = server.client().await;
    let got = table_entries(
        read_entities(&mut c, vec![table_filter(Table::Backend.id())])
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
