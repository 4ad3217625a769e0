//! The talaria pipeline as the P4Runtime server sees it: which P4Info table,
//! match field, action and parameter feeds which field of an [`Entry`], with
//! ids and bit widths resolved once from `p4/talaria.p4info.txtpb`.
//!
//! [`SPECS`] names, for each table, the key fields and the entry actions in
//! the order of the [`Entry`] variant's fields; [`Layout::new`] looks those
//! names up in the P4Info and fails if any is missing or too wide for its
//! Rust field, so a renamed table or widened field is caught at startup (and
//! by the unit tests), not by a client.

use std::collections::HashMap;

use talaria_p4rt::p4::config::v1::{action_ref, match_field, P4Info};

use crate::entry::{CounterId, TableKind};

/// The P4Info this switch implements, embedded at build time.
pub const TALARIA_P4INFO_TXTPB: &str = include_str!("../../p4/talaria.p4info.txtpb");

/// Why the P4Info does not describe the pipeline this switch implements.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The embedded P4Info text did not parse.
    #[error("cannot parse the embedded P4Info")]
    Parse(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A table, field, action, parameter or counter the switch needs is
    /// absent.
    #[error("P4Info has no {0}")]
    Missing(String),
    /// An object has a different shape than the data plane implements.
    #[error("P4Info {what}: {why}")]
    Mismatch { what: String, why: String },
}

/// How a key field matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchKind {
    Exact,
    Lpm,
}

/// The names of one table's pieces, in [`Entry`] field order.
pub struct TableSpec {
    pub kind: TableKind,
    pub name: &'static str,
    /// Key fields (P4Info match field name, kind).
    pub keys: &'static [(&'static str, MatchKind)],
    /// Actions an entry may name: (P4Info action name, parameter names).
    pub actions: &'static [(&'static str, &'static [&'static str])],
}

/// Every table of p4/talaria.p4, in declaration order.
pub const SPECS: [TableSpec; 7] = [
    TableSpec {
        kind: TableKind::Ipv4Route,
        name: "TalariaIngress.ipv4_route",
        keys: &[("dst_addr", MatchKind::Lpm)],
        actions: &[
            ("TalariaIngress.forward", &["port", "src_mac", "dst_mac"]),
            ("TalariaIngress.drop", &[]),
        ],
    },
    TableSpec {
        kind: TableKind::SwitchAddr,
        name: "TalariaIngress.switch_addr",
        keys: &[("dst_addr", MatchKind::Exact)],
        actions: &[("TalariaIngress.terminate_tunnel", &[])],
    },
    TableSpec {
        kind: TableKind::ServiceV4,
        name: "TalariaIngress.service_v4",
        keys: &[
            ("vip", MatchKind::Exact),
            ("port", MatchKind::Exact),
            ("proto", MatchKind::Exact),
        ],
        actions: &[(
            "TalariaIngress.set_service",
            &["service_id", "bucket_mask", "hash_mode"],
        )],
    },
    TableSpec {
        kind: TableKind::CookieCheck,
        name: "TalariaIngress.cookie_check",
        keys: &[
            ("service_id", MatchKind::Exact),
            ("backend_id", MatchKind::Exact),
        ],
        actions: &[("TalariaIngress.cookie_valid", &[])],
    },
    TableSpec {
        kind: TableKind::LbBucket,
        name: "TalariaIngress.lb_bucket",
        keys: &[
            ("service_id", MatchKind::Exact),
            ("bucket", MatchKind::Exact),
        ],
        actions: &[("TalariaIngress.select_backend", &["backend_id"])],
    },
    TableSpec {
        kind: TableKind::Backend,
        name: "TalariaIngress.backend",
        keys: &[("backend_id", MatchKind::Exact)],
        actions: &[(
            "TalariaIngress.set_backend",
            &["backend_ip", "backend_port", "node_ip"],
        )],
    },
    TableSpec {
        kind: TableKind::PodNode,
        name: "TalariaIngress.pod_node",
        keys: &[("pod_addr", MatchKind::Lpm)],
        actions: &[("TalariaIngress.set_client_node", &["node_ip"])],
    },
];

