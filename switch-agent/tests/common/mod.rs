//! Shared helpers of the gRPC tests: a switch-agent server on a loopback
//! port over a [`MemoryTarget`], a tonic client, and entry builders.
#![allow(dead_code)]

use std::{net::SocketAddr, path::PathBuf, process::Command, sync::Arc, time::Duration};

use talaria_p4rt::p4::{
    config::v1::P4Info,
    v1::{
        entity, field_match, p4_runtime_client::P4RuntimeClient,
        set_forwarding_pipeline_config_request::Action as SetAction, stream_message_request,
        stream_message_response, table_action, update, Action, Entity, FieldMatch,
        ForwardingPipelineConfig, MasterArbitrationUpdate, ReadRequest,
        SetForwardingPipelineConfigRequest, StreamMessageRequest, StreamMessageResponse,
        TableAction, TableEntry, Uint128, Update, WriteRequest,
    },
};
use talaria_switch::{
    layout::Layout,
    memory::MemoryTarget,
    server::{self, Switch},
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Status, Streaming};

pub type Client = P4RuntimeClient<Channel>;

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub switch: Arc<Switch>,
    pub target: Arc<MemoryTarget>,
    pub layout: Arc<Layout>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// A server on a free loopback port; tables have their P4 sizes unless
    /// `size` overrides them.
    pub async fn start_with(
        state_dir: Option<PathBuf>,
        size: Option<fn(talaria_switch::entry::TableKind) -> u32>,
    ) -> Self {
        let layout = Arc::new(Layout::talaria().unwrap());
        let l2 = layout.clone();
        let target = Arc::new(match size {
            Some(f) => MemoryTarget::new(f),
            None => MemoryTarget::new(move |k| l2.size(k)),
        });
        Self::start_on(layout, target, state_dir).await
    }

    pub async fn start_on(
        layout: Arc<Layout>,
        target: Arc<MemoryTarget>,
        state_dir: Option<PathBuf>,
    ) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let switch = Arc::new(
            Switch::new(
                1,
                layout.clone(),
                target.clone(),
                state_dir,
                stop_rx.clone(),
            )
            .unwrap(),
        );
        let (listener, addr) = server::bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let s = switch.clone();
        let task = tokio::spawn(async move { server::serve(s, listener, stop_rx).await.unwrap() });
        Self {
            addr,
            switch,
            target,
            layout,
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
    Layout::talaria().unwrap().p4info
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

/// Builds table entries by P4Info name.
pub struct Builder {
    pub layout: Arc<Layout>,
}

impl Builder {
    fn table(&self, name: &str) -> &talaria_switch::layout::TableLayout {
        self.layout
            .tables()
            .iter()
            .find(|t| t.name.ends_with(name))
            .unwrap_or_else(|| panic!("no table {name}"))
    }

    /// An entry of table `table` with exact/LPM `keys` (name, bytes, prefix
    /// length or 0 for exact) and `action` with `params` (name, bytes).
    pub fn entry(
        &self,
        table: &str,
        keys: &[(&str, &[u8], i32)],
        action: &str,
        params: &[(&str, &[u8])],
    ) -> TableEntry {
        let t = self.table(table);
        let r#match = keys
            .iter()
            .map(|(name, value, len)| {
                let f = t
                    .fields
                    .iter()
                    .find(|f| f.name == *name)
                    .unwrap_or_else(|| panic!("no field {name}"));
                let m = if *len > 0 {
                    field_match::FieldMatchType::Lpm(field_match::Lpm {
                        value: value.to_vec(),
                        prefix_len: *len,
                    })
                } else {
                    field_match::FieldMatchType::Exact(field_match::Exact {
                        value: value.to_vec(),
                    })
                };
                FieldMatch {
                    field_id: f.id,
                    field_match_type: Some(m),
                }
            })
            .collect();
        let a = t
            .actions
            .iter()
            .find(|a| a.name.ends_with(action))
            .unwrap_or_else(|| panic!("no action {action}"));
        let params = params
            .iter()
            .map(|(name, value)| {
                let p = a
                    .params
                    .iter()
                    .find(|p| p.name == *name)
                    .unwrap_or_else(|| panic!("no param {name}"));
                talaria_p4rt::p4::v1::action::Param {
                    param_id: p.id,
                    value: value.to_vec(),
                }
            })
            .collect();
        TableEntry {
            table_id: t.id,
            r#match,
            action: Some(TableAction {
                r#type: Some(table_action::Type::Action(Action {
                    action_id: a.id,
                    params,
                })),
            }),
            ..Default::default()
        }
    }

    /// `backend` entry `id` → 10.1.0.id:8080 on node 192.168.0.1.
    pub fn backend(&self, id: u32) -> TableEntry {
        let ip = [10, 1, (id >> 8) as u8, id as u8];
        self.entry(
            "backend",
            &[("backend_id", &id.to_be_bytes(), 0)],
            "set_backend",
            &[
                ("backend_ip", &ip),
                ("backend_port", &8080u16.to_be_bytes()),
                ("node_ip", &[192, 168, 0, 1]),
            ],
        )
    }

    pub fn table_id(&self, name: &str) -> u32 {
        self.table(name).id
    }
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
