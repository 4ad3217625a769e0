//! The `talaria-node` command line. It lives in the library so that
//! `talaria-tests` can parse the container arguments in `deploy/` with it.

use std::{net::Ipv4Addr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, DEFAULT_PIN_DIR};

/// `talaria-node`: a global `--netns` and a subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "talaria-node",
    version,
    about = "talaria node agent: Service traffic to the switch in Geneve/Talaria"
)]
pub struct Cli {
    /// Enter this network namespace (/var/run/netns/NAME) first. Unlike
    /// `ip netns exec`, this keeps the host's bpffs so pins survive restarts.
    #[arg(long, global = true)]
    pub netns: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the agent until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Print counters and flow counts of the running node.
    Status {
        /// bpffs directory of the node's pins.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Detach the programs and remove every pin of the node.
    Unpin {
        /// bpffs directory of the node's pins.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

/// `talaria-node run`: the config file and the flags that override it.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// YAML configuration file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Override `uplink`.
    #[arg(long)]
    pub uplink: Option<String>,
    /// Override `node_ip` (a DaemonSet passes the node's address from the
    /// downward API, `status.hostIP`).
    #[arg(long, env = "TALARIA_NODE_IP")]
    pub node_ip: Option<Ipv4Addr>,
    /// Override `kubernetes.api_server`: the API server's URL,
    /// `https://HOST:PORT`, given directly rather than through the
    /// `kubernetes` ClusterIP, which talaria itself serves.
    #[arg(long, env = "TALARIA_API_SERVER")]
    pub api_server: Option<String>,
    /// Override `pin_dir`.
    #[arg(long)]
    pub pin_dir: Option<PathBuf>,
    /// Override `flow_table_size`.
    #[arg(long, alias = "lru-size")]
    pub flow_table_size: Option<u32>,
    /// Override `metrics_addr`.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Override `ts_cookie_key_file`: the timestamp-cookie keys (one a
    /// line, 32 hexadecimal digits; the node stamps with the first), e.g. a
    /// mounted Secret shared with the controller.
    #[arg(long, env = "TALARIA_TS_COOKIE_KEY_FILE")]
    pub ts_cookie_key_file: Option<PathBuf>,
}

impl RunArgs {
    /// `cfg` (the file named by `--config`, or the defaults) with every
    /// flag applied: what the agent runs with.
    pub fn apply(&self, mut cfg: Config) -> Config {
        if let Some(u) = &self.uplink {
            cfg.uplink = u.clone();
        }
        if let Some(ip) = self.node_ip {
            cfg.node_ip = ip;
        }
        if let Some(url) = &self.api_server {
            cfg.kubernetes.api_server = url.clone();
        }
        if let Some(p) = &self.pin_dir {
            cfg.pin_dir = p.clone();
        }
        if let Some(n) = self.flow_table_size {
            cfg.flow_table_size = n;
        }
        if let Some(a) = &self.metrics_addr {
            cfg.metrics_addr = a.clone();
        }
        if let Some(f) = &self.ts_cookie_key_file {
            cfg.ts_cookie_key_file = Some(f.clone());
        }
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_flags_override_the_config() {
        let cli = Cli::try_parse_from([
            "talaria-node",
            "run",
            "--node-ip",
            "10.0.1.1",
            "--api-server",
            "https://10.0.0.1:6443",
            "--lru-size",
            "64",
            "--ts-cookie-key-file",
            "/etc/talaria/ts-cookie-keys",
        ])
        .unwrap();
        let Cmd::Run(run) = cli.cmd else {
            panic!("not run: {:?}", cli.cmd)
        };
        let c = run.apply(Config::default());
        assert_eq!(c.node_ip, Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(c.kubernetes.api_server, "https://10.0.0.1:6443");
        assert_eq!(c.flow_table_size, 64);
        assert_eq!(
            c.ts_cookie_key_file,
            Some(PathBuf::from("/etc/talaria/ts-cookie-keys"))
        );
        assert_eq!(c.uplink, Config::default().uplink);
        assert!(
            Cli::try_parse_from(["talaria-node"]).is_err(),
            "a subcommand is required"
        );
    }
}
