//! [`Target`] over the pinned maps: P4Runtime write semantics with one
//! bpf(2) call per check-and-write (`BPF_NOEXIST` for INSERT, `BPF_EXIST`
//! for MODIFY), table sizes from the table definitions.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, OwnedFd},
};

use talaria_common::{
    be::{Be16, Be32},
    drop::{DROP_REASON_COUNT, LB_EVENT_COUNT},
    maps::{
        BackendV6Value, BackendValue, BucketValue, EndpointReplyKey, EndpointReplyValue,
        Ipv4LpmKey, Ipv6LpmKey, NodeValue, PacketBytes, RouteValue, ServiceKey, ServiceScopedKey,
        ServiceV6Key, ServiceValue, TsCookieKey, TsCookieValue, TunnelPeerKey,
    },
};
use talaria_switch_ebpf::{size, PORT_COUNT, ROUTE_DROP_PORT};
use talaria_tables::{
    backend, backend_v6, cookie_check, endpoint_reply, ipv4_route, ipv6_route, lb_bucket, pod_node,
    pod_node_v6, service_v4, service_v6, spoofed_source, switch_addr, ts_cookie, tunnel_peer,
    tunnel_source,
    value::{Ipv4Prefix, Ipv6Prefix, Mac, Prefix, Value},
};

use crate::{
    entry::{CounterId, Entry, EntryKey, Table, Target, TargetError},
    sys, Dataplane,
};

/// A map key or value of at most `N` bytes, kept on the stack: a write
/// encodes its entry without allocating.
#[derive(Clone, Copy)]
struct MapBytes<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> MapBytes<N> {
    fn from_slice(b: &[u8]) -> Self {
        let mut bytes = [0; N];
        bytes[..b.len()].copy_from_slice(b);
        Self {
            bytes,
            len: b.len(),
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The largest map key (`Ipv6LpmKey`, `ServiceV6Key`).
type KeyBytes = MapBytes<20>;
/// The largest map value (`BackendV6Value`).
type ValueBytes = MapBytes<24>;

/// The bytes of a `repr(C)` map key or value without padding.
fn bytes_of<T: aya::Pod, const N: usize>(v: &T) -> MapBytes<N> {
    // SAFETY: `Pod` types have no padding and no invalid bit patterns.
    MapBytes::from_slice(unsafe {
        std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
    })
}

fn from_bytes<T: aya::Pod>(b: &[u8]) -> T {
    assert_eq!(b.len(), std::mem::size_of::<T>());
    // SAFETY: `Pod`, and the length was checked; read_unaligned copes with
    // any alignment of the buffer.
    unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) }
}

fn map_err(e: io::Error) -> TargetError {
    TargetError::Map(Box::new(e))
}

/// Unused value of the exact-match tables whose actions have no
/// parameters (`switch_addr`, `cookie_check`, `tunnel_peer`,
/// `spoofed_source`).
const PRESENT: u32 = 1;

/// `p` as given, if an LPM key may hold it: no longer than the address,
/// no host bits set.
fn checked_prefix<A: Value>(p: &Prefix<A>) -> Result<(), TargetError> {
    match Prefix::new(p.addr, p.len) {
        None => Err(TargetError::Invalid(format!(
            "prefix length {} > {}",
            p.len,
            A::BITS
        ))),
        Some(net) if net != *p => Err(TargetError::Invalid(format!(
            "{:?}/{} has host bits set",
            p.addr, p.len
        ))),
        Some(_) => Ok(()),
    }
}

fn lpm_key(p: &Ipv4Prefix) -> Result<Ipv4LpmKey, TargetError> {
    checked_prefix(p)?;
    Ok(Ipv4LpmKey {
        prefix_len: u32::from(p.len),
        addr: be32(p.addr),
    })
}

fn lpm_key_v6(p: &Ipv6Prefix) -> Result<Ipv6LpmKey, TargetError> {
    checked_prefix(p)?;
    Ok(Ipv6LpmKey {
        prefix_len: u32::from(p.len),
        addr: p.addr.octets(),
    })
}

/// The `RouteValue` of a `forward` (or `forward_v6`) action.
fn route_value(port: u16, src_mac: Mac, dst_mac: Mac) -> Result<RouteValue, TargetError> {
    Ok(RouteValue {
        port: u32::from(port9(port)?),
        src_mac: src_mac.0,
        dst_mac: dst_mac.0,
    })
}

/// The `RouteValue` of a route's `drop` action.
const BLACKHOLE: RouteValue = RouteValue {
    port: ROUTE_DROP_PORT,
    src_mac: [0; 6],
    dst_mac: [0; 6],
};

/// A P4 port number, which must fit the 9 bits of a v1model port.
fn port9(port: u16) -> Result<u16, TargetError> {
    if u32::from(port) >= PORT_COUNT {
        return Err(TargetError::Invalid(format!(
            "port {port} does not fit 9 bits"
        )));
    }
    Ok(port)
}

fn be32(a: Ipv4Addr) -> Be32 {
    Be32(a.octets())
}

fn addr(b: Be32) -> Ipv4Addr {
    Ipv4Addr::from(b.0)
}

impl Dataplane {
    fn table_fd(&self, table: Table) -> &OwnedFd {
        &self.maps.tables[&table]
    }