/// Indirect counters: (P4Info name, data plane counter).
pub const COUNTERS: [(&str, CounterId); 3] = [
    ("TalariaIngress.service_counter", CounterId::Service),
    ("TalariaIngress.drop_counter", CounterId::Drop),
    ("TalariaIngress.lb_event_counter", CounterId::LbEvent),
];

/// The direct counter of the `backend` table.
pub const BACKEND_COUNTER: &str = "TalariaIngress.backend_counter";

/// One key field.
#[derive(Clone, Debug)]
pub struct FieldLayout {
    pub id: u32,
    pub name: String,
    pub bitwidth: u32,
    pub kind: MatchKind,
}

/// One action parameter.
#[derive(Clone, Debug)]
pub struct ParamLayout {
    pub id: u32,
    pub name: String,
    pub bitwidth: u32,
}

/// One action a table refers to.
#[derive(Clone, Debug)]
pub struct ActionLayout {
    pub id: u32,
    pub name: String,
    /// Parameters in P4Info order.
    pub params: Vec<ParamLayout>,
    /// For an entry action, where each [`Entry`] parameter comes from: index
    /// into `params`, in [`TableSpec::actions`] order. Empty for
    /// default-only actions.
    pub entry_order: Vec<usize>,
    /// Position in [`TableSpec::actions`]; `None` when the action is not one
    /// an entry can hold in the data plane.
    pub entry_index: Option<usize>,
    /// `@defaultonly`: never valid for a non-default entry.
    pub default_only: bool,
}

/// One table.
#[derive(Clone, Debug)]
pub struct TableLayout {
    pub kind: TableKind,
    pub id: u32,
    pub name: String,
    pub size: u32,
    /// Key fields in [`TableSpec::keys`] order.
    pub fields: Vec<FieldLayout>,
    /// Every action the table refers to.
    pub actions: Vec<ActionLayout>,
    /// The initial default action's id (the data plane implements only this).
    pub default_action_id: u32,
    /// The P4Info's `const_default_action_id` is set.
    pub const_default: bool,
    /// The direct counter attached to the table, if any.
    pub direct_counter_id: Option<u32>,
}

impl TableLayout {
    /// The action with `id`, if the table refers to it.
    pub fn action(&self, id: u32) -> Option<&ActionLayout> {
        self.actions.iter().find(|a| a.id == id)
    }

    /// The entry action at [`TableSpec::actions`] position `index`.
    pub fn entry_action(&self, index: usize) -> &ActionLayout {
        self.actions
            .iter()
            .find(|a| a.entry_index == Some(index))
            .expect("Layout::new checked every entry action")
    }
}

/// An indirect counter.
#[derive(Clone, Copy, Debug)]
pub struct CounterLayout {
    pub counter: CounterId,
    pub id: u32,
    pub size: u32,
}

/// The resolved pipeline.
#[derive(Clone, Debug)]
pub struct Layout {
    tables: Vec<TableLayout>,
    by_id: HashMap<u32, usize>,
    pub counters: Vec<CounterLayout>,
    /// The direct counter of `backend`.
    pub backend_counter_id: u32,
    /// The P4Info the layout was resolved from.
    pub p4info: P4Info,
}

fn mismatch(what: impl Into<String>, why: impl Into<String>) -> LayoutError {
    LayoutError::Mismatch {
        what: what.into(),
        why: why.into(),
    }
}

/// Bits of the Rust field that holds a value of the given table's key or
/// parameter, so that a P4Info wider than the data plane is refused.
fn rust_bits(kind: TableKind, name: &str) -> u32 {
    match (kind, name) {
        (_, "port" | "backend_port" | "service_id" | "bucket" | "bucket_mask") => 16,
        (_, "proto" | "hash_mode") => 8,
        (_, "src_mac" | "dst_mac") => 48,
        _ => 32,
    }
}

impl Layout {
    /// The layout of the embedded talaria P4Info.
    pub fn talaria() -> Result<Self, LayoutError> {
        let p4info = talaria_p4rt::p4info::parse_text(TALARIA_P4INFO_TXTPB)
            .map_err(|e| LayoutError::Parse(Box::new(e)))?;
        Self::new(p4info)
    }

