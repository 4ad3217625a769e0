//! P4Runtime `TableEntry` ↔ data plane [`Entry`], through the [`Layout`].
//!
//! Decoding validates everything P4Runtime asks a server to validate: the
//! table id, complete and non-duplicated match fields of the right match
//! type, LPM prefix lengths and masked values, no priority on tables without
//! ternary/range keys, an action the table allows for entries, complete
//! parameters, and byte strings no wider than their field (canonical or
//! not). Encoding always produces canonical byte strings.

use std::net::Ipv4Addr;

use talaria_p4rt::{
    bytestring,
    p4::v1::{field_match, table_action, Action, FieldMatch, TableAction, TableEntry},
};

use crate::{
    entry::{Entry, Ipv4Prefix, RouteAction, TableKind},
    layout::{FieldLayout, Layout, MatchKind, TableLayout},
};

/// Why a `TableEntry` cannot be turned into an [`Entry`]. Each variant maps
/// to the P4Runtime canonical code of [`TranslateError::code`].
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// The table id names no table of the pipeline (NOT_FOUND).
    #[error("unknown table id {0}")]
    UnknownTable(u32),
    /// A malformed or inconsistent entry (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// A byte string with significant bits beyond its field's width
    /// (OUT_OF_RANGE).
    #[error("{what}: {why}")]
    OutOfRange {
        what: String,
        bitwidth: u32,
        why: String,
    },
    /// A valid P4Runtime request this switch does not implement
    /// (UNIMPLEMENTED).
    #[error("{0}")]
    Unimplemented(String),
    /// A change the pipeline forbids, such as a const default action
    /// (PERMISSION_DENIED).
    #[error("{0}")]
    PermissionDenied(String),
}

impl TranslateError {
    /// The P4Runtime canonical error code.
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::UnknownTable(_) => tonic::Code::NotFound,
            Self::Invalid(_) => tonic::Code::InvalidArgument,
            Self::OutOfRange { .. } => tonic::Code::OutOfRange,
            Self::Unimplemented(_) => tonic::Code::Unimplemented,
            Self::PermissionDenied(_) => tonic::Code::PermissionDenied,
        }
    }
}

type Result<T, E = TranslateError> = std::result::Result<T, E>;

fn invalid(msg: impl Into<String>) -> TranslateError {
    TranslateError::Invalid(msg.into())
}

/// What a decoded `TableEntry` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A regular entry.
    Entry(Entry),
    /// The table's default entry, set to its initial default action: the
    /// only default this data plane implements, so MODIFY of it is a no-op.
    InitialDefault(TableKind),
}

/// Whether the decoded entry must carry an action (INSERT, MODIFY) or may
/// omit it (DELETE, where it is ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionUse {
    Required,
    Ignored,
}

/// A P4Runtime byte string as an integer of `bitwidth` (at most 64) bits.
/// Leading zero bytes (non-canonical form) are accepted; an empty string or
/// set bits beyond `bitwidth` are OUT_OF_RANGE, as the spec requires.
pub fn decode_bytes(what: &str, bytes: &[u8], bitwidth: u32) -> Result<u64> {
    decode_named(|| what.to_owned(), bytes, bitwidth)
}

/// [`decode_bytes`] that builds the field's name only for an error message
/// (this runs for every field of every update).
fn decode_named(what: impl Fn() -> String, bytes: &[u8], bitwidth: u32) -> Result<u64> {
    match bytestring::decode(bytes, bitwidth) {
        Ok(v) => Ok(u64::try_from(v).expect("bitwidth is at most 64")),
        Err(e) if e.code() == talaria_p4rt::google::rpc::Code::OutOfRange => {
            Err(TranslateError::OutOfRange {
                what: what(),
                bitwidth,
                why: e.to_string(),
            })
        }
        Err(e) => Err(invalid(format!("{}: {e}", what()))),
    }
}

/// The canonical P4Runtime byte string of `value`: no leading zero bytes,
/// and a single zero byte for zero.
pub fn encode_bytes(value: u64) -> Vec<u8> {
    bytestring::encode(u128::from(value), 64).expect("a u64 fits in 64 bits")
}

