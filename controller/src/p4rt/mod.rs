//! The controller's P4Runtime side: the entry codec and the switch client.

pub mod client;
pub mod codec;
pub mod fake;

pub use client::{ClientError, ConnectParams, SwitchConn, WriteReport};
pub use codec::{Codec, CodecError};
