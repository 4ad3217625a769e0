//! The P4Runtime gRPC service.
//!
//! - [`arbitration`]: StreamChannel clients, primary and backups.
//! - [`pipeline`]: Set/GetForwardingPipelineConfig and its persistence.
//! - [`write`]: the Write RPC and its per-update error details.
//! - [`read`]: the Read RPC.
//!
//! [`Switch`] holds the state every RPC shares; [`P4RuntimeService`] is
//! the tonic service over it.

pub mod arbitration;
pub mod pipeline;
pub mod read;
pub mod write;

use std::{
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, RwLock,
    },
};

use talaria_p4rt::p4::config::v1::P4Info;
use talaria_p4rt::p4::v1::{
    get_forwarding_pipeline_config_request::ResponseType, p4_runtime_server::P4Runtime,
    p4_runtime_server::P4RuntimeServer,
    set_forwarding_pipeline_config_request::Action as SetAction, stream_error,
    stream_message_request, stream_message_response, CapabilitiesRequest, CapabilitiesResponse,
    GetForwardingPipelineConfigRequest, GetForwardingPipelineConfigResponse, PacketOutError,
    ReadRequest, ReadResponse, SetForwardingPipelineConfigRequest,
    SetForwardingPipelineConfigResponse, StreamError, StreamMessageRequest, StreamMessageResponse,
    WriteRequest, WriteResponse,
};
use talaria_tables::p4runtime::{check, Fit, Mismatch};
use tokio::sync::{mpsc, watch};
use tokio_stream::{wrappers::UnboundedReceiverStream, Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::{
    entry::{Table, Target},
    server::{
        arbitration::{check_role, Arbitration, StreamTx},
        pipeline::{check_p4info, Effect, PipelineState},
        write::UpdateError,
    },
};

/// The P4Runtime version this server reports, as bmv2 does.
pub const P4RUNTIME_API_VERSION: &str = "1.3.0";

/// Counts of Write updates by type and outcome, for metrics.
#[derive(Debug, Default)]
pub struct WriteStats {
    /// `[insert, modify, delete][ok, failed]`.
    pub updates: [[AtomicU64; 2]; 3],
}

/// Why a [`Switch`] cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The embedded P4Info describes something other than the tables
    /// `talaria_tables` defines and this switch implements.
    #[error("the embedded P4Info does not match this switch")]
    P4Info(#[source] Mismatch),
    /// The persisted pipeline could not be loaded.
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
}

/// The state the RPCs share.
pub struct Switch {
    device_id: u64,
    /// The P4Info this switch implements (`talaria_tables::p4info()`); a
    /// pushed pipeline must be equal to it.
    p4info: P4Info,
    target: Arc<dyn Target>,
    arbitration: Mutex<Arbitration>,
    pipeline: RwLock<PipelineState>,
    state_dir: Option<PathBuf>,
    next_stream: AtomicU64,
    shutdown: watch::Receiver<bool>,
    /// Write outcomes, for metrics.
    pub stats: WriteStats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Switch {
    /// A switch over `target`, serving the embedded talaria P4Info once it
    /// has checked that the P4Info describes exactly the tables and
    /// counters implemented. When `state_dir` holds a committed pipeline
    /// from an earlier run (and it is still the talaria pipeline), the
    /// switch starts configured: its pinned tables are still in use.
    pub fn new(
        device_id: u64,
        target: Arc<dyn Target>,
        state_dir: Option<PathBuf>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, StartError> {
        let p4info = talaria_tables::p4info();
        check(&p4info, Fit::Exactly).map_err(StartError::P4Info)?;
        let mut state = PipelineState::default();
        if let Some(dir) = &state_dir {
            if let Some(c) = pipeline::load(dir)? {
                match c.p4info.as_ref().map(|p| check_p4info(&p4info, p)) {
                    Some(Ok(())) => {
                        info!(dir = %dir.display(), "restored the committed pipeline config");
                        state.committed = Some(c);
                    }
                    Some(Err(why)) => {
                        warn!(dir = %dir.display(), %why, "ignoring a persisted pipeline that is not talaria's")
                    }
                    None => {
                        warn!(dir = %dir.display(), "ignoring a persisted pipeline without P4Info")
                    }
                }
            }
        }
        Ok(Self {
            device_id,
            p4info,
            target,
            arbitration: Mutex::new(Arbitration::new(device_id)),
            pipeline: RwLock::new(state),
            state_dir,
            next_stream: AtomicU64::new(1),
            shutdown,
            stats: WriteStats::default(),
        })
    }

    /// The table store.
    pub fn target(&self) -> &Arc<dyn Target> {
        &self.target
    }

    /// The P4Info this switch implements.
    pub fn p4info(&self) -> &P4Info {
        &self.p4info
    }

    /// Whether a pipeline is committed.
    pub fn configured(&self) -> bool {
        self.pipeline
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .committed
            .is_some()
    }

    fn check_device(&self, device_id: u64) -> Result<(), Status> {
        if device_id == self.device_id {
            Ok(())
        } else {
            Err(Status::not_found(format!(
                "unknown device id {device_id} (this switch is device {})",
                self.device_id
            )))
        }
    }

    fn check_configured(&self) -> Result<(), Status> {
        if self.configured() {
            Ok(())
        } else {
            Err(Status::failed_precondition(
                "no forwarding pipeline config: call SetForwardingPipelineConfig first",
            ))
        }
    }

    /// Empties every table (VERIFY_AND_COMMIT resets the forwarding state).
    fn clear_tables(&self) -> Result<(), Status> {
        for &table in Table::ALL {
            let entries = self
                .target
                .entries(table)
                .map_err(|e| Status::internal(e.to_string()))?;
            for e in entries {
                match self.target.delete(&e.key()) {
                    Ok(()) | Err(crate::entry::TargetError::NotFound) => {}
                    Err(e) => return Err(Status::internal(format!("clearing {table}: {e}"))),
                }
            }
        }
        Ok(())
    }

    fn write(&self, req: &WriteRequest) -> Result<(), Status> {
        self.check_device(req.device_id)?;
        check_role(&req.role)?;
        lock(&self.arbitration).check_primary(req.election_id.as_ref())?;
        self.check_configured()?;
        write::check_atomicity(req)?;
        let mut results = Vec::with_capacity(req.updates.len());
        let mut failed = false;
        // Counted per batch: one atomic add per cell, not per update.
        let mut counts = [[0u64; 2]; 3];
        for u in &req.updates {
            let r = write::apply(self.target.as_ref(), u);
            let op = (u.r#type - 1).clamp(0, 2) as usize;
            counts[op][usize::from(r.is_err())] += 1;
            if let Err(e) = &r {
                debug!(code = ?e.code, message = %e.message, "update failed");
                failed = true;
            }
            results.push(r);
        }
        for (cells, n) in self.stats.updates.iter().zip(counts) {
            for (cell, n) in cells.iter().zip(n) {
                if n != 0 {
                    cell.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
        if failed {
            Err(write::batch_status(&results))
        } else {
            Ok(())
        }
    }

    fn set_pipeline(&self, req: SetForwardingPipelineConfigRequest) -> Result<(), Status> {
        self.check_device(req.device_id)?;
        check_role(&req.role)?;
        lock(&self.arbitration).check_primary(req.election_id.as_ref())?;
        let action = SetAction::try_from(req.action)
            .map_err(|_| Status::invalid_argument(format!("unknown action {}", req.action)))?;
        let config = match (action, req.config) {
            (SetAction::Commit, None) => None,
            (SetAction::Commit, Some(c)) if c.p4info.is_none() => None,
            (_, None) => {
                return Err(Status::invalid_argument(format!(
                    "{} needs a config",
                    action.as_str_name()
                )))
            }
            (_, Some(c)) => {
                let p4info = c
                    .p4info
                    .as_ref()
                    .ok_or_else(|| Status::invalid_argument("config has no P4Info"))?;
                check_p4info(&self.p4info, p4info).map_err(|why| {
                    Status::invalid_argument(format!(
                        "this switch implements only the talaria pipeline (p4/talaria.p4info.txtpb): {why}"
                    ))
                })?;
                Some(c)
            }
        };
        let mut state = self.pipeline.write().unwrap_or_else(|e| e.into_inner());
        let effect = state.set(action, config)?;
        if effect == Effect::CommitAndClear {
            self.clear_tables()?;
        }
        if effect != Effect::None {
            if let Some(dir) = &self.state_dir {
                if let Err(e) = pipeline::persist(dir, state.committed.as_ref()) {
                    warn!(error = %e, "cannot persist the pipeline config; a restarted agent will need it pushed again");
                }
            }
            info!(action = action.as_str_name(), cookie = ?state.committed.as_ref().and_then(|c| c.cookie).map(|c| c.cookie), "pipeline committed");
        }
        Ok(())
    }

    fn handle_stream(self: Arc<Self>, mut inbound: Streaming<StreamMessageRequest>, tx: StreamTx) {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut device: Option<u64> = None;
            loop {
                let msg = tokio::select! {
                    m = inbound.next() => m,
                    _ = shutdown.wait_for(|s| *s) => {
                        let _ = tx.send(Err(Status::unavailable("switch-agent is shutting down")));
                        break;
                    }
                };
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        debug!(stream, error = %e, "stream error from client");
                        break;
                    }
                    None => break,
                };
                if let Err(status) = self.stream_message(stream, &mut device, msg, &tx) {
                    debug!(stream, %status, "closing stream");
                    let _ = tx.send(Err(status));
                    break;
                }
            }
            lock(&self.arbitration).remove(stream);
            debug!(stream, "stream closed");
        });
    }

    fn stream_message(
        &self,
        stream: u64,
        device: &mut Option<u64>,
        msg: StreamMessageRequest,
        tx: &StreamTx,
    ) -> Result<(), Status> {
        use stream_message_request::Update;
        match msg.update {
            Some(Update::Arbitration(a)) => {
                if device.is_some_and(|d| d != a.device_id) {
                    return Err(Status::failed_precondition(
                        "the device id of a stream cannot change",
                    ));
                }
                lock(&self.arbitration).update(stream, &a, tx)?;
                *device = Some(a.device_id);
                Ok(())
            }
            _ if device.is_none() => Err(Status::failed_precondition(
                "the first message on a stream must be a MasterArbitrationUpdate",
            )),
            Some(Update::Packet(p)) => {
                let err = StreamError {
                    canonical_code: Code::Unimplemented as i32,
                    message: "PacketOut is not supported: the talaria pipeline has no CPU port"
                        .into(),
                    details: Some(stream_error::Details::PacketOut(PacketOutError {
                        packet_out: Some(p),
                    })),
                    ..Default::default()
                };
                let _ = tx.send(Ok(StreamMessageResponse {
                    update: Some(stream_message_response::Update::Error(err)),
                }));
                Ok(())
            }
            Some(_) => {
                let err = StreamError {
                    canonical_code: Code::Unimplemented as i32,
                    message: "only arbitration is supported on this stream".into(),
                    ..Default::default()
                };
                let _ = tx.send(Ok(StreamMessageResponse {
                    update: Some(stream_message_response::Update::Error(err)),
                }));
                Ok(())
            }
            None => Err(Status::invalid_argument("empty stream message")),
        }
    }
}

/// The tonic service.
#[derive(Clone)]
pub struct P4RuntimeService {
    switch: Arc<Switch>,
}

impl P4RuntimeService {
    pub fn new(switch: Arc<Switch>) -> Self {
        Self { switch }
    }

    /// The tonic server for this service, with message limits raised for
    /// large P4Infos and reads.
    pub fn into_server(self) -> P4RuntimeServer<Self> {
        P4RuntimeServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl P4Runtime for P4RuntimeService {
    async fn write(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        let switch = self.switch.clone();
        let req = request.into_inner();
        // Map operations are syscalls: keep them off the async workers for
        // big batches.
        if req.updates.len() > 64 {
            tokio::task::spawn_blocking(move || switch.write(&req))
                .await
                .map_err(|e| Status::internal(e.to_string()))??;
        } else {
            switch.write(&req)?;
        }
        Ok(Response::new(WriteResponse {}))
    }

    type ReadStream = BoxStream<ReadResponse>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let req = request.into_inner();
        self.switch.check_device(req.device_id)?;
        check_role(&req.role)?;
        self.switch.check_configured()?;
        let switch = self.switch.clone();
        let chunks =
            tokio::task::spawn_blocking(move || read::read(switch.target.as_ref(), &req.entities))
                .await
                .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            chunks.into_iter().map(Ok),
        ))))
    }

    async fn set_forwarding_pipeline_config(
        &self,
        request: Request<SetForwardingPipelineConfigRequest>,
    ) -> Result<Response<SetForwardingPipelineConfigResponse>, Status> {
        let switch = self.switch.clone();
        let req = request.into_inner();
        tokio::task::spawn_blocking(move || switch.set_pipeline(req))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(SetForwardingPipelineConfigResponse {}))
    }

    async fn get_forwarding_pipeline_config(
        &self,
        request: Request<GetForwardingPipelineConfigRequest>,
    ) -> Result<Response<GetForwardingPipelineConfigResponse>, Status> {
        let req = request.into_inner();
        self.switch.check_device(req.device_id)?;
        let rt = ResponseType::try_from(req.response_type).map_err(|_| {
            Status::invalid_argument(format!("unknown response type {}", req.response_type))
        })?;
        self.switch.check_configured()?;
        let config = self
            .switch
            .pipeline
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(rt);
        Ok(Response::new(GetForwardingPipelineConfigResponse {
            config: Some(config),
        }))
    }

    type StreamChannelStream = BoxStream<StreamMessageResponse>;

    async fn stream_channel(
        &self,
        request: Request<Streaming<StreamMessageRequest>>,
    ) -> Result<Response<Self::StreamChannelStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.switch.clone().handle_stream(request.into_inner(), tx);
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn capabilities(
        &self,
        _: Request<CapabilitiesRequest>,
    ) -> Result<Response<CapabilitiesResponse>, Status> {
        Ok(Response::new(CapabilitiesResponse {
            p4runtime_api_version: P4RUNTIME_API_VERSION.into(),
            ..Default::default()
        }))
    }
}

/// Serves P4Runtime for `switch` on `listener` until `shutdown` turns true.
pub async fn serve(
    switch: Arc<Switch>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    // The builder's `tcp_nodelay` does not reach sockets we accept
    // ourselves; without it a WriteResponse's trailers wait out the
    // client's delayed ACK (~40 ms a Write).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(P4RuntimeService::new(switch).into_server())
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}

/// Binds `addr` (port 0 picks a free one) and returns the listener and the
/// address it got.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

impl From<UpdateError> for Status {
    fn from(e: UpdateError) -> Self {
        Status::new(e.code, e.message)
    }
}
