//! Shared helpers of the gRPC tests: a switch-agent server on a loopback
//! port over a [`MemoryTarget`], a tonic client, and entries.
#![allow(dead_code)]

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Command,
    sync::Arc,
    time::Duration,
};

use talaria_p4rt::p4::{
    config::v1::P4Info,
    v1::{
        entity, p4_runtime_client::P4RuntimeClient,
        set_forwarding_pipeline_config_request::Action as SetAction, stream_message_request,
        stream_message_response, update, Entity, ForwardingPipelineConfig, MasterArbitrationUpdate,
        ReadRequest, SetForwardingPipelineConfigRequest, StreamMessageRequest,
        StreamMessageResponse, TableEntry, Uint128, Update, WriteRequest,
    },
};
use talaria_switch::{
    entry::{Entry, Table},
    memory::MemoryTarget,
    server::{self, Switch},
};
use talaria_tables::{build, p4runtime::encode};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Status, Streaming};

pub type Client = P4RuntimeClient<Channel>;

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub switch: Arc<Switch>,
    pub target: Arc<MemoryTarget>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// A server on a free loopback port; tables have their P4 sizes unless
    /// `size` overrides them.
    pub async fn start_with(state_dir: Option<PathBuf>, size: Option<fn(Table) -> u32>) -> Self {
        let target = Arc::new(match size {
            Some(f) => MemoryTarget::with_sizes(f),
            None => MemoryTarget::new(),
        });
        Self::start_on(target, state_dir).await
    }

    pub async fn start_on(target: Arc<MemoryTarget>, state_dir: Option<PathBuf>) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let switch = Arc::new(Switch::new(1, target.clone(), state_dir, stop_rx.clone()).unwrap());
        let (listener, addr) = server::bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let s = switch.clone();
        let task = tokio::spawn(async move { server::serve(s, listener, stop_rx).await.unwrap() });
        Self {
            addr,
            switch,
            target,
            stop,
            task,
        }
    }

    pub async fn start() -> Self {
        Self::start_with(None, None).await
    }

    pub async fn client(&self) -> Client {
        let ch = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        P4RuntimeClient::new(ch).max_decoding_message_size(64 << 20)
    }

    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

pub fn eid(low: u64) -> Option<Uint128> {
    Some(Uint128 { high: 0, low })
}

/// An open StreamChannel.
pub struct Stream {
    pub tx: mpsc::Sender<StreamMessageRequest>,
    pub rx: Streaming<StreamMessageResponse>,
}

impl Stream {
    pub async fn open(client: &mut Client) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let resp = client
            .stream_channel(ReceiverStream::new(rx))
            .await
            .unwrap();
        Self {
            tx,
            rx: resp.into_inner(),
        }
    }

    pub async fn send_arbitration(&self, device_id: u64, election: u64) {
        let m = StreamMessageRequest {
            update: Some(stream_message_request::Update::Arbitration(
                MasterArbitrationUpdate {
                    device_id,
                    election_id: eid(election),
                    ..Default::default()
                },
            )),
        };
        self.tx.send(m).await.unwrap();
    }

    /// The next message, within 2 s.
    pub async fn next(&mut self) -> Result<Option<StreamMessageResponse>, Status> {
        tokio::time::timeout(Duration::from_secs(2), self.rx.message())
            .await
            .expect("no stream message within 2 s")
    }

    /// The status code of the next arbitration reply.
    pub async fn arbitration_code(&mut self) -> tonic::Code {
        match self.next().await.unwrap().unwrap().update {
            Some(stream_message_response::Update::Arbitration(a)) => {
                tonic::Code::from_i32(a.status.unwrap().code)
            }
            other => panic!("expected an arbitration reply, got {other:?}"),
        }
    }

    /// Opens a stream and becomes primary with `election`.
    pub async fn primary(client: &mut Client, election: u64) -> Self {
        let mut s = Self::open(client).await;
        s.send_arbitration(1, election).await;
        assert_eq!(s.arbitration_code().await, tonic::Code::Ok);
        s
    }
}