    /// The map key of `key`.
    fn encode_key(key: &EntryKey) -> Result<KeyBytes, TargetError> {
        Ok(match key {
            EntryKey::Ipv4Route(k) => bytes_of(&lpm_key(&k.dst_addr)?),
            EntryKey::Ipv6Route(k) => bytes_of(&lpm_key_v6(&k.dst_addr)?),
            EntryKey::SwitchAddr(k) => MapBytes::from_slice(&be32(k.dst_addr).0),
            EntryKey::ServiceV4(k) => bytes_of(&ServiceKey {
                vip: be32(k.vip),
                port: Be16::new(k.port),
                proto: k.proto,
                _pad: 0,
            }),
            EntryKey::CookieCheck(k) => bytes_of(&ServiceScopedKey {
                service_id: k.service_id,
                _pad: 0,
                id: k.backend_id,
            }),
            EntryKey::LbBucket(k) => bytes_of(&ServiceScopedKey {
                service_id: k.service_id,
                _pad: 0,
                id: u32::from(k.bucket),
            }),
            EntryKey::Backend(k) => MapBytes::from_slice(&k.backend_id.to_ne_bytes()),
            EntryKey::PodNode(k) => bytes_of(&lpm_key(&k.pod_addr)?),
            EntryKey::TunnelPeer(k) => bytes_of(&TunnelPeerKey {
                port: port9(k.port)?,
                _pad: 0,
                node_ip: be32(k.node_ip),
            }),
            EntryKey::EndpointReply(k) => bytes_of(&EndpointReplyKey {
                port: port9(k.port)?,
                endpoint_port: Be16::new(k.endpoint_port),
                endpoint_addr: be32(k.endpoint_addr),
                proto: k.proto,
                _pad: [0; 3],
            }),
            EntryKey::SpoofedSource(k) => MapBytes::from_slice(&be32(k.src_addr).0),
            EntryKey::TunnelSource(k) => MapBytes::from_slice(&be32(k.node_ip).0),
            EntryKey::TsCookie(k) => bytes_of(&TsCookieKey {
                service_id: k.service_id,
                cookie: k.cookie,
            }),
            EntryKey::ServiceV6(k) => bytes_of(&ServiceV6Key {
                vip: k.vip.octets(),
                port: Be16::new(k.port),
                proto: k.proto,
                _pad: 0,
            }),
            EntryKey::BackendV6(k) => MapBytes::from_slice(&k.backend_id.to_ne_bytes()),
            EntryKey::PodNodeV6(k) => bytes_of(&lpm_key_v6(&k.pod_addr)?),
        })
    }

