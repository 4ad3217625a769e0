//! P4Info survives text → binary → text and text → JSON → text unchanged,
//! and the prost types keep every field the descriptors know.

mod common;

use prost::Message;
use prost_reflect::DynamicMessage;
use talaria_p4rt::descriptor_pool;
use talaria_p4rt::p4info::{self, P4Info, Schema};

fn fixtures() -> [(&'static str, String); 2] {
    [
        ("tiny", common::read(&common::tiny_p4info_path())),
        ("full", common::read(&common::full_p4info_path())),
    ]
}

#[test]
fn text_binary_text_is_lossless() {
    for (name, text) in fixtures() {
        let parsed = p4info::parse_text(&text).unwrap();
        let from_binary = p4info::parse_binary(&parsed.encode_to_vec()).unwrap();
        assert_eq!(from_binary, parsed, "{name}: binary round trip");
        let reprinted = p4info::to_text(&from_binary);
        assert_eq!(
            p4info::parse_text(&reprinted).unwrap(),
            parsed,
            "{name}: text round trip"
        );
    }
}

#[test]
fn text_json_text_is_lossless() {
    for (name, text) in fixtures() {
        let parsed = p4info::parse_text(&text).unwrap();
        let json = p4info::to_json(&parsed).unwrap();
        let from_json = p4info::parse_json(&json).unwrap();
        assert_eq!(from_json, parsed, "{name}: JSON round trip");
        let reprinted = p4info::to_text(&from_json);
        assert_eq!(
            p4info::parse_text(&reprinted).unwrap(),
            parsed,
            "{name}: text round trip"
        );
    }
}

/// Comments and blank lines dropped, to compare printed text.
fn without_comments(text: &str) -> String {
    let lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    lines.map(|l| format!("{l}\n")).collect()
}

/// `to_text` prints as p4c does, and the fixtures are written as p4c would
/// write them: printing what they parse to gives them back line for line.
/// (Maps print sorted by key, so this holds for the full fixture too.)
#[test]
fn printing_matches_p4c_layout() {
    for (name, text) in fixtures() {
        let printed = p4info::to_text(&p4info::parse_text(&text).unwrap());
        assert!(printed.starts_with("# proto-file: p4/config/v1/p4info.proto\n"));
        assert_eq!(
            without_comments(&printed),
            without_comments(&text),
            "{name}"
        );
    }
}

fn p4info_descriptor() -> prost_reflect::MessageDescriptor {
    descriptor_pool()
        .get_message_by_name("p4.config.v1.P4Info")
        .unwrap()
}

/// If the fixture missed a field, the next test would prove less.
#[test]
fn full_fixture_sets_every_top_level_field() {
    let text = common::read(&common::full_p4info_path());
    let full = DynamicMessage::parse_text_format(p4info_descriptor(), &text).unwrap();
    for field in p4info_descriptor().fields() {
        assert!(
            full.has_field(&field),
            "full.p4info.txtpb leaves `{}` unset",
            field.name()
        );
    }
}

/// Reflection reads the text with nothing but the descriptors; going through
/// the prost type and back must not drop a byte of it. prost silently drops
/// fields it was not generated with, so this is what shows the generated
/// message set is as complete as the protos.
#[test]
fn prost_types_keep_every_field() {
    let text = common::read(&common::full_p4info_path());
    let reflected = DynamicMessage::parse_text_format(p4info_descriptor(), &text).unwrap();
    let through_prost = P4Info::decode(reflected.encode_to_vec().as_slice()).unwrap();
    let back = DynamicMessage::decode(
        p4info_descriptor(),
        through_prost.encode_to_vec().as_slice(),
    )
    .unwrap();
    assert_eq!(back, reflected);
    assert_eq!(reflected.unknown_fields().count(), 0);
}

#[test]
fn full_fixture_indexes() {
    let p4info = p4info::load(common::full_p4info_path()).unwrap();
    let schema = Schema::new(&p4info).unwrap();
    let route = schema.table("route").unwrap();
    assert_eq!(route.implementation_id, Some(0x1100_0001));
    assert_eq!(route.direct_resource_ids, [0x1300_0001, 0x1500_0001]);
    assert!(route.is_const);
    let selector = schema.action_profiles().get("selector").unwrap();
    assert!(selector.with_selector);
    assert_eq!(selector.table_ids, [route.id]);
    assert_eq!(
        schema
            .direct_counters()
            .get("route_counter")
            .unwrap()
            .table_id,
        route.id
    );
    assert_eq!(
        schema.direct_meters().get("route_meter").unwrap().table_id,
        route.id
    );
    assert_eq!(schema.meters().get("policer").unwrap().size, 32);
    let last_seen = schema.registers().get("Ingress.last_seen").unwrap();
    assert_eq!((last_seen.size, last_seen.bitwidth), (16, Some(48)));
    let hash = route.match_field("meta.hash").unwrap();
    assert_eq!(hash.match_type, p4info::MatchType::Other("selector".into()));
}

#[test]
fn malformed_input_is_rejected() {
    assert!(p4info::parse_text("tables { preamble { idd: 1 } }").is_err());
    assert!(p4info::parse_json("{\"tables\": 3}").is_err());
    assert!(p4info::parse_binary(&[0x12, 0x05, 0x0a]).is_err());

    let mut twice = p4info::parse_text(&fixtures()[0].1).unwrap();
    twice.tables.push(twice.tables[0].clone());
    assert_eq!(
        Schema::new(&twice).unwrap_err().to_string(),
        "P4Info has more than one table named `TinyIngress.route`"
    );
}
