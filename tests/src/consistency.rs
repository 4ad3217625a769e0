//! Three-way consistency of the P4 program: its source (read by
//! [`crate::p4src`]), its P4Info (as p4c emits it) and the Rust side: the
//! table definitions of `talaria_tables` and the constants of
//! `talaria_common`.
//!
//! [`check`] compares every table, action, counter and direct counter by
//! name, id, alias, size, key field (name, width, match kind), action
//! parameter (name, width), action list and default action, and the code
//! spaces and constants both sides must agree on (drop reasons, load-balancer
//! events, wire constants), and returns every difference it finds.

use std::collections::BTreeSet;
use std::fmt;

use talaria_common::{drop, hash, p4::sizes, ts_cookie, wire};
use talaria_p4rt::p4::config::v1 as p4info;
use talaria_tables::def::{CounterDef, CounterUnit, Scope};

use crate::p4src::Program;

/// One difference between the P4 source, the P4Info and the Rust constants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// What it is about: `table TalariaIngress.lb_bucket`, `constant
    /// DROP_NO_ROUTE`, ...
    pub object: String,
    /// Which property: `id`, `size`, `key 2 bitwidth`, ...
    pub what: String,
    /// The values each side holds, or what is missing where.
    pub detail: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.what, self.detail)
    }
}

/// A table as the Rust side knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RustTable {
    pub name: String,
    pub alias: String,
    pub id: u32,
    pub size: u32,
    /// (name, bitwidth, P4 match kind).
    pub key: Vec<(String, u32, String)>,
    /// (action name, default only), in `actions` list order.
    pub actions: Vec<(String, bool)>,
    pub default_action: String,
    pub const_default_action: bool,
    pub direct_counter: Option<String>,
}

/// An action as the Rust side knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RustAction {
    pub name: String,
    pub alias: String,
    pub id: u32,
    /// (name, bitwidth).
    pub params: Vec<(String, u32)>,
}

/// A counter or direct counter as the Rust side knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RustCounter {
    pub name: String,
    pub alias: String,
    pub id: u32,
    /// The P4 `CounterType`: `packets`, `bytes` or `packets_and_bytes`.
    pub unit: String,
    /// Cells of an indirect counter; `None` for a direct one.
    pub size: Option<u32>,
    /// The table of a direct counter.
    pub table: Option<String>,
}

/// A family of P4 constants `<prefix><NAME>` that must hold exactly the
/// codes of a Rust enum, below `<count_const>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeSpace {
    pub prefix: String,
    pub count_const: String,
    pub count: u32,
    /// (NAME without the prefix, code).
    pub codes: Vec<(String, u128)>,
}

/// Everything the Rust side holds that the P4 program must agree with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RustModel {
    pub arch: String,
    pub tables: Vec<RustTable>,
    pub actions: Vec<RustAction>,
    pub counters: Vec<RustCounter>,
    pub direct_counters: Vec<RustCounter>,
    /// P4 constant name -> the value the Rust side holds.
    pub constants: Vec<(String, u128)>,
    pub code_spaces: Vec<CodeSpace>,
}

fn unit_name(unit: CounterUnit) -> String {
    match unit {
        CounterUnit::Packets => "packets",
        CounterUnit::PacketsAndBytes => "packets_and_bytes",
    }
    .to_string()
}

fn counter(c: &CounterDef, table: Option<&str>) -> RustCounter {
    RustCounter {
        name: c.name.into(),
        alias: c.alias().into(),
        id: c.id,
        unit: unit_name(c.unit),
        size: table.is_none().then_some(c.size),
        table: table.map(String::from),
    }
}

