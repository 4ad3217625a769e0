//! Table dumps for people (REST, CLI): any table of any P4Info, with names
//! from the P4Info, and values shown in the formats of talaria's
//! definitions where the table is one of them (an address as an address),
//! as numbers otherwise.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use talaria_p4rt::{
    p4::v1::{field_match, table_action, TableEntry},
    p4info::{Schema, Table as P4Table},
};

use crate::talaria::Table;
use crate::value::Format;

/// One entry as people read it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DumpedEntry {
    /// Key fields by name; an LPM field as `value/len` (an omitted one is
    /// the `/0` wildcard and is absent).
    #[serde(rename = "match")]
    pub matches: BTreeMap<String, serde_json::Value>,
    /// The action's alias.
    pub action: String,
    /// Its parameters by name.
    pub params: BTreeMap<String, serde_json::Value>,
    /// The default entry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_default: bool,
}

/// A whole table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableDump {
    /// The alias (`service_v4`).
    pub table: String,
    /// The full P4Info name.
    pub name: String,
    pub id: u32,
    /// The P4 `size`.
    pub size: i64,
    /// Key field names in key order.
    pub key: Vec<String>,
    pub entries: Vec<DumpedEntry>,
    /// Entries that could not be shown, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undecodable: Vec<String>,
}

/// Why an entry read from a switch cannot be shown.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("table id {table_id}: {why}")]
pub struct DumpError {
    pub table_id: u32,
    pub why: String,
}

/// The format of field `name` of table `table_id`: from the definitions
/// when they have it, else by width.
fn field_format(table_id: u32, name: &str, bits: u32) -> Format {
    Table::from_id(table_id)
        .and_then(|t| {
            t.def()
                .fields
                .iter()
                .find(|f| f.name == name && f.bits == bits)
        })
        .map_or_else(|| Format::for_width(bits), |f| f.format)
}

fn param_format(action_id: u32, name: &str, bits: u32) -> Format {
    Table::ALL
        .iter()
        .flat_map(|t| t.def().actions.iter())
        .find(|(a, _)| a.id == action_id)
        .and_then(|(a, _)| a.params.iter().find(|p| p.name == name && p.bits == bits))
        .map_or_else(|| Format::for_width(bits), |p| p.format)
}

fn decode(table_id: u32, what: &str, bytes: &[u8], bits: u32) -> Result<u128, DumpError> {
    talaria_p4rt::bytestring::decode(bytes, bits).map_err(|e| DumpError {
        table_id,
        why: format!("{what}: {e}"),
    })
}

/// The header of a dump of `table`, without entries.
pub fn table_dump(table: &P4Table) -> TableDump {
    TableDump {
        table: table.alias.clone(),
        name: table.name.clone(),
        id: table.id,
        size: table.size,
        key: table.match_fields.iter().map(|f| f.name.clone()).collect(),
        entries: Vec::new(),
        undecodable: Vec::new(),
    }
}

/// The tables of `schema` (those named in `only`, or all) with the
/// entries among `entries` that belong to them, sorted.
pub fn dump_tables(
    schema: &Schema,
    only: Option<&[u32]>,
    entries: &[TableEntry],
) -> Vec<TableDump> {
    let mut dumps: Vec<TableDump> = schema
        .tables()
        .iter()
        .filter(|t| only.is_none_or(|ids| ids.contains(&t.id)))
        .map(table_dump)
        .collect();
    for te in entries {
        let Some(d) = dumps.iter_mut().find(|d| d.id == te.table_id) else {
            continue;
        };
        match dump_entry(schema, te) {
            Ok(e) => d.entries.push(e),
            Err(e) => d.undecodable.push(e.to_string()),
        }
    }
    for d in &mut dumps {
        d.entries.sort_by(|a, b| {
            let key = |e: &DumpedEntry| serde_json::to_string(&e.matches).unwrap_or_default();
            key(a).cmp(&key(b))
        });
    }
    dumps
}

/// `te` with names from `schema`.
pub fn dump_entry(schema: &Schema, te: &TableEntry) -> Result<DumpedEntry, DumpError> {
    let fail = |why: String| DumpError {
        table_id: te.table_id,
        why,
    };
    let table = schema
        .tables()
        .by_id(te.table_id)
        .map_err(|e| fail(e.to_string()))?;
    let mut matches = BTreeMap::new();
    for m in &te.r#match {
        let f = table
            .match_fields
            .by_id(m.field_id)
            .map_err(|e| fail(e.to_string()))?;
        let format = field_format(table.id, &f.name, f.bitwidth);
        let value = match &m.field_match_type {
            Some(field_match::FieldMatchType::Exact(e)) => {
                format.json(decode(table.id, &f.name, &e.value, f.bitwidth)?)
            }
            Some(field_match::FieldMatchType::Lpm(l)) => {
                let v = format.json(decode(table.id, &f.name, &l.value, f.bitwidth)?);
                let shown = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                format!("{shown}/{}", l.prefix_len).into()
            }
            other => return Err(fail(format!("{}: unsupported match {other:?}", f.name))),
        };
        matches.insert(f.name.clone(), value);
    }
    let (action, params) = match &te.action {
        Some(a) => match &a.r#type {
            Some(table_action::Type::Action(a)) => {
                let pa = schema
                    .actions()
                    .by_id(a.action_id)
                    .map_err(|e| fail(e.to_string()))?;
                let mut params = BTreeMap::new();
                for p in &a.params {
                    let pp = pa
                        .params
                        .by_id(p.param_id)
                        .map_err(|e| fail(e.to_string()))?;
                    let v = decode(table.id, &pp.name, &p.value, pp.bitwidth)?;
                    params.insert(
                        pp.name.clone(),
                        param_format(pa.id, &pp.name, pp.bitwidth).json(v),
                    );
                }
                (pa.alias.clone(), params)
            }
            other => return Err(fail(format!("unsupported action {other:?}"))),
        },
        None => (String::new(), BTreeMap::new()),
    };
    Ok(DumpedEntry {
        matches,
        action,
        params,
        is_default: te.is_default_action,
    })
}
