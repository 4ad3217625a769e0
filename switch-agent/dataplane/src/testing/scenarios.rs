//! The switch's packet scenarios as data, and the checks that run them on
//! any switch that implements the talaria pipeline: switch-agent's eBPF
//! program through `BPF_PROG_TEST_RUN` (`tests/scenarios.rs` here), and
//! switch-agent and bmv2 through real ports (`bmv2-testbed`).
//!
//! A [`Suite`] is a set of table entries and a list of [`Step`]s: table
//! writes and packets. Each packet is a [`Scenario`] {name, input frame,
//! expected verdict, expected counter deltas}, as in Katran's fixtures. A
//! forwarded packet's expected output is built from scratch in Rust (fresh
//! checksums everywhere), so comparing bytes also checks the switch's
//! incremental checksum updates.
//!
//! A switch is driven through [`Rig`]; [`run`] takes counter snapshots
//! around every packet and compares frames and deltas. Counters that only
//! switch-agent has (drops per ingress port) are checked where the rig can
//! read them.

use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};
use talaria_tables::{
    build, service_v4, service_v6,
    value::{Ipv4Prefix, Ipv6Prefix},
};

use talaria_common::{
    be::Be32,
    drop::{DropReason, LbEvent, DROP_REASON_COUNT, LB_EVENT_COUNT},
    hash::{hash_mode, FlowTuple, FlowTuple6},
    maps::PacketBytes,
    net::{IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    wire::{flags, TalariaEncap, GENEVE_PROTO_IPV6, GENEVE_UDP_PORT},
};

use super::{eth, ipv4, ipv4_checksum, mac, off, talaria, tunnel_frame, udp, Inner, L4};
use crate::Entry;

/// The port every scenario's packet arrives on.
pub const INGRESS_PORT: u16 = 1;

/// Addresses no suite uses, left to rigs for their own traffic (TEST-NET-1):
/// the real-port rig routes `192.0.2.<port>` out of each port to know when
/// the switch is done with a packet.
pub const RIG_PREFIX: Ipv4Prefix = build::prefix(Ipv4Addr::new(192, 0, 2, 0), 24);

// ---------------------------------------------------------------- topology --

const SWITCH: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SWITCH2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 2);
/// A node no route leads to.
const NODE_LOST: Ipv4Addr = Ipv4Addr::new(192, 168, 9, 2);
/// A node attached to port 2 only: its tunnels on port 1 are refused.
const NODE_C: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 3);
/// A host outside the rack.
const OUTSIDER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const BLACKHOLE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const VIP_TCP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP_UDP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);
const SVC_TCP: u16 = 7;
const SVC_UDP: u16 = 8;
/// Services with an empty bucket, with a bucket naming an unknown backend,
/// and with a backend on a node no route leads to.
const SVC_EMPTY: u16 = 9;
const SVC_UNKNOWN_BACKEND: u16 = 10;
const SVC_LOST_NODE: u16 = 11;
/// Buckets of SVC_TCP, by index.
const TCP_BUCKETS: [u32; 4] = [100, 101, 102, 100];

/// Endpoints that run no agent (docs/design.md): a Service on VIP_API
/// whose TCP and UDP ports are served off-cluster by ENDPOINT, behind
/// port 1, and one of a port whose endpoint has no route.
const VIP_API: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const ENDPOINT: Ipv4Addr = Ipv4Addr::new(172, 16, 5, 10);
/// An agentless endpoint behind port 2: its replies are only its own there.
const ENDPOINT_FAR: Ipv4Addr = Ipv4Addr::new(172, 16, 6, 10);
/// An agentless endpoint no route leads to.
const ENDPOINT_LOST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);
const SVC_AGENTLESS_TCP: u16 = 12;
const SVC_AGENTLESS_UDP: u16 = 13;
const SVC_AGENTLESS_LOST: u16 = 14;

/// External clients (no agent) of Services on an external address (a
/// LoadBalancer ingress IP, an externalIP), which `service_v4` holds as
/// any ClusterIP: TCP balanced over 100, 101 and 102, UDP to 200, TCP to
/// the agentless ENDPOINT (400), and TCP to a backend on NODE_C, which
/// has no `tunnel_source`.
const EXT_VIP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 10);
const EXT_CLIENT: Ipv4Addr = Ipv4Addr::new(100, 100, 1, 7);
const SVC_EXT_TCP: u16 = 15;
const SVC_EXT_UDP: u16 = 16;
const SVC_EXT_AGENTLESS: u16 = 17;
const SVC_EXT_NO_TUNNEL_SOURCE: u16 = 18;
/// Buckets of SVC_EXT_TCP, by index.
const EXT_TCP_BUCKETS: [u32; 4] = [101, 100, 102, 101];

/// Timestamp cookies (`ts_cookie`) of SVC_EXT_TCP: one naming backend 102
/// (node A), one naming backend 200, which is SVC_EXT_UDP's and not in
/// SVC_EXT_TCP's `cookie_check` (stale, or a guess at another Service's
/// backend), and one with no entry (forged).
const TS_COOKIE_102: u16 = 0xbeef;
const TS_COOKIE_OTHER_SERVICE: u16 = 0x5a1e;
const TS_COOKIE_FORGED: u16 = 0x0bad;

/// A nodePort at node B's address, which `service_v4` holds as any
/// external address: TCP to backend 100.
const NODE_PORT: u16 = 30080;
const SVC_NODE_PORT: u16 = 19;

/// IPv6, which the switch routes: node B's pod prefix behind port 2, a
/// blackholed prefix, and a pod on node A as the sender.
const POD_NET_B_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 2, 0, 0, 0, 0, 0);
const POD_B_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 2, 0, 0, 0, 0, 5);
const POD_A_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 7);
const BLACKHOLE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xdead, 0, 0, 0, 0, 0, 0);

/// The /64 at `net`.
fn v6_net(net: Ipv6Addr) -> Ipv6Prefix {
    Ipv6Prefix::new(net, 64).expect("a /64")
}

/// IPv6 Services, tunnelled over the IPv4 underlay (Geneve protocol
/// 0x86DD): a client pod on node A (POD_A_V6), IPv6 pod prefixes of
/// nodes A and B in `pod_node_v6`, and Services on VIP6 with four buckets
/// over backends 600..603 (TCP and UDP, each with both hash modes), one
/// whose bucket names a backend `backend_v6` lacks, and one whose backend
/// has no node.
const POD_NET_A_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 0);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10);
/// A client no node's IPv6 pod prefix holds.
const STRANGER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 7);
const SVC6_TCP: u16 = 30;
const SVC6_TCP_AFFINITY: u16 = 31;
const SVC6_UDP: u16 = 32;
const SVC6_UDP_HASH: u16 = 33;
const SVC6_UNKNOWN_BACKEND: u16 = 34;
const SVC6_NO_NODE: u16 = 35;
/// (service, port, proto, hash mode) of the balanced IPv6 Services.
const SERVICES_V6: [(u16, u16, u8, u8); 4] = [
    (SVC6_TCP, 80, IPPROTO_TCP, hash_mode::FIVE_TUPLE),
    (SVC6_TCP_AFFINITY, 81, IPPROTO_TCP, hash_mode::CLIENT_IP),
    (SVC6_UDP, 53, IPPROTO_UDP, hash_mode::CLIENT_IP),
    (SVC6_UDP_HASH, 54, IPPROTO_UDP, hash_mode::FIVE_TUPLE),
];
/// Buckets of every Service in SERVICES_V6, by index.
const BUCKETS_V6: [u32; 4] = [600, 601, 602, 603];
/// (backend id, ip, port, node) of `backend_v6`.
const BACKENDS_V6: [(u32, Ipv6Addr, u16, Ipv4Addr); 5] = [
    (
        600,
        Ipv6Addr::new(0xfd00, 0x244, 2, 0, 0, 0, 0, 5),
        8080,
        NODE_B,
    ),
    (
        601,
        Ipv6Addr::new(0xfd00, 0x244, 2, 0, 0, 0, 0, 6),
        8080,
        NODE_B,
    ),
    (
        602,
        Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 9),
        8080,
        NODE_A,
    ),
    (
        603,
        Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 0xa),
        8081,
        NODE_A,
    ),
    // Without a node (an endpoint without an agent): not served for IPv6.
    (
        620,
        Ipv6Addr::new(0xfd00, 0x172, 0, 0, 0, 0, 0, 0x10),
        6443,
        Ipv4Addr::UNSPECIFIED,
    ),
];

/// The IPv6 entries of [`tables`].
fn tables_v6() -> Vec<Entry> {
    let mut entries = vec![
        build::pod_node_v6(v6_net(POD_NET_A_V6), NODE_A),
        build::pod_node_v6(v6_net(POD_NET_B_V6), NODE_B),
        build::service_v6(VIP6, 82, IPPROTO_TCP, SVC6_UNKNOWN_BACKEND, 0, 0),
        build::bucket(SVC6_UNKNOWN_BACKEND, 0, 699),
        build::service_v6(VIP6, 83, IPPROTO_TCP, SVC6_NO_NODE, 0, 0),
        build::bucket(SVC6_NO_NODE, 0, 620),
        build::cookie(SVC6_NO_NODE, 620),
    ];
    for (service, port, proto, mode) in SERVICES_V6 {
        entries.push(build::service_v6(VIP6, port, proto, service, 3, mode));
        for (b, id) in BUCKETS_V6.iter().enumerate() {
            entries.push(build::bucket(service, b as u16, *id));
            entries.push(build::cookie(service, *id));
        }
    }
    for (backend_id, ip, port, node_ip) in BACKENDS_V6 {
        entries.push(build::backend_v6(backend_id, ip, port, node_ip));
    }
    entries
}

/// The switch address a node accepts tunnels from (`tunnel_source`), which
/// the switch needs for tunnels it builds around plain packets. Node B's
/// is another than the others', so that the key shows; both differ from
/// nothing a plain packet carries, so that it shows where it came from.
fn tunnel_source_of(node: Ipv4Addr) -> Ipv4Addr {
    if node == NODE_B {
        SWITCH
    } else {
        SWITCH2
    }
}

/// The `tunnel_source` entry of `node`.
fn tunnel_source(node: Ipv4Addr) -> Entry {
    build::tunnel_source(node, tunnel_source_of(node))
}

/// (backend id, ip, port, node).
const BACKENDS: [(u32, Ipv4Addr, u16, Ipv4Addr); 9] = [
    (100, Ipv4Addr::new(10, 244, 2, 5), 8080, NODE_B),
    (101, Ipv4Addr::new(10, 244, 2, 6), 8080, NODE_B),
    (102, Ipv4Addr::new(10, 244, 1, 9), 8080, NODE_A),
    (200, Ipv4Addr::new(10, 244, 2, 7), 5353, NODE_B),
    (300, Ipv4Addr::new(10, 244, 9, 5), 8080, NODE_LOST),
    // Without an agent: node 0.0.0.0.
    (400, ENDPOINT, 6443, Ipv4Addr::UNSPECIFIED),
    (401, ENDPOINT, 5300, Ipv4Addr::UNSPECIFIED),
    (402, ENDPOINT_LOST, 6443, Ipv4Addr::UNSPECIFIED),
    // On a node without a tunnel_source entry.
    (500, Ipv4Addr::new(10, 244, 3, 5), 8080, NODE_C),
];

/// The MACs `ipv4_route` writes for a route out of `port`: (src, dst).
pub fn route_mac(port: u16) -> ([u8; 6], [u8; 6]) {
    (mac(0x10 + port as u8), mac(0xa0 + port as u8))
}

/// The `ipv4_route` entry that sends `prefix` out of `port`, with the
/// MACs of [`route_mac`].
pub fn route_out(prefix: Ipv4Prefix, port: u16) -> Entry {
    let (src_mac, dst_mac) = route_mac(port);
    build::route(prefix, port, src_mac, dst_mac)
}

/// The tables every suite starts from.
fn tables() -> Vec<Entry> {
    let net = |a, b, c| build::prefix(Ipv4Addr::new(a, b, c, 0), 24);
    let mut entries = vec![
        route_out(net(192, 168, 1), 1),
        route_out(net(192, 168, 2), 2),
        build::blackhole(net(203, 0, 113)),
        {
            let (src_mac, dst_mac) = route_mac(2);
            build::route_v6(v6_net(POD_NET_B_V6), 2, src_mac, dst_mac)
        },
        build::blackhole_v6(v6_net(BLACKHOLE_V6)),
        build::switch_addr(SWITCH),
        build::switch_addr(SWITCH2),
        build::service(VIP_TCP, 80, IPPROTO_TCP, SVC_TCP, 3, hash_mode::FIVE_TUPLE),
        build::service(VIP_UDP, 53, IPPROTO_UDP, SVC_UDP, 0, hash_mode::CLIENT_IP),
        build::service(VIP_TCP, 81, IPPROTO_TCP, SVC_EMPTY, 0, 0),
        build::service(VIP_TCP, 82, IPPROTO_TCP, SVC_UNKNOWN_BACKEND, 0, 0),
        build::service(VIP_TCP, 83, IPPROTO_TCP, SVC_LOST_NODE, 0, 0),
        build::bucket(SVC_UNKNOWN_BACKEND, 0, 555),
        build::bucket(SVC_LOST_NODE, 0, 300),
        build::bucket(SVC_UDP, 0, 200),
        build::cookie(SVC_UDP, 200),
        build::pod_node(net(10, 244, 1), NODE_A),
        build::pod_node(net(10, 244, 2), NODE_B),
        build::pod_node(net(10, 244, 9), NODE_LOST),
        // Every scenario arrives on port 1, so both nodes that send
        // tunnels in them are peers there.
        build::tunnel_peer(INGRESS_PORT, NODE_A),
        build::tunnel_peer(INGRESS_PORT, NODE_B),
        build::tunnel_peer(2, NODE_C),
        build::spoofed_source(SWITCH),
        build::spoofed_source(SWITCH2),
        // Endpoints without an agent: routes to them and to node A's pods
        // (where their replies to a client on node A go when not
        // tunnelled), their services, and their replies' cookies.
        route_out(net(172, 16, 5), 1),
        route_out(net(172, 16, 6), 2),
        route_out(net(10, 244, 1), 1),
        build::service(VIP_API, 443, IPPROTO_TCP, SVC_AGENTLESS_TCP, 0, 0),
        build::service(VIP_API, 53, IPPROTO_UDP, SVC_AGENTLESS_UDP, 0, 0),
        build::service(VIP_API, 444, IPPROTO_TCP, SVC_AGENTLESS_LOST, 0, 0),
        build::bucket(SVC_AGENTLESS_TCP, 0, 400),
        build::bucket(SVC_AGENTLESS_UDP, 0, 401),
        build::bucket(SVC_AGENTLESS_LOST, 0, 402),
        build::cookie(SVC_AGENTLESS_TCP, 400),
        build::endpoint_reply(
            INGRESS_PORT,
            (ENDPOINT, 6443),
            IPPROTO_TCP,
            (SVC_AGENTLESS_TCP, 400),
        ),
        build::endpoint_reply(
            INGRESS_PORT,
            (ENDPOINT, 5300),
            IPPROTO_UDP,
            (SVC_AGENTLESS_UDP, 401),
        ),
        build::endpoint_reply(
            2,
            (ENDPOINT_FAR, 6443),
            IPPROTO_TCP,
            (SVC_AGENTLESS_TCP, 400),
        ),
        tunnel_source(NODE_A),
        tunnel_source(NODE_B),
        tunnel_source(NODE_LOST),
        // External clients: their network and the external address's
        // (where a packet to it that is no Service's goes), the Services
        // on the external address with their buckets and cookies.
        route_out(build::prefix(Ipv4Addr::new(100, 100, 1, 0), 24), 2),
        route_out(build::prefix(Ipv4Addr::new(100, 64, 0, 0), 24), 2),
        build::service(
            EXT_VIP,
            80,
            IPPROTO_TCP,
            SVC_EXT_TCP,
            3,
            hash_mode::FIVE_TUPLE,
        ),
        build::service(
            EXT_VIP,
            53,
            IPPROTO_UDP,
            SVC_EXT_UDP,
            0,
            hash_mode::CLIENT_IP,
        ),
        build::service(EXT_VIP, 443, IPPROTO_TCP, SVC_EXT_AGENTLESS, 0, 0),
        build::service(EXT_VIP, 8443, IPPROTO_TCP, SVC_EXT_NO_TUNNEL_SOURCE, 0, 0),
        build::bucket(SVC_EXT_UDP, 0, 200),
        build::bucket(SVC_EXT_AGENTLESS, 0, 400),
        build::bucket(SVC_EXT_NO_TUNNEL_SOURCE, 0, 500),
        build::cookie(SVC_EXT_UDP, 200),
        build::cookie(SVC_EXT_AGENTLESS, 400),
        build::cookie(SVC_EXT_NO_TUNNEL_SOURCE, 500),
        build::service(NODE_B, NODE_PORT, IPPROTO_TCP, SVC_NODE_PORT, 0, 0),
        build::bucket(SVC_NODE_PORT, 0, 100),
        build::cookie(SVC_NODE_PORT, 100),
        build::ts_cookie(SVC_EXT_TCP, TS_COOKIE_102, 102),
        build::ts_cookie(SVC_EXT_TCP, TS_COOKIE_OTHER_SERVICE, 200),
    ];
    for (b, id) in EXT_TCP_BUCKETS.iter().enumerate() {
        entries.push(build::bucket(SVC_EXT_TCP, b as u16, *id));
    }
    for id in [100, 101, 102] {
        entries.push(build::cookie(SVC_EXT_TCP, id));
    }
    for (b, id) in TCP_BUCKETS.iter().enumerate() {
        entries.push(build::bucket(SVC_TCP, b as u16, *id));
    }
    for id in [100, 101, 102] {
        entries.push(build::cookie(SVC_TCP, id));
    }
    for (backend_id, ip, port, node_ip) in BACKENDS {
        entries.push(build::backend(backend_id, ip, port, node_ip));
    }
    entries.extend(tables_v6());
    entries
}

fn backend(id: u32) -> (Ipv4Addr, u16, Ipv4Addr) {
    let (_, ip, port, node) = BACKENDS
        .iter()
        .copied()
        .find(|b| b.0 == id)
        .expect("known backend");
    (ip, port, node)
}

fn node_port(node: Ipv4Addr) -> u16 {
    if node == NODE_A {
        1
    } else {
        2
    }
}

/// The backend the bucket hash gives a TCP flow of SVC_TCP.
fn hashed_backend(src: Ipv4Addr, sport: u16) -> u32 {
    let t = FlowTuple {
        src: Be32(src.octets()),
        dst: Be32(VIP_TCP.octets()),
        proto: IPPROTO_TCP,
        src_port: sport.into(),
        dst_port: 80.into(),
    };
    TCP_BUCKETS[(t.hash() & 3) as usize]
}

