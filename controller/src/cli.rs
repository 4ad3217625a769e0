//! The `talaria-controller` command line. It lives in the library so that
//! `talaria-tests` can parse the container arguments in `deploy/` with it.

use std::{path::PathBuf, time::Duration};

use clap::Parser;

use crate::config::{Config, ConfigError, LeaderElectionConfig, SourceConfig, SwitchConfig};

/// Command line; every flag overrides the config file.
#[derive(Debug, Parser)]
#[command(name = "talaria-controller", version, about)]
pub struct Cli {
    /// YAML config file (see `Config`); defaults apply without one.
    #[arg(long, short, env = "TALARIA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Read manifests from this directory instead of Kubernetes.
    #[arg(long, conflicts_with = "kubernetes")]
    pub manifests: Option<PathBuf>,
    /// Read from the Kubernetes API (kubeconfig or in-cluster).
    #[arg(long)]
    pub kubernetes: bool,
    /// The API server's URL, `https://HOST:PORT`, given directly rather
    /// than through the `kubernetes` ClusterIP, which talaria itself
    /// serves. Overrides `source.api_server`. With the files source it is
    /// used for the leader-election Lease only (needs --leader-elect).
    #[arg(long, env = "TALARIA_API_SERVER")]
    pub api_server: Option<String>,
    /// Leader election on a coordination.k8s.io/v1 Lease: only the holder
    /// writes to the switches, the others plan and stand by. With the
    /// files source the Lease lives on --api-server.
    #[arg(long)]
    pub leader_elect: bool,
    /// Lease namespace (default: $POD_NAMESPACE, else talaria-system).
    #[arg(long, requires = "leader_elect")]
    pub lease_namespace: Option<String>,
    /// Lease name (default: talaria-controller).
    #[arg(long, requires = "leader_elect")]
    pub lease_name: Option<String>,
    /// Lease duration in seconds (default 15): a standby takes over this
    /// long after it last saw the Lease change.
    #[arg(long, requires = "leader_elect")]
    pub lease_seconds: Option<u32>,
    /// Renew deadline in seconds (default 10, less than the lease
    /// duration): the leader stops writing when it has not renewed for
    /// this long.
    #[arg(long, requires = "leader_elect")]
    pub lease_renew_deadline_seconds: Option<u32>,
    /// Seconds between two acquire or renew attempts (default 2; also
    /// each Lease request's timeout).
    #[arg(long, requires = "leader_elect")]
    pub lease_retry_period_seconds: Option<u32>,
    /// Holder identity (default: $POD_NAME, else the hostname).
    #[arg(long, requires = "leader_elect")]
    pub lease_identity: Option<String>,
    /// A switch as `ID=http://HOST:PORT[@DEVICE_ID]`; repeatable; replaces
    /// the config's list.
    #[arg(long = "switch")]
    pub switches: Vec<String>,
    /// P4Info file.
    #[arg(long)]
    pub p4info: Option<PathBuf>,
    /// REST listen address.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// P4Runtime election id.
    #[arg(long)]
    pub election_id: Option<u64>,
    /// Id quarantine in milliseconds.
    #[arg(long)]
    pub id_quarantine_ms: Option<u64>,
    /// The timestamp-cookie key file (`ts_cookie_key_file`).
    #[arg(long, env = "TALARIA_TS_COOKIE_KEY_FILE")]
    pub ts_cookie_key_file: Option<PathBuf>,
    /// Log filter when RUST_LOG is unset.
    #[arg(long, default_value = "info")]
    pub log: String,
}

/// Parses `ID=http://HOST:PORT[@DEVICE_ID]` (device id 1 when absent).
pub fn parse_switch(s: &str) -> Result<SwitchConfig, ConfigError> {
    let bad = || ConfigError::Flag(format!("--switch wants ID=ADDRESS[@DEVICE], got {s:?}"));
    let (id, rest) = s.split_once('=').ok_or_else(bad)?;
    let (address, device_id) = match rest.rsplit_once('@') {
        Some((a, d)) => (a.to_string(), d.parse().map_err(|_| bad())?),
        None => (rest.to_string(), 1),
    };
    Ok(SwitchConfig {
        id: id.into(),
        address,
        device_id,
    })
}

