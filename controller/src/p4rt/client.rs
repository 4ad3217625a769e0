//! One P4Runtime connection: arbitration on the StreamChannel, pipeline
//! push/verify, reads of the controller's tables and counters, batched
//! writes with per-update error handling.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use prost::Message;
use talaria_p4rt::{
    google::rpc,
    p4::{config::v1::P4Info, v1},
    p4info::Schema,
};
use talaria_tables::{
    p4runtime::{self as p4rt, ActionUse, Decoded, Fit},
    Contents, Entry, Table,
};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use crate::{
    diff::{Batch, Chunk, Op},
    entries::INSERT_ORDER,
};

/// A P4Runtime gRPC client.
pub type P4Client = v1::p4_runtime_client::P4RuntimeClient<Channel>;

/// Errors talking to a switch.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not a valid gRPC endpoint.
    #[error("bad switch address {0:?}")]
    Address(String),
    /// Could not connect.
    #[error("connect failed")]
    Connect(#[source] tonic::transport::Error),
    /// An RPC failed as a whole.
    #[error("{rpc} failed: {status}")]
    Rpc {
        /// Which RPC.
        rpc: &'static str,
        /// gRPC status.
        status: Box<tonic::Status>,
    },
    /// Another controller is primary (or the switch refused arbitration).
    #[error("not primary: {0}")]
    NotPrimary(String),
    /// The StreamChannel closed.
    #[error("stream channel closed")]
    StreamClosed,
    /// The switch runs a pipeline without talaria's tables.
    #[error("the switch's pipeline does not fit: {0}")]
    PipelineMismatch(#[source] p4rt::Mismatch),
}

fn rpc_err(rpc: &'static str) -> impl FnOnce(tonic::Status) -> ClientError {
    move |s| ClientError::Rpc {
        rpc,
        status: Box::new(s),
    }
}

/// Result of a write (one chunk, or a whole sync when added up).
#[derive(Debug, Default, Clone)]
pub struct WriteReport {
    /// Updates that took effect (including retried ones).
    pub applied: usize,
    /// INSERTs that hit ALREADY_EXISTS and went in as MODIFY (or MODIFYs
    /// that hit NOT_FOUND and went in as INSERT).
    pub retried: usize,
    /// Per-update failures that remain: (table, op, google.rpc code, message).
    pub failed: Vec<(Table, Op, i32, String)>,
    /// The entries that did take effect, in order (to update the cache).
    pub done: Vec<(Op, Entry)>,
}

impl WriteReport {
    /// Adds the counts and failures of `other` (not its `done` list).
    pub fn add(&mut self, other: WriteReport) {
        self.applied += other.applied;
        self.retried += other.retried;
        self.failed.extend(other.failed);
    }
}

/// A counter read: index → (packets, bytes), non-zero cells only.
pub type CounterCells = BTreeMap<i64, (i64, i64)>;

/// A live P4Runtime session with one switch.
#[derive(Debug)]
pub struct SwitchConn {
    client: P4Client,
    device_id: u64,
    election_id: v1::Uint128,
    /// Keeps the StreamChannel open; dropping it ends the session.
    _stream_tx: futures::channel::mpsc::Sender<v1::StreamMessageRequest>,
    closed: watch::Receiver<bool>,
    /// True when this session pushed the pipeline.
    pub pushed_pipeline: bool,
}

/// How to reach and set up a switch.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    /// `http://host:port`.
    pub address: String,
    /// P4Runtime device id.
    pub device_id: u64,
    /// Election id.
    pub election_id: u64,
    /// Our P4Info.
    pub p4info: Arc<P4Info>,
    /// Device config pushed with the P4Info.
    pub device_config: Arc<Vec<u8>>,
    /// Connect timeout.
    pub timeout: Duration,
}

/// Largest header block (a failed Write's per-update errors) accepted.
const MAX_TRAILERS: u32 = 64 << 20;

/// Opens a channel for reads only (no arbitration).
pub async fn channel(address: &str, timeout: Duration) -> Result<P4Client, ClientError> {
    let ep = Endpoint::from_shared(address.to_string())
        .map_err(|_| ClientError::Address(address.into()))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        // A failed Write carries one p4.v1.Error per update of its batch in
        // the grpc-status-details-bin trailer: for a batch of thousands of
        // updates that is far beyond h2's 16 KiB default, and the
        // connection would be torn down instead of the errors read.
        .http2_max_header_list_size(MAX_TRAILERS);
    let ch = ep.connect().await.map_err(ClientError::Connect)?;
    Ok(P4Client::new(ch)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20))
}

