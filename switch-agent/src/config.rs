//! The switch-agent configuration: one [`Config`] with defaults, loaded from
//! YAML and overridden field by field by command-line flags ([`Cli`]).
//!
//! ```yaml
//! grpc_addr: 127.0.0.1:9559
//! device_id: 1
//! interfaces: ["1@veth1", "2@veth2"]
//! pin_dir: /sys/fs/bpf/talaria/switch/default
//! state_dir: /run/talaria-switch
//! metrics_addr: 127.0.0.1:9560
//! dataplane: ebpf
//! log: info
//! ```

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr};

use clap::Parser;
use serde::{Deserialize, Serialize};

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The YAML file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML file is not a valid [`Config`].
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    /// A port was not given as `PORT@IFNAME`.
    #[error("invalid interface {0:?}: expected PORT@IFNAME, e.g. 1@veth1")]
    Port(String),
    /// Two interfaces share a port number or an interface name.
    #[error("interface {0} is given twice")]
    DuplicatePort(String),
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// One switch port as bmv2 spells it: `-i 1@veth1` binds P4 port 1 to the
/// Linux interface `veth1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortSpec {
    /// The P4 port number (`standard_metadata.egress_spec`, `forward(port)`).
    pub port: u16,
    /// The Linux interface name.
    pub ifname: String,
}

impl FromStr for PortSpec {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self> {
        let (port, ifname) = s
            .split_once('@')
            .ok_or_else(|| ConfigError::Port(s.into()))?;
        let port = port.parse().map_err(|_| ConfigError::Port(s.into()))?;
        if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ' ']) {
            return Err(ConfigError::Port(s.into()));
        }
        Ok(Self {
            port,
            ifname: ifname.into(),
        })
    }
}

impl TryFrom<String> for PortSpec {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<PortSpec> for String {
    fn from(p: PortSpec) -> String {
        p.to_string()
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.port, self.ifname)
    }
}

/// Which table store the P4Runtime server writes into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DataplaneKind {
    /// The eBPF data plane on the configured interfaces (needs root).
    #[default]
    Ebpf,
    /// An in-memory table store that forwards nothing: for tests, benchmarks
    /// and controller development without root.
    Memory,
}

/// Everything switch-agent needs to run. Every field has a default, so an
/// empty YAML file (or none) is a valid configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the P4Runtime gRPC server. Default `127.0.0.1:9559`, the
    /// P4Runtime port bmv2 also uses.
    pub grpc_addr: SocketAddr,
    /// The P4Runtime device id clients must name. Default 1.
    pub device_id: u64,
    /// Switch ports, `PORT@IFNAME` as in bmv2's `-i`. Default none.
    pub interfaces: Vec<PortSpec>,
    /// bpffs directory where the data plane pins its maps and links, so that
    /// forwarding survives a restart of the agent. Default
    /// `/sys/fs/bpf/talaria/switch/default`.
    pub pin_dir: PathBuf,
    /// Directory for the committed pipeline config (P4Info, device config,
    /// cookie). It must live as long as the pinned maps and no longer, so
    /// the default is on tmpfs like bpffs: `/run/talaria-switch`.
    pub state_dir: PathBuf,
    /// Address of the Prometheus `/metrics` endpoint; `null` turns it off.
    /// Default `127.0.0.1:9560`.
    pub metrics_addr: Option<SocketAddr>,
    /// Which table store to use. Default `ebpf`.
    pub dataplane: DataplaneKind,
    /// `tracing` filter directives used when `RUST_LOG` is unset. Default
    /// `info`.
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 9559)),
            device_id: 1,
            interfaces: Vec::new(),
            pin_dir: PathBuf::from("/sys/fs/bpf/talaria/switch/default"),
            state_dir: PathBuf::from("/run/talaria-switch"),
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9560))),
            dataplane: DataplaneKind::default(),
            log: "info".into(),
        }
    }
}

/// Command-line flags. Each one, when given, overrides the config file.
#[derive(Clone, Debug, Default, Parser)]
#[command(
    name = "switch-agent",
    version,
    about = "talaria software switch: P4Runtime server over the eBPF data plane"
)]
pub struct Cli {
    /// YAML config file; flags override its values.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// P4Runtime gRPC listen address [default: 127.0.0.1:9559].
    #[arg(long, value_name = "ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// P4Runtime device id [default: 1].
    #[arg(long)]
    pub device_id: Option<u64>,
    /// A switch port as PORT@IFNAME (bmv2 syntax); repeatable. Replaces the
    /// config file's list when given.
    #[arg(long = "interface", short = 'i', value_name = "PORT@IFNAME")]
    pub interfaces: Vec<PortSpec>,
    /// bpffs directory for pinned maps [default: /sys/fs/bpf/talaria/switch/default].
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Directory for the committed pipeline config [default: /run/talaria-switch].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Prometheus /metrics listen address [default: 127.0.0.1:9560].
    #[arg(long, value_name = "ADDR", conflicts_with = "no_metrics")]
    pub metrics_addr: Option<SocketAddr>,
    /// Serve no /metrics endpoint.
    #[arg(long)]
    pub no_metrics: bool,
    /// Table store [default: ebpf].
    #[arg(long, value_enum)]
    pub dataplane: Option<DataplaneKind>,
    /// Log filter when RUST_LOG is unset [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
}