impl RustModel {
    /// The model of `talaria_tables` and `talaria_common` as compiled into
    /// this test.
    pub fn from_rust() -> Self {
        let defs: Vec<_> = talaria_tables::Table::ALL.iter().map(|t| t.def()).collect();
        let tables = defs
            .iter()
            .map(|t| RustTable {
                name: t.name.into(),
                alias: t.alias().into(),
                id: t.id,
                size: t.size,
                key: t
                    .fields
                    .iter()
                    .map(|k| (k.name.into(), k.bits, k.kind.name().into()))
                    .collect(),
                actions: t
                    .actions
                    .iter()
                    .map(|(a, s)| (a.name.into(), *s == Scope::DefaultOnly))
                    .collect(),
                default_action: t.default_action.name.into(),
                const_default_action: false,
                direct_counter: t.direct_counter.map(|c| c.name.into()),
            })
            .collect();
        let mut actions: Vec<RustAction> = defs
            .iter()
            .flat_map(|t| t.actions.iter())
            .map(|(a, _)| RustAction {
                name: a.name.into(),
                alias: a.alias().into(),
                id: a.id,
                params: a.params.iter().map(|p| (p.name.into(), p.bits)).collect(),
            })
            .collect();
        actions.sort_by_key(|a| a.id);
        actions.dedup();
        let counters = talaria_tables::COUNTERS
            .iter()
            .map(|c| counter(c, None))
            .collect();
        let direct_counters = talaria_tables::DIRECT_COUNTERS
            .iter()
            .map(|(c, t)| counter(c, Some(t.name())))
            .collect();

        let mut constants: Vec<(String, u128)> = vec![
            ("GENEVE_UDP_PORT", wire::GENEVE_UDP_PORT.into()),
            ("GENEVE_PROTO_IPV4", wire::GENEVE_PROTO_IPV4.into()),
            ("GENEVE_PROTO_IPV6", wire::GENEVE_PROTO_IPV6.into()),
            ("OPT_TYPE_CRITICAL", wire::OPT_TYPE_CRITICAL.into()),
            ("TALARIA_OPT_CLASS", wire::TALARIA_OPT_CLASS.into()),
            ("TALARIA_OPT_TYPE", wire::TALARIA_OPT_TYPE.into()),
            (
                "TALARIA_OPT_CLASS_TYPE",
                (u128::from(wire::TALARIA_OPT_CLASS) << 8) | u128::from(wire::TALARIA_OPT_TYPE),
            ),
            ("TALARIA_OPT_WORDS", wire::TALARIA_OPT_WORDS.into()),
            (
                "TALARIA_GENEVE_OPT_LEN",
                (wire::TALARIA_OPT_LEN / 4) as u128,
            ),
            ("TALARIA_VERSION", wire::TALARIA_VERSION.into()),
            ("TALARIA_FLAG_NEW_FLOW", wire::flags::NEW_FLOW.into()),
            ("TALARIA_FLAG_REPLY", wire::flags::REPLY.into()),
            (
                "TALARIA_FLAG_COOKIE_VALID",
                wire::flags::COOKIE_VALID.into(),
            ),
            ("TALARIA_FLAG_FRAG_PORTS", wire::flags::FRAG_PORTS.into()),
            ("TALARIA_FLAG_ENDPOINT", wire::flags::ENDPOINT.into()),
            ("TALARIA_FLAG_NOTIFY", wire::flags::NOTIFY.into()),
            ("TALARIA_FLAG_EXTERNAL", wire::flags::EXTERNAL.into()),
            (
                "TCP_OPT_NOP_NOP_TIMESTAMP",
                ts_cookie::NOP_NOP_TIMESTAMP.get().into(),
            ),
            ("HASH_MODE_FIVE_TUPLE", hash::hash_mode::FIVE_TUPLE.into()),
            ("HASH_MODE_CLIENT_IP", hash::hash_mode::CLIENT_IP.into()),
            ("IPV4_ROUTE_SIZE", sizes::IPV4_ROUTE.into()),
            ("IPV6_ROUTE_SIZE", sizes::IPV6_ROUTE.into()),
            ("SWITCH_ADDR_SIZE", sizes::SWITCH_ADDR.into()),
            ("SERVICE_V4_SIZE", sizes::SERVICE_V4.into()),
            ("COOKIE_CHECK_SIZE", sizes::COOKIE_CHECK.into()),
            ("TS_COOKIE_SIZE", sizes::TS_COOKIE.into()),
            ("LB_BUCKET_SIZE", sizes::LB_BUCKET.into()),
            ("BACKEND_SIZE", sizes::BACKEND.into()),
            ("POD_NODE_SIZE", sizes::POD_NODE.into()),
            ("TUNNEL_PEER_SIZE", sizes::TUNNEL_PEER.into()),
            ("SPOOFED_SOURCE_SIZE", sizes::SPOOFED_SOURCE.into()),
            ("ENDPOINT_REPLY_SIZE", sizes::ENDPOINT_REPLY.into()),
            ("TUNNEL_SOURCE_SIZE", sizes::TUNNEL_SOURCE.into()),
            ("SERVICE_V6_SIZE", sizes::SERVICE_V6.into()),
            ("BACKEND_V6_SIZE", sizes::BACKEND_V6.into()),
            ("POD_NODE_V6_SIZE", sizes::POD_NODE_V6.into()),
            ("SERVICE_COUNTER_SIZE", sizes::SERVICE_COUNTER.into()),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        constants.sort();

        let code_spaces = vec![
            CodeSpace {
                prefix: "DROP_".into(),
                count_const: "DROP_REASON_COUNT".into(),
                count: drop::DROP_REASON_COUNT,
                codes: drop::DropReason::ALL
                    .iter()
                    .map(|r| (r.name().to_ascii_uppercase(), r.code().into()))
                    .collect(),
            },
            CodeSpace {
                prefix: "LB_EVENT_".into(),
                count_const: "LB_EVENT_COUNT".into(),
                count: drop::LB_EVENT_COUNT,
                codes: drop::LbEvent::ALL
                    .iter()
                    .map(|e| (e.name().to_ascii_uppercase(), (*e as u8).into()))
                    .collect(),
            },
        ];

        RustModel {
            arch: talaria_tables::ARCH.into(),
            tables,
            actions,
            counters,
            direct_counters,
            constants,
            code_spaces,
        }
    }
}

/// P4Runtime id type prefixes (p4info.proto `P4Ids`).
const PREFIX_ACTION: u8 = 0x01;
const PREFIX_TABLE: u8 = 0x02;
const PREFIX_COUNTER: u8 = 0x12;
const PREFIX_DIRECT_COUNTER: u8 = 0x13;

/// The P4Info id p4c derives from an `@id(raw)` on an object whose type has
/// id prefix `prefix` (control-plane/p4RuntimeSymbolTable.cpp, externalId):
/// an id without a top byte gets the prefix ORed in, one with the right
/// prefix is kept, one with another prefix is an error.
pub fn p4c_id(prefix: u8, raw: u64) -> Result<u32, String> {
    let raw = u32::try_from(raw).map_err(|_| format!("@id({raw:#x}) does not fit 32 bits"))?;
    let top = (raw >> 24) as u8;
    if top != 0 && top != prefix {
        return Err(format!(
            "@id({raw:#010x}) has the wrong 8-bit prefix (p4c wants {prefix:#04x})"
        ));
    }
    Ok(raw | (u32::from(prefix) << 24))
}

/// The alias p4c gives `name` among `all` (P4SymbolSuffixSet): the shortest
/// suffix of dot-separated components that no other symbol shares.
pub fn p4c_alias(name: &str, all: &BTreeSet<String>) -> String {
    let comps: Vec<&str> = name.split('.').collect();
    let split: Vec<Vec<&str>> = all.iter().map(|n| n.split('.').collect()).collect();
    let mut k = 1;
    while k <= comps.len() {
        let suffix = &comps[comps.len() - k..];
        let sharing = split
            .iter()
            .filter(|c| c.len() >= k && &c[c.len() - k..] == suffix)
            .count();
        if sharing < 2 {
            break;
        }
        k += 1;
    }
    comps[comps.len() - k.min(comps.len())..].join(".")
}

const MATCH_EXACT: i32 = p4info::match_field::MatchType::Exact as i32;
const MATCH_LPM: i32 = p4info::match_field::MatchType::Lpm as i32;
const MATCH_TERNARY: i32 = p4info::match_field::MatchType::Ternary as i32;
const MATCH_RANGE: i32 = p4info::match_field::MatchType::Range as i32;
const MATCH_OPTIONAL: i32 = p4info::match_field::MatchType::Optional as i32;

fn match_kind_of(field: &p4info::MatchField) -> String {
    match &field.r#match {
        Some(p4info::match_field::Match::MatchType(t)) => match *t {
            MATCH_EXACT => "exact".into(),
            MATCH_LPM => "lpm".into(),
            MATCH_TERNARY => "ternary".into(),
            MATCH_RANGE => "range".into(),
            MATCH_OPTIONAL => "optional".into(),
            other => format!("match_type {other}"),
        },
        Some(p4info::match_field::Match::OtherMatchType(t)) => t.clone(),
        None => "none".into(),
    }
}

