//! The node agent's configuration: YAML, overridden by command-line flags.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use talaria_common::{
    be::{Be16, Be32},
    maps::{port_policy, AffinityBackend, PortPolicy, ServiceAddr, ServiceAddr6, ServiceKey},
    ts_cookie::{self, CookieKey},
};

use crate::{Error, Result};

/// Everything the node agent needs to know. Loaded from YAML with
/// [`Config::from_yaml`]; every field has a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the local pods come from: `lab` (the `pods` list, plus
    /// `/32 dev <veth>` routes when `learn_pods_from_routes`) or
    /// `kubernetes` (this node's Pods from the API server, each pod's veth
    /// from its `/32` route; Services from the controller).
    pub mode: Mode,
    /// The interface towards the switch (its ingress gets the decap
    /// program; encapsulated packets are redirected out of it).
    pub uplink: String,
    /// This node's tunnel address: outer source of what it sends, outer
    /// destination of what the switch sends it.
    pub node_ip: Ipv4Addr,
    /// The switch's tunnel address: the only accepted outer source.
    pub switch_ip: Ipv4Addr,
    /// The switch's MAC on the uplink (destination MAC of encapsulated
    /// packets), as `aa:bb:cc:dd:ee:ff`.
    pub switch_mac: String,
    /// Service CIDRs (ClusterIP ranges) steered to the switch, e.g.
    /// `10.96.0.0/12` or `fd00:96::/108`. Kubernetes mode adds the cluster's ServiceCIDRs
    /// from the controller (`GET /v1/service-cidrs`) and never removes
    /// these.
    pub service_cidrs: Vec<String>,
    /// Services this node may host backends of: the switch sends only the
    /// service id, so the backend node maps it back to VIP:port to
    /// reverse-NAT replies.
    pub services: Vec<ServiceConfig>,
    /// The pods on this node (lab mode: given here; the agent attaches to
    /// their host-side veths as they appear).
    pub pods: Vec<PodConfig>,
    /// Lab mode: also take as local pods the `/32` routes (no gateway, main
    /// table) whose device is a veth, following route and link events: a
    /// new route attaches the pod, a removed route or veth forgets it. A
    /// `/128` over a local pod's veth is one of its IPv6 addresses.
    pub learn_pods_from_routes: bool,
    /// Only pod addresses inside these CIDRs are learned from routes (and,
    /// in Kubernetes mode, taken from the API). Empty: any address. IPv4
    /// prefixes: an IPv6-only pod (Kubernetes mode) is not filtered.
    pub pod_cidrs: Vec<String>,
    /// Full resync of links, routes and pods this often, besides the
    /// netlink events (a safety net for lost events).
    pub rescan_secs: u64,
    /// Kubernetes mode settings.
    pub kubernetes: KubernetesConfig,
    /// Capacity of each flow table (cookie cache, reverse flows). A full
    /// table refuses new flows and never evicts a live one. (`lru_size`,
    /// its old name from when they were LRU maps, is still read.)
    #[serde(alias = "lru_size")]
    pub flow_table_size: u32,
    /// The most entries one pod may hold in each flow table, so that one
    /// pod cannot take the tables from every other. `0`: no limit.
    pub pod_flow_limit: u32,
    /// UDP flows idle this long are removed by the GC loop.
    pub udp_idle_secs: u64,
    /// A TCP flow's cookie, and its reverse entry unless the backend closed
    /// first, are removed this long after FINs went both ways (RST removes
    /// them at once, in the data path).
    pub fin_grace_secs: u64,
    /// Backend side: when the backend closed a TCP flow first, its reverse
    /// entry stays this long, as long as the backend pod may hold the
    /// connection in TIME_WAIT (Linux: 60 s), so that no other Service's
    /// flow is given its 4-tuple meanwhile (a SYN from another client
    /// connection onto a TIME_WAIT socket is refused half the time: its
    /// timestamps are another connection's). conntrack keeps such entries
    /// 120 s. After a client's close, `fin_grace_secs` applies.
    pub time_wait_secs: u64,
    /// How often the GC loop runs.
    pub gc_interval_secs: u64,
    /// bpffs directory for the pinned maps and links.
    pub pin_dir: PathBuf,
    /// Address of the Prometheus `/metrics` endpoint.
    pub metrics_addr: String,
    /// The uplink's L3 MTU for the path MTU check: a pod's packet that
    /// would not fit once encapsulated (+48 bytes) is answered with ICMP
    /// fragmentation-needed (DF set) or dropped (DF clear). Absent: the
    /// uplink interface's own MTU, read at start and again on link events.
    /// `0` turns the check off.
    pub uplink_mtu: Option<u32>,
    /// Learn no cookies, so the switch balances every packet by hash alone
    /// and established flows move when the pool changes. Only for measuring
    /// what cookies are worth (the lab's hash-only variant).
    pub ignore_cookies: bool,
    /// Turn off `tx-udp-segmentation` on the uplink so UDP GSO packets are
    /// segmented before they are tunnelled (see
    /// [`crate::agent::disable_uplink_udp_gso`]).
    pub uplink_udp_segmentation_off: bool,
    /// Serve the node's own clients (its root network namespace,
    /// hostNetwork pods): route the Service CIDRs to the device
    /// `tlr-host`, whose egress hook tunnels them (see
    /// [`crate::agent::serve_host_clients`]).
    pub host_clients: bool,
    /// The timestamp-cookie keys, shared with the controller: one key a
    /// line, 32 hexadecimal digits (`openssl rand -hex 16`); blank lines
    /// and `#` comments are skipped. The node stamps outside TCP clients'
    /// new connections with the first (`talaria_common::ts_cookie`); the
    /// controller accepts every key listed, so a new key goes first only
    /// after the controller has it. Absent: no stamping. A key change
    /// applies to new connections only: a live one keeps the cookie it
    /// started with.
    pub ts_cookie_key_file: Option<PathBuf>,
}

