//! The tables and counters of `control TalariaIngress` in p4/talaria.p4:
//! the one place their shape is written in Rust. `tests/` checks it
//! against the P4 source and p4/talaria.p4info.txtpb, and
//! [`crate::p4runtime::check`] against any P4Info a switch reports.
//!
//! Byte order: P4Runtime carries every value as a big-endian bytestring;
//! the Rust types here hold host values (`Ipv4Addr`, `u16`, ...).

use std::net::{Ipv4Addr, Ipv6Addr};

use talaria_common::p4::sizes;

use crate::def::{CounterDef, CounterUnit};
use crate::value::Mac;

/// The P4Info of p4/talaria.p4, as p4c writes it (a test compares the two),
/// embedded for the switch that implements it.
pub const P4INFO_TXTPB: &str = include_str!("../../p4/talaria.p4info.txtpb");

/// [`P4INFO_TXTPB`] parsed.
pub fn p4info() -> talaria_p4rt::p4info::P4Info {
    talaria_p4rt::p4info::parse_text(P4INFO_TXTPB).expect("the embedded P4Info parses")
}

/// The P4 architecture the program is written for (P4Info `pkg_info.arch`).
pub const ARCH: &str = "v1model";

/// The P4 control every table, action and counter lives in.
pub const CONTROL: &str = "TalariaIngress";

