//! P4Runtime to a server listening on loopback inside a namespace, and the
//! calls the rig makes: arbitration, pipeline push, one write per table
//! operation, and counter reads.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    time::Duration,
};

use hyper_util::rt::TokioIo;
use talaria_p4rt::p4::v1::{
    entity, p4_runtime_client::P4RuntimeClient,
    set_forwarding_pipeline_config_request::Action as SetAction, stream_message_request,
    stream_message_response, update, CounterEntry, DirectCounterEntry, Entity,
    ForwardingPipelineConfig, Index, MasterArbitrationUpdate, ReadRequest,
    SetForwardingPipelineConfigRequest, StreamMessageRequest, StreamMessageResponse, TableEntry,
    Uint128, Update, WriteRequest,
};
use talaria_switch_dataplane::{
    testing::scenarios::{Counters, Op, Watch},
    CounterId, Entry, Table,
};
use talaria_tables::p4runtime::{check, encode, encode_key, Fit};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    transport::{Channel, Endpoint, Uri},
    Streaming,
};

use crate::{p4rt_err, switch::Pipeline, Error, Result};

pub type Client = P4RuntimeClient<Channel>;

/// A client with the message limit raised: a wildcard read of every
/// counter cell is larger than tonic's 4 MB default.
pub fn client(channel: Channel) -> Client {
    P4RuntimeClient::new(channel).max_decoding_message_size(64 << 20)
}

/// A channel to `addr`, whose TCP connections are made inside the network
/// namespace at `netns` (or in the caller's, for `None`).
pub async fn channel(netns: Option<PathBuf>, addr: SocketAddr) -> Result<Channel> {
    let connect = move |_: Uri| {
        let netns = netns.clone();
        async move {
            let stream = tokio::task::spawn_blocking(move || connect_in(netns, addr))
                .await
                .map_err(std::io::Error::other)??;
            stream.set_nonblocking(true)?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(TokioIo::new(tokio::net::TcpStream::from_std(stream)?))
        }
    };
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| Error::Channel {
            addr: addr.to_string(),
            source,
        })?
        .connect_with_connector(tower::service_fn(connect))
        .await
        .map_err(|source| Error::Channel {
            addr: addr.to_string(),
            source,
        })
}

fn connect_in(netns: Option<PathBuf>, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let connect = move || TcpStream::connect_timeout(&addr, Duration::from_secs(5));
    match netns {
        None => connect(),
        Some(path) => crate::netns::enter_and_run(path, connect)
            .map_err(std::io::Error::other)
            .and_then(|r| r),
    }
}

