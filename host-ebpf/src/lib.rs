//! talaria node agent library: loads the node TC programs
//! (`talaria-node-ebpf`), pins and fills their maps, attaches them, reads
//! their counters and garbage-collects idle flows.
//!
//! - [`cli`]: the `talaria-node` command line.
//! - [`config`]: the YAML configuration.
//! - [`node`]: the loaded programs and their maps.
//! - [`metrics`]: counters as Prometheus text.
//! - [`netlink`]: link and route dumps and events (raw rtnetlink).
//! - [`pods`]: which pods are local, behind which veth; attach/detach.
//! - [`k8s`]: Kubernetes mode (Pods from the API, Services from the
//!   controller).
//! - [`health`]: kube-proxy's health check of `externalTrafficPolicy:
//!   Local` LoadBalancers, served on their `healthCheckNodePort`.
//! - [`packet`]: packet builders and parsers for tests and the bench.
//! - [`sys`]: small Linux helpers (sysfs, bpffs, network namespaces).

pub mod agent;
pub mod cli;
pub mod config;
pub mod health;
pub mod k8s;
pub mod metrics;
pub mod netlink;
pub mod node;
pub mod packet;
pub mod pods;
pub mod sys;

/// The compiled TC programs (`talaria-node-ebpf`, built by build.rs).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/talaria-node-ebpf"));

/// Why a node agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The machine lacks what the node needs (bpffs not mountable).
    #[error(transparent)]
    Preflight(#[from] talaria_preflight::Error),
    /// The eBPF object could not be loaded or verified.
    #[error("loading the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program could not be loaded, attached or replaced.
    #[error("program {name}")]
    Program {
        name: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map operation failed.
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A link could not be pinned or unpinned.
    #[error("link pin {path}")]
    Pin {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The configuration file is not valid YAML for [`config::Config`].
    #[error("configuration")]
    Config(#[source] serde_yaml::Error),
    /// A configuration value is out of range or unparsable.
    #[error("invalid value: {0}")]
    Invalid(String),
    /// A Kubernetes API client could not be built or a call failed.
    #[error("kubernetes API")]
    Kube(#[source] Box<kube::Error>),
    /// The pod's service account token or CA could not be read.
    #[error("in-cluster service account credentials")]
    InCluster(#[source] kube::config::InClusterError),
    /// An HTTP request to the controller failed.
    #[error("controller HTTP")]
    Http(#[source] Box<reqwest::Error>),
    /// A system call or file operation failed.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn map(name: &'static str, source: aya::maps::MapError) -> Self {
        Self::Map {
            name,
            source: Box::new(source),
        }
    }

    pub(crate) fn program(name: &str, source: aya::programs::ProgramError) -> Self {
        Self::Program {
            name: name.into(),
            source: Box::new(source),
        }
    }
}