impl SwitchConn {
    /// Connects, becomes primary, and makes sure the switch runs our
    /// pipeline (pushing it when the switch has none).
    pub async fn connect(p: &ConnectParams) -> Result<Self, ClientError> {
        let mut client = channel(&p.address, p.timeout).await?;
        let election_id = v1::Uint128 {
            high: 0,
            low: p.election_id,
        };
        let (mut tx, rx) = futures::channel::mpsc::channel(4);
        tx.send(v1::StreamMessageRequest {
            update: Some(v1::stream_message_request::Update::Arbitration(
                v1::MasterArbitrationUpdate {
                    device_id: p.device_id,
                    role: None,
                    election_id: Some(election_id),
                    status: None,
                },
            )),
        })
        .await
        .map_err(|_| ClientError::StreamClosed)?;
        let mut inbound = client
            .stream_channel(rx)
            .await
            .map_err(rpc_err("StreamChannel"))?
            .into_inner();
        let first = tokio::time::timeout(p.timeout, inbound.next())
            .await
            .map_err(|_| ClientError::NotPrimary("no arbitration answer".into()))?;
        match first {
            Some(Ok(v1::StreamMessageResponse {
                update: Some(v1::stream_message_response::Update::Arbitration(a)),
            })) => {
                let code = a.status.as_ref().map(|s| s.code).unwrap_or(0);
                if code != rpc::Code::Ok as i32 {
                    return Err(ClientError::NotPrimary(
                        a.status.map(|s| s.message).unwrap_or_default(),
                    ));
                }
            }
            Some(Ok(other)) => {
                return Err(ClientError::NotPrimary(format!("unexpected {other:?}")))
            }
            Some(Err(s)) => return Err(rpc_err("StreamChannel")(s)),
            None => return Err(ClientError::StreamClosed),
        }
        let (closed_tx, closed) = watch::channel(false);
        tokio::spawn(async move {
            while let Some(m) = inbound.next().await {
                match m {
                    Ok(v1::StreamMessageResponse {
                        update: Some(v1::stream_message_response::Update::Arbitration(a)),
                    }) => {
                        let code = a.status.as_ref().map(|s| s.code).unwrap_or(0);
                        if code != 0 {
                            warn!(code, "lost primary");
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!(%e, "stream channel error");
                        break;
                    }
                }
            }
            let _ = closed_tx.send(true);
        });
        let mut conn = Self {
            client,
            device_id: p.device_id,
            election_id,
            _stream_tx: tx,
            closed,
            pushed_pipeline: false,
        };
        conn.ensure_pipeline(p).await?;
        Ok(conn)
    }

    /// Resolves when the session is over (stream closed or primary lost).
    pub async fn closed(&self) {
        let mut c = self.closed.clone();
        let _ = c.wait_for(|v| *v).await;
    }

    /// True when the session is over.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// A clone of the gRPC client (for concurrent reads).
    pub fn reader(&self) -> P4Client {
        self.client.clone()
    }

    async fn ensure_pipeline(&mut self, p: &ConnectParams) -> Result<(), ClientError> {
        let got =
            self.client
                .get_forwarding_pipeline_config(v1::GetForwardingPipelineConfigRequest {
                    device_id: self.device_id,
                    response_type:
                        v1::get_forwarding_pipeline_config_request::ResponseType::P4infoAndCookie
                            as i32,
                })
                .await;
        let theirs = match got {
            Ok(r) => r.into_inner().config.and_then(|c| c.p4info),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::FailedPrecondition
                        | tonic::Code::NotFound
                        | tonic::Code::Unavailable
                ) =>
            {
                None
            }
            Err(s) => return Err(rpc_err("GetForwardingPipelineConfig")(s)),
        };
        match theirs {
            Some(info) if !info.tables.is_empty() => {
                p4rt::check(&info, Fit::Covers).map_err(ClientError::PipelineMismatch)
            }
            _ => {
                info!("switch has no pipeline; pushing ours");
                self.client
                    .set_forwarding_pipeline_config(v1::SetForwardingPipelineConfigRequest {
                        device_id: self.device_id,
                        election_id: Some(self.election_id),
                        action: v1::set_forwarding_pipeline_config_request::Action::VerifyAndCommit
                            as i32,
                        config: Some(v1::ForwardingPipelineConfig {
                            p4info: Some((*p.p4info).clone()),
                            p4_device_config: (*p.device_config).clone(),
                            cookie: Some(v1::forwarding_pipeline_config::Cookie { cookie: 0x7a1a }),
                        }),
                        ..Default::default()
                    })
                    .await
                    .map_err(rpc_err("SetForwardingPipelineConfig"))?;
                self.pushed_pipeline = true;
                Ok(())
            }
        }
    }

    /// Reads every controller-owned table. Entries that do not decode are
    /// returned as strings (they are left alone).
    pub async fn read_state(&mut self) -> Result<(Contents, Vec<String>), ClientError> {
        read_state(&mut self.client, self.device_id).await
    }