/// How long one unary call or one whole Read may take: bmv2 on a busy
/// two-core machine is slow, but never this slow.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// `call` with [`CALL_TIMEOUT`], its failure described as `what`.
pub async fn bounded<T>(
    what: impl Into<String>,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T> {
    let what = what.into();
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r.map_err(p4rt_err(what)),
        Err(_) => Err(Error::Timeout(format!(
            "P4Runtime {what}: no answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

/// An election id as P4Runtime carries it.
pub fn election(low: u64) -> Option<Uint128> {
    Some(Uint128 { high: 0, low })
}

/// An open StreamChannel.
pub struct Stream {
    pub tx: mpsc::Sender<StreamMessageRequest>,
    pub rx: Streaming<StreamMessageResponse>,
}

impl Stream {
    /// Opens a stream whose first message is an arbitration update for
    /// `device_id` with `election_id`. The message is queued before the
    /// call: a C++ gRPC server (bmv2's) sends its response headers only
    /// with its first reply, which comes only after that first message.
    pub async fn open(client: &mut Client, device_id: u64, election_id: u64) -> Result<Self> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(arbitration(device_id, election_id))
            .await
            .map_err(|_| Error::Protocol("the stream closed".into()))?;
        let resp = bounded(
            "StreamChannel",
            client.stream_channel(ReceiverStream::new(rx)),
        )
        .await?;
        Ok(Self {
            tx,
            rx: resp.into_inner(),
        })
    }

    /// Sends another arbitration update on the stream.
    pub async fn send_arbitration(&self, device_id: u64, election_id: u64) -> Result<()> {
        self.tx
            .send(arbitration(device_id, election_id))
            .await
            .map_err(|_| Error::Protocol("the stream closed".into()))
    }

    /// The next message, waiting at most 10 s (bmv2 on a busy machine).
    pub async fn next(&mut self) -> Result<Option<StreamMessageResponse>, tonic::Status> {
        match tokio::time::timeout(Duration::from_secs(10), self.rx.message()).await {
            Ok(r) => r,
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "no stream message within 10 s",
            )),
        }
    }

    /// The status code of the next arbitration reply.
    pub async fn arbitration_code(&mut self) -> Result<tonic::Code> {
        match self.next().await.map_err(p4rt_err("StreamChannel"))? {
            Some(StreamMessageResponse {
                update: Some(stream_message_response::Update::Arbitration(a)),
            }) => Ok(tonic::Code::from_i32(a.status.map_or(0, |s| s.code))),
            other => Err(Error::Protocol(format!(
                "expected an arbitration reply, got {other:?}"
            ))),
        }
    }

    /// Opens a stream and becomes primary for `device_id` with `election`.
    pub async fn primary(client: &mut Client, device_id: u64, election: u64) -> Result<Self> {
        let mut s = Self::open(client, device_id, election).await?;
        match s.arbitration_code().await? {
            tonic::Code::Ok => Ok(s),
            code => Err(Error::Protocol(format!(
                "arbitration with election id {election}: {code:?}, expected primary"
            ))),
        }
    }
}

fn arbitration(device_id: u64, election_id: u64) -> StreamMessageRequest {
    StreamMessageRequest {
        update: Some(stream_message_request::Update::Arbitration(
            MasterArbitrationUpdate {
                device_id,
                election_id: election(election_id),
                ..Default::default()
            },
        )),
    }
}

/// A pipeline push request.
pub fn set_pipeline_request(
    device_id: u64,
    election_id: u64,
    action: SetAction,
    pipeline: &Pipeline,
) -> SetForwardingPipelineConfigRequest {
    SetForwardingPipelineConfigRequest {
        device_id,
        election_id: election(election_id),
        action: action as i32,
        config: Some(ForwardingPipelineConfig {
            p4info: Some(pipeline.p4info.clone()),
            p4_device_config: pipeline.device_config.clone(),
            cookie: Some(talaria_p4rt::p4::v1::forwarding_pipeline_config::Cookie {
                cookie: 0x7a1a,
            }),
        }),
        ..Default::default()
    }
}

/// The primary client of a switch with the talaria pipeline committed.
pub struct Session {
    pub client: Client,
    pub device_id: u64,
    /// Held open: the switch takes a client for primary only while its
    /// stream lives.
    _stream: Stream,
}

/// The election id the rig uses.
const ELECTION: u64 = 1;

impl Session {
    /// Connects, becomes primary and commits `pipeline`
    /// (VERIFY_AND_COMMIT, which also empties the tables). Its P4Info must
    /// describe the talaria tables, whose ids the session's writes and
    /// reads use.
    pub async fn start(channel: Channel, device_id: u64, pipeline: &Pipeline) -> Result<Self> {
        check(&pipeline.p4info, Fit::Covers)?;
        let mut client = client(channel);
        let stream = Stream::primary(&mut client, device_id, ELECTION).await?;
        bounded(
            "SetForwardingPipelineConfig",
            client.set_forwarding_pipeline_config(set_pipeline_request(
                device_id,
                ELECTION,
                SetAction::VerifyAndCommit,
                pipeline,
            )),
        )
        .await?;
        Ok(Self {
            client,
            device_id,
            _stream: stream,
        })
    }

    /// One INSERT, MODIFY or DELETE of one entry.
    pub async fn write(&mut self, op: Op, entry: &Entry) -> Result<()> {
        let (te, kind) = match op {
            Op::Insert => (encode(entry), update::Type::Insert),
            Op::Modify => (encode(entry), update::Type::Modify),
            // A DELETE names the key only.
            Op::Delete => (encode_key(&entry.key()), update::Type::Delete),
        };
        let request = WriteRequest {
            device_id: self.device_id,
            election_id: election(ELECTION),
            updates: vec![Update {
                r#type: kind as i32,
                entity: Some(Entity {
                    entity: Some(entity::Entity::TableEntry(te)),
                }),
            }],
            ..Default::default()
        };
        bounded(
            format!("Write {op:?} {entry:?}"),
            self.client.write(request),
        )
        .await?;
        Ok(())
    }

    /// Every entity a Read of `filters` returns.
    pub async fn read(&mut self, filters: Vec<Entity>) -> Result<Vec<Entity>> {
        read(&mut self.client, self.device_id, filters).await
    }

    /// The counters the scenario checks compare, in one Read: every cell
    /// of the drop and event counters, the watched services' cells, and
    /// the backend table's direct counters.
    pub async fn counters(&mut self, watch: &Watch) -> Result<Counters> {
        let (drop_id, event_id, service_id) = (
            CounterId::Drop.def().id,
            CounterId::LbEvent.def().id,
            CounterId::Service.def().id,
        );
        let counter = |counter_id, index: Option<i64>| Entity {
            entity: Some(entity::Entity::CounterEntry(CounterEntry {
                counter_id,
                index: index.map(|index| Index { index }),
                data: None,
            })),
        };
        let mut filters = vec![counter(drop_id, None), counter(event_id, None)];
        filters.extend(
            watch
                .services
                .iter()
                .map(|s| counter(service_id, Some(i64::from(*s)))),
        );
        let backend_table = Table::Backend.id();
        filters.push(Entity {
            entity: Some(entity::Entity::DirectCounterEntry(DirectCounterEntry {
                table_entry: Some(TableEntry {
                    table_id: backend_table,
                    ..Default::default()
                }),
                data: None,
            })),
        });
        let mut c = Counters::empty(watch);
        let mut backends = BTreeMap::new();
        for e in self.read(filters).await? {
            match e.entity {
                Some(entity::Entity::CounterEntry(ce)) => {
                    let i = ce.index.map_or(-1, |i| i.index);
                    let d = ce.data.unwrap_or_default();
                    let cell = |v: &mut Vec<u64>| {
                        usize::try_from(i)
                            .ok()
                            .and_then(|i| v.get_mut(i))
                            .map(|x| *x = d.packet_count as u64)
                    };
                    let stored = if ce.counter_id == drop_id {
                        cell(&mut c.drops)
                    } else if ce.counter_id == event_id {
                        cell(&mut c.events)
                    } else if ce.counter_id == service_id {
                        u16::try_from(i)
                            .ok()
                            .and_then(|s| c.services.get_mut(&s))
                            .map(|x| {
                                x.packets = d.packet_count as u64;
                                x.bytes = d.byte_count as u64;
                            })
                    } else {
                        None
                    };
                    if stored.is_none() {
                        return Err(Error::Protocol(format!("unasked counter cell {ce:?}")));
                    }
                }
                Some(entity::Entity::DirectCounterEntry(dc)) => {
                    let id = dc
                        .table_entry
                        .as_ref()
                        .and_then(backend_id)
                        .ok_or_else(|| Error::Protocol(format!("direct counter {dc:?}")))?;
                    let d = dc.data.unwrap_or_default();
                    backends.insert(
                        id,
                        talaria_common::maps::PacketBytes {
                            packets: d.packet_count as u64,
                            bytes: d.byte_count as u64,
                        },
                    );
                }
                other => return Err(Error::Protocol(format!("unasked entity {other:?}"))),
            }
        }
        c.backends = backends
            .into_iter()
            .filter(|(id, _)| watch.backends.contains(id))
            .collect();
        Ok(c)
    }
}

/// The backend id a `backend` table entry's key holds.
fn backend_id(te: &TableEntry) -> Option<u32> {
    use talaria_p4rt::p4::v1::field_match::FieldMatchType;
    match te.r#match.first()?.field_match_type.as_ref()? {
        FieldMatchType::Exact(e) if e.value.len() <= 4 => Some(
            e.value
                .iter()
                .fold(0u32, |acc, b| (acc << 8) | u32::from(*b)),
        ),
        _ => None,
    }
}

/// Every entity a Read of `filters` on `device_id` returns.
pub async fn read(
    client: &mut Client,
    device_id: u64,
    filters: Vec<Entity>,
) -> Result<Vec<Entity>> {
    bounded("Read", async {
        let mut stream = client
            .read(ReadRequest {
                device_id,
                entities: filters,
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = stream.message().await? {
            out.extend(r.entities);
        }
        Ok(out)
    })
    .await
}
