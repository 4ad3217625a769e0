//! The hand-kept P4Info of p4/tiny/tiny.p4 loads, and every name in it
//! resolves to the id and width that p4c assigns.

mod common;

use std::path::Path;

use talaria_p4rt::google::rpc::Code;
use talaria_p4rt::p4::config::v1::p4_ids::Prefix;
use talaria_p4rt::p4info::{self, ActionScope, CounterUnit, Format, MatchType, Schema};

const ROUTE: u32 = 0x0200_0001;
const FORWARD: u32 = 0x0100_0001;
const DROP: u32 = 0x0100_0002;
const NO_ACTION: u32 = 21_257_015;
const ROUTE_HITS: u32 = 0x1200_0001;

fn tiny() -> Schema {
    let p4info = p4info::load(common::tiny_p4info_path()).expect("tiny P4Info loads");
    Schema::new(&p4info).expect("tiny P4Info indexes")
}

#[test]
fn table_resolves_by_name_alias_and_id() {
    let schema = tiny();
    let route = schema.table("TinyIngress.route").unwrap();
    assert_eq!(route.id, ROUTE);
    assert_eq!(schema.table("route").unwrap().id, ROUTE);
    assert_eq!(
        schema.tables().by_id(ROUTE).unwrap().name,
        "TinyIngress.route"
    );
    assert_eq!(route.size, 1024);
    assert_eq!(route.const_default_action_id, Some(NO_ACTION));
    assert_eq!(route.implementation_id, None);
    assert!(route.direct_resource_ids.is_empty());
    assert!(!route.is_const);
}

#[test]
fn match_fields_have_ids_widths_and_types() {
    let schema = tiny();
    let route = schema.table("route").unwrap();
    let port = route.match_field("standard_metadata.ingress_port").unwrap();
    assert_eq!(
        (port.id, port.bitwidth, &port.match_type),
        (1, 9, &MatchType::Exact)
    );
    let dst = route.match_field("hdr.ipv4.dst_addr").unwrap();
    assert_eq!(
        (dst.id, dst.bitwidth, &dst.match_type),
        (2, 32, &MatchType::Lpm)
    );
    assert_eq!(
        route.match_fields.by_id(2).unwrap().name,
        "hdr.ipv4.dst_addr"
    );
    let in_key_order: Vec<_> = route.match_fields.iter().map(|f| f.id).collect();
    assert_eq!(in_key_order, [1, 2]);
}

#[test]
fn action_refs_carry_scopes() {
    let schema = tiny();
    let route = schema.table("route").unwrap();
    let scope = |id| route.action_ref(id).map(|r| r.scope);
    assert_eq!(scope(FORWARD), Some(ActionScope::TableAndDefault));
    assert_eq!(scope(DROP), Some(ActionScope::TableAndDefault));
    assert_eq!(scope(NO_ACTION), Some(ActionScope::DefaultOnly));
    assert_eq!(scope(ROUTE_HITS), None);
}

#[test]
fn actions_and_params_resolve() {
    let schema = tiny();
    let forward = schema.action("TinyIngress.forward").unwrap();
    assert_eq!(forward.id, FORWARD);
    assert_eq!(schema.actions().id("forward").unwrap(), FORWARD);
    let port = forward.param("port").unwrap();
    assert_eq!((port.id, port.bitwidth), (1, 9));
    let dst_mac = forward.param("dst_mac").unwrap();
    assert_eq!((dst_mac.id, dst_mac.bitwidth), (2, 48));
    assert_eq!(forward.params.name(2).unwrap(), "dst_mac");

    assert_eq!(schema.actions().id("drop").unwrap(), DROP);
    assert!(schema.action("drop").unwrap().params.is_empty());
    assert_eq!(schema.actions().id("NoAction").unwrap(), NO_ACTION);
    assert_eq!(schema.actions().name(NO_ACTION).unwrap(), "NoAction");
}

#[test]
fn counter_resolves() {
    let schema = tiny();
    let hits = schema.counters().get("TinyIngress.route_hits").unwrap();
    assert_eq!(hits.id, ROUTE_HITS);
    assert_eq!(hits.unit, CounterUnit::Both);
    assert_eq!(hits.size, 512);
    assert_eq!(
        schema.counters().by_id(ROUTE_HITS).unwrap().alias,
        "route_hits"
    );
    assert!(schema.direct_counters().is_empty());
    assert!(schema.meters().is_empty());
    assert!(schema.registers().is_empty());
    assert!(schema.action_profiles().is_empty());
}

/// p4c puts the object kind in the top 8 bits of every id, also of ids
/// given with @id; a P4Info that breaks this was not written like p4c.
#[test]
fn ids_carry_their_kind_prefix() {
    let schema = tiny();
    let prefix = |id: u32| Prefix::try_from((id >> 24) as i32).unwrap();
    assert!(schema
        .tables()
        .iter()
        .all(|t| prefix(t.id) == Prefix::Table));
    assert!(schema
        .actions()
        .iter()
        .all(|a| prefix(a.id) == Prefix::Action));
    assert!(schema
        .counters()
        .iter()
        .all(|c| prefix(c.id) == Prefix::Counter));
}

#[test]
fn unknown_names_and_ids_say_what_is_missing() {
    let schema = tiny();

    let error = schema.table("TinyIngress.nope").unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown table `TinyIngress.nope` in P4Info (known: TinyIngress.route)"
    );
    assert_eq!(error.code(), Code::NotFound);

    let error = schema.action("fwd").unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown action `fwd` in P4Info \
         (known: NoAction, TinyIngress.drop, TinyIngress.forward)"
    );

    let route = schema.table("route").unwrap();
    assert_eq!(
        route.match_field("ipv4.dst_addr").unwrap_err().to_string(),
        "unknown match field `ipv4.dst_addr` in table `TinyIngress.route` \
         (known: hdr.ipv4.dst_addr, standard_metadata.ingress_port)"
    );
    let forward = schema.action("forward").unwrap();
    assert_eq!(
        forward.param("mac").unwrap_err().to_string(),
        "unknown action parameter `mac` in action `TinyIngress.forward` \
         (known: dst_mac, port)"
    );
    assert_eq!(
        schema.meters().get("m").unwrap_err().to_string(),
        "unknown meter `m` in P4Info (known: none)"
    );
    assert_eq!(
        schema.tables().by_id(FORWARD).unwrap_err().to_string(),
        "unknown table id 16777217 (0x01000001) in P4Info"
    );
}

#[test]
fn load_picks_the_format_from_the_file_name() {
    let format = |name: &str| Format::from_path(Path::new(name));
    assert_eq!(format("x.p4info.txt"), Format::Text);
    assert_eq!(format("x.p4info.txtpb"), Format::Text);
    assert_eq!(format("x.pb.txt"), Format::Text);
    assert_eq!(format("x.p4info.json"), Format::Json);
    assert_eq!(format("x.p4info.pb"), Format::Binary);
    assert_eq!(format("x.bin"), Format::Binary);
    assert_eq!(format("p4info"), Format::Binary);
}

#[test]
fn load_reports_the_missing_file() {
    let error = p4info::load("/nonexistent/x.txtpb").unwrap_err();
    assert_eq!(error.to_string(), "cannot read `/nonexistent/x.txtpb`");
    assert!(std::error::Error::source(&error).is_some());
}
