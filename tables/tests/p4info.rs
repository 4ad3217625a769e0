//! The definitions against the checked-in P4Info (which `tests/` checks
//! against the P4 source and real p4c), and [`check`] noticing each kind
//! of difference.

use talaria_p4rt::p4info::P4Info;
use talaria_tables::p4runtime::{check, Fit};
use talaria_tables::Table;

fn p4info() -> P4Info {
    talaria_tables::p4info()
}

#[test]
fn the_definitions_match_the_p4info_exactly() {
    check(&p4info(), Fit::Exactly).unwrap();
}

#[track_caller]
fn mismatch(edit: impl FnOnce(&mut P4Info), fit: Fit, expect: &str) {
    let mut p = p4info();
    edit(&mut p);
    let e = check(&p, fit)
        .expect_err("the edit must be noticed")
        .to_string();
    assert!(e.contains(expect), "{expect:?} not in:\n{e}");
}

fn table<'a>(p: &'a mut P4Info, alias: &str) -> &'a mut talaria_p4rt::p4::config::v1::Table {
    p.tables
        .iter_mut()
        .find(|t| t.preamble.as_ref().unwrap().alias == alias)
        .unwrap()
}

#[test]
fn every_kind_of_difference_is_noticed() {
    mismatch(
        |p| table(p, "service_v4").match_fields[1].bitwidth = 32,
        Fit::Covers,
        "table TalariaIngress.service_v4: match fields",
    );
    mismatch(
        |p| table(p, "service_v4").match_fields[0].name = "dst".into(),
        Fit::Covers,
        "match fields",
    );
    mismatch(
        |p| table(p, "lb_bucket").size = 1024,
        Fit::Covers,
        "table TalariaIngress.lb_bucket: size 1024, want 2097152",
    );
    mismatch(
        |p| table(p, "backend").preamble.as_mut().unwrap().id = 0x0200_0099,
        Fit::Covers,
        "table TalariaIngress.backend: id 0x2000099",
    );
    mismatch(
        |p| {
            p.tables
                .retain(|t| t.preamble.as_ref().unwrap().alias != "pod_node")
        },
        Fit::Covers,
        "table TalariaIngress.pod_node is missing",
    );
    mismatch(
        |p| {
            let a = p
                .actions
                .iter_mut()
                .find(|a| a.preamble.as_ref().unwrap().alias == "set_backend")
                .unwrap();
            a.params.swap(0, 2);
        },
        Fit::Covers,
        "action TalariaIngress.set_backend: params",
    );
    mismatch(
        |p| {
            let t = table(p, "cookie_check");
            t.action_refs.iter_mut().for_each(|r| r.scope = 0);
        },
        Fit::Covers,
        "table TalariaIngress.cookie_check: actions",
    );
    mismatch(
        |p| {
            let t = table(p, "backend");
            t.initial_default_action.as_mut().unwrap().action_id = 0x0100_000B;
        },
        Fit::Covers,
        "table TalariaIngress.backend: initial default action",
    );
    mismatch(
        |p| p.counters[1].size = 16,
        Fit::Covers,
        "counter TalariaIngress.drop_counter",
    );
    // An extra table is fine for a controller, not for a switch.
    let mut extra = p4info();
    let mut t = extra.tables[0].clone();
    let pre = t.preamble.as_mut().unwrap();
    pre.id = 0x0200_00ff;
    pre.name = "TalariaIngress.extra".into();
    pre.alias = "extra".into();
    extra.tables.push(t);
    check(&extra, Fit::Covers).unwrap();
    let e = check(&extra, Fit::Exactly).unwrap_err().to_string();
    assert!(
        e.contains("table TalariaIngress.extra is not implemented"),
        "{e}"
    );
}

#[test]
fn names_ids_and_sizes_of_the_table_enum() {
    for t in Table::ALL {
        assert_eq!(Table::from_id(t.id()), Some(*t));
        assert_eq!(Table::from_name(t.name()), Some(*t));
        assert_eq!(Table::from_name(t.alias()), Some(*t));
        assert_eq!(t.name(), format!("TalariaIngress.{}", t.alias()));
        assert_eq!(t.id() >> 24, 0x02);
        assert!(t
            .def()
            .actions
            .iter()
            .any(|(a, _)| a.id == t.def().default_action.id));
        assert!(t.def().default_action.params.is_empty());
    }
    assert_eq!(Table::from_name("lb_bucket"), Some(Table::LbBucket));
    assert_eq!(Table::LbBucket.to_string(), "lb_bucket");
}
