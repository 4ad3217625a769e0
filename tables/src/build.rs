//! One short constructor per table entry, for tests, benches and
//! fixtures: `build::service(vip, 80, IPPROTO_TCP, 7, 3, mode)` instead of
//! a dozen lines of `Entry::ServiceV4(service_v4::Entry { key, action })`.
//!
//! Each returns the [`Entry`] over all tables, with the table's one entry
//! action (for `ipv4_route`, [`route`] and [`blackhole`]; for `ipv6_route`,
//! [`route_v6`] and [`blackhole_v6`]). The values go in
//! as given: nothing is checked or normalised, so a test can still build
//! an entry a switch must refuse (see [`prefix`]).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::value::{Ipv4Prefix, Ipv6Prefix, Mac};
use crate::{
    backend, backend_v6, cookie_check, endpoint_reply, ipv4_route, ipv6_route, lb_bucket, pod_node,
    pod_node_v6, service_v4, service_v6, spoofed_source, switch_addr, ts_cookie, tunnel_peer,
    tunnel_source, Entry,
};

/// `addr/len` exactly as given: unlike [`crate::value::Prefix::new`], host
/// bits are kept, for tests of the switches' refusal of them.
pub const fn prefix(addr: Ipv4Addr, len: u8) -> Ipv4Prefix {
    Ipv4Prefix { addr, len }
}