    /// The map key and value of `entry`: each table's key and action as its
    /// BPF map holds them.
    fn encode(entry: &Entry) -> Result<(KeyBytes, ValueBytes), TargetError> {
        let key = Self::encode_key(&entry.key())?;
        let value = match entry {
            Entry::Ipv4Route(e) => bytes_of(&match e.action {
                ipv4_route::Action::Forward {
                    port,
                    src_mac,
                    dst_mac,
                } => route_value(port, src_mac, dst_mac)?,
                ipv4_route::Action::Drop {} => BLACKHOLE,
            }),
            Entry::Ipv6Route(e) => bytes_of(&match e.action {
                ipv6_route::Action::ForwardV6 {
                    port,
                    src_mac,
                    dst_mac,
                } => route_value(port, src_mac, dst_mac)?,
                ipv6_route::Action::Drop {} => BLACKHOLE,
            }),
            Entry::SwitchAddr(_)
            | Entry::CookieCheck(_)
            | Entry::TunnelPeer(_)
            | Entry::SpoofedSource(_) => MapBytes::from_slice(&PRESENT.to_ne_bytes()),
            // Both families' services share `set_service`.
            Entry::ServiceV4(service_v4::Entry {
                action:
                    service_v4::Action::SetService {
                        service_id,
                        bucket_mask,
                        hash_mode,
                    },
                ..
            })
            | Entry::ServiceV6(service_v6::Entry {
                action:
                    service_v6::Action::SetService {
                        service_id,
                        bucket_mask,
                        hash_mode,
                    },
                ..
            }) => bytes_of(&ServiceValue {
                service_id: *service_id,
                bucket_mask: *bucket_mask,
                hash_mode: *hash_mode,
                _pad: [0; 3],
            }),
            Entry::LbBucket(e) => {
                let lb_bucket::Action::SelectBackend { backend_id } = e.action;
                bytes_of(&BucketValue { backend_id })
            }
            Entry::Backend(e) => {
                let backend::Action::SetBackend {
                    backend_ip,
                    backend_port,
                    node_ip,
                } = e.action;
                bytes_of(&BackendValue {
                    ip: be32(backend_ip),
                    port: Be16::new(backend_port),
                    _pad: 0,
                    node_ip: be32(node_ip),
                })
            }
            // Both families' client nodes share `set_client_node`.
            Entry::PodNode(pod_node::Entry {
                action: pod_node::Action::SetClientNode { node_ip },
                ..
            })
            | Entry::PodNodeV6(pod_node_v6::Entry {
                action: pod_node_v6::Action::SetClientNode { node_ip },
                ..
            }) => bytes_of(&NodeValue {
                node_ip: be32(*node_ip),
            }),
            Entry::EndpointReply(e) => {
                let endpoint_reply::Action::SetEndpointReply {
                    service_id,
                    backend_id,
                } = e.action;
                bytes_of(&EndpointReplyValue {
                    service_id,
                    _pad: 0,
                    backend_id,
                })
            }
            Entry::TunnelSource(e) => {
                let tunnel_source::Action::SetTunnelSource { switch_ip } = e.action;
                MapBytes::from_slice(&be32(switch_ip).0)
            }
            Entry::TsCookie(e) => {
                let ts_cookie::Action::TsCookieHit { backend_id } = e.action;
                bytes_of(&TsCookieValue { backend_id })
            }
            Entry::BackendV6(e) => {
                let backend_v6::Action::SetBackendV6 {
                    backend_ip,
                    backend_port,
                    node_ip,
                } = e.action;
                bytes_of(&BackendV6Value {
                    ip: backend_ip.octets(),
                    port: Be16::new(backend_port),
                    _pad: 0,
                    node_ip: be32(node_ip),
                })
            }
        };
        Ok((key, value))
    }