fn u16_of(v: u64) -> u16 {
    u16::try_from(v).expect("Layout caps the width at 16 bits")
}

fn u8_of(v: u64) -> u8 {
    u8::try_from(v).expect("Layout caps the width at 8 bits")
}

fn u32_of(v: u64) -> u32 {
    u32::try_from(v).expect("Layout caps the width at 32 bits")
}

fn mac_of(v: u64) -> [u8; 6] {
    let b = v.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

fn mac_value(m: [u8; 6]) -> u64 {
    m.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b))
}

/// Decoded key values in [`TableLayout::fields`] order, with the prefix
/// length of the (single) LPM field.
struct Key {
    values: [u64; 3],
    prefix_len: u8,
}

fn decode_key(table: &TableLayout, matches: &[FieldMatch]) -> Result<Key> {
    let mut values = [0u64; 3];
    let mut seen = [false; 3];
    let mut prefix_len = 0u8;
    for m in matches {
        let i = table
            .fields
            .iter()
            .position(|f| f.id == m.field_id)
            .ok_or_else(|| {
                invalid(format!(
                    "{}: unknown match field id {}",
                    table.name, m.field_id
                ))
            })?;
        let f: &FieldLayout = &table.fields[i];
        let what = || format!("{} match field {}", table.name, f.name);
        if seen[i] {
            return Err(invalid(format!("{}: given twice", what())));
        }
        seen[i] = true;
        values[i] = match (&m.field_match_type, f.kind) {
            (Some(field_match::FieldMatchType::Exact(e)), MatchKind::Exact) => {
                decode_named(what, &e.value, f.bitwidth)?
            }
            (Some(field_match::FieldMatchType::Lpm(l)), MatchKind::Lpm) => {
                let v = decode_named(what, &l.value, f.bitwidth)?;
                let len =
                    u32::try_from(l.prefix_len)
                        .ok()
                        .filter(|n| (1..=f.bitwidth).contains(n))
                        .ok_or_else(|| {
                            invalid(format!(
                        "{}: prefix length {} not in 1..={} (omit the field for a wildcard)",
                        what(), l.prefix_len, f.bitwidth
                    ))
                        })?;
                let host_bits = if len >= 64 {
                    0
                } else {
                    (1u64 << (f.bitwidth - len)) - 1
                };
                if v & host_bits != 0 {
                    return Err(invalid(format!(
                        "{}: bits beyond the /{len} prefix are set",
                        what()
                    )));
                }
                prefix_len = u8::try_from(len).expect("at most 32");
                v
            }
            (_, kind) => return Err(invalid(format!("{}: expected a {kind:?} match", what()))),
        };
    }
    for (i, f) in table.fields.iter().enumerate() {
        // A missing LPM field is the /0 wildcard; a missing exact field is
        // an error.
        if !seen[i] && f.kind == MatchKind::Exact {
            return Err(invalid(format!(
                "{} match field {}: missing",
                table.name, f.name
            )));
        }
    }
    Ok(Key { values, prefix_len })
}

/// The decoded action: its position in the table's entry actions and its
/// parameter values in [`crate::layout::TableSpec::actions`] order.
struct ActionValues {
    index: usize,
    params: [u64; 3],
}

fn decode_action(table: &TableLayout, action: &Action) -> Result<ActionValues> {
    let a = table.action(action.action_id).ok_or_else(|| {
        invalid(format!(
            "{}: action id {} is not an action of this table",
            table.name, action.action_id
        ))
    })?;
    if a.default_only {
        return Err(invalid(format!(
            "{}: action {} is @defaultonly",
            table.name, a.name
        )));
    }
    let index = a.entry_index.ok_or_else(|| {
        TranslateError::Unimplemented(format!(
            "{}: action {} in entries is not implemented",
            table.name, a.name
        ))
    })?;
    // Entry actions have at most 3 parameters (Layout checks it).
    let mut raw = [None; 3];
    for p in &action.params {
        let j = a
            .params
            .iter()
            .position(|q| q.id == p.param_id)
            .ok_or_else(|| invalid(format!("{}: unknown parameter id {}", a.name, p.param_id)))?;
        let what = || format!("{} parameter {}", a.name, a.params[j].name);
        if raw[j].is_some() {
            return Err(invalid(format!("{}: given twice", what())));
        }
        raw[j] = Some(decode_named(what, &p.value, a.params[j].bitwidth)?);
    }
    let mut params = [0u64; 3];
    for (k, &j) in a.entry_order.iter().enumerate() {
        params[k] = raw[j].ok_or_else(|| {
            invalid(format!(
                "{} parameter {}: missing",
                a.name, a.params[j].name
            ))
        })?;
    }
    Ok(ActionValues { index, params })
}

