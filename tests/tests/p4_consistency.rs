//! The P4 program (`p4/*.p4`), its hand-kept P4Info
//! (`p4/talaria.p4info.txtpb`) and the Rust side (`talaria_tables`, `talaria_common::p4`,
//! `::drop`, `::wire`, `::hash`) must agree on every name, id, width, size
//! and code. These tests check the real files, then break each side on
//! purpose and check that the checker notices.

use talaria_tests::consistency::{check, Mismatch, RustModel};
use talaria_tests::{p4_dir, p4src};

fn source() -> String {
    let main = p4_dir().join("talaria.p4");
    p4src::load(&main).unwrap_or_else(|e| panic!("reading {}: {e}", main.display()))
}

fn p4info_text() -> String {
    let path = p4_dir().join("talaria.p4info.txtpb");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn run(source: &str, p4info: &str, rust: &RustModel) -> Vec<Mismatch> {
    let program = p4src::parse(source).unwrap_or_else(|e| panic!("scanning the P4 source: {e}"));
    let info = talaria_p4rt::p4info::parse_text(p4info)
        .unwrap_or_else(|e| panic!("parsing the P4Info: {e}"));
    check(&program, &info, rust)
}

fn listing(mismatches: &[Mismatch]) -> String {
    mismatches
        .iter()
        .map(|m| format!("  {m}\n"))
        .collect::<String>()
}

/// Replaces `from` (which must occur) with `to` in `text`.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the text no longer contains {from:?}");
    text.replace(from, to)
}

#[track_caller]
fn assert_reported(mismatches: &[Mismatch], object: &str, what: &str) {
    assert!(
        mismatches
            .iter()
            .any(|m| m.object == object && m.what.contains(what)),
        "expected a mismatch on {object} / {what}, got:\n{}",
        listing(mismatches)
    );
}

#[test]
fn real_files_agree() {
    let mismatches = run(&source(), &p4info_text(), &RustModel::from_rust());
    assert!(
        mismatches.is_empty(),
        "P4 source, P4Info and Rust disagree:\n{}",
        listing(&mismatches)
    );
}

#[test]
fn the_scanner_sees_the_whole_program() {
    let program = p4src::parse(&source()).unwrap();
    let tables = talaria_tables::Table::ALL;
    let actions: std::collections::BTreeSet<u32> = tables
        .iter()
        .flat_map(|t| t.def().actions.iter().map(|(a, _)| a.id))
        .collect();
    assert_eq!(program.tables.len(), tables.len());
    assert_eq!(program.actions.len(), actions.len());
    assert_eq!(program.counters.len(), 4);
    assert!(program.tables.iter().all(|t| t.applied));
    let lb = program.table("TalariaIngress.lb_bucket").unwrap();
    assert_eq!(lb.size_expr.as_deref(), Some("LB_BUCKET_SIZE"));
    assert_eq!(lb.keys[1].width, Some(16));
}

#[test]
fn renamed_table_in_source_is_reported() {
    let source = edit(&source(), "lb_bucket", "lb_buckets");
    let mismatches = run(&source, &p4info_text(), &RustModel::from_rust());
    assert_reported(&mismatches, "table TalariaIngress.lb_bucket", "presence");
    assert_reported(&mismatches, "table TalariaIngress.lb_buckets", "presence");
}

#[test]
fn unapplied_table_is_reported() {
    let source = edit(&source(), "pod_node.apply();", "");
    let mismatches = run(&source, &p4info_text(), &RustModel::from_rust());
    assert_reported(&mismatches, "table TalariaIngress.pod_node", "applied");
}

#[test]
fn changed_key_width_in_source_is_reported() {
    let source = edit(
        &source(),
        "typedef bit<16> bucket_t;",
        "typedef bit<12> bucket_t;",
    );
    let mismatches = run(&source, &p4info_text(), &RustModel::from_rust());
    assert_reported(
        &mismatches,
        "table TalariaIngress.lb_bucket",
        "(bucket) bitwidth",
    );
    assert_reported(
        &mismatches,
        "action TalariaIngress.set_service",
        "(bucket_mask) bitwidth",
    );
}

