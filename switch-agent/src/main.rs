//! switch-agent: the talaria software switch. Serves P4Runtime on
//! `--grpc-addr` over the eBPF data plane on the `-i PORT@IFNAME` ports (or
//! an in-memory table store with `--dataplane memory`), and Prometheus
//! metrics on `--metrics-addr`.
//!
//! SIGINT/SIGTERM stop the agent and leave the data plane's maps and links
//! pinned: forwarding goes on while the agent is down, and a restarted
//! agent picks the tables up again.
//!
//! To run it inside a network namespace, enter only the network namespace
//! (`nsenter --net=/run/netns/NAME switch-agent ...`): `ip netns exec` also
//! gives the process a private mount namespace with its own bpffs, so the
//! pins vanish when the agent exits.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use talaria_switch::{
    config::{Cli, Config, DataplaneKind},
    entry::Target,
    memory::MemoryTarget,
    metrics::{self, Metrics},
    server::{self, Switch},
};
use talaria_switch_dataplane::Dataplane;
use tokio::{signal::unix, sync::watch};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// The table store, and the eBPF data plane when that is it.
type Opened = (Arc<dyn Target>, Option<Arc<Dataplane>>);

fn open_target(config: &Config) -> Result<Opened> {
    match config.dataplane {
        DataplaneKind::Memory => Ok((Arc::new(MemoryTarget::new()), None)),
        DataplaneKind::Ebpf => {
            talaria_preflight::ensure(&talaria_preflight::LOADS_BPF)
                .context("the eBPF data plane cannot start")?;
            let dp_config = talaria_switch_dataplane::Config {
                pin_dir: config.pin_dir.clone(),
                ports: config
                    .interfaces
                    .iter()
                    .map(|p| (p.port, p.ifname.clone()))
                    .collect(),
            };
            let dp = Arc::new(Dataplane::open(dp_config).with_context(|| {
                format!(
                    "opening the eBPF data plane (pin dir {})",
                    config.pin_dir.display()
                )
            })?);
            info!(pin_dir = %config.pin_dir.display(), ports = ?dp.ports(), "eBPF data plane attached");
            Ok((dp.clone() as Arc<dyn Target>, Some(dp)))
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli)?;
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.log))?;
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let (target, dataplane) = open_target(&config)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let switch = Arc::new(
        Switch::new(
            config.device_id,
            target,
            Some(config.state_dir.clone()),
            stop_rx.clone(),
        )
        .context("starting the P4Runtime server")?,
    );

    let (listener, grpc_addr) = server::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding P4Runtime on {}", config.grpc_addr))?;
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (switch, stop) = (switch.clone(), stop_rx.clone());
        tasks.spawn(async move {
            server::serve(switch, listener, stop)
                .await
                .map_err(anyhow::Error::from)
        });
    }
    if let Some(addr) = config.metrics_addr {
        let (l, a) = server::bind(addr)
            .await
            .with_context(|| format!("binding metrics on {addr}"))?;
        let registry = Arc::new(metrics::registry(Metrics {
            switch: switch.clone(),
            ports: config.interfaces.clone(),
            sysfs_net: "/sys/class/net".into(),
            dataplane: dataplane.clone(),
        }));
        let stop = stop_rx.clone();
        tasks.spawn(async move {
            metrics::serve(registry, l, stop).await;
            Ok(())
        });
        info!(addr = %a, "metrics on /metrics");
    }
    info!(
        addr = %grpc_addr,
        device_id = config.device_id,
        dataplane = ?config.dataplane,
        configured = switch.configured(),
        "P4Runtime server listening"
    );

    let mut term = unix::signal(unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down, maps stay pinned"),
        _ = term.recv() => info!("SIGTERM: shutting down, maps stay pinned"),
        r = tasks.join_next() => {
            if let Some(Ok(Err(e))) = r {
                return Err(e.context("P4Runtime server failed"));
            }
        }
    }
    let _ = stop_tx.send(true);
    // Dropping the data plane closes its fds; maps and links stay pinned.
    drop(dataplane);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(std::time::Duration::from_secs(3), drain)
        .await
        .is_err()
    {
        warn!("clients did not disconnect within 3 s; exiting anyway");
    }
    Ok(())
}
