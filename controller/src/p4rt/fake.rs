//! A small in-memory P4Runtime server, for tests and demos without a
//! switch. It keeps exact P4Runtime write semantics where the controller
//! depends on them: INSERT of an existing key is `ALREADY_EXISTS`, MODIFY or
//! DELETE of a missing key is `NOT_FOUND`, failures come back as a
//! `google.rpc.Status` with one `p4.v1.Error` per update in
//! `grpc-status-details-bin`. It answers arbitration with OK (every client
//! is primary), stores the pipeline, and serves wildcard table reads. It does
//! not check values against the P4Info.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
};

use futures::{SinkExt, Stream, StreamExt};
use prost::Message;
use talaria_p4rt::{
    google::rpc,
    p4::v1::{self, p4_runtime_server::P4Runtime},
};
use tonic::{Request, Response, Status, Streaming};

/// Shared state of the fake switch.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Committed pipeline.
    pub pipeline: Option<v1::ForwardingPipelineConfig>,
    /// table id → encoded match → entry.
    pub tables: BTreeMap<u32, BTreeMap<Vec<u8>, v1::TableEntry>>,
    /// Updates applied (successful INSERT/MODIFY/DELETE).
    pub applied: u64,
    /// Write RPCs received.
    pub write_rpcs: u64,
}

/// The fake P4Runtime service.
#[derive(Debug, Clone, Default)]
pub struct FakeSwitch {
    /// State, inspectable by tests.
    pub state: Arc<Mutex<FakeState>>,
}

fn match_key(te: &v1::TableEntry) -> Vec<u8> {
    let mut m = te.r#match.clone();
    m.sort_by_key(|f| f.field_id);
    let mut out = Vec::new();
    for f in m {
        out.extend(f.encode_to_vec());
    }
    out
}

