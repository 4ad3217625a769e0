//! [`p4_tables!`]: one definition per table, from which the Rust types, the
//! P4Info description and every conversion are generated, so that no list
//! of fields, actions or parameters is ever written twice.

/// A decoded key field: the value and, for an LPM field, the prefix length
/// (0 for the wildcard, which P4Runtime sends as an omitted field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldValue {
    pub value: u128,
    pub prefix_len: Option<u8>,
}

/// Defines the tables of one P4 control.
///
/// For each `table Name in module { ... }` it generates, in `module`:
/// - `Key`: one field per key field, in key order (an `lpm` field holds a
///   [`crate::value::Prefix`]);
/// - `Action`: one variant per action a table entry may run, with its
///   parameters; `actions::Variant` describe them for the P4Info;
/// - `Entry`: key and action;
/// - `DEF`: the [`crate::def::TableDef`] the P4Info must match.
///
/// And, over all tables: `Table` (the tables by name), `Entry` and
/// `EntryKey` (an entry or key of any table) and `Contents` (every table's
/// entries, ordered by key). Widths are checked at compile time against the
/// Rust types that carry them.
#[macro_export]
macro_rules! p4_tables {
    (
        control $control:literal;
        $(
            $(#[doc = $tdoc:literal])*
            table $Table:ident in $module:ident = $talias:literal, $tid:literal {
                size $size:expr;
                key {
                    $( $(#[doc = $fdoc:literal])* $field:ident: $kind:ident $FTy:ty = $fbits:literal ),+ $(,)?
                }
                actions {
                    $(
                        $(#[doc = $adoc:literal])*
                        $Action:ident = $aalias:literal, $aid:literal {
                            $( $(#[doc = $pdoc:literal])* $param:ident: $PTy:ty = $pbits:literal ),* $(,)?
                        }
                    ),+ $(,)?
                }
                default_only {
                    $( $(#[doc = $ddoc:literal])* $DAction:ident = $dalias:literal, $did:literal ),* $(,)?
                }
                default $Default:ident;
                direct_counter $dc:expr;
            }
        )+
    ) => {
        $(
            $(#[doc = $tdoc])*
            pub mod $module {
                #[allow(unused_imports)]
                use super::*;

                /// The match key, in key order.
                #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
                #[derive(serde::Serialize, serde::Deserialize)]
                pub struct Key {
                    $( $(#[doc = $fdoc])* pub $field: $crate::__field_type!($kind $FTy), )+
                }

                /// What an entry does: one of the table's non-default-only actions.
                #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
                #[derive(serde::Serialize, serde::Deserialize)]
                #[serde(tag = "action")]
                pub enum Action {
                    $(
                        $(#[doc = $adoc])*
                        #[serde(rename = $aalias)]
                        $Action { $( $(#[doc = $pdoc])* $param: $PTy, )* },
                    )+
                }

                /// One entry: key and action.
                #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
                #[derive(serde::Serialize, serde::Deserialize)]
                pub struct Entry {
                    pub key: Key,
                    pub action: Action,
                }

                /// The table's actions as the P4Info describes them.
                #[allow(non_upper_case_globals)]
                pub mod actions {
                    #[allow(unused_imports)]
                    use super::*;
                    $(
                        pub const $Action: $crate::def::ActionDef = $crate::def::ActionDef {
                            name: concat!($control, ".", $aalias),
                            id: $aid,
                            params: &[$(
                                $crate::def::ParamDef {
                                    name: stringify!($param),
                                    bits: $pbits,
                                    format: <$PTy as $crate::value::Value>::FORMAT,
                                },
                            )*],
                        };
                    )+
                    $(
                        $(#[doc = $ddoc])*
                        pub const $DAction: $crate::def::ActionDef = $crate::def::ActionDef {
                            name: concat!($control, ".", $dalias),
                            id: $did,
                            params: &[],
                        };
                    )*
                }

                /// The table as the P4Info describes it.
                pub const DEF: $crate::def::TableDef = $crate::def::TableDef {
                    name: concat!($control, ".", $talias),
                    id: $tid,
                    size: $size,
                    fields: &[$(
                        $crate::def::FieldDef {
                            name: stringify!($field),
                            bits: $fbits,
                            kind: $crate::__match_kind!($kind),
                            format: <$FTy as $crate::value::Value>::FORMAT,
                        },
                    )+],
                    actions: &[
                        $( (&actions::$Action, $crate::def::Scope::TableAndDefault), )+
                        $( (&actions::$DAction, $crate::def::Scope::DefaultOnly), )*
                    ],
                    default_action: &actions::$Default,
                    direct_counter: $dc,
                };

                // Every field fits the Rust type that carries it.
                const _: () = {
                    $( assert!(<$FTy as $crate::value::Value>::BITS >= $fbits,
                               concat!(stringify!($module), ".", stringify!($field), " is too wide")); )+
                    $($( assert!(<$PTy as $crate::value::Value>::BITS >= $pbits,
                                 concat!(stringify!($Action), ".", stringify!($param), " is too wide")); )*)+
                };

                impl Key {
                    /// The key's values in field order.
                    pub fn values(&self) -> Vec<$crate::FieldValue> {
                        vec![$( $crate::__field_value!($kind self.$field) ),+]
                    }

                    /// The key with `values` (in field order, already checked
                    /// against the widths).
                    pub fn from_values(values: &[$crate::FieldValue]) -> Option<Self> {
                        let mut v = values.iter();
                        Some(Self { $( $field: { let x = v.next()?; $crate::__field_from!($kind $FTy, x) }, )+ })
                    }
                }

                impl Action {
                    /// The action's description.
                    pub fn def(&self) -> &'static $crate::def::ActionDef {
                        match self {
                            $( Self::$Action { .. } => &actions::$Action, )+
                        }
                    }

                    /// The parameter values in declaration order.
                    pub fn params(&self) -> Vec<u128> {
                        match *self {
                            $( Self::$Action { $($param),* } => vec![$( $crate::value::Value::to_u128($param) ),*], )+
                        }
                    }

                    /// The action with P4Info id `id` and `params` (in
                    /// declaration order, already checked against the widths).
                    pub fn from_params(id: u32, params: &[u128]) -> Option<Self> {
                        #[allow(unused_mut, unused_variables)]
                        let mut p = params.iter();
                        match id {
                            $( $aid => Some(Self::$Action {
                                $( $param: <$PTy as $crate::value::Value>::from_u128(*p.next()?), )*
                            }), )+
                            _ => None,
                        }
                    }
                }

                impl From<Entry> for super::Entry {
                    fn from(e: Entry) -> Self {
                        super::Entry::$Table(e)
                    }
                }
            }
        )+

        /// Every table, by name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Table {
            $( $(#[doc = $tdoc])* $Table, )+
        }

        impl Table {
            /// Every table, in definition order.
            pub const ALL: &'static [Table] = &[$( Table::$Table ),+];

            /// The table's description.
            pub const fn def(self) -> &'static $crate::def::TableDef {
                match self {
                    $( Self::$Table => &$module::DEF, )+
                }
            }

            /// The full P4Info name.
            pub const fn name(self) -> &'static str {
                self.def().name
            }

            /// The P4Info alias (`service_v4`), as REST paths and metrics use it.
            pub fn alias(self) -> &'static str {
                self.def().alias()
            }

            pub const fn id(self) -> u32 {
                self.def().id
            }

            /// The P4 `size`.
            pub const fn size(self) -> u32 {
                self.def().size
            }

            /// The table with P4Info id `id`.
            pub fn from_id(id: u32) -> Option<Self> {
                Self::ALL.iter().copied().find(|t| t.id() == id)
            }

            /// The table with P4Info name or alias `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|t| t.name() == name || t.alias() == name)
            }
        }

        impl std::fmt::Display for Table {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.alias())
            }
        }

        /// An entry of any table.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Entry {
            $( $Table($module::Entry), )+
        }

        /// The key of an entry of any table.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum EntryKey {
            $( $Table($module::Key), )+
        }

        impl Entry {
            pub fn table(&self) -> Table {
                match self {
                    $( Self::$Table(_) => Table::$Table, )+
                }
            }

            pub fn key(&self) -> EntryKey {
                match self {
                    $( Self::$Table(e) => EntryKey::$Table(e.key), )+
                }
            }

            /// The action's description and parameter values.
            pub fn action(&self) -> (&'static $crate::def::ActionDef, Vec<u128>) {
                match self {
                    $( Self::$Table(e) => (e.action.def(), e.action.params()), )+
                }
            }

            /// The entry of `table` with `key` values and action `action_id`
            /// with `params`; `None` when the action is not an entry action
            /// of the table or a value is missing.
            pub fn from_parts(
                table: Table,
                key: &[$crate::FieldValue],
                action_id: u32,
                params: &[u128],
            ) -> Option<Self> {
                Some(match table {
                    $( Table::$Table => Self::$Table($module::Entry {
                        key: $module::Key::from_values(key)?,
                        action: $module::Action::from_params(action_id, params)?,
                    }), )+
                })
            }
        }

        impl EntryKey {
            pub fn table(&self) -> Table {
                match self {
                    $( Self::$Table(_) => Table::$Table, )+
                }
            }

            /// The values in field order.
            pub fn values(&self) -> Vec<$crate::FieldValue> {
                match self {
                    $( Self::$Table(k) => k.values(), )+
                }
            }

            /// The key of `table` with `values`.
            pub fn from_values(table: Table, values: &[$crate::FieldValue]) -> Option<Self> {
                Some(match table {
                    $( Table::$Table => Self::$Table($module::Key::from_values(values)?), )+
                })
            }
        }

        /// The entries of every table, ordered by key: a switch's tables as
        /// a controller wants or reads them, or an in-memory switch.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Contents {
            $( pub $module: std::collections::BTreeMap<$module::Key, $module::Action>, )+
        }

        impl Contents {
            /// Adds `entry`, returning the entry it replaced.
            pub fn insert(&mut self, entry: Entry) -> Option<Entry> {
                match entry {
                    $( Entry::$Table(e) => self.$module.insert(e.key, e.action)
                        .map(|action| Entry::$Table($module::Entry { key: e.key, action })), )+
                }
            }

            /// Removes the entry with `key`, returning it.
            pub fn remove(&mut self, key: &EntryKey) -> Option<Entry> {
                match key {
                    $( EntryKey::$Table(k) => self.$module.remove(k)
                        .map(|action| Entry::$Table($module::Entry { key: *k, action })), )+
                }
            }

            /// The entry with `key`.
            pub fn get(&self, key: &EntryKey) -> Option<Entry> {
                match key {
                    $( EntryKey::$Table(k) => self.$module.get(k)
                        .map(|action| Entry::$Table($module::Entry { key: *k, action: *action })), )+
                }
            }

            /// Entries in `table`.
            pub fn len(&self, table: Table) -> usize {
                match table {
                    $( Table::$Table => self.$module.len(), )+
                }
            }

            /// Entries in all tables.
            pub fn total(&self) -> usize {
                Table::ALL.iter().map(|t| self.len(*t)).sum()
            }

            /// Whether every table is empty.
            pub fn is_empty(&self) -> bool {
                self.total() == 0
            }

            /// Entries per table.
            pub fn counts(&self) -> std::collections::BTreeMap<Table, usize> {
                Table::ALL.iter().map(|t| (*t, self.len(*t))).collect()
            }

            /// Rebuilds every map in one pass, so its nodes are full: maps
            /// filled by scattered inserts are about half empty.
            pub fn compact(&mut self) {
                $( self.$module = std::mem::take(&mut self.$module).into_iter().collect(); )+
            }

            /// The entries of `table` in key order, starting after `after`
            /// (a key of the same table; all of them for `None`).
            pub fn entries_after<'a>(
                &'a self,
                table: Table,
                after: Option<&EntryKey>,
            ) -> Box<dyn Iterator<Item = Entry> + 'a> {
                use std::ops::Bound;
                match table {
                    $( Table::$Table => {
                        let lower = match after {
                            Some(EntryKey::$Table(k)) => Bound::Excluded(*k),
                            _ => Bound::Unbounded,
                        };
                        Box::new(self.$module.range((lower, Bound::Unbounded)).map(|(k, a)| {
                            Entry::$Table($module::Entry { key: *k, action: *a })
                        }))
                    } )+
                }
            }

            /// The entries of `table` in key order.
            pub fn entries(&self, table: Table) -> Box<dyn Iterator<Item = Entry> + '_> {
                self.entries_after(table, None)
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __field_type {
    (exact $t:ty) => { $t };
    (lpm $t:ty) => { $crate::value::Prefix<$t> };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __match_kind {
    (exact) => {
        $crate::def::MatchKind::Exact
    };
    (lpm) => {
        $crate::def::MatchKind::Lpm
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __field_value {
    (exact $v:expr) => {
        $crate::FieldValue {
            value: $crate::value::Value::to_u128($v),
            prefix_len: None,
        }
    };
    (lpm $v:expr) => {
        $crate::FieldValue {
            value: $crate::value::Value::to_u128($v.addr),
            prefix_len: Some($v.len),
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __field_from {
    (exact $t:ty, $v:expr) => {
        <$t as $crate::value::Value>::from_u128($v.value)
    };
    (lpm $t:ty, $v:expr) => {
        $crate::value::Prefix {
            addr: <$t as $crate::value::Value>::from_u128($v.value),
            len: $v.prefix_len.unwrap_or(0),
        }
    };
}
