//! The controller's domain values: what a Service port and a backend are,
//! and how they become `service_v4`/`service_v6` and `backend`/`backend_v6`
//! table values. The tables themselves are `talaria_tables`.
//!
//! Service addresses and backend addresses are of either family (a
//! dual-stack Service has a port of each); node addresses are IPv4, the
//! underlay the switch tunnels over.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use serde::{Deserialize, Serialize};
use talaria_tables::{backend, backend_v6, service_v4, service_v6, Entry, EntryKey, Table};

pub use talaria_tables::value::{IpPrefix, Ipv4Prefix, Ipv6Prefix, Mac};

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

/// Key of `service_v4` (an IPv4 `vip`) or `service_v6` (an IPv6 one): what
/// a client addresses. Also the identity that a service id is allocated for
/// (one id space over both tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    /// The ClusterIP (or a node's address, or an external address).
    pub vip: IpAddr,
    /// The Service port.
    pub port: u16,
    /// TCP or UDP.
    pub proto: Proto,
}

impl ServiceKey {
    /// The table of its family: `service_v4` or `service_v6`.
    pub fn table(&self) -> Table {
        match self.vip {
            IpAddr::V4(_) => Table::ServiceV4,
            IpAddr::V6(_) => Table::ServiceV6,
        }
    }

    /// Its key in the table of its family.
    pub fn entry_key(&self) -> EntryKey {
        let (port, proto) = (self.port, self.proto.number());
        match self.vip {
            IpAddr::V4(vip) => EntryKey::ServiceV4(service_v4::Key { vip, port, proto }),
            IpAddr::V6(vip) => EntryKey::ServiceV6(service_v6::Key { vip, port, proto }),
        }
    }

    /// Its `set_service` entry in the table of its family.
    pub fn entry(&self, service_id: u16, bucket_mask: u16, hash_mode: u8) -> Entry {
        let (port, proto) = (self.port, self.proto.number());
        match self.vip {
            IpAddr::V4(vip) => service_v4::Entry {
                key: service_v4::Key { vip, port, proto },
                action: service_v4::Action::SetService {
                    service_id,
                    bucket_mask,
                    hash_mode,
                },
            }
            .into(),
            IpAddr::V6(vip) => service_v6::Entry {
                key: service_v6::Key { vip, port, proto },
                action: service_v6::Action::SetService {
                    service_id,
                    bucket_mask,
                    hash_mode,
                },
            }
            .into(),
        }
    }

    /// The Service port of a service table key's fields, if its protocol
    /// is one talaria balances.
    fn from_key_fields(vip: IpAddr, port: u16, proto: u8) -> Option<Self> {
        Some(Self {
            vip,
            port,
            proto: Proto::from_number(proto)?,
        })
    }

    /// The Service port a `service_v4` key names, if its protocol is one
    /// talaria balances.
    pub fn from_table_key(k: &service_v4::Key) -> Option<Self> {
        Self::from_key_fields(k.vip.into(), k.port, k.proto)
    }

    /// [`Self::from_table_key`] of a `service_v6` key.
    pub fn from_table_key_v6(k: &service_v6::Key) -> Option<Self> {
        Self::from_key_fields(k.vip.into(), k.port, k.proto)
    }

    /// The Service port a `service_v4` or `service_v6` entry names, and
    /// its `set_service` parameters (service id, bucket mask, hash mode);
    /// `Err` with the key shown when its protocol is not balanced, `None`
    /// for an entry of another table.
    #[allow(clippy::type_complexity)]
    pub fn from_entry(e: &Entry) -> Option<Result<(Self, (u16, u16, u8)), String>> {
        let (table, vip, port, proto, params) = match e {
            Entry::ServiceV4(e) => {
                let service_v4::Action::SetService {
                    service_id,
                    bucket_mask,
                    hash_mode,
                } = e.action;
                let params = (service_id, bucket_mask, hash_mode);
                (
                    "service_v4",
                    e.key.vip.into(),
                    e.key.port,
                    e.key.proto,
                    params,
                )
            }
            Entry::ServiceV6(e) => {
                let service_v6::Action::SetService {
                    service_id,
                    bucket_mask,
                    hash_mode,
                } = e.action;
                let params = (service_id, bucket_mask, hash_mode);
                (
                    "service_v6",
                    e.key.vip.into(),
                    e.key.port,
                    e.key.proto,
                    params,
                )
            }
            _ => return None,
        };
        Some(
            Self::from_key_fields(vip, port, proto)
                .map(|k| (k, params))
                .ok_or_else(|| format!("{table} {} protocol {proto}", SocketAddr::new(vip, port))),
        )
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", SocketAddr::new(self.vip, self.port), self.proto)
    }
}

/// A backend as the switch knows it: where to DNAT and which node to tunnel
/// to. Also the identity that a backend id is allocated for (one id space
/// over `backend` and `backend_v6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Backend {
    /// Pod (endpoint) address, of the family of the Service port's VIP.
    pub ip: IpAddr,
    /// Target port on the pod.
    pub port: u16,
    /// InternalIP of the node whose agent delivers it, or [`Self::NO_AGENT`]
    /// (IPv4: the underlay).
    pub node_ip: Ipv4Addr,
}

