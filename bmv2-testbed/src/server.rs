//! A P4Runtime server to test: bmv2 or the switch-agent binary in a
//! namespace of its own, or switch-agent's server in this process over its
//! in-memory table store (no root, no p4c).

use std::{fmt, sync::Arc};

use talaria_p4rt::p4::v1::p4_runtime_client::P4RuntimeClient;
use talaria_switch::{
    memory::MemoryTarget,
    server::{self, Switch as AgentServer},
};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::{
    io_err,
    netns::Topology,
    p4rt,
    packet::PacketSocket,
    switch::{talaria_pipeline, Pipeline, Switch, SwitchKind, DEVICE_ID},
    Error, Result,
};

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// switch-agent's P4Runtime server in this process, over the in-memory
    /// table store.
    InProcess,
    /// A switch process in a namespace.
    Process(SwitchKind),
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InProcess => f.write_str("switch-agent (in process)"),
            Self::Process(k) => write!(f, "{k}"),
        }
    }
}

enum Holder {
    InProcess {
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    },
    Process(Box<Running>),
}

/// A switch process in its namespaces; drops in field order, the process
/// before the namespaces.
struct Running {
    /// On the peer end of port 1.
    port1: PacketSocket,
    _switch: Switch,
    _topology: Topology,
}

/// A running server and a channel to it.
pub struct P4rtServer {
    pub kind: ServerKind,
    pub device_id: u64,
    /// The pipeline the tests push.
    pub pipeline: Pipeline,
    pub channel: Channel,
    holder: Holder,
}

impl P4rtServer {
    /// Starts a server of `kind` with no pipeline.
    pub async fn start(kind: ServerKind) -> Result<Self> {
        match kind {
            ServerKind::InProcess => Self::in_process().await,
            ServerKind::Process(k) => {
                let pipeline = talaria_pipeline()?.clone();
                // One port, for the tests that make counters move.
                let (switch, topology, port1) = tokio::task::spawn_blocking(move || {
                    let topology = Topology::new(&format!("{k}-p4rt"), 1)?;
                    let switch = Switch::start(k, &topology)?;
                    let port1 = topology
                        .peers
                        .run(|| PacketSocket::open(&Topology::peer_port(1)))??;
                    Ok::<_, Error>((switch, topology, port1))
                })
                .await
                .map_err(|e| Error::Protocol(format!("starting {k}: {e}")))??;
                let channel = p4rt::channel(Some(switch.netns.clone()), switch.grpc).await?;
                Ok(Self {
                    kind,
                    device_id: DEVICE_ID,
                    pipeline,
                    channel,
                    holder: Holder::Process(Box::new(Running {
                        port1,
                        _switch: switch,
                        _topology: topology,
                    })),
                })
            }
        }
    }

    async fn in_process() -> Result<Self> {
        let target = Arc::new(MemoryTarget::new());
        let (stop, stop_rx) = watch::channel(false);
        let switch = Arc::new(AgentServer::new(DEVICE_ID, target, None, stop_rx.clone())?);
        let p4info = switch.p4info().clone();
        let (listener, addr) = server::bind(([127, 0, 0, 1], 0).into())
            .await
            .map_err(io_err("binding a loopback port"))?;
        let task = tokio::spawn(async move {
            let _ = server::serve(switch, listener, stop_rx).await;
        });
        let channel = p4rt::channel(None, addr).await?;
        Ok(Self {
            kind: ServerKind::InProcess,
            device_id: DEVICE_ID,
            // This server runs without p4c: the checked-in P4Info, which
            // p4c's equals (tests/tests/p4c.rs), and an empty JSON object
            // as device config, which switch-agent stores and returns
            // without reading it.
            pipeline: Pipeline {
                p4info,
                device_config: b"{}".to_vec(),
            },
            channel,
            holder: Holder::InProcess { stop, task },
        })
    }

    /// A client on the shared channel.
    pub fn client(&self) -> P4RuntimeClient<Channel> {
        p4rt::client(self.channel.clone())
    }

    /// Sends `frame` into port 1 of a switch process; `None` for the
    /// in-process server, which has no ports.
    pub fn inject(&self, frame: &[u8]) -> Option<Result<()>> {
        match &self.holder {
            Holder::Process(r) => Some(r.port1.send(frame)),
            Holder::InProcess { .. } => None,
        }
    }

    /// Stops the server (a process server stops when dropped).
    pub async fn stop(self) {
        if let Holder::InProcess { stop, task } = self.holder {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
    }
}