    /// Resolves [`SPECS`] and [`COUNTERS`] in `p4info`.
    pub fn new(p4info: P4Info) -> Result<Self, LayoutError> {
        let mut tables = Vec::new();
        for spec in &SPECS {
            tables.push(Self::table(&p4info, spec)?);
        }
        let by_id = tables.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        let mut counters = Vec::new();
        for (name, counter) in COUNTERS {
            let c = p4info
                .counters
                .iter()
                .find(|c| c.preamble.as_ref().is_some_and(|p| p.name == name))
                .ok_or_else(|| LayoutError::Missing(format!("counter {name}")))?;
            let id = c.preamble.as_ref().map_or(0, |p| p.id);
            let size = u32::try_from(c.size).map_err(|_| mismatch(name, "size out of range"))?;
            counters.push(CounterLayout { counter, id, size });
        }
        let backend_counter_id = p4info
            .direct_counters
            .iter()
            .filter_map(|c| c.preamble.as_ref())
            .find(|p| p.name == BACKEND_COUNTER)
            .map(|p| p.id)
            .ok_or_else(|| LayoutError::Missing(format!("direct counter {BACKEND_COUNTER}")))?;
        Ok(Self {
            tables,
            by_id,
            counters,
            backend_counter_id,
            p4info,
        })
    }

