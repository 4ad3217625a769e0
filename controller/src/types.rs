//! Small value types shared by the model, the planner, the diff and the
//! P4Runtime codec: IPv4 prefixes, L4 protocols, hash modes and the typed
//! key/action of every switch table.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};

/// An IPv4 prefix `addr/len`, always stored with the host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Prefix {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Ipv4Prefix {
    /// Builds a prefix, clearing host bits. `None` when `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        if len > 32 {
            return None;
        }
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        };
        Some(Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        })
    }

    /// True when `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        Self::new(ip, self.len).is_some_and(|p| p.addr == self.addr)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("bad IPv4 address in {s:?}"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("bad prefix length in {s:?}"))?;
        Self::new(addr, len).ok_or_else(|| format!("prefix length > 32 in {s:?}"))
    }
}

impl Serialize for Ipv4Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// L4 protocol of a Service port that the switch load-balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Proto {
    /// IP protocol 6.
    Tcp,
    /// IP protocol 17.
    Udp,
}

impl Proto {
    /// The IP protocol number, as the switch matches it.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    /// Inverse of [`Proto::number`].
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        })
    }
}

/// What the switch hashes to pick a bucket (`hash_mode` of `set_service`;
/// values must match `HASH_MODE_*` in p4/constants.p4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashMode {
    /// The inner 5-tuple (sessionAffinity None).
    FiveTuple,
    /// The inner source address only (sessionAffinity ClientIP).
    ClientIp,
}

impl HashMode {
    /// The `hash_mode` action parameter value.
    pub fn value(self) -> u8 {
        match self {
            HashMode::FiveTuple => 0,
            HashMode::ClientIp => 1,
        }
    }

    /// Inverse of [`HashMode::value`].
    pub fn from_value(v: u8) -> Option<Self> {
        match v {
            0 => Some(HashMode::FiveTuple),
            1 => Some(HashMode::ClientIp),
            _ => None,
        }
    }
}

/// Key of `service_v4`: what a client addresses. Also the identity that a
/// service id is allocated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    /// The ClusterIP.
    pub vip: Ipv4Addr,
    /// The Service port.
    pub port: u16,
    /// TCP or UDP.
    pub proto: Proto,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.vip, self.port, self.proto)
    }
}

/// A backend as the switch knows it: where to DNAT and which node to tunnel
/// to. Also the identity that a backend id is allocated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Backend {
    /// Pod (endpoint) address.
    pub ip: Ipv4Addr,
    /// Target port on the pod.
    pub port: u16,
    /// InternalIP of the node that hosts the pod.
    pub node_ip: Ipv4Addr,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}@{}", self.ip, self.port, self.node_ip)
    }
}

/// Action data of `service_v4`'s `set_service`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceAction {
    /// Allocated service id (16 bits, never 0).
    pub service_id: u16,
    /// Bucket count − 1 (bucket counts are powers of two).
    pub bucket_mask: u16,
    /// What to hash.
    pub hash_mode: HashMode,
}

/// Action of `ipv4_route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RouteAction {
    /// `forward(port, src_mac, dst_mac)`.
    Forward {
        /// Egress port number.
        port: u16,
        /// Source MAC written on egress.
        src_mac: Mac,
        /// Destination MAC written on egress.
        dst_mac: Mac,
    },
    /// `drop`.
    Drop,
}

/// A MAC address, `aa:bb:cc:dd:ee:ff` in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!("bad MAC {s:?}"));
        }
        for (o, p) in out.iter_mut().zip(parts) {
            *o = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC {s:?}"))?;
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_parse_clears_host_bits() {
        let p: Ipv4Prefix = "10.1.2.3/24".parse().unwrap();
        assert_eq!(p.to_string(), "10.1.2.0/24");
        assert!(p.contains("10.1.2.200".parse().unwrap()));
        assert!(!p.contains("10.1.3.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Ipv4Prefix>().is_err());
        assert_eq!("0.0.0.0/0".parse::<Ipv4Prefix>().unwrap().len, 0);
    }

    #[test]
    fn mac_roundtrip() {
        let m: Mac = "02:00:00:00:00:0a".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:00:00:00:0a");
        assert!("02:00".parse::<Mac>().is_err());
    }
}