    /// Applies `batches` in order, in Writes of at most `max` updates.
    pub async fn write(
        &mut self,
        batches: &[Batch],
        max: usize,
    ) -> Result<WriteReport, ClientError> {
        let mut queue = crate::diff::chunks(batches.to_vec(), max).into_iter();
        let mut report = WriteReport::default();
        self.write_pipelined(
            || queue.next(),
            1,
            |c| {
                report.done.extend(c.done.iter().copied());
                report.add(c);
            },
        )
        .await?;
        Ok(report)
    }

    /// Writes the chunks `next` yields, keeping up to `depth` Write RPCs in
    /// flight within a phase (chunks of one phase are independent); a chunk
    /// of a new phase waits until every earlier one is done. `done` gets
    /// each chunk's result, in order. Encoding runs on the runtime's worker
    /// threads.
    pub async fn write_pipelined(
        &mut self,
        mut next: impl FnMut() -> Option<Chunk>,
        depth: usize,
        mut done: impl FnMut(WriteReport),
    ) -> Result<(), ClientError> {
        let depth = depth.max(1);
        let mut inflight = futures::stream::FuturesOrdered::new();
        let mut phase = None;
        let join = |r: Result<Result<WriteReport, ClientError>, tokio::task::JoinError>| match r {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(ClientError::StreamClosed),
        };
        while let Some(chunk) = next() {
            if phase.is_some_and(|p| p != chunk.phase) {
                while let Some(r) = inflight.next().await {
                    done(join(r)?);
                }
            }
            phase = Some(chunk.phase);
            if inflight.len() >= depth {
                if let Some(r) = inflight.next().await {
                    done(join(r)?);
                }
            }
            let w = Writer {
                client: self.client.clone(),
                device_id: self.device_id,
                election_id: self.election_id,
            };
            inflight.push_back(tokio::spawn(async move {
                let mut report = WriteReport::default();
                w.write_chunk(chunk.table, chunk.op, &chunk.entries, &mut report, true)
                    .await
                    .map(|()| report)
            }));
        }
        while let Some(r) = inflight.next().await {
            done(join(r)?);
        }
        Ok(())
    }
}

/// What one Write needs: a client (channels multiplex, clones are cheap).
struct Writer {
    client: P4Client,
    device_id: u64,
    election_id: v1::Uint128,
}

impl Writer {
    async fn write_chunk(
        &self,
        table: Table,
        op: Op,
        entries: &[Entry],
        report: &mut WriteReport,
        may_retry: bool,
    ) -> Result<(), ClientError> {
        let ty = match op {
            Op::Insert => v1::update::Type::Insert,
            Op::Modify => v1::update::Type::Modify,
            Op::Delete => v1::update::Type::Delete,
        };
        let mut updates = Vec::with_capacity(entries.len());
        for e in entries {
            // Deletes name the key alone.
            let te = match op {
                Op::Delete => p4rt::encode_key(&e.key()),
                Op::Insert | Op::Modify => p4rt::encode(e),
            };
            updates.push(v1::Update {
                r#type: ty as i32,
                entity: Some(v1::Entity {
                    entity: Some(v1::entity::Entity::TableEntry(te)),
                }),
            });
        }
        let res = self
            .client
            .clone()
            .write(v1::WriteRequest {
                device_id: self.device_id,
                election_id: Some(self.election_id),
                updates,
                atomicity: v1::write_request::Atomicity::ContinueOnError as i32,
                ..Default::default()
            })
            .await;
        let status = match res {
            Ok(_) => {
                report.applied += entries.len();
                report.done.extend(entries.iter().map(|e| (op, *e)));
                return Ok(());
            }
            Err(s) => s,
        };
        let per_update = decode_write_errors(&status);
        if per_update.len() != entries.len() {
            // No usable per-update detail: the whole Write failed.
            return Err(rpc_err("Write")(status));
        }
        let mut retry_as: Vec<(Op, Entry)> = Vec::new();
        for (e, err) in entries.iter().zip(per_update) {
            let code = err.canonical_code;
            match (op, code) {
                (_, c) if c == rpc::Code::Ok as i32 => {
                    report.applied += 1;
                    report.done.push((op, *e));
                }
                (Op::Insert, c) if c == rpc::Code::AlreadyExists as i32 && may_retry => {
                    retry_as.push((Op::Modify, *e))
                }
                (Op::Modify, c) if c == rpc::Code::NotFound as i32 && may_retry => {
                    retry_as.push((Op::Insert, *e))
                }
                (Op::Delete, c) if c == rpc::Code::NotFound as i32 => {
                    // Already gone: the goal is met.
                    report.applied += 1;
                    report.done.push((op, *e));
                }
                _ => report.failed.push((table, op, code, err.message)),
            }
        }
        for new_op in [Op::Modify, Op::Insert] {
            let es: Vec<Entry> = retry_as
                .iter()
                .filter(|(o, _)| *o == new_op)
                .map(|(_, e)| *e)
                .collect();
            if !es.is_empty() {
                report.retried += es.len();
                Box::pin(self.write_chunk(table, new_op, &es, report, false)).await?;
            }
        }
        Ok(())
    }
}

