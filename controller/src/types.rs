//! The controller's domain values: what a Service port and a backend are,
//! and how they become `service_v4` and `backend` table values. The tables
//! themselves are `talaria_tables`.

use std::{fmt, net::Ipv4Addr};

use serde::{Deserialize, Serialize};
use talaria_tables::{backend, service_v4};

pub use talaria_tables::value::{IpPrefix, Ipv4Prefix, Mac};

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

impl ServiceKey {
    /// The `service_v4` key.
    pub fn table_key(&self) -> service_v4::Key {
        service_v4::Key {
            vip: self.vip,
            port: self.port,
            proto: self.proto.number(),
        }
    }

    /// The Service port a `service_v4` key names, if its protocol is one
    /// talaria balances.
    pub fn from_table_key(k: &service_v4::Key) -> Option<Self> {
        Some(Self {
            vip: k.vip,
            port: k.port,
            proto: Proto::from_number(k.proto)?,
        })
    }
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
    /// InternalIP of the node whose agent delivers it, or [`Self::NO_AGENT`].
    pub node_ip: Ipv4Addr,
}

impl Backend {
    /// The `node_ip` of an endpoint no talaria agent delivers to (outside
    /// every pod CIDR): the switch sends its requests plain and tunnels its
    /// replies to the client's node (`endpoint_reply`).
    pub const NO_AGENT: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

    /// True unless the switch delivers to it plain.
    pub fn has_agent(&self) -> bool {
        self.node_ip != Self::NO_AGENT
    }

    /// The `backend` table action for it.
    pub fn action(&self) -> backend::Action {
        backend::Action::SetBackend {
            backend_ip: self.ip,
            backend_port: self.port,
            node_ip: self.node_ip,
        }
    }

    /// The backend a `backend` action names.
    pub fn from_action(a: &backend::Action) -> Self {
        let backend::Action::SetBackend {
            backend_ip,
            backend_port,
            node_ip,
        } = *a;
        Self {
            ip: backend_ip,
            port: backend_port,
            node_ip,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.has_agent() {
            write!(f, "{}:{}@{}", self.ip, self.port, self.node_ip)
        } else {
            write!(f, "{}:{} (no agent)", self.ip, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_keys_and_backends_round_trip_through_their_tables() {
        let k = ServiceKey {
            vip: [10, 96, 0, 10].into(),
            port: 53,
            proto: Proto::Udp,
        };
        assert_eq!(k.table_key().proto, 17);
        assert_eq!(ServiceKey::from_table_key(&k.table_key()), Some(k));
        let mut other = k.table_key();
        other.proto = 132;
        assert_eq!(ServiceKey::from_table_key(&other), None);
        let b = Backend {
            ip: [10, 244, 1, 5].into(),
            port: 8080,
            node_ip: [192, 168, 0, 11].into(),
        };
        assert_eq!(Backend::from_action(&b.action()), b);
    }
}