fn unit_of(spec: Option<&p4info::CounterSpec>) -> String {
    use p4info::counter_spec::Unit;
    match spec.map(|s| s.unit) {
        Some(u) if u == Unit::Packets as i32 => "packets".into(),
        Some(u) if u == Unit::Bytes as i32 => "bytes".into(),
        Some(u) if u == Unit::Both as i32 => "packets_and_bytes".into(),
        Some(u) => format!("unit {u}"),
        None => "none".into(),
    }
}

const SCOPE_DEFAULT_ONLY: i32 = p4info::action_ref::Scope::DefaultOnly as i32;
const SCOPE_TABLE_ONLY: i32 = p4info::action_ref::Scope::TableOnly as i32;

fn preamble_of(p: &Option<p4info::Preamble>) -> (u32, &str, &str) {
    p.as_ref()
        .map_or((0, "", ""), |p| (p.id, p.name.as_str(), p.alias.as_str()))
}

/// Collects mismatches.
struct Report {
    out: Vec<Mismatch>,
}

impl Report {
    fn push(&mut self, object: &str, what: &str, detail: impl Into<String>) {
        self.out.push(Mismatch {
            object: object.to_string(),
            what: what.to_string(),
            detail: detail.into(),
        });
    }

    /// Reports `what` unless every side that has a value agrees. A `None`
    /// side lacks the object altogether (reported once elsewhere).
    fn agree<T: PartialEq + fmt::Debug>(
        &mut self,
        object: &str,
        what: &str,
        src: Option<T>,
        info: Option<T>,
        rust: Option<T>,
    ) {
        let values = [&src, &info, &rust];
        let present: Vec<&T> = values.iter().filter_map(|v| v.as_ref()).collect();
        if present.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        let show = |v: &Option<T>| v.as_ref().map_or("-".to_string(), |v| format!("{v:?}"));
        self.push(
            object,
            what,
            format!(
                "P4 source {}, P4Info {}, Rust {}",
                show(&src),
                show(&info),
                show(&rust)
            ),
        );
    }