#[test]
fn changed_width_in_p4info_is_reported() {
    let p4info = edit(
        &p4info_text(),
        "name: \"bucket\"\n    bitwidth: 16",
        "name: \"bucket\"\n    bitwidth: 12",
    );
    let mismatches = run(&source(), &p4info, &RustModel::from_rust());
    assert_reported(
        &mismatches,
        "table TalariaIngress.lb_bucket",
        "(bucket) bitwidth",
    );

    let p4info = edit(
        &p4info_text(),
        "name: \"backend_port\"\n    bitwidth: 16",
        "name: \"backend_port\"\n    bitwidth: 32",
    );
    let mismatches = run(&source(), &p4info, &RustModel::from_rust());
    assert_reported(
        &mismatches,
        "action TalariaIngress.set_backend",
        "(backend_port) bitwidth",
    );
}

#[test]
fn changed_id_in_p4info_is_reported() {
    // lb_bucket's table id, 0x02000005.
    let p4info = edit(&p4info_text(), "id: 33554437\n", "id: 33554447\n");
    let mismatches = run(&source(), &p4info, &RustModel::from_rust());
    assert_reported(&mismatches, "table TalariaIngress.lb_bucket", "id");
}

#[test]
fn wrong_id_prefix_in_source_is_reported() {
    let source = edit(&source(), "@id(0x02000005)", "@id(0x01000005)");
    let mismatches = run(&source, &p4info_text(), &RustModel::from_rust());
    assert_reported(&mismatches, "table TalariaIngress.lb_bucket", "id");
}

#[test]
fn unprefixed_id_in_source_is_accepted() {
    // p4c ORs the type prefix into an @id without one.
    let source = edit(&source(), "@id(0x02000005)", "@id(5)");
    let mismatches = run(&source, &p4info_text(), &RustModel::from_rust());
    assert!(mismatches.is_empty(), "{}", listing(&mismatches));
}

#[test]
fn changed_size_is_reported() {
    let source = edit(
        &source(),
        "const bit<32> BACKEND_SIZE      = 262144;",
        "const bit<32> BACKEND_SIZE      = 131072;",
    );
    let mismatches = run(&source, &p4info_text(), &RustModel::from_rust());
    assert_reported(&mismatches, "table TalariaIngress.backend", "size");
    assert_reported(&mismatches, "constant BACKEND_SIZE", "value");
}

#[test]
fn changed_drop_code_is_reported() {
    let source = edit(
        &source(),
        "DROP_NO_ROUTE                = 11;",
        "DROP_NO_ROUTE                = 21;",
    );
    let mismatches = run(&source, &p4info_text(), &RustModel::from_rust());
    assert_reported(&mismatches, "constant DROP_NO_ROUTE", "value");

    let source = edit(
        &self::source(),
        "const bit<8> DROP_UNKNOWN_POD             = 20;",
        "const bit<8> DROP_UNKNOWN_POD             = 20;\nconst bit<8> DROP_EXTRA = 21;",
    );
    let mismatches = run(&source, &p4info_text(), &RustModel::from_rust());
    assert_reported(&mismatches, "constant DROP_EXTRA", "presence");
}

#[test]
fn changed_default_action_in_p4info_is_reported() {
    // backend's initial default action: backend_miss (0x0100000C) becomes
    // set_backend (0x0100000B).
    let p4info = edit(
        &p4info_text(),
        "initial_default_action {\n    action_id: 16777228\n",
        "initial_default_action {\n    action_id: 16777227\n",
    );
    let mismatches = run(&source(), &p4info, &RustModel::from_rust());
    assert_reported(
        &mismatches,
        "table TalariaIngress.backend",
        "default action",
    );
}

#[test]
fn changed_default_only_scope_is_reported() {
    let source = edit(&source(), "@defaultonly bucket_miss;", "bucket_miss;");
    let mismatches = run(&source, &p4info_text(), &RustModel::from_rust());
    assert_reported(&mismatches, "table TalariaIngress.lb_bucket", "actions");
}

#[test]
fn rust_side_changes_are_reported() {
    let mut rust = RustModel::from_rust();
    let t = rust
        .tables
        .iter_mut()
        .find(|t| t.alias == "service_v4")
        .unwrap();
    t.key[1].1 = 8;
    let a = rust
        .actions
        .iter_mut()
        .find(|a| a.alias == "forward")
        .unwrap();
    a.id += 100;
    let mismatches = run(&source(), &p4info_text(), &rust);
    assert_reported(
        &mismatches,
        "table TalariaIngress.service_v4",
        "(port) bitwidth",
    );
    assert_reported(&mismatches, "action TalariaIngress.forward", "id");
}