/// The backend the bucket hash gives an external client's TCP flow of
/// SVC_EXT_TCP.
fn ext_hashed_backend(src: Ipv4Addr, sport: u16) -> u32 {
    let t = FlowTuple {
        src: Be32(src.octets()),
        dst: Be32(EXT_VIP.octets()),
        proto: IPPROTO_TCP,
        src_port: sport.into(),
        dst_port: 80.into(),
    };
    EXT_TCP_BUCKETS[(t.hash() & 3) as usize]
}

// ------------------------------------------------------------------ frames --

/// A client packet to a service, as a node sends it to `to`.
fn request(to: Ipv4Addr, flags: u8, cookie: u32, inner: &Inner) -> Vec<u8> {
    tunnel_frame(
        NODE_A,
        to,
        64,
        &talaria(flags, 0, cookie),
        &inner.to_bytes(),
    )
}

/// `inner` after the switch's DNAT to `backend_id` (fresh checksums).
fn dnat(inner: &Inner, backend_id: u32) -> Inner {
    let (ip, port, _) = backend(backend_id);
    let mut out = inner.clone();
    out.dst = ip;
    out.l4 = match inner.l4 {
        L4::Tcp { src, .. } => L4::Tcp { src, dst: port },
        L4::Udp { src, csum, .. } => L4::Udp {
            src,
            dst: port,
            csum,
        },
        other => other,
    };
    out
}

/// The frame the switch emits for a load-balanced inner packet `inner_out`
/// (already DNATed): cookie written, outer (from → node), TTL 63, new MACs.
fn lb_frame(
    from: Ipv4Addr,
    in_flags: u8,
    service_id: u16,
    backend_id: u32,
    inner_out: &[u8],
) -> Vec<u8> {
    let (_, _, node) = backend(backend_id);
    let geneve =
        TalariaEncap::new(in_flags | flags::COOKIE_VALID, service_id, backend_id).to_bytes();
    let (src_mac, dst_mac) = route_mac(node_port(node));
    let mut frame = tunnel_frame(from, node, 63, &geneve, inner_out);
    frame[0..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&src_mac);
    frame
}

/// What the switch must emit for a load-balanced `inner`: DNAT to
/// `backend_id`, cookie written, outer (from → node), TTL 63, new MACs.
fn expected_lb(
    from: Ipv4Addr,
    in_flags: u8,
    service_id: u16,
    backend_id: u32,
    inner: &Inner,
) -> Vec<u8> {
    lb_frame(
        from,
        in_flags,
        service_id,
        backend_id,
        &dnat(inner, backend_id).to_bytes(),
    )
}

/// A load-balanced `inner` that came to `from` with `in_flags`,
/// forwarded as [`expected_lb`] to `backend_id` on its node's port.
fn lb_verdict(
    from: Ipv4Addr,
    in_flags: u8,
    service_id: u16,
    backend_id: u32,
    inner: &Inner,
) -> Verdict {
    Verdict::Forward {
        port: node_port(backend(backend_id).2),
        bytes: Some(expected_lb(from, in_flags, service_id, backend_id, inner)),
    }
}

/// A new flow to a service, forwarded to `backend_id` on its node's port.
fn lb_forward(service_id: u16, backend_id: u32, inner: &Inner) -> Verdict {
    lb_verdict(SWITCH, flags::NEW_FLOW, service_id, backend_id, inner)
}

/// A plain IPv4/UDP frame from node A to `dst`.
fn plain(dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    eth(
        mac(0xaa),
        mac(1),
        &ipv4(NODE_A, dst, ttl, IPPROTO_UDP, &udp(1234, 5678, b"plain")),
    )
}

/// An IPv6 UDP datagram from pod A's IPv6 address to `dst` (UDP checksum
/// left 0: the switch reads nothing past the fixed header).
fn plain_v6(dst: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
    let payload = udp(1234, 5678, b"plain6");
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[IPPROTO_UDP, hop_limit]);
    ip.extend_from_slice(&POD_A_V6.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&payload);
    ethertype(mac(1), 0x86dd, &ip)
}

/// `frame` as `ipv6_route` forwards it out of `port`: hop limit − 1, MACs
/// rewritten.
fn routed_v6(frame: &[u8], port: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    let (src_mac, dst_mac) = route_mac(port);
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[off::OUTER_IP + 7] -= 1;
    f
}

/// `frame` as `ipv4_route` forwards it out of `port`: TTL − 1, header
/// checksum fixed, MACs rewritten.
fn routed(frame: &[u8], port: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    let (src_mac, dst_mac) = route_mac(port);
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[off::OUTER_IP + 8] -= 1;
    let ihl = usize::from(f[off::OUTER_IP] & 0x0f) * 4;
    let c = ipv4_checksum(&f[off::OUTER_IP..off::OUTER_IP + ihl]);
    f[off::OUTER_IP + 10..off::OUTER_IP + 12].copy_from_slice(&c.to_be_bytes());
    f
}

/// A plain frame whose IPv4 header carries 4 bytes of options (NOPs and
/// an end-of-list), to node B.
fn plain_with_options(ttl: u8) -> Vec<u8> {
    let mut ip = ipv4(NODE_A, NODE_B, ttl, IPPROTO_UDP, &udp(1234, 5678, b"opts"));
    ip.splice(20..20, [1u8, 1, 1, 0]);
    ip[0] = 0x46;
    let total = ip.len() as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let c = ipv4_checksum(&ip[..24]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    eth(mac(0xaa), mac(1), &ip)
}

/// A frame of another ethertype.
fn ethertype(dst: [u8; 6], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = eth(dst, mac(0xaa), payload);
    f[12..14].copy_from_slice(&ether_type.to_be_bytes());
    f
}

/// An ARP packet (RFC 826, Ethernet/IPv4): `op` 1 request, 2 reply.
fn arp(op: u16, sender: ([u8; 6], Ipv4Addr), target: ([u8; 6], Ipv4Addr)) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sender.0);
    a.extend_from_slice(&sender.1.octets());
    a.extend_from_slice(&target.0);
    a.extend_from_slice(&target.1.octets());
    a
}

/// An ICMP destination-unreachable (`code`) about `quoted` (its IPv4 header
/// and first 8 bytes), from `src` to `dst`, as a host's stack sends it.
fn icmp_unreachable(src: Ipv4Addr, dst: Ipv4Addr, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![3, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted[..28]);
    let c = super::checksum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = ipv4(src, dst, 64, 1, &icmp);
    // IPTOS_PREC_INTERNETCONTROL, as Linux sends ICMP errors.
    ip[1] = 0xc0;
    let c = ipv4_checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip
}

/// The 16-bit word at `at` of `bytes`.
fn word(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// A copy of `inner` whose first two payload bytes make its L4 checksum,
/// once DNATed to `backend_id`, come out as exactly zero (a ones'-complement
/// sum of 0xFFFF). Those two bytes at an even offset of the segment add
/// their value to the sum; the checksum computed with them zero is the
/// complement of the rest of the sum, so it is the value that completes it.
fn zero_after_dnat(inner: &Inner, backend_id: u32) -> Inner {
    let mut out = inner.clone();
    out.payload = vec![0, 0, b'z', b'e', b'r', b'o'];
    let after = dnat(&out, backend_id);
    let l4_at = 20;
    let csum_at = l4_at
        + if matches!(inner.l4, L4::Tcp { .. }) {
            16
        } else {
            6
        };
    let bytes = after.to_bytes();
    let mut seg = bytes[l4_at..].to_vec();
    seg[csum_at - l4_at] = 0;
    seg[csum_at - l4_at + 1] = 0;
    let fill = super::l4_checksum(after.src, after.dst, bytes[9], &seg);
    out.payload[0..2].copy_from_slice(&fill.to_be_bytes());
    out
}

/// `bytes` with the checksum at `at` one less than right (an error a
/// receiver must still see after the switch rewrote the packet).
fn checksum_off_by_one(bytes: &mut [u8], at: usize) {
    let c = word(bytes, at);
    // Away from 0 and 1, where ones'-complement arithmetic has two zeros.
    assert!(c > 1, "pick another payload: checksum {c:#06x}");
    bytes[at..at + 2].copy_from_slice(&(c - 1).to_be_bytes());
}

/// `ip` (an IPv4 packet) with its header byte `at` set to `value` and the
/// header checksum recomputed.
fn ip_with(ip: &[u8], at: usize, value: u8) -> Vec<u8> {
    let mut ip = ip.to_vec();
    ip[at] = value;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let c = ipv4_checksum(&ip[..ihl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip
}

/// A plain frame carrying the IPv4 packet `ip`, as it arrives on a port.
fn plain_ip(ip: &[u8]) -> Vec<u8> {
    eth(mac(0xaa), mac(1), ip)
}

/// A request to an endpoint without an agent (`inner` DNATed to
/// `backend_id`) as the switch delivers it: no tunnel, routed by the
/// endpoint's address (TTL − 1, MACs), out of `port`.
fn stripped(inner: &Inner, backend_id: u32, port: u16) -> Verdict {
    Verdict::Forward {
        port,
        bytes: Some(routed(&plain_ip(&dnat(inner, backend_id).to_bytes()), port)),
    }
}

/// An endpoint's plain reply `ip` (unchanged) as the switch tunnels it to
/// the client's `node`: [`plain_tunnel`] with `REPLY | COOKIE_VALID |
/// ENDPOINT` and `cookie`.
fn endpoint_tunnel(ip: &[u8], cookie: (u16, u32), node: Ipv4Addr) -> Vec<u8> {
    let flags = flags::REPLY | flags::COOKIE_VALID | flags::ENDPOINT;
    plain_tunnel(ip, ip, flags, cookie, node)
}

/// An external client's request `ip` (as it arrived; `out`, DNATed to
/// `backend_id`) as the switch tunnels it to the backend's node after the
/// hash chose it: [`plain_tunnel`] with `COOKIE_VALID | EXTERNAL |
/// NEW_FLOW` and the cookie (`service_id`, `backend_id`).
fn external_tunnel(ip: &[u8], out: &[u8], service_id: u16, backend_id: u32) -> Verdict {
    external_tunnel_flagged(ip, out, flags::NEW_FLOW, service_id, backend_id)
}

/// [`external_tunnel`] with `COOKIE_VALID | EXTERNAL | fresh`: `fresh` is
/// `NEW_FLOW` when the hash chose the backend, 0 when the timestamp
/// cookie did.
fn external_tunnel_flagged(
    ip: &[u8],
    out: &[u8],
    fresh: u8,
    service_id: u16,
    backend_id: u32,
) -> Verdict {
    let node = backend(backend_id).2;
    let flags = flags::COOKIE_VALID | flags::EXTERNAL | fresh;
    Verdict::Forward {
        port: node_port(node),
        bytes: Some(plain_tunnel(ip, out, flags, (service_id, backend_id), node)),
    }
}

/// The IPv4 packet of `inner` (TCP, no IP options) with TCP flags
/// `tcp_flags` and the option bytes `options` between its TCP header and
/// payload; the data offset says `doff` words (the options' length when
/// `None`: a multiple of 4). Checksums fresh.
fn tcp_with_options(inner: &Inner, tcp_flags: u8, options: &[u8], doff: Option<u8>) -> Vec<u8> {
    let ip = inner.to_bytes();
    let mut seg = ip[20..40].to_vec();
    seg[12] = doff.unwrap_or((20 + options.len() as u8) / 4) << 4;
    seg[13] = tcp_flags;
    seg.extend_from_slice(options);
    seg.extend_from_slice(&ip[40..]);
    let c = super::l4_checksum(inner.src, inner.dst, IPPROTO_TCP, &seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    let mut out = ip[..20].to_vec();
    out[2..4].copy_from_slice(&((20 + seg.len()) as u16).to_be_bytes());
    let c = ipv4_checksum(&out);
    out[10..12].copy_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&seg);
    out
}

/// TCP options NOP, NOP, timestamps (`tsval`, `tsecr`): the 12 bytes the
/// switch reads a timestamp cookie from.
fn nop_nop_ts(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o
}

/// A plain packet `ip` as it arrived, tunnelled as `inner_out` to `node`
/// as a node tunnels: outer IPv4 from the node's tunnel source (DF, id 0,
/// TTL 64 − 1, the packet's TOS), UDP from 0xC000 | crc32 of the arrived
/// flow >> 18 to 6081 (checksum 0), Geneve with the Talaria option
/// `flags` and `cookie`; routed out of the node's port.
fn plain_tunnel(
    ip: &[u8],
    inner_out: &[u8],
    flags: u8,
    cookie: (u16, u32),
    node: Ipv4Addr,
) -> Vec<u8> {
    let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let hash = FlowTuple {
        src: Be32(addr(12).octets()),
        dst: Be32(addr(16).octets()),
        proto: ip[9],
        src_port: word(ip, ihl).into(),
        dst_port: word(ip, ihl + 2).into(),
    }
    .hash();
    let sport = 0xc000 | (hash >> 18) as u16;
    let mut geneve = talaria(flags, cookie.0, cookie.1);
    geneve.extend_from_slice(inner_out);
    let outer = ipv4(
        tunnel_source_of(node),
        node,
        63,
        IPPROTO_UDP,
        &udp(sport, GENEVE_UDP_PORT, &geneve),
    );
    let outer = ip_with(&ip_with(&outer, 1, ip[1]), 4, 0);
    let outer = ip_with(&outer, 5, 0);
    let (src_mac, dst_mac) = route_mac(node_port(node));
    eth(dst_mac, src_mac, &outer)
}

// ------------------------------------------------------------------- model --

/// What the switch must do with a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Sent out of `port`; the output must equal `bytes` if given.
    Forward { port: u16, bytes: Option<Vec<u8>> },
    /// Dropped and counted under this reason.
    Drop(DropReason),
    /// Lost with no drop reason counted (egress port without interface).
    Lost,
}

/// One packet and what must come of it.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    /// The frame that arrives on [`INGRESS_PORT`].
    pub input: Vec<u8>,
    pub verdict: Verdict,
    /// LB events that must each move by one.
    pub events: Vec<LbEvent>,
    /// The service whose counter must move by one packet of the input's
    /// length.
    pub service: Option<u16>,
    /// The backend whose direct counter must move by one packet of the
    /// input's length.
    pub backend: Option<u32>,
}

impl Scenario {
    fn new(name: &'static str, input: Vec<u8>, verdict: Verdict) -> Self {
        Self {
            name,
            input,
            verdict,
            events: Vec::new(),
            service: None,
            backend: None,
        }
    }

    fn event(mut self, e: LbEvent) -> Self {
        self.events.push(e);
        self
    }

    /// A reply that passed its checks: the reply event, and the direct
    /// counter of the backend its cookie names.
    fn replied(mut self, backend: u32) -> Self {
        self.backend = Some(backend);
        self.event(LbEvent::Reply)
    }

    /// A packet whose cookie found `backend` before it was dropped: that
    /// backend's direct counter moves (P4 counts a direct counter on the
    /// table hit).
    fn backend_hit(mut self, backend: u32) -> Self {
        self.backend = Some(backend);
        self
    }

    /// A client-to-service packet: service counter, event, and backend (if
    /// one was found).
    fn load_balanced(mut self, service: u16, e: LbEvent, backend: Option<u32>) -> Self {
        self.service = Some(service);
        self.backend = backend;
        self.event(e)
    }
}

/// A table write or a packet.
#[derive(Clone, Debug)]
pub enum Step {
    Insert(Entry),
    Modify(Entry),
    Delete(Entry),
    Send(Scenario),
}

/// Tables and steps, run on a switch with `ports` ports and empty tables.
#[derive(Clone, Debug)]
pub struct Suite {
    pub name: &'static str,
    pub ports: u16,
    /// Inserted in this order before the steps.
    pub setup: Vec<Entry>,
    pub steps: Vec<Step>,
}

impl Suite {
    /// The counters the suite's checks read: every service and backend its
    /// entries name.
    pub fn watch(&self) -> Watch {
        let mut w = Watch::default();
        let written = self.steps.iter().filter_map(|s| match s {
            Step::Insert(e) | Step::Modify(e) => Some(e),
            _ => None,
        });
        for e in self.setup.iter().chain(written) {
            match e {
                Entry::ServiceV4(e) => {
                    let service_v4::Action::SetService { service_id, .. } = e.action;
                    w.services.push(service_id)
                }
                Entry::ServiceV6(e) => {
                    let service_v6::Action::SetService { service_id, .. } = e.action;
                    w.services.push(service_id)
                }
                Entry::Backend(e) => w.backends.push(e.key.backend_id),
                _ => {}
            }
        }
        w.services.sort_unstable();
        w.services.dedup();
        w.backends.sort_unstable();
        w.backends.dedup();
        w
    }

    /// The scenarios, in order.
    pub fn scenarios(&self) -> impl Iterator<Item = &Scenario> {
        self.steps.iter().filter_map(|s| match s {
            Step::Send(s) => Some(s),
            _ => None,
        })
    }
}

/// Which indexed counters a snapshot reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    pub services: Vec<u16>,
    pub backends: Vec<u32>,
}

/// The switch's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `drop_counter` packets, by reason code (`DROP_REASON_COUNT` cells).
    pub drops: Vec<u64>,
    /// `lb_event_counter` packets, by event code.
    pub events: Vec<u64>,
    /// `service_counter` of the watched services.
    pub services: BTreeMap<u16, PacketBytes>,
    /// `backend_counter` of the watched backends that have an entry.
    pub backends: BTreeMap<u32, PacketBytes>,
    /// Drops of packets from [`INGRESS_PORT`] by reason code, where the
    /// switch counts them (switch-agent's per-port metrics).
    pub ingress_drops: Option<Vec<u64>>,
}

impl Counters {
    /// Zeroed counters for `watch`, in the shape the checks expect.
    pub fn empty(watch: &Watch) -> Self {
        Self {
            drops: vec![0; DROP_REASON_COUNT as usize],
            events: vec![0; LB_EVENT_COUNT as usize],
            services: watch
                .services
                .iter()
                .map(|s| (*s, PacketBytes::default()))
                .collect(),
            backends: BTreeMap::new(),
            ingress_drops: None,
        }
    }
}

/// A table operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Insert,
    Modify,
    Delete,
}

/// Why a rig could not do what a suite asked.
pub type RigError = Box<dyn std::error::Error + Send + Sync>;

/// A switch the suites can drive.
pub trait Rig {
    /// Writes one table entry; the switch must accept it.
    fn write(&mut self, op: Op, entry: &Entry) -> Result<(), RigError>;
    /// Sends `frame` into [`INGRESS_PORT`] and returns, once the switch is
    /// done with it, every frame that came out, with its port.
    fn send(&mut self, frame: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, RigError>;
    /// Reads the counters.
    fn counters(&mut self, watch: &Watch) -> Result<Counters, RigError>;
}

/// What one switch did with one scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub scenario: &'static str,
    /// What was seen: `forward p2`, `drop no_route`, `lost`.
    pub observed: String,
    /// Every way it differs from the scenario; empty when it passed.
    pub problems: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            write!(f, "{} ✓", self.observed)
        } else {
            write!(f, "{} ✗ ({})", self.observed, self.problems.join("; "))
        }
    }
}