/// The per-update `p4.v1.Error`s of a failed Write, from
/// `grpc-status-details-bin` (a `google.rpc.Status` whose details are
/// `Any(p4.v1.Error)`). Empty when the status carries none.
pub fn decode_write_errors(status: &tonic::Status) -> Vec<v1::Error> {
    let Ok(st) = rpc::Status::decode(status.details()) else {
        return Vec::new();
    };
    st.details
        .iter()
        .filter(|a| a.type_url.ends_with("p4.v1.Error"))
        .filter_map(|a| v1::Error::decode(a.value.as_slice()).ok())
        .collect()
}

/// Reads every controller-owned table through `client`, decoding each
/// response as it arrives.
pub async fn read_state(
    client: &mut P4Client,
    device_id: u64,
) -> Result<(Contents, Vec<String>), ClientError> {
    let mut st = Contents::default();
    let mut bad = Vec::new();
    let ids: Vec<u32> = INSERT_ORDER.iter().map(|t| t.id()).collect();
    let mut stream = read_stream(client, device_id, &ids).await?;
    while let Some(r) = stream.next().await {
        for e in r.map_err(rpc_err("Read"))?.entities {
            if let Some(v1::entity::Entity::TableEntry(te)) = e.entity {
                match p4rt::decode(&te, ActionUse::Required) {
                    Ok(Decoded::Entry(e)) => {
                        st.insert(e);
                    }
                    // Wildcard reads do not return default entries; a
                    // switch that does is not wrong.
                    Ok(_) => {}
                    Err(e) => bad.push(e.to_string()),
                }
            }
        }
    }
    st.compact();
    Ok((st, bad))
}

async fn read_stream(
    client: &mut P4Client,
    device_id: u64,
    table_ids: &[u32],
) -> Result<tonic::Streaming<v1::ReadResponse>, ClientError> {
    let entities = table_ids
        .iter()
        .map(|id| v1::Entity {
            entity: Some(v1::entity::Entity::TableEntry(v1::TableEntry {
                table_id: *id,
                ..Default::default()
            })),
        })
        .collect();
    Ok(client
        .read(v1::ReadRequest {
            device_id,
            entities,
            ..Default::default()
        })
        .await
        .map_err(rpc_err("Read"))?
        .into_inner())
}

/// Raw entries of the tables with P4Info ids `table_ids`.
pub async fn read_tables(
    client: &mut P4Client,
    device_id: u64,
    table_ids: &[u32],
) -> Result<Vec<v1::TableEntry>, ClientError> {
    let mut stream = read_stream(client, device_id, table_ids).await?;
    let mut out = Vec::new();
    while let Some(r) = stream.next().await {
        let r = r.map_err(rpc_err("Read"))?;
        for e in r.entities {
            if let Some(v1::entity::Entity::TableEntry(te)) = e.entity {
                out.push(te);
            }
        }
    }
    Ok(out)
}

/// Reads every indirect counter of `schema`: name → non-zero cells.
pub async fn read_counters(
    client: &mut P4Client,
    device_id: u64,
    schema: &Schema,
) -> Result<BTreeMap<String, CounterCells>, ClientError> {
    let mut out = BTreeMap::new();
    for c in schema.counters().iter() {
        let (name, id) = (&c.name, &c.id);
        let mut stream = client
            .read(v1::ReadRequest {
                device_id,
                entities: vec![v1::Entity {
                    entity: Some(v1::entity::Entity::CounterEntry(v1::CounterEntry {
                        counter_id: *id,
                        ..Default::default()
                    })),
                }],
                ..Default::default()
            })
            .await
            .map_err(rpc_err("Read"))?
            .into_inner();
        let mut cells = CounterCells::new();
        while let Some(r) = stream.next().await {
            for e in r.map_err(rpc_err("Read"))?.entities {
                if let Some(v1::entity::Entity::CounterEntry(c)) = e.entity {
                    let d = c.data.unwrap_or_default();
                    if d.packet_count != 0 || d.byte_count != 0 {
                        cells.insert(
                            c.index.map(|i| i.index).unwrap_or(0),
                            (d.packet_count, d.byte_count),
                        );
                    }
                }
            }
        }
        out.insert(name.clone(), cells);
    }
    Ok(out)
}
