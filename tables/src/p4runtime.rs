//! P4Runtime `TableEntry` ↔ [`Entry`] for every table, derived from the
//! definitions, and [`check`]: does a P4Info describe these tables?
//!
//! Decoding validates everything P4Runtime asks a server to validate: the
//! table id, complete and non-duplicated match fields of the right match
//! type, LPM prefix lengths and masked values, no priority on tables without
//! ternary or range keys, an action the table allows in entries, complete
//! parameters, and bytestrings no wider than their field (canonical or
//! padded). Encoding always produces canonical bytestrings.

use talaria_p4rt::{
    bytestring,
    google::rpc::Code,
    p4::config::v1::P4Info,
    p4::v1::{action, field_match, table_action, Action, FieldMatch, TableAction, TableEntry},
    p4info::{ActionScope, MatchType, Schema},
};

use crate::def::{ActionDef, MatchKind, Scope, TableDef};
use crate::talaria::{Entry, EntryKey, Table, COUNTERS, DIRECT_COUNTERS};
use crate::value::host_mask;
use crate::FieldValue;

/// Why a `TableEntry` is not an entry of these tables; [`DecodeError::code`]
/// is the P4Runtime canonical code to answer with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The table id names no table (NOT_FOUND).
    #[error("unknown table id {0}")]
    UnknownTable(u32),
    /// A malformed or inconsistent entry (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// A bytestring with significant bits beyond its field's width
    /// (OUT_OF_RANGE).
    #[error("{what}: {why}")]
    OutOfRange { what: String, why: String },
    /// A valid request the target does not implement (UNIMPLEMENTED).
    #[error("{0}")]
    Unimplemented(String),
    /// A change the pipeline forbids: a `@defaultonly` action in an entry
    /// (PERMISSION_DENIED, P4Runtime §9.1.2).
    #[error("{0}")]
    PermissionDenied(String),
}

impl DecodeError {
    /// The P4Runtime canonical code.
    pub fn code(&self) -> Code {
        match self {
            Self::UnknownTable(_) => Code::NotFound,
            Self::Invalid(_) => Code::InvalidArgument,
            Self::OutOfRange { .. } => Code::OutOfRange,
            Self::Unimplemented(_) => Code::Unimplemented,
            Self::PermissionDenied(_) => Code::PermissionDenied,
        }
    }
}

type Result<T, E = DecodeError> = std::result::Result<T, E>;

fn invalid(msg: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(msg.into())
}

/// What a decoded `TableEntry` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// An entry, key and action.
    Entry(Entry),
    /// A key alone: a DELETE, or a Read of one entry.
    Key(EntryKey),
    /// The table's default entry with its initial default action.
    InitialDefault(Table),
}

/// Whether the entry must carry an action (INSERT, MODIFY) or names a key
/// only (DELETE and Read, where an action is ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionUse {
    Required,
    Ignored,
}

/// `bytes` as a value of a `bits`-wide field; `what` names it in errors
/// and is built only on failure (this runs for every field of every
/// update).
fn value(what: impl Fn() -> String, bytes: &[u8], bits: u32) -> Result<u128> {
    bytestring::decode(bytes, bits).map_err(|e| match e.code() {
        Code::OutOfRange => DecodeError::OutOfRange {
            what: what(),
            why: e.to_string(),
        },
        _ => invalid(format!("{}: {e}", what())),
    })
}

fn encode_value(v: u128, bits: u32) -> Vec<u8> {
    bytestring::encode(v, bits).expect("typed values fit their fields")
}