/// Runs `suite` on `rig`, which must hold empty tables: the setup, then
/// every step. A table write the rig refuses ends the run with an error;
/// a packet that comes out wrong is an [`Outcome`] with problems.
pub fn run(rig: &mut dyn Rig, suite: &Suite) -> Result<Vec<Outcome>, RigError> {
    let write = |rig: &mut dyn Rig, op, e: &Entry| -> Result<(), RigError> {
        rig.write(op, e)
            .map_err(|err| format!("{}: {op:?} {e:?}: {err}", suite.name).into())
    };
    for e in &suite.setup {
        write(rig, Op::Insert, e)?;
    }
    let watch = suite.watch();
    let mut outcomes = Vec::new();
    for step in &suite.steps {
        match step {
            Step::Insert(e) => write(rig, Op::Insert, e)?,
            Step::Modify(e) => write(rig, Op::Modify, e)?,
            Step::Delete(e) => write(rig, Op::Delete, e)?,
            Step::Send(s) => outcomes.push(
                run_one(rig, &watch, s).map_err(|e| format!("{}: {}: {e}", suite.name, s.name))?,
            ),
        }
    }
    Ok(outcomes)
}

fn run_one(rig: &mut dyn Rig, watch: &Watch, s: &Scenario) -> Result<Outcome, RigError> {
    let before = rig.counters(watch)?;
    let out = rig.send(&s.input)?;
    let after = rig.counters(watch)?;
    let mut problems = Vec::new();

    // Frames.
    match (&s.verdict, out.as_slice()) {
        (Verdict::Forward { port, bytes }, [(got_port, frame)]) => {
            if got_port != port {
                problems.push(format!("out of port {got_port}, expected {port}"));
            }
            if let Some(want) = bytes {
                if let Some(d) = first_difference(frame, want) {
                    problems.push(d);
                }
            }
            if checksums(&s.input).is_empty() {
                problems.extend(checksums(frame));
            }
        }
        (Verdict::Forward { port, .. }, frames) => problems.push(format!(
            "{} frames out, expected one out of port {port}",
            frames.len()
        )),
        (_, []) => {}
        (_, frames) => problems.push(format!(
            "{} frames out of ports {:?}, expected none",
            frames.len(),
            frames.iter().map(|f| f.0).collect::<Vec<_>>()
        )),
    }

    // Counters: what must have moved, and nothing else.
    let mut want = before.clone();
    let len = s.input.len() as u64;
    let bump = |c: &mut PacketBytes| {
        c.packets += 1;
        c.bytes += len;
    };
    if let Verdict::Drop(reason) = s.verdict {
        want.drops[usize::from(reason.code())] += 1;
        if let Some(d) = &mut want.ingress_drops {
            d[usize::from(reason.code())] += 1;
        }
    }
    for e in &s.events {
        want.events[*e as usize] += 1;
    }
    if let Some(svc) = s.service {
        bump(want.services.entry(svc).or_default());
    }
    if let Some(b) = s.backend {
        bump(want.backends.entry(b).or_default());
    }
    problems.extend(counter_differences(&want, &after));

    Ok(Outcome {
        scenario: s.name,
        observed: observed(&out, &before, &after),
        problems,
    })
}

/// `forward pN`, `drop <reason>` or `lost`, from the frames and the drop
/// counters.
fn observed(out: &[(u16, Vec<u8>)], before: &Counters, after: &Counters) -> String {
    if !out.is_empty() {
        let ports: Vec<String> = out.iter().map(|(p, _)| format!("p{p}")).collect();
        return format!("forward {}", ports.join("+"));
    }
    let reasons: Vec<&str> = (0..after.drops.len())
        .filter(|&i| after.drops[i] > before.drops.get(i).copied().unwrap_or(0))
        .map(|i| DropReason::from_code(i as u8).map_or("unknown reason", |r| r.name()))
        .collect();
    if reasons.is_empty() {
        "lost".into()
    } else {
        format!("drop {}", reasons.join("+"))
    }
}

fn counter_differences(want: &Counters, got: &Counters) -> Vec<String> {
    let mut out = Vec::new();
    let named =
        |i: usize| DropReason::from_code(i as u8).map_or(format!("#{i}"), |r| r.name().into());
    for (i, (w, g)) in want.drops.iter().zip(&got.drops).enumerate() {
        if w != g {
            out.push(format!(
                "drop_counter[{}] moved by {}",
                named(i),
                delta(*w, *g)
            ));
        }
    }
    for (i, (w, g)) in want.events.iter().zip(&got.events).enumerate() {
        if w != g {
            out.push(format!(
                "lb_event_counter[{}] moved by {}",
                LbEvent::ALL[i].name(),
                delta(*w, *g)
            ));
        }
    }
    if want.services != got.services {
        out.push(format!(
            "service_counter: expected {:?}, got {:?}",
            want.services, got.services
        ));
    }
    if want.backends != got.backends {
        out.push(format!(
            "backend_counter: expected {:?}, got {:?}",
            want.backends, got.backends
        ));
    }
    if let (Some(w), Some(g)) = (&want.ingress_drops, &got.ingress_drops) {
        for (i, (w, g)) in w.iter().zip(g).enumerate() {
            if w != g {
                out.push(format!(
                    "port drops[{}] moved by {}",
                    named(i),
                    delta(*w, *g)
                ));
            }
        }
    }
    out
}

/// How far `got` is from `want`, as a signed difference from the expected
/// move.
fn delta(want: u64, got: u64) -> String {
    format!("{:+} more than expected", got as i128 - want as i128)
}

