//! The controller's configuration: one documented struct with defaults,
//! loaded from YAML and overridden by command-line flags (in the binary).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use talaria_common::ts_cookie::{self, CookieKey};

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
    /// The values do not fit together ([`Config::validate`]).
    #[error("invalid config: {0}")]
    Invalid(String),
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
        /// The API server holding the leader-election Lease (used for the
        /// Lease only: the objects come from `dir`), as for the Kubernetes
        /// source. Empty: `KUBECONFIG`, else in-cluster.
        #[serde(default)]
        api_server: String,
        /// Lease-based leader election (replicas reading the same files,
        /// e.g. the lab's two controllers); off = always lead.
        #[serde(default)]
        leader_election: Option<LeaderElectionConfig>,
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

/// Leader election on a `coordination.k8s.io/v1` Lease, with client-go's
/// rules (`tools/leaderelection`): `lease_seconds` > `renew_deadline_seconds`
/// > 1.2 × `retry_period_seconds` > 0 ([`LeaderElectionConfig::validate`]).
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
    /// Lease duration in seconds: how long a standby waits, on its own
    /// clock, after it last saw the Lease record change before it takes
    /// the Lease over (client-go `LeaseDuration`, default 15).
    #[serde(default = "default_lease_secs")]
    pub lease_seconds: u32,
    /// The leader stops writing when it has not renewed the Lease for this
    /// long (client-go `RenewDeadline`, default 10): shorter than the lease
    /// duration, so it has stopped before any standby may take over.
    #[serde(default = "default_renew_deadline_secs")]
    pub renew_deadline_seconds: u32,
    /// Seconds between two attempts to acquire or renew (client-go
    /// `RetryPeriod`, default 2); each Lease request is also bounded by it.
    #[serde(default = "default_retry_period_secs")]
    pub retry_period_seconds: u32,
}

fn default_lease_secs() -> u32 {
    15
}

fn default_renew_deadline_secs() -> u32 {
    10
}

fn default_retry_period_secs() -> u32 {
    2
}

/// client-go's `JitterFactor`: acquire attempts are spaced by the retry
/// period plus up to 1.2 times it, and the renew deadline must exceed it.
pub const LEASE_JITTER_FACTOR: f64 = 1.2;

impl LeaderElectionConfig {
    /// A Lease `name` in `namespace` with client-go's default timings.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: None,
            lease_seconds: default_lease_secs(),
            renew_deadline_seconds: default_renew_deadline_secs(),
            retry_period_seconds: default_retry_period_secs(),
        }
    }

    /// The lease duration.
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_seconds.into())
    }

    /// The renew deadline.
    pub fn renew_deadline(&self) -> Duration {
        Duration::from_secs(self.renew_deadline_seconds.into())
    }

    /// The retry period.
    pub fn retry_period(&self) -> Duration {
        Duration::from_secs(self.retry_period_seconds.into())
    }

    /// client-go's checks (`NewLeaderElector`): lease duration > renew
    /// deadline > 1.2 × retry period > 0, and a Lease name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("leader election: {m}")));
        if self.name.is_empty() || self.namespace.is_empty() {
            return bad("the Lease needs a name and a namespace".into());
        }
        if self.retry_period_seconds == 0 {
            return bad("retry_period_seconds must be > 0".into());
        }
        if self.lease_seconds <= self.renew_deadline_seconds {
            return bad(format!(
                "lease_seconds ({}) must be greater than renew_deadline_seconds ({}): \
                 the leader must stop writing before a standby may take over",
                self.lease_seconds, self.renew_deadline_seconds
            ));
        }
        if f64::from(self.renew_deadline_seconds)
            <= LEASE_JITTER_FACTOR * f64::from(self.retry_period_seconds)
        {
            return bad(format!(
                "renew_deadline_seconds ({}) must be greater than {LEASE_JITTER_FACTOR} × \
                 retry_period_seconds ({})",
                self.renew_deadline_seconds, self.retry_period_seconds
            ));
        }
        Ok(())
    }
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
    /// A standby (leader election) reads each switch's tables this often
    /// and adopts their ids when its plan disagrees, so its REST API shows
    /// the ids the switch holds. Each read is a full table read: keep it
    /// long for large tables (a takeover reads the switch again anyway).
    #[serde(with = "humantime_ms")]
    pub follow_ms: Duration,
    /// REST API listen address.
    pub listen: SocketAddr,
    /// The keys of outside TCP clients' timestamp cookies
    /// (`talaria_common::ts_cookie::key_file`): the same file, from the same
    /// Secret, as every node agent's `ts_cookie_key_file`. None: no
    /// `ts_cookie` entries, and outside clients' connections follow the
    /// bucket hash only.
    pub ts_cookie_key_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            source: SourceConfig::Files {
                dir: PathBuf::from("manifests"),
                poll_ms: default_poll(),
                api_server: String::new(),
                leader_election: None,
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
            follow_ms: Duration::from_secs(10),
            listen: SocketAddr::from(([127, 0, 0, 1], 9080)),
            ts_cookie_key_file: None,
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
        let c = Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }

    /// The leader election settings, from whichever source has them.
    pub fn leader_election(&self) -> Option<&LeaderElectionConfig> {
        match &self.source {
            SourceConfig::Files {
                leader_election, ..
            }
            | SourceConfig::Kubernetes {
                leader_election, ..
            } => leader_election.as_ref(),
        }
    }

    /// Checks what serde cannot: the leader election timings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.leader_election() {
            Some(le) => le.validate(),
            None => Ok(()),
        }
    }

    /// The timestamp-cookie keys of `ts_cookie_key_file`, the current one
    /// first; none without a file. An unreadable file, a bad line or a file
    /// without keys is an error: a controller that silently filled no
    /// `ts_cookie` entries would break outside connections on every change.
    pub fn ts_cookie_keys(&self) -> Result<Vec<CookieKey>, ConfigError> {
        let Some(path) = &self.ts_cookie_key_file else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let keys = ts_cookie::key_file(&text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|(line, e)| ConfigError::Invalid(format!("{}:{line}: {e}", path.display())))?;
        if keys.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{}: no timestamp-cookie key",
                path.display()
            )));
        }
        Ok(keys)
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
  - {prefix: "fd00:10:244::/48", port: 2}
