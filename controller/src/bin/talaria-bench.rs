//! talaria-bench: N Services × M endpoints synced by an in-process
//! controller into a P4Runtime switch (switch-agent, or the in-memory fake
//! with `--fake`). Prints a table:
//! - full sync: wall time from controller start to the switch holding every
//!   entry, and entries/s;
//! - incremental: latency from an EndpointSlice change (one endpoint
//!   replaced) to a bucket naming the new backend being readable through a
//!   P4Runtime Read (buckets are written last), p50/p99;
//! - RSS of this process: the controller (its source holds the objects),
//!   plus the fake with `--fake`; run `--serve-fake ADDR` in another
//!   process and `--switch http://ADDR` here to measure the controller
//!   alone against the fake.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use k8s_openapi::{
    api::{
        core::v1::{Node, NodeAddress, NodeSpec, NodeStatus, Service, ServicePort, ServiceSpec},
        discovery::v1::{Endpoint, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use talaria_controller::{
    buckets::BucketPolicy,
    config::{Config, SwitchConfig},
    controller::{self, Context},
    p4rt::{client, fake},
    source::{MemorySource, Objects},
    types::{Proto, ServiceKey},
};
use talaria_p4rt::p4::v1;
use talaria_tables::{
    lb_bucket,
    p4runtime::{decode, encode_key, ActionUse, Decoded},
    Entry, EntryKey,
};

#[derive(Debug, Parser)]
#[command(about = "Full-sync and incremental-update benchmark of talaria-controller")]
struct Cli {
    /// P4Runtime address of a running switch-agent (e.g. http://127.0.0.1:9559).
    #[arg(long, conflicts_with = "fake")]
    switch: Option<String>,
    /// Use the in-process fake P4Runtime server instead (no table limits).
    #[arg(long)]
    fake: bool,
    /// Only serve the fake P4Runtime server on this address, until killed
    /// (to bench against the fake in another process, so this process's
    /// RSS is the controller's alone).
    #[arg(long, conflicts_with_all = ["fake", "switch"])]
    serve_fake: Option<std::net::SocketAddr>,
    /// Services.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Nodes (pod CIDRs).
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Incremental updates to time.
    #[arg(long, default_value_t = 200)]
    updates: usize,
    /// Buckets per backend (before rounding to a power of two).
    #[arg(long, default_value_t = BucketPolicy::default().per_backend)]
    per_backend: u32,
    /// Fewest buckets per service.
    #[arg(long, default_value_t = BucketPolicy::default().min)]
    min_buckets: u32,
    /// Most buckets per service.
    #[arg(long, default_value_t = BucketPolicy::default().max)]
    max_buckets: u32,
    /// Updates per P4Runtime Write.
    #[arg(long, default_value_t = 1000)]
    write_batch: usize,
    /// Writes in flight at once.
    #[arg(long, default_value_t = Config::default().write_pipeline)]
    write_pipeline: usize,
    /// P4Info.
    #[arg(long, default_value = "p4/talaria.p4info.txtpb")]
    p4info: std::path::PathBuf,
}

fn meta(ns: Option<&str>, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: ns.map(String::from),
        ..Default::default()
    }
}

/// A unique pod address per (service, endpoint, generation) in 11.0.0.0/8
/// (the endpoint names its node, so no pod CIDR lookup is needed), and the
/// node it runs on.
fn pod_ip(
    svc: usize,
    ep: usize,
    nodes: usize,
    gen: usize,
    shape: (usize, usize),
) -> (Ipv4Addr, usize) {
    let (services, endpoints) = shape;
    let u = ((gen * services + svc) * endpoints + ep) as u32;
    (
        Ipv4Addr::from(u32::from(Ipv4Addr::new(11, 0, 0, 1)) + u),
        (svc + ep) % nodes,
    )
}

fn slice_for(
    svc: usize,
    endpoints: usize,
    nodes: usize,
    gens: &[usize],
    services: usize,
) -> EndpointSlice {
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(
        "kubernetes.io/service-name".to_string(),
        format!("svc-{svc}"),
    );
    EndpointSlice {
        metadata: ObjectMeta {
            labels: Some(labels),
            ..meta(Some("bench"), format!("svc-{svc}-1"))
        },
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        endpoints: (0..endpoints)
            .map(|e| {
                let (ip, n) = pod_ip(svc, e, nodes, gens[e], (services, endpoints));
                Endpoint {
                    addresses: vec![ip.to_string()],
                    node_name: Some(format!("node-{n}")),
                    ..Default::default()
                }
            })
            .collect(),
    }
}

fn vip(svc: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + svc as u32 + 1)
}