/// Where two frames first differ, with both around that place.
fn first_difference(got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let window = |b: &[u8]| hex(&b[at.saturating_sub(4).min(b.len())..(at + 8).min(b.len())]);
    Some(format!(
        "output differs at byte {at} (len {} vs {}): got …{}…, expected …{}…",
        got.len(),
        want.len(),
        window(got),
        window(want)
    ))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every checksum problem of a frame: its outer IPv4 header; for a talaria
/// tunnel the outer UDP checksum (must be 0), the inner IPv4 header and the
/// inner TCP/UDP checksum; for any other frame its own TCP/UDP checksum (a
/// UDP checksum that sums to zero must be sent as 0xFFFF, RFC 768). Empty
/// for a frame that is not IPv4.
pub fn checksums(f: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if f.len() < off::OUTER_UDP || f[12..14] != [0x08, 0x00] {
        return out;
    }
    let ihl = usize::from(f[off::OUTER_IP] & 0x0f) * 4;
    if ihl < 20 || f.len() < off::OUTER_IP + ihl {
        return out;
    }
    // A tunnel may carry outer IPv4 options and Geneve options of any kind.
    let udp = off::OUTER_IP + ihl;
    let tunnel = (f[off::OUTER_IP + 9] == IPPROTO_UDP
        && f.len() > udp + 8
        && word(f, udp + 2) == GENEVE_UDP_PORT)
        .then(|| talaria_common::wire::parse(&f[udp + 8..]).ok())
        .flatten();
    let Some(geneve) = tunnel else {
        packet_checksums("", &f[off::OUTER_IP..], &mut out);
        return out;
    };
    if !super::ipv4_header_ok(&f[off::OUTER_IP..udp]) {
        out.push("outer IPv4 checksum".into());
    }
    if word(f, udp + 6) != 0 {
        out.push("outer UDP checksum must be 0".into());
    }
    packet_checksums("inner ", &f[udp + 8 + geneve.inner_offset..], &mut out);
    out
}

/// The IPv4 header and TCP/UDP checksum problems of the packet at `ip`.
fn packet_checksums(which: &str, ip: &[u8], out: &mut Vec<String>) {
    if ip.first().map(|b| b >> 4) == Some(6) {
        return packet_checksums_v6(which, ip, out);
    }
    let ihl = usize::from(ip.first().copied().unwrap_or(0) & 0x0f) * 4;
    if ihl < 20 || ip.len() < ihl {
        return;
    }
    if !super::ipv4_header_ok(&ip[..ihl]) {
        out.push(format!("{which}IPv4 checksum"));
    }
    let proto = ip[9];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    // The IPv4 total length bounds the segment: a frame may carry padding.
    let end = usize::from(word(ip, 2)).clamp(ihl, ip.len());
    let seg = &ip[ihl..end];
    let frag = word(ip, 6) & 0x3fff;
    // (name, checksum offset, what a computed zero is sent as)
    let l4 = match proto {
        IPPROTO_TCP if seg.len() >= 20 => Some(("TCP", 16, 0)),
        IPPROTO_UDP if seg.len() >= 8 && word(seg, 6) != 0 => Some(("UDP", 6, 0xffff)),
        _ => None,
    };
    if let (Some((name, at, zero)), 0) = (l4, frag) {
        let want = match super::l4_checksum(src, dst, proto, seg) {
            0 => zero,
            c => c,
        };
        if word(seg, at) != want {
            out.push(format!(
                "{which}{name} checksum {:#06x}, expected {want:#06x}",
                word(seg, at)
            ));
        }
    }
}

// ------------------------------------------------------------------ suites --

/// Every suite.
pub fn suites() -> Vec<Suite> {
    vec![tables_suite(), pool_change(), port_without_interface()]
}

/// One packet of each kind against the standard tables.
fn tables_suite() -> Suite {
    let tcp = Inner::tcp(CLIENT, 40000, VIP_TCP, 80);
    let new_backend = hashed_backend(CLIENT, 40000);
    // A cookie naming a valid backend that the hash would not pick.
    let cookie = [100, 101, 102]
        .into_iter()
        .find(|b| *b != new_backend)
        .unwrap();
    let udp_flow = Inner::udp(CLIENT, 5353, VIP_UDP, 53);
    let mut udp_nocsum = udp_flow.clone();
    udp_nocsum.l4 = L4::Udp {
        src: 5353,
        dst: 53,
        csum: false,
    };
    let reply_inner = Inner::tcp(VIP_TCP, 80, CLIENT, 40000);
    let reply_opt = talaria(flags::REPLY | flags::COOKIE_VALID, SVC_TCP, 100);
    let reply_out = |inner: &[u8]| {
        let mut f = tunnel_frame(SWITCH, NODE_A, 63, &reply_opt, inner);
        f[0..6].copy_from_slice(&route_mac(1).1);
        f[6..12].copy_from_slice(&route_mac(1).0);
        f
    };
    let reply = |inner: &[u8]| tunnel_frame(NODE_B, SWITCH, 64, &reply_opt, inner);

    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = request(SWITCH, flags::NEW_FLOW, 0, &tcp);
        f(&mut p);
        p
    };
    let geneve_raw = |geneve: &[u8]| tunnel_frame(NODE_A, SWITCH, 64, geneve, &tcp.to_bytes());
    let mut inner_opts = tcp.clone();
    inner_opts.options = vec![1, 1, 1, 0];
    let mut inner_frag = tcp.clone();
    inner_frag.frag = 0x2000;
    // A later fragment of that datagram (offset 24 bytes): no TCP header.
    let mut later = tcp.clone();
    later.l4 = L4::Other(IPPROTO_TCP);
    later.frag = 3;
    later.payload = vec![0xab; 16];
    let later_with = |opt: &[u8]| tunnel_frame(NODE_A, SWITCH, 64, opt, &later.to_bytes());
    let ports_word = |sport: u32| talaria(flags::NEW_FLOW | flags::FRAG_PORTS, 0, sport << 16 | 80);
    let later_to = |in_flags, backend_id| Verdict::Forward {
        port: node_port(backend(backend_id).2),
        bytes: Some(lb_frame(
            SWITCH,
            in_flags,
            SVC_TCP,
            backend_id,
            &dnat(&later, backend_id).to_bytes(),
        )),
    };
    // A source port whose flow hashes to another backend than 40000's.
    let other_sport = (40001..41000)
        .find(|p| hashed_backend(CLIENT, *p) != new_backend)
        .unwrap();
    // A ping (ICMP echo request, checksum included) to a VIP.
    let mut inner_icmp = tcp.clone();
    inner_icmp.l4 = L4::Other(1);
    inner_icmp.payload = vec![8, 0, 0xf7, 0xff, 0, 0, 0, 0];
    let mut icmp_first_fragment = inner_icmp.clone();
    icmp_first_fragment.frag = 0x2000;
    // A client's port unreachable about a reply it got from VIP_TCP:80 to
    // `to` (its socket had closed), as its node sends it with `opt`.
    let client_error = |opt: &[u8], to: Ipv4Addr| {
        let quote = Inner::tcp(VIP_TCP, 80, to, 40000).to_bytes();
        tunnel_frame(
            NODE_A,
            SWITCH,
            64,
            opt,
            &icmp_unreachable(CLIENT, VIP_TCP, 3, &quote),
        )
    };
    // The same error relayed to backend 100: to it, about its own reply.
    let relayed_error = {
        let (ip, port, _) = backend(100);
        let quote = Inner::tcp(ip, port, CLIENT, 40000).to_bytes();
        lb_frame(
            SWITCH,
            flags::COOKIE_VALID,
            SVC_TCP,
            100,
            &icmp_unreachable(CLIENT, ip, 3, &quote),
        )
    };
    let truncated_error = {
        let mut error = icmp_unreachable(CLIENT, VIP_TCP, 3, &reply_inner.to_bytes());
        error.truncate(20 + 8 + 20 + 2);
        let opt = talaria(flags::COOKIE_VALID, SVC_TCP, 100);
        tunnel_frame(NODE_A, SWITCH, 64, &opt, &error)
    };
    let mut bad_csum = plain(NODE_B, 64);
    bad_csum[24] ^= 0xff;

    // Checksums that come out at exactly zero after the DNAT.
    let udp_zero = zero_after_dnat(&udp_flow, 200);
    let tcp_zero = zero_after_dnat(&tcp, new_backend);
    // Checksums that were wrong on arrival.
    let bad_l4 = {
        let mut input = tcp.to_bytes();
        checksum_off_by_one(&mut input, 20 + 16);
        let mut output = dnat(&tcp, new_backend).to_bytes();
        checksum_off_by_one(&mut output, 20 + 16);
        (input, output)
    };
    let bad_inner_ip = {
        let mut input = udp_flow.to_bytes();
        checksum_off_by_one(&mut input, 10);
        let mut output = dnat(&udp_flow, 200).to_bytes();
        checksum_off_by_one(&mut output, 10);
        (input, output)
    };
    // A backend's port-unreachable about the client's UDP request,
    // reverse-NATed by the backend's node (VIP as its source and in the
    // quote) and tunnelled back like a reply.
    let icmp_error = icmp_unreachable(VIP_UDP, CLIENT, 3, &udp_flow.to_bytes());
    let icmp_error_opt = talaria(flags::REPLY | flags::COOKIE_VALID, SVC_UDP, 200);
    let icmp_error_out = {
        let mut f = tunnel_frame(SWITCH, NODE_A, 63, &icmp_error_opt, &icmp_error);
        f[0..6].copy_from_slice(&route_mac(1).1);
        f[6..12].copy_from_slice(&route_mac(1).0);
        f
    };
    // What a backend's node sends to tell a one-way UDP flow's client's
    // node its cookie: the flow's reply, without an L4 checksum.
    let notify_inner = Inner {
        l4: L4::Udp {
            src: 53,
            dst: 5353,
            csum: false,
        },
        ..Inner::udp(VIP_UDP, 53, CLIENT, 5353)
    }
    .to_bytes();
    let notify_opt = talaria(
        flags::REPLY | flags::COOKIE_VALID | flags::NOTIFY,
        SVC_UDP,
        200,
    );
    let notify_out = {
        let mut f = tunnel_frame(SWITCH, NODE_A, 63, &notify_opt, &notify_inner);
        f[0..6].copy_from_slice(&route_mac(1).1);
        f[6..12].copy_from_slice(&route_mac(1).0);
        f
    };
    // A frame longer than its IPv4 packet (Ethernet padding to 60 bytes).
    let padded = {
        let mut f = eth(
            mac(0xaa),
            mac(1),
            &ipv4(NODE_A, NODE_B, 64, IPPROTO_UDP, &udp(1234, 5678, b"")),
        );
        f.resize(60, 0);
        f
    };
    let outer_opts = {
        let mut f = request(SWITCH, flags::NEW_FLOW, 0, &tcp);
        f.splice(off::OUTER_UDP..off::OUTER_UDP, [1u8, 1, 1, 0]);
        f[off::OUTER_IP] = 0x46;
        let total = (f.len() - off::OUTER_IP) as u16;
        f[off::OUTER_IP + 2..off::OUTER_IP + 4].copy_from_slice(&total.to_be_bytes());
        let c = ipv4_checksum(&f[off::OUTER_IP..off::OUTER_IP + 24]);
        f[off::OUTER_IP + 10..off::OUTER_IP + 12].copy_from_slice(&c.to_be_bytes());
        f
    };

    let s = Scenario::new;
    let fwd = |port, bytes| Verdict::Forward { port, bytes };
    // A new flow `inner` to `service`, load-balanced to `backend`.
    let new_flow = |name, service, backend, inner: &Inner| {
        s(
            name,
            request(SWITCH, flags::NEW_FLOW, 0, inner),
            lb_forward(service, backend, inner),
        )
        .load_balanced(service, E::NewFlow, Some(backend))
    };
    // A new TCP flow from the client to port `port` of VIP_TCP.
    let new_tcp_to = |port| {
        request(
            SWITCH,
            flags::NEW_FLOW,
            0,
            &Inner::tcp(CLIENT, 40000, VIP_TCP, port),
        )
    };
    // A TCP packet with a cookie, to SVC_TCP, forwarded to `backend_id`.
    let cookied = |backend_id| lb_verdict(SWITCH, flags::COOKIE_VALID, SVC_TCP, backend_id, &tcp);
    // One whose cookie is stale: hashed, and flagged a new flow.
    let rehashed = |backend_id| {
        let stale = flags::COOKIE_VALID | flags::NEW_FLOW;
        lb_verdict(SWITCH, stale, SVC_TCP, backend_id, &tcp)
    };
    let drop = Verdict::Drop;
    use DropReason as R;
    use LbEvent as E;
    let scenarios =
        vec![
        new_flow(
            "new TCP flow: bucket-hash backend, DNAT, cookie, outer to its node",
            SVC_TCP,
            new_backend,
            &tcp,
        ),
        s(
            "outer src is the switch address the tunnel came to",
            request(SWITCH2, flags::NEW_FLOW, 0, &tcp),
            lb_verdict(SWITCH2, flags::NEW_FLOW, SVC_TCP, new_backend, &tcp),
        )
        .load_balanced(SVC_TCP, E::NewFlow, Some(new_backend)),
        s(
            "valid cookie wins over the hash",
            request(SWITCH, flags::COOKIE_VALID, cookie, &tcp),
            cookied(cookie),
        )
        .load_balanced(SVC_TCP, E::CookieHit, Some(cookie)),
        s(
            "stale cookie (removed backend): counted, treated as a new flow",
            request(SWITCH, flags::COOKIE_VALID, 999, &tcp),
            rehashed(new_backend),
        )
        .load_balanced(SVC_TCP, E::CookieStale, Some(new_backend)),
        s(
            "stale cookie (backend of another service): counted, treated as a new flow",
            request(SWITCH, flags::COOKIE_VALID, 200, &tcp),
            rehashed(new_backend),
        )
        .load_balanced(SVC_TCP, E::CookieStale, Some(new_backend)),
        new_flow(
            "UDP flow, ClientIP affinity, port rewritten, UDP checksum fixed",
            SVC_UDP,
            200,
            &udp_flow,
        ),
        new_flow(
            "UDP without checksum keeps checksum 0",
            SVC_UDP,
            200,
            &udp_nocsum,
        ),
        new_flow(
            "UDP checksum that becomes 0 after DNAT is sent as 0xFFFF (RFC 768)",
            SVC_UDP,
            200,
            &udp_zero,
        ),
        new_flow(
            "TCP checksum that becomes 0 after DNAT stays 0x0000",
            SVC_TCP,
            new_backend,
            &tcp_zero,
        ),
        s(
            "inner TCP checksum wrong on arrival stays wrong after DNAT",
            tunnel_frame(
                NODE_A,
                SWITCH,
                64,
                &talaria(flags::NEW_FLOW, 0, 0),
                &bad_l4.0,
            ),
            fwd(
                node_port(backend(new_backend).2),
                Some(lb_frame(
                    SWITCH,
                    flags::NEW_FLOW,
                    SVC_TCP,
                    new_backend,
                    &bad_l4.1,
                )),
            ),
        )
        .load_balanced(SVC_TCP, E::NewFlow, Some(new_backend)),
        s(
            "inner IPv4 checksum wrong on arrival stays wrong after DNAT",
            tunnel_frame(
                NODE_A,
                SWITCH,
                64,
                &talaria(flags::NEW_FLOW, 0, 0),
                &bad_inner_ip.0,
            ),
            fwd(
                2,
                Some(lb_frame(
                    SWITCH,
                    flags::NEW_FLOW,
                    SVC_UDP,
                    200,
                    &bad_inner_ip.1,
                )),
            ),
        )
        .load_balanced(SVC_UDP, E::NewFlow, Some(200)),
        s(
            "reply re-originated towards the client's node (pod_node)",
            reply(&reply_inner.to_bytes()),
            fwd(1, Some(reply_out(&reply_inner.to_bytes()))),
        )
        .replied(100),
        s(
            "a one-way UDP flow's notification (NOTIFY, checksum 0) goes on as a reply",
            tunnel_frame(NODE_B, SWITCH, 64, &notify_opt, &notify_inner),
            fwd(1, Some(notify_out)),
        )
        .replied(200),
        s(
            "ICMP error about a reply's flow tunnelled back like a reply",
            tunnel_frame(NODE_B, SWITCH, 64, &icmp_error_opt, &icmp_error),
            fwd(1, Some(icmp_error_out)),
        )
        .replied(200),
        s(
            "client's ICMP error about a reply: to the backend its cookie names, quote rewritten",
            client_error(&talaria(flags::COOKIE_VALID, SVC_TCP, 100), CLIENT),
            fwd(node_port(backend(100).2), Some(relayed_error)),
        )
        .load_balanced(SVC_TCP, E::CookieHit, Some(100)),
        s(
            "client's ICMP error about a reply, without a cookie",
            client_error(&talaria(flags::NEW_FLOW, 0, 0), CLIENT),
            drop(R::IcmpSpoof),
        ),
        s(
            "client's ICMP error about a reply to another address",
            client_error(&talaria(flags::COOKIE_VALID, SVC_TCP, 100), VIP_UDP),
            drop(R::IcmpSpoof),
        ),
        s(
            "client's ICMP error whose cookie names another service",
            client_error(&talaria(flags::COOKIE_VALID, SVC_UDP, 200), CLIENT),
            drop(R::IcmpSpoof),
        ),
        s(
            "client's ICMP error whose cookie names a gone backend",
            client_error(&talaria(flags::COOKIE_VALID, SVC_TCP, 999), CLIENT),
            drop(R::NoBackend),
        )
        .load_balanced(SVC_TCP, E::CookieStale, None),
        s(
            "client's ICMP error quoting a cut-off reply",
            truncated_error,
            drop(R::Malformed),
        ),
        s(
            "reply to an address no node hosts (a client outside the cluster), no route: \
             stripped, counted, then no_route",
            tunnel_frame(
                NODE_B,
                SWITCH,
                64,
                &talaria(flags::REPLY, SVC_TCP, 100),
                &Inner::tcp(VIP_TCP, 80, Ipv4Addr::new(10, 250, 0, 1), 40000).to_bytes(),
            ),
            drop(R::NoRoute),
        )
        .replied(100),
        s(
            "reply with inner IPv4 options passes (no ports needed)",
            tunnel_frame(NODE_B, SWITCH, 64, &talaria(flags::REPLY, SVC_TCP, 100), &{
                let mut r = reply_inner.clone();
                r.options = vec![1, 1, 1, 0];
                r.to_bytes()
            }),
            fwd(1, None),
        )
        .replied(100),
        s(
            "reply fragment passes (no ports needed)",
            tunnel_frame(NODE_B, SWITCH, 64, &reply_opt, &{
                let mut r = reply_inner.clone();
                r.frag = 0x2000;
                r.to_bytes()
            }),
            fwd(1, None),
        )
        .replied(100),
        s(
            "plain IPv4 routed with TTL decrement and MAC rewrite",
            plain(NODE_B, 64),
            fwd(2, Some(routed(&plain(NODE_B, 64), 2))),
        ),
        s(
            "plain IPv4 with TTL 2 still routed",
            plain(NODE_B, 2),
            fwd(2, Some(routed(&plain(NODE_B, 2), 2))),
        ),
        s(
            "plain IPv4 with TTL 1 dropped",
            plain(NODE_B, 1),
            drop(R::TtlExpired),
        ),
        s(
            "plain IPv4 with TTL 0 dropped",
            plain(NODE_B, 0),
            drop(R::TtlExpired),
        ),
        s(
            "tunnel to the switch with TTL 1 is re-originated with TTL 64",
            tunnel_frame(
                NODE_A,
                SWITCH,
                1,
                &talaria(flags::NEW_FLOW, 0, 0),
                &tcp.to_bytes(),
            ),
            lb_forward(SVC_TCP, new_backend, &tcp),
        )
        .load_balanced(SVC_TCP, E::NewFlow, Some(new_backend)),
        s(
            "plain IPv4 with options routed, checksum over the options kept right",
            plain_with_options(64),
            fwd(2, Some(routed(&plain_with_options(64), 2))),
        ),
        s(
            "tunnel to the switch with outer IPv4 options is load-balanced, options kept",
            outer_opts.clone(),
            fwd(node_port(backend(new_backend).2), None),
        )
        .load_balanced(SVC_TCP, E::NewFlow, Some(new_backend)),
        s(
            "Ethernet padding after the IPv4 packet is forwarded as it came",
            padded.clone(),
            fwd(2, Some(routed(&padded, 2))),
        ),
        s(
            "non-first outer fragment to the switch address is plain IPv4 (no route to it)",
            {
                let mut p = request(SWITCH, flags::NEW_FLOW, 0, &tcp);
                p[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
                let c = ipv4_checksum(&p[14..34]);
                p[24..26].copy_from_slice(&c.to_be_bytes());
                p
            },
            drop(R::NoRoute),
        ),
        s(
            "no route",
            plain(Ipv4Addr::new(198, 51, 100, 1), 64),
            drop(R::NoRoute),
        ),
        s(
            "blackhole route (drop action) counts as no_route",
            plain(BLACKHOLE, 64),
            drop(R::NoRoute),
        ),
        s(
            "backend on a node with no route: counted, then no_route",
            new_tcp_to(83),
            drop(R::NoRoute),
        )
        .load_balanced(SVC_LOST_NODE, E::NewFlow, Some(300)),
        s(
            "reply for a client whose node has no route: counted, then no_route",
            tunnel_frame(
                NODE_B,
                SWITCH,
                64,
                &reply_opt,
                &Inner::tcp(VIP_TCP, 80, Ipv4Addr::new(10, 244, 9, 7), 40000).to_bytes(),
            ),
            drop(R::NoRoute),
        )
        .replied(100),
        // The trust boundary.
        s(
            "tunnel from an address that is no node",
            tunnel_frame(
                OUTSIDER,
                SWITCH,
                64,
                &talaria(flags::NEW_FLOW, 0, 0),
                &tcp.to_bytes(),
            ),
            drop(R::TunnelPeer),
        ),
        s(
            "tunnel from a node on a port it is not attached to",
            tunnel_frame(
                NODE_C,
                SWITCH,
                64,
                &talaria(flags::NEW_FLOW, 0, 0),
                &tcp.to_bytes(),
            ),
            drop(R::TunnelPeer),
        ),
        s(
            "reply from an address that is no node",
            tunnel_frame(OUTSIDER, SWITCH, 64, &reply_opt, &reply_inner.to_bytes()),
            drop(R::TunnelPeer),
        ),
        s(
            "plain packet with the switch's address as its source",
            eth(
                mac(0xaa),
                mac(1),
                &ipv4(
                    SWITCH,
                    NODE_B,
                    64,
                    IPPROTO_UDP,
                    &udp(GENEVE_UDP_PORT, GENEVE_UDP_PORT, b"x"),
                ),
            ),
            drop(R::SpoofedSource),
        ),
        s(
            "tunnel from the switch's own address: tunnel_peer vouches for the outer source",
            tunnel_frame(SWITCH2, SWITCH, 64, &reply_opt, &reply_inner.to_bytes()),
            drop(R::TunnelPeer),
        ),
        s(
            "tunnel from the switch's own address that does not parse: the outer source counts",
            tunnel_frame(
                SWITCH2,
                SWITCH,
                64,
                &{
                    let mut g = talaria(flags::NEW_FLOW, 0, 0);
                    g[0] |= 0x40;
                    g
                },
                &Inner::tcp(CLIENT, 40000, VIP_TCP, 80).to_bytes(),
            ),
            drop(R::SpoofedSource),
        ),
        s(
            "request whose inner source is the switch's address",
            request(
                SWITCH,
                flags::NEW_FLOW,
                0,
                &Inner::tcp(SWITCH2, 40000, VIP_TCP, 80),
            ),
            drop(R::SpoofedSource),
        ),
        s(
            "reply from a port of the VIP that is another service",
            reply(&Inner::tcp(VIP_TCP, 81, CLIENT, 40000).to_bytes()),
            drop(R::ForgedReply),
        ),
        s(
            "reply from an address that is no VIP",
            reply(&Inner::tcp(backend(100).0, 8080, CLIENT, 40000).to_bytes()),
            drop(R::ForgedReply),
        ),
        s(
            "reply whose cookie names another service than its source",
            tunnel_frame(
                NODE_B,
                SWITCH,
                64,
                &talaria(flags::REPLY | flags::COOKIE_VALID, SVC_UDP, 200),
                &reply_inner.to_bytes(),
            ),
            drop(R::ForgedReply),
        ),
        s(
            "reply whose cookie names a backend of another service",
            tunnel_frame(
                NODE_B,
                SWITCH,
                64,
                &talaria(flags::REPLY | flags::COOKIE_VALID, SVC_TCP, 200),
                &reply_inner.to_bytes(),
            ),
            drop(R::ForgedReply),
        ),
        s(
            "reply from a node that does not host the cookie's backend",
            tunnel_frame(
                NODE_A,
                SWITCH,
                64,
                &reply_opt,
                &Inner::tcp(VIP_TCP, 80, Ipv4Addr::new(10, 244, 2, 9), 40000).to_bytes(),
            ),
            drop(R::ForgedReply),
        )
        .backend_hit(100),
        s(
            "ICMP error as a reply whose cookie names no backend",
            tunnel_frame(
                NODE_B,
                SWITCH,
                64,
                &talaria(flags::REPLY | flags::COOKIE_VALID, SVC_UDP, 999),
                &icmp_error,
            ),
            drop(R::ForgedReply),
        ),
        s(
            "reply fragment from a node that does not host the cookie's backend",
            tunnel_frame(NODE_A, SWITCH, 64, &reply_opt, &{
                let mut r = Inner::tcp(VIP_TCP, 80, Ipv4Addr::new(10, 244, 2, 9), 40000);
                r.frag = 0x2000;
                r.to_bytes()
            }),
            drop(R::ForgedReply),
        )
        .backend_hit(100),
        s(
            "non-IPv4 (ARP, zeroed) has no route",
            ethertype([0xff; 6], 0x0806, &[0u8; 28]),
            drop(R::NoRoute),
        ),
        s(
            "ARP request for a node's address arriving on a switch port",
            ethertype(
                [0xff; 6],
                0x0806,
                &arp(
                    1,
                    (mac(0xaa), NODE_A),
                    ([0; 6], Ipv4Addr::new(192, 168, 1, 1)),
                ),
            ),
            drop(R::NoRoute),
        ),
        s(
            "ARP reply to the switch port's MAC",
            ethertype(
                mac(1),
                0x0806,
                &arp(
                    2,
                    (mac(0xaa), NODE_A),
                    (mac(1), Ipv4Addr::new(192, 168, 1, 1)),
                ),
            ),
            drop(R::NoRoute),
        ),
        s(
            "IPv6 to a pod prefix is routed, hop limit decremented",
            plain_v6(POD_B_V6, 64),
            Verdict::Forward {
                port: 2,
                bytes: Some(routed_v6(&plain_v6(POD_B_V6, 64), 2)),
            },
        ),
        s(
            "IPv6 with hop limit 1 expires",
            plain_v6(POD_B_V6, 1),
            drop(R::TtlExpired),
        ),
        s(
            "IPv6 to a blackholed prefix has no route",
            plain_v6(BLACKHOLE_V6, 64),
            drop(R::NoRoute),
        ),
        s(
            "IPv6 ethertype with a version-4 header is malformed",
            {
                let mut f = plain_v6(POD_B_V6, 64);
                f[off::OUTER_IP] = 0x40;
                f
            },
            drop(R::Malformed),
        ),
        s(
            "IPv6 without a route (all-nodes multicast) has no route",
            ethertype(mac(1), 0x86dd, &{
                // A whole header (no next header) from fe80::aa to ff02::1.
                let mut h = vec![0x60, 0, 0, 0, 0, 0, 59, 255, 0xfe, 0x80];
                h.resize(23, 0);
                h.push(0xaa);
                h.extend_from_slice(&[0xff, 0x02]);
                h.resize(39, 0);
                h.push(1);
                h
            }),
            drop(R::NoRoute),
        ),
        s(
            "VLAN-tagged IPv4 has no route",
            ethertype(mac(1), 0x8100, &{
                let mut v = vec![0, 5, 0x08, 0x00];
                v.extend_from_slice(&plain(NODE_B, 64)[14..]);
                v
            }),
            drop(R::NoRoute),
        ),
        s(
            "bad outer IPv4 checksum is malformed",
            bad_csum,
            drop(R::Malformed),
        ),
        s(
            // (A frame cut inside the IPv4 header cannot be test-run: the
            // kernel refuses it before the program runs.)
            "IPv4 header with ihl < 5 is malformed",
            {
                let mut p = plain(NODE_B, 64);
                p[14] = 0x44;
                p
            },
            drop(R::Malformed),
        ),
        s(
            "Geneve version 1",
            with(&|p| p[off::GENEVE] |= 0x40),
            drop(R::GeneveVersion),
        ),
        s(
            "Geneve protocol IPv6 around an IPv4 packet: a bad inner IPv6 header",
            with(&|p| p[off::GENEVE + 2..off::GENEVE + 4].copy_from_slice(&[0x86, 0xdd])),
            drop(R::Malformed),
        ),
        s(
            "Geneve protocol neither IPv4 nor IPv6 (ARP)",
            with(&|p| p[off::GENEVE + 2..off::GENEVE + 4].copy_from_slice(&[0x08, 0x06])),
            drop(R::GeneveProtocol),
        ),
        s(
            "Geneve without options",
            geneve_raw(&[0x00, 0x00, 0x08, 0x00, 0, 0, 0, 0]),
            drop(R::MissingOption),
        ),
        s(
            "unknown critical option first",
            geneve_raw(&[0x01, 0x40, 0x08, 0x00, 0, 0, 0, 0, 0x01, 0x02, 0x85, 0x00]),
            drop(R::UnknownCriticalOption),
        ),
        s(
            "unknown non-critical option first (P4 parses one option only)",
            geneve_raw(&{
                let mut g = vec![0x04, 0x40, 0x08, 0x00, 0, 0, 0, 0, 0x01, 0x02, 0x05, 0x00];
                g.extend_from_slice(&talaria(flags::NEW_FLOW, 0, 0)[8..]);
                g
            }),
            drop(R::MissingOption),
        ),
        s(
            "Talaria option length field 3 words",
            with(&|p| p[off::OPT + 3] = 3),
            drop(R::OptionLength),
        ),
        s(
            "Geneve option area longer than the Talaria option",
            geneve_raw(&{
                let mut g = talaria(flags::NEW_FLOW, 0, 0);
                g[0] = 4;
                g.extend_from_slice(&[0x01, 0x02, 0x05, 0x00]);
                g
            }),
            drop(R::OptionLength),
        ),
        s(
            "Talaria version 2",
            with(&|p| p[off::OPT + 4] = 2),
            drop(R::TalariaVersion),
        ),
        s(
            "truncated inside the Talaria option",
            request(SWITCH, flags::NEW_FLOW, 0, &tcp)[..off::OPT + 8].to_vec(),
            drop(R::Malformed),
        ),
        s(
            "truncated inner TCP header",
            request(SWITCH, flags::NEW_FLOW, 0, &tcp)[..off::INNER_L4 + 10].to_vec(),
            drop(R::Malformed),
        ),
        s(
            "malformed Geneve in transit is routed untouched but for TTL and MACs",
            tunnel_frame(
                NODE_A,
                NODE_B,
                64,
                &[0xc0, 0, 0, 0, 0, 0, 0, 0],
                &tcp.to_bytes(),
            ),
            fwd(
                2,
                Some(routed(
                    &tunnel_frame(
                        NODE_A,
                        NODE_B,
                        64,
                        &[0xc0, 0, 0, 0, 0, 0, 0, 0],
                        &tcp.to_bytes(),
                    ),
                    2,
                )),
            ),
        ),
        s(
            "inner IPv4 options on the load-balanced path",
            request(SWITCH, flags::NEW_FLOW, 0, &inner_opts),
            drop(R::IpOptions),
        ),
        new_flow(
            "first fragment (MF) load-balanced like a whole packet",
            SVC_TCP,
            new_backend,
            &inner_frag,
        ),
        s(
            "later fragment with its datagram's ports: its first fragment's backend",
            later_with(&ports_word(40000)),
            later_to(flags::NEW_FLOW, new_backend),
        )
        .load_balanced(SVC_TCP, E::NewFlow, Some(new_backend)),
        s(
            "later fragment: the ports it carries are what is hashed",
            later_with(&ports_word(u32::from(other_sport))),
            later_to(flags::NEW_FLOW, hashed_backend(CLIENT, other_sport)),
        )
        .load_balanced(
            SVC_TCP,
            E::NewFlow,
            Some(hashed_backend(CLIENT, other_sport)),
        ),
        s(
            "later fragment with its first fragment's cookie",
            later_with(&talaria(flags::COOKIE_VALID, SVC_TCP, cookie)),
            later_to(flags::COOKIE_VALID, cookie),
        )
        .backend_hit(cookie)
        .event(E::CookieHit),
        s(
            "later fragment whose cookie is stale cannot be hashed",
            later_with(&talaria(flags::COOKIE_VALID, SVC_TCP, 999)),
            drop(R::NoBackend),
        )
        .event(E::CookieStale),
        s(
            "later fragment with neither ports nor a cookie",
            request(SWITCH, flags::NEW_FLOW, 0, &later),
            drop(R::Fragment),
        ),
        s(
            "later fragment with both ports and a cookie",
            later_with(&talaria(flags::COOKIE_VALID | flags::FRAG_PORTS, SVC_TCP, cookie)),
            drop(R::Fragment),
        ),
        s(
            "first fragment of an ICMP message on the load-balanced path",
            request(SWITCH, flags::NEW_FLOW, 0, &icmp_first_fragment),
            drop(R::Fragment),
        ),
        s(
            "inner ICMP echo (ping) on the load-balanced path",
            request(SWITCH, flags::NEW_FLOW, 0, &inner_icmp),
            drop(R::UnsupportedProtocol),
        ),
        s(
            "no service for (VIP, port, proto)",
            new_tcp_to(443),
            drop(R::NoService),
        ),
        s("empty bucket", new_tcp_to(81), drop(R::NoBucket)).load_balanced(
            SVC_EMPTY,
            E::NewFlow,
            None,
        ),
        s(
            "bucket names an unknown backend",
            new_tcp_to(82),
            drop(R::NoBackend),
        )
        .load_balanced(SVC_UNKNOWN_BACKEND, E::NewFlow, None),
    ];
    let mut steps: Vec<Step> = scenarios.into_iter().map(Step::Send).collect();
    steps.extend(agentless_steps());
    steps.extend(external_steps());
    steps.extend(ts_cookie_steps());
    steps.extend(ipv6_service_steps());
    Suite {
        name: "tables",
        ports: 2,
        setup: tables(),
        steps,
    }
}

/// Endpoints that run no agent: requests stripped and routed plain after
/// the DNAT, replies matched in `endpoint_reply` and tunnelled to the
/// client's node. Against the standard tables, after the other scenarios.
fn agentless_steps() -> Vec<Step> {
    use DropReason as R;
    use LbEvent as E;
    let s = Scenario::new;
    let fwd = |port, bytes| Verdict::Forward {
        port,
        bytes: Some(bytes),
    };
    // Plain delivery of a frame: out of `port`, TTL − 1, MACs.
    let plain_to = |frame: &[u8], port| fwd(port, routed(frame, port));

    let tcp = Inner::tcp(CLIENT, 40000, VIP_API, 443);
    let udp = Inner::udp(CLIENT, 5353, VIP_API, 53);
    let new_flow = |inner: &Inner| request(SWITCH, flags::NEW_FLOW, 0, inner);
    let tcp_ttl = |ttl| {
        let inner = ip_with(&tcp.to_bytes(), 8, ttl);
        tunnel_frame(NODE_A, SWITCH, 64, &talaria(flags::NEW_FLOW, 0, 0), &inner)
    };
    let tcp_ttl2 = {
        let mut out = plain_ip(&ip_with(&dnat(&tcp, 400).to_bytes(), 8, 2));
        out = routed(&out, 1);
        out
    };

    let mut first_fragment = tcp.clone();
    first_fragment.frag = 0x2000;
    // A later fragment of that datagram (no TCP header), with its ports or
    // its first fragment's cookie in the option.
    let mut later = tcp.clone();
    later.l4 = L4::Other(IPPROTO_TCP);
    later.frag = 3;
    later.payload = vec![0xab; 16];
    let later_with = |opt: &[u8]| tunnel_frame(NODE_A, SWITCH, 64, opt, &later.to_bytes());
    let ports_word = talaria(flags::NEW_FLOW | flags::FRAG_PORTS, 0, 40000 << 16 | 443);
    // The client's port unreachable about a reply it got from VIP_API:443
    // (restored by its node), sent back with the reply's cookie; relayed
    // to the endpoint about its own reply.
    let client_error = {
        let quote = Inner::tcp(VIP_API, 443, CLIENT, 40000).to_bytes();
        tunnel_frame(
            NODE_A,
            SWITCH,
            64,
            &talaria(flags::COOKIE_VALID, SVC_AGENTLESS_TCP, 400),
            &icmp_unreachable(CLIENT, VIP_API, 3, &quote),
        )
    };
    let relayed_error = {
        let quote = Inner::tcp(ENDPOINT, 6443, CLIENT, 40000).to_bytes();
        routed(&plain_ip(&icmp_unreachable(CLIENT, ENDPOINT, 3, &quote)), 1)
    };

    // A tunnel with outer IPv4 options: they go with the tunnel.
    let outer_opts = {
        let mut f = new_flow(&tcp);
        f.splice(off::OUTER_UDP..off::OUTER_UDP, [1u8, 1, 1, 0]);
        f[off::OUTER_IP] = 0x46;
        let total = (f.len() - off::OUTER_IP) as u16;
        f[off::OUTER_IP + 2..off::OUTER_IP + 4].copy_from_slice(&total.to_be_bytes());
        let c = ipv4_checksum(&f[off::OUTER_IP..off::OUTER_IP + 24]);
        f[off::OUTER_IP + 10..off::OUTER_IP + 12].copy_from_slice(&c.to_be_bytes());
        f
    };

    // Replies of ENDPOINT to the client (node A's pod), the TCP one with a
    // TOS (DSCP and ECN) to copy.
    let reply_tcp = ip_with(
        &Inner::tcp(ENDPOINT, 6443, CLIENT, 40000).to_bytes(),
        1,
        0x28,
    );
    let reply_udp = Inner::udp(ENDPOINT, 5300, CLIENT, 5353).to_bytes();
    let client_b = Ipv4Addr::new(10, 244, 2, 9);
    let reply_udp_b = Inner::udp(ENDPOINT, 5300, client_b, 5353).to_bytes();
    let reply_lost = Inner::tcp(ENDPOINT, 6443, Ipv4Addr::new(10, 244, 9, 7), 40000).to_bytes();
    let reply_ttl1 = ip_with(&reply_tcp, 8, 1);
    // A short reply (no UDP checksum) in a frame padded to 60 bytes: the
    // padding stays after the packet, outside the outer lengths.
    let reply_short = {
        let mut r = Inner::udp(ENDPOINT, 5300, CLIENT, 5353);
        r.l4 = L4::Udp {
            src: 5300,
            dst: 5353,
            csum: false,
        };
        r.payload = vec![];
        r.to_bytes()
    };
    let padded = |mut f: Vec<u8>| {
        f.resize(f.len() + 60 - (14 + reply_short.len()), 0);
        f
    };
    // A reply cut inside its TCP header: no ports to look up.
    let reply_cut =
        plain_ip(&Inner::tcp(ENDPOINT, 6443, CLIENT, 40000).to_bytes())[..14 + 20 + 19].to_vec();
    // A first fragment (MF set) carries its ports: tunnelled whole.
    let reply_first_fragment = {
        let mut r = Inner::udp(ENDPOINT, 5300, CLIENT, 5353);
        r.frag = 0x2000;
        r.to_bytes()
    };
    let tcp_cookie = (SVC_AGENTLESS_TCP, 400);
    let udp_cookie = (SVC_AGENTLESS_UDP, 401);
    // Plain packets that are no endpoint reply the switch knows.
    let from_far = plain_ip(&Inner::tcp(ENDPOINT_FAR, 6443, CLIENT, 40000).to_bytes());
    let wrong_sport = plain_ip(&Inner::tcp(ENDPOINT, 6444, CLIENT, 40000).to_bytes());
    let wrong_proto = plain_ip(&Inner::udp(ENDPOINT, 6443, CLIENT, 40000).to_bytes());
    let to_node = plain_ip(&Inner::tcp(ENDPOINT, 6443, NODE_B, 40000).to_bytes());
    let with_options = plain_ip(&{
        let mut r = Inner::tcp(ENDPOINT, 6443, CLIENT, 40000);
        r.options = vec![1, 1, 1, 0];
        r.to_bytes()
    });
    let later_fragment = plain_ip(&{
        let mut r = Inner::tcp(ENDPOINT, 6443, CLIENT, 40000);
        r.l4 = L4::Other(IPPROTO_TCP);
        r.frag = 3;
        r.payload = vec![0xab; 16];
        r.to_bytes()
    });
    let miss_ttl1 = plain_ip(&ip_with(
        &Inner::tcp(ENDPOINT, 6444, CLIENT, 40000).to_bytes(),
        8,
        1,
    ));

    let mut steps: Vec<Step> = [
        s(
            "agentless TCP endpoint: DNAT, tunnel stripped, routed to the endpoint",
            new_flow(&tcp),
            stripped(&tcp, 400, 1),
        )
        .load_balanced(SVC_AGENTLESS_TCP, E::NewFlow, Some(400)),
        s(
            "agentless UDP endpoint: DNAT, tunnel stripped, routed to the endpoint",
            new_flow(&udp),
            stripped(&udp, 401, 1),
        )
        .load_balanced(SVC_AGENTLESS_UDP, E::NewFlow, Some(401)),
        s(
            "agentless endpoint, inner source the switch's address: never sent plain",
            new_flow(&Inner::tcp(SWITCH, 40000, VIP_API, 443)),
            Verdict::Drop(R::SpoofedSource),
        ),
        s(
            "agentless endpoint with a valid cookie: stripped as a new flow is",
            request(SWITCH, flags::COOKIE_VALID, 400, &tcp),
            stripped(&tcp, 400, 1),
        )
        .load_balanced(SVC_AGENTLESS_TCP, E::CookieHit, Some(400)),
        s(
            "agentless endpoint, UDP checksum that becomes 0 after DNAT: 0xFFFF",
            new_flow(&zero_after_dnat(&udp, 401)),
            stripped(&zero_after_dnat(&udp, 401), 401, 1),
        )
        .load_balanced(SVC_AGENTLESS_UDP, E::NewFlow, Some(401)),
        s(
            "agentless endpoint: the outer TTL does not count, the inner one does",
            tunnel_frame(
                NODE_A,
                SWITCH,
                1,
                &talaria(flags::NEW_FLOW, 0, 0),
                &tcp.to_bytes(),
            ),
            stripped(&tcp, 400, 1),
        )
        .load_balanced(SVC_AGENTLESS_TCP, E::NewFlow, Some(400)),
        s(
            "agentless endpoint, inner TTL 2: routed with TTL 1",
            tcp_ttl(2),
            fwd(1, tcp_ttl2),
        )
        .load_balanced(SVC_AGENTLESS_TCP, E::NewFlow, Some(400)),
        s(
            "agentless endpoint, inner TTL 1: counted, then ttl_expired",
            tcp_ttl(1),
            Verdict::Drop(R::TtlExpired),
        )
        .load_balanced(SVC_AGENTLESS_TCP, E::NewFlow, Some(400)),
        s(
            "agentless endpoint, first fragment (MF): stripped like a whole packet",
            new_flow(&first_fragment),
            stripped(&first_fragment, 400, 1),
        )
        .load_balanced(SVC_AGENTLESS_TCP, E::NewFlow, Some(400)),
        s(
            "agentless endpoint, later fragment with its datagram's ports: stripped",
            later_with(&ports_word),
            stripped(&later, 400, 1),
        )
        .load_balanced(SVC_AGENTLESS_TCP, E::NewFlow, Some(400)),
        s(
            "agentless endpoint, later fragment with its first fragment's cookie: stripped",
            later_with(&talaria(flags::COOKIE_VALID, SVC_AGENTLESS_TCP, 400)),
            stripped(&later, 400, 1),
        )
        .backend_hit(400)
        .event(E::CookieHit),
        s(
            "client's ICMP error about an agentless endpoint's reply: relayed plain, quote rewritten",
            client_error,
            fwd(1, relayed_error),
        )
        .load_balanced(SVC_AGENTLESS_TCP, E::CookieHit, Some(400)),
        s(
            "agentless endpoint, tunnel with outer IPv4 options: stripped with them",
            outer_opts,
            stripped(&tcp, 400, 1),
        )
        .load_balanced(SVC_AGENTLESS_TCP, E::NewFlow, Some(400)),
        s(
            "agentless endpoint no route leads to: counted, then no_route",
            new_flow(&Inner::tcp(CLIENT, 40000, VIP_API, 444)),
            Verdict::Drop(R::NoRoute),
        )
        .load_balanced(SVC_AGENTLESS_LOST, E::NewFlow, Some(402)),
        s(
            "endpoint reply (TCP) tunnelled unchanged to the client's node",
            plain_ip(&reply_tcp),
            fwd(1, endpoint_tunnel(&reply_tcp, tcp_cookie, NODE_A)),
        )
        .event(E::Reply),
        s(
            "endpoint reply (UDP) tunnelled unchanged to the client's node",
            plain_ip(&reply_udp),
            fwd(1, endpoint_tunnel(&reply_udp, udp_cookie, NODE_A)),
        )
        .event(E::Reply),
        s(
            "endpoint reply to a client on another node: tunnelled out of its port",
            plain_ip(&reply_udp_b),
            fwd(2, endpoint_tunnel(&reply_udp_b, udp_cookie, NODE_B)),
        )
        .event(E::Reply),
        s(
            "endpoint reply with TTL 1 is tunnelled (the outer TTL is the switch's)",
            plain_ip(&reply_ttl1),
            fwd(1, endpoint_tunnel(&reply_ttl1, tcp_cookie, NODE_A)),
        )
        .event(E::Reply),
        s(
            "endpoint reply's first fragment tunnelled like a whole packet",
            plain_ip(&reply_first_fragment),
            fwd(
                1,
                endpoint_tunnel(&reply_first_fragment, udp_cookie, NODE_A),
            ),
        )
        .event(E::Reply),
        s(
            "endpoint reply in a padded frame: tunnelled, padding kept after it",
            padded(plain_ip(&reply_short)),
            fwd(1, padded(endpoint_tunnel(&reply_short, udp_cookie, NODE_A))),
        )
        .event(E::Reply),
        s(
            "endpoint reply cut inside its TCP header: routed plain",
            reply_cut.clone(),
            plain_to(&reply_cut, 1),
        ),
        s(
            "endpoint reply for a client whose node has no route: counted, then no_route",
            plain_ip(&reply_lost),
            Verdict::Drop(R::NoRoute),
        )
        .event(E::Reply),
        s(
            "endpoint reply on a port the endpoint is not behind: routed plain",
            from_far.clone(),
            plain_to(&from_far, 1),
        ),
        s(
            "endpoint reply from another source port: routed plain",
            wrong_sport.clone(),
            plain_to(&wrong_sport, 1),
        ),
        s(
            "endpoint reply of another protocol: routed plain",
            wrong_proto.clone(),
            plain_to(&wrong_proto, 1),
        ),
        s(
            "endpoint reply to an address in no pod CIDR: routed plain",
            to_node.clone(),
            plain_to(&to_node, 2),
        ),
        s(
            "endpoint reply with IPv4 options: routed plain",
            with_options.clone(),
            plain_to(&with_options, 1),
        ),
        s(
            "later fragment of an endpoint reply: routed plain",
            later_fragment.clone(),
            plain_to(&later_fragment, 1),
        ),
        s(
            "plain packet that is no endpoint reply, TTL 1: ttl_expired",
            miss_ttl1,
            Verdict::Drop(R::TtlExpired),
        ),
    ]
    .into_iter()
    .map(Step::Send)
    .collect();
    // Without a tunnel source for the client's node the switch cannot
    // tunnel a reply.
    let reply = plain_ip(&reply_tcp);
    steps.push(Step::Delete(tunnel_source(NODE_A)));
    steps.push(Step::Send(s(
        "endpoint reply whose client's node has no tunnel_source: routed plain",
        reply.clone(),
        plain_to(&reply, 1),
    )));
    steps.push(Step::Insert(tunnel_source(NODE_A)));
    steps.push(Step::Send(
        s(
            "endpoint reply once the tunnel source is back: tunnelled",
            reply,
            fwd(1, endpoint_tunnel(&reply_tcp, tcp_cookie, NODE_A)),
        )
        .event(E::Reply),
    ));
    steps
}

/// External clients (no agent) of the Services on EXT_VIP: their plain
/// requests balanced as new flows, DNATed and tunnelled to the backend's
/// node from its `tunnel_source`, flagged EXTERNAL (or routed plain to a
/// backend without an agent); replies to them stripped and routed plain.
/// Timestamp cookies: [`ts_cookie_steps`]. Against the
/// standard tables, after the other scenarios.
fn external_steps() -> Vec<Step> {
    use DropReason as R;
    use LbEvent as E;
    let s = Scenario::new;
    let fwd = |port, bytes| Verdict::Forward {
        port,
        bytes: Some(bytes),
    };
    let plain_to = |frame: &[u8], port| fwd(port, routed(frame, port));
    // A request `inner` to a backend behind a node, tunnelled there.
    let tunnelled = |inner: &Inner, service_id, backend_id| {
        external_tunnel(
            &inner.to_bytes(),
            &dnat(inner, backend_id).to_bytes(),
            service_id,
            backend_id,
        )
    };

    let tcp = Inner::tcp(EXT_CLIENT, 40000, EXT_VIP, 80);
    let first = ext_hashed_backend(EXT_CLIENT, 40000);
    // Another flow of the client that hashes to another backend.
    let other_sport = (40001..41000)
        .find(|p| ext_hashed_backend(EXT_CLIENT, *p) != first)
        .unwrap();
    let other = Inner::tcp(EXT_CLIENT, other_sport, EXT_VIP, 80);
    let other_backend = ext_hashed_backend(EXT_CLIENT, other_sport);
    // A flow that hashes to the backend on node A, whose tunnel source
    // differs from node B's.
    let on_a_sport = (40001..41000)
        .find(|p| backend(ext_hashed_backend(EXT_CLIENT, *p)).2 == NODE_A)
        .unwrap();
    let on_a = Inner::tcp(EXT_CLIENT, on_a_sport, EXT_VIP, 80);
    let on_a_backend = ext_hashed_backend(EXT_CLIENT, on_a_sport);
    // Geneve in transit to the external address whose inner TCP port is a
    // UDP Service port there: not a plain TCP packet, routed unchanged.
    let transit = tunnel_frame(
        NODE_A,
        EXT_VIP,
        64,
        &talaria(flags::NEW_FLOW, 0, 0),
        &Inner::tcp(CLIENT, 40000, VIP_TCP, 53).to_bytes(),
    );
    let udp = Inner::udp(EXT_CLIENT, 5353, EXT_VIP, 53);
    let udp_nocsum = Inner {
        l4: L4::Udp {
            src: 5353,
            dst: 53,
            csum: false,
        },
        ..udp.clone()
    };
    let udp_zero = zero_after_dnat(&udp, 200);
    // TTL 1 and a TOS (DSCP and ECN): the tunnel copies the TOS and keeps
    // the inner TTL, its own is the switch's.
    let tos_ttl1 = |ip: &[u8]| ip_with(&ip_with(ip, 1, 0x28), 8, 1);
    let tcp_ttl1 = tos_ttl1(&tcp.to_bytes());
    let tcp_ttl1_out = tos_ttl1(&dnat(&tcp, first).to_bytes());
    let agentless = Inner::tcp(EXT_CLIENT, 40000, EXT_VIP, 443);
    let agentless_ttl1 = ip_with(&agentless.to_bytes(), 8, 1);
    let no_tunnel_source = Inner::tcp(EXT_CLIENT, 40000, EXT_VIP, 8443);
    let no_service = plain_ip(&Inner::tcp(EXT_CLIENT, 40000, EXT_VIP, 81).to_bytes());
    let mut first_fragment = tcp.clone();
    first_fragment.frag = 0x2000;
    let later_fragment = plain_ip(&{
        let mut r = tcp.clone();
        r.l4 = L4::Other(IPPROTO_TCP);
        r.frag = 3;
        r.payload = vec![0xab; 16];
        r.to_bytes()
    });
    let with_options = plain_ip(&{
        let mut r = tcp.clone();
        r.options = vec![1, 1, 1, 0];
        r.to_bytes()
    });
    // A pod's request to the external address, tunnelled by its node:
    // balanced as to any Service address.
    let from_pod = Inner::tcp(CLIENT, 40000, EXT_VIP, 80);
    let from_pod_backend = ext_hashed_backend(CLIENT, 40000);

    // Replies to the external client, from the node of their backend.
    let reply_opt = talaria(flags::REPLY | flags::COOKIE_VALID, SVC_EXT_TCP, 100);
    let reply_inner = Inner::tcp(EXT_VIP, 80, EXT_CLIENT, 40000).to_bytes();
    let reply_ttl1 = ip_with(&reply_inner, 8, 1);
    let udp_reply_inner = Inner::udp(EXT_VIP, 53, EXT_CLIENT, 5353).to_bytes();
    let udp_reply_opt = talaria(flags::REPLY | flags::COOKIE_VALID, SVC_EXT_UDP, 200);
    let notify_inner = Inner {
        l4: L4::Udp {
            src: 53,
            dst: 5353,
            csum: false,
        },
        ..Inner::udp(EXT_VIP, 53, EXT_CLIENT, 5353)
    }
    .to_bytes();
    let notify_opt = talaria(
        flags::REPLY | flags::COOKIE_VALID | flags::NOTIFY,
        SVC_EXT_UDP,
        200,
    );

    // A pod on node A reaching node B's nodePort plain (its node steers
    // no node address), and the reply its backend's node tunnels back.
    let to_node_port = Inner::tcp(CLIENT, 40000, NODE_B, NODE_PORT);
    let not_node_port = plain_ip(&Inner::tcp(CLIENT, 40000, NODE_B, 22).to_bytes());
    let node_port_reply = Inner::tcp(NODE_B, NODE_PORT, CLIENT, 40000).to_bytes();
    let node_port_reply_opt = talaria(flags::REPLY | flags::COOKIE_VALID, SVC_NODE_PORT, 100);
    let mut node_port_reply_out =
        tunnel_frame(SWITCH, NODE_A, 63, &node_port_reply_opt, &node_port_reply);
    node_port_reply_out[0..6].copy_from_slice(&route_mac(1).1);
    node_port_reply_out[6..12].copy_from_slice(&route_mac(1).0);

    let mut steps: Vec<Step> = [
        s(
            "pod's plain request to another node's nodePort, from its node's port: DNAT, \
             tunnelled to the backend's node",
            plain_ip(&to_node_port.to_bytes()),
            tunnelled(&to_node_port, SVC_NODE_PORT, 100),
        )
        .load_balanced(SVC_NODE_PORT, E::NewFlow, Some(100)),
        s(
            "plain packet to a node's address on a port that is no nodePort: routed to the \
             node unchanged",
            not_node_port.clone(),
            plain_to(&not_node_port, 2),
        ),
        s(
            "reply to a pod's nodePort request: tunnelled to the client's node (pod_node), \
             from the node address",
            tunnel_frame(NODE_B, SWITCH, 64, &node_port_reply_opt, &node_port_reply),
            fwd(1, node_port_reply_out),
        )
        .replied(100),
        s(
            "external TCP request to a LoadBalancer address: hashed, DNAT, tunnelled to \
             the backend's node from its tunnel_source, flagged COOKIE_VALID, EXTERNAL and NEW_FLOW",
            plain_ip(&tcp.to_bytes()),
            tunnelled(&tcp, SVC_EXT_TCP, first),
        )
        .load_balanced(SVC_EXT_TCP, E::NewFlow, Some(first)),
        s(
            "external TCP request, same 5-tuple again: same backend",
            plain_ip(&tcp.to_bytes()),
            tunnelled(&tcp, SVC_EXT_TCP, first),
        )
        .load_balanced(SVC_EXT_TCP, E::NewFlow, Some(first)),
        s(
            "external TCP request of another flow: the hash picks its backend",
            plain_ip(&other.to_bytes()),
            tunnelled(&other, SVC_EXT_TCP, other_backend),
        )
        .load_balanced(SVC_EXT_TCP, E::NewFlow, Some(other_backend)),
        s(
            "external TCP request to a backend on another node: from that node's tunnel_source",
            plain_ip(&on_a.to_bytes()),
            tunnelled(&on_a, SVC_EXT_TCP, on_a_backend),
        )
        .load_balanced(SVC_EXT_TCP, E::NewFlow, Some(on_a_backend)),
        s(
            "Geneve in transit to an external address, inner TCP to a UDP Service port: \
             routed plain",
            transit.clone(),
            plain_to(&transit, 2),
        ),
        s(
            "external request with TTL 1 and a TOS: tunnelled, TOS copied, inner TTL kept",
            plain_ip(&tcp_ttl1),
            external_tunnel(&tcp_ttl1, &tcp_ttl1_out, SVC_EXT_TCP, first),
        )
        .load_balanced(SVC_EXT_TCP, E::NewFlow, Some(first)),
        s(
            "external UDP request: port rewritten, UDP checksum fixed, tunnelled",
            plain_ip(&udp.to_bytes()),
            tunnelled(&udp, SVC_EXT_UDP, 200),
        )
        .load_balanced(SVC_EXT_UDP, E::NewFlow, Some(200)),
        s(
            "external UDP request without checksum keeps checksum 0",
            plain_ip(&udp_nocsum.to_bytes()),
            tunnelled(&udp_nocsum, SVC_EXT_UDP, 200),
        )
        .load_balanced(SVC_EXT_UDP, E::NewFlow, Some(200)),
        s(
            "external UDP request whose checksum becomes 0 after DNAT: sent as 0xFFFF",
            plain_ip(&udp_zero.to_bytes()),
            tunnelled(&udp_zero, SVC_EXT_UDP, 200),
        )
        .load_balanced(SVC_EXT_UDP, E::NewFlow, Some(200)),
        s(
            "external request to a backend without an agent: DNATed, routed plain",
            plain_ip(&agentless.to_bytes()),
            stripped(&agentless, 400, 1),
        )
        .load_balanced(SVC_EXT_AGENTLESS, E::NewFlow, Some(400)),
        s(
            "external request to a backend without an agent, TTL 1: counted, then ttl_expired",
            plain_ip(&agentless_ttl1),
            Verdict::Drop(R::TtlExpired),
        )
        .load_balanced(SVC_EXT_AGENTLESS, E::NewFlow, Some(400)),
        s(
            "external request whose backend's node has no tunnel_source: counted, then \
             no_tunnel_source",
            plain_ip(&no_tunnel_source.to_bytes()),
            Verdict::Drop(R::NoTunnelSource),
        )
        .load_balanced(SVC_EXT_NO_TUNNEL_SOURCE, E::NewFlow, Some(500)),
        s(
            "plain packet to an external address, no Service's port: routed plain, unchanged",
            no_service.clone(),
            plain_to(&no_service, 2),
        ),
        s(
            "first fragment (MF) of an external request: fragment",
            plain_ip(&first_fragment.to_bytes()),
            Verdict::Drop(R::Fragment),
        ),
        s(
            "later fragment to an external address: no ports, routed plain",
            later_fragment.clone(),
            plain_to(&later_fragment, 2),
        ),
        s(
            "external request with IPv4 options: routed plain, not balanced",
            with_options.clone(),
            plain_to(&with_options, 2),
        ),
        s(
            "external request with the switch's address as its source: spoofed_source",
            plain_ip(&Inner::tcp(SWITCH, 40000, EXT_VIP, 80).to_bytes()),
            Verdict::Drop(R::SpoofedSource),
        ),
        s(
            "pod's request to an external address, tunnelled by its node: balanced as any",
            request(SWITCH, flags::NEW_FLOW, 0, &from_pod),
            lb_forward(SVC_EXT_TCP, from_pod_backend, &from_pod),
        )
        .load_balanced(SVC_EXT_TCP, E::NewFlow, Some(from_pod_backend)),
        s(
            "reply to an external client: tunnel stripped, routed plain from the external \
             address",
            tunnel_frame(NODE_B, SWITCH, 64, &reply_opt, &reply_inner),
            plain_to(&plain_ip(&reply_inner), 2),
        )
        .replied(100),
        s(
            "UDP reply to an external client: stripped, routed plain",
            tunnel_frame(NODE_B, SWITCH, 64, &udp_reply_opt, &udp_reply_inner),
            plain_to(&plain_ip(&udp_reply_inner), 2),
        )
        .replied(200),
        s(
            "reply to an external client with inner TTL 1: counted, then ttl_expired",
            tunnel_frame(NODE_B, SWITCH, 64, &reply_opt, &reply_ttl1),
            Verdict::Drop(R::TtlExpired),
        )
        .replied(100),
        s(
            "one-way UDP notification (NOTIFY) to an external client: no_client_node",
            tunnel_frame(NODE_B, SWITCH, 64, &notify_opt, &notify_inner),
            Verdict::Drop(R::NoClientNode),
        )
        .backend_hit(200),
        s(
            "reply to an external client from a node that does not host its backend: \
             forged_reply",
            tunnel_frame(NODE_A, SWITCH, 64, &reply_opt, &reply_inner),
            Verdict::Drop(R::ForgedReply),
        )
        .backend_hit(100),
    ]
    .into_iter()
    .map(Step::Send)
    .collect();
    // The tunnel source is per node: without node B's, requests to its
    // backends cannot be tunnelled.
    steps.push(Step::Delete(tunnel_source(NODE_B)));
    steps.push(Step::Send(
        s(
            "external request to a node whose tunnel_source was deleted: no_tunnel_source",
            plain_ip(&udp.to_bytes()),
            Verdict::Drop(R::NoTunnelSource),
        )
        .load_balanced(SVC_EXT_UDP, E::NewFlow, Some(200)),
    ));
    steps.push(Step::Insert(tunnel_source(NODE_B)));
    steps.push(Step::Send(
        s(
            "external request once the tunnel_source is back: tunnelled",
            plain_ip(&udp.to_bytes()),
            tunnelled(&udp, SVC_EXT_UDP, 200),
        )
        .load_balanced(SVC_EXT_UDP, E::NewFlow, Some(200)),
    ));
    steps
}

/// External clients' timestamp cookies: a TCP segment to SVC_EXT_TCP that
/// echoes a timestamp (NOP, NOP, timestamp first; ACK, no SYN) goes to the
/// backend `ts_cookie` names for the low half of its TSecr, if
/// `cookie_check` vouches for it; anything else is hashed. The timestamps
/// pass unchanged (the backend's node restores the echo), and the tunnel
/// says EXTERNAL, without NEW_FLOW when the cookie chose.
fn ts_cookie_steps() -> Vec<Step> {
    use LbEvent as E;
    let s = Scenario::new;
    const ACK: u8 = 0x10;
    const PSH_ACK: u8 = 0x18;
    const SYN: u8 = 0x02;
    // A flow the hash sends elsewhere than the cookie's backend, 102.
    let sport = (40000..41000)
        .find(|p| ext_hashed_backend(EXT_CLIENT, *p) != 102)
        .unwrap();
    let hashed = ext_hashed_backend(EXT_CLIENT, sport);
    let tcp = Inner::tcp(EXT_CLIENT, sport, EXT_VIP, 80);
    let echo = |cookie: u16| 0x0123_0000 | u32::from(cookie);
    // `inner` with `flags` and `options` (data offset `doff`) to backend
    // `backend_id`, tunnelled with `fresh`.
    let case = |inner: &Inner, flags: u8, options: &[u8], doff: Option<u8>, backend_id, fresh| {
        let ip = tcp_with_options(inner, flags, options, doff);
        let out = tcp_with_options(&dnat(inner, backend_id), flags, options, doff);
        (
            plain_ip(&ip),
            external_tunnel_flagged(&ip, &out, fresh, SVC_EXT_TCP, backend_id),
        )
    };
    let ts = |cookie| nop_nop_ts(0x0000_0042, echo(cookie));
    let step = |name, (input, verdict): (Vec<u8>, Verdict), e, backend_id| {
        s(name, input, verdict).load_balanced(SVC_EXT_TCP, e, Some(backend_id))
    };
    // Timestamps first, then SACK permitted padded with NOPs: still read.
    let mut ts_then_more = ts(TS_COOKIE_102);
    ts_then_more.extend_from_slice(&[1, 1, 4, 2]);
    // MSS first, then timestamps: not the layout the switch reads.
    let mut mss_first = vec![2, 4, 0x05, 0xb4];
    mss_first.extend_from_slice(&ts(TS_COOKIE_102));
    // Nothing after the options: the payload is what the TCP header claims.
    let bare = Inner {
        payload: vec![],
        ..tcp.clone()
    };
    let nat = flags::NEW_FLOW;
    // A node's requests with EXTERNAL set: the switch clears it.
    let from_pod = Inner::tcp(CLIENT, 40000, VIP_TCP, 80);
    let from_pod_backend = hashed_backend(CLIENT, 40000);
    vec![
        step(
            "external TCP segment echoing a valid timestamp cookie: to the cookie's backend, \
             not the hash's; EXTERNAL without NEW_FLOW, timestamps unchanged",
            case(&tcp, PSH_ACK, &ts(TS_COOKIE_102), None, 102, 0),
            E::TsCookieHit,
            102,
        ),
        step(
            "external pure ACK echoing a valid timestamp cookie: to the cookie's backend",
            case(&bare, ACK, &ts(TS_COOKIE_102), None, 102, 0),
            E::TsCookieHit,
            102,
        ),
        step(
            "timestamp cookie followed by more options: still read",
            case(&tcp, PSH_ACK, &ts_then_more, None, 102, 0),
            E::TsCookieHit,
            102,
        ),
        step(
            "forged timestamp cookie (no ts_cookie entry): hashed, ts_cookie_miss",
            case(&tcp, PSH_ACK, &ts(TS_COOKIE_FORGED), None, hashed, nat),
            E::TsCookieMiss,
            hashed,
        ),
        step(
            "timestamp cookie naming another Service's backend (not in cookie_check): \
             hashed, ts_cookie_miss, never to that backend",
            case(
                &tcp,
                PSH_ACK,
                &ts(TS_COOKIE_OTHER_SERVICE),
                None,
                hashed,
                nat,
            ),
            E::TsCookieMiss,
            hashed,
        ),
        step(
            "SYN with timestamps whose TSecr matches a cookie: new flow, hashed",
            case(&tcp, SYN, &ts(TS_COOKIE_102), None, hashed, nat),
            E::NewFlow,
            hashed,
        ),
        step(
            "SYN-ACK with timestamps whose TSecr matches a cookie: new flow, hashed",
            case(&tcp, SYN | ACK, &ts(TS_COOKIE_102), None, hashed, nat),
            E::NewFlow,
            hashed,
        ),
        step(
            "segment without ACK echoing a cookie: new flow, hashed",
            case(&tcp, 0x08, &ts(TS_COOKIE_102), None, hashed, nat),
            E::NewFlow,
            hashed,
        ),
        step(
            "timestamps not first (MSS before them): new flow, hashed",
            case(&tcp, PSH_ACK, &mss_first, None, hashed, nat),
            E::NewFlow,
            hashed,
        ),
        step(
            "NOP NOP timestamp lead but data offset 7 (8 option bytes): new flow, hashed",
            case(&tcp, PSH_ACK, &ts(TS_COOKIE_102), Some(7), hashed, nat),
            E::NewFlow,
            hashed,
        ),
        step(
            "data offset 8 but the frame ends after the lead (4 option bytes): new flow, \
             hashed, the packet otherwise as today",
            case(&bare, ACK, &[1, 1, 8, 10], Some(8), hashed, nat),
            E::NewFlow,
            hashed,
        ),
        step(
            "data offset 8 but the frame ends with the TCP header: new flow, hashed",
            case(&bare, ACK, &[], Some(8), hashed, nat),
            E::NewFlow,
            hashed,
        ),
        step(
            "data offset 8, 11 of the 12 option bytes: new flow, hashed",
            case(&bare, ACK, &ts(TS_COOKIE_102)[..11], Some(8), hashed, nat),
            E::NewFlow,
            hashed,
        ),
        s(
            "node's tunnelled request claiming EXTERNAL: the switch clears it",
            request(SWITCH, flags::NEW_FLOW | flags::EXTERNAL, 0, &from_pod),
            lb_forward(SVC_TCP, from_pod_backend, &from_pod),
        )
        .load_balanced(SVC_TCP, E::NewFlow, Some(from_pod_backend)),
        s(
            "node's cookied request claiming EXTERNAL: cookie kept, EXTERNAL cleared",
            request(
                SWITCH,
                flags::COOKIE_VALID | flags::EXTERNAL,
                from_pod_backend,
                &from_pod,
            ),
            lb_verdict(
                SWITCH,
                flags::COOKIE_VALID,
                SVC_TCP,
                from_pod_backend,
                &from_pod,
            ),
        )
        .load_balanced(SVC_TCP, E::CookieHit, Some(from_pod_backend)),
    ]
    .into_iter()
    .map(Step::Send)
    .collect()
}

// ---------------------------------------------------------- IPv6 Services --

/// An inner IPv6 packet of an IPv6 Service's flow: TCP or UDP right after
/// the fixed header (checksums computed over the IPv6 pseudo header), or
/// `L4::Other(next header)` with the payload as is (an ICMPv6 message
/// built with its checksum by [`Inner6::icmp6_error`]).
#[derive(Clone, Debug)]
struct Inner6 {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    l4: L4,
    payload: Vec<u8>,
}

impl Inner6 {
    fn tcp(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Self {
        Self {
            src,
            dst,
            l4: L4::Tcp {
                src: sport,
                dst: dport,
            },
            payload: b"hello6".to_vec(),
        }
    }

    fn udp(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Self {
        Self {
            src,
            dst,
            l4: L4::Udp {
                src: sport,
                dst: dport,
                csum: true,
            },
            payload: b"query6".to_vec(),
        }
    }

    /// An ICMPv6 error (`icmp_type`, `code`, 4 unused bytes) about
    /// `quoted`, the start of the packet it is about, from `src` to `dst`,
    /// its checksum over the IPv6 pseudo header (RFC 4443, 2.3).
    fn icmp6_error(src: Ipv6Addr, dst: Ipv6Addr, icmp_type: u8, code: u8, quoted: &[u8]) -> Self {
        let mut msg = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(quoted);
        let c = l4_checksum_v6(src, dst, IPPROTO_ICMPV6, &msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
        Self {
            src,
            dst,
            l4: L4::Other(IPPROTO_ICMPV6),
            payload: msg,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let (next, mut l4) = match self.l4 {
            L4::Tcp { src, dst } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&src.to_be_bytes());
                h[2..4].copy_from_slice(&dst.to_be_bytes());
                h[4..8].copy_from_slice(&1u32.to_be_bytes());
                h[12] = 5 << 4;
                h[13] = 0x18;
                h[14..16].copy_from_slice(&512u16.to_be_bytes());
                (IPPROTO_TCP, h)
            }
            L4::Udp { src, dst, .. } => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&src.to_be_bytes());
                h[2..4].copy_from_slice(&dst.to_be_bytes());
                h[4..6].copy_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                (IPPROTO_UDP, h)
            }
            L4::Other(p) => (p, vec![]),
        };
        l4.extend_from_slice(&self.payload);
        match self.l4 {
            L4::Tcp { .. } => {
                let c = l4_checksum_v6(self.src, self.dst, next, &l4);
                l4[16..18].copy_from_slice(&c.to_be_bytes());
            }
            L4::Udp { csum: true, .. } => {
                let c = match l4_checksum_v6(self.src, self.dst, next, &l4) {
                    0 => 0xffff,
                    c => c,
                };
                l4[6..8].copy_from_slice(&c.to_be_bytes());
            }
            _ => {}
        }
        let mut out = vec![0x60, 0, 0, 0];
        out.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        out.extend_from_slice(&[next, 64]);
        out.extend_from_slice(&self.src.octets());
        out.extend_from_slice(&self.dst.octets());
        out.extend_from_slice(&l4);
        out
    }
}

/// The TCP, UDP or ICMPv6 checksum of `segment` (its checksum field taken
/// as 0) over the IPv6 pseudo header (RFC 8200, 8.1).
fn l4_checksum_v6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, segment: &[u8]) -> u16 {
    let mut seg = segment.to_vec();
    let off = match next {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        IPPROTO_ICMPV6 => 2,
        _ => panic!("no checksum known for next header {next}"),
    };
    seg[off] = 0;
    seg[off + 1] = 0;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(seg.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, next]);
    let init: u32 = pseudo
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    super::checksum(&seg, init)
}