/// The key values of `def` in field order.
fn decode_key(def: &TableDef, matches: &[FieldMatch]) -> Result<Vec<FieldValue>> {
    let mut values: Vec<Option<FieldValue>> = vec![None; def.fields.len()];
    for m in matches {
        let i = def.field_index(m.field_id).ok_or_else(|| {
            invalid(format!(
                "{}: unknown match field id {}",
                def.name, m.field_id
            ))
        })?;
        let f = &def.fields[i];
        let what = || format!("{} match field {}", def.name, f.name);
        if values[i].is_some() {
            return Err(invalid(format!("{}: given twice", what())));
        }
        values[i] = Some(match (&m.field_match_type, f.kind) {
            (Some(field_match::FieldMatchType::Exact(e)), MatchKind::Exact) => FieldValue {
                value: value(what, &e.value, f.bits)?,
                prefix_len: None,
            },
            (Some(field_match::FieldMatchType::Lpm(l)), MatchKind::Lpm) => {
                let v = value(what, &l.value, f.bits)?;
                let len = u32::try_from(l.prefix_len)
                    .ok()
                    .filter(|n| (1..=f.bits).contains(n))
                    .ok_or_else(|| {
                        invalid(format!(
                            "{}: prefix length {} not in 1..={} (omit the field for a wildcard)",
                            what(),
                            l.prefix_len,
                            f.bits
                        ))
                    })?;
                if v & host_mask(f.bits, len) != 0 {
                    return Err(invalid(format!(
                        "{}: bits beyond the /{len} prefix are set",
                        what()
                    )));
                }
                FieldValue {
                    value: v,
                    prefix_len: Some(len as u8),
                }
            }
            (_, kind) => {
                return Err(invalid(format!(
                    "{}: expected {} match",
                    what(),
                    kind.name()
                )))
            }
        });
    }
    def.fields
        .iter()
        .zip(values)
        .map(|(f, v)| match (v, f.kind) {
            (Some(v), _) => Ok(v),
            // An omitted LPM field is the /0 wildcard.
            (None, MatchKind::Lpm) => Ok(FieldValue {
                value: 0,
                prefix_len: Some(0),
            }),
            (None, MatchKind::Exact) => Err(invalid(format!(
                "{} match field {}: missing",
                def.name, f.name
            ))),
        })
        .collect()
}

/// The id and parameter values (in declaration order) of an entry action.
fn decode_action(def: &TableDef, a: &Action) -> Result<(u32, Vec<u128>)> {
    let (ad, scope) = def.action(a.action_id).ok_or_else(|| {
        invalid(format!(
            "{}: action id {} is not an action of this table",
            def.name, a.action_id
        ))
    })?;
    // A valid action outside its scope is PERMISSION_DENIED (P4Runtime
    // 1.3 §9.1.2), as bmv2 answers too.
    if scope == Scope::DefaultOnly {
        return Err(DecodeError::PermissionDenied(format!(
            "{}: action {} is @defaultonly",
            def.name, ad.name
        )));
    }
    let mut params: Vec<Option<u128>> = vec![None; ad.params.len()];
    for p in &a.params {
        let j = ad
            .param_index(p.param_id)
            .ok_or_else(|| invalid(format!("{}: unknown parameter id {}", ad.name, p.param_id)))?;
        let pd = &ad.params[j];
        let what = || format!("{} parameter {}", ad.name, pd.name);
        if params[j].is_some() {
            return Err(invalid(format!("{}: given twice", what())));
        }
        params[j] = Some(value(what, &p.value, pd.bits)?);
    }
    let params = ad
        .params
        .iter()
        .zip(params)
        .map(|(pd, v)| {
            v.ok_or_else(|| invalid(format!("{} parameter {}: missing", ad.name, pd.name)))
        })
        .collect::<Result<_>>()?;
    Ok((ad.id, params))
}

fn decode_default(
    def: &TableDef,
    table: Table,
    te: &TableEntry,
    a: Option<&Action>,
) -> Result<Decoded> {
    if !te.r#match.is_empty() {
        return Err(invalid(format!(
            "{}: the default entry has no match fields",
            def.name
        )));
    }
    match a {
        None => Err(invalid(format!(
            "{}: default entry has no action",
            def.name
        ))),
        Some(a) if a.action_id == def.default_action.id && a.params.is_empty() => {
            Ok(Decoded::InitialDefault(table))
        }
        Some(a) if def.action(a.action_id).is_none() => Err(invalid(format!(
            "{}: action id {} is not an action of this table",
            def.name, a.action_id
        ))),
        Some(_) => Err(DecodeError::Unimplemented(format!(
            "{}: only the initial default action ({}) is implemented",
            def.name, def.default_action.name
        ))),
    }
}