impl Config {
    /// Parses a YAML document.
    pub fn from_yaml(text: &str, path: PathBuf) -> Result<Self> {
        let config: Self =
            serde_yaml::from_str(text).map_err(|source| ConfigError::Parse { path, source })?;
        config.validate()?;
        Ok(config)
    }

    /// The config file named by `cli` (or the defaults), then `cli`'s flags.
    pub fn load(cli: &Cli) -> Result<Self> {
        let mut config = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::from_yaml(&text, path.clone())?
            }
            None => Self::default(),
        };
        config.apply(cli);
        config.validate()?;
        Ok(config)
    }

    /// Overrides every field for which `cli` has a flag.
    pub fn apply(&mut self, cli: &Cli) {
        if let Some(a) = cli.grpc_addr {
            self.grpc_addr = a;
        }
        if let Some(d) = cli.device_id {
            self.device_id = d;
        }
        if !cli.interfaces.is_empty() {
            self.interfaces = cli.interfaces.clone();
        }
        if let Some(d) = &cli.pin_dir {
            self.pin_dir = d.clone();
        }
        if let Some(d) = &cli.state_dir {
            self.state_dir = d.clone();
        }
        if cli.no_metrics {
            self.metrics_addr = None;
        } else if let Some(a) = cli.metrics_addr {
            self.metrics_addr = Some(a);
        }
        if let Some(d) = cli.dataplane {
            self.dataplane = d;
        }
        if let Some(l) = &cli.log {
            self.log = l.clone();
        }
    }

    fn validate(&self) -> Result<()> {
        for (i, a) in self.interfaces.iter().enumerate() {
            if self.interfaces[..i]
                .iter()
                .any(|b| b.port == a.port || b.ifname == a.ifname)
            {
                return Err(ConfigError::DuplicatePort(a.to_string()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_parse_like_bmv2() {
        let p: PortSpec = "1@veth1".parse().unwrap();
        assert_eq!(
            p,
            PortSpec {
                port: 1,
                ifname: "veth1".into()
            }
        );
        assert_eq!(p.to_string(), "1@veth1");
        for bad in [
            "veth1",
            "@veth1",
            "1@",
            "x@veth1",
            "70000@v",
            "1@a/b",
            "1@0123456789abcdef",
        ] {
            assert!(bad.parse::<PortSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_yaml_is_the_default() {
        assert_eq!(
            Config::from_yaml("{}", "x".into()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn flags_override_the_file() {
        let yaml = "grpc_addr: 0.0.0.0:50001\ndevice_id: 7\ninterfaces: [1@a, 2@b]\nmetrics_addr: null\ndataplane: memory\n";
        let mut c = Config::from_yaml(yaml, "x".into()).unwrap();
        assert_eq!(c.device_id, 7);
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.metrics_addr, None);
        assert_eq!(c.dataplane, DataplaneKind::Memory);
        let cli = Cli::parse_from([
            "switch-agent",
            "--device-id",
            "3",
            "-i",
            "5@veth5",
            "--metrics-addr",
            "127.0.0.1:1",
        ]);
        c.apply(&cli);
        assert_eq!(c.device_id, 3);
        assert_eq!(
            c.interfaces,
            vec![PortSpec {
                port: 5,
                ifname: "veth5".into()
            }]
        );
        assert_eq!(c.metrics_addr, Some(SocketAddr::from(([127, 0, 0, 1], 1))));
        assert_eq!(c.grpc_addr, SocketAddr::from(([0, 0, 0, 0], 50001)));
    }

    #[test]
    fn unknown_fields_and_duplicate_ports_are_rejected() {
        assert!(Config::from_yaml("grpc_adr: 1.2.3.4:5", "x".into()).is_err());
        assert!(Config::from_yaml("interfaces: [1@a, 1@b]", "x".into()).is_err());
        assert!(Config::from_yaml("interfaces: [1@a, 2@a]", "x".into()).is_err());
    }
}