    /// The entry of `table` stored under `key` with `value`.
    fn decode(table: Table, key: &[u8], value: &[u8]) -> Entry {
        let prefix = |k: Ipv4LpmKey| Ipv4Prefix {
            addr: addr(k.addr),
            len: k.prefix_len as u8,
        };
        // A route's action: `None` for the blackhole, else (port, src, dst).
        let route = |v: RouteValue| {
            (v.port != ROUTE_DROP_PORT).then_some((v.port as u16, Mac(v.src_mac), Mac(v.dst_mac)))
        };
        match table {
            Table::Ipv4Route => Entry::Ipv4Route(ipv4_route::Entry {
                key: ipv4_route::Key {
                    dst_addr: prefix(from_bytes(key)),
                },
                action: match route(from_bytes(value)) {
                    None => ipv4_route::Action::Drop {},
                    Some((port, src_mac, dst_mac)) => ipv4_route::Action::Forward {
                        port,
                        src_mac,
                        dst_mac,
                    },
                },
            }),
            Table::Ipv6Route => {
                let k: Ipv6LpmKey = from_bytes(key);
                Entry::Ipv6Route(ipv6_route::Entry {
                    key: ipv6_route::Key {
                        dst_addr: Ipv6Prefix {
                            addr: Ipv6Addr::from(k.addr),
                            len: k.prefix_len as u8,
                        },
                    },
                    action: match route(from_bytes(value)) {
                        None => ipv6_route::Action::Drop {},
                        Some((port, src_mac, dst_mac)) => ipv6_route::Action::ForwardV6 {
                            port,
                            src_mac,
                            dst_mac,
                        },
                    },
                })
            }
            Table::SwitchAddr => Entry::SwitchAddr(switch_addr::Entry {
                key: switch_addr::Key {
                    dst_addr: Ipv4Addr::new(key[0], key[1], key[2], key[3]),
                },
                action: switch_addr::Action::TerminateTunnel {},
            }),
            Table::ServiceV4 => {
                let k: ServiceKey = from_bytes(key);
                let v: ServiceValue = from_bytes(value);
                Entry::ServiceV4(service_v4::Entry {
                    key: service_v4::Key {
                        vip: addr(k.vip),
                        port: k.port.get(),
                        proto: k.proto,
                    },
                    action: service_v4::Action::SetService {
                        service_id: v.service_id,
                        bucket_mask: v.bucket_mask,
                        hash_mode: v.hash_mode,
                    },
                })
            }
            Table::CookieCheck => {
                let k: ServiceScopedKey = from_bytes(key);
                Entry::CookieCheck(cookie_check::Entry {
                    key: cookie_check::Key {
                        service_id: k.service_id,
                        backend_id: k.id,
                    },
                    action: cookie_check::Action::CookieValid {},
                })
            }
            Table::LbBucket => {
                let k: ServiceScopedKey = from_bytes(key);
                let v: BucketValue = from_bytes(value);
                Entry::LbBucket(lb_bucket::Entry {
                    key: lb_bucket::Key {
                        service_id: k.service_id,
                        bucket: k.id as u16,
                    },
                    action: lb_bucket::Action::SelectBackend {
                        backend_id: v.backend_id,
                    },
                })
            }
            Table::Backend => {
                let v: BackendValue = from_bytes(value);
                Entry::Backend(backend::Entry {
                    key: backend::Key {
                        backend_id: from_bytes(key),
                    },
                    action: backend::Action::SetBackend {
                        backend_ip: addr(v.ip),
                        backend_port: v.port.get(),
                        node_ip: addr(v.node_ip),
                    },
                })
            }
            Table::PodNode => {
                let v: NodeValue = from_bytes(value);
                Entry::PodNode(pod_node::Entry {
                    key: pod_node::Key {
                        pod_addr: prefix(from_bytes(key)),
                    },
                    action: pod_node::Action::SetClientNode {
                        node_ip: addr(v.node_ip),
                    },
                })
            }
            Table::TunnelPeer => {
                let k: TunnelPeerKey = from_bytes(key);
                Entry::TunnelPeer(tunnel_peer::Entry {
                    key: tunnel_peer::Key {
                        port: k.port,
                        node_ip: addr(k.node_ip),
                    },
                    action: tunnel_peer::Action::AcceptTunnel {},
                })
            }
            Table::SpoofedSource => Entry::SpoofedSource(spoofed_source::Entry {
                key: spoofed_source::Key {
                    src_addr: addr(from_bytes(key)),
                },
                action: spoofed_source::Action::DropSpoofed {},
            }),
            Table::EndpointReply => {
                let k: EndpointReplyKey = from_bytes(key);
                let v: EndpointReplyValue = from_bytes(value);
                Entry::EndpointReply(endpoint_reply::Entry {
                    key: endpoint_reply::Key {
                        port: k.port,
                        endpoint_addr: addr(k.endpoint_addr),
                        endpoint_port: k.endpoint_port.get(),
                        proto: k.proto,
                    },
                    action: endpoint_reply::Action::SetEndpointReply {
                        service_id: v.service_id,
                        backend_id: v.backend_id,
                    },
                })
            }
            Table::TunnelSource => Entry::TunnelSource(tunnel_source::Entry {
                key: tunnel_source::Key {
                    node_ip: addr(from_bytes(key)),
                },
                action: tunnel_source::Action::SetTunnelSource {
                    switch_ip: addr(from_bytes(value)),
                },
            }),
            Table::TsCookie => {
                let k: TsCookieKey = from_bytes(key);
                let v: TsCookieValue = from_bytes(value);
                Entry::TsCookie(ts_cookie::Entry {
                    key: ts_cookie::Key {
                        service_id: k.service_id,
                        cookie: k.cookie,
                    },
                    action: ts_cookie::Action::TsCookieHit {
                        backend_id: v.backend_id,
                    },
                })
            }
            Table::ServiceV6 => {
                let k: ServiceV6Key = from_bytes(key);
                let v: ServiceValue = from_bytes(value);
                Entry::ServiceV6(service_v6::Entry {
                    key: service_v6::Key {
                        vip: Ipv6Addr::from(k.vip),
                        port: k.port.get(),
                        proto: k.proto,
                    },
                    action: service_v6::Action::SetService {
                        service_id: v.service_id,
                        bucket_mask: v.bucket_mask,
                        hash_mode: v.hash_mode,
                    },
                })
            }
            Table::BackendV6 => {
                let v: BackendV6Value = from_bytes(value);
                Entry::BackendV6(backend_v6::Entry {
                    key: backend_v6::Key {
                        backend_id: from_bytes(key),
                    },
                    action: backend_v6::Action::SetBackendV6 {
                        backend_ip: Ipv6Addr::from(v.ip),
                        backend_port: v.port.get(),
                        node_ip: addr(v.node_ip),
                    },
                })
            }
            Table::PodNodeV6 => {
                let k: Ipv6LpmKey = from_bytes(key);
                let v: NodeValue = from_bytes(value);
                Entry::PodNodeV6(pod_node_v6::Entry {
                    key: pod_node_v6::Key {
                        pod_addr: Ipv6Prefix {
                            addr: Ipv6Addr::from(k.addr),
                            len: k.prefix_len as u8,
                        },
                    },
                    action: pod_node_v6::Action::SetClientNode {
                        node_ip: addr(v.node_ip),
                    },
                })
            }
        }
    }