/// Where the local pods come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Pods from the configuration and from `/32` routes; Services from
    /// `services`.
    #[default]
    Lab,
    /// Pods from the Kubernetes API; Services from the controller.
    Kubernetes,
}

/// Kubernetes mode settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// This node's name (the Pods watched are `spec.nodeName=<node_name>`).
    /// Empty: the `NODE_NAME` environment variable (downward API).
    pub node_name: String,
    /// The API server's URL, `https://HOST:PORT`, given directly (as
    /// Cilium's `k8sServiceHost`): talaria serves the `kubernetes`
    /// ClusterIP itself, so it cannot reach the API server through it. In
    /// a pod the service account's token and CA are used with it (the
    /// server's certificate must name HOST); elsewhere no credentials
    /// (`kubectl proxy`, tests). Empty: `KUBECONFIG` or `~/.kube/config`,
    /// else in-cluster `KUBERNETES_SERVICE_HOST`/`PORT`.
    pub api_server: String,
    /// Base URL of the controller's REST API; `GET <url>/v1/services` gives
    /// the service ids (`data_path[].service_id`, `key`). Default: the
    /// `talaria-controller` Service of `deploy/controller.yaml`
    /// ([`DEFAULT_CONTROLLER_URL`]).
    pub controller_url: String,
    /// How often the Services are fetched from the controller.
    pub services_refresh_secs: u64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            api_server: String::new(),
            controller_url: DEFAULT_CONTROLLER_URL.into(),
            services_refresh_secs: 10,
        }
    }
}

/// The controller's REST API as `deploy/controller.yaml` publishes it:
/// Service `talaria-controller` in namespace `talaria-system`, port 9080.
pub const DEFAULT_CONTROLLER_URL: &str = "http://talaria-controller.talaria-system.svc:9080";

