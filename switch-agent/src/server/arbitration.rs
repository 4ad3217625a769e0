//! Client arbitration on StreamChannel (P4Runtime §5.3 / §6.4).
//!
//! Every stream that has sent a `MasterArbitrationUpdate` is a client of the
//! default role with an election id. The client with the highest election
//! id is the primary (as in PI/bmv2: when the primary's stream ends, the
//! next highest takes over). Each client gets an arbitration reply at once;
//! when the primary changes, every client gets one. The primary's reply has
//! status OK, the others ALREADY_EXISTS, each carrying the primary's
//! election id. Only the default role (empty name) is supported.

use std::collections::BTreeMap;

use talaria_p4rt::{
    google::rpc,
    p4::v1::{
        stream_message_response, MasterArbitrationUpdate, Role, StreamMessageResponse, Uint128,
    },
};
use tokio::sync::mpsc::UnboundedSender;
use tonic::{Code, Status};

/// The sending half of one stream's responses.
pub type StreamTx = UnboundedSender<Result<StreamMessageResponse, Status>>;

/// A 128-bit election id.
pub fn election_id(id: Option<&Uint128>) -> Option<u128> {
    id.map(|u| (u128::from(u.high) << 64) | u128::from(u.low))
}

fn uint128(v: u128) -> Uint128 {
    Uint128 {
        high: (v >> 64) as u64,
        low: v as u64,
    }
}

/// Checks that a request names the default role: the only one this switch
/// has (P4Runtime: an unknown role is NOT_FOUND).
pub fn check_role(role: &str) -> Result<(), Status> {
    if role.is_empty() {
        Ok(())
    } else {
        Err(Status::not_found(format!(
            "role {role:?} is unknown: this switch supports only the default role"
        )))
    }
}

struct Client {
    election_id: u128,
    tx: StreamTx,
}

/// The clients of one device.
pub struct Arbitration {
    device_id: u64,
    clients: BTreeMap<u64, Client>,
    primary: Option<u64>,
}

impl Arbitration {
    pub fn new(device_id: u64) -> Self {
        Self {
            device_id,
            clients: BTreeMap::new(),
            primary: None,
        }
    }

    /// Handles a `MasterArbitrationUpdate` from stream `stream`. On error
    /// the caller ends the stream with the returned status.
    pub fn update(
        &mut self,
        stream: u64,
        update: &MasterArbitrationUpdate,
        tx: &StreamTx,
    ) -> Result<(), Status> {
        if update.device_id != self.device_id {
            return Err(Status::not_found(format!(
                "unknown device id {} (this switch is device {})",
                update.device_id, self.device_id
            )));
        }
        if let Some(role) = &update.role {
            #[allow(deprecated)]
            let id = role.id;
            if id != 0 || role.config.is_some() {
                return Err(Status::not_found(
                    "role ids and role configs are not supported: only the default role",
                ));
            }
            check_role(&role.name)?;
        }
        let Some(id) = election_id(update.election_id.as_ref()) else {
            return Err(Status::invalid_argument(
                "arbitration without an election id",
            ));
        };
        if self
            .clients
            .iter()
            .any(|(s, c)| *s != stream && c.election_id == id)
        {
            return Err(Status::invalid_argument(format!(
                "election id {id} is already used by another client"
            )));
        }
        self.clients.insert(
            stream,
            Client {
                election_id: id,
                tx: tx.clone(),
            },
        );
        if self.elect() {
            self.notify_all();
        } else {
            self.notify(stream);
        }
        Ok(())
    }

    /// Forgets a stream that ended; a new primary is announced to everyone.
    pub fn remove(&mut self, stream: u64) {
        if self.clients.remove(&stream).is_some() && self.elect() {
            self.notify_all();
        }
    }

    /// Whether stream `stream` has arbitrated.
    pub fn knows(&self, stream: u64) -> bool {
        self.clients.contains_key(&stream)
    }

    /// The primary's election id.
    pub fn primary_election_id(&self) -> Option<u128> {
        self.primary
            .and_then(|s| self.clients.get(&s))
            .map(|c| c.election_id)
    }