/// A `/proc/self/status` memory line (`VmRSS`, `VmHWM`) in MB.
fn status_mb(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| k / 1024.0)
        .unwrap_or(0.0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    if let Some(addr) = cli.serve_fake {
        let server = fake::spawn(fake::FakeSwitch::default(), addr)?;
        println!("fake P4Runtime server on {}", server.addr);
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }
    let (address, target) = match (&cli.switch, cli.fake) {
        (Some(a), _) => (a.clone(), "switch-agent"),
        (None, true) => {
            let server = fake::spawn(fake::FakeSwitch::default(), "127.0.0.1:0".parse()?)?;
            let addr = server.addr;
            std::mem::forget(server);
            (format!("http://{addr}"), "fake (in-process)")
        }
        (None, false) => bail!("give --switch ADDRESS or --fake"),
    };

    // Objects.
    let mut objs = Objects::default();
    for n in 0..cli.nodes {
        objs.put_node(Node {
            metadata: meta(None, format!("node-{n}")),
            spec: Some(NodeSpec {
                pod_cidr: Some(format!("10.{}.{}.0/24", 100 + n / 256, n % 256)),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: format!("192.168.{}.{}", n / 250, n % 250 + 1),
                }]),
                ..Default::default()
            }),
        });
    }
    let mut gens = vec![vec![0usize; cli.endpoints]; cli.services];
    for (s, g) in gens.iter().enumerate() {
        objs.put_service(Service {
            metadata: meta(Some("bench"), format!("svc-{s}")),
            spec: Some(ServiceSpec {
                cluster_ip: Some(vip(s).to_string()),
                selector: Some([("app".to_string(), format!("svc-{s}"))].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("http".into())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        });
        objs.put_slice(slice_for(s, cli.endpoints, cli.nodes, g, cli.services));
    }
    let src = MemorySource::new();
    src.replace(objs);
    let rss_objects = status_mb("VmRSS:");

    let config = Config {
        switches: vec![SwitchConfig {
            id: "bench".into(),
            address: address.clone(),
            device_id: 1,
        }],
        p4info: cli.p4info.clone(),
        buckets: BucketPolicy {
            per_backend: cli.per_backend,
            min: cli.min_buckets,
            max: cli.max_buckets,
            shrink_factor: 4,
        },
        write_batch: cli.write_batch,
        write_pipeline: cli.write_pipeline,
        debounce_ms: Duration::ZERO,
        ..Config::default()
    };
    let info = talaria_p4rt::p4info::load(&cli.p4info)
        .with_context(|| format!("{}", cli.p4info.display()))?;
    let t0 = Instant::now();
    let ctx = Context::new(config, src.clone(), src.changed.clone(), info, Vec::new())?;
    let mut tasks = tokio::task::JoinSet::new();
    controller::spawn(&ctx, &mut tasks);
    loop {
        if ctx.ready().is_ok() {
            break;
        }
        let st = ctx.switches[0].status.read().unwrap().clone();
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("full sync did not finish in 600 s: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let full = t0.elapsed();
    let entries = ctx.desired_len();
    let st = ctx.switches[0].status.read().unwrap().clone();
    let rss_full = status_mb("VmRSS:");

    // Incremental updates.
    let mut reader = client::channel(&address, Duration::from_secs(3)).await?;
    let mut lat = Vec::new();
    let mut missing = 0;
    for u in 0..cli.updates {
        let s = (u * 7919) % cli.services;
        let e = u % cli.endpoints;
        gens[s][e] += 1;
        let slice = slice_for(s, cli.endpoints, cli.nodes, &gens[s], cli.services);
        let (new_ip, _) = pod_ip(s, e, cli.nodes, gens[s][e], (cli.services, cli.endpoints));
        let before = ctx.version();
        let t = Instant::now();
        src.update(|o| o.put_slice(slice));
        // Wait for the plan, then Read back a bucket that names the new
        // backend: buckets are written last (after the backend and its
        // cookie_check), so this is the moment new flows can reach it.
        let key = ServiceKey {
            vip: vip(s).into(),
            port: 80,
            proto: Proto::Tcp,
        };
        let planned = loop {
            if ctx.version() > before {
                let p = ctx.planned.read().expect("poisoned");
                break p.planner.desired().port(&key).and_then(|p| {
                    let (&id, _) = p.active.iter().find(|(_, b)| b.ip == new_ip)?;
                    let bucket = p.buckets.iter().position(|&b| b == id)?;
                    Some((p.service_id, bucket as u16, id))
                });
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        let Some((service_id, bucket, id)) = planned else {
            missing += 1;
            continue;
        };
        let probe = encode_key(&EntryKey::LbBucket(lb_bucket::Key { service_id, bucket }));
        loop {
            let mut stream = reader
                .read(v1::ReadRequest {
                    device_id: 1,
                    entities: vec![v1::Entity {
                        entity: Some(v1::entity::Entity::TableEntry(probe.clone())),
                    }],
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut found = false;
            while let Some(r) = futures::StreamExt::next(&mut stream).await {
                for e in r.into_iter().flat_map(|r| r.entities) {
                    if let Some(v1::entity::Entity::TableEntry(te)) = e.entity {
                        found |= matches!(
                            decode(&te, ActionUse::Required),
                            Ok(Decoded::Entry(Entry::LbBucket(e)))
                                if e.action == (lb_bucket::Action::SelectBackend { backend_id: id })
                        );
                    }
                }
            }
            if found {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("update {u} not visible after 10 s");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let rss_end = status_mb("VmRSS:");
    let rss_peak = status_mb("VmHWM:");
    let (p50, p99) = (pct(&mut lat.clone(), 0.5), pct(&mut lat, 0.99));

    println!("target                 {target} ({address})");
    println!(
        "services x endpoints   {} x {}",
        cli.services, cli.endpoints
    );
    println!(
        "bucket policy          per_backend={} min={} max={}",
        cli.per_backend, cli.min_buckets, cli.max_buckets
    );
    println!("entries (desired)      {entries}");
    println!("entries per table      {:?}", st.entries);
    println!(
        "updates written        {} (errors {})",
        st.updates_written, st.write_errors
    );
    println!("full sync              {:.3} s", full.as_secs_f64());
    println!(
        "entries/s              {:.0}",
        entries as f64 / full.as_secs_f64()
    );
    println!(
        "incremental (n={})    p50 {:.2} ms  p99 {:.2} ms{}",
        cli.updates - missing,
        p50,
        p99,
        if missing > 0 {
            format!(" ({missing} not planned)")
        } else {
            String::new()
        }
    );
    println!("RSS (objects only)     {rss_objects:.1} MB before the controller starts");
    println!(
        "RSS ({})  {rss_full:.1} MB after full sync, {rss_end:.1} MB at end, {rss_peak:.1} MB peak",
        if cli.fake {
            "controller + fake"
        } else {
            "controller"
        }
    );
    tasks.abort_all();
    Ok(())
}