    /// Resolves a P4 source `@id` as p4c would, reporting a missing or
    /// invalid one.
    fn src_id(&mut self, object: &str, prefix: u8, raw: Option<u64>) -> Option<u32> {
        match raw.map(|r| p4c_id(prefix, r)) {
            None => {
                self.push(
                    object,
                    "id",
                    "no @id in the P4 source: p4c would hash the name into an id",
                );
                None
            }
            Some(Err(e)) => {
                self.push(object, "id", e);
                None
            }
            Some(Ok(id)) => Some(id),
        }
    }

    /// Reports objects present on one side only.
    fn presence(&mut self, object: &str, src: bool, info: bool, rust: bool) {
        let mut missing = Vec::new();
        if !src {
            missing.push("the P4 source");
        }
        if !info {
            missing.push("the P4Info");
        }
        if !rust {
            missing.push("the Rust constants");
        }
        if !missing.is_empty() {
            self.push(
                object,
                "presence",
                format!("missing from {}", missing.join(" and ")),
            );
        }
    }
}

/// Compares the P4 source `src`, the P4Info `info` and the Rust constants
/// `rust`; returns every difference.
pub fn check(src: &Program, info: &p4info::P4Info, rust: &RustModel) -> Vec<Mismatch> {
    let mut r = Report { out: Vec::new() };

    for problem in &src.problems {
        r.push("P4 source", "unresolved", problem.clone());
    }

    let arch = info.pkg_info.as_ref().map(|p| p.arch.clone());
    r.agree(
        "P4Info",
        "pkg_info.arch",
        None,
        arch,
        Some(rust.arch.clone()),
    );

    // What p4c puts into the P4Info: applied tables, control actions,
    // counters. Aliases are computed over all of them together.
    let src_tables: Vec<_> = src.tables.iter().filter(|t| t.applied).collect();
    let all_names: BTreeSet<String> = src_tables
        .iter()
        .map(|t| t.name.clone())
        .chain(src.actions.iter().map(|a| a.name.clone()))
        .chain(src.counters.iter().map(|c| c.name.clone()))
        .collect();

    // Ids as p4c emits them, by full name, for cross references.
    let src_action_id = |name: &str| -> Option<u32> {
        src.action(name)
            .and_then(|a| a.id)
            .and_then(|raw| p4c_id(PREFIX_ACTION, raw).ok())
    };
    let info_action_name = |id: u32| -> String {
        info.actions
            .iter()
            .find(|a| preamble_of(&a.preamble).0 == id)
            .map_or_else(
                || format!("<unknown action id {id}>"),
                |a| preamble_of(&a.preamble).1.to_string(),
            )
    };
    let info_table_name = |id: u32| -> String {
        info.tables
            .iter()
            .find(|t| preamble_of(&t.preamble).0 == id)
            .map_or_else(
                || format!("<unknown table id {id}>"),
                |t| preamble_of(&t.preamble).1.to_string(),
            )
    };
    let info_direct_counter_name = |id: u32| -> String {
        info.direct_counters
            .iter()
            .find(|c| preamble_of(&c.preamble).0 == id)
            .map_or_else(
                || format!("<unknown direct counter id {id}>"),
                |c| preamble_of(&c.preamble).1.to_string(),
            )
    };

    check_tables(
        &mut r,
        src,
        &src_tables,
        &all_names,
        info,
        rust,
        &src_action_id,
        &info_action_name,
        &info_direct_counter_name,
    );
    check_actions(&mut r, src, &all_names, info, rust);
    check_counters(&mut r, src, &all_names, info, rust, &info_table_name);
    check_constants(&mut r, src, rust);
    check_unique_ids(&mut r, info);

    r.out
}