/// [`packet_checksums`] for an IPv6 packet: its TCP, UDP or ICMPv6
/// checksum, when one follows the fixed header.
fn packet_checksums_v6(which: &str, ip: &[u8], out: &mut Vec<String>) {
    if ip.len() < 40 {
        return;
    }
    let addr = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&ip[at..at + 16]).unwrap());
    let end = (40 + usize::from(word(ip, 4))).min(ip.len());
    let seg = &ip[40..end];
    let l4 = match ip[6] {
        IPPROTO_TCP if seg.len() >= 20 => Some(("TCP", 16, 0)),
        IPPROTO_UDP if seg.len() >= 8 && word(seg, 6) != 0 => Some(("UDP", 6, 0xffff)),
        IPPROTO_ICMPV6 if seg.len() >= 4 => Some(("ICMPv6", 2, 0)),
        _ => None,
    };
    if let Some((name, at, zero)) = l4 {
        let want = match l4_checksum_v6(addr(8), addr(24), ip[6], seg) {
            0 => zero,
            c => c,
        };
        if word(seg, at) != want {
            out.push(format!(
                "{which}{name} checksum {:#06x}, expected {want:#06x}",
                word(seg, at)
            ));
        }
    }
}

/// The Geneve header and Talaria option of an IPv6 Service's tunnel:
/// [`talaria`] with protocol 0x86DD.
fn talaria6(flags: u8, service_id: u16, backend_id: u32) -> Vec<u8> {
    let mut g = talaria(flags, service_id, backend_id);
    g[2..4].copy_from_slice(&GENEVE_PROTO_IPV6.to_be_bytes());
    g
}

