//! P4Runtime parity: the gRPC behaviour any P4Runtime server must show
//! (arbitration, pipeline push, per-update errors, reads, counters),
//! written once against a channel and a device id and run on three
//! servers: switch-agent's server in process over its in-memory store (no
//! root, no p4c), the switch-agent binary on its eBPF data plane, and bmv2.
//! Where bmv2 and switch-agent may answer differently, the test says so and
//! docs/design.md ("bmv2 parity") gives the P4Runtime spec section that
//! allows it.
//!
//! The tests that look inside switch-agent (its in-memory store, table-size
//! overrides, restart with a state directory, a foreign P4Info) stay in
//! `switch-agent/tests/grpc.rs`.

use std::time::{Duration, Instant};

use talaria_bmv2_testbed::{
    p4rt::{self, set_pipeline_request, Client, Stream},
    P4rtServer, ServerKind, SwitchKind,
};
use talaria_p4rt::p4::v1::{
    entity, field_match, get_forwarding_pipeline_config_request::ResponseType,
    set_forwarding_pipeline_config_request::Action as SetAction, table_action, update,
    CapabilitiesRequest, CounterEntry, DirectCounterEntry, Entity, FieldMatch,
    GetForwardingPipelineConfigRequest, Index, TableAction, TableEntry, Update, WriteRequest,
};
use talaria_p4rt::p4info::{self, Schema};
use talaria_preflight::require;
use talaria_switch::server::write::decode_batch_status;
use talaria_switch_dataplane::testing::{eth, mac};
use tonic::Code;

/// Generates one test per server for `case`.
macro_rules! on_every_server {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;

            #[tokio::test]
            async fn in_process() {
                run(ServerKind::InProcess, |s| Box::pin(super::$case(s))).await;
            }

            #[tokio::test]
            async fn switch_agent() {
                require!(SwitchKind::SwitchAgent.needs());
                if !SwitchKind::SwitchAgent.built() {
                    return;
                }
                run(ServerKind::Process(SwitchKind::SwitchAgent), |s| Box::pin(super::$case(s))).await;
            }

            #[tokio::test]
            async fn bmv2() {
                require!(SwitchKind::Bmv2.needs());
                run(ServerKind::Process(SwitchKind::Bmv2), |s| Box::pin(super::$case(s))).await;
            }
        }
    )*};
}

type Case =
    for<'a> fn(&'a P4rtServer) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

async fn run(kind: ServerKind, case: Case) {
    let server = P4rtServer::start(kind)
        .await
        .unwrap_or_else(|e| panic!("starting {kind}: {e}"));
    case(&server).await;
    server.stop().await;
}

on_every_server!(
    capabilities,
    arbitration,
    arbitration_errors,
    pipeline_lifecycle,
    insert_modify_delete_and_read,
    per_update_errors,
    validation_errors,
    full_table,
    counters,
);

// ------------------------------------------------------------------ helpers --

/// Builds table entries by name, with the ids of the P4Info the server
/// is given.
struct Names(Schema);

impl Names {
    fn of(s: &P4rtServer) -> Self {
        Self(Schema::new(&s.pipeline.p4info).expect("an indexable P4Info"))
    }