#[allow(clippy::too_many_arguments)]
fn check_tables(
    r: &mut Report,
    src: &Program,
    src_tables: &[&crate::p4src::Table],
    all_names: &BTreeSet<String>,
    info: &p4info::P4Info,
    rust: &RustModel,
    src_action_id: &dyn Fn(&str) -> Option<u32>,
    info_action_name: &dyn Fn(u32) -> String,
    info_direct_counter_name: &dyn Fn(u32) -> String,
) {
    let mut names: BTreeSet<&str> = rust.tables.iter().map(|t| t.name.as_str()).collect();
    names.extend(src.tables.iter().map(|t| t.name.as_str()));
    names.extend(info.tables.iter().map(|t| preamble_of(&t.preamble).1));

    for name in names {
        let object = format!("table {name}");
        let s = src.table(name);
        let i = info
            .tables
            .iter()
            .find(|t| preamble_of(&t.preamble).1 == name);
        let rt = rust.tables.iter().find(|t| t.name == name);
        r.presence(&object, s.is_some(), i.is_some(), rt.is_some());
        if let Some(s) = s {
            if !s.applied {
                r.push(
                    &object,
                    "applied",
                    "declared but never applied: p4c leaves it out of the P4Info",
                );
            }
        }

        let s_id = s.and_then(|s| r.src_id(&object, PREFIX_TABLE, s.id));
        r.agree(
            &object,
            "id",
            s_id,
            i.map(|i| preamble_of(&i.preamble).0),
            rt.map(|t| t.id),
        );
        r.agree(
            &object,
            "alias",
            s.map(|s| p4c_alias(&s.name, all_names)),
            i.map(|i| preamble_of(&i.preamble).2.to_string()),
            rt.map(|t| t.alias.clone()),
        );
        r.agree(
            &object,
            "size",
            s.and_then(|s| s.size).map(|v| v as i64),
            i.map(|i| i.size),
            rt.map(|t| i64::from(t.size)),
        );

        // Keys.
        let s_keys: Option<Vec<(String, Option<u32>, String)>> = s.map(|s| {
            s.keys
                .iter()
                .map(|k| (k.name.clone(), k.width, k.match_kind.clone()))
                .collect()
        });
        let i_keys: Option<Vec<(String, Option<u32>, String)>> = i.map(|i| {
            i.match_fields
                .iter()
                .map(|f| {
                    (
                        f.name.clone(),
                        u32::try_from(f.bitwidth).ok(),
                        match_kind_of(f),
                    )
                })
                .collect()
        });
        let r_keys: Option<Vec<(String, Option<u32>, String)>> = rt.map(|t| {
            t.key
                .iter()
                .map(|(n, w, m)| (n.clone(), Some(*w), m.clone()))
                .collect()
        });
        r.agree(
            &object,
            "key field count",
            s_keys.as_ref().map(Vec::len),
            i_keys.as_ref().map(Vec::len),
            r_keys.as_ref().map(Vec::len),
        );
        let n = [&s_keys, &i_keys, &r_keys]
            .iter()
            .filter_map(|k| k.as_ref().map(Vec::len))
            .max()
            .unwrap_or(0);
        for k in 0..n {
            let pick = |v: &Option<Vec<(String, Option<u32>, String)>>| {
                v.as_ref().and_then(|v| v.get(k).cloned())
            };
            let (sk, ik, rk) = (pick(&s_keys), pick(&i_keys), pick(&r_keys));
            let label = ik
                .as_ref()
                .or(rk.as_ref())
                .or(sk.as_ref())
                .map_or(String::new(), |k| k.0.clone());
            r.agree(
                &object,
                &format!("key {} name", k + 1),
                sk.as_ref().map(|k| k.0.clone()),
                ik.as_ref().map(|k| k.0.clone()),
                rk.as_ref().map(|k| k.0.clone()),
            );
            r.agree(
                &object,
                &format!("key {} ({label}) bitwidth", k + 1),
                sk.as_ref().and_then(|k| k.1),
                ik.as_ref().and_then(|k| k.1),
                rk.as_ref().and_then(|k| k.1),
            );
            r.agree(
                &object,
                &format!("key {} ({label}) match kind", k + 1),
                sk.as_ref().map(|k| k.2.clone()),
                ik.as_ref().map(|k| k.2.clone()),
                rk.as_ref().map(|k| k.2.clone()),
            );
        }
        if let Some(i) = i {
            for (k, f) in i.match_fields.iter().enumerate() {
                if f.id != k as u32 + 1 {
                    r.push(
                        &object,
                        &format!("key {} ({}) id", k + 1, f.name),
                        format!("P4Info has id {}, p4c numbers key fields 1, 2, ...", f.id),
                    );
                }
            }
        }

        // Action lists: (name, default only, table only), in order.
        let s_refs = s.map(|s| {
            s.actions
                .iter()
                .map(|a| (a.name.clone(), a.default_only, a.table_only))
                .collect::<Vec<_>>()
        });
        let i_refs = i.map(|i| {
            i.action_refs
                .iter()
                .map(|a| {
                    (
                        info_action_name(a.id),
                        a.scope == SCOPE_DEFAULT_ONLY,
                        a.scope == SCOPE_TABLE_ONLY,
                    )
                })
                .collect::<Vec<_>>()
        });
        let r_refs = rt.map(|t| {
            t.actions
                .iter()
                .map(|(n, d)| (n.clone(), *d, false))
                .collect::<Vec<_>>()
        });
        r.agree(
            &object,
            "actions (name, default only, table only)",
            s_refs,
            i_refs,
            r_refs,
        );
        if let Some(i) = i {
            for a in &i.action_refs {
                // p4c copies the annotation that set the scope.
                let want: &[&str] = match a.scope {
                    SCOPE_DEFAULT_ONLY => &["@defaultonly"],
                    SCOPE_TABLE_ONLY => &["@tableonly"],
                    _ => &[],
                };
                if a.annotations != want {
                    r.push(
                        &object,
                        &format!("action_ref {} annotations", info_action_name(a.id)),
                        format!(
                            "P4Info has {:?}, p4c emits {want:?} for its scope",
                            a.annotations
                        ),
                    );
                }
            }
            // Every referenced action id must resolve in the source too.
            if let Some(s) = s {
                for (ar, sr) in i.action_refs.iter().zip(&s.actions) {
                    r.agree(
                        &object,
                        &format!("action_ref {} id", sr.name),
                        src_action_id(&sr.name),
                        Some(ar.id),
                        None,
                    );
                }
            }
        }

        // Default action.
        let i_default = i.map(|i| {
            i.initial_default_action
                .as_ref()
                .map_or_else(|| "<none>".to_string(), |d| info_action_name(d.action_id))
        });
        r.agree(
            &object,
            "default action",
            s.map(|s| s.default_action.clone().unwrap_or_else(|| "<none>".into())),
            i_default,
            rt.map(|t| t.default_action.clone()),
        );
        if let Some(i) = i {
            if let Some(d) = &i.initial_default_action {
                if !d.arguments.is_empty() || s.is_some_and(|s| s.default_action_has_args) {
                    r.agree(
                        &object,
                        "default action arguments",
                        s.map(|s| s.default_action_has_args),
                        Some(!d.arguments.is_empty()),
                        rt.map(|_| false),
                    );
                }
            }
        }
        let i_const = i.map(|i| {
            (i.const_default_action_id != 0).then(|| info_action_name(i.const_default_action_id))
        });
        let s_const = s.map(|s| {
            if s.const_default_action {
                s.default_action.clone()
            } else {
                None
            }
        });
        let r_const = rt.map(|t| t.const_default_action.then(|| t.default_action.clone()));
        r.agree(&object, "const default action", s_const, i_const, r_const);

        // Direct resources.
        let i_direct = i.map(|i| {
            i.direct_resource_ids
                .iter()
                .map(|id| info_direct_counter_name(*id))
                .collect::<Vec<_>>()
        });
        r.agree(
            &object,
            "direct counter",
            s.map(|s| s.direct_counter.iter().cloned().collect::<Vec<_>>()),
            i_direct,
            rt.map(|t| t.direct_counter.iter().cloned().collect::<Vec<_>>()),
        );
        if let Some(i) = i {
            let other = i.implementation_id != 0
                || i.is_const_table
                || i.has_initial_entries
                || i.idle_timeout_behavior != 0;
            if other {
                r.push(
                    &object,
                    "properties",
                    "P4Info declares an implementation, const entries or idle timeout the P4 source does not have",
                );
            }
        }
    }

    // p4c emits tables in declaration order.
    let s_order: Vec<&str> = src_tables.iter().map(|t| t.name.as_str()).collect();
    let i_order: Vec<&str> = info
        .tables
        .iter()
        .map(|t| preamble_of(&t.preamble).1)
        .collect();
    let r_order: Vec<&str> = rust.tables.iter().map(|t| t.name.as_str()).collect();
    r.agree(
        "tables",
        "order",
        Some(s_order),
        Some(i_order),
        Some(r_order),
    );
}

