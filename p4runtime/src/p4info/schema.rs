//! [`Schema`]: the objects of a P4Info, indexed by name and id once, with
//! the details a controller or switch needs to build and check entries.

use crate::p4::config::v1 as p4info;
use crate::p4::config::v1::{action_ref, counter_spec, meter_spec};
use crate::p4info::index::{Index, Named};
use crate::{Error, Kind, Result};

/// Where an action may be used in a table (`@tableonly`, `@defaultonly`).
pub type ActionScope = action_ref::Scope;
/// What a counter counts.
pub type CounterUnit = counter_spec::Unit;
/// What a meter measures.
pub type MeterUnit = meter_spec::Unit;

/// The P4Info objects a P4Runtime client or server resolves by name or id.
#[derive(Debug, Clone)]
pub struct Schema {
    tables: Index<Table>,
    actions: Index<Action>,
    action_profiles: Index<ActionProfile>,
    counters: Index<Counter>,
    direct_counters: Index<DirectCounter>,
    meters: Index<Meter>,
    direct_meters: Index<DirectMeter>,
    registers: Index<Register>,
}

/// The scope name of top-level objects in error messages.
const TOP: &str = "P4Info";

impl Schema {
    /// Indexes `p4info`. Fails if it has two objects of one kind with the
    /// same name or id, or a negative bitwidth.
    pub fn new(p4info: &p4info::P4Info) -> Result<Self> {
        Ok(Schema {
            tables: index(Kind::Table, &p4info.tables, Table::from_p4info)?,
            actions: index(Kind::Action, &p4info.actions, Action::from_p4info)?,
            action_profiles: index(
                Kind::ActionProfile,
                &p4info.action_profiles,
                ActionProfile::from_p4info,
            )?,
            counters: index(Kind::Counter, &p4info.counters, Counter::from_p4info)?,
            direct_counters: index(
                Kind::DirectCounter,
                &p4info.direct_counters,
                DirectCounter::from_p4info,
            )?,
            meters: index(Kind::Meter, &p4info.meters, Meter::from_p4info)?,
            direct_meters: index(
                Kind::DirectMeter,
                &p4info.direct_meters,
                DirectMeter::from_p4info,
            )?,
            registers: index(Kind::Register, &p4info.registers, Register::from_p4info)?,
        })
    }

    pub fn tables(&self) -> &Index<Table> {
        &self.tables
    }

    pub fn actions(&self) -> &Index<Action> {
        &self.actions
    }

    pub fn action_profiles(&self) -> &Index<ActionProfile> {
        &self.action_profiles
    }

    pub fn counters(&self) -> &Index<Counter> {
        &self.counters
    }

    pub fn direct_counters(&self) -> &Index<DirectCounter> {
        &self.direct_counters
    }

    pub fn meters(&self) -> &Index<Meter> {
        &self.meters
    }

    pub fn direct_meters(&self) -> &Index<DirectMeter> {
        &self.direct_meters
    }

    pub fn registers(&self) -> &Index<Register> {
        &self.registers
    }

    /// Shorthand for `self.tables().get(name)`.
    pub fn table(&self, name: &str) -> Result<&Table> {
        self.tables.get(name)
    }

    /// Shorthand for `self.actions().get(name)`.
    pub fn action(&self, name: &str) -> Result<&Action> {
        self.actions.get(name)
    }
}

fn index<P, T: Named>(
    kind: Kind,
    objects: &[P],
    convert: impl Fn(&P) -> Result<T>,
) -> Result<Index<T>> {
    let items = objects.iter().map(convert).collect::<Result<_>>()?;
    Index::new(kind, TOP, items)
}

/// Id, name and alias from a preamble; a missing preamble reads as empty,
/// which the index then reports as a duplicate if it happens twice.
fn identity(preamble: Option<&p4info::Preamble>) -> (u32, String, String) {
    let preamble = preamble.cloned().unwrap_or_default();
    (preamble.id, preamble.name, preamble.alias)
}

fn bitwidth(width: i32) -> Result<u32> {
    u32::try_from(width).map_err(|_| Error::InvalidBitwidth {
        bitwidth: width.into(),
    })
}

fn counter_unit(spec: Option<&p4info::CounterSpec>) -> CounterUnit {
    spec.map(p4info::CounterSpec::unit).unwrap_or_default()
}

fn meter_unit(spec: Option<&p4info::MeterSpec>) -> MeterUnit {
    spec.map(p4info::MeterSpec::unit).unwrap_or_default()
}

