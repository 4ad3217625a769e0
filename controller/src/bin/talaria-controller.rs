//! talaria-controller: Services/EndpointSlices (from Kubernetes or YAML
//! files) → talaria switch tables over P4Runtime, plus the REST API.

use std::{path::PathBuf, sync::Arc};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use talaria_controller::{
    api,
    config::{Config, LeaderElectionConfig, SourceConfig, SwitchConfig},
    controller::{self, Context, Source},
    metrics::SkipLabel,
    source::{files, MemorySource},
};
use tracing::info;
use tracing_subscriber::EnvFilter;

/// Command line; every flag overrides the config file.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// YAML config file (see `Config`); defaults apply without one.
    #[arg(long, short, env = "TALARIA_CONFIG")]
    config: Option<PathBuf>,
    /// Read manifests from this directory instead of Kubernetes.
    #[arg(long, conflicts_with = "kubernetes")]
    manifests: Option<PathBuf>,
    /// Read from the Kubernetes API (kubeconfig or in-cluster).
    #[arg(long)]
    kubernetes: bool,
    /// Leader election on a coordination.k8s.io/v1 Lease (needs the
    /// Kubernetes source): only the holder writes to the switches, the
    /// others plan and stand by.
    #[arg(long)]
    leader_elect: bool,
    /// Lease namespace (default: $POD_NAMESPACE, else talaria-system).
    #[arg(long, requires = "leader_elect")]
    lease_namespace: Option<String>,
    /// Lease name (default: talaria-controller).
    #[arg(long, requires = "leader_elect")]
    lease_name: Option<String>,
    /// Lease duration in seconds.
    #[arg(long, requires = "leader_elect")]
    lease_seconds: Option<u32>,
    /// Holder identity (default: $POD_NAME, else the hostname).
    #[arg(long, requires = "leader_elect")]
    lease_identity: Option<String>,
    /// A switch as `ID=http://HOST:PORT[@DEVICE_ID]`; repeatable; replaces
    /// the config's list.
    #[arg(long = "switch")]
    switches: Vec<String>,
    /// P4Info file.
    #[arg(long)]
    p4info: Option<PathBuf>,
    /// REST listen address.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// P4Runtime election id.
    #[arg(long)]
    election_id: Option<u64>,
    /// Id quarantine in milliseconds.
    #[arg(long)]
    id_quarantine_ms: Option<u64>,
    /// Log filter when RUST_LOG is unset.
    #[arg(long, default_value = "info")]
    log: String,
}

fn parse_switch(s: &str) -> Result<SwitchConfig> {
    let Some((id, rest)) = s.split_once('=') else {
        bail!("--switch wants ID=ADDRESS[@DEVICE], got {s:?}");
    };
    let (address, device_id) = match rest.rsplit_once('@') {
        Some((a, d)) => (a.to_string(), d.parse().context("device id")?),
        None => (rest.to_string(), 1),
    };
    Ok(SwitchConfig {
        id: id.into(),
        address,
        device_id,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&cli.log))?;
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let mut config = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(d) = cli.manifests {
        config.source = SourceConfig::Files {
            dir: d,
            poll_ms: std::time::Duration::from_millis(500),
        };
    }
    if cli.kubernetes && !matches!(config.source, SourceConfig::Kubernetes { .. }) {
        config.source = SourceConfig::Kubernetes {
            leader_election: None,
        };
    }
    if cli.leader_elect {
        let SourceConfig::Kubernetes { leader_election } = &mut config.source else {
            bail!("--leader-elect needs the Kubernetes source (--kubernetes)");
        };
        let le = leader_election.get_or_insert_with(|| LeaderElectionConfig {
            namespace: std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "talaria-system".into()),
            name: "talaria-controller".into(),
            identity: None,
            lease_seconds: 15,
        });
        if let Some(ns) = cli.lease_namespace {
            le.namespace = ns;
        }
        if let Some(n) = cli.lease_name {
            le.name = n;
        }
        if let Some(s) = cli.lease_seconds {
            le.lease_seconds = s;
        }
        if let Some(i) = cli.lease_identity {
            le.identity = Some(i);
        }
    }
    if !cli.switches.is_empty() {
        config.switches = cli
            .switches
            .iter()
            .map(|s| parse_switch(s))
            .collect::<Result<_>>()?;
    }
    if let Some(p) = cli.p4info {
        config.p4info = p;
    }
    if let Some(l) = cli.listen {
        config.listen = l;
    }
    if let Some(e) = cli.election_id {
        config.election_id = e;
    }
    if let Some(q) = cli.id_quarantine_ms {
        config.id_quarantine_ms = std::time::Duration::from_millis(q);
    }

    let p4info = talaria_p4rt::p4info::load(&config.p4info)
        .with_context(|| format!("loading P4Info {}", config.p4info.display()))?;
    let device_config = match &config.device_config {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => Vec::new(),
    };

    let mut tasks = tokio::task::JoinSet::new();
    let mut election = None;
    let (source, changed): (Arc<dyn Source>, _) = match config.source.clone() {
        SourceConfig::Files { dir, poll_ms } => {
            let src = MemorySource::new();
            let changed = src.changed.clone();
            (
                src.clone() as Arc<dyn Source>,
                (changed, Some((dir, poll_ms, src))),
            )
        }
        SourceConfig::Kubernetes { leader_election } => {
            let client = kube::Client::try_default()
                .await
                .context("Kubernetes client")?;
            let (src, run) = talaria_controller::source::kube::start(client.clone());
            let changed = src.changed.clone();
            tasks.spawn(run);
            election = leader_election.map(|le| (client, le));
            (src as Arc<dyn Source>, (changed, None))
        }
    };
    let (changed, files_source) = changed;
    let ctx = Context::new(config.clone(), source, changed, p4info, device_config)?;
    if let Some((dir, poll, src)) = files_source {
        let c = ctx.clone();
        tasks.spawn(files::watch_dir(dir, poll, src, move |bad| {
            c.metrics
                .skipped
                .get_or_create(&SkipLabel {
                    kind: "File".into(),
                    reason: "bad_document".into(),
                })
                .set(bad.len() as i64);
        }));
    }
    if let Some((client, le)) = election {
        info!(namespace = %le.namespace, name = %le.name, "leader election on");
        tasks.spawn(talaria_controller::source::kube::elect(&ctx, client, le));
    }
    controller::spawn(&ctx, &mut tasks);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    info!(addr = %listener.local_addr()?, switches = config.switches.len(), "REST API listening");
    {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            if let Err(e) = api::serve(ctx, listener).await {
                tracing::error!(%e, "REST API failed");
            }
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: exiting"),
        _ = term.recv() => info!("SIGTERM: exiting"),
        _ = tasks.join_next() => bail!("a controller task ended"),
    }
    Ok(())
}