fn check_actions(
    r: &mut Report,
    src: &Program,
    all_names: &BTreeSet<String>,
    info: &p4info::P4Info,
    rust: &RustModel,
) {
    let mut names: BTreeSet<&str> = rust.actions.iter().map(|a| a.name.as_str()).collect();
    names.extend(src.actions.iter().map(|a| a.name.as_str()));
    names.extend(info.actions.iter().map(|a| preamble_of(&a.preamble).1));

    for name in names {
        let object = format!("action {name}");
        let s = src.action(name);
        let i = info
            .actions
            .iter()
            .find(|a| preamble_of(&a.preamble).1 == name);
        let ra = rust.actions.iter().find(|a| a.name == name);
        r.presence(&object, s.is_some(), i.is_some(), ra.is_some());

        let s_id = s.and_then(|s| r.src_id(&object, PREFIX_ACTION, s.id));
        r.agree(
            &object,
            "id",
            s_id,
            i.map(|i| preamble_of(&i.preamble).0),
            ra.map(|a| a.id),
        );
        r.agree(
            &object,
            "alias",
            s.map(|s| p4c_alias(&s.name, all_names)),
            i.map(|i| preamble_of(&i.preamble).2.to_string()),
            ra.map(|a| a.alias.clone()),
        );

        let s_params = s.map(|s| {
            s.params
                .iter()
                .map(|p| (p.name.clone(), p.width))
                .collect::<Vec<_>>()
        });
        let i_params = i.map(|i| {
            i.params
                .iter()
                .map(|p| (p.name.clone(), u32::try_from(p.bitwidth).ok()))
                .collect::<Vec<_>>()
        });
        let r_params = ra.map(|a| {
            a.params
                .iter()
                .map(|(n, w)| (n.clone(), Some(*w)))
                .collect::<Vec<_>>()
        });
        r.agree(
            &object,
            "param count",
            s_params.as_ref().map(Vec::len),
            i_params.as_ref().map(Vec::len),
            r_params.as_ref().map(Vec::len),
        );
        let n = [&s_params, &i_params, &r_params]
            .iter()
            .filter_map(|p| p.as_ref().map(Vec::len))
            .max()
            .unwrap_or(0);
        for k in 0..n {
            let pick =
                |v: &Option<Vec<(String, Option<u32>)>>| v.as_ref().and_then(|v| v.get(k).cloned());
            let (sp, ip, rp) = (pick(&s_params), pick(&i_params), pick(&r_params));
            let label = ip
                .as_ref()
                .or(rp.as_ref())
                .or(sp.as_ref())
                .map_or(String::new(), |p| p.0.clone());
            r.agree(
                &object,
                &format!("param {} name", k + 1),
                sp.as_ref().map(|p| p.0.clone()),
                ip.as_ref().map(|p| p.0.clone()),
                rp.as_ref().map(|p| p.0.clone()),
            );
            r.agree(
                &object,
                &format!("param {} ({label}) bitwidth", k + 1),
                sp.as_ref().and_then(|p| p.1),
                ip.as_ref().and_then(|p| p.1),
                rp.as_ref().and_then(|p| p.1),
            );
        }
        if let Some(i) = i {
            for (k, p) in i.params.iter().enumerate() {
                if p.id != k as u32 + 1 {
                    r.push(
                        &object,
                        &format!("param {} ({}) id", k + 1, p.name),
                        format!("P4Info has id {}, p4c numbers parameters 1, 2, ...", p.id),
                    );
                }
            }
        }
    }

    let s_order: Vec<&str> = src.actions.iter().map(|a| a.name.as_str()).collect();
    let i_order: Vec<&str> = info
        .actions
        .iter()
        .map(|a| preamble_of(&a.preamble).1)
        .collect();
    let r_order: Vec<&str> = rust.actions.iter().map(|a| a.name.as_str()).collect();
    r.agree(
        "actions",
        "order",
        Some(s_order),
        Some(i_order),
        Some(r_order),
    );
}