/// One Service, as the backend side needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The id the controller gave the Service (carried in the Talaria option).
    pub id: u16,
    /// The ClusterIP, IPv4 or IPv6 (a dual-stack Service has a service id
    /// per family).
    pub vip: IpAddr,
    /// The Service port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The port has no usable endpoint: new flows to it are refused with
    /// ICMP port unreachable (kube-proxy's REJECT).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reject: bool,
    /// Backend ids this node's clients' new flows must go to
    /// (`internalTrafficPolicy: Local`: its own endpoints; topology hints:
    /// its zone's); at most [`port_policy::MAX_PREFERRED`] are used. Empty:
    /// the switch's hash over every endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred: Vec<u32>,
    /// `internalTrafficPolicy: Local`: with no `preferred` backend, new
    /// flows are dropped, as kube-proxy does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local_only: bool,
    /// Some endpoint runs no agent (the switch delivers to it plain): new
    /// flows leave a pending cookie, by which its replies are restored to
    /// the VIP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agentless: bool,
    /// `sessionAffinity: ClientIP`: `timeoutSeconds` (0: no affinity). A
    /// client's new flow goes to the backend of its last one while that is
    /// younger than this and in `active` (or `preferred`, when set).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub affinity_timeout_secs: u32,
    /// Backend ids taking new flows, for session affinity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<u32>,
    /// `vip` is a node's address and `port` a nodePort. The node keeps it
    /// for its backends' replies but never steers the address: clients
    /// reach a nodePort plain, through the switch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node_port: bool,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// One local pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodConfig {
    /// The pod's IPv4 address.
    pub ip: Ipv4Addr,
    /// The pod's IPv6 addresses (dual stack): the only IPv6 sources its
    /// veth lets through, besides `::` and link-local ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6: Vec<Ipv6Addr>,
    /// The host-side veth name.
    pub veth: String,
    /// The MAC of the pod's own interface, if known (decapsulated packets
    /// are delivered with `bpf_redirect_peer`, which marks them for the
    /// host anyway, so it is cosmetic).
    #[serde(default)]
    pub mac: Option<String>,
}

/// Default pin directory of the node's maps and links.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/talaria/node";

impl Default for Config {
    fn default() -> Self {
        Self {
            uplink: "eth0".into(),
            node_ip: Ipv4Addr::UNSPECIFIED,
            switch_ip: Ipv4Addr::UNSPECIFIED,
            switch_mac: "00:00:00:00:00:00".into(),
            service_cidrs: vec!["10.96.0.0/12".into()],
            services: Vec::new(),
            pods: Vec::new(),
            flow_table_size: 1 << 20,
            pod_flow_limit: 1 << 16,
            udp_idle_secs: 120,
            fin_grace_secs: 10,
            time_wait_secs: 65,
            gc_interval_secs: 5,
            pin_dir: DEFAULT_PIN_DIR.into(),
            metrics_addr: "127.0.0.1:9465".into(),
            uplink_udp_segmentation_off: true,
            host_clients: true,
            uplink_mtu: None,
            ignore_cookies: false,
            mode: Mode::Lab,
            learn_pods_from_routes: true,
            pod_cidrs: Vec::new(),
            rescan_secs: 10,
            kubernetes: KubernetesConfig::default(),
            ts_cookie_key_file: None,
        }
    }
}

impl Config {
    /// Parses YAML; missing fields take their defaults.
    pub fn from_yaml(text: &str) -> Result<Self> {
        serde_yaml::from_str(text).map_err(Error::Config)
    }

    /// The key this node stamps outside clients' timestamps with: the
    /// first of `ts_cookie_key_file`, or none without one. A file that
    /// cannot be read, holds no key or a bad line is an error naming the
    /// file (and the line).
    pub fn ts_cookie_key(&self) -> Result<Option<CookieKey>> {
        let Some(path) = &self.ts_cookie_key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("timestamp-cookie key file {}", path.display()), e))?;
        parse_ts_cookie_keys(&text, &path.display().to_string())?
            .first()
            .copied()
            .map(Some)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: no timestamp-cookie key in the file",
                    path.display()
                ))
            })
    }
}

/// The keys of a timestamp-cookie key file's `text`, in file order
/// (`talaria_common::ts_cookie::key_file`); a bad line is an error naming
/// `origin` (the file) and the line number.
pub fn parse_ts_cookie_keys(text: &str, origin: &str) -> Result<Vec<CookieKey>> {
    ts_cookie::key_file(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|(line, e)| Error::Invalid(format!("{origin}:{line}: timestamp-cookie key: {e}")))
}