crate::p4_tables! {
    control "TalariaIngress";

    /// `ipv4_route`: LPM routing of every IPv4 packet the switch sends on,
    /// plain traffic and re-originated tunnels alike.
    table Ipv4Route in ipv4_route = "ipv4_route", 0x0200_0001 {
        size sizes::IPV4_ROUTE;
        key { dst_addr: lpm Ipv4Addr = 32 }
        actions {
            /// Out of `port` to the next hop `dst_mac`; TTL decrement.
            Forward = "forward", 0x0100_0001 { port: u16 = 9, src_mac: Mac = 48, dst_mac: Mac = 48 },
            /// A blackhole route (and the default: no route).
            Drop = "drop", 0x0100_0002 {},
        }
        default_only {}
        default Drop;
        direct_counter None;
    }

    /// `switch_addr`: this switch's tunnel addresses.
    table SwitchAddr in switch_addr = "switch_addr", 0x0200_0002 {
        size sizes::SWITCH_ADDR;
        key { dst_addr: exact Ipv4Addr = 32 }
        actions {
            /// The packet is for this switch: terminate the tunnel.
            TerminateTunnel = "terminate_tunnel", 0x0100_0003 {},
        }
        default_only {
            /// Geneve for someone else: route it unchanged.
            Transit = "transit", 0x0100_0004,
        }
        default Transit;
        direct_counter None;
    }

    /// `service_v4`: (ClusterIP or external address, port, protocol) →
    /// service.
    table ServiceV4 in service_v4 = "service_v4", 0x0200_0003 {
        size sizes::SERVICE_V4;
        key { vip: exact Ipv4Addr = 32, port: exact u16 = 16, proto: exact u8 = 8 }
        actions {
            /// `bucket_mask` is the bucket count − 1 (a power of two);
            /// `hash_mode` is a `talaria_common::hash::hash_mode`.
            SetService = "set_service", 0x0100_0005 {
                service_id: u16 = 16,
                bucket_mask: u16 = 16,
                hash_mode: u8 = 8,
            },
        }
        default_only {
            ServiceMiss = "service_miss", 0x0100_0006,
        }
        default ServiceMiss;
        direct_counter None;
    }

    /// `cookie_check`: the (service, backend) pairs a cookie may name.
    table CookieCheck in cookie_check = "cookie_check", 0x0200_0004 {
        size sizes::COOKIE_CHECK;
        key { service_id: exact u16 = 16, backend_id: exact u32 = 32 }
        actions {
            CookieValid = "cookie_valid", 0x0100_0007 {},
        }
        default_only {
            /// Counted, then the packet is a new flow.
            CookieStale = "cookie_stale", 0x0100_0008,
        }
        default CookieStale;
        direct_counter None;
    }

    /// `lb_bucket`: (service, bucket) → backend id, the resilient buckets.
    table LbBucket in lb_bucket = "lb_bucket", 0x0200_0005 {
        size sizes::LB_BUCKET;
        key { service_id: exact u16 = 16, bucket: exact u16 = 16 }
        actions {
            SelectBackend = "select_backend", 0x0100_0009 { backend_id: u32 = 32 },
        }
        default_only {
            BucketMiss = "bucket_miss", 0x0100_000A,
        }
        default BucketMiss;
        direct_counter None;
    }

    /// `backend`: backend id → the pod's address and port, and its node.
    table Backend in backend = "backend", 0x0200_0006 {
        size sizes::BACKEND;
        key { backend_id: exact u32 = 32 }
        actions {
            SetBackend = "set_backend", 0x0100_000B {
                backend_ip: Ipv4Addr = 32,
                backend_port: u16 = 16,
                node_ip: Ipv4Addr = 32,
            },
        }
        default_only {
            BackendMiss = "backend_miss", 0x0100_000C,
        }
        default BackendMiss;
        direct_counter Some(&BACKEND_COUNTER);
    }

    /// `pod_node`: client pod address (LPM on the pod CIDRs) → its node,
    /// for replies.
    table PodNode in pod_node = "pod_node", 0x0200_0007 {
        size sizes::POD_NODE;
        key { pod_addr: lpm Ipv4Addr = 32 }
        actions {
            SetClientNode = "set_client_node", 0x0100_000D { node_ip: Ipv4Addr = 32 },
        }
        default_only {
            PodNodeMiss = "pod_node_miss", 0x0100_000E,
        }
        default PodNodeMiss;
        direct_counter None;
    }

    /// `tunnel_peer`: (ingress port, outer source) of every node, the only
    /// senders whose tunnels the switch terminates.
    table TunnelPeer in tunnel_peer = "tunnel_peer", 0x0200_0008 {
        size sizes::TUNNEL_PEER;
        key { port: exact u16 = 9, node_ip: exact Ipv4Addr = 32 }
        actions {
            AcceptTunnel = "accept_tunnel", 0x0100_000F {},
        }
        default_only {
            /// Dropped as `tunnel_peer`.
            RejectTunnel = "reject_tunnel", 0x0100_0010,
        }
        default RejectTunnel;
        direct_counter None;
    }

    /// `spoofed_source`: source addresses no port may send from (the
    /// switch's own).
    table SpoofedSource in spoofed_source = "spoofed_source", 0x0200_0009 {
        size sizes::SPOOFED_SOURCE;
        key { src_addr: exact Ipv4Addr = 32 }
        actions {
            /// Dropped as `spoofed_source`.
            DropSpoofed = "drop_spoofed", 0x0100_0011 {},
        }
        default_only {
            SourceOk = "source_ok", 0x0100_0012,
        }
        default SourceOk;
        direct_counter None;
    }

    /// `endpoint_reply`: (ingress port, source address, port, protocol) of
    /// the replies of endpoints that run no talaria agent (off-cluster
    /// addresses, node addresses) → the cookie the switch tunnels them to
    /// the client's node with.
    table EndpointReply in endpoint_reply = "endpoint_reply", 0x0200_000A {
        size sizes::ENDPOINT_REPLY;
        key {
            port: exact u16 = 9,
            endpoint_addr: exact Ipv4Addr = 32,
            endpoint_port: exact u16 = 16,
            proto: exact u8 = 8,
        }
        actions {
            SetEndpointReply = "set_endpoint_reply", 0x0100_0013 {
                service_id: u16 = 16,
                backend_id: u32 = 32,
            },
        }
        default_only {
            /// Routed as any plain packet.
            EndpointReplyMiss = "endpoint_reply_miss", 0x0100_0014,
        }
        default EndpointReplyMiss;
        direct_counter None;
    }

    /// `tunnel_source`: node → the switch address that node accepts
    /// tunnels from, the outer source of a tunnel the switch builds around
    /// a plain packet (an endpoint's reply, an external client's request).
    table TunnelSource in tunnel_source = "tunnel_source", 0x0200_000B {
        size sizes::TUNNEL_SOURCE;
        key { node_ip: exact Ipv4Addr = 32 }
        actions {
            SetTunnelSource = "set_tunnel_source", 0x0100_0015 { switch_ip: Ipv4Addr = 32 },
        }
        default_only {
            /// An external request is dropped as `no_tunnel_source`; an
            /// endpoint reply is routed plain.
            TunnelSourceMiss = "tunnel_source_miss", 0x0100_0016,
        }
        default TunnelSourceMiss;
        direct_counter None;
    }

    /// `ipv6_route`: LPM routing of every IPv6 packet (the switch balances
    /// no IPv6 Service yet; it routes).
    table Ipv6Route in ipv6_route = "ipv6_route", 0x0200_000C {
        size sizes::IPV6_ROUTE;
        key { dst_addr: lpm Ipv6Addr = 128 }
        actions {
            /// Out of `port` to the next hop `dst_mac`; hop limit decrement.
            ForwardV6 = "forward_v6", 0x0100_0017 { port: u16 = 9, src_mac: Mac = 48, dst_mac: Mac = 48 },
            /// A blackhole route (and the default: no route).
            Drop = "drop", 0x0100_0002 {},
        }
        default_only {}
        default Drop;
        direct_counter None;
    }

    /// `ts_cookie`: (service, timestamp cookie) → backend, for external
    /// clients, whose TSecr echoes the cookie their backend's node stamped
    /// (`talaria_common::ts_cookie`). The backend must pass `cookie_check`
    /// too.
    table TsCookie in ts_cookie = "ts_cookie", 0x0200_000D {
        size sizes::TS_COOKIE;
        key { service_id: exact u16 = 16, cookie: exact u16 = 16 }
        actions {
            /// The cookie is `backend_id`'s.
            TsCookieHit = "ts_cookie_hit", 0x0100_0018 { backend_id: u32 = 32 },
        }
        default_only {
            /// Unknown cookie: the request is hashed.
            TsCookieMiss = "ts_cookie_miss", 0x0100_0019,
        }
        default TsCookieMiss;
        direct_counter None;
    }

    /// `service_v6`: `service_v4` for IPv6 (ClusterIP or external
    /// address, port, protocol) → service; a dual-stack Service has one
    /// entry here and one there, each with its own service id and buckets.
    table ServiceV6 in service_v6 = "service_v6", 0x0200_000E {
        size sizes::SERVICE_V6;
        key { vip: exact Ipv6Addr = 128, port: exact u16 = 16, proto: exact u8 = 8 }
        actions {
            /// As in `service_v4`.
            SetService = "set_service", 0x0100_0005 {
                service_id: u16 = 16,
                bucket_mask: u16 = 16,
                hash_mode: u8 = 8,
            },
        }
        default_only {
            ServiceMiss = "service_miss", 0x0100_0006,
        }
        default ServiceMiss;
        direct_counter None;
    }

    /// `backend_v6`: backend id → an IPv6 pod's address and port, and its
    /// node (the underlay is IPv4). Backend ids are one space over both
    /// tables; an IPv6 request reads this one.
    table BackendV6 in backend_v6 = "backend_v6", 0x0200_000F {
        size sizes::BACKEND_V6;
        key { backend_id: exact u32 = 32 }
        actions {
            SetBackendV6 = "set_backend_v6", 0x0100_001A {
                backend_ip: Ipv6Addr = 128,
                backend_port: u16 = 16,
                node_ip: Ipv4Addr = 32,
            },
        }
        default_only {
            BackendMiss = "backend_miss", 0x0100_000C,
        }
        default BackendMiss;
        direct_counter None;
    }

    /// `pod_node_v6`: `pod_node` for IPv6 clients (LPM on the nodes' IPv6
    /// pod CIDRs) → the client's node, for replies.
    table PodNodeV6 in pod_node_v6 = "pod_node_v6", 0x0200_0010 {
        size sizes::POD_NODE_V6;
        key { pod_addr: lpm Ipv6Addr = 128 }
        actions {
            SetClientNode = "set_client_node", 0x0100_000D { node_ip: Ipv4Addr = 32 },
        }
        default_only {
            PodNodeMiss = "pod_node_miss", 0x0100_000E,
        }
        default PodNodeMiss;
        direct_counter None;
    }
}

