//! `talaria-node`: the node agent.
//!
//! - `talaria-node run --config node.yaml`: load, pin, attach, serve
//!   metrics, GC idle flows. Restarting it keeps every flow (pinned maps
//!   and links; programs are replaced atomically).
//! - `talaria-node status`: counters and flow counts from the pinned maps.
//! - `talaria-node unpin`: detach everything and remove the pins.

use anyhow::Context as _;
use clap::Parser;
use talaria_common::maps::{CookieEntry, ReverseEntry};
use talaria_node::{
    cli::{Cli, Cmd},
    config::Config,
    node::{self, Stats},
    sys,
};

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
        Cmd::Run(run) => {
            let cfg = match &run.config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    Config::from_yaml(&text)?
                }
                None => Config::default(),
            };
            let cfg = run.apply(cfg);
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