fn check_counters(
    r: &mut Report,
    src: &Program,
    all_names: &BTreeSet<String>,
    info: &p4info::P4Info,
    rust: &RustModel,
    info_table_name: &dyn Fn(u32) -> String,
) {
    // Indirect counters.
    let mut names: BTreeSet<&str> = rust.counters.iter().map(|c| c.name.as_str()).collect();
    names.extend(
        src.counters
            .iter()
            .filter(|c| !c.direct)
            .map(|c| c.name.as_str()),
    );
    names.extend(info.counters.iter().map(|c| preamble_of(&c.preamble).1));
    for name in names {
        let object = format!("counter {name}");
        let s = src.counter(name).filter(|c| !c.direct);
        let i = info
            .counters
            .iter()
            .find(|c| preamble_of(&c.preamble).1 == name);
        let rc = rust.counters.iter().find(|c| c.name == name);
        r.presence(&object, s.is_some(), i.is_some(), rc.is_some());
        let s_id = s.and_then(|s| r.src_id(&object, PREFIX_COUNTER, s.id));
        r.agree(
            &object,
            "id",
            s_id,
            i.map(|i| preamble_of(&i.preamble).0),
            rc.map(|c| c.id),
        );
        r.agree(
            &object,
            "alias",
            s.map(|s| p4c_alias(&s.name, all_names)),
            i.map(|i| preamble_of(&i.preamble).2.to_string()),
            rc.map(|c| c.alias.clone()),
        );
        r.agree(
            &object,
            "unit",
            s.map(|s| s.unit.clone().unwrap_or_default()),
            i.map(|i| unit_of(i.spec.as_ref())),
            rc.map(|c| c.unit.clone()),
        );
        r.agree(
            &object,
            "size",
            s.and_then(|s| s.size).map(|v| v as i64),
            i.map(|i| i.size),
            rc.and_then(|c| c.size).map(i64::from),
        );
    }

    // Direct counters.
    let mut names: BTreeSet<&str> = rust
        .direct_counters
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    names.extend(
        src.counters
            .iter()
            .filter(|c| c.direct)
            .map(|c| c.name.as_str()),
    );
    names.extend(
        info.direct_counters
            .iter()
            .map(|c| preamble_of(&c.preamble).1),
    );
    for name in names {
        let object = format!("direct counter {name}");
        let s = src.counter(name).filter(|c| c.direct);
        let i = info
            .direct_counters
            .iter()
            .find(|c| preamble_of(&c.preamble).1 == name);
        let rc = rust.direct_counters.iter().find(|c| c.name == name);
        r.presence(&object, s.is_some(), i.is_some(), rc.is_some());
        let s_id = s.and_then(|s| r.src_id(&object, PREFIX_DIRECT_COUNTER, s.id));
        r.agree(
            &object,
            "id",
            s_id,
            i.map(|i| preamble_of(&i.preamble).0),
            rc.map(|c| c.id),
        );
        r.agree(
            &object,
            "alias",
            s.map(|s| p4c_alias(&s.name, all_names)),
            i.map(|i| preamble_of(&i.preamble).2.to_string()),
            rc.map(|c| c.alias.clone()),
        );
        r.agree(
            &object,
            "unit",
            s.map(|s| s.unit.clone().unwrap_or_default()),
            i.map(|i| unit_of(i.spec.as_ref())),
            rc.map(|c| c.unit.clone()),
        );
        // The table whose `counters` property names it.
        let s_table = s.map(|s| {
            src.tables
                .iter()
                .filter(|t| t.direct_counter.as_deref() == Some(s.name.as_str()))
                .map(|t| t.name.clone())
                .collect::<Vec<_>>()
        });
        let i_table = i.map(|i| vec![info_table_name(i.direct_table_id)]);
        let r_table = rc.map(|c| c.table.iter().cloned().collect::<Vec<_>>());
        r.agree(&object, "table", s_table, i_table, r_table);
    }

    for (what, s_order, i_order, r_order) in [
        (
            "counters",
            src.counters
                .iter()
                .filter(|c| !c.direct)
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            info.counters
                .iter()
                .map(|c| preamble_of(&c.preamble).1)
                .collect::<Vec<_>>(),
            rust.counters
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
        ),
        (
            "direct counters",
            src.counters
                .iter()
                .filter(|c| c.direct)
                .map(|c| c.name.as_str())
                .collect(),
            info.direct_counters
                .iter()
                .map(|c| preamble_of(&c.preamble).1)
                .collect(),
            rust.direct_counters
                .iter()
                .map(|c| c.name.as_str())
                .collect(),
        ),
    ] {
        r.agree(what, "order", Some(s_order), Some(i_order), Some(r_order));
    }
}