impl Cli {
    /// `config` (the file named by `--config`, or the defaults) with every
    /// flag applied: what the controller runs with.
    pub fn apply(&self, mut config: Config) -> Result<Config, ConfigError> {
        if let Some(d) = &self.manifests {
            config.source = SourceConfig::Files {
                dir: d.clone(),
                poll_ms: Duration::from_millis(500),
                api_server: String::new(),
                leader_election: None,
            };
        }
        if self.kubernetes && !matches!(config.source, SourceConfig::Kubernetes { .. }) {
            config.source = SourceConfig::Kubernetes {
                api_server: String::new(),
                leader_election: None,
            };
        }
        if let Some(url) = &self.api_server {
            match &mut config.source {
                SourceConfig::Kubernetes { api_server, .. } => *api_server = url.clone(),
                SourceConfig::Files { api_server, .. } if self.leader_elect => {
                    *api_server = url.clone()
                }
                SourceConfig::Files { .. } => {
                    return Err(ConfigError::Flag(
                        "--api-server (TALARIA_API_SERVER) needs the Kubernetes source \
                         (--kubernetes), or --leader-elect (the files source uses it for \
                         the Lease only)"
                            .into(),
                    ))
                }
            }
        }
        if self.leader_elect {
            let (SourceConfig::Kubernetes {
                leader_election, ..
            }
            | SourceConfig::Files {
                leader_election, ..
            }) = &mut config.source;
            let le = leader_election.get_or_insert_with(|| {
                LeaderElectionConfig::new(
                    std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "talaria-system".into()),
                    "talaria-controller",
                )
            });
            if let Some(ns) = &self.lease_namespace {
                le.namespace = ns.clone();
            }
            if let Some(n) = &self.lease_name {
                le.name = n.clone();
            }
            if let Some(s) = self.lease_seconds {
                le.lease_seconds = s;
            }
            if let Some(s) = self.lease_renew_deadline_seconds {
                le.renew_deadline_seconds = s;
            }
            if let Some(s) = self.lease_retry_period_seconds {
                le.retry_period_seconds = s;
            }
            if let Some(i) = &self.lease_identity {
                le.identity = Some(i.clone());
            }
        }
        if !self.switches.is_empty() {
            config.switches = self
                .switches
                .iter()
                .map(|s| parse_switch(s))
                .collect::<Result<_, _>>()?;
        }
        if let Some(p) = &self.p4info {
            config.p4info = p.clone();
        }
        if let Some(l) = self.listen {
            config.listen = l;
        }
        if let Some(e) = self.election_id {
            config.election_id = e;
        }
        if let Some(q) = self.id_quarantine_ms {
            config.id_quarantine_ms = Duration::from_millis(q);
        }
        if let Some(f) = &self.ts_cookie_key_file {
            config.ts_cookie_key_file = Some(f.clone());
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_config() {
        let cli = Cli::try_parse_from([
            "talaria-controller",
            "--kubernetes",
            "--api-server",
            "https://10.0.0.1:6443",
            "--leader-elect",
            "--lease-name",
            "x",
            "--switch",
            "tor1=http://10.0.0.2:9559@7",
        ])
        .unwrap();
        let c = cli.apply(Config::default()).unwrap();
        let SourceConfig::Kubernetes {
            api_server,
            leader_election: Some(le),
        } = c.source
        else {
            panic!("not the Kubernetes source: {:?}", c.source)
        };
        assert_eq!(api_server, "https://10.0.0.1:6443");
        assert_eq!(le.name, "x");
        assert_eq!(c.switches[0].device_id, 7);
        let files = Cli::try_parse_from(["talaria-controller", "--api-server", "https://h:1"]);
        assert!(files.unwrap().apply(Config::default()).is_err());
        assert!(parse_switch("tor1").is_err());
    }

    /// The lab's way: manifests from files, the Lease on an API server.
    #[test]
    fn leader_election_with_the_files_source() {
        let cli = Cli::try_parse_from([
            "talaria-controller",
            "--manifests",
            "/m",
            "--api-server",
            "http://127.0.0.1:7443",
            "--leader-elect",
            "--lease-seconds",
            "3",
            "--lease-renew-deadline-seconds",
            "2",
            "--lease-retry-period-seconds",
            "1",
        ])
        .unwrap();
        let c = cli.apply(Config::default()).unwrap();
        let SourceConfig::Files {
            dir,
            api_server,
            leader_election: Some(le),
            ..
        } = c.source
        else {
            panic!("not the files source with a Lease: {:?}", c.source)
        };
        assert_eq!(dir, PathBuf::from("/m"));
        assert_eq!(api_server, "http://127.0.0.1:7443");
        assert_eq!(
            (
                le.lease_seconds,
                le.renew_deadline_seconds,
                le.retry_period_seconds
            ),
            (3, 2, 1)
        );
        // client-go's rule, checked when the flags are applied.
        let bad = Cli::try_parse_from([
            "talaria-controller",
            "--leader-elect",
            "--lease-seconds",
            "10",
        ])
        .unwrap();
        let e = bad.apply(Config::default()).unwrap_err().to_string();
        assert!(e.contains("lease_seconds (10) must be greater"), "{e}");
    }
}