impl Backend {
    /// The `node_ip` of an endpoint no talaria agent delivers to (outside
    /// every pod CIDR): the switch sends its requests plain and tunnels its
    /// replies to the client's node (`endpoint_reply`). IPv4 only: the
    /// model skips IPv6 endpoints without an agent.
    pub const NO_AGENT: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

    /// True unless the switch delivers to it plain.
    pub fn has_agent(&self) -> bool {
        self.node_ip != Self::NO_AGENT
    }

    /// The table of its family: `backend` or `backend_v6`.
    pub fn table(&self) -> Table {
        match self.ip {
            IpAddr::V4(_) => Table::Backend,
            IpAddr::V6(_) => Table::BackendV6,
        }
    }

    /// Its entry under `backend_id` in the table of its family.
    pub fn entry(&self, backend_id: u32) -> Entry {
        match self.ip {
            IpAddr::V4(backend_ip) => backend::Entry {
                key: backend::Key { backend_id },
                action: backend::Action::SetBackend {
                    backend_ip,
                    backend_port: self.port,
                    node_ip: self.node_ip,
                },
            }
            .into(),
            IpAddr::V6(backend_ip) => backend_v6::Entry {
                key: backend_v6::Key { backend_id },
                action: backend_v6::Action::SetBackendV6 {
                    backend_ip,
                    backend_port: self.port,
                    node_ip: self.node_ip,
                },
            }
            .into(),
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
            ip: backend_ip.into(),
            port: backend_port,
            node_ip,
        }
    }

    /// The backend a `backend_v6` action names.
    pub fn from_action_v6(a: &backend_v6::Action) -> Self {
        let backend_v6::Action::SetBackendV6 {
            backend_ip,
            backend_port,
            node_ip,
        } = *a;
        Self {
            ip: backend_ip.into(),
            port: backend_port,
            node_ip,
        }
    }

    /// The backend id and backend of a `backend` or `backend_v6` entry.
    pub fn from_entry(e: &Entry) -> Option<(u32, Self)> {
        match e {
            Entry::Backend(e) => Some((e.key.backend_id, Self::from_action(&e.action))),
            Entry::BackendV6(e) => Some((e.key.backend_id, Self::from_action_v6(&e.action))),
            _ => None,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", SocketAddr::new(self.ip, self.port))?;
        if self.has_agent() {
            write!(f, "@{}", self.node_ip)
        } else {
            f.write_str(" (no agent)")
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
        let EntryKey::ServiceV4(mut tk) = k.entry_key() else {
            panic!("an IPv4 key is a service_v4 key")
        };
        assert_eq!(tk.proto, 17);
        assert_eq!(ServiceKey::from_table_key(&tk), Some(k));
        let e = k.entry(7, 15, 1);
        assert_eq!(e.key(), k.entry_key());
        assert_eq!(ServiceKey::from_entry(&e), Some(Ok((k, (7, 15, 1)))));
        tk.proto = 132;
        assert_eq!(ServiceKey::from_table_key(&tk), None);
        let b = Backend {
            ip: [10, 244, 1, 5].into(),
            port: 8080,
            node_ip: [192, 168, 0, 11].into(),
        };
        assert_eq!(b.table(), Table::Backend);
        assert_eq!(Backend::from_entry(&b.entry(3)), Some((3, b)));
        assert_eq!(b.to_string(), "10.244.1.5:8080@192.168.0.11");
    }

    #[test]
    fn ipv6_keys_and_backends_go_to_the_v6_tables() {
        let k = ServiceKey {
            vip: "fd00:96::a".parse().unwrap(),
            port: 53,
            proto: Proto::Udp,
        };
        assert_eq!(k.table(), Table::ServiceV6);
        let EntryKey::ServiceV6(tk) = k.entry_key() else {
            panic!("an IPv6 key is a service_v6 key")
        };
        assert_eq!(ServiceKey::from_table_key_v6(&tk), Some(k));
        let e = k.entry(9, 31, 0);
        assert_eq!(e.table(), Table::ServiceV6);
        assert_eq!(ServiceKey::from_entry(&e), Some(Ok((k, (9, 31, 0)))));
        assert_eq!(k.to_string(), "[fd00:96::a]:53/UDP");
        let b = Backend {
            ip: "fd00:10:244:1::5".parse().unwrap(),
            port: 8080,
            node_ip: [192, 168, 0, 11].into(),
        };
        let e = b.entry(4);
        assert_eq!(e.table(), Table::BackendV6);
        assert_eq!(Backend::from_entry(&e), Some((4, b)));
        assert_eq!(b.to_string(), "[fd00:10:244:1::5]:8080@192.168.0.11");
        // Serialised as strings of either family.
        let json = serde_json::to_value(k).unwrap();
        assert_eq!(json["vip"], "fd00:96::a");
    }
}