    /// Checks that a Write or SetForwardingPipelineConfig comes from the
    /// primary: the request's election id must be the primary's.
    pub fn check_primary(&self, election: Option<&Uint128>) -> Result<(), Status> {
        let Some(primary) = self.primary_election_id() else {
            return Err(Status::permission_denied(
                "no primary client: open a StreamChannel and arbitrate first",
            ));
        };
        match election_id(election) {
            Some(id) if id == primary => Ok(()),
            Some(id) => Err(Status::permission_denied(format!(
                "election id {id} is not the primary's ({primary})"
            ))),
            None => Err(Status::permission_denied("request has no election id")),
        }
    }

    /// Recomputes the primary; true when it changed.
    fn elect(&mut self) -> bool {
        let best = self
            .clients
            .iter()
            .max_by_key(|(_, c)| c.election_id)
            .map(|(s, _)| *s);
        let changed = best != self.primary;
        self.primary = best;
        changed
    }

    fn reply(&self, stream: u64) -> StreamMessageResponse {
        let (code, message) = if self.primary == Some(stream) {
            (Code::Ok, "primary")
        } else if self.primary.is_some() {
            (Code::AlreadyExists, "backup: another client is primary")
        } else {
            (Code::NotFound, "backup: no primary")
        };
        StreamMessageResponse {
            update: Some(stream_message_response::Update::Arbitration(
                MasterArbitrationUpdate {
                    device_id: self.device_id,
                    role: None::<Role>,
                    election_id: self.primary_election_id().map(uint128),
                    status: Some(rpc::Status {
                        code: code as i32,
                        message: message.into(),
                        details: vec![],
                    }),
                },
            )),
        }
    }

    fn notify(&self, stream: u64) {
        if let Some(c) = self.clients.get(&stream) {
            // A closed receiver means the stream is ending; remove() follows.
            let _ = c.tx.send(Ok(self.reply(stream)));
        }
    }

    fn notify_all(&self) {
        for s in self.clients.keys() {
            self.notify(*s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    fn arb(id: u128, device: u64) -> MasterArbitrationUpdate {
        MasterArbitrationUpdate {
            device_id: device,
            election_id: Some(uint128(id)),
            ..Default::default()
        }
    }

    fn last_code(rx: &mut UnboundedReceiver<Result<StreamMessageResponse, Status>>) -> Option<i32> {
        let mut code = None;
        while let Ok(m) = rx.try_recv() {
            if let Some(stream_message_response::Update::Arbitration(a)) = m.unwrap().update {
                code = Some(a.status.unwrap().code);
            }
        }
        code
    }

    #[test]
    fn highest_election_id_is_primary_and_changes_are_announced() {
        let mut a = Arbitration::new(1);
        let (tx1, mut rx1) = unbounded_channel();
        let (tx2, mut rx2) = unbounded_channel();
        a.update(1, &arb(5, 1), &tx1).unwrap();
        assert_eq!(last_code(&mut rx1), Some(Code::Ok as i32));
        a.update(2, &arb(3, 1), &tx2).unwrap();
        assert_eq!(last_code(&mut rx2), Some(Code::AlreadyExists as i32));
        assert_eq!(
            last_code(&mut rx1),
            None,
            "no change, no news for the primary"
        );
        a.check_primary(Some(&uint128(5))).unwrap();
        assert_eq!(
            a.check_primary(Some(&uint128(3))).unwrap_err().code(),
            Code::PermissionDenied
        );
        a.update(2, &arb(9, 1), &tx2).unwrap();
        assert_eq!(last_code(&mut rx2), Some(Code::Ok as i32));
        assert_eq!(last_code(&mut rx1), Some(Code::AlreadyExists as i32));
        a.remove(2);
        assert_eq!(last_code(&mut rx1), Some(Code::Ok as i32));
        a.check_primary(Some(&uint128(5))).unwrap();
    }

    #[test]
    fn wrong_device_duplicate_ids_and_roles_are_refused() {
        let mut a = Arbitration::new(1);
        let (tx, _rx) = unbounded_channel();
        assert_eq!(
            a.update(1, &arb(1, 2), &tx).unwrap_err().code(),
            Code::NotFound
        );
        a.update(1, &arb(1, 1), &tx).unwrap();
        assert_eq!(
            a.update(2, &arb(1, 1), &tx).unwrap_err().code(),
            Code::InvalidArgument
        );
        let mut u = arb(2, 1);
        u.role = Some(Role {
            name: "sdn".into(),
            ..Default::default()
        });
        assert_eq!(a.update(3, &u, &tx).unwrap_err().code(), Code::NotFound);
        assert!(!a.knows(3));
    }
}