/// `ipv4_route`: `prefix` out of `port`, to the next hop `dst_mac`.
pub const fn route(prefix: Ipv4Prefix, port: u16, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Entry {
    Entry::Ipv4Route(ipv4_route::Entry {
        key: ipv4_route::Key { dst_addr: prefix },
        action: ipv4_route::Action::Forward {
            port,
            src_mac: Mac(src_mac),
            dst_mac: Mac(dst_mac),
        },
    })
}

/// `ipv4_route`: a blackhole route, which drops what matches `prefix`.
pub const fn blackhole(prefix: Ipv4Prefix) -> Entry {
    Entry::Ipv4Route(ipv4_route::Entry {
        key: ipv4_route::Key { dst_addr: prefix },
        action: ipv4_route::Action::Drop {},
    })
}

/// `ipv6_route`: `prefix` out of `port`, to the next hop `dst_mac`.
pub const fn route_v6(prefix: Ipv6Prefix, port: u16, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Entry {
    Entry::Ipv6Route(ipv6_route::Entry {
        key: ipv6_route::Key { dst_addr: prefix },
        action: ipv6_route::Action::ForwardV6 {
            port,
            src_mac: Mac(src_mac),
            dst_mac: Mac(dst_mac),
        },
    })
}

/// `ipv6_route`: a blackhole route, which drops what matches `prefix`.
pub const fn blackhole_v6(prefix: Ipv6Prefix) -> Entry {
    Entry::Ipv6Route(ipv6_route::Entry {
        key: ipv6_route::Key { dst_addr: prefix },
        action: ipv6_route::Action::Drop {},
    })
}

/// `switch_addr`: tunnels to `addr` end at this switch.
pub const fn switch_addr(addr: Ipv4Addr) -> Entry {
    Entry::SwitchAddr(switch_addr::Entry {
        key: switch_addr::Key { dst_addr: addr },
        action: switch_addr::Action::TerminateTunnel {},
    })
}

/// `service_v4`: (`vip`, `port`, `proto`) is service `service_id`, with
/// `bucket_mask + 1` buckets, hashed by `hash_mode`
/// (`talaria_common::hash::hash_mode`).
pub const fn service(
    vip: Ipv4Addr,
    port: u16,
    proto: u8,
    service_id: u16,
    bucket_mask: u16,
    hash_mode: u8,
) -> Entry {
    Entry::ServiceV4(service_v4::Entry {
        key: service_v4::Key { vip, port, proto },
        action: service_v4::Action::SetService {
            service_id,
            bucket_mask,
            hash_mode,
        },
    })
}

/// `service_v6`: [`service`] for an IPv6 `vip`.
pub const fn service_v6(
    vip: Ipv6Addr,
    port: u16,
    proto: u8,
    service_id: u16,
    bucket_mask: u16,
    hash_mode: u8,
) -> Entry {
    Entry::ServiceV6(service_v6::Entry {
        key: service_v6::Key { vip, port, proto },
        action: service_v6::Action::SetService {
            service_id,
            bucket_mask,
            hash_mode,
        },
    })
}

/// `lb_bucket`: bucket `bucket` of service `service_id` picks `backend_id`.
pub const fn bucket(service_id: u16, bucket: u16, backend_id: u32) -> Entry {
    Entry::LbBucket(lb_bucket::Entry {
        key: lb_bucket::Key { service_id, bucket },
        action: lb_bucket::Action::SelectBackend { backend_id },
    })
}

/// `cookie_check`: a cookie naming `backend_id` is valid for `service_id`.
pub const fn cookie(service_id: u16, backend_id: u32) -> Entry {
    Entry::CookieCheck(cookie_check::Entry {
        key: cookie_check::Key {
            service_id,
            backend_id,
        },
        action: cookie_check::Action::CookieValid {},
    })
}

/// `ts_cookie`: an external client echoing timestamp cookie `cookie` to
/// service `service_id` is on `backend_id`.
pub const fn ts_cookie(service_id: u16, cookie: u16, backend_id: u32) -> Entry {
    Entry::TsCookie(ts_cookie::Entry {
        key: ts_cookie::Key { service_id, cookie },
        action: ts_cookie::Action::TsCookieHit { backend_id },
    })
}

/// `backend`: `backend_id` is the pod `ip`:`port` on node `node_ip`.
pub const fn backend(backend_id: u32, ip: Ipv4Addr, port: u16, node_ip: Ipv4Addr) -> Entry {
    Entry::Backend(backend::Entry {
        key: backend::Key { backend_id },
        action: backend::Action::SetBackend {
            backend_ip: ip,
            backend_port: port,
            node_ip,
        },
    })
}

/// `backend_v6`: `backend_id` is the IPv6 pod `ip`:`port` on node
/// `node_ip`.
pub const fn backend_v6(backend_id: u32, ip: Ipv6Addr, port: u16, node_ip: Ipv4Addr) -> Entry {
    Entry::BackendV6(backend_v6::Entry {
        key: backend_v6::Key { backend_id },
        action: backend_v6::Action::SetBackendV6 {
            backend_ip: ip,
            backend_port: port,
            node_ip,
        },
    })
}

/// `pod_node_v6`: IPv6 client pods in `prefix` live on node `node_ip`.
pub const fn pod_node_v6(prefix: Ipv6Prefix, node_ip: Ipv4Addr) -> Entry {
    Entry::PodNodeV6(pod_node_v6::Entry {
        key: pod_node_v6::Key { pod_addr: prefix },
        action: pod_node_v6::Action::SetClientNode { node_ip },
    })
}

/// `pod_node`: client pods in `prefix` live on node `node_ip`.
pub const fn pod_node(prefix: Ipv4Prefix, node_ip: Ipv4Addr) -> Entry {
    Entry::PodNode(pod_node::Entry {
        key: pod_node::Key { pod_addr: prefix },
        action: pod_node::Action::SetClientNode { node_ip },
    })
}

/// `tunnel_peer`: node `node_ip`, attached to `port`, may send tunnels to
/// the switch.
pub const fn tunnel_peer(port: u16, node_ip: Ipv4Addr) -> Entry {
    Entry::TunnelPeer(tunnel_peer::Entry {
        key: tunnel_peer::Key { port, node_ip },
        action: tunnel_peer::Action::AcceptTunnel {},
    })
}

/// `spoofed_source`: no port may send from `addr`.
pub const fn spoofed_source(addr: Ipv4Addr) -> Entry {
    Entry::SpoofedSource(spoofed_source::Entry {
        key: spoofed_source::Key { src_addr: addr },
        action: spoofed_source::Action::DropSpoofed {},
    })
}

/// `endpoint_reply`: replies of `proto` from `endpoint` (address, port)
/// arriving on `port` are tunnelled to the client's node as
/// (`service_id`, `backend_id`).
pub const fn endpoint_reply(
    port: u16,
    endpoint: (Ipv4Addr, u16),
    proto: u8,
    cookie: (u16, u32),
) -> Entry {
    Entry::EndpointReply(endpoint_reply::Entry {
        key: endpoint_reply::Key {
            port,
            endpoint_addr: endpoint.0,
            endpoint_port: endpoint.1,
            proto,
        },
        action: endpoint_reply::Action::SetEndpointReply {
            service_id: cookie.0,
            backend_id: cookie.1,
        },
    })
}

/// `tunnel_source`: node `node_ip` accepts tunnels from the switch address
/// `switch_ip`.
pub const fn tunnel_source(node_ip: Ipv4Addr, switch_ip: Ipv4Addr) -> Entry {
    Entry::TunnelSource(tunnel_source::Entry {
        key: tunnel_source::Key { node_ip },
        action: tunnel_source::Action::SetTunnelSource { switch_ip },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Table;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    const P: Ipv4Prefix = prefix(Ipv4Addr::new(10, 1, 2, 3), 16);
    const P6: Ipv6Prefix = Ipv6Prefix {
        addr: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0),
        len: 8,
    };
    const A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0xa);

    /// Every constructor fills its own table, each argument in its own
    /// field: the values differ, so a swapped pair shows.
    #[test]
    fn each_constructor_builds_its_tables_entry() {
        let cases = [
            (
                route(P, 3, [1; 6], [2; 6]),
                Entry::Ipv4Route(ipv4_route::Entry {
                    key: ipv4_route::Key { dst_addr: P },
                    action: ipv4_route::Action::Forward {
                        port: 3,
                        src_mac: Mac([1; 6]),
                        dst_mac: Mac([2; 6]),
                    },
                }),
                Table::Ipv4Route,
            ),
            (
                blackhole(P),
                Entry::Ipv4Route(ipv4_route::Entry {
                    key: ipv4_route::Key { dst_addr: P },
                    action: ipv4_route::Action::Drop {},
                }),
                Table::Ipv4Route,
            ),
            (
                route_v6(P6, 3, [1; 6], [2; 6]),
                Entry::Ipv6Route(ipv6_route::Entry {
                    key: ipv6_route::Key { dst_addr: P6 },
                    action: ipv6_route::Action::ForwardV6 {
                        port: 3,
                        src_mac: Mac([1; 6]),
                        dst_mac: Mac([2; 6]),
                    },
                }),
                Table::Ipv6Route,
            ),
            (
                blackhole_v6(P6),
                Entry::Ipv6Route(ipv6_route::Entry {
                    key: ipv6_route::Key { dst_addr: P6 },
                    action: ipv6_route::Action::Drop {},
                }),
                Table::Ipv6Route,
            ),
            (
                switch_addr(A),
                Entry::SwitchAddr(switch_addr::Entry {
                    key: switch_addr::Key { dst_addr: A },
                    action: switch_addr::Action::TerminateTunnel {},
                }),
                Table::SwitchAddr,
            ),
            (
                service(A, 80, 6, 7, 3, 1),
                Entry::ServiceV4(service_v4::Entry {
                    key: service_v4::Key {
                        vip: A,
                        port: 80,
                        proto: 6,
                    },
                    action: service_v4::Action::SetService {
                        service_id: 7,
                        bucket_mask: 3,
                        hash_mode: 1,
                    },
                }),
                Table::ServiceV4,
            ),
            (
                bucket(7, 2, 100),
                Entry::LbBucket(lb_bucket::Entry {
                    key: lb_bucket::Key {
                        service_id: 7,
                        bucket: 2,
                    },
                    action: lb_bucket::Action::SelectBackend { backend_id: 100 },
                }),
                Table::LbBucket,
            ),
            (
                cookie(7, 100),
                Entry::CookieCheck(cookie_check::Entry {
                    key: cookie_check::Key {
                        service_id: 7,
                        backend_id: 100,
                    },
                    action: cookie_check::Action::CookieValid {},
                }),
                Table::CookieCheck,
            ),
            (
                ts_cookie(7, 0xbeef, 100),
                Entry::TsCookie(ts_cookie::Entry {
                    key: ts_cookie::Key {
                        service_id: 7,
                        cookie: 0xbeef,
                    },
                    action: ts_cookie::Action::TsCookieHit { backend_id: 100 },
                }),
                Table::TsCookie,
            ),
            (
                backend(100, A, 8080, B),
                Entry::Backend(backend::Entry {
                    key: backend::Key { backend_id: 100 },
                    action: backend::Action::SetBackend {
                        backend_ip: A,
                        backend_port: 8080,
                        node_ip: B,
                    },
                }),
                Table::Backend,
            ),
            (
                pod_node(P, C),
                Entry::PodNode(pod_node::Entry {
                    key: pod_node::Key { pod_addr: P },
                    action: pod_node::Action::SetClientNode { node_ip: C },
                }),
                Table::PodNode,
            ),
            (
                tunnel_peer(4, A),
                Entry::TunnelPeer(tunnel_peer::Entry {
                    key: tunnel_peer::Key {
                        port: 4,
                        node_ip: A,
                    },
                    action: tunnel_peer::Action::AcceptTunnel {},
                }),
                Table::TunnelPeer,
            ),
            (
                spoofed_source(B),
                Entry::SpoofedSource(spoofed_source::Entry {
                    key: spoofed_source::Key { src_addr: B },
                    action: spoofed_source::Action::DropSpoofed {},
                }),
                Table::SpoofedSource,
            ),
            (
                endpoint_reply(3, (A, 6443), 6, (7, 9)),
                Entry::EndpointReply(endpoint_reply::Entry {
                    key: endpoint_reply::Key {
                        port: 3,
                        endpoint_addr: A,
                        endpoint_port: 6443,
                        proto: 6,
                    },
                    action: endpoint_reply::Action::SetEndpointReply {
                        service_id: 7,
                        backend_id: 9,
                    },
                }),
                Table::EndpointReply,
            ),
            (
                service_v6(A6, 80, 17, 7, 3, 1),
                Entry::ServiceV6(service_v6::Entry {
                    key: service_v6::Key {
                        vip: A6,
                        port: 80,
                        proto: 17,
                    },
                    action: service_v6::Action::SetService {
                        service_id: 7,
                        bucket_mask: 3,
                        hash_mode: 1,
                    },
                }),
                Table::ServiceV6,
            ),
            (
                backend_v6(100, A6, 8080, B),
                Entry::BackendV6(backend_v6::Entry {
                    key: backend_v6::Key { backend_id: 100 },
                    action: backend_v6::Action::SetBackendV6 {
                        backend_ip: A6,
                        backend_port: 8080,
                        node_ip: B,
                    },
                }),
                Table::BackendV6,
            ),
            (
                pod_node_v6(P6, C),
                Entry::PodNodeV6(pod_node_v6::Entry {
                    key: pod_node_v6::Key { pod_addr: P6 },
                    action: pod_node_v6::Action::SetClientNode { node_ip: C },
                }),
                Table::PodNodeV6,
            ),
            (
                tunnel_source(A, B),
                Entry::TunnelSource(tunnel_source::Entry {
                    key: tunnel_source::Key { node_ip: A },
                    action: tunnel_source::Action::SetTunnelSource { switch_ip: B },
                }),
                Table::TunnelSource,
            ),
        ];
        for (built, want, table) in cases {
            assert_eq!(built, want);
            assert_eq!(built.table(), table);
        }
        // Every table has a constructor.
        let mut tables: Vec<Table> = cases.iter().map(|c| c.2).collect();
        tables.sort();
        tables.dedup();
        let mut all = Table::ALL.to_vec();
        all.sort();
        assert_eq!(tables, all);
    }

    #[test]
    fn prefix_keeps_host_bits() {
        assert_eq!(P.addr, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(P.len, 16);
    }
}