    fn table(p4info: &P4Info, spec: &TableSpec) -> Result<TableLayout, LayoutError> {
        let table = p4info
            .tables
            .iter()
            .find(|t| t.preamble.as_ref().is_some_and(|p| p.name == spec.name))
            .ok_or_else(|| LayoutError::Missing(format!("table {}", spec.name)))?;
        let id = table.preamble.as_ref().map_or(0, |p| p.id);
        if table.match_fields.len() != spec.keys.len() {
            return Err(mismatch(
                spec.name,
                format!(
                    "{} match fields, expected {}",
                    table.match_fields.len(),
                    spec.keys.len()
                ),
            ));
        }
        let mut fields = Vec::new();
        for &(name, kind) in spec.keys {
            let f = table
                .match_fields
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(|| {
                    LayoutError::Missing(format!("match field {name} in {}", spec.name))
                })?;
            let want = match kind {
                MatchKind::Exact => match_field::MatchType::Exact,
                MatchKind::Lpm => match_field::MatchType::Lpm,
            };
            if f.r#match != Some(match_field::Match::MatchType(want as i32)) {
                return Err(mismatch(
                    format!("{}.{name}", spec.name),
                    format!("match type is not {want:?}"),
                ));
            }
            let bitwidth = u32::try_from(f.bitwidth).unwrap_or(0);
            if bitwidth == 0 || bitwidth > rust_bits(spec.kind, name) {
                return Err(mismatch(
                    format!("{}.{name}", spec.name),
                    format!("bit width {}", f.bitwidth),
                ));
            }
            fields.push(FieldLayout {
                id: f.id,
                name: name.into(),
                bitwidth,
                kind,
            });
        }
        let mut actions = Vec::new();
        for r in &table.action_refs {
            let a = p4info
                .actions
                .iter()
                .find(|a| a.preamble.as_ref().is_some_and(|p| p.id == r.id))
                .ok_or_else(|| LayoutError::Missing(format!("action {} of {}", r.id, spec.name)))?;
            let name = a
                .preamble
                .as_ref()
                .map_or_else(String::new, |p| p.name.clone());
            let params: Vec<ParamLayout> = a
                .params
                .iter()
                .map(|p| ParamLayout {
                    id: p.id,
                    name: p.name.clone(),
                    bitwidth: u32::try_from(p.bitwidth).unwrap_or(0),
                })
                .collect();
            let default_only = r.scope == action_ref::Scope::DefaultOnly as i32;
            let entry_index = spec.actions.iter().position(|(n, _)| *n == name);
            let mut entry_order = Vec::new();
            if let Some(i) = entry_index {
                let names = spec.actions[i].1;
                if params.len() != names.len() {
                    return Err(mismatch(
                        &name,
                        format!("{} parameters, expected {}", params.len(), names.len()),
                    ));
                }
                for pname in names {
                    let j = params
                        .iter()
                        .position(|p| p.name == *pname)
                        .ok_or_else(|| {
                            LayoutError::Missing(format!("parameter {pname} of {name}"))
                        })?;
                    if params[j].bitwidth == 0 || params[j].bitwidth > rust_bits(spec.kind, pname) {
                        return Err(mismatch(
                            format!("{name}.{pname}"),
                            format!("bit width {}", params[j].bitwidth),
                        ));
                    }
                    entry_order.push(j);
                }
                if default_only {
                    return Err(mismatch(&name, "is @defaultonly but entries need it"));
                }
            }
            actions.push(ActionLayout {
                id: r.id,
                name,
                params,
                entry_order,
                entry_index,
                default_only,
            });
        }
        for (name, _) in spec.actions {
            if !actions.iter().any(|a| a.name == *name) {
                return Err(LayoutError::Missing(format!(
                    "action {name} in {}",
                    spec.name
                )));
            }
        }
        let default_action_id = table
            .initial_default_action
            .as_ref()
            .map(|d| d.action_id)
            .filter(|id| *id != 0)
            .unwrap_or(table.const_default_action_id);
        let size =
            u32::try_from(table.size).map_err(|_| mismatch(spec.name, "size out of range"))?;
        let direct_counter_id = table
            .direct_resource_ids
            .iter()
            .copied()
            .find(|id| id >> 24 == 0x13);
        Ok(TableLayout {
            kind: spec.kind,
            id,
            name: spec.name.into(),
            size,
            fields,
            actions,
            default_action_id,
            const_default: table.const_default_action_id != 0,
            direct_counter_id,
        })
    }

    /// Every table, in [`SPECS`] order.
    pub fn tables(&self) -> &[TableLayout] {
        &self.tables
    }

    /// The table with P4Info id `id`.
    pub fn table_by_id(&self, id: u32) -> Option<&TableLayout> {
        self.by_id.get(&id).map(|&i| &self.tables[i])
    }

    /// The table of kind `kind`.
    pub fn table_of(&self, kind: TableKind) -> &TableLayout {
        self.tables
            .iter()
            .find(|t| t.kind == kind)
            .expect("SPECS lists every kind")
    }

    /// The P4 `size` of `kind`.
    pub fn size(&self, kind: TableKind) -> u32 {
        self.table_of(kind).size
    }

    /// The indirect counter with P4Info id `id`.
    pub fn counter_by_id(&self, id: u32) -> Option<CounterLayout> {
        self.counters.iter().copied().find(|c| c.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_p4info_resolves() {
        let l = Layout::talaria().unwrap();
        assert_eq!(l.tables().len(), 7);
        let route = l.table_of(TableKind::Ipv4Route);
        assert_eq!(route.name, "TalariaIngress.ipv4_route");
        assert_eq!(route.fields[0].kind, MatchKind::Lpm);
        assert_eq!(l.table_by_id(route.id).unwrap().kind, TableKind::Ipv4Route);
        assert!(route.size > 0);
        let fwd = route.entry_action(0);
        assert_eq!(fwd.name, "TalariaIngress.forward");
        assert_eq!(fwd.params.len(), 3);
        assert!(l.table_of(TableKind::Backend).direct_counter_id.is_some());
        assert_eq!(l.counters.len(), 3);
    }

    #[test]
    fn a_renamed_table_is_refused() {
        let text =
            TALARIA_P4INFO_TXTPB.replace("TalariaIngress.lb_bucket", "TalariaIngress.lb_buckets");
        let p4info = talaria_p4rt::p4info::parse_text(&text).unwrap();
        let err = Layout::new(p4info).unwrap_err();
        assert!(
            err.to_string().contains("TalariaIngress.lb_bucket"),
            "{err}"
        );
    }

    #[test]
    fn a_widened_field_is_refused() {
        let l = Layout::talaria().unwrap();
        let mut p4info = l.p4info.clone();
        let t = p4info
            .tables
            .iter_mut()
            .find(|t| t.preamble.as_ref().unwrap().name.ends_with("lb_bucket"))
            .unwrap();
        t.match_fields[1].bitwidth = 17;
        assert!(Layout::new(p4info).is_err());
    }
}
