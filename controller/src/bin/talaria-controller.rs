//! talaria-controller: Services/EndpointSlices (from Kubernetes or YAML
//! files) → talaria switch tables over P4Runtime, plus the REST API.

use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use talaria_controller::{
    api,
    cli::Cli,
    config::{Config, SourceConfig},
    controller::{self, Context, Source},
    metrics::SkipLabel,
    source::{files, MemorySource},
};
use tracing::info;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&cli.log))?;
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let config = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let config = cli.apply(config)?;

    let p4info = talaria_p4rt::p4info::load(&config.p4info)
        .with_context(|| format!("loading P4Info {}", config.p4info.display()))?;
    let device_config = match &config.device_config {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => Vec::new(),
    };

    let mut tasks = tokio::task::JoinSet::new();
    let mut election = None;
    let (source, changed): (Arc<dyn Source>, _) = match config.source.clone() {
        SourceConfig::Files {
            dir,
            poll_ms,
            api_server,
            leader_election,
        } => {
            if let Some(le) = leader_election {
                // The API server holds the Lease only.
                let client = talaria_controller::source::kube::client(&api_server)
                    .await
                    .context("Kubernetes client for the Lease")?;
                election = Some((client, le));
            }
            let src = MemorySource::new();
            let changed = src.changed.clone();
            (
                src.clone() as Arc<dyn Source>,
                (changed, Some((dir, poll_ms, src))),
            )
        }
        SourceConfig::Kubernetes {
            api_server,
            leader_election,
        } => {
            let client = talaria_controller::source::kube::client(&api_server)
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
    let mut release = None;
    if let Some((client, le)) = election {
        info!(
            namespace = %le.namespace,
            name = %le.name,
            lease_seconds = le.lease_seconds,
            renew_deadline_seconds = le.renew_deadline_seconds,
            retry_period_seconds = le.retry_period_seconds,
            "leader election on"
        );
        release = Some((client.clone(), le.clone()));
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
    if let Some((client, le)) = release.filter(|_| ctx.is_leader()) {
        // Stop writing first, then give the Lease up, so a standby takes
        // over at its next attempt (a rolling update) rather than after a
        // lease duration.
        ctx.set_leader(false);
        tasks.abort_all();
        let api = kube::Api::namespaced(client, &le.namespace);
        let me = talaria_controller::source::kube::identity(&le);
        let mut el = talaria_controller::source::kube::Elector::new(api, le, me);
        match el.release().await {
            Ok(()) => info!("released the Lease"),
            Err(e) => tracing::warn!(error = %e, "could not release the Lease"),
        }
    }
    Ok(())
}
