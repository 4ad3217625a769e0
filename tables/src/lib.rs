//! The tables of p4/talaria.p4, each defined once.
//!
//! [`talaria`] holds one definition per table (key fields with widths and
//! match kinds, actions with typed parameters, ids, size), written with
//! [`p4_tables!`], which generates from it:
//! - the typed `Key`, `Action` and `Entry` of each table, and [`Entry`],
//!   [`EntryKey`], [`Table`] and [`Contents`] over all of them;
//! - the description the P4Info must match ([`def`]), checked by
//!   [`p4runtime::check`] (the switch and the controller at start-up,
//!   `tests/` against the P4 source);
//! - P4Runtime encoding and validated decoding ([`p4runtime`]).
//!
//! [`build`] has one short constructor per table entry, for tests and
//! fixtures.
//!
//! [`dump`] shows the entries of any P4Info table by name, for the REST API
//! and the CLI. switch-agent and the controller share all of it; only the
//! data path that implements a table (switch-agent's BPF maps) and the
//! planner that fills it are written per table.

pub mod build;
pub mod def;
mod define;
pub mod dump;
pub mod p4runtime;
pub mod talaria;
pub mod value;

pub use define::FieldValue;
pub use talaria::*;
