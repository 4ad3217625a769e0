//! The crate's one error type.

use std::{fmt, path::PathBuf};

use crate::google::rpc::Code;

/// Result with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A P4Info (or other) file could not be read.
    #[error("cannot read `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The input is not valid protobuf text format for the expected message.
    #[error("invalid protobuf text format")]
    ParseText {
        #[source]
        source: prost_reflect::text_format::ParseError,
    },

    /// The input is not a valid binary encoding of the expected message.
    #[error("invalid protobuf binary encoding")]
    ParseBinary {
        #[source]
        source: prost::DecodeError,
    },

    /// The input is not valid protobuf JSON for the expected message.
    #[error("invalid protobuf JSON")]
    ParseJson {
        #[source]
        source: serde_json::Error,
    },

    /// The message has no JSON form, e.g. it holds a `google.protobuf.Any`
    /// of a type this crate does not know.
    #[error("cannot print message as protobuf JSON")]
    WriteJson {
        #[source]
        source: serde_json::Error,
    },

    /// A message parsed through reflection did not convert to its prost
    /// type; the generated code and the descriptors disagree (a bug here).
    #[error("parsed message does not convert to its generated type")]
    Transcode {
        #[source]
        source: prost::DecodeError,
    },

    /// No object of this kind has this name (full name or alias).
    #[error("unknown {kind} `{name}` in {scope} (known: {})", list(known))]
    UnknownName {
        kind: Kind,
        name: String,
        /// Where we looked: "P4Info", or e.g. "table `Ingress.route`".
        scope: String,
        /// The names that do exist there, sorted.
        known: Vec<String>,
    },

    /// No object of this kind has this id.
    #[error("unknown {kind} id {id} ({id:#010x}) in {scope}")]
    UnknownId { kind: Kind, id: u32, scope: String },

    /// Two objects of one kind share a name; the P4Info is malformed.
    #[error("P4Info has more than one {kind} named `{name}`")]
    DuplicateName { kind: Kind, name: String },

    /// Two objects of one kind share an id; the P4Info is malformed.
    #[error("P4Info has more than one {kind} with id {id} ({id:#010x})")]
    DuplicateId { kind: Kind, id: u32 },

    /// A bytestring of length zero, which P4Runtime always rejects.
    #[error("empty bytestring")]
    EmptyBytestring,

    /// A bytestring whose value needs more bits than its field has.
    #[error("value needs {bits_needed} bits, more than bit<{bitwidth}> holds")]
    BytestringOutOfRange { bits_needed: u64, bitwidth: u32 },

    /// A bytestring whose value fits its field but not in a `u128`.
    #[error("value needs {bits_needed} bits, more than a u128 holds")]
    ExceedsU128 { bits_needed: u64 },

    /// A bitwidth that is zero or negative where a P4 integer needs one.
    #[error("invalid bitwidth {bitwidth}")]
    InvalidBitwidth { bitwidth: i64 },
}

impl Error {
    /// The gRPC status code a P4Runtime server answers with for this error.
    ///
    /// Bytestring errors are `OUT_OF_RANGE`, as the P4Runtime spec
    /// ("Bytestrings") requires; unknown names and ids are `NOT_FOUND`.
    pub fn code(&self) -> Code {
        match self {
            Error::EmptyBytestring
            | Error::BytestringOutOfRange { .. }
            | Error::ExceedsU128 { .. } => Code::OutOfRange,
            Error::UnknownName { .. } | Error::UnknownId { .. } => Code::NotFound,
            Error::ParseText { .. }
            | Error::ParseBinary { .. }
            | Error::ParseJson { .. }
            | Error::DuplicateName { .. }
            | Error::DuplicateId { .. }
            | Error::InvalidBitwidth { .. } => Code::InvalidArgument,
            Error::Io { .. } | Error::WriteJson { .. } | Error::Transcode { .. } => Code::Internal,
        }
    }
}

/// The kinds of P4Info objects that names and ids resolve to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Table,
    Action,
    ActionProfile,
    Counter,
    DirectCounter,
    Meter,
    DirectMeter,
    Register,
    MatchField,
    ActionParam,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Table => "table",
            Kind::Action => "action",
            Kind::ActionProfile => "action profile",
            Kind::Counter => "counter",
            Kind::DirectCounter => "direct counter",
            Kind::Meter => "meter",
            Kind::DirectMeter => "direct meter",
            Kind::Register => "register",
            Kind::MatchField => "match field",
            Kind::ActionParam => "action parameter",
        })
    }
}

/// Lists names for an error message, cut short so that a large P4Info does
/// not flood the log.
fn list(names: &[String]) -> String {
    const SHOWN: usize = 10;
    match names.len() {
        0 => "none".to_owned(),
        n if n <= SHOWN => names.join(", "),
        n => format!("{}, … ({} more)", names[..SHOWN].join(", "), n - SHOWN),
    }
}