    fn write(&self, entry: &Entry, flags: u64) -> Result<(), TargetError> {
        let table = entry.table();
        let (key, value) = Self::encode(entry)?;
        sys::map_update(
            self.table_fd(table).as_fd(),
            key.as_slice(),
            value.as_slice(),
            flags,
        )
        .map_err(|e| {
            match e.raw_os_error() {
                Some(libc::EEXIST) => TargetError::AlreadyExists,
                Some(libc::ENOENT) => TargetError::NotFound,
                // Hash maps say E2BIG when full, LPM tries ENOSPC.
                Some(libc::E2BIG) | Some(libc::ENOSPC) => TargetError::Full { size: table.size() },
                _ => map_err(e),
            }
        })
    }

    /// A zeroed direct-counter cell for a new `backend` entry.
    fn reset_backend_counter(&self, backend_id: u32) -> Result<(), TargetError> {
        let zero = vec![0u8; std::mem::size_of::<PacketBytes>() * self.ncpus];
        sys::map_update(
            self.maps.backend_counter.as_fd(),
            &backend_id.to_ne_bytes(),
            &zero,
            sys::BPF_ANY,
        )
        .map_err(map_err)
    }
}

/// The (key, value) sizes of `table`'s map.
pub(crate) fn map_layout(table: Table) -> (usize, usize) {
    use std::mem::size_of;
    match table {
        Table::Ipv4Route => (size_of::<Ipv4LpmKey>(), size_of::<RouteValue>()),
        Table::Ipv6Route => (size_of::<Ipv6LpmKey>(), size_of::<RouteValue>()),
        Table::SwitchAddr => (size_of::<Be32>(), size_of::<u32>()),
        Table::ServiceV4 => (size_of::<ServiceKey>(), size_of::<ServiceValue>()),
        Table::CookieCheck => (size_of::<ServiceScopedKey>(), size_of::<u32>()),
        Table::LbBucket => (size_of::<ServiceScopedKey>(), size_of::<BucketValue>()),
        Table::Backend => (size_of::<u32>(), size_of::<BackendValue>()),
        Table::PodNode => (size_of::<Ipv4LpmKey>(), size_of::<NodeValue>()),
        Table::TunnelPeer => (size_of::<TunnelPeerKey>(), size_of::<u32>()),
        Table::SpoofedSource => (size_of::<Be32>(), size_of::<u32>()),
        Table::EndpointReply => (
            size_of::<EndpointReplyKey>(),
            size_of::<EndpointReplyValue>(),
        ),
        // Node address → switch address.
        Table::TunnelSource => (size_of::<Be32>(), size_of::<Be32>()),
        Table::TsCookie => (size_of::<TsCookieKey>(), size_of::<TsCookieValue>()),
        Table::ServiceV6 => (size_of::<ServiceV6Key>(), size_of::<ServiceValue>()),
        Table::BackendV6 => (size_of::<u32>(), size_of::<BackendV6Value>()),
        Table::PodNodeV6 => (size_of::<Ipv6LpmKey>(), size_of::<NodeValue>()),
    }
}

fn key_len(table: Table) -> usize {
    map_layout(table).0
}

fn value_len(table: Table) -> usize {
    map_layout(table).1
}

impl Target for Dataplane {
    fn insert(&self, entry: &Entry) -> Result<(), TargetError> {
        self.write(entry, sys::BPF_NOEXIST)?;
        if let Entry::Backend(e) = entry {
            // P4 direct counters start at zero with their entry.
            self.reset_backend_counter(e.key.backend_id)?;
        }
        Ok(())
    }

