//! The Write RPC: INSERT, MODIFY and DELETE of table entries with
//! CONTINUE_ON_ERROR atomicity.
//!
//! When any update fails, the RPC fails with gRPC status UNKNOWN and a
//! `grpc-status-details-bin` trailer holding a `google.rpc.Status` whose
//! details are one `Any(p4.v1.Error)` per update, in update order, OK ones
//! included with canonical code 0: exactly what PI/bmv2 send, and what
//! p4runtime-shell and finsy decode.

use bytes::Bytes;
use prost::Message;
use talaria_p4rt::{
    google::rpc,
    p4::v1::{
        entity, update::Type as UpdateType, write_request::Atomicity, Error as P4Error, Update,
        WriteRequest,
    },
};
use tonic::{Code, Status};

use crate::{
    entry::{Target, TargetError},
    layout::Layout,
    translate::{ActionUse, Decoded, TranslateError},
};

/// The type URL of a packed `p4.v1.Error`.
pub const P4_ERROR_TYPE_URL: &str = "type.googleapis.com/p4.v1.Error";

/// One update's outcome: its canonical code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateError {
    pub code: Code,
    pub message: String,
}

impl UpdateError {
    fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<TranslateError> for UpdateError {
    fn from(e: TranslateError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<TargetError> for UpdateError {
    fn from(e: TargetError) -> Self {
        let code = match &e {
            TargetError::AlreadyExists => Code::AlreadyExists,
            TargetError::NotFound => Code::NotFound,
            TargetError::Full { .. } => Code::ResourceExhausted,
            TargetError::Invalid(_) => Code::InvalidArgument,
            TargetError::Map(_) => Code::Internal,
        };
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        Self::new(code, message)
    }
}

/// Checks the request-level fields that do not depend on arbitration or
/// the pipeline: atomicity.
pub fn check_atomicity(req: &WriteRequest) -> Result<(), Status> {
    match Atomicity::try_from(req.atomicity) {
        Ok(Atomicity::ContinueOnError) => Ok(()),
        Ok(a) => Err(Status::unimplemented(format!(
            "atomicity {} is not supported: only CONTINUE_ON_ERROR",
            a.as_str_name()
        ))),
        Err(_) => Err(Status::invalid_argument(format!(
            "unknown atomicity {}",
            req.atomicity
        ))),
    }
}

/// Applies one update to `target`.
pub fn apply(layout: &Layout, target: &dyn Target, update: &Update) -> Result<(), UpdateError> {
    let kind = UpdateType::try_from(update.r#type).unwrap_or(UpdateType::Unspecified);
    let te = match update.entity.as_ref().and_then(|e| e.entity.as_ref()) {
        Some(entity::Entity::TableEntry(te)) => te,
        Some(_) => {
            return Err(UpdateError::new(
                Code::Unimplemented,
                "only table entries can be written",
            ))
        }
        None => {
            return Err(UpdateError::new(
                Code::InvalidArgument,
                "update has no entity",
            ))
        }
    };
    if kind == UpdateType::Unspecified {
        return Err(UpdateError::new(
            Code::InvalidArgument,
            "update type is unspecified",
        ));
    }
    let table = layout.table_for(te)?;
    if te.idle_timeout_ns != 0 {
        return Err(UpdateError::new(
            Code::InvalidArgument,
            format!("{}: the table has no idle timeout", table.name),
        ));
    }
    if te.meter_config.is_some() || te.meter_counter_data.is_some() {
        return Err(UpdateError::new(
            Code::InvalidArgument,
            format!("{}: the table has no direct meter", table.name),
        ));
    }
    if !te.metadata.is_empty() {
        return Err(UpdateError::new(
            Code::Unimplemented,
            format!(
                "{}: entry metadata is not stored by this switch",
                table.name
            ),
        ));
    }
    let action_use = if kind == UpdateType::Delete {
        ActionUse::Ignored
    } else {
        ActionUse::Required
    };
    match (layout.decode(te, action_use)?, kind) {
        (Decoded::Entry(e), UpdateType::Insert) => target.insert(&e)?,
        (Decoded::Entry(e), UpdateType::Modify) => target.modify(&e)?,
        (Decoded::Entry(e), UpdateType::Delete) => target.delete(&e)?,
        // The data plane already runs the initial default action.
        (Decoded::InitialDefault(_), UpdateType::Modify) => {}
        (Decoded::InitialDefault(_), _) => {
            return Err(UpdateError::new(
                Code::InvalidArgument,
                format!("{}: the default entry can only be modified", table.name),
            ))
        }
        (Decoded::Entry(_), UpdateType::Unspecified) => unreachable!("checked above"),
    }
    Ok(())
}

/// The gRPC status of a batch in which some updates failed: UNKNOWN with
/// one `p4.v1.Error` per update in `grpc-status-details-bin`.
pub fn batch_status(results: &[Result<(), UpdateError>]) -> Status {
    let failed = results.iter().filter(|r| r.is_err()).count();
    let details = results
        .iter()
        .map(|r| {
            let e = match r {
                Ok(()) => P4Error::default(),
                Err(e) => P4Error {
                    canonical_code: e.code as i32,
                    message: e.message.clone(),
                    ..Default::default()
                },
            };
            prost_types::Any {
                type_url: P4_ERROR_TYPE_URL.into(),
                value: e.encode_to_vec(),
            }
        })
        .collect();
    let message = match results.iter().find_map(|r| r.as_ref().err()) {
        Some(first) if failed == 1 => {
            format!("1 of {} updates failed: {}", results.len(), first.message)
        }
        _ => format!("{failed} of {} updates failed", results.len()),
    };
    let status = rpc::Status {
        code: Code::Unknown as i32,
        message: message.clone(),
        details,
    };
    Status::with_details(Code::Unknown, message, Bytes::from(status.encode_to_vec()))
}

/// Decodes the per-update errors of a failed Write, as a client does.
/// `None` when the status carries no P4Runtime error details.
pub fn decode_batch_status(status: &Status) -> Option<Vec<UpdateError>> {
    let s = rpc::Status::decode(status.details()).ok()?;
    s.details
        .iter()
        .map(|any| {
            if any.type_url != P4_ERROR_TYPE_URL {
                return None;
            }
            let e = P4Error::decode(any.value.as_slice()).ok()?;
            Some(UpdateError {
                code: Code::from_i32(e.canonical_code),
                message: e.message,
            })
        })
        .collect()
}
