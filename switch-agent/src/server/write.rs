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
use talaria_tables::{
    p4runtime::{decode, ActionUse, DecodeError, Decoded},
    Table,
};
use tonic::{Code, Status};

use crate::entry::{Target, TargetError};

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

impl From<DecodeError> for UpdateError {
    fn from(e: DecodeError) -> Self {
        Self::new(Code::from_i32(e.code() as i32), e.to_string())
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
pub fn apply(target: &dyn Target, update: &Update) -> Result<(), UpdateError> {
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
    let table = Table::from_id(te.table_id).ok_or(DecodeError::UnknownTable(te.table_id))?;
    if te.idle_timeout_ns != 0 {
        return Err(UpdateError::new(
            Code::InvalidArgument,
            format!("{}: the table has no idle timeout", table.name()),
        ));
    }
    if te.meter_config.is_some() || te.meter_counter_data.is_some() {
        return Err(UpdateError::new(
            Code::InvalidArgument,
            format!("{}: the table has no direct meter", table.name()),
        ));
    }
    if !te.metadata.is_empty() {
        return Err(UpdateError::new(
            Code::Unimplemented,
            format!(
                "{}: entry metadata is not stored by this switch",
                table.name()
            ),
        ));
    }
    let action_use = if kind == UpdateType::Delete {
        ActionUse::Ignored
    } else {
        ActionUse::Required
    };
    match (decode(te, action_use)?, kind) {
        (Decoded::Entry(e), UpdateType::Insert) => target.insert(&e)?,
        (Decoded::Entry(e), UpdateType::Modify) => target.modify(&e)?,
        (Decoded::Key(k), UpdateType::Delete) => target.delete(&k)?,
        // The data plane already runs the initial default action.
        (Decoded::InitialDefault(_), UpdateType::Modify) => {}
        (Decoded::InitialDefault(_), _) => {
            return Err(UpdateError::new(
                Code::InvalidArgument,
                format!("{}: the default entry can only be modified", table.name()),
            ))
        }
        // `decode` answers an entry when the action is required and a key
        // when it is ignored.
        (d, kind) => {
            return Err(UpdateError::new(
                Code::Internal,
                format!("{kind:?} decoded as {d:?}"),
            ))
        }
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

#[cfg(test)]
mod tests {
    use talaria_p4rt::p4::v1::{table_action, Entity, TableEntry};
    use talaria_tables::{
        backend,
        p4runtime::{encode, encode_default, encode_key},
        switch_addr, Entry,
    };

    use super::*;
    use crate::memory::MemoryTarget;

    fn write(t: &MemoryTarget, kind: UpdateType, te: TableEntry) -> Result<(), UpdateError> {
        apply(
            t,
            &Update {
                r#type: kind as i32,
                entity: Some(Entity {
                    entity: Some(entity::Entity::TableEntry(te)),
                }),
            },
        )
    }

    fn addr(last: u8) -> Entry {
        Entry::SwitchAddr(switch_addr::Entry {
            key: switch_addr::Key {
                dst_addr: [192, 0, 2, last].into(),
            },
            action: switch_addr::Action::TerminateTunnel {},
        })
    }

    #[test]
    fn writes_against_the_in_memory_target() {
        let t = MemoryTarget::with_sizes(|k| if k == Table::SwitchAddr { 1 } else { 100 });
        let code = |r: Result<(), UpdateError>| r.unwrap_err().code;
        write(&t, UpdateType::Insert, encode(&addr(1))).unwrap();
        assert_eq!(
            code(write(&t, UpdateType::Insert, encode(&addr(1)))),
            Code::AlreadyExists
        );
        assert_eq!(
            code(write(&t, UpdateType::Insert, encode(&addr(2)))),
            Code::ResourceExhausted
        );
        assert_eq!(
            code(write(&t, UpdateType::Modify, encode(&addr(2)))),
            Code::NotFound
        );
        assert_eq!(
            code(write(&t, UpdateType::Delete, encode_key(&addr(2).key()))),
            Code::NotFound
        );
        assert_eq!(
            code(write(&t, UpdateType::Unspecified, encode(&addr(2)))),
            Code::InvalidArgument
        );
        let mut unknown = encode(&addr(2));
        unknown.table_id = 0x0200_00ff;
        assert_eq!(code(write(&t, UpdateType::Insert, unknown)), Code::NotFound);
        let mut timed = encode(&addr(2));
        timed.idle_timeout_ns = 1;
        assert_eq!(
            code(write(&t, UpdateType::Insert, timed)),
            Code::InvalidArgument
        );
        // DELETE names the key; an action, if any, is ignored.
        write(&t, UpdateType::Delete, encode(&addr(1))).unwrap();
        assert_eq!(t.len(Table::SwitchAddr), 0);

        // The default entry: MODIFY to the initial default is a no-op,
        // anything else is refused.
        let mut d = encode_default(Table::Backend);
        write(&t, UpdateType::Modify, d.clone()).unwrap();
        assert_eq!(
            code(write(&t, UpdateType::Insert, d.clone())),
            Code::InvalidArgument
        );
        if let Some(table_action::Type::Action(a)) =
            d.action.as_mut().and_then(|a| a.r#type.as_mut())
        {
            a.action_id = backend::actions::SetBackend.id;
        }
        assert_eq!(code(write(&t, UpdateType::Modify, d)), Code::Unimplemented);
        assert_eq!(t.len(Table::Backend), 0);
    }

    #[test]
    fn batch_errors_round_trip_through_the_status_details() {
        let results = [
            Ok(()),
            Err(UpdateError::new(
                Code::AlreadyExists,
                "entry already exists",
            )),
        ];
        let status = batch_status(&results);
        assert_eq!(status.code(), Code::Unknown);
        assert!(status.message().contains("1 of 2 updates failed"));
        let got = decode_batch_status(&status).unwrap();
        assert_eq!(got[0].code, Code::Ok);
        assert_eq!(got[1], results[1].clone().unwrap_err());
    }
}
