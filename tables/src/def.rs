//! Descriptions of tables, actions and counters: what the P4Info says about
//! them, written once, next to their Rust types, by [`crate::p4_tables!`].

use crate::value::Format;

/// How a key field is matched (the P4 `match_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchKind {
    Exact,
    /// Longest prefix match.
    Lpm,
}

impl MatchKind {
    /// The P4Info `MatchField.MatchType` value.
    pub const fn p4info_value(self) -> i32 {
        match self {
            Self::Exact => 2,
            Self::Lpm => 3,
        }
    }

    /// The P4 `match_kind` name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Lpm => "lpm",
        }
    }
}

/// A key field. Its P4Info id is its position + 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDef {
    /// The key's `@name`.
    pub name: &'static str,
    pub bits: u32,
    pub kind: MatchKind,
    pub format: Format,
}

/// An action parameter. Its P4Info id is its position + 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamDef {
    pub name: &'static str,
    pub bits: u32,
    pub format: Format,
}

/// An action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionDef {
    /// The full P4Info name, `TalariaIngress.<alias>`.
    pub name: &'static str,
    pub id: u32,
    pub params: &'static [ParamDef],
}

/// Where a table may use an action (P4Info `ActionRef.scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// In entries and as the default action.
    TableAndDefault,
    /// Only as the default action (`@defaultonly`).
    DefaultOnly,
}

/// A table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableDef {
    /// The full P4Info name.
    pub name: &'static str,
    pub id: u32,
    /// The P4 `size`: how many entries the switch holds.
    pub size: u32,
    pub fields: &'static [FieldDef],
    /// Every action of the table's `actions` list, in order.
    pub actions: &'static [(&'static ActionDef, Scope)],
    /// The initial default action (no arguments, not `const`).
    pub default_action: &'static ActionDef,
    /// The direct counter attached to the table.
    pub direct_counter: Option<&'static CounterDef>,
}

/// What a counter counts (P4Info `CounterSpec.Unit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterUnit {
    Packets,
    PacketsAndBytes,
}

impl CounterUnit {
    /// The P4Info `CounterSpec.Unit` value.
    pub const fn p4info_value(self) -> i32 {
        match self {
            Self::Packets => 2,
            Self::PacketsAndBytes => 3,
        }
    }
}

/// An indirect counter (an array) or a direct counter (one cell per entry
/// of its table, `size` 0 here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterDef {
    pub name: &'static str,
    pub id: u32,
    pub size: u32,
    pub unit: CounterUnit,
}

/// The part of a full P4Info name after the control: `service_v4`.
pub fn alias(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

impl TableDef {
    /// The P4Info alias.
    pub fn alias(&self) -> &'static str {
        alias(self.name)
    }

    /// The action with P4Info id `id` and where the table allows it.
    pub fn action(&self, id: u32) -> Option<(&'static ActionDef, Scope)> {
        self.actions.iter().copied().find(|(a, _)| a.id == id)
    }

    /// The position of the key field with P4Info id `id`.
    pub fn field_index(&self, id: u32) -> Option<usize> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        (i < self.fields.len()).then_some(i)
    }
}

impl ActionDef {
    /// The P4Info alias.
    pub fn alias(&self) -> &'static str {
        alias(self.name)
    }

    /// The position of the parameter with P4Info id `id`.
    pub fn param_index(&self, id: u32) -> Option<usize> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        (i < self.params.len()).then_some(i)
    }
}

impl CounterDef {
    /// The P4Info alias.
    pub fn alias(&self) -> &'static str {
        alias(self.name)
    }
}