/// Implements [`Named`] for types with `id`, `name` and `alias` fields.
macro_rules! named_with_alias {
    ($($ty:ty),* $(,)?) => {$(
        impl Named for $ty {
            fn id(&self) -> u32 {
                self.id
            }
            fn name(&self) -> &str {
                &self.name
            }
            fn alias(&self) -> Option<&str> {
                Some(&self.alias)
            }
        }
    )*};
}

named_with_alias!(
    Table,
    Action,
    ActionProfile,
    Counter,
    DirectCounter,
    Meter,
    DirectMeter,
    Register,
);

/// A match-action table.
#[derive(Debug, Clone)]
pub struct Table {
    pub id: u32,
    pub name: String,
    pub alias: String,
    /// Key fields, in key order.
    pub match_fields: Index<MatchField>,
    pub action_refs: Vec<ActionRef>,
    /// Set when the program fixes the default action (`const default_action`).
    pub const_default_action_id: Option<u32>,
    /// The action profile or selector of an indirect table.
    pub implementation_id: Option<u32>,
    /// Direct counters and meters.
    pub direct_resource_ids: Vec<u32>,
    /// Capacity in entries.
    pub size: i64,
    /// Entries are fixed by the program (`const entries`).
    pub is_const: bool,
}

impl Table {
    fn from_p4info(table: &p4info::Table) -> Result<Self> {
        let (id, name, alias) = identity(table.preamble.as_ref());
        let match_fields = table
            .match_fields
            .iter()
            .map(MatchField::from_p4info)
            .collect::<Result<_>>()?;
        let match_fields = Index::new(Kind::MatchField, format!("table `{name}`"), match_fields)?;
        Ok(Table {
            id,
            name,
            alias,
            match_fields,
            action_refs: table
                .action_refs
                .iter()
                .map(ActionRef::from_p4info)
                .collect(),
            const_default_action_id: nonzero(table.const_default_action_id),
            implementation_id: nonzero(table.implementation_id),
            direct_resource_ids: table.direct_resource_ids.clone(),
            size: table.size,
            is_const: table.is_const_table,
        })
    }

    /// Shorthand for `self.match_fields.get(name)`.
    pub fn match_field(&self, name: &str) -> Result<&MatchField> {
        self.match_fields.get(name)
    }

    /// How this table may use the action, or `None` if it may not.
    pub fn action_ref(&self, action_id: u32) -> Option<&ActionRef> {
        self.action_refs.iter().find(|r| r.id == action_id)
    }
}

/// P4Info uses 0 for "none" in its optional id fields.
fn nonzero(id: u32) -> Option<u32> {
    (id != 0).then_some(id)
}

/// One field of a table key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchField {
    /// Unique within the table.
    pub id: u32,
    pub name: String,
    pub bitwidth: u32,
    pub match_type: MatchType,
}

impl MatchField {
    fn from_p4info(field: &p4info::MatchField) -> Result<Self> {
        use p4info::match_field::{Match, MatchType as Proto};
        let match_type = match &field.r#match {
            Some(Match::MatchType(number)) => match Proto::try_from(*number) {
                Ok(Proto::Exact) => MatchType::Exact,
                Ok(Proto::Lpm) => MatchType::Lpm,
                Ok(Proto::Ternary) => MatchType::Ternary,
                Ok(Proto::Range) => MatchType::Range,
                Ok(Proto::Optional) => MatchType::Optional,
                Ok(Proto::Unspecified) | Err(_) => MatchType::Unspecified,
            },
            Some(Match::OtherMatchType(other)) => MatchType::Other(other.clone()),
            None => MatchType::Unspecified,
        };
        Ok(MatchField {
            id: field.id,
            name: field.name.clone(),
            bitwidth: bitwidth(field.bitwidth)?,
            match_type,
        })
    }
}

impl Named for MatchField {
    fn id(&self) -> u32 {
        self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// How a key field matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchType {
    Exact,
    Lpm,
    Ternary,
    Range,
    Optional,
    /// An architecture-specific match kind, by name.
    Other(String),
    /// Not given, or a value this crate does not know.
    Unspecified,
}

/// An action a table may use, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionRef {
    /// The action's id.
    pub id: u32,
    pub scope: ActionScope,
}

impl ActionRef {
    fn from_p4info(action_ref: &p4info::ActionRef) -> Self {
        ActionRef {
            id: action_ref.id,
            scope: action_ref.scope(),
        }
    }
}

/// An action, with the parameters the controller supplies.
#[derive(Debug, Clone)]
pub struct Action {
    pub id: u32,
    pub name: String,
    pub alias: String,
    /// Parameters, in declaration order.
    pub params: Index<Param>,
}

