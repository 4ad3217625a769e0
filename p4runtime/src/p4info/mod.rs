//! P4Info: loading it in any of its three encodings, printing it, and the
//! [`Schema`] that resolves names to ids.
//!
//! p4c writes P4Info as protobuf text (`--p4runtime-files x.p4info.txtpb`),
//! binary (`x.p4info.pb`) or JSON (`x.p4info.json`); all three load here.

mod index;
mod schema;

use std::path::Path;

use prost::Message;

pub use self::index::{Index, Named};
pub use self::schema::{
    Action, ActionProfile, ActionRef, ActionScope, Counter, CounterUnit, DirectCounter,
    DirectMeter, MatchField, MatchType, Meter, MeterUnit, Param, Register, Schema, Table,
};
pub use crate::p4::config::v1::P4Info;
use crate::{reflect, Error, Result};

/// Full proto name of [`P4Info`], for reflection.
const P4INFO: &str = "p4.config.v1.P4Info";

/// An encoding of a P4Info file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Protobuf text format.
    Text,
    /// Protobuf binary wire format.
    Binary,
    /// Protobuf JSON mapping.
    Json,
}

impl Format {
    /// Guesses the encoding from a file name as p4c and P4Runtime tools name
    /// them: `.txt`, `.txtpb`, `.pb.txt` → text; `.json` → JSON; else binary.
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("txt" | "txtpb") => Format::Text,
            Some("json") => Format::Json,
            _ => Format::Binary,
        }
    }
}

/// Parses a P4Info in protobuf text format, as p4c emits it.
pub fn parse_text(text: &str) -> Result<P4Info> {
    reflect::from_text(P4INFO, text)
}

/// Parses a P4Info in the protobuf binary wire format.
pub fn parse_binary(bytes: &[u8]) -> Result<P4Info> {
    P4Info::decode(bytes).map_err(|source| Error::ParseBinary { source })
}

/// Parses a P4Info in the protobuf JSON mapping.
pub fn parse_json(json: &str) -> Result<P4Info> {
    reflect::from_json(P4INFO, json)
}

/// Reads a P4Info file, in the encoding [`Format::from_path`] picks.
pub fn load(path: impl AsRef<Path>) -> Result<P4Info> {
    let path = path.as_ref();
    let io_error = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    match Format::from_path(path) {
        Format::Text => parse_text(&std::fs::read_to_string(path).map_err(io_error)?),
        Format::Json => parse_json(&std::fs::read_to_string(path).map_err(io_error)?),
        Format::Binary => parse_binary(&std::fs::read(path).map_err(io_error)?),
    }
}

/// Prints a P4Info in protobuf text format exactly as p4c writes it,
/// header comment included, so that the two can be diffed.
pub fn to_text(p4info: &P4Info) -> String {
    format!("{TEXT_HEADER}{}", reflect::to_text(P4INFO, p4info))
}

/// The comment p4c puts at the top of a text P4Info, naming its schema.
const TEXT_HEADER: &str =
    "# proto-file: p4/config/v1/p4info.proto\n# proto-message: p4.config.v1.P4Info\n\n";

/// Prints a P4Info in the protobuf JSON mapping. Fails only if it holds a
/// `google.protobuf.Any` of a type this crate does not know.
pub fn to_json(p4info: &P4Info) -> Result<String> {
    reflect::to_json(P4INFO, p4info)
}
