//! The controller's configuration: one documented struct with defaults,
//! loaded from YAML and overridden by command-line flags (in the binary).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{buckets::BucketPolicy, plan::FabricConfig};

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid config.
    #[error("invalid config {path}")]
    Parse {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_yaml::Error,
    },
    /// A command-line flag is malformed or does not fit the config
    /// ([`crate::cli::Cli::apply`]).
    #[error("{0}")]
    Flag(String),
}

/// Where Services, EndpointSlices and Nodes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// YAML manifests (multi-document) in a directory, re-read when a file
    /// changes (polling).
    Files {
        /// Directory of `*.yaml` / `*.yml` files, read recursively.
        dir: PathBuf,
        /// How often to look for changes.
        #[serde(with = "humantime_ms", default = "default_poll")]
        poll_ms: Duration,
    },
    /// The Kubernetes API, with reflectors.
    Kubernetes {
        /// The API server's URL, `https://HOST:PORT`, given directly (as
        /// Cilium's `k8sServiceHost`): talaria serves the `kubernetes`
        /// ClusterIP itself, so it cannot reach the API server through it.
        /// In a pod the service account's token and CA are used with it
        /// (the server's certificate must name HOST); elsewhere no
        /// credentials (`kubectl proxy`, tests). Empty: `KUBECONFIG` or
        /// `~/.kube/config`, else in-cluster `KUBERNETES_SERVICE_HOST`/`PORT`.
        #[serde(default)]
        api_server: String,
        /// Lease-based leader election; off = always lead.
        #[serde(default)]
        leader_election: Option<LeaderElectionConfig>,
    },
}

fn default_poll() -> Duration {
    Duration::from_millis(500)
}

/// Leader election on a `coordination.k8s.io/v1` Lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderElectionConfig {
    /// Lease namespace.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// Holder identity; defaults to the pod name ($POD_NAME) or hostname.
    #[serde(default)]
    pub identity: Option<String>,
    /// Lease duration in seconds.
    #[serde(default = "default_lease_secs")]
    pub lease_seconds: u32,
}

fn default_lease_secs() -> u32 {
    15
}

/// One P4Runtime switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// Name used in the REST API and logs.
    pub id: String,
    /// gRPC address, `http://host:port`.
    pub address: String,
    /// P4Runtime device id.
    #[serde(default = "default_device_id")]
    pub device_id: u64,
}

fn default_device_id() -> u64 {
    1
}

/// The controller's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Object source.
    pub source: SourceConfig,
    /// Switches to program; every switch gets the same tables.
    pub switches: Vec<SwitchConfig>,
    /// P4Info pushed to a switch with no pipeline and checked otherwise.
    pub p4info: PathBuf,
    /// Device config (target binary, e.g. bmv2 JSON) pushed with the P4Info;
    /// none = empty (switch-agent needs none).
    pub device_config: Option<PathBuf>,
    /// P4Runtime election id (higher wins primary).
    pub election_id: u64,
    /// Most updates per P4Runtime Write.
    pub write_batch: usize,
    /// Most Write RPCs in flight per switch. Only updates of one kind to one
    /// table (no dependencies among them) are ever in flight together.
    pub write_pipeline: usize,
    /// Switch configuration that does not come from Kubernetes.
    pub fabric: FabricConfig,
    /// Bucket sizing.
    pub buckets: BucketPolicy,
    /// How long a released service or backend id stays unused (cookies may
    /// still name it); should exceed the hosts' flow-cache idle timeout.
    #[serde(with = "humantime_ms")]
    pub id_quarantine_ms: Duration,
    /// Safety resync interval: every switch is read back and diffed in
    /// full, and every port is re-planned (changes are otherwise applied
    /// incrementally).
    #[serde(with = "humantime_ms")]
    pub resync_ms: Duration,
    /// Reconnect backoff: first delay.
    #[serde(with = "humantime_ms")]
    pub backoff_min_ms: Duration,
    /// Reconnect backoff: largest delay.
    #[serde(with = "humantime_ms")]
    pub backoff_max_ms: Duration,
    /// Wait this long after a change before planning, to batch bursts.
    #[serde(with = "humantime_ms")]
    pub debounce_ms: Duration,
    /// REST API listen address.
    pub listen: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            source: SourceConfig::Files {
                dir: PathBuf::from("manifests"),
                poll_ms: default_poll(),
            },
            switches: Vec::new(),
            p4info: PathBuf::from("p4/talaria.p4info.txtpb"),
            device_config: None,
            election_id: 1,
            write_batch: 1000,
            write_pipeline: 4,
            fabric: FabricConfig::default(),
            buckets: BucketPolicy::default(),
            id_quarantine_ms: Duration::from_secs(600),
            resync_ms: Duration::from_secs(300),
            backoff_min_ms: Duration::from_millis(200),
            backoff_max_ms: Duration::from_secs(10),
            debounce_ms: Duration::from_millis(2),
            listen: SocketAddr::from(([127, 0, 0, 1], 9080)),
        }
    }
}

impl Config {
    /// Loads a YAML config; missing fields take their defaults.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })
    }

    /// Parses a YAML config.
    pub fn parse(text: &str) -> Result<Self, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text)
    }
}

/// Durations as integer milliseconds in YAML.
mod humantime_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_full_example() {
        let c = Config::parse(
            r#"
source: {kind: files, dir: /etc/talaria/manifests, poll_ms: 100}
switches:
- {id: tor1, address: "http://127.0.0.1:9559"}
fabric:
  switch_addrs: [192.168.0.1]
  routes:
  - {prefix: 192.168.0.11/32, port: 1, src_mac: "02:00:00:00:00:01", dst_mac: "02:00:00:00:00:11"}
  - {prefix: 0.0.0.0/0}
buckets: {per_backend: 8}
id_quarantine_ms: 1000
listen: 127.0.0.1:9999
"#,
        )
        .unwrap();
        assert_eq!(c.switches[0].device_id, 1);
        assert_eq!(c.fabric.routes.len(), 2);
        assert_eq!(c.buckets.per_backend, 8);
        assert_eq!(c.buckets.max, BucketPolicy::default().max);
        assert_eq!(c.id_quarantine_ms, Duration::from_secs(1));
        assert!(Config::parse("bogus: 1").is_err());
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }
}