impl Action {
    fn from_p4info(action: &p4info::Action) -> Result<Self> {
        let (id, name, alias) = identity(action.preamble.as_ref());
        let params = action
            .params
            .iter()
            .map(|param| {
                Ok(Param {
                    id: param.id,
                    name: param.name.clone(),
                    bitwidth: bitwidth(param.bitwidth)?,
                })
            })
            .collect::<Result<_>>()?;
        let params = Index::new(Kind::ActionParam, format!("action `{name}`"), params)?;
        Ok(Action {
            id,
            name,
            alias,
            params,
        })
    }

    /// Shorthand for `self.params.get(name)`.
    pub fn param(&self, name: &str) -> Result<&Param> {
        self.params.get(name)
    }
}

/// One action parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Unique within the action.
    pub id: u32,
    pub name: String,
    pub bitwidth: u32,
}

impl Named for Param {
    fn id(&self) -> u32 {
        self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// An action profile, or an action selector if `with_selector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionProfile {
    pub id: u32,
    pub name: String,
    pub alias: String,
    /// The tables that use it.
    pub table_ids: Vec<u32>,
    pub with_selector: bool,
    pub size: i64,
    /// 0 when only `size` limits groups.
    pub max_group_size: i32,
}

impl ActionProfile {
    fn from_p4info(profile: &p4info::ActionProfile) -> Result<Self> {
        let (id, name, alias) = identity(profile.preamble.as_ref());
        Ok(ActionProfile {
            id,
            name,
            alias,
            table_ids: profile.table_ids.clone(),
            with_selector: profile.with_selector,
            size: profile.size,
            max_group_size: profile.max_group_size,
        })
    }
}

/// An indexed counter array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub id: u32,
    pub name: String,
    pub alias: String,
    pub unit: CounterUnit,
    /// Number of cells.
    pub size: i64,
}

impl Counter {
    fn from_p4info(counter: &p4info::Counter) -> Result<Self> {
        let (id, name, alias) = identity(counter.preamble.as_ref());
        Ok(Counter {
            id,
            name,
            alias,
            unit: counter_unit(counter.spec.as_ref()),
            size: counter.size,
        })
    }
}

/// A counter with one cell per entry of its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectCounter {
    pub id: u32,
    pub name: String,
    pub alias: String,
    pub unit: CounterUnit,
    pub table_id: u32,
}

impl DirectCounter {
    fn from_p4info(counter: &p4info::DirectCounter) -> Result<Self> {
        let (id, name, alias) = identity(counter.preamble.as_ref());
        Ok(DirectCounter {
            id,
            name,
            alias,
            unit: counter_unit(counter.spec.as_ref()),
            table_id: counter.direct_table_id,
        })
    }
}

/// An indexed meter array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meter {
    pub id: u32,
    pub name: String,
    pub alias: String,
    pub unit: MeterUnit,
    /// Number of cells.
    pub size: i64,
}

impl Meter {
    fn from_p4info(meter: &p4info::Meter) -> Result<Self> {
        let (id, name, alias) = identity(meter.preamble.as_ref());
        Ok(Meter {
            id,
            name,
            alias,
            unit: meter_unit(meter.spec.as_ref()),
            size: meter.size,
        })
    }
}

/// A meter with one cell per entry of its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectMeter {
    pub id: u32,
    pub name: String,
    pub alias: String,
    pub unit: MeterUnit,
    pub table_id: u32,
}

impl DirectMeter {
    fn from_p4info(meter: &p4info::DirectMeter) -> Result<Self> {
        let (id, name, alias) = identity(meter.preamble.as_ref());
        Ok(DirectMeter {
            id,
            name,
            alias,
            unit: meter_unit(meter.spec.as_ref()),
            table_id: meter.direct_table_id,
        })
    }
}

/// A register array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    pub id: u32,
    pub name: String,
    pub alias: String,
    /// Number of cells.
    pub size: i64,
    /// Width of a cell when it is a plain `bit<W>`; `None` for other types.
    pub bitwidth: Option<u32>,
}

impl Register {
    fn from_p4info(register: &p4info::Register) -> Result<Self> {
        use p4info::p4_bitstring_like_type_spec::TypeSpec::Bit;
        use p4info::p4_data_type_spec::TypeSpec::Bitstring;
        let (id, name, alias) = identity(register.preamble.as_ref());
        let cell_type = register
            .type_spec
            .as_ref()
            .and_then(|t| t.type_spec.as_ref());
        let declared_width = match cell_type {
            Some(Bitstring(bitstring)) => match bitstring.type_spec {
                Some(Bit(bit)) => Some(bit.bitwidth),
                _ => None,
            },
            _ => None,
        };
        Ok(Register {
            id,
            name,
            alias,
            size: register.size.into(),
            bitwidth: declared_width.map(bitwidth).transpose()?,
        })
    }
}
