//! P4Runtime write throughput over loopback gRPC: a switch-agent server
//! and a tonic client in one process, INSERT then DELETE of `lb_bucket`
//! entries in batches of 1 and of 1000. Prints a table.
//!
//! Two clients: `prost`, the generated tonic client, which encodes each
//! request while it is timed; and `raw`, which sends requests encoded
//! before the clock starts, so that the row measures the server (gRPC
//! transport, protobuf decode, entry decoding and validation, map writes)
//! and not the client's protobuf encoding, which on a real controller runs
//! on another machine. `cpu us/entry` is the CPU time of the whole process
//! (client and server) per entry, which a busy machine disturbs much less
//! than the wall-clock rate.
//!
//!     cargo run --release -p talaria-switch --bin p4rt-write-bench [-- --entries N]
//!
//! Two targets: the in-memory table store (the cost of gRPC, protobuf and
//! entry decoding alone) and, when run as root, the eBPF data plane on no
//! ports with a private pin directory (one map syscall more per entry),
//! detached afterwards.

use std::{sync::Arc, time::Instant};

use anyhow::{Context, Result};
use bytes::{BufMut, Bytes};
use prost::Message;
use talaria_p4rt::p4::v1::{
    entity, forwarding_pipeline_config, p4_runtime_client::P4RuntimeClient,
    set_forwarding_pipeline_config_request::Action as SetAction, stream_message_request,
    stream_message_response, update::Type, Entity, ForwardingPipelineConfig,
    MasterArbitrationUpdate, SetForwardingPipelineConfigRequest, StreamMessageRequest, TableEntry,
    Uint128, Update, WriteRequest, WriteResponse,
};
use talaria_switch::{
    entry::{Table, Target},
    memory::MemoryTarget,
    server::{self, Switch},
};
use talaria_tables::{build, p4runtime::encode};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
    Status,
};

/// Sends an already encoded `WriteRequest` and decodes the `WriteResponse`.
struct RawWrite;

struct RawEncoder;

struct WriteResponseDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for WriteResponseDecoder {
    type Item = WriteResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<WriteResponse>, Status> {
        WriteResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Codec for RawWrite {
    type Encode = Bytes;
    type Decode = WriteResponse;
    type Encoder = RawEncoder;
    type Decoder = WriteResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> WriteResponseDecoder {
        WriteResponseDecoder
    }
}

/// The two clients over one channel.
struct Clients {
    prost: P4RuntimeClient<Channel>,
    raw: tonic::client::Grpc<Channel>,
}

/// How the client sends its requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    /// The generated client: encodes while timed.
    Prost,
    /// Pre-encoded requests ([`RawWrite`]).
    Raw,
}

impl ClientKind {
    fn name(self) -> &'static str {
        match self {
            Self::Prost => "prost",
            Self::Raw => "raw",
        }
    }
}

/// CPU time (user + system) of this process so far, in seconds, from
/// /proc/self/stat (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

const ELECTION: Option<Uint128> = Some(Uint128 { high: 0, low: 1 });

/// `lb_bucket` entry `i`: service `i >> 16`, bucket `i & 0xffff`, backend
/// `i`.
fn bucket_entry(i: u32) -> TableEntry {
    encode(&build::bucket((i >> 16) as u16, i as u16, i))
}

fn update(kind: Type, te: TableEntry) -> Update {
    Update {
        r#type: kind as i32,
        entity: Some(Entity {
            entity: Some(entity::Entity::TableEntry(te)),
        }),
    }
}

/// Writes `entries` entries as `kind` in batches of `batch`; entries/s
/// and CPU microseconds per entry.
async fn run(
    clients: &mut Clients,
    how: ClientKind,
    kind: Type,
    base: u32,
    entries: u32,
    batch: u32,
) -> Result<(f64, f64)> {
    // Build the requests first: the client's own protobuf work is not the
    // server's throughput.
    let reqs: Vec<WriteRequest> = (0..entries.div_ceil(batch))
        .map(|b| WriteRequest {
            device_id: 1,
            election_id: ELECTION,
            updates: (b * batch..((b + 1) * batch).min(entries))
                .map(|i| update(kind, bucket_entry(base + i)))
                .collect(),
            ..Default::default()
        })
        .collect();
    let encoded: Vec<Bytes> = match how {
        ClientKind::Prost => Vec::new(),
        ClientKind::Raw => reqs.iter().map(|r| r.encode_to_vec().into()).collect(),
    };
    let path = PathAndQuery::from_static("/p4.v1.P4Runtime/Write");
    let (start, cpu) = (Instant::now(), cpu_seconds());
    match how {
        ClientKind::Prost => {
            for r in reqs {
                clients.prost.write(r).await.context("write")?;
            }
        }
        ClientKind::Raw => {
            for r in encoded {
                clients.raw.ready().await.context("channel")?;
                clients
                    .raw
                    .unary(tonic::Request::new(r), path.clone(), RawWrite)
                    .await
                    .context("write")?;
            }
        }
    }
    let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    Ok((f64::from(entries) / wall, cpu * 1e6 / f64::from(entries)))
}