fn p4err(code: rpc::Code, msg: &str) -> v1::Error {
    v1::Error {
        canonical_code: code as i32,
        message: msg.into(),
        ..Default::default()
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl P4Runtime for FakeSwitch {
    async fn write(
        &self,
        req: Request<v1::WriteRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let req = req.into_inner();
        let mut st = self.state.lock().expect("poisoned");
        st.write_rpcs += 1;
        let mut errors = Vec::new();
        let mut failed = false;
        for u in req.updates {
            let Some(v1::entity::Entity::TableEntry(te)) = u.entity.and_then(|e| e.entity) else {
                errors.push(p4err(rpc::Code::Unimplemented, "only table entries"));
                failed = true;
                continue;
            };
            let key = match_key(&te);
            let table = st.tables.entry(te.table_id).or_default();
            let exists = table.contains_key(&key);
            let r = match v1::update::Type::try_from(u.r#type) {
                Ok(v1::update::Type::Insert) if exists => {
                    Err(p4err(rpc::Code::AlreadyExists, "entry exists"))
                }
                Ok(v1::update::Type::Insert | v1::update::Type::Modify) if te.action.is_none() => {
                    Err(p4err(rpc::Code::InvalidArgument, "no action"))
                }
                Ok(v1::update::Type::Insert) => {
                    table.insert(key, te);
                    Ok(())
                }
                Ok(v1::update::Type::Modify) if !exists => {
                    Err(p4err(rpc::Code::NotFound, "no such entry"))
                }
                Ok(v1::update::Type::Modify) => {
                    table.insert(key, te);
                    Ok(())
                }
                Ok(v1::update::Type::Delete) if !exists => {
                    Err(p4err(rpc::Code::NotFound, "no such entry"))
                }
                Ok(v1::update::Type::Delete) => {
                    table.remove(&key);
                    Ok(())
                }
                _ => Err(p4err(rpc::Code::InvalidArgument, "bad update type")),
            };
            match r {
                Ok(()) => {
                    st.applied += 1;
                    errors.push(p4err(rpc::Code::Ok, ""));
                }
                Err(e) => {
                    failed = true;
                    errors.push(e);
                }
            }
        }
        if !failed {
            return Ok(Response::new(v1::WriteResponse {}));
        }
        let status = rpc::Status {
            code: rpc::Code::Unknown as i32,
            message: "some updates failed".into(),
            details: errors
                .iter()
                .map(|e| prost_types::Any {
                    type_url: "type.googleapis.com/p4.v1.Error".into(),
                    value: e.encode_to_vec(),
                })
                .collect(),
        };
        Err(Status::with_details(
            tonic::Code::Unknown,
            "some updates failed",
            status.encode_to_vec().into(),
        ))
    }

    type ReadStream = BoxStream<v1::ReadResponse>;

    async fn read(
        &self,
        req: Request<v1::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let req = req.into_inner();
        let st = self.state.lock().expect("poisoned");
        let mut entities = Vec::new();
        for e in req.entities {
            match e.entity {
                Some(v1::entity::Entity::TableEntry(w)) => {
                    for (id, t) in &st.tables {
                        if w.table_id != 0 && w.table_id != *id {
                            continue;
                        }
                        if !w.r#match.is_empty() {
                            // A full key: that one entry, if present.
                            if let Some(te) = t.get(&match_key(&w)) {
                                entities.push(v1::Entity {
                                    entity: Some(v1::entity::Entity::TableEntry(te.clone())),
                                });
                            }
                            continue;
                        }
                        entities.extend(t.values().map(|te| v1::Entity {
                            entity: Some(v1::entity::Entity::TableEntry(te.clone())),
                        }));
                    }
                }
                Some(v1::entity::Entity::CounterEntry(c)) => entities.push(v1::Entity {
                    entity: Some(v1::entity::Entity::CounterEntry(v1::CounterEntry {
                        counter_id: c.counter_id,
                        index: Some(v1::Index { index: 1 }),
                        data: Some(v1::CounterData {
                            byte_count: 100,
                            packet_count: 1,
                        }),
                    })),
                }),
                _ => return Err(Status::unimplemented("entity kind")),
            }
        }
        // Several responses, as a real server streams them.
        let chunks: Vec<Result<v1::ReadResponse, Status>> = entities
            .chunks(1000)
            .map(|c| {
                Ok(v1::ReadResponse {
                    entities: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn set_forwarding_pipeline_config(
        &self,
        req: Request<v1::SetForwardingPipelineConfigRequest>,
    ) -> Result<Response<v1::SetForwardingPipelineConfigResponse>, Status> {
        let mut st = self.state.lock().expect("poisoned");
        st.pipeline = req.into_inner().config;
        st.tables.clear();
        Ok(Response::new(v1::SetForwardingPipelineConfigResponse {}))
    }

    async fn get_forwarding_pipeline_config(
        &self,
        _req: Request<v1::GetForwardingPipelineConfigRequest>,
    ) -> Result<Response<v1::GetForwardingPipelineConfigResponse>, Status> {
        let st = self.state.lock().expect("poisoned");
        match &st.pipeline {
            Some(p) => Ok(Response::new(v1::GetForwardingPipelineConfigResponse {
                config: Some(p.clone()),
            })),
            None => Err(Status::failed_precondition("no pipeline")),
        }
    }

    type StreamChannelStream = BoxStream<v1::StreamMessageResponse>;

    async fn stream_channel(
        &self,
        req: Request<Streaming<v1::StreamMessageRequest>>,
    ) -> Result<Response<Self::StreamChannelStream>, Status> {
        let mut inbound = req.into_inner();
        let (mut tx, rx) = futures::channel::mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(Ok(m)) = inbound.next().await {
                if let Some(v1::stream_message_request::Update::Arbitration(a)) = m.update {
                    let reply = v1::StreamMessageResponse {
                        update: Some(v1::stream_message_response::Update::Arbitration(
                            v1::MasterArbitrationUpdate {
                                status: Some(rpc::Status::default()),
                                ..a
                            },
                        )),
                    };
                    if tx.send(Ok(reply)).await.is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(rx)))
    }

    async fn capabilities(
        &self,
        _req: Request<v1::CapabilitiesRequest>,
    ) -> Result<Response<v1::CapabilitiesResponse>, Status> {
        Ok(Response::new(v1::CapabilitiesResponse {
            p4runtime_api_version: "1.4.0".into(),
            ..Default::default()
        }))
    }
}

/// A running fake server. It runs on its own runtime, so [`FakeServer::stop`]
/// (or drop) ends every connection at once, as a switch restart would.
#[derive(Debug)]
pub struct FakeServer {
    /// Bound address.
    pub addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl FakeServer {
    /// Stops the server and drops all its connections.
    pub fn stop(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Serves `fake` on `addr` (port 0 = any) until the returned server is
/// stopped or dropped.
pub fn spawn(fake: FakeSwitch, addr: SocketAddr) -> std::io::Result<FakeServer> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.spawn(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
            return;
        };
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let _ = tonic::transport::Server::builder()
            .add_service(
                v1::p4_runtime_server::P4RuntimeServer::new(fake)
                    .max_decoding_message_size(256 << 20),
            )
            .serve_with_incoming(incoming)
            .await;
    });
    Ok(FakeServer {
        addr: local,
        rt: Some(rt),
    })
}
