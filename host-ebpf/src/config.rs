//! The node agent's configuration: YAML, overridden by command-line flags.

use std::{net::Ipv4Addr, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Everything the node agent needs to know. Loaded from YAML with
/// [`Config::from_yaml`]; every field has a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
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
    /// `10.96.0.0/12`.
    pub service_cidrs: Vec<String>,
    /// Services this node may host backends of: the switch sends only the
    /// service id, so the backend node maps it back to VIP:port to
    /// reverse-NAT replies.
    pub services: Vec<ServiceConfig>,
    /// The pods on this node (lab mode: given here; the agent attaches to
    /// their host-side veths as they appear).
    pub pods: Vec<PodConfig>,
    /// Capacity of each flow LRU map (cookie cache, reverse flows).
    pub lru_size: u32,
    /// UDP flows idle this long are removed by the GC loop.
    pub udp_idle_secs: u64,
    /// TCP flows that saw FIN in both directions are removed after idling
    /// this long (RST removes them at once, in the data path).
    pub fin_grace_secs: u64,
    /// How often the GC loop runs.
    pub gc_interval_secs: u64,
    /// bpffs directory for the pinned maps and links.
    pub pin_dir: PathBuf,
    /// Address of the Prometheus `/metrics` endpoint.
    pub metrics_addr: String,
    /// Turn off `tx-udp-segmentation` on the uplink so UDP GSO packets are
    /// segmented before they are tunnelled (see
    /// [`crate::agent::disable_uplink_udp_gso`]).
    pub uplink_udp_segmentation_off: bool,
}

/// One Service, as the backend side needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The id the controller gave the Service (carried in the Talaria option).
    pub id: u16,
    /// The ClusterIP.
    pub vip: Ipv4Addr,
    /// The Service port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// One local pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodConfig {
    /// The pod's IPv4 address.
    pub ip: Ipv4Addr,
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
            lru_size: 1 << 20,
            udp_idle_secs: 120,
            fin_grace_secs: 10,
            gc_interval_secs: 5,
            pin_dir: DEFAULT_PIN_DIR.into(),
            metrics_addr: "127.0.0.1:9465".into(),
            uplink_udp_segmentation_off: true,
        }
    }
}

impl Config {
    /// Parses YAML; missing fields take their defaults.
    pub fn from_yaml(text: &str) -> Result<Self> {
        serde_yaml::from_str(text).map_err(Error::Config)
    }
}

impl ServiceConfig {
    /// The IP protocol number.
    pub fn proto(&self) -> Result<u8> {
        match self.protocol.to_ascii_lowercase().as_str() {
            "tcp" => Ok(talaria_common::net::IPPROTO_TCP),
            "udp" => Ok(talaria_common::net::IPPROTO_UDP),
            other => Err(Error::Invalid(format!("protocol {other:?}"))),
        }
    }
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

/// Parses `a.b.c.d/len`.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let bad = || Error::Invalid(format!("CIDR {s:?}"));
    let (a, l) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let len: u8 = l.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_with_defaults() {
        let c = Config::from_yaml(
            "uplink: up0\nnode_ip: 10.0.1.1\nswitch_ip: 10.0.0.1\nswitch_mac: 02:00:00:00:00:01\n\
             pods:\n  - {ip: 10.244.1.2, veth: vp1}\nservices:\n  - {id: 7, vip: 10.96.0.10, port: 80, protocol: tcp}\n",
        )
        .unwrap();
        assert_eq!(c.uplink, "up0");
        assert_eq!(c.lru_size, 1 << 20);
        assert_eq!(c.pods[0].veth, "vp1");
        assert_eq!(c.services[0].proto().unwrap(), 6);
        assert!(Config::from_yaml("bogus: 1").is_err());
        assert_eq!(parse_mac("02:00:00:00:00:01").unwrap(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(
            parse_cidr("10.96.0.0/12").unwrap(),
            (Ipv4Addr::new(10, 96, 0, 0), 12)
        );
        assert!(parse_cidr("10.96.0.0/33").is_err());
    }
}