fn backend_v6(id: u32) -> (Ipv6Addr, u16, Ipv4Addr) {
    let (_, ip, port, node) = BACKENDS_V6
        .iter()
        .copied()
        .find(|b| b.0 == id)
        .expect("known IPv6 backend");
    (ip, port, node)
}

/// The backend the bucket hash gives `inner` (to one of SERVICES_V6):
/// `FlowTuple6`'s 5-tuple hash, or its client-IP hash.
fn hashed_backend_v6(inner: &Inner6, mode: u8) -> u32 {
    let (proto, src_port, dst_port) = match inner.l4 {
        L4::Tcp { src, dst } => (IPPROTO_TCP, src, dst),
        L4::Udp { src, dst, .. } => (IPPROTO_UDP, src, dst),
        L4::Other(_) => unreachable!("a flow with ports"),
    };
    let t = FlowTuple6 {
        src: inner.src.octets(),
        dst: inner.dst.octets(),
        proto,
        src_port: src_port.into(),
        dst_port: dst_port.into(),
    };
    let hash = if mode == hash_mode::CLIENT_IP {
        t.client_ip_hash()
    } else {
        t.hash()
    };
    BUCKETS_V6[(hash & 3) as usize]
}

/// `inner` after the switch's DNAT to IPv6 backend `backend_id`.
fn dnat_v6(inner: &Inner6, backend_id: u32) -> Inner6 {
    let (ip, port, _) = backend_v6(backend_id);
    let mut out = inner.clone();
    out.dst = ip;
    out.l4 = match inner.l4 {
        L4::Tcp { src, .. } => L4::Tcp { src, dst: port },
        L4::Udp { src, csum, .. } => L4::Udp {
            src,
            dst: port,
            csum,
        },
        other => other,
    };
    out
}