/// Starts a server over `target`, becomes primary, commits the pipeline and
/// prints the throughput rows for `target_name`.
async fn bench(target_name: &str, target: Arc<dyn Target>, entries: u32) -> Result<()> {
    let (stop, stop_rx) = watch::channel(false);
    let switch = Arc::new(Switch::new(1, target, None, stop_rx.clone())?);
    let p4info = switch.p4info().clone();
    let (listener, addr) = server::bind(([127, 0, 0, 1], 0).into()).await?;
    let server = tokio::spawn(server::serve(switch, listener, stop_rx));

    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = P4RuntimeClient::new(channel.clone());
    let raw = tonic::client::Grpc::new(channel);
    let (tx, rx) = mpsc::channel(4);
    tx.send(StreamMessageRequest {
        update: Some(stream_message_request::Update::Arbitration(
            MasterArbitrationUpdate {
                device_id: 1,
                election_id: ELECTION,
                ..Default::default()
            },
        )),
    })
    .await?;
    let mut stream = client
        .stream_channel(ReceiverStream::new(rx))
        .await?
        .into_inner();
    match stream.message().await?.and_then(|m| m.update) {
        Some(stream_message_response::Update::Arbitration(a))
            if a.status.as_ref().is_some_and(|s| s.code == 0) => {}
        other => anyhow::bail!("not primary: {other:?}"),
    }
    client
        .set_forwarding_pipeline_config(SetForwardingPipelineConfigRequest {
            device_id: 1,
            election_id: ELECTION,
            action: SetAction::VerifyAndCommit as i32,
            config: Some(ForwardingPipelineConfig {
                p4info: Some(p4info),
                cookie: Some(forwarding_pipeline_config::Cookie { cookie: 1 }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    let mut clients = Clients { prost: client, raw };

    let single = (entries / 20).max(1);
    for (how, batch, n) in [
        (ClientKind::Prost, 1u32, single),
        (ClientKind::Prost, 1000, entries),
        (ClientKind::Raw, 1000, entries),
    ] {
        for (kind, op) in [(Type::Insert, "insert"), (Type::Delete, "delete")] {
            let (rate, cpu) = run(&mut clients, how, kind, 0, n, batch).await?;
            println!(
                "{target_name:<9} {:<7} {op:<7} {batch:>6} {n:>9} {rate:>12.0} {cpu:>14.2}",
                how.name()
            );
        }
    }
    drop((tx, stream));
    let _ = stop.send(true);
    let _ = server.await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut entries = 100_000u32;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--entries" => entries = args.next().context("--entries N")?.parse()?,
            _ => anyhow::bail!("usage: p4rt-write-bench [--entries N]"),
        }
    }
    println!("P4Runtime write throughput over loopback gRPC (lb_bucket entries; batch 1 runs entries/20)");
    println!(
        "{:<9} {:<7} {:<7} {:>6} {:>9} {:>12} {:>14}",
        "target", "client", "op", "batch", "entries", "entries/s", "cpu us/entry"
    );
    bench(
        "memory",
        Arc::new(MemoryTarget::with_sizes(|_| u32::MAX)),
        entries,
    )
    .await?;

    // The eBPF data plane, on no ports, with its own pin directory.
    let pin_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/talaria-p4rt-bench-{}",
        std::process::id()
    ));
    let config = talaria_switch_dataplane::Config {
        pin_dir: pin_dir.clone(),
        ports: Default::default(),
    };
    match talaria_switch_dataplane::Dataplane::open(config) {
        Ok(dp) => {
            let dp = Arc::new(dp);
            // lb_bucket holds LB_BUCKET_SIZE entries.
            let n = entries.min(Table::LbBucket.size());
            let r = bench("ebpf", dp.clone(), n).await;
            if let Ok(dp) = Arc::try_unwrap(dp) {
                dp.detach()?;
            }
            r?;
        }
        Err(e) => println!("ebpf      (skipped: cannot open the data plane: {e}; needs root)"),
    }
    Ok(())
}