fn check_constants(r: &mut Report, src: &Program, rust: &RustModel) {
    for (name, value) in &rust.constants {
        let object = format!("constant {name}");
        match src.constant(name) {
            None => r.push(&object, "presence", "missing from the P4 source"),
            Some(v) => r.agree(&object, "value", Some(v), None, Some(*value)),
        }
    }
    for space in &rust.code_spaces {
        for (name, code) in &space.codes {
            let full = format!("{}{name}", space.prefix);
            let object = format!("constant {full}");
            match src.constant(&full) {
                None => r.push(&object, "presence", "missing from the P4 source"),
                Some(v) => r.agree(&object, "value", Some(v), None, Some(*code)),
            }
            if *code >= u128::from(space.count) {
                r.push(&object, "range", format!("code {code} >= {}", space.count));
            }
        }
        for (name, c) in src.constants.range(space.prefix.clone()..) {
            let Some(suffix) = name.strip_prefix(space.prefix.as_str()) else {
                break;
            };
            if *name == space.count_const {
                continue;
            }
            if !space.codes.iter().any(|(n, _)| n == suffix) {
                r.push(
                    &format!("constant {name}"),
                    "presence",
                    format!(
                        "P4 source defines it (= {}), the Rust code space does not",
                        c.value
                    ),
                );
            }
        }
        let object = format!("constant {}", space.count_const);
        match src.constant(&space.count_const) {
            None => r.push(&object, "presence", "missing from the P4 source"),
            Some(v) => r.agree(
                &object,
                "value",
                Some(v),
                None,
                Some(u128::from(space.count)),
            ),
        }
    }
}

fn check_unique_ids(r: &mut Report, info: &p4info::P4Info) {
    let mut seen = BTreeSet::new();
    let ids = info
        .tables
        .iter()
        .map(|t| preamble_of(&t.preamble))
        .chain(info.actions.iter().map(|a| preamble_of(&a.preamble)))
        .chain(info.counters.iter().map(|c| preamble_of(&c.preamble)))
        .chain(
            info.direct_counters
                .iter()
                .map(|c| preamble_of(&c.preamble)),
        );
    for (id, name, _) in ids {
        if !seen.insert(id) {
            r.push(
                &format!("P4Info {name}"),
                "id",
                format!("id {id} is used twice"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p4c_id_rules() {
        assert_eq!(p4c_id(0x02, 5), Ok(0x0200_0005));
        assert_eq!(p4c_id(0x02, 0x0200_0005), Ok(0x0200_0005));
        assert!(p4c_id(0x02, 0x0100_0005).is_err());
        assert!(p4c_id(0x02, 1 << 40).is_err());
    }

    #[test]
    fn p4c_aliases() {
        let all: BTreeSet<String> = ["ingress.on_miss", "egress.on_miss", "ingress.t", "a.b", "b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(p4c_alias("ingress.on_miss", &all), "ingress.on_miss");
        assert_eq!(p4c_alias("ingress.t", &all), "t");
        assert_eq!(p4c_alias("a.b", &all), "a.b");
        assert_eq!(p4c_alias("b", &all), "b");
    }

    #[test]
    fn rust_model_is_complete() {
        let m = RustModel::from_rust();
        assert_eq!(m.tables.len(), talaria_tables::Table::ALL.len());
        // An action two tables share (`drop`) is one action.
        let actions: std::collections::BTreeSet<u32> = talaria_tables::Table::ALL
            .iter()
            .flat_map(|t| t.def().actions.iter().map(|(a, _)| a.id))
            .collect();
        assert_eq!(m.actions.len(), actions.len());
        assert_eq!(m.code_spaces[0].codes.len(), drop::DropReason::ALL.len());
        assert!(m.code_spaces[0]
            .codes
            .iter()
            .any(|(n, c)| n == "NO_ROUTE" && *c == 11));
    }
}