/// Decodes and validates a `TableEntry`.
pub fn decode(te: &TableEntry, action_use: ActionUse) -> Result<Decoded> {
    let table = Table::from_id(te.table_id).ok_or(DecodeError::UnknownTable(te.table_id))?;
    let def = table.def();
    if te.priority != 0 {
        return Err(invalid(format!(
            "{}: priority must be 0 for a table without ternary or range keys",
            def.name
        )));
    }
    let action = match &te.action {
        None => None,
        Some(TableAction {
            r#type: Some(table_action::Type::Action(a)),
        }) => Some(a),
        Some(_) => {
            return Err(invalid(format!(
                "{}: only direct actions are supported (the table has no action profile)",
                def.name
            )))
        }
    };
    if te.is_default_action {
        return decode_default(def, table, te, action);
    }
    let key = decode_key(def, &te.r#match)?;
    match (action, action_use) {
        (_, ActionUse::Ignored) => Ok(Decoded::Key(
            EntryKey::from_values(table, &key).expect("one value per field"),
        )),
        (None, ActionUse::Required) => Err(invalid(format!("{}: entry has no action", def.name))),
        (Some(a), ActionUse::Required) => {
            let (id, params) = decode_action(def, a)?;
            let e = Entry::from_parts(table, &key, id, &params)
                .expect("an entry action with its parameters");
            Ok(Decoded::Entry(e))
        }
    }
}

/// The match fields of `values` for `def`; a /0 LPM field is omitted (the
/// wildcard).
fn encode_matches(def: &TableDef, values: &[FieldValue]) -> Vec<FieldMatch> {
    def.fields
        .iter()
        .zip(values)
        .enumerate()
        .filter(|(_, (_, v))| v.prefix_len != Some(0))
        .map(|(i, (f, v))| {
            let value = encode_value(v.value, f.bits);
            FieldMatch {
                field_id: i as u32 + 1,
                field_match_type: Some(match f.kind {
                    MatchKind::Exact => {
                        field_match::FieldMatchType::Exact(field_match::Exact { value })
                    }
                    MatchKind::Lpm => field_match::FieldMatchType::Lpm(field_match::Lpm {
                        value,
                        prefix_len: v.prefix_len.unwrap_or(0).into(),
                    }),
                }),
            }
        })
        .collect()
}

fn direct_action(def: &ActionDef, params: &[u128]) -> TableAction {
    TableAction {
        r#type: Some(table_action::Type::Action(Action {
            action_id: def.id,
            params: def
                .params
                .iter()
                .zip(params)
                .enumerate()
                .map(|(j, (p, v))| action::Param {
                    param_id: j as u32 + 1,
                    value: encode_value(*v, p.bits),
                })
                .collect(),
        })),
    }
}

/// `entry` as P4Runtime carries it, with canonical bytestrings.
pub fn encode(entry: &Entry) -> TableEntry {
    let def = entry.table().def();
    let (a, params) = entry.action();
    TableEntry {
        table_id: def.id,
        r#match: encode_matches(def, &entry.key().values()),
        action: Some(direct_action(a, &params)),
        ..Default::default()
    }
}

/// A `TableEntry` naming `key` only (DELETE, Read of one entry).
pub fn encode_key(key: &EntryKey) -> TableEntry {
    let def = key.table().def();
    TableEntry {
        table_id: def.id,
        r#match: encode_matches(def, &key.values()),
        ..Default::default()
    }
}

/// The default entry of `table` with its initial default action, as a
/// Read returns it.
pub fn encode_default(table: Table) -> TableEntry {
    let def = table.def();
    TableEntry {
        table_id: def.id,
        action: Some(direct_action(def.default_action, &[])),
        is_default_action: true,
        ..Default::default()
    }
}

fn match_type(kind: MatchKind) -> MatchType {
    match kind {
        MatchKind::Exact => MatchType::Exact,
        MatchKind::Lpm => MatchType::Lpm,
    }
}

/// How much of a P4Info [`check`] requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Every table and counter defined here is in the P4Info, as defined; a
    /// controller can drive the switch.
    Covers,
    /// And the P4Info has nothing else: a switch implements it exactly.
    Exactly,
}

/// A P4Info that does not describe these tables, with every difference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the P4Info does not match the talaria tables:\n  {}", .0.join("\n  "))]
pub struct Mismatch(pub Vec<String>);