pub fn talaria_p4info() -> P4Info {
    talaria_tables::p4info()
}

pub fn set_pipeline_request(
    action: SetAction,
    p4info: Option<P4Info>,
    election: u64,
) -> SetForwardingPipelineConfigRequest {
    SetForwardingPipelineConfigRequest {
        device_id: 1,
        election_id: eid(election),
        action: action as i32,
        config: Some(ForwardingPipelineConfig {
            p4info,
            p4_device_config: b"{\"program\": \"talaria.json\"}".to_vec(),
            cookie: Some(talaria_p4rt::p4::v1::forwarding_pipeline_config::Cookie {
                cookie: 0x7a1a,
            }),
        }),
        ..Default::default()
    }
}

/// Becomes primary with `election` and commits the talaria pipeline.
pub async fn configured(client: &mut Client, election: u64) -> Stream {
    let s = Stream::primary(client, election).await;
    client
        .set_forwarding_pipeline_config(set_pipeline_request(
            SetAction::VerifyAndCommit,
            Some(talaria_p4info()),
            election,
        ))
        .await
        .unwrap();
    s
}

/// `backend` entry `id` → 10.1.x.y:8080 on node 192.168.0.1.
pub fn backend_entry(id: u32) -> Entry {
    build::backend(
        id,
        Ipv4Addr::new(10, 1, (id >> 8) as u8, id as u8),
        8080,
        Ipv4Addr::new(192, 168, 0, 1),
    )
}

/// [`backend_entry`] as P4Runtime carries it.
pub fn backend(id: u32) -> TableEntry {
    encode(&backend_entry(id))
}

/// An `ipv4_route` entry: `prefix` out of `port`.
pub fn route(prefix: &str, port: u16) -> TableEntry {
    encode(&build::route(
        prefix.parse().unwrap(),
        port,
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
    ))
}

pub fn update(kind: update::Type, te: TableEntry) -> Update {
    Update {
        r#type: kind as i32,
        entity: Some(Entity {
            entity: Some(entity::Entity::TableEntry(te)),
        }),
    }
}

pub fn write_request(election: u64, updates: Vec<Update>) -> WriteRequest {
    WriteRequest {
        device_id: 1,
        election_id: eid(election),
        updates,
        ..Default::default()
    }
}

/// Every table entry a Read of `filters` returns.
pub async fn read_entities(
    client: &mut Client,
    filters: Vec<Entity>,
) -> Result<Vec<Entity>, Status> {
    let mut stream = client
        .read(ReadRequest {
            device_id: 1,
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
}

pub fn table_filter(table_id: u32) -> Entity {
    Entity {
        entity: Some(entity::Entity::TableEntry(TableEntry {
            table_id,
            ..Default::default()
        })),
    }
}

pub fn table_entries(entities: Vec<Entity>) -> Vec<TableEntry> {
    entities
        .into_iter()
        .map(|e| match e.entity {
            Some(entity::Entity::TableEntry(t)) => t,
            other => panic!("expected a table entry, got {other:?}"),
        })
        .collect()
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The python of the interop venv of `tool` (`scripts/python-tools.sh`),
/// creating the venv if it is missing. `None` (the caller skips) only when
/// the venv cannot be created outside CI, e.g. with no network; under
/// `CI=true` that is a failure (`talaria_preflight::skip`).
pub fn interop_python(tool: &str) -> Option<PathBuf> {
    let dir = workspace().join(".cache/venv").join(tool);
    let py = dir.join("bin/python");
    if py.exists() && dir.join(".stamp").exists() {
        return Some(py);
    }
    let status = Command::new("bash")
        .arg(workspace().join("scripts/python-tools.sh"))
        .arg(tool)
        .status();
    if matches!(status, Ok(s) if s.success()) {
        return Some(py);
    }
    talaria_preflight::skip(&format!(
        "no {tool} venv and scripts/python-tools.sh failed ({status:?}; no network?): \
         run scripts/python-tools.sh {tool}"
    ));
    None
}