    /// The table with alias `name`.
    fn table(&self, name: &str) -> &p4info::Table {
        self.0.table(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn table_id(&self, name: &str) -> u32 {
        self.table(name).id
    }

    /// The action with alias `name`.
    fn action(&self, name: &str) -> &p4info::Action {
        self.0.action(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// An entry of `table` with exact/LPM `keys` (name, bytes, prefix
    /// length or 0 for exact) and `action` with `params` (name, bytes).
    fn entry(
        &self,
        table: &str,
        keys: &[(&str, &[u8], i32)],
        action: &str,
        params: &[(&str, &[u8])],
    ) -> TableEntry {
        let t = self.table(table);
        let r#match = keys
            .iter()
            .map(|(name, value, len)| {
                let f = t.match_field(name).unwrap();
                let m = if *len > 0 {
                    field_match::FieldMatchType::Lpm(field_match::Lpm {
                        value: value.to_vec(),
                        prefix_len: *len,
                    })
                } else {
                    field_match::FieldMatchType::Exact(field_match::Exact {
                        value: value.to_vec(),
                    })
                };
                FieldMatch {
                    field_id: f.id,
                    field_match_type: Some(m),
                }
            })
            .collect();
        let a = self.action(action);
        let params = params
            .iter()
            .map(|(name, value)| talaria_p4rt::p4::v1::action::Param {
                param_id: a.param(name).unwrap().id,
                value: value.to_vec(),
            })
            .collect();
        TableEntry {
            table_id: t.id,
            r#match,
            action: Some(TableAction {
                r#type: Some(table_action::Type::Action(talaria_p4rt::p4::v1::Action {
                    action_id: a.id,
                    params,
                })),
            }),
            ..Default::default()
        }
    }

    /// `backend` entry `id` → 10.1.0.id:8080 on node 192.168.0.1.
    fn backend(&self, id: u32) -> TableEntry {
        self.entry(
            "backend",
            &[("backend_id", &id.to_be_bytes(), 0)],
            "set_backend",
            &[
                ("backend_ip", &[10, 1, (id >> 8) as u8, id as u8]),
                ("backend_port", &8080u16.to_be_bytes()),
                ("node_ip", &[192, 168, 0, 1]),
            ],
        )
    }

    fn backend_key(&self, id: u32) -> TableEntry {
        TableEntry {
            action: None,
            ..self.backend(id)
        }
    }
}

fn upd(kind: update::Type, te: TableEntry) -> Update {
    Update {
        r#type: kind as i32,
        entity: Some(Entity {
            entity: Some(entity::Entity::TableEntry(te)),
        }),
    }
}

fn write_request(s: &P4rtServer, election: u64, updates: Vec<Update>) -> WriteRequest {
    WriteRequest {
        device_id: s.device_id,
        election_id: p4rt::election(election),
        updates,
        ..Default::default()
    }
}

/// Writes the one update `kind` of `te`, which must succeed.
async fn write_one(
    c: &mut Client,
    s: &P4rtServer,
    election: u64,
    kind: update::Type,
    te: TableEntry,
) {
    c.write(write_request(s, election, vec![upd(kind, te)]))
        .await
        .unwrap();
}

fn push(
    s: &P4rtServer,
    election: u64,
    action: SetAction,
) -> talaria_p4rt::p4::v1::SetForwardingPipelineConfigRequest {
    set_pipeline_request(s.device_id, election, action, &s.pipeline)
}

fn table_filter(table_id: u32) -> Entity {
    Entity {
        entity: Some(entity::Entity::TableEntry(TableEntry {
            table_id,
            ..Default::default()
        })),
    }
}

fn key_filter(te: &TableEntry) -> Entity {
    Entity {
        entity: Some(entity::Entity::TableEntry(te.clone())),
    }
}

async fn read(c: &mut Client, s: &P4rtServer, filters: Vec<Entity>) -> Result<Vec<Entity>, Code> {
    p4rt::read(c, s.device_id, filters)
        .await
        .map_err(|e| match e {
            talaria_bmv2_testbed::Error::P4Runtime { status, .. } => status.code(),
            other => panic!("{other}"),
        })
}

fn table_entries(entities: Vec<Entity>) -> Vec<TableEntry> {
    entities
        .into_iter()
        .map(|e| match e.entity {
            Some(entity::Entity::TableEntry(t)) => t,
            other => panic!("expected a table entry, got {other:?}"),
        })
        .collect()
}

/// `te` with every byte string in canonical form (no leading zero bytes).
fn canonical(mut te: TableEntry) -> TableEntry {
    let strip = |v: &mut Vec<u8>| {
        let first = v.iter().position(|b| *b != 0).unwrap_or(v.len() - 1);
        v.drain(..first);
    };
    for m in &mut te.r#match {
        match m.field_match_type.as_mut().unwrap() {
            field_match::FieldMatchType::Exact(e) => strip(&mut e.value),
            field_match::FieldMatchType::Lpm(l) => strip(&mut l.value),
            other => panic!("{other:?}"),
        }
    }
    if let Some(table_action::Type::Action(a)) = te.action.as_mut().and_then(|a| a.r#type.as_mut())
    {
        for p in &mut a.params {
            strip(&mut p.value);
        }
    }
    te
}

/// Whether the server is bmv2, where it departs from switch-agent in the
/// ways docs/design.md ("bmv2 parity") lists with the spec sections.
fn is_bmv2(s: &P4rtServer) -> bool {
    s.kind == ServerKind::Process(SwitchKind::Bmv2)
}

/// Becomes primary with `election` and commits the pipeline.
async fn configured(c: &mut Client, s: &P4rtServer, election: u64) -> Stream {
    let stream = Stream::primary(c, s.device_id, election)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s.kind));
    c.set_forwarding_pipeline_config(push(s, election, SetAction::VerifyAndCommit))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s.kind));
    stream
}