fn build(kind: TableKind, key: &Key, action: &ActionValues) -> Entry {
    let k = key.values;
    let p = action.params;
    let ip = |v: u64| Ipv4Addr::from(u32_of(v));
    let prefix = Ipv4Prefix {
        addr: ip(k[0]),
        len: key.prefix_len,
    };
    match kind {
        TableKind::Ipv4Route => Entry::Ipv4Route {
            dst: prefix,
            action: match action.index {
                0 => RouteAction::Forward {
                    port: u16_of(p[0]),
                    src_mac: mac_of(p[1]),
                    dst_mac: mac_of(p[2]),
                },
                _ => RouteAction::Drop,
            },
        },
        TableKind::SwitchAddr => Entry::SwitchAddr { addr: ip(k[0]) },
        TableKind::ServiceV4 => Entry::ServiceV4 {
            vip: ip(k[0]),
            port: u16_of(k[1]),
            proto: u8_of(k[2]),
            service_id: u16_of(p[0]),
            bucket_mask: u16_of(p[1]),
            hash_mode: u8_of(p[2]),
        },
        TableKind::CookieCheck => Entry::CookieCheck {
            service_id: u16_of(k[0]),
            backend_id: u32_of(k[1]),
        },
        TableKind::LbBucket => Entry::LbBucket {
            service_id: u16_of(k[0]),
            bucket: u16_of(k[1]),
            backend_id: u32_of(p[0]),
        },
        TableKind::Backend => Entry::Backend {
            backend_id: u32_of(k[0]),
            ip: ip(p[0]),
            port: u16_of(p[1]),
            node_ip: ip(p[2]),
        },
        TableKind::PodNode => Entry::PodNode {
            dst: prefix,
            node_ip: ip(p[0]),
        },
    }
}

/// Splits an entry into key values, prefix length, action index and
/// parameter values (the inverse of [`build`]).
fn split(entry: &Entry) -> (Key, ActionValues) {
    let ip = |a: Ipv4Addr| u64::from(u32::from(a));
    let key = |values: [u64; 3], prefix_len: u8| Key { values, prefix_len };
    let act = |index: usize, params: [u64; 3]| ActionValues { index, params };
    match *entry {
        Entry::Ipv4Route { dst, action } => (
            key([ip(dst.addr), 0, 0], dst.len),
            match action {
                RouteAction::Forward {
                    port,
                    src_mac,
                    dst_mac,
                } => act(0, [u64::from(port), mac_value(src_mac), mac_value(dst_mac)]),
                RouteAction::Drop => act(1, [0; 3]),
            },
        ),
        Entry::SwitchAddr { addr } => (key([ip(addr), 0, 0], 0), act(0, [0; 3])),
        Entry::ServiceV4 {
            vip,
            port,
            proto,
            service_id,
            bucket_mask,
            hash_mode,
        } => (
            key([ip(vip), u64::from(port), u64::from(proto)], 0),
            act(
                0,
                [
                    u64::from(service_id),
                    u64::from(bucket_mask),
                    u64::from(hash_mode),
                ],
            ),
        ),
        Entry::CookieCheck {
            service_id,
            backend_id,
        } => (
            key([u64::from(service_id), u64::from(backend_id), 0], 0),
            act(0, [0; 3]),
        ),
        Entry::LbBucket {
            service_id,
            bucket,
            backend_id,
        } => (
            key([u64::from(service_id), u64::from(bucket), 0], 0),
            act(0, [u64::from(backend_id), 0, 0]),
        ),
        Entry::Backend {
            backend_id,
            ip: bip,
            port,
            node_ip,
        } => (
            key([u64::from(backend_id), 0, 0], 0),
            act(0, [ip(bip), u64::from(port), ip(node_ip)]),
        ),
        Entry::PodNode { dst, node_ip } => (
            key([ip(dst.addr), 0, 0], dst.len),
            act(0, [ip(node_ip), 0, 0]),
        ),
    }
}