impl ServiceConfig {
    /// A Service port with no policy: new flows go by the switch's hash.
    pub fn new(id: u16, vip: impl Into<IpAddr>, port: u16, protocol: &str) -> Self {
        Self {
            id,
            vip: vip.into(),
            port,
            protocol: protocol.into(),
            reject: false,
            preferred: Vec::new(),
            local_only: false,
            agentless: false,
            affinity_timeout_secs: 0,
            active: Vec::new(),
            node_port: false,
        }
    }

    /// The IP protocol number.
    pub fn proto(&self) -> Result<u8> {
        match self.protocol.to_ascii_lowercase().as_str() {
            "tcp" => Ok(talaria_common::net::IPPROTO_TCP),
            "udp" => Ok(talaria_common::net::IPPROTO_UDP),
            other => Err(Error::Invalid(format!("protocol {other:?}"))),
        }
    }

    /// The `NODE_PORT_POLICY` key of an IPv4 port.
    pub fn port_key(&self) -> Result<ServiceKey> {
        let IpAddr::V4(vip) = self.vip else {
            return Err(Error::Invalid(format!(
                "service {}: an IPv6 port's policy is keyed by port_key6",
                self.id
            )));
        };
        Ok(ServiceKey {
            vip: Be32(vip.octets()),
            port: Be16::new(self.port),
            proto: self.proto()?,
            _pad: 0,
        })
    }

    /// The `NODE_PORT_POLICY` value, if the port has a policy: new flows
    /// to it are refused, or restricted to preferred backends, or it is a
    /// nodePort (which a node keeps for its own address only).
    pub fn policy(&self) -> Option<PortPolicy> {
        let n = self.preferred.len().min(port_policy::MAX_PREFERRED);
        let mut p = PortPolicy {
            service_id: self.id,
            flags: if self.reject { port_policy::REJECT } else { 0 }
                | if self.local_only {
                    port_policy::LOCAL_ONLY
                } else {
                    0
                }
                | if self.agentless {
                    port_policy::AGENTLESS
                } else {
                    0
                }
                | if self.affinity_timeout_secs > 0 {
                    port_policy::AFFINITY
                } else {
                    0
                }
                | if self.node_port {
                    port_policy::NODE_PORT
                } else {
                    0
                },
            count: n as u8,
            affinity_timeout_s: self.affinity_timeout_secs,
            ..Default::default()
        };
        p.preferred[..n].copy_from_slice(&self.preferred[..n]);
        (p.flags != 0 || n > 0).then_some(p)
    }

    /// The `NODE_PORT_POLICY_V6` value, if the IPv6 port has a policy: new
    /// flows to it are refused, restricted to preferred backends, or keep
    /// session affinity. Endpoints without an agent and nodePorts are IPv4
    /// only.
    pub fn policy6(&self) -> Option<PortPolicy> {
        let mut p = self.policy()?;
        p.flags &= port_policy::REJECT | port_policy::LOCAL_ONLY | port_policy::AFFINITY;
        (p.flags != 0 || p.count > 0).then_some(p)
    }

    /// The `NODE_AFFINITY_BACKENDS` keys: with session affinity, the
    /// backends a client's affinity may name: the preferred ones when this
    /// node has any, else every active one.
    pub fn affinity_backends(&self) -> impl Iterator<Item = AffinityBackend> + '_ {
        let usable: &[u32] = if self.affinity_timeout_secs == 0 {
            &[]
        } else if self.preferred.is_empty() {
            &self.active
        } else {
            &self.preferred
        };
        usable.iter().map(|backend_id| AffinityBackend {
            service_id: self.id,
            _pad: 0,
            backend_id: *backend_id,
        })
    }

    /// The `NODE_SERVICES` (IPv4) or `NODE_SERVICES_V6` value: what
    /// replies are reverse-NATed to.
    pub fn map_value(&self) -> Result<ServiceValue> {
        let (port, proto) = (Be16::new(self.port), self.proto()?);
        Ok(match self.vip {
            IpAddr::V4(vip) => ServiceValue::V4(ServiceAddr {
                vip: Be32(vip.octets()),
                port,
                proto,
                _pad: 0,
            }),
            IpAddr::V6(vip) => ServiceValue::V6(ServiceAddr6 {
                vip: vip.octets(),
                port,
                proto,
                _pad: 0,
            }),
        })
    }
}