/// What a first arbitration update on a new stream gets: the code the
/// stream ends with (in the response headers or after them), or the status
/// of the arbitration reply.
async fn arbitration_outcome(c: &mut Client, device_id: u64, election: u64) -> Code {
    match Stream::open(c, device_id, election).await {
        Err(talaria_bmv2_testbed::Error::P4Runtime { status, .. }) => status.code(),
        Err(e) => panic!("{e}"),
        Ok(mut s) => match s.arbitration_code().await {
            Ok(code) => code,
            Err(talaria_bmv2_testbed::Error::P4Runtime { status, .. }) => status.code(),
            Err(e) => panic!("{e}"),
        },
    }
}

// -------------------------------------------------------------------- cases --

async fn capabilities(s: &P4rtServer) {
    let r = s
        .client()
        .capabilities(CapabilitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.p4runtime_api_version, "1.3.0", "{}", s.kind);
}

async fn arbitration(s: &P4rtServer) {
    let names = Names::of(s);
    let dev = s.device_id;
    let mut c = s.client();
    let mut a = Stream::primary(&mut c, dev, 10).await.unwrap();
    let mut b = Stream::open(&mut c, dev, 5).await.unwrap();
    assert_eq!(b.arbitration_code().await.unwrap(), Code::AlreadyExists);

    // The backup may not push a pipeline or write.
    let err = c
        .set_forwarding_pipeline_config(push(s, 5, SetAction::VerifyAndCommit))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    c.set_forwarding_pipeline_config(push(s, 10, SetAction::VerifyAndCommit))
        .await
        .unwrap();
    let err = c
        .write(write_request(
            s,
            5,
            vec![upd(update::Type::Insert, names.backend(1))],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // A higher election id takes over; everyone hears of it.
    b.send_arbitration(dev, 20).await.unwrap();
    assert_eq!(b.arbitration_code().await.unwrap(), Code::Ok);
    assert_eq!(a.arbitration_code().await.unwrap(), Code::AlreadyExists);
    write_one(&mut c, s, 20, update::Type::Insert, names.backend(1)).await;
    let err = c
        .write(write_request(
            s,
            10,
            vec![upd(update::Type::Insert, names.backend(2))],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The primary leaves: the backup becomes primary.
    drop(b);
    assert_eq!(a.arbitration_code().await.unwrap(), Code::Ok);
    write_one(&mut c, s, 10, update::Type::Insert, names.backend(2)).await;
}

async fn arbitration_errors(s: &P4rtServer) {
    let mut c = s.client();
    // P4Runtime 1.3 §5.3 rule 1.1: an unknown device id ends the stream
    // with NOT_FOUND. bmv2 (PI) instead makes the client primary of a
    // device it does not have.
    let unknown_device = if is_bmv2(s) { Code::Ok } else { Code::NotFound };
    assert_eq!(
        arbitration_outcome(&mut c, s.device_id + 1, 1).await,
        unknown_device,
        "{}",
        s.kind
    );
    // §5.3 rule 1.2: an election id another controller holds.
    let _a = Stream::primary(&mut c, s.device_id, 7).await.unwrap();
    assert_eq!(
        arbitration_outcome(&mut c, s.device_id, 7).await,
        Code::InvalidArgument
    );
}

async fn pipeline_lifecycle(s: &P4rtServer) {
    let names = Names::of(s);
    let mut c = s.client();
    let _s = Stream::primary(&mut c, s.device_id, 1).await.unwrap();
    let write_backend =
        |id| write_request(s, 1, vec![upd(update::Type::Insert, names.backend(id))]);
    let get = |rt: ResponseType| GetForwardingPipelineConfigRequest {
        device_id: s.device_id,
        response_type: rt as i32,
    };

    // Nothing works before a pipeline is set (§12 rule 3 for Write).
    let err = c.write(write_backend(1)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert_eq!(
        read(&mut c, s, vec![table_filter(0)]).await.unwrap_err(),
        Code::FailedPrecondition
    );
    let err = c
        .get_forwarding_pipeline_config(get(ResponseType::All))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");

    // VERIFY checks without committing. (bmv2 dies on a Write after a
    // VERIFY alone, so it is not asked.)
    c.set_forwarding_pipeline_config(push(s, 1, SetAction::Verify))
        .await
        .unwrap();
    if !is_bmv2(s) {
        let err = c.write(write_backend(1)).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    }

    // VERIFY_AND_SAVE then COMMIT (with no config) commits what was saved.
    c.set_forwarding_pipeline_config(push(s, 1, SetAction::VerifyAndSave))
        .await
        .unwrap();
    let mut commit = push(s, 1, SetAction::Commit);
    commit.config = None;
    c.set_forwarding_pipeline_config(commit).await.unwrap();
    c.write(write_backend(1)).await.unwrap();

    let config = |rt| {
        let mut c = c.clone();
        async move {
            c.get_forwarding_pipeline_config(get(rt))
                .await
                .unwrap()
                .into_inner()
                .config
                .unwrap()
        }
    };
    // The device config comes back "as stored by the target" (§15): the
    // pushed bytes from switch-agent, bmv2's own serialization from bmv2.
    let all = config(ResponseType::All).await;
    assert_eq!(all.p4info.as_ref(), Some(&s.pipeline.p4info));
    assert!(!all.p4_device_config.is_empty());
    if !is_bmv2(s) {
        assert_eq!(all.p4_device_config, s.pipeline.device_config);
    }
    assert_eq!(all.cookie.unwrap().cookie, 0x7a1a);
    let ck = config(ResponseType::CookieOnly).await;
    assert!(ck.p4info.is_none() && ck.p4_device_config.is_empty() && ck.cookie.is_some());
    let pc = config(ResponseType::P4infoAndCookie).await;
    assert!(pc.p4info.is_some() && pc.p4_device_config.is_empty() && pc.cookie.is_some());
    let dc = config(ResponseType::DeviceConfigAndCookie).await;
    assert!(dc.p4info.is_none() && !dc.p4_device_config.is_empty() && dc.cookie.is_some());

    // VERIFY_AND_COMMIT resets the forwarding state.
    let backends = table_filter(names.table_id("backend"));
    assert_eq!(
        read(&mut c, s, vec![backends.clone()]).await.unwrap().len(),
        1
    );
    c.set_forwarding_pipeline_config(push(s, 1, SetAction::VerifyAndCommit))
        .await
        .unwrap();
    assert!(read(&mut c, s, vec![backends.clone()])
        .await
        .unwrap()
        .is_empty());

    // RECONCILE_AND_COMMIT keeps it; support "is not expected to be
    // uniform" (§14): switch-agent does it, bmv2 answers UNKNOWN and keeps
    // the entries too.
    c.write(write_backend(2)).await.unwrap();
    let reconcile = c
        .set_forwarding_pipeline_config(push(s, 1, SetAction::ReconcileAndCommit))
        .await;
    match (is_bmv2(s), reconcile) {
        (false, Ok(_)) => {}
        (true, Err(e)) if e.code() == Code::Unknown => {}
        (_, other) => panic!("{}: RECONCILE_AND_COMMIT: {other:?}", s.kind),
    }
    assert_eq!(read(&mut c, s, vec![backends]).await.unwrap().len(), 1);
}

async fn insert_modify_delete_and_read(s: &P4rtServer) {
    let b = Names::of(s);
    let mut c = s.client();
    let _s = configured(&mut c, s, 1).await;

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
    let svc = |mask: u8, mode: u8| {
        b.entry(
            "service_v4",
            &[
                ("vip", &[10, 96, 0, 10], 0),
                ("port", &[0, 80], 0),
                ("proto", &[6], 0),
            ],
            "set_service",
            &[
                ("service_id", &[0, 7]),
                ("bucket_mask", &[0, mask]),
                ("hash_mode", &[mode]),
            ],
        )
    };
    c.write(write_request(
        s,
        1,
        vec![
            upd(update::Type::Insert, route.clone()),
            upd(update::Type::Insert, svc(15, 0)),
        ],
    ))
    .await
    .unwrap();

    // A wildcard over every table returns both, in canonical form.
    let all = table_entries(read(&mut c, s, vec![table_filter(0)]).await.unwrap());
    assert_eq!(all.len(), 2, "{all:?}");
    let got = all
        .iter()
        .find(|t| t.table_id == b.table_id("service_v4"))
        .unwrap();
    assert_eq!(got, &canonical(svc(15, 0)));

    // A per-table wildcard and a single key.
    let routes = table_entries(
        read(&mut c, s, vec![table_filter(b.table_id("ipv4_route"))])
            .await
            .unwrap(),
    );
    assert_eq!(routes, vec![canonical(route.clone())]);
    let key = TableEntry {
        action: None,
        ..svc(15, 0)
    };
    assert_eq!(
        read(&mut c, s, vec![key_filter(&key)]).await.unwrap().len(),
        1
    );

    // MODIFY changes the action; DELETE needs only the key.
    write_one(&mut c, s, 1, update::Type::Modify, svc(31, 1)).await;
    let one = table_entries(read(&mut c, s, vec![key_filter(&key)]).await.unwrap());
    assert_eq!(one, vec![canonical(svc(31, 1))]);
    write_one(&mut c, s, 1, update::Type::Delete, key.clone()).await;
    assert!(read(&mut c, s, vec![key_filter(&key)])
        .await
        .unwrap()
        .is_empty());

    // The default entry reads back as the initial default action, and a
    // MODIFY to that same action is accepted.
    let default_filter = TableEntry {
        table_id: b.table_id("backend"),
        is_default_action: true,
        ..Default::default()
    };
    let d = table_entries(
        read(&mut c, s, vec![key_filter(&default_filter)])
            .await
            .unwrap(),
    );
    assert_eq!(d.len(), 1);
    assert!(d[0].is_default_action);
    let backend_miss = b.action("backend_miss").id;
    match d[0].action.as_ref().and_then(|a| a.r#type.as_ref()) {
        Some(table_action::Type::Action(a)) => assert_eq!(a.action_id, backend_miss),
        other => panic!("{other:?}"),
    }
    write_one(&mut c, s, 1, update::Type::Modify, d[0].clone()).await;
}

async fn per_update_errors(s: &P4rtServer) {
    let b = Names::of(s);
    let mut c = s.client();
    let _s = configured(&mut c, s, 1).await;
    write_one(&mut c, s, 1, update::Type::Insert, b.backend(1)).await;
    // New entry (OK), duplicate (ALREADY_EXISTS), MODIFY of a missing entry
    // (NOT_FOUND), DELETE of a missing entry (NOT_FOUND).
    let err = c
        .write(write_request(
            s,
            1,
            vec![
                upd(update::Type::Insert, b.backend(2)),
                upd(update::Type::Insert, b.backend(1)),
                upd(update::Type::Modify, b.backend(3)),
                upd(update::Type::Delete, b.backend_key(4)),
            ],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown, "{err}");
    let codes: Vec<Code> = decode_batch_status(&err)
        .expect("one p4.v1.Error per update")
        .iter()
        .map(|e| e.code)
        .collect();
    assert_eq!(
        codes,
        [
            Code::Ok,
            Code::AlreadyExists,
            Code::NotFound,
            Code::NotFound
        ]
    );
    // CONTINUE_ON_ERROR: the good update was applied.
    let backends = read(&mut c, s, vec![table_filter(b.table_id("backend"))])
        .await
        .unwrap();
    assert_eq!(backends.len(), 2);

    // The other atomicity modes are not implemented.
    let mut req = write_request(s, 1, vec![upd(update::Type::Insert, b.backend(9))]);
    req.atomicity = 1;
    assert_eq!(c.write(req).await.unwrap_err().code(), Code::Unimplemented);
}

async fn validation_errors(s: &P4rtServer) {
    let b = Names::of(s);
    let mut c = s.client();
    let _s = configured(&mut c, s, 1).await;
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
    if let Some(table_action::Type::Action(a)) = missing_param
        .action
        .as_mut()
        .and_then(|a| a.r#type.as_mut())
    {
        a.params.pop();
    }
    let mut wrong_action = b.backend(6);
    if let Some(table_action::Type::Action(a)) =
        wrong_action.action.as_mut().and_then(|a| a.r#type.as_mut())
    {
        // `forward`: not an action of `backend`.
        a.action_id = b.action("forward").id;
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
    // §8.4: a byte string too wide for its field, or empty, is
    // OUT_OF_RANGE. bmv2 (PI) says INVALID_ARGUMENT to the first and takes
    // the empty string as zero.
    let (too_wide, empty) = if is_bmv2(s) {
        (Code::InvalidArgument, Code::Ok)
    } else {
        (Code::OutOfRange, Code::OutOfRange)
    };
    // §9.1 names no code for a table id the P4Info does not have.
    let unknown_table_code = if is_bmv2(s) {
        Code::InvalidArgument
    } else {
        Code::NotFound
    };
    let cases: Vec<(&str, TableEntry, Code)> = vec![
        // port is bit<9>: 511 fits, 512 does not.
        ("port 511", fwd(&[1, 255], &[10, 0, 0, 0], 8), Code::Ok),
        ("port 512", fwd(&[2, 0], &[11, 0, 0, 0], 8), too_wide),
        (
            "zero-padded values",
            fwd(&[0, 0, 0, 3], &[0, 12, 0, 0, 0], 8),
            Code::Ok,
        ),
        ("33-bit address", fwd(&[3], &[1, 13, 0, 0, 0], 8), too_wide),
        ("empty address", fwd(&[3], &[], 8), empty),
        (
            "host bits past the prefix",
            fwd(&[3], &[14, 0, 0, 1], 8),
            Code::InvalidArgument,
        ),
        (
            "prefix length 33",
            fwd(&[3], &[15, 0, 0, 0], 33),
            Code::InvalidArgument,
        ),
        (
            "prefix length -1",
            fwd(&[3], &[0, 0, 0, 0], -1),
            Code::InvalidArgument,
        ),
        ("missing parameter", missing_param, Code::InvalidArgument),
        (
            "action of another table",
            wrong_action,
            Code::InvalidArgument,
        ),
        (
            "priority on an exact table",
            with_priority,
            Code::InvalidArgument,
        ),
        ("unknown table", unknown_table, unknown_table_code),
        ("missing exact key", missing_key, Code::InvalidArgument),
        // §9.1.2: an action outside its scope.
        ("default-only action", defaultonly, Code::PermissionDenied),
    ];
    let (labels, entries, want): (Vec<_>, Vec<_>, Vec<_>) = cases.into_iter().fold(
        (vec![], vec![], vec![]),
        |(mut l, mut e, mut w), (label, te, code)| {
            l.push(label);
            e.push(upd(update::Type::Insert, te));
            w.push(code);
            (l, e, w)
        },
    );
    let err = c.write(write_request(s, 1, entries)).await.unwrap_err();
    let got = decode_batch_status(&err).expect("one p4.v1.Error per update");
    assert_eq!(got.len(), want.len());
    let wrong: Vec<String> = labels
        .iter()
        .zip(&got)
        .zip(&want)
        .filter(|((_, g), w)| g.code != **w)
        .map(|((l, g), w)| format!("{l}: {:?} ({}), expected {w:?}", g.code, g.message))
        .collect();
    assert!(wrong.is_empty(), "{}:\n{}", s.kind, wrong.join("\n"));
}

async fn full_table(s: &P4rtServer) {
    let b = Names::of(s);
    let mut c = s.client();
    let _s = configured(&mut c, s, 1).await;
    let size = u32::try_from(b.table("switch_addr").size).unwrap();
    let addr = |i: u32| {
        b.entry(
            "switch_addr",
            &[("dst_addr", &(0x0a00_0000 + i).to_be_bytes(), 0)],
            "terminate_tunnel",
            &[],
        )
    };
    c.write(write_request(
        s,
        1,
        (0..size)
            .map(|i| upd(update::Type::Insert, addr(i)))
            .collect(),
    ))
    .await
    .unwrap();
    let err = c
        .write(write_request(
            s,
            1,
            vec![upd(update::Type::Insert, addr(size))],
        ))
        .await
        .unwrap_err();
    let got = decode_batch_status(&err).expect("one p4.v1.Error per update");
    // §9.1: RESOURCE_EXHAUSTED; bmv2 (PI) reports UNKNOWN ("Error when
    // adding match entry to target").
    let want = if is_bmv2(s) {
        Code::Unknown
    } else {
        Code::ResourceExhausted
    };
    assert_eq!(got[0].code, want, "{}: {}", s.kind, got[0].message);
}

async fn counters(s: &P4rtServer) {
    let b = Names::of(s);
    let mut c = s.client();
    let _s = configured(&mut c, s, 1).await;
    write_one(&mut c, s, 1, update::Type::Insert, b.backend(4)).await;
    let drop_id = b.0.counters().id("drop_counter").unwrap();
    let no_route = talaria_common::drop::DropReason::NoRoute.code();
    let cell = |counter_id: u32, index: Option<i64>| Entity {
        entity: Some(entity::Entity::CounterEntry(CounterEntry {
            counter_id,
            index: index.map(|index| Index { index }),
            data: None,
        })),
    };

    // On a switch with ports, a frame nobody routes moves drop_counter
    // [no_route] by one packet (a bounded wait: the switch counts it
    // asynchronously). drop_counter is a packets counter in the P4, yet
    // both switches count and report its bytes as well.
    let arp = {
        let mut f = eth([0xff; 6], mac(0xaa), &[0u8; 28]);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f
    };
    let (want_packets, want_bytes) = match s.inject(&arp) {
        Some(sent) => {
            sent.unwrap();
            (1, arp.len() as i64)
        }
        None => (0, 0),
    };
    let read_cell = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            let one = read(&mut c, s, vec![cell(drop_id, Some(i64::from(no_route)))])
                .await
                .unwrap();
            assert_eq!(one.len(), 1, "{one:?}");
            match &one[0].entity {
                Some(entity::Entity::CounterEntry(ce)) => ce.data.unwrap_or_default(),
                other => panic!("{other:?}"),
            }
        }
    };
    let started = Instant::now();
    let mut data = read_cell(&mut c).await;
    while data.packet_count < want_packets && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        data = read_cell(&mut c).await;
    }
    assert_eq!(data.packet_count, want_packets, "{}", s.kind);
    assert_eq!(data.byte_count, want_bytes, "{}", s.kind);

    // counter_id 0 and no index: every cell of every counter.
    let all = read(&mut c, s, vec![cell(0, None)]).await.unwrap();
    let cells: usize = b.0.counters().iter().map(|c| c.size as usize).sum();
    assert_eq!(all.len(), cells);
    // An index past the counter's size: §9.3.2 says OUT_OF_RANGE for a
    // MODIFY and names no code for a Read; bmv2 (PI) answers UNKNOWN.
    let size = b.0.counters().by_id(drop_id).unwrap().size;
    let past_the_end = if is_bmv2(s) {
        Code::Unknown
    } else {
        Code::OutOfRange
    };
    assert_eq!(
        read(&mut c, s, vec![cell(drop_id, Some(size))])
            .await
            .unwrap_err(),
        past_the_end,
        "{}",
        s.kind
    );

    // The backend table's direct counters: one per entry, with its key.
    let direct = read(
        &mut c,
        s,
        vec![Entity {
            entity: Some(entity::Entity::DirectCounterEntry(DirectCounterEntry {
                table_entry: Some(TableEntry {
                    table_id: b.table_id("backend"),
                    ..Default::default()
                }),
                data: None,
            })),
        }],
    )
    .await
    .unwrap();
    assert_eq!(direct.len(), 1, "{direct:?}");
    let Some(entity::Entity::DirectCounterEntry(dc)) = &direct[0].entity else {
        panic!("{direct:?}")
    };
    let key = dc.table_entry.as_ref().unwrap();
    assert_eq!(key.table_id, b.table_id("backend"));
    assert_eq!(
        canonical(key.clone()).r#match,
        canonical(b.backend_key(4)).r#match
    );
    assert_eq!(dc.data.unwrap_or_default().packet_count, 0);
}
