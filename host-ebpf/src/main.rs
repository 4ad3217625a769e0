//! `talaria-node`: the node agent.
//!
//! - `talaria-node run --config node.yaml`: load, pin, attach, serve
//!   metrics, GC idle flows. Restarting it keeps every flow (pinned maps
//!   and links; programs are replaced atomically).
//! - `talaria-node status`: counters and flow counts from the pinned maps.
//! - `talaria-node unpin`: detach everything and remove the pins.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use talaria_common::maps::{CookieEntry, ReverseEntry};
use talaria_node::{
    config::{Config, DEFAULT_PIN_DIR},
    node::{self, Stats},
    sys,
};

#[derive(Parser)]
#[command(
    version,
    about = "talaria node agent: Service traffic to the switch in Geneve/Talaria"
)]
struct Cli {
    /// Enter this network namespace (/var/run/netns/NAME) first. Unlike
    /// `ip netns exec`, this keeps the host's bpffs so pins survive restarts.
    #[arg(long, global = true)]
    netns: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent until SIGINT/SIGTERM.
    Run {
        /// YAML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override `uplink`.
        #[arg(long)]
        uplink: Option<String>,
        /// Override `pin_dir`.
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        /// Override `flow_table_size`.
        #[arg(long, alias = "lru-size")]
        flow_table_size: Option<u32>,
        /// Override `metrics_addr`.
        #[arg(long)]
        metrics_addr: Option<String>,
    },
    /// Print counters and flow counts of the running node.
    Status {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Detach the programs and remove every pin of the node.
    Unpin {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    if let Some(ns) = &cli.netns {
        sys::enter_netns(ns)?;
    }
    match cli.cmd {
        Cmd::Run {
            config,
            uplink,
            pin_dir,
            flow_table_size,
            metrics_addr,
        } => {
            let mut cfg = match config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    Config::from_yaml(&text)?
                }
                None => Config::default(),
            };
            cfg.uplink = uplink.unwrap_or(cfg.uplink);
            cfg.pin_dir = pin_dir.unwrap_or(cfg.pin_dir);
            cfg.flow_table_size = flow_table_size.unwrap_or(cfg.flow_table_size);
            cfg.metrics_addr = metrics_addr.unwrap_or(cfg.metrics_addr);
            talaria_preflight::ensure(&talaria_preflight::LOADS_BPF)
                .context("the node agent cannot start")?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(talaria_node::agent::run(cfg))?;
        }
        Cmd::Status { pin_dir, json } => {
            let stats = Stats::read_pinned(&pin_dir)
                .context("is the agent running? reading pinned counters")?;
            let cookies = node::count_pinned::<CookieEntry>(&pin_dir, node::MAP_COOKIES)?;
            let reverse = node::count_pinned::<ReverseEntry>(&pin_dir, node::MAP_REVERSE)?;
            let links: Vec<String> = std::fs::read_dir(pin_dir.join("links"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            if json {
                let v = serde_json::json!({
                    "events": stats.events.iter().map(|(n, v)| (n.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
                    "drops": stats.drops.iter().map(|(r, v)| (r.name().to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
                    "mtu": stats.mtu.iter().map(|(n, v)| (n.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
                    "cookie_cache_entries": cookies,
                    "reverse_flow_entries": reverse,
                    "links": links,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("pin dir        {}", pin_dir.display());
                println!("links          {}", links.join(" "));
                println!("cookie cache   {cookies} flows");
                println!("reverse flows  {reverse} flows");
                println!("events:");
                for (n, v) in &stats.events {
                    println!("  {n:<14} {v}");
                }
                println!("mtu check:");
                for (n, v) in &stats.mtu {
                    println!("  {n:<14} {v}");
                }
                println!("drops:");
                for (r, v) in stats.drops.iter().filter(|d| d.1 > 0) {
                    println!("  {:<24} {v}", r.name());
                }
            }
        }
        Cmd::Unpin { pin_dir } => node::unpin_all(&pin_dir)?,
    }
    Ok(())
}
