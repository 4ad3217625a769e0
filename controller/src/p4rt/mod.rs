//! The controller's P4Runtime side: the switch client (entries are encoded
//! by `talaria_tables::p4runtime`) and a fake switch for tests.

pub mod client;
pub mod fake;

pub use client::{ClientError, ConnectParams, SwitchConn, WriteReport};