/// `service_counter`: packets and bytes client → service, by service id.
pub const SERVICE_COUNTER: CounterDef = CounterDef {
    name: "TalariaIngress.service_counter",
    id: 0x1200_0001,
    size: sizes::SERVICE_COUNTER,
    unit: CounterUnit::PacketsAndBytes,
};

/// `drop_counter`: dropped packets, by `talaria_common::drop::DropReason`
/// code.
pub const DROP_COUNTER: CounterDef = CounterDef {
    name: "TalariaIngress.drop_counter",
    id: 0x1200_0002,
    size: talaria_common::drop::DROP_REASON_COUNT,
    unit: CounterUnit::Packets,
};

/// `lb_event_counter`: load-balancer events, by
/// `talaria_common::drop::LbEvent`.
pub const LB_EVENT_COUNTER: CounterDef = CounterDef {
    name: "TalariaIngress.lb_event_counter",
    id: 0x1200_0003,
    size: talaria_common::drop::LB_EVENT_COUNT,
    unit: CounterUnit::Packets,
};

/// `backend_counter`: packets and bytes per `backend` entry (direct),
/// requests to the backend and its checked replies.
pub const BACKEND_COUNTER: CounterDef = CounterDef {
    name: "TalariaIngress.backend_counter",
    id: 0x1300_0001,
    size: 0,
    unit: CounterUnit::PacketsAndBytes,
};

/// The indirect counters, in P4 declaration order.
pub const COUNTERS: [&CounterDef; 3] = [&SERVICE_COUNTER, &DROP_COUNTER, &LB_EVENT_COUNTER];

/// The direct counters.
pub const DIRECT_COUNTERS: [(&CounterDef, Table); 1] = [(&BACKEND_COUNTER, Table::Backend)];