impl Layout {
    /// The table a `TableEntry` names.
    pub fn table_for(&self, te: &TableEntry) -> Result<&TableLayout> {
        self.table_by_id(te.table_id)
            .ok_or(TranslateError::UnknownTable(te.table_id))
    }

    /// Decodes and validates a `TableEntry` of a Write.
    pub fn decode(&self, te: &TableEntry, action_use: ActionUse) -> Result<Decoded> {
        let table = self.table_for(te)?;
        if te.priority != 0 {
            return Err(invalid(format!(
                "{}: priority must be 0 for a table without ternary or range keys",
                table.name
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
                    table.name
                )))
            }
        };
        if te.is_default_action {
            return self.decode_default(table, te, action);
        }
        let key = decode_key(table, &te.r#match)?;
        let action = match (action, action_use) {
            (Some(a), ActionUse::Required) => decode_action(table, a)?,
            (None, ActionUse::Required) => {
                return Err(invalid(format!("{}: entry has no action", table.name)))
            }
            // DELETE: the key alone names the entry.
            (_, ActionUse::Ignored) => ActionValues {
                index: table.entry_action(0).entry_index.unwrap_or(0),
                params: [0; 3],
            },
        };
        Ok(Decoded::Entry(build(table.kind, &key, &action)))
    }