    fn modify(&self, entry: &Entry) -> Result<(), TargetError> {
        self.write(entry, sys::BPF_EXIST)
    }

    fn delete(&self, key: &EntryKey) -> Result<(), TargetError> {
        let table = key.table();
        let bytes = Self::encode_key(key)?;
        sys::map_delete(self.table_fd(table).as_fd(), bytes.as_slice()).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ENOENT) => TargetError::NotFound,
                _ => map_err(e),
            }
        })?;
        if let EntryKey::Backend(k) = key {
            let _ = sys::map_delete(
                self.maps.backend_counter.as_fd(),
                &k.backend_id.to_ne_bytes(),
            );
        }
        Ok(())
    }

    fn entries(&self, table: Table) -> Result<Vec<Entry>, TargetError> {
        let fd = self.table_fd(table).as_fd();
        let mut out = Vec::new();
        let mut key = vec![0u8; key_len(table)];
        let mut prev: Option<Vec<u8>> = None;
        let mut value = vec![0u8; value_len(table)];
        while sys::map_next_key(fd, prev.as_deref(), &mut key).map_err(map_err)? {
            // An entry deleted between the two calls is skipped.
            if sys::map_lookup(fd, &key, &mut value).map_err(map_err)? {
                out.push(Self::decode(table, &key, &value));
            }
            prev = Some(key.clone());
        }
        Ok(out)
    }

    fn get(&self, key: &EntryKey) -> Result<Option<Entry>, TargetError> {
        let table = key.table();
        match key {
            // A trie lookup answers the longest match, not the exact
            // prefix; these tables are small, so walk them.
            EntryKey::Ipv4Route(_)
            | EntryKey::Ipv6Route(_)
            | EntryKey::PodNode(_)
            | EntryKey::PodNodeV6(_) => {
                Ok(self.entries(table)?.into_iter().find(|e| e.key() == *key))
            }
            _ => {
                let k = Self::encode_key(key)?;
                let mut buf = [0u8; 16];
                let value = &mut buf[..value_len(table)];
                let fd = self.table_fd(table).as_fd();
                let found = sys::map_lookup(fd, k.as_slice(), value).map_err(map_err)?;
                Ok(found.then(|| Self::decode(table, k.as_slice(), value)))
            }
        }
    }

    fn counter(&self, counter: CounterId, index: u32) -> Result<PacketBytes, TargetError> {
        let (fd, cells) = match counter {
            CounterId::Service => (&self.maps.service_counter, size::SERVICE_COUNTER),
            CounterId::Drop => (&self.maps.drop_counter, DROP_REASON_COUNT),
            CounterId::LbEvent => (&self.maps.lb_event_counter, LB_EVENT_COUNT),
        };
        if index >= cells {
            return Err(TargetError::Invalid(format!(
                "{counter:?} counter index {index} >= {cells}"
            )));
        }
        Ok(self
            .percpu_sum(fd, &index.to_ne_bytes())
            .map_err(map_err)?
            .unwrap_or_default())
    }

    fn backend_counter(&self, backend_id: u32) -> Result<PacketBytes, TargetError> {
        let mut value = [0u8; 12];
        if !sys::map_lookup(
            self.table_fd(Table::Backend).as_fd(),
            &backend_id.to_ne_bytes(),
            &mut value,
        )
        .map_err(map_err)?
        {
            return Err(TargetError::NotFound);
        }
        Ok(self
            .percpu_sum(&self.maps.backend_counter, &backend_id.to_ne_bytes())
            .map_err(map_err)?
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use talaria_tables::build;

    #[test]
    fn lpm_keys_reject_host_bits_and_long_prefixes() {
        let p = |a: [u8; 4], len| Ipv4Prefix {
            addr: Ipv4Addr::from(a),
            len,
        };
        assert!(lpm_key(&p([10, 1, 0, 0], 16)).is_ok());
        assert!(lpm_key(&p([0, 0, 0, 0], 0)).is_ok());
        assert!(lpm_key(&p([10, 1, 2, 3], 32)).is_ok());
        assert!(matches!(
            lpm_key(&p([10, 1, 0, 1], 16)),
            Err(TargetError::Invalid(_))
        ));
        assert!(matches!(
            lpm_key(&p([10, 0, 0, 0], 33)),
            Err(TargetError::Invalid(_))
        ));
        assert!(matches!(
            lpm_key(&p([1, 0, 0, 0], 0)),
            Err(TargetError::Invalid(_))
        ));
    }

    #[test]
    fn entries_round_trip_through_map_bytes() {
        let node = Ipv4Addr::new(192, 0, 2, 1);
        let entries = [
            build::route(
                build::prefix(Ipv4Addr::new(10, 2, 0, 0), 16),
                3,
                [2, 0, 0, 0, 0, 1],
                [2, 0, 0, 0, 0, 2],
            ),
            build::blackhole(build::prefix(Ipv4Addr::UNSPECIFIED, 0)),
            build::switch_addr(Ipv4Addr::new(10, 0, 0, 1)),
            build::service(Ipv4Addr::new(10, 96, 0, 10), 80, 6, 7, 255, 1),
            build::cookie(7, 70000),
            build::bucket(7, 200, 70000),
            build::backend(70000, Ipv4Addr::new(10, 244, 1, 5), 8080, node),
            build::pod_node(build::prefix(Ipv4Addr::new(10, 244, 1, 0), 24), node),
            build::tunnel_peer(3, node),
            build::spoofed_source(Ipv4Addr::new(10, 0, 0, 1)),
            build::endpoint_reply(
                511,
                (Ipv4Addr::new(192, 0, 2, 9), 6443),
                6,
                (7, 0x8000_0001),
            ),
            build::tunnel_source(node, Ipv4Addr::new(10, 0, 0, 1)),
            build::ts_cookie(7, 0xbeef, 70000),
        ];
        for e in entries {
            let (k, v) = Dataplane::encode(&e).unwrap();
            assert_eq!((k.len, v.len), (key_len(e.table()), value_len(e.table())));
            assert_eq!(Dataplane::decode(e.table(), k.as_slice(), v.as_slice()), e);
        }
        let too_far = Entry::Ipv4Route(ipv4_route::Entry {
            key: ipv4_route::Key {
                dst_addr: Ipv4Prefix {
                    addr: Ipv4Addr::new(10, 2, 0, 0),
                    len: 16,
                },
            },
            action: ipv4_route::Action::Forward {
                port: 512,
                src_mac: Mac([0; 6]),
                dst_mac: Mac([0; 6]),
            },
        });
        assert!(matches!(
            Dataplane::encode(&too_far),
            Err(TargetError::Invalid(_))
        ));
        let endpoint_too_far = build::endpoint_reply(512, (node, 443), 6, (1, 2));
        assert!(matches!(
            Dataplane::encode(&endpoint_too_far),
            Err(TargetError::Invalid(_))
        ));
    }
}