/// [`zero_after_dnat`] for IPv6: `inner` with two payload bytes that make
/// its L4 checksum come out as exactly zero once DNATed to `backend_id`.
fn zero_after_dnat_v6(inner: &Inner6, backend_id: u32) -> Inner6 {
    let mut out = inner.clone();
    out.payload = vec![0, 0, b'z', b'e', b'r', b'o'];
    let after = dnat_v6(&out, backend_id);
    let next = if matches!(inner.l4, L4::Tcp { .. }) {
        IPPROTO_TCP
    } else {
        IPPROTO_UDP
    };
    let seg = after.to_bytes()[40..].to_vec();
    let fill = l4_checksum_v6(after.src, after.dst, next, &seg);
    out.payload[0..2].copy_from_slice(&fill.to_be_bytes());
    out
}

/// An IPv6 Service's packet as node `from` tunnels it to the switch.
fn tunnel6(from: Ipv4Addr, opt: &[u8], inner: &[u8]) -> Vec<u8> {
    tunnel_frame(from, SWITCH, 64, opt, inner)
}

/// A tunnel the switch re-originated to `node` (from SWITCH, TTL 63,
/// MACs of the route to it) with option `opt` around `inner`.
fn reoriginated6(node: Ipv4Addr, opt: &[u8], inner: &[u8]) -> Verdict {
    let port = node_port(node);
    let (src_mac, dst_mac) = route_mac(port);
    let mut frame = tunnel_frame(SWITCH, node, 63, opt, inner);
    frame[0..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&src_mac);
    Verdict::Forward {
        port,
        bytes: Some(frame),
    }
}

/// An IPv6 request `inner` that came with `in_flags`, DNATed to
/// `backend_id` of `service_id` and tunnelled to its node.
fn lb_verdict_v6(in_flags: u8, service_id: u16, backend_id: u32, inner: &Inner6) -> Verdict {
    let opt = talaria6(in_flags | flags::COOKIE_VALID, service_id, backend_id);
    reoriginated6(
        backend_v6(backend_id).2,
        &opt,
        &dnat_v6(inner, backend_id).to_bytes(),
    )
}