    fn decode_default(
        &self,
        table: &TableLayout,
        te: &TableEntry,
        action: Option<&Action>,
    ) -> Result<Decoded> {
        if !te.r#match.is_empty() {
            return Err(invalid(format!(
                "{}: the default entry has no match fields",
                table.name
            )));
        }
        if table.const_default {
            return Err(TranslateError::PermissionDenied(format!(
                "{}: the default action is const",
                table.name
            )));
        }
        match action {
            None => Err(invalid(format!(
                "{}: default entry has no action",
                table.name
            ))),
            Some(a) if a.action_id == table.default_action_id && a.params.is_empty() => {
                Ok(Decoded::InitialDefault(table.kind))
            }
            Some(a) => {
                if table.action(a.action_id).is_none() {
                    return Err(invalid(format!(
                        "{}: action id {} is not an action of this table",
                        table.name, a.action_id
                    )));
                }
                Err(TranslateError::Unimplemented(format!(
                    "{}: this switch implements only the initial default action (id {})",
                    table.name, table.default_action_id
                )))
            }
        }
    }

    /// The key of a specific-entry Read, if `te` names one: `None` for a
    /// wildcard (no match fields).
    pub fn decode_read_key(&self, te: &TableEntry) -> Result<Option<Entry>> {
        if te.r#match.is_empty() {
            return Ok(None);
        }
        match self.decode(te, ActionUse::Ignored)? {
            Decoded::Entry(e) => Ok(Some(e)),
            Decoded::InitialDefault(_) => Ok(None),
        }
    }

    /// Encodes an entry as a Read returns it, with canonical byte strings.
    pub fn encode(&self, entry: &Entry) -> TableEntry {
        let table = self.table_of(entry.table());
        let (key, action) = split(entry);
        let mut matches = Vec::with_capacity(table.fields.len());
        for (i, f) in table.fields.iter().enumerate() {
            let value = encode_bytes(key.values[i]);
            let m = match f.kind {
                MatchKind::Exact => {
                    field_match::FieldMatchType::Exact(field_match::Exact { value })
                }
                // A /0 prefix is a wildcard: P4Runtime omits the field.
                MatchKind::Lpm if key.prefix_len == 0 => continue,
                MatchKind::Lpm => field_match::FieldMatchType::Lpm(field_match::Lpm {
                    value,
                    prefix_len: i32::from(key.prefix_len),
                }),
            };
            matches.push(FieldMatch {
                field_id: f.id,
                field_match_type: Some(m),
            });
        }
        let a = table.entry_action(action.index);
        let mut params = vec![talaria_p4rt::p4::v1::action::Param::default(); a.params.len()];
        for (k, &j) in a.entry_order.iter().enumerate() {
            params[j] = talaria_p4rt::p4::v1::action::Param {
                param_id: a.params[j].id,
                value: encode_bytes(action.params[k]),
            };
        }
        TableEntry {
            table_id: table.id,
            r#match: matches,
            action: Some(TableAction {
                r#type: Some(table_action::Type::Action(Action {
                    action_id: a.id,
                    params,
                })),
            }),
            ..Default::default()
        }
    }

    /// The default entry of `kind` as a Read returns it.
    pub fn encode_default(&self, kind: TableKind) -> TableEntry {
        let table = self.table_of(kind);
        TableEntry {
            table_id: table.id,
            action: Some(TableAction {
                r#type: Some(table_action::Type::Action(Action {
                    action_id: table.default_action_id,
                    params: vec![],
                })),
            }),
            is_default_action: true,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        entry::Target,
        memory::MemoryTarget,
        server::write::{apply, UpdateError},
    };
    use talaria_p4rt::p4::v1::{entity, update::Type, Entity, Update};

    fn layout() -> Layout {
        Layout::talaria().unwrap()
    }

    fn samples() -> Vec<Entry> {
        let ip = Ipv4Addr::new;
        vec![
            Entry::Ipv4Route {
                dst: Ipv4Prefix {
                    addr: ip(10, 0, 0, 0),
                    len: 8,
                },
                action: RouteAction::Forward {
                    port: 511,
                    src_mac: [2, 0, 0, 0, 0, 1],
                    dst_mac: [0xff; 6],
                },
            },
            Entry::Ipv4Route {
                dst: Ipv4Prefix {
                    addr: ip(0, 0, 0, 0),
                    len: 0,
                },
                action: RouteAction::Drop,
            },
            Entry::SwitchAddr {
                addr: ip(192, 0, 2, 1),
            },
            Entry::ServiceV4 {
                vip: ip(10, 96, 0, 1),
                port: 443,
                proto: 6,
                service_id: 7,
                bucket_mask: 255,
                hash_mode: 1,
            },
            Entry::CookieCheck {
                service_id: 7,
                backend_id: u32::MAX,
            },
            Entry::LbBucket {
                service_id: 0,
                bucket: 65535,
                backend_id: 0,
            },
            Entry::Backend {
                backend_id: 3,
                ip: ip(10, 1, 2, 3),
                port: 0,
                node_ip: ip(192, 168, 1, 1),
            },
            Entry::PodNode {
                dst: Ipv4Prefix {
                    addr: ip(10, 244, 1, 0),
                    len: 24,
                },
                node_ip: ip(192, 168, 1, 2),
            },
        ]
    }

    #[test]
    fn every_table_round_trips_canonically() {
        let l = layout();
        for e in samples() {
            let te = l.encode(&e);
            assert_eq!(
                l.decode(&te, ActionUse::Required).unwrap(),
                Decoded::Entry(e),
                "{te:?}"
            );
            // Canonical: no byte string starts with a zero byte unless it is "\0".
            for m in &te.r#match {
                let v = match m.field_match_type.as_ref().unwrap() {
                    field_match::FieldMatchType::Exact(x) => &x.value,
                    field_match::FieldMatchType::Lpm(x) => &x.value,
                    _ => unreachable!(),
                };
                assert!(v.len() == 1 || v[0] != 0, "{v:?}");
            }
        }
        // A /0 route is a wildcard: its LPM field is omitted.
        assert!(l.encode(&samples()[1]).r#match.is_empty());
    }

    #[test]
    fn byte_strings_accept_padding_and_refuse_overflow() {
        assert_eq!(decode_bytes("x", &[0, 0, 1, 255], 9).unwrap(), 511);
        assert!(matches!(
            decode_bytes("x", &[2, 0], 9),
            Err(TranslateError::OutOfRange { .. })
        ));
        assert!(matches!(
            decode_bytes("x", &[], 9),
            Err(TranslateError::OutOfRange { .. })
        ));
        assert_eq!(encode_bytes(0), vec![0]);
        assert_eq!(encode_bytes(0x1234), vec![0x12, 0x34]);
    }

    #[test]
    fn delete_needs_only_the_key() {
        let l = layout();
        let mut te = l.encode(&samples()[3]);
        te.action = None;
        assert!(matches!(
            l.decode(&te, ActionUse::Required),
            Err(TranslateError::Invalid(_))
        ));
        let Decoded::Entry(e) = l.decode(&te, ActionUse::Ignored).unwrap() else {
            panic!()
        };
        assert_eq!(
            crate::memory::EntryKey::of(&e),
            crate::memory::EntryKey::of(&samples()[3])
        );
    }

    fn write(l: &Layout, t: &MemoryTarget, kind: Type, te: TableEntry) -> Result<(), UpdateError> {
        apply(
            l,
            t,
            &Update {
                r#type: kind as i32,
                entity: Some(Entity {
                    entity: Some(entity::Entity::TableEntry(te)),
                }),
            },
        )
    }

    #[test]
    fn writes_against_the_in_memory_target() {
        let l = layout();
        let t = MemoryTarget::new(|k| if k == TableKind::SwitchAddr { 1 } else { 100 });
        for e in samples() {
            write(&l, &t, Type::Insert, l.encode(&e)).unwrap();
        }
        let code = |r: Result<(), UpdateError>| r.unwrap_err().code;
        assert_eq!(
            code(write(&l, &t, Type::Insert, l.encode(&samples()[0]))),
            tonic::Code::AlreadyExists
        );
        let other = Entry::SwitchAddr {
            addr: Ipv4Addr::new(192, 0, 2, 2),
        };
        assert_eq!(
            code(write(&l, &t, Type::Insert, l.encode(&other))),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            code(write(&l, &t, Type::Modify, l.encode(&other))),
            tonic::Code::NotFound
        );
        assert_eq!(
            code(write(&l, &t, Type::Delete, l.encode(&other))),
            tonic::Code::NotFound
        );
        assert_eq!(
            code(write(&l, &t, Type::Unspecified, l.encode(&other))),
            tonic::Code::InvalidArgument
        );
        // The default entry: MODIFY to the initial default is a no-op,
        // anything else is refused.
        let mut d = l.encode_default(TableKind::Backend);
        write(&l, &t, Type::Modify, d.clone()).unwrap();
        assert_eq!(
            code(write(&l, &t, Type::Insert, d.clone())),
            tonic::Code::InvalidArgument
        );
        if let Some(table_action::Type::Action(a)) =
            d.action.as_mut().and_then(|a| a.r#type.as_mut())
        {
            a.action_id = l.table_of(TableKind::Backend).entry_action(0).id;
        }
        assert_eq!(
            code(write(&l, &t, Type::Modify, d)),
            tonic::Code::Unimplemented
        );
        // A const default action cannot be changed at all.
        let mut p4info = l.p4info.clone();
        let backend_id = l.table_of(TableKind::Backend).id;
        let tbl = p4info
            .tables
            .iter_mut()
            .find(|x| x.preamble.as_ref().unwrap().id == backend_id)
            .unwrap();
        tbl.const_default_action_id = tbl.initial_default_action.as_ref().unwrap().action_id;
        let lc = Layout::new(p4info).unwrap();
        assert_eq!(
            code(write(
                &lc,
                &t,
                Type::Modify,
                lc.encode_default(TableKind::Backend)
            )),
            tonic::Code::PermissionDenied
        );
        assert_eq!(t.entries(TableKind::Backend).unwrap().len(), 1);
    }
}