/// Checks `p4info` against the definitions by name, id, width, match kind,
/// size, action scope and counter unit.
pub fn check(p4info: &P4Info, fit: Fit) -> Result<(), Mismatch> {
    let schema = Schema::new(p4info).map_err(|e| Mismatch(vec![e.to_string()]))?;
    let mut out = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            out.push(what);
        }
    };
    for t in Table::ALL {
        let def = t.def();
        let Ok(pt) = schema.table(def.name) else {
            expect(false, format!("table {} is missing", def.name));
            continue;
        };
        expect(
            pt.id == def.id,
            format!("table {}: id {:#x}, want {:#x}", def.name, pt.id, def.id),
        );
        expect(
            pt.size == i64::from(def.size),
            format!("table {}: size {}, want {}", def.name, pt.size, def.size),
        );
        let fields: Vec<_> = pt
            .match_fields
            .iter()
            .map(|f| (f.id, f.name.as_str(), f.bitwidth, f.match_type.clone()))
            .collect();
        let want: Vec<_> = def
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| (i as u32 + 1, f.name, f.bits, match_type(f.kind)))
            .collect();
        expect(
            fields == want,
            format!("table {}: match fields {fields:?}, want {want:?}", def.name),
        );
        let mut refs: Vec<(u32, bool)> = pt
            .action_refs
            .iter()
            .map(|a| (a.id, a.scope == ActionScope::DefaultOnly))
            .collect();
        let mut want: Vec<(u32, bool)> = def
            .actions
            .iter()
            .map(|(a, s)| (a.id, *s == Scope::DefaultOnly))
            .collect();
        refs.sort_unstable();
        want.sort_unstable();
        expect(
            refs == want,
            format!("table {}: actions {refs:?}, want {want:?}", def.name),
        );
        expect(
            pt.const_default_action_id.is_none(),
            format!("table {}: its default action is const", def.name),
        );
        let initial = p4info
            .tables
            .iter()
            .find(|t| t.preamble.as_ref().is_some_and(|p| p.id == pt.id))
            .and_then(|t| t.initial_default_action.as_ref())
            .map(|a| a.action_id);
        // Older P4Infos do not say; when one does, it must agree.
        expect(
            initial.is_none_or(|id| id == def.default_action.id),
            format!(
                "table {}: initial default action {initial:?}, want {:#x}",
                def.name, def.default_action.id
            ),
        );
        for (a, _) in def.actions {
            let Ok(pa) = schema.action(a.name) else {
                expect(false, format!("action {} is missing", a.name));
                continue;
            };
            expect(
                pa.id == a.id,
                format!("action {}: id {:#x}, want {:#x}", a.name, pa.id, a.id),
            );
            let params: Vec<_> = pa
                .params
                .iter()
                .map(|p| (p.id, p.name.as_str(), p.bitwidth))
                .collect();
            let want: Vec<_> = a
                .params
                .iter()
                .enumerate()
                .map(|(j, p)| (j as u32 + 1, p.name, p.bits))
                .collect();
            expect(
                params == want,
                format!("action {}: params {params:?}, want {want:?}", a.name),
            );
        }
    }
    for c in COUNTERS {
        match schema.counters().get(c.name) {
            Ok(pc) => expect(
                (pc.id, pc.size, pc.unit as i32)
                    == (c.id, i64::from(c.size), c.unit.p4info_value()),
                format!(
                    "counter {}: (id, size, unit) = ({:#x}, {}, {}), want ({:#x}, {}, {})",
                    c.name,
                    pc.id,
                    pc.size,
                    pc.unit as i32,
                    c.id,
                    c.size,
                    c.unit.p4info_value()
                ),
            ),
            Err(_) => expect(false, format!("counter {} is missing", c.name)),
        }
    }
    for (c, t) in DIRECT_COUNTERS {
        match schema.direct_counters().get(c.name) {
            Ok(pc) => expect(
                (pc.id, pc.table_id, pc.unit as i32) == (c.id, t.id(), c.unit.p4info_value()),
                format!("direct counter {}: (id, table, unit) differ", c.name),
            ),
            Err(_) => expect(false, format!("direct counter {} is missing", c.name)),
        }
    }
    if fit == Fit::Exactly {
        let actions: Vec<u32> = Table::ALL
            .iter()
            .flat_map(|t| t.def().actions.iter().map(|(a, _)| a.id))
            .collect();
        for pt in schema.tables().iter() {
            expect(
                Table::from_id(pt.id).is_some(),
                format!("table {} is not implemented", pt.name),
            );
        }
        for pa in schema.actions().iter() {
            expect(
                actions.contains(&pa.id),
                format!("action {} is not implemented", pa.name),
            );
        }
        for pc in schema.counters().iter() {
            expect(
                COUNTERS.iter().any(|c| c.id == pc.id),
                format!("counter {} is not implemented", pc.name),
            );
        }
        for pc in schema.direct_counters().iter() {
            expect(
                DIRECT_COUNTERS.iter().any(|(c, _)| c.id == pc.id),
                format!("direct counter {} is not implemented", pc.name),
            );
        }
        expect(
            schema.meters().is_empty() && schema.direct_meters().is_empty(),
            "meters are not implemented".into(),
        );
        expect(
            schema.registers().is_empty(),
            "registers are not implemented".into(),
        );
        expect(
            schema.action_profiles().is_empty(),
            "action profiles are not implemented".into(),
        );
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(Mismatch(out))
    }
}