/// IPv6 Services over the IPv4 underlay (Geneve protocol 0x86DD): what
/// IPv4 Services get (new flows with either hash mode, cookies, replies
/// checked and re-originated, a backend's ICMPv6 error as a reply without
/// ports, a client's ICMPv6 error about a reply relayed to its backend),
/// and the clean drops of what IPv6 does not have yet (extension headers
/// and fragments, ICMPv6 but those errors, endpoints without an agent,
/// clients outside the cluster).
fn ipv6_service_steps() -> Vec<Step> {
    use DropReason as R;
    use LbEvent as E;
    let s = Scenario::new;
    let drop = Verdict::Drop;
    let new_flow = |flags| talaria6(flags, 0, 0);

    let mut steps = Vec::new();
    // A new flow of each Service (TCP and UDP, both hash modes).
    for (service, port, proto, mode) in SERVICES_V6 {
        let inner = if proto == IPPROTO_TCP {
            Inner6::tcp(POD_A_V6, 40000, VIP6, port)
        } else {
            Inner6::udp(POD_A_V6, 5353, VIP6, port)
        };
        let backend = hashed_backend_v6(&inner, mode);
        let name = match (proto, mode) {
            (IPPROTO_TCP, hash_mode::FIVE_TUPLE) => {
                "IPv6 new TCP flow: service_v6, 5-tuple bucket, backend_v6, DNAT, cookie, to its node"
            }
            (IPPROTO_TCP, _) => "IPv6 new TCP flow, ClientIP affinity: the source address hashed",
            (_, hash_mode::FIVE_TUPLE) => "IPv6 new UDP flow, 5-tuple hash, UDP checksum fixed",
            _ => "IPv6 new UDP flow, ClientIP affinity, UDP checksum fixed",
        };
        steps.push(Step::Send(
            s(
                name,
                tunnel6(NODE_A, &new_flow(flags::NEW_FLOW), &inner.to_bytes()),
                lb_verdict_v6(flags::NEW_FLOW, service, backend, &inner),
            )
            .load_balanced(service, E::NewFlow, None),
        ));
    }

    let tcp = Inner6::tcp(POD_A_V6, 40000, VIP6, 80);
    let hashed = hashed_backend_v6(&tcp, hash_mode::FIVE_TUPLE);
    let cookie = *BUCKETS_V6.iter().find(|b| **b != hashed).unwrap();
    // Two flows whose 5-tuple hashes differ but whose client is the same:
    // affinity keeps them together.
    let other_sport = (40001..41000)
        .find(|p| {
            hashed_backend_v6(&Inner6::tcp(POD_A_V6, *p, VIP6, 80), hash_mode::FIVE_TUPLE) != hashed
        })
        .unwrap();
    let other = Inner6::tcp(POD_A_V6, other_sport, VIP6, 80);
    let affinity = Inner6::tcp(POD_A_V6, other_sport, VIP6, 81);
    let mut udp_nocsum = Inner6::udp(POD_A_V6, 5353, VIP6, 53);
    udp_nocsum.l4 = L4::Udp {
        src: 5353,
        dst: 53,
        csum: false,
    };
    // Checksums that come out at exactly zero after the DNAT (the bucket
    // hash reads no payload, so the backend stays the flow's).
    let udp_flow = Inner6::udp(POD_A_V6, 5353, VIP6, 53);
    let udp_zero_backend = hashed_backend_v6(&udp_flow, hash_mode::CLIENT_IP);
    let udp_zero = zero_after_dnat_v6(&udp_flow, udp_zero_backend);
    let tcp_zero = zero_after_dnat_v6(&tcp, hashed);
    let tcp_zero_backend = hashed;
    let bad_l4 = {
        let mut input = tcp.to_bytes();
        checksum_off_by_one(&mut input, 40 + 16);
        let mut output = dnat_v6(&tcp, hashed).to_bytes();
        checksum_off_by_one(&mut output, 40 + 16);
        (input, output)
    };
    // An inner packet whose next header is `next` (an extension header, or
    // ICMPv6) with `payload` after the fixed header.
    let other_next = |next, payload: &[u8]| Inner6 {
        l4: L4::Other(next),
        payload: payload.to_vec(),
        ..tcp.clone()
    };
    // A Fragment header (first fragment, more follow) before TCP.
    let fragment = {
        let mut p = vec![IPPROTO_TCP, 0, 0, 1, 0, 0, 0x12, 0x34];
        p.extend_from_slice(&tcp.to_bytes()[40..]);
        other_next(44, &p)
    };
    // Hop-by-hop options (PadN) before TCP.
    let hop_by_hop = {
        let mut p = vec![IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0];
        p.extend_from_slice(&tcp.to_bytes()[40..]);
        other_next(0, &p)
    };
    // An ICMPv6 echo request to the VIP.
    let ping = other_next(58, &[128, 0, 0, 0, 0, 1, 0, 1]);

    // Replies: backend 600 (node B) of SVC6_TCP, to the client on node A.
    let reply_inner = Inner6::tcp(VIP6, 80, POD_A_V6, 40000);
    let reply_opt =
        |service, backend| talaria6(flags::REPLY | flags::COOKIE_VALID, service, backend);
    let ok_reply = reply_opt(SVC6_TCP, 600);
    let stranger_reply = Inner6::tcp(VIP6, 80, STRANGER_V6, 40000);
    let udp_reply = Inner6::udp(VIP6, 53, POD_B_V6, 5353);

    // Backend 600's port unreachable about the request POD_A_V6:40000 ->
    // VIP6:80, reverse-NATed by node B (the VIP its source and in the
    // quote: the IPv6 header and the first 8 TCP bytes) and tunnelled back
    // as a reply without ports; `to` is the client.
    let port_unreachable = |to: Ipv6Addr| {
        let quote = Inner6::tcp(to, 40000, VIP6, 80).to_bytes();
        Inner6::icmp6_error(VIP6, to, 1, 4, &quote[..48]).to_bytes()
    };
    let icmp6_error = port_unreachable(POD_A_V6);
    // The same error behind a Fragment header (only fragment).
    let icmp6_error_fragment = {
        let mut p = vec![IPPROTO_ICMPV6, 0, 0, 0, 0, 0, 0x56, 0x78];
        p.extend_from_slice(&icmp6_error[40..]);
        Inner6 {
            src: VIP6,
            dst: POD_A_V6,
            l4: L4::Other(44),
            payload: p,
        }
    };
    // The client's port unreachable about `reply` (its socket had closed),
    // the IPv6 header and first 8 L4 bytes quoted, as node A tunnels it to
    // the switch with `opt`.
    let client_error6 = |opt: &[u8], reply: &Inner6| {
        let quote = reply.to_bytes();
        let error = Inner6::icmp6_error(POD_A_V6, VIP6, 1, 4, &quote[..48]);
        tunnel6(NODE_A, opt, &error.to_bytes())
    };
    let relay_opt = |service, backend| talaria6(flags::COOKIE_VALID, service, backend);
    // The same error about backend 600's reply, relayed to it: to its own
    // address, about the reply as it sent it (its address and port), the
    // ICMPv6 checksum right again.
    let relayed_error6 = {
        let (ip, port, node) = backend_v6(600);
        let quote = Inner6::tcp(ip, port, POD_A_V6, 40000).to_bytes();
        let error = Inner6::icmp6_error(POD_A_V6, ip, 1, 4, &quote[..48]);
        reoriginated6(node, &relay_opt(SVC6_TCP, 600), &error.to_bytes())
    };
    // Backend 600's reply behind a Fragment header (only fragment): an
    // error's quote without ports at a fixed offset.
    let fragmented_reply = {
        let mut p = vec![IPPROTO_TCP, 0, 0, 0, 0, 0, 0x9a, 0xbc];
        p.extend_from_slice(&reply_inner.to_bytes()[40..]);
        Inner6 {
            src: VIP6,
            dst: POD_A_V6,
            l4: L4::Other(44),
            payload: p,
        }
    };
    // The client's error with a quote that ends inside the quoted ports.
    let cut_error6 = {
        let quote = reply_inner.to_bytes();
        let error = Inner6::icmp6_error(POD_A_V6, VIP6, 1, 4, &quote[..42]);
        tunnel6(NODE_A, &relay_opt(SVC6_TCP, 600), &error.to_bytes())
    };

    steps.extend(
        [
            s(
                "IPv6 5-tuple flows of one client spread (another source port, another backend)",
                tunnel6(NODE_A, &new_flow(flags::NEW_FLOW), &other.to_bytes()),
                lb_verdict_v6(
                    flags::NEW_FLOW,
                    SVC6_TCP,
                    hashed_backend_v6(&other, hash_mode::FIVE_TUPLE),
                    &other,
                ),
            )
            .load_balanced(SVC6_TCP, E::NewFlow, None),
            s(
                "IPv6 ClientIP affinity: another source port, the same backend",
                tunnel6(NODE_A, &new_flow(flags::NEW_FLOW), &affinity.to_bytes()),
                lb_verdict_v6(
                    flags::NEW_FLOW,
                    SVC6_TCP_AFFINITY,
                    hashed_backend_v6(&affinity, hash_mode::CLIENT_IP),
                    &affinity,
                ),
            )
            .load_balanced(SVC6_TCP_AFFINITY, E::NewFlow, None),
            s(
                "IPv6 valid cookie wins over the hash",
                tunnel6(
                    NODE_A,
                    &talaria6(flags::COOKIE_VALID, 0, cookie),
                    &tcp.to_bytes(),
                ),
                lb_verdict_v6(flags::COOKIE_VALID, SVC6_TCP, cookie, &tcp),
            )
            .load_balanced(SVC6_TCP, E::CookieHit, None),
            s(
                "IPv6 stale cookie (removed backend): counted, rehashed, flagged a new flow",
                tunnel6(
                    NODE_A,
                    &talaria6(flags::COOKIE_VALID, 0, 999),
                    &tcp.to_bytes(),
                ),
                lb_verdict_v6(
                    flags::COOKIE_VALID | flags::NEW_FLOW,
                    SVC6_TCP,
                    hashed,
                    &tcp,
                ),
            )
            .load_balanced(SVC6_TCP, E::CookieStale, None),
            s(
                "IPv6 stale cookie (an IPv4 backend): counted, rehashed",
                tunnel6(
                    NODE_A,
                    &talaria6(flags::COOKIE_VALID, 0, 100),
                    &tcp.to_bytes(),
                ),
                lb_verdict_v6(
                    flags::COOKIE_VALID | flags::NEW_FLOW,
                    SVC6_TCP,
                    hashed,
                    &tcp,
                ),
            )
            .load_balanced(SVC6_TCP, E::CookieStale, None),
            s(
                "IPv6 request: the EXTERNAL and FRAG_PORTS flags a node sets are cleared",
                tunnel6(
                    NODE_A,
                    &new_flow(flags::NEW_FLOW | flags::EXTERNAL | flags::FRAG_PORTS),
                    &tcp.to_bytes(),
                ),
                lb_verdict_v6(flags::NEW_FLOW, SVC6_TCP, hashed, &tcp),
            )
            .load_balanced(SVC6_TCP, E::NewFlow, None),
            s(
                "IPv6 UDP without checksum keeps checksum 0",
                tunnel6(NODE_A, &new_flow(flags::NEW_FLOW), &udp_nocsum.to_bytes()),
                lb_verdict_v6(
                    flags::NEW_FLOW,
                    SVC6_UDP,
                    hashed_backend_v6(&udp_nocsum, hash_mode::CLIENT_IP),
                    &udp_nocsum,
                ),
            )
            .load_balanced(SVC6_UDP, E::NewFlow, None),
            s(
                "IPv6 UDP checksum that becomes 0 after DNAT is sent as 0xFFFF",
                tunnel6(NODE_A, &new_flow(flags::NEW_FLOW), &udp_zero.to_bytes()),
                lb_verdict_v6(flags::NEW_FLOW, SVC6_UDP, udp_zero_backend, &udp_zero),
            )
            .load_balanced(SVC6_UDP, E::NewFlow, None),
            s(
                "IPv6 TCP checksum that becomes 0 after DNAT stays 0x0000",
                tunnel6(NODE_A, &new_flow(flags::NEW_FLOW), &tcp_zero.to_bytes()),
                lb_verdict_v6(flags::NEW_FLOW, SVC6_TCP, tcp_zero_backend, &tcp_zero),
            )
            .load_balanced(SVC6_TCP, E::NewFlow, None),
            s(
                "IPv6 inner TCP checksum wrong on arrival stays wrong after DNAT",
                tunnel6(NODE_A, &new_flow(flags::NEW_FLOW), &bad_l4.0),
                reoriginated6(
                    backend_v6(hashed).2,
                    &talaria6(flags::NEW_FLOW | flags::COOKIE_VALID, SVC6_TCP, hashed),
                    &bad_l4.1,
                ),
            )
            .load_balanced(SVC6_TCP, E::NewFlow, None),
            s(
                "IPv6 no service for (VIP, port, proto)",
                tunnel6(
                    NODE_A,
                    &new_flow(flags::NEW_FLOW),
                    &Inner6::tcp(POD_A_V6, 40000, VIP6, 443).to_bytes(),
                ),
                drop(R::NoService),
            ),
            s(
                "IPv6 no service for the protocol (UDP to a TCP port)",
                tunnel6(
                    NODE_A,
                    &new_flow(flags::NEW_FLOW),
                    &Inner6::udp(POD_A_V6, 5353, VIP6, 80).to_bytes(),
                ),
                drop(R::NoService),
            ),
            s(
                "IPv6 bucket names a backend backend_v6 lacks",
                tunnel6(
                    NODE_A,
                    &new_flow(flags::NEW_FLOW),
                    &Inner6::tcp(POD_A_V6, 40000, VIP6, 82).to_bytes(),
                ),
                drop(R::NoBackend),
            )
            .load_balanced(SVC6_UNKNOWN_BACKEND, E::NewFlow, None),
            s(
                "IPv6 backend without a node (no agent): not served, no_backend",
                tunnel6(
                    NODE_A,
                    &new_flow(flags::NEW_FLOW),
                    &Inner6::tcp(POD_A_V6, 40000, VIP6, 83).to_bytes(),
                ),
                drop(R::NoBackend),
            )
            .load_balanced(SVC6_NO_NODE, E::NewFlow, None),
            s(
                "IPv6 inner with a Fragment header: unsupported_protocol",
                tunnel6(NODE_A, &new_flow(flags::NEW_FLOW), &fragment.to_bytes()),
                drop(R::UnsupportedProtocol),
            ),
            s(
                "IPv6 inner with a hop-by-hop options header: unsupported_protocol",
                tunnel6(NODE_A, &new_flow(flags::NEW_FLOW), &hop_by_hop.to_bytes()),
                drop(R::UnsupportedProtocol),
            ),
            s(
                "IPv6 inner ICMPv6 (echo request) to a VIP: unsupported_protocol",
                tunnel6(NODE_A, &new_flow(flags::NEW_FLOW), &ping.to_bytes()),
                drop(R::UnsupportedProtocol),
            ),
            s(
                "IPv6 ICMPv6 error behind a Fragment header, as a reply: unsupported_protocol",
                tunnel6(NODE_B, &ok_reply, &icmp6_error_fragment.to_bytes()),
                drop(R::UnsupportedProtocol),
            ),
            s(
                "IPv6 client's ICMPv6 error about a reply: to the backend its cookie names, \
                 inner destination and quoted source rewritten, ICMPv6 checksum updated",
                client_error6(&relay_opt(SVC6_TCP, 600), &reply_inner),
                relayed_error6,
            )
            .load_balanced(SVC6_TCP, E::CookieHit, None),
            s(
                "IPv6 client's ICMPv6 error about a reply, without a cookie: icmp_spoof",
                client_error6(&new_flow(flags::NEW_FLOW), &reply_inner),
                drop(R::IcmpSpoof),
            ),
            s(
                "IPv6 client's ICMPv6 error quoting a reply to another address: icmp_spoof",
                client_error6(
                    &relay_opt(SVC6_TCP, 600),
                    &Inner6::tcp(VIP6, 80, POD_B_V6, 40000),
                ),
                drop(R::IcmpSpoof),
            ),
            s(
                "IPv6 client's ICMPv6 error quoting another Service's reply than its cookie's: \
                 icmp_spoof",
                client_error6(
                    &relay_opt(SVC6_TCP, 600),
                    &Inner6::tcp(VIP6, 81, POD_A_V6, 40000),
                ),
                drop(R::IcmpSpoof),
            ),
            s(
                "IPv6 client's ICMPv6 error quoting a reply from no Service: no_service",
                client_error6(
                    &relay_opt(SVC6_TCP, 600),
                    &Inner6::tcp(VIP6, 443, POD_A_V6, 40000),
                ),
                drop(R::NoService),
            ),
            s(
                "IPv6 client's ICMPv6 error whose cookie names a gone backend: no_backend",
                client_error6(&relay_opt(SVC6_TCP, 999), &reply_inner),
                drop(R::NoBackend),
            )
            .load_balanced(SVC6_TCP, E::CookieStale, None),
            s(
                "IPv6 client's ICMPv6 error whose cookie names a backend without a node: \
                 no_backend",
                client_error6(
                    &relay_opt(SVC6_NO_NODE, 620),
                    &Inner6::tcp(VIP6, 83, POD_A_V6, 40000),
                ),
                drop(R::NoBackend),
            )
            .load_balanced(SVC6_NO_NODE, E::CookieHit, None),
            s(
                "IPv6 client's ICMPv6 error quoting a reply behind a Fragment header: \
                 unsupported_protocol",
                client_error6(&relay_opt(SVC6_TCP, 600), &fragmented_reply),
                drop(R::UnsupportedProtocol),
            ),
            s(
                "IPv6 client's ICMPv6 error quoting a cut-off reply (inside the ports): malformed",
                cut_error6,
                drop(R::Malformed),
            ),
            s(
                "IPv6 inner header cut short",
                tunnel6(NODE_A, &new_flow(flags::NEW_FLOW), &tcp.to_bytes()[..30]),
                drop(R::Malformed),
            ),
            s(
                "IPv6 inner TCP header cut short",
                tunnel6(NODE_A, &new_flow(flags::NEW_FLOW), &tcp.to_bytes()[..50]),
                drop(R::Malformed),
            ),
            s(
                "IPv6 tunnel from a node that is no peer on this port",
                tunnel6(NODE_C, &new_flow(flags::NEW_FLOW), &tcp.to_bytes()),
                drop(R::TunnelPeer),
            ),
            s(
                "IPv6 tunnel with the switch's address as its outer source",
                tunnel6(SWITCH2, &new_flow(flags::NEW_FLOW), &tcp.to_bytes()),
                drop(R::SpoofedSource),
            ),
            s(
                "IPv6 reply checked and re-originated towards the client's node (pod_node_v6)",
                tunnel6(NODE_B, &ok_reply, &reply_inner.to_bytes()),
                reoriginated6(NODE_A, &ok_reply, &reply_inner.to_bytes()),
            )
            .event(E::Reply),
            s(
                "IPv6 UDP reply to a client on node B",
                tunnel6(NODE_B, &reply_opt(SVC6_UDP, 600), &udp_reply.to_bytes()),
                reoriginated6(NODE_B, &reply_opt(SVC6_UDP, 600), &udp_reply.to_bytes()),
            )
            .event(E::Reply),
            s(
                "IPv6 forged reply: its source is another service's than its cookie's",
                tunnel6(
                    NODE_B,
                    &reply_opt(SVC6_TCP_AFFINITY, 600),
                    &reply_inner.to_bytes(),
                ),
                drop(R::ForgedReply),
            ),
            s(
                "IPv6 forged reply: from a source no service_v6 entry holds",
                tunnel6(
                    NODE_B,
                    &ok_reply,
                    &Inner6::tcp(VIP6, 443, POD_A_V6, 40000).to_bytes(),
                ),
                drop(R::ForgedReply),
            ),
            s(
                "IPv6 forged reply: the cookie names no backend of the service",
                tunnel6(NODE_B, &reply_opt(SVC6_TCP, 999), &reply_inner.to_bytes()),
                drop(R::ForgedReply),
            ),
            s(
                "IPv6 forged reply: the sender is not the backend's node",
                tunnel6(NODE_A, &reply_opt(SVC6_TCP, 600), &reply_inner.to_bytes()),
                drop(R::ForgedReply),
            ),
            s(
                "IPv6 reply to a client no pod_node_v6 prefix holds: no_client_node",
                tunnel6(NODE_B, &ok_reply, &stranger_reply.to_bytes()),
                drop(R::NoClientNode),
            ),
            s(
                "IPv6 backend's ICMPv6 error tunnelled as a reply: cookie and node checked, \
                 re-originated unchanged towards the client's node",
                tunnel6(NODE_B, &ok_reply, &icmp6_error),
                reoriginated6(NODE_A, &ok_reply, &icmp6_error),
            )
            .event(E::Reply),
            s(
                "IPv6 ICMPv6 error as a reply whose cookie names no backend of the service",
                tunnel6(NODE_B, &reply_opt(SVC6_TCP, 999), &icmp6_error),
                drop(R::ForgedReply),
            ),
            s(
                "IPv6 ICMPv6 error as a reply from a node that is not the backend's",
                tunnel6(NODE_A, &ok_reply, &icmp6_error),
                drop(R::ForgedReply),
            ),
            s(
                "IPv6 ICMPv6 error as a reply to a client no pod_node_v6 prefix holds: \
                 no_client_node",
                tunnel6(NODE_B, &ok_reply, &port_unreachable(STRANGER_V6)),
                drop(R::NoClientNode),
            ),
            s(
                "plain IPv6 TCP to an IPv6 Service address is routed, not balanced (no route)",
                {
                    let mut f = plain_v6(VIP6, 64);
                    f[off::OUTER_IP + 6] = IPPROTO_TCP;
                    f
                },
                drop(R::NoRoute),
            ),
            s(
                "plain IPv6 to a pod prefix is still routed",
                plain_v6(POD_B_V6, 64),
                Verdict::Forward {
                    port: 2,
                    bytes: Some(routed_v6(&plain_v6(POD_B_V6, 64), 2)),
                },
            ),
        ]
        .into_iter()
        .map(Step::Send),
    );
    steps
}

/// A connection keeps its backend while the pool changes, until the
/// backend's quarantine ends.
fn pool_change() -> Suite {
    let tcp = Inner::tcp(CLIENT, 40000, VIP_TCP, 80);
    let first = hashed_backend(CLIENT, 40000);
    // Every bucket now names another backend; the old one stays in
    // cookie_check (quarantine).
    let other = [100, 101, 102].into_iter().find(|b| *b != first).unwrap();
    let mut steps: Vec<Step> = (0..4u16)
        .map(|bucket| Step::Modify(build::bucket(SVC_TCP, bucket, other)))
        .collect();
    let cookied = |backend_id| lb_verdict(SWITCH, flags::COOKIE_VALID, SVC_TCP, backend_id, &tcp);
    steps.push(Step::Send(
        Scenario::new(
            "cookied packet keeps its backend after the pool changed",
            request(SWITCH, flags::COOKIE_VALID, first, &tcp),
            cookied(first),
        )
        .load_balanced(SVC_TCP, LbEvent::CookieHit, Some(first)),
    ));
    steps.push(Step::Send(
        Scenario::new(
            "a new flow with the same tuple takes the new pool",
            request(SWITCH, flags::NEW_FLOW, 0, &tcp),
            lb_forward(SVC_TCP, other, &tcp),
        )
        .load_balanced(SVC_TCP, LbEvent::NewFlow, Some(other)),
    ));
    // The backend goes while its cookie is still accepted: the cookie
    // names it, and the backend table has no entry for it.
    let (ip, port, node_ip) = backend(first);
    steps.push(Step::Delete(build::backend(first, ip, port, node_ip)));
    steps.push(Step::Send(
        Scenario::new(
            "a valid cookie naming a deleted backend",
            request(SWITCH, flags::COOKIE_VALID, first, &tcp),
            Verdict::Drop(DropReason::NoBackend),
        )
        .load_balanced(SVC_TCP, LbEvent::CookieHit, None),
    ));
    // Quarantine over: the cookie is stale now and the flow is rehashed.
    steps.push(Step::Delete(build::cookie(SVC_TCP, first)));
    steps.push(Step::Send(
        Scenario::new(
            "after quarantine the cookie is stale",
            request(SWITCH, flags::COOKIE_VALID, first, &tcp),
            lb_verdict(
                SWITCH,
                flags::COOKIE_VALID | flags::NEW_FLOW,
                SVC_TCP,
                other,
                &tcp,
            ),
        )
        .load_balanced(SVC_TCP, LbEvent::CookieStale, Some(other)),
    ));
    Suite {
        name: "pool change",
        ports: 2,
        setup: tables(),
        steps,
    }
}

/// A route to a port the switch has no interface for.
fn port_without_interface() -> Suite {
    let mut setup = tables();
    setup.push(build::route(
        build::prefix(Ipv4Addr::new(198, 51, 100, 0), 24),
        9,
        mac(1),
        mac(2),
    ));
    Suite {
        name: "port without interface",
        ports: 2,
        setup,
        steps: vec![Step::Send(Scenario::new(
            "route to port 9, which has no interface: lost, uncounted",
            plain(Ipv4Addr::new(198, 51, 100, 1), 64),
            Verdict::Lost,
        ))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_stay_out_of_the_rig_prefix() {
        let inside = |a: Ipv4Addr| u32::from(a) >> 8 == u32::from(RIG_PREFIX.addr) >> 8;
        for suite in suites() {
            for e in &suite.setup {
                if let Entry::Ipv4Route(r) = e {
                    assert!(!inside(r.key.dst_addr.addr), "{}: {e:?}", suite.name);
                }
            }
            for s in suite.scenarios() {
                if s.input.len() >= 34 && s.input[12..14] == [8, 0] {
                    let dst = Ipv4Addr::new(s.input[30], s.input[31], s.input[32], s.input[33]);
                    assert!(!inside(dst), "{}: {}", suite.name, s.name);
                }
            }
        }
    }

    #[test]
    fn zero_after_dnat_sums_to_zero() {
        let udp = zero_after_dnat(&Inner::udp(CLIENT, 5353, VIP_UDP, 53), 200);
        let out = dnat(&udp, 200).to_bytes();
        assert_eq!(word(&out, 20 + 6), 0xffff);
        let tcp = zero_after_dnat(&Inner::tcp(CLIENT, 40000, VIP_TCP, 80), 100);
        let out = dnat(&tcp, 100).to_bytes();
        assert_eq!(word(&out, 20 + 16), 0);
        assert!(checksums(&lb_frame(SWITCH, 0, SVC_TCP, 100, &out)).is_empty());
    }

    #[test]
    fn zero_after_dnat_v6_sums_to_zero() {
        let udp = zero_after_dnat_v6(&Inner6::udp(POD_A_V6, 5353, VIP6, 53), 600);
        assert_eq!(word(&dnat_v6(&udp, 600).to_bytes(), 40 + 6), 0xffff);
        let tcp = zero_after_dnat_v6(&Inner6::tcp(POD_A_V6, 40000, VIP6, 80), 601);
        let out = dnat_v6(&tcp, 601).to_bytes();
        assert_eq!(word(&out, 40 + 16), 0);
        let mut checked = Vec::new();
        packet_checksums_v6("", &out, &mut checked);
        assert!(checked.is_empty(), "{checked:?}");
    }

    #[test]
    fn icmp6_error_checksum_verifies_over_the_pseudo_header() {
        let quote = Inner6::tcp(POD_A_V6, 40000, VIP6, 80).to_bytes();
        let ip = Inner6::icmp6_error(VIP6, POD_A_V6, 1, 4, &quote[..48]).to_bytes();
        assert_eq!(
            (ip[6], ip.len(), &ip[40..42]),
            (IPPROTO_ICMPV6, 40 + 8 + 48, &[1, 4][..])
        );
        let mut summed = ip[8..40].to_vec();
        summed.extend_from_slice(&((ip.len() - 40) as u32).to_be_bytes());
        summed.extend_from_slice(&[0, 0, 0, IPPROTO_ICMPV6]);
        summed.extend_from_slice(&ip[40..]);
        assert_eq!(crate::testing::checksum(&summed, 0), 0);
    }

    #[test]
    fn expected_outputs_have_right_checksums_unless_the_input_had_wrong_ones() {
        for suite in suites() {
            for s in suite.scenarios() {
                if let Verdict::Forward {
                    bytes: Some(out), ..
                } = &s.verdict
                {
                    assert_eq!(
                        checksums(&s.input).is_empty(),
                        checksums(out).is_empty(),
                        "{}: {:?} / {:?}",
                        s.name,
                        checksums(&s.input),
                        checksums(out)
                    );
                }
            }
        }
    }
}