buckets: {per_backend: 8}
id_quarantine_ms: 1000
listen: 127.0.0.1:9999
"#,
        )
        .unwrap();
        assert_eq!(c.switches[0].device_id, 1);
        assert_eq!(c.fabric.routes.len(), 3);
        assert!(matches!(
            c.fabric.routes[2].prefix,
            crate::types::IpPrefix::V6(p) if p.len == 48
        ));
        assert_eq!(c.buckets.per_backend, 8);
        assert_eq!(c.buckets.max, BucketPolicy::default().max);
        assert_eq!(c.id_quarantine_ms, Duration::from_secs(1));
        assert!(Config::parse("bogus: 1").is_err());
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn lease_timings_follow_client_go() {
        let le = LeaderElectionConfig::new("ns", "l");
        assert_eq!(
            (
                le.lease_seconds,
                le.renew_deadline_seconds,
                le.retry_period_seconds
            ),
            (15, 10, 2)
        );
        le.validate().unwrap();
        let with = |l, r, p| LeaderElectionConfig {
            lease_seconds: l,
            renew_deadline_seconds: r,
            retry_period_seconds: p,
            ..le.clone()
        };
        with(3, 2, 1).validate().unwrap();
        for (l, r, p, why) in [
            (10, 10, 2, "greater than renew_deadline"),
            (5, 10, 2, "greater than renew_deadline"),
            (15, 2, 2, "1.2"),
            (15, 10, 0, "retry_period_seconds must be > 0"),
        ] {
            let e = with(l, r, p).validate().unwrap_err().to_string();
            assert!(e.contains(why), "{l}/{r}/{p}: {e}");
        }
        // At config load.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "source: {kind: files, dir: m, api_server: \"http://127.0.0.1:1\", \
             leader_election: {namespace: n, name: l, lease_seconds: 5, renew_deadline_seconds: 5}}",
        )
        .unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("lease_seconds (5) must be greater"), "{e}");
        std::fs::write(
            &path,
            "source: {kind: files, dir: m, api_server: \"http://127.0.0.1:1\", \
             leader_election: {namespace: n, name: l, lease_seconds: 5, renew_deadline_seconds: 4}}",
        )
        .unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.leader_election().unwrap().retry_period_seconds, 2);
    }
}