/// A Service's value in the map of its VIP's family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceValue {
    /// `NODE_SERVICES`.
    V4(ServiceAddr),
    /// `NODE_SERVICES_V6`.
    V6(ServiceAddr6),
}

/// A prefix of either family (address, length).
pub type Cidr = (IpAddr, u8);

/// `cidr` with its host bits clear, so that `10.96.0.1/12` from a config
/// and `10.96.0.0/12` from the controller are one prefix (and one route).
pub fn network(cidr: Cidr) -> Cidr {
    let (addr, len) = cidr;
    let addr = match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    };
    (addr, len)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(Error::Invalid(format!("MAC address {s:?}")));
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| Error::Invalid(format!("MAC address {s:?}")))?;
    }
    Ok(mac)
}

/// Parses `a.b.c.d/len` or `ipv6/len`.
pub fn parse_cidr(s: &str) -> Result<Cidr> {
    let bad = || Error::Invalid(format!("CIDR {s:?}"));
    let (a, l) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    let len: u8 = l.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok((addr, len))
}

/// Parses an IPv4 `a.b.c.d/len` (pod CIDRs, which are matched against
/// IPv4 pod addresses only).
pub fn parse_cidr4(s: &str) -> Result<(Ipv4Addr, u8)> {
    match parse_cidr(s)? {
        (IpAddr::V4(a), l) => Ok((a, l)),
        _ => Err(Error::Invalid(format!("IPv4 CIDR {s:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_ports_policy_keeps_what_ipv6_serves() {
        let vip: IpAddr = "fd00:96::a".parse().unwrap();
        let full = ServiceConfig {
            reject: true,
            preferred: vec![7, 8],
            local_only: true,
            agentless: true,
            affinity_timeout_secs: 60,
            node_port: true,
            ..ServiceConfig::new(3, vip, 80, "tcp")
        };
        let p = full.policy6().unwrap();
        assert_eq!(
            p.flags,
            port_policy::REJECT | port_policy::LOCAL_ONLY | port_policy::AFFINITY
        );
        assert_eq!(
            (p.service_id, p.count, &p.preferred[..2]),
            (3, 2, &[7, 8][..])
        );
        assert_eq!(p.affinity_timeout_s, 60);
        let ipv4_only = ServiceConfig {
            agentless: true,
            node_port: true,
            ..ServiceConfig::new(3, vip, 80, "tcp")
        };
        assert!(ipv4_only.policy().is_some());
        assert_eq!(ipv4_only.policy6(), None, "nothing IPv6 serves");
        assert!(ServiceConfig::new(3, vip, 80, "tcp").port_key().is_err());
    }

    #[test]
    fn yaml_with_defaults() {
        let c = Config::from_yaml(
            "uplink: up0\nnode_ip: 10.0.1.1\nswitch_ip: 10.0.0.1\nswitch_mac: 02:00:00:00:00:01\n\
             pods:\n  - {ip: 10.244.1.2, veth: vp1}\n  - {ip: 10.244.1.3, ipv6: [\"fd00:244:1::3\"], veth: vp2}\nservices:\n  - {id: 7, vip: 10.96.0.10, port: 80, protocol: tcp}\n",
        )
        .unwrap();
        assert_eq!(c.uplink, "up0");
        assert_eq!(c.flow_table_size, 1 << 20);
        assert_eq!(c.pods[0].veth, "vp1");
        assert!(c.pods[0].ipv6.is_empty());
        assert_eq!(
            c.pods[1].ipv6,
            ["fd00:244:1::3".parse::<Ipv6Addr>().unwrap()]
        );
        assert_eq!(c.services[0].proto().unwrap(), 6);
        assert!(Config::from_yaml("bogus: 1").is_err());
        assert_eq!(parse_mac("02:00:00:00:00:01").unwrap(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(
            parse_cidr("10.96.0.0/12").unwrap(),
            (Ipv4Addr::new(10, 96, 0, 0).into(), 12)
        );
        assert!(parse_cidr("10.96.0.0/33").is_err());
        assert_eq!(
            parse_cidr("fd00:96::/108").unwrap(),
            ("fd00:96::".parse::<IpAddr>().unwrap(), 108)
        );
        assert!(parse_cidr("fd00:96::/129").is_err());
        assert!(parse_cidr4("fd00:96::/108").is_err());
        assert_eq!(c.mode, Mode::Lab);
        assert!(c.learn_pods_from_routes);
        assert_eq!(c.uplink_mtu, None);
    }

    #[test]
    fn kubernetes_mode_yaml() {
        let c = Config::from_yaml(
            "mode: kubernetes\nuplink_mtu: 9000\npod_cidrs: [10.244.1.0/24]\n\
             kubernetes: {node_name: n1, controller_url: \"http://10.0.0.1:8080\"}\n",
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Kubernetes);
        assert_eq!(c.uplink_mtu, Some(9000));
        assert_eq!(c.kubernetes.node_name, "n1");
        assert_eq!(c.kubernetes.services_refresh_secs, 10);
        assert!(Config::from_yaml("mode: cluster").is_err());
    }

    #[test]
    fn ts_cookie_key_files() {
        let keys = parse_ts_cookie_keys(
            "# the key nodes stamp with\n00010203040506070809a0b0c0d0e0ff\n\n  # the one before\n  FFEEDDCCBBAA99887766554433221100  \n",
            "keys",
        )
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            (keys[0].k0, keys[0].k1),
            (0x0001_0203_0405_0607, 0x0809_a0b0_c0d0_e0ff)
        );
        assert_eq!(keys[1].k0, 0xffee_ddcc_bbaa_9988);
        assert!(parse_ts_cookie_keys("# none\n\n", "keys")
            .unwrap()
            .is_empty());
        // Every bad line names the file and the line.
        for (text, line) in [
            ("00010203040506070809a0b0c0d0e0ff\nabc\n", 2),
            ("# x\n\n0g010203040506070809a0b0c0d0e0ff\n", 3),
            ("00000000000000000000000000000000\n", 1),
            ("00010203040506070809a0b0c0d0e0ff # inline\n", 1),
        ] {
            let e = parse_ts_cookie_keys(text, "/etc/talaria/keys").unwrap_err();
            assert!(
                e.to_string()
                    .contains(&format!("/etc/talaria/keys:{line}:")),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn the_first_key_of_the_file_is_the_one_stamped_with() {
        let dir = std::env::temp_dir().join(format!("talaria-ts-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys");
        let mut c =
            Config::from_yaml(&format!("ts_cookie_key_file: {}\n", file.display())).unwrap();
        std::fs::write(
            &file,
            "ffeeddccbbaa99887766554433221100\n00010203040506070809a0b0c0d0e0ff\n",
        )
        .unwrap();
        assert_eq!(
            c.ts_cookie_key().unwrap().unwrap().k0,
            0xffee_ddcc_bbaa_9988
        );
        std::fs::write(&file, "# rotated out\n").unwrap();
        let e = c.ts_cookie_key().unwrap_err().to_string();
        assert!(e.contains("no timestamp-cookie key"), "{e}");
        std::fs::remove_file(&file).unwrap();
        let e = format!("{:#}", anyhow::Error::from(c.ts_cookie_key().unwrap_err()));
        assert!(e.contains(&file.display().to_string()), "{e}");
        c.ts_cookie_key_file = None;
        assert_eq!(c.ts_cookie_key().unwrap(), None);
        let _ = std::fs::remove_dir(&dir);
    }
}
