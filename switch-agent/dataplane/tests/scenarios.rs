//! Table-driven packet scenarios through the real pipeline with
//! BPF_PROG_TEST_RUN: {description, input frame, expected verdict and
//! egress port, expected output frame, counter deltas}. Root only; each
//! test builds its own namespace with veth ports and tears it down.
//!
//! A forwarded packet's expected output is built from scratch in Rust
//! (fresh checksums everywhere), so comparing bytes also checks the
//! pipeline's incremental checksum updates.

use std::net::Ipv4Addr;
use talaria_preflight::{require, LOADS_BPF};

use talaria_common::{
    drop::{DropReason, LbEvent},
    hash::{hash_mode, FlowTuple},
    net::{IPPROTO_TCP, IPPROTO_UDP},
    wire::{flags, TalariaEncap},
};
use talaria_switch_dataplane::{
    testing::{self, eth, ipv4, mac, off, talaria, tunnel_frame, udp, Inner, TestSwitch, L4},
    CounterId, Dataplane, Entry, Ipv4Prefix, RouteAction, Target,
};

const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const SWITCH: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SWITCH2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 2);
const BLACKHOLE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const VIP_TCP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP_UDP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);
const SVC_TCP: u16 = 7;
const SVC_UDP: u16 = 8;
/// Buckets of SVC_TCP, by index.
const TCP_BUCKETS: [u32; 4] = [100, 101, 102, 100];

/// (backend id, ip, port, node).
const BACKENDS: [(u32, Ipv4Addr, u16, Ipv4Addr); 4] = [
    (100, Ipv4Addr::new(10, 244, 2, 5), 8080, NODE_B),
    (101, Ipv4Addr::new(10, 244, 2, 6), 8080, NODE_B),
    (102, Ipv4Addr::new(10, 244, 1, 9), 8080, NODE_A),
    (200, Ipv4Addr::new(10, 244, 2, 7), 5353, NODE_B),
];

fn route_mac(port: u16) -> ([u8; 6], [u8; 6]) {
    (mac(0x10 + port as u8), mac(0xa0 + port as u8))
}

fn prefix(a: Ipv4Addr, len: u8) -> Ipv4Prefix {
    Ipv4Prefix { addr: a, len }
}

/// The tables every scenario runs against.
fn install(dp: &Dataplane) {
    let forward = |port| {
        let (src_mac, dst_mac) = route_mac(port);
        RouteAction::Forward {
            port,
            src_mac,
            dst_mac,
        }
    };
    let mut entries = vec![
        Entry::Ipv4Route {
            dst: prefix(Ipv4Addr::new(192, 168, 1, 0), 24),
            action: forward(1),
        },
        Entry::Ipv4Route {
            dst: prefix(Ipv4Addr::new(192, 168, 2, 0), 24),
            action: forward(2),
        },
        Entry::Ipv4Route {
            dst: prefix(Ipv4Addr::new(203, 0, 113, 0), 24),
            action: RouteAction::Drop,
        },
        Entry::SwitchAddr { addr: SWITCH },
        Entry::SwitchAddr { addr: SWITCH2 },
        Entry::ServiceV4 {
            vip: VIP_TCP,
            port: 80,
            proto: IPPROTO_TCP,
            service_id: SVC_TCP,
            bucket_mask: 3,
            hash_mode: hash_mode::FIVE_TUPLE,
        },
        Entry::ServiceV4 {
            vip: VIP_UDP,
            port: 53,
            proto: IPPROTO_UDP,
            service_id: SVC_UDP,
            bucket_mask: 0,
            hash_mode: hash_mode::CLIENT_IP,
        },
        // A service whose buckets are empty, and one whose bucket names a
        // backend that is not in `backend`.
        Entry::ServiceV4 {
            vip: VIP_TCP,
            port: 81,
            proto: IPPROTO_TCP,
            service_id: 9,
            bucket_mask: 0,
            hash_mode: 0,
        },
        Entry::ServiceV4 {
            vip: VIP_TCP,
            port: 82,
            proto: IPPROTO_TCP,
            service_id: 10,
            bucket_mask: 0,
            hash_mode: 0,
        },
        Entry::LbBucket {
            service_id: 10,
            bucket: 0,
            backend_id: 555,
        },
        Entry::LbBucket {
            service_id: SVC_UDP,
            bucket: 0,
            backend_id: 200,
        },
        Entry::CookieCheck {
            service_id: SVC_UDP,
            backend_id: 200,
        },
        Entry::PodNode {
            dst: prefix(Ipv4Addr::new(10, 244, 1, 0), 24),
            node_ip: NODE_A,
        },
        Entry::PodNode {
            dst: prefix(Ipv4Addr::new(10, 244, 2, 0), 24),
            node_ip: NODE_B,
        },
    ];
    for (b, id) in TCP_BUCKETS.iter().enumerate() {
        entries.push(Entry::LbBucket {
            service_id: SVC_TCP,
            bucket: b as u16,
            backend_id: *id,
        });
    }
    for id in [100, 101, 102] {
        entries.push(Entry::CookieCheck {
            service_id: SVC_TCP,
            backend_id: id,
        });
    }
    for (backend_id, ip, port, node_ip) in BACKENDS {
        entries.push(Entry::Backend {
            backend_id,
            ip,
            port,
            node_ip,
        });
    }
    for e in &entries {
        dp.insert(e)
            .unwrap_or_else(|err| panic!("insert {e:?}: {err}"));
    }
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
        src: src.octets().into_be(),
        dst: VIP_TCP.octets().into_be(),
        proto: IPPROTO_TCP,
        src_port: sport.into(),
        dst_port: 80.into(),
    };
    TCP_BUCKETS[(t.hash() & 3) as usize]
}

trait IntoBe {
    fn into_be(self) -> talaria_common::be::Be32;
}
impl IntoBe for [u8; 4] {
    fn into_be(self) -> talaria_common::be::Be32 {
        talaria_common::be::Be32(self)
    }
}

/// A client packet to the TCP service, as a node sends it to `to`.
fn request(to: Ipv4Addr, flags: u8, cookie: u32, inner: &Inner) -> Vec<u8> {
    tunnel_frame(
        NODE_A,
        to,
        64,
        &talaria(flags, 0, cookie),
        &inner.to_bytes(),
    )
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
    let (ip, port, node) = backend(backend_id);
    let mut dnat = inner.clone();
    dnat.dst = ip;
    dnat.l4 = match inner.l4 {
        L4::Tcp { src, .. } => L4::Tcp { src, dst: port },
        L4::Udp { src, csum, .. } => L4::Udp {
            src,
            dst: port,
            csum,
        },
        other => other,
    };
    let geneve =
        TalariaEncap::new(in_flags | flags::COOKIE_VALID, service_id, backend_id).to_bytes();
    let (src_mac, dst_mac) = route_mac(node_port(node));
    let mut frame = tunnel_frame(from, node, 63, &geneve, &dnat.to_bytes());
    frame[0..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&src_mac);
    frame
}

#[derive(Debug)]
enum Verdict {
    /// Redirected out of `port`; the output must equal `bytes` if given.
    Forward {
        port: u16,
        bytes: Option<Vec<u8>>,
    },
    Drop(DropReason),
    /// Dropped with no drop reason counted (egress port without interface).
    Lost,
}

struct Scenario {
    name: &'static str,
    input: Vec<u8>,
    verdict: Verdict,
    /// Expected increments of the LB event counters.
    events: &'static [LbEvent],
    /// (service id, packets) increments of the service counter.
    service: Option<u16>,
    /// Backend whose direct counter must move by one.
    backend: Option<u32>,
}

#[derive(Debug, PartialEq, Eq, Clone)]
struct Snapshot {
    drops: Vec<u64>,
    events: Vec<u64>,
    services: Vec<u64>,
    backends: Vec<u64>,
    tx: Vec<u64>,
    /// Drops of packets from port 1 (where every scenario enters), by
    /// reason in `DropReason::ALL` order.
    port1_drops: Vec<u64>,
}

fn snapshot(dp: &Dataplane) -> Snapshot {
    let c = |id, i| dp.counter(id, i).unwrap().packets;
    let ports = dp.port_stats().unwrap();
    Snapshot {
        drops: (0..32).map(|i| c(CounterId::Drop, i)).collect(),
        events: (0..4).map(|i| c(CounterId::LbEvent, i)).collect(),
        services: [SVC_TCP, SVC_UDP, 9, 10]
            .iter()
            .map(|s| c(CounterId::Service, u32::from(*s)))
            .collect(),
        backends: BACKENDS
            .iter()
            .map(|b| dp.backend_counter(b.0).unwrap().packets)
            .collect(),
        tx: ports.iter().map(|p| p.tx.packets).collect(),
        port1_drops: ports[0].drops.iter().map(|(_, c)| c.packets).collect(),
    }
}

fn run(dp: &Dataplane, s: &Scenario) {
    let before = snapshot(dp);
    let out = dp
        .test_run(&s.input, Some(1))
        .unwrap_or_else(|e| panic!("{}: test run: {e}", s.name));
    let after = snapshot(dp);

    let mut want = before.clone();
    match &s.verdict {
        Verdict::Forward { port, bytes } => {
            assert_eq!(out.retval, TC_ACT_REDIRECT, "{}: verdict", s.name);
            want.tx[usize::from(*port) - 1] += 1;
            if let Some(bytes) = bytes {
                assert_eq!(hex(&out.data), hex(bytes), "{}: output frame", s.name);
            }
            check_checksums(s.name, &out.data);
        }
        Verdict::Drop(reason) => {
            assert_eq!(out.retval, TC_ACT_SHOT, "{}: verdict", s.name);
            want.drops[usize::from(reason.code())] += 1;
            let i = DropReason::ALL.iter().position(|r| r == reason).unwrap();
            want.port1_drops[i] += 1;
        }
        Verdict::Lost => assert_eq!(out.retval, TC_ACT_SHOT, "{}: verdict", s.name),
    }
    for e in s.events {
        want.events[*e as usize] += 1;
    }
    if let Some(svc) = s.service {
        let i = [SVC_TCP, SVC_UDP, 9, 10]
            .iter()
            .position(|x| *x == svc)
            .unwrap();
        want.services[i] += 1;
    }
    if let Some(b) = s.backend {
        let i = BACKENDS.iter().position(|x| x.0 == b).unwrap();
        want.backends[i] += 1;
    }
    assert_eq!(after, want, "{}: counter deltas", s.name);
}

/// Every IPv4 checksum in a forwarded frame is right, and so are the inner
/// L4 checksums of a tunnel.
fn check_checksums(name: &str, f: &[u8]) {
    let ihl = usize::from(f[off::OUTER_IP] & 0x0f) * 4;
    assert!(
        testing::ipv4_header_ok(&f[14..14 + ihl]),
        "{name}: outer IPv4 checksum"
    );
    let is_tunnel = f[23] == IPPROTO_UDP
        && ihl == 20
        && f[off::OUTER_UDP + 2..off::OUTER_UDP + 4] == [0x17, 0xc1];
    if !is_tunnel || talaria_common::wire::parse(&f[off::GENEVE..]).is_err() {
        return;
    }
    assert_eq!(
        &f[off::OUTER_UDP + 6..off::OUTER_UDP + 8],
        &[0, 0],
        "{name}: outer UDP checksum must be 0"
    );
    let inner = &f[off::INNER_IP..];
    let inner_ihl = usize::from(inner[0] & 0x0f) * 4;
    assert!(
        testing::ipv4_header_ok(&inner[..inner_ihl]),
        "{name}: inner IPv4 checksum"
    );
    let proto = inner[9];
    let src = Ipv4Addr::new(inner[12], inner[13], inner[14], inner[15]);
    let dst = Ipv4Addr::new(inner[16], inner[17], inner[18], inner[19]);
    let seg = &inner[inner_ihl..];
    let stored = |o: usize| u16::from_be_bytes([seg[o], seg[o + 1]]);
    match proto {
        IPPROTO_TCP => assert_eq!(
            stored(16),
            testing::l4_checksum(src, dst, proto, seg),
            "{name}: inner TCP checksum"
        ),
        IPPROTO_UDP if stored(6) != 0 => {
            let c = match testing::l4_checksum(src, dst, proto, seg) {
                0 => 0xffff,
                c => c,
            };
            assert_eq!(stored(6), c, "{name}: inner UDP checksum");
        }
        _ => {}
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join("")
}

/// A plain IPv4/UDP frame from node A to `dst`.
fn plain(dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    eth(
        mac(0xaa),
        mac(1),
        &ipv4(NODE_A, dst, ttl, IPPROTO_UDP, &udp(1234, 5678, b"plain")),
    )
}

fn plain_routed(dst: Ipv4Addr, ttl: u8, port: u16) -> Vec<u8> {
    let mut f = eth(
        route_mac(port).1,
        route_mac(port).0,
        &ipv4(
            NODE_A,
            dst,
            ttl - 1,
            IPPROTO_UDP,
            &udp(1234, 5678, b"plain"),
        ),
    );
    let c = testing::ipv4_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
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
    let c = testing::ipv4_checksum(&ip[..24]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    eth(mac(0xaa), mac(1), &ip)
}

fn plain_with_options_routed() -> Vec<u8> {
    let mut f = plain_with_options(63);
    f[0..6].copy_from_slice(&route_mac(2).1);
    f[6..12].copy_from_slice(&route_mac(2).0);
    f
}

fn scenarios() -> Vec<Scenario> {
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
    let reply = tunnel_frame(
        NODE_B,
        SWITCH,
        64,
        &talaria(flags::REPLY | flags::COOKIE_VALID, SVC_TCP, 100),
        &reply_inner.to_bytes(),
    );
    let mut reply_out = tunnel_frame(
        SWITCH,
        NODE_A,
        63,
        &talaria(flags::REPLY | flags::COOKIE_VALID, SVC_TCP, 100),
        &reply_inner.to_bytes(),
    );
    reply_out[0..6].copy_from_slice(&route_mac(1).1);
    reply_out[6..12].copy_from_slice(&route_mac(1).0);

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
    let mut inner_icmp = tcp.clone();
    inner_icmp.l4 = L4::Other(1);
    let mut bad_csum = plain(NODE_B, 64);
    bad_csum[24] ^= 0xff;
    let mut arp = eth([0xff; 6], mac(1), &[0u8; 28]);
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());

    vec![
        Scenario {
            name: "new TCP flow: bucket-hash backend, DNAT, cookie, outer to its node",
            input: request(SWITCH, flags::NEW_FLOW, 0, &tcp),
            verdict: Verdict::Forward {
                port: node_port(backend(new_backend).2),
                bytes: Some(expected_lb(
                    SWITCH,
                    flags::NEW_FLOW,
                    SVC_TCP,
                    new_backend,
                    &tcp,
                )),
            },
            events: &[LbEvent::NewFlow],
            service: Some(SVC_TCP),
            backend: Some(new_backend),
        },
        Scenario {
            name: "outer src is the switch address the tunnel came to",
            input: request(SWITCH2, flags::NEW_FLOW, 0, &tcp),
            verdict: Verdict::Forward {
                port: node_port(backend(new_backend).2),
                bytes: Some(expected_lb(
                    SWITCH2,
                    flags::NEW_FLOW,
                    SVC_TCP,
                    new_backend,
                    &tcp,
                )),
            },
            events: &[LbEvent::NewFlow],
            service: Some(SVC_TCP),
            backend: Some(new_backend),
        },
        Scenario {
            name: "valid cookie wins over the hash",
            input: request(SWITCH, flags::COOKIE_VALID, cookie, &tcp),
            verdict: Verdict::Forward {
                port: node_port(backend(cookie).2),
                bytes: Some(expected_lb(
                    SWITCH,
                    flags::COOKIE_VALID,
                    SVC_TCP,
                    cookie,
                    &tcp,
                )),
            },
            events: &[LbEvent::CookieHit],
            service: Some(SVC_TCP),
            backend: Some(cookie),
        },
        Scenario {
            name: "stale cookie (removed backend): counted, treated as a new flow",
            input: request(SWITCH, flags::COOKIE_VALID, 999, &tcp),
            verdict: Verdict::Forward {
                port: node_port(backend(new_backend).2),
                bytes: Some(expected_lb(
                    SWITCH,
                    flags::COOKIE_VALID,
                    SVC_TCP,
                    new_backend,
                    &tcp,
                )),
            },
            events: &[LbEvent::CookieStale],
            service: Some(SVC_TCP),
            backend: Some(new_backend),
        },
        Scenario {
            name: "stale cookie (backend of another service): counted, treated as a new flow",
            input: request(SWITCH, flags::COOKIE_VALID, 200, &tcp),
            verdict: Verdict::Forward {
                port: node_port(backend(new_backend).2),
                bytes: Some(expected_lb(
                    SWITCH,
                    flags::COOKIE_VALID,
                    SVC_TCP,
                    new_backend,
                    &tcp,
                )),
            },
            events: &[LbEvent::CookieStale],
            service: Some(SVC_TCP),
            backend: Some(new_backend),
        },
        Scenario {
            name: "UDP flow, ClientIP affinity, port rewritten, UDP checksum fixed",
            input: request(SWITCH, flags::NEW_FLOW, 0, &udp_flow),
            verdict: Verdict::Forward {
                port: 2,
                bytes: Some(expected_lb(
                    SWITCH,
                    flags::NEW_FLOW,
                    SVC_UDP,
                    200,
                    &udp_flow,
                )),
            },
            events: &[LbEvent::NewFlow],
            service: Some(SVC_UDP),
            backend: Some(200),
        },
        Scenario {
            name: "UDP without checksum keeps checksum 0",
            input: request(SWITCH, flags::NEW_FLOW, 0, &udp_nocsum),
            verdict: Verdict::Forward {
                port: 2,
                bytes: Some(expected_lb(
                    SWITCH,
                    flags::NEW_FLOW,
                    SVC_UDP,
                    200,
                    &udp_nocsum,
                )),
            },
            events: &[LbEvent::NewFlow],
            service: Some(SVC_UDP),
            backend: Some(200),
        },
        Scenario {
            name: "reply re-originated towards the client's node (pod_node)",
            input: reply,
            verdict: Verdict::Forward {
                port: 1,
                bytes: Some(reply_out),
            },
            events: &[LbEvent::Reply],
            service: None,
            backend: None,
        },
        Scenario {
            name: "reply for a pod no node hosts",
            input: tunnel_frame(
                NODE_B,
                SWITCH,
                64,
                &talaria(flags::REPLY, SVC_TCP, 100),
                &Inner::tcp(VIP_TCP, 80, Ipv4Addr::new(10, 250, 0, 1), 40000).to_bytes(),
            ),
            verdict: Verdict::Drop(DropReason::NoClientNode),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "reply with inner IPv4 options passes (no ports needed)",
            input: tunnel_frame(NODE_B, SWITCH, 64, &talaria(flags::REPLY, SVC_TCP, 100), &{
                let mut r = reply_inner.clone();
                r.options = vec![1, 1, 1, 0];
                r.to_bytes()
            }),
            verdict: Verdict::Forward {
                port: 1,
                bytes: None,
            },
            events: &[LbEvent::Reply],
            service: None,
            backend: None,
        },
        Scenario {
            name: "plain IPv4 routed with TTL decrement and MAC rewrite",
            input: plain(NODE_B, 64),
            verdict: Verdict::Forward {
                port: 2,
                bytes: Some(plain_routed(NODE_B, 64, 2)),
            },
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "plain IPv4 with TTL 2 still routed",
            input: plain(NODE_B, 2),
            verdict: Verdict::Forward {
                port: 2,
                bytes: Some(plain_routed(NODE_B, 2, 2)),
            },
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "plain IPv4 with TTL 1 dropped",
            input: plain(NODE_B, 1),
            verdict: Verdict::Drop(DropReason::TtlExpired),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "tunnel to the switch with TTL 1 is re-originated with TTL 64",
            input: tunnel_frame(
                NODE_A,
                SWITCH,
                1,
                &talaria(flags::NEW_FLOW, 0, 0),
                &tcp.to_bytes(),
            ),
            verdict: Verdict::Forward {
                port: node_port(backend(new_backend).2),
                bytes: Some(expected_lb(
                    SWITCH,
                    flags::NEW_FLOW,
                    SVC_TCP,
                    new_backend,
                    &tcp,
                )),
            },
            events: &[LbEvent::NewFlow],
            service: Some(SVC_TCP),
            backend: Some(new_backend),
        },
        Scenario {
            name: "plain IPv4 with options routed, checksum over the options kept right",
            input: plain_with_options(64),
            verdict: Verdict::Forward {
                port: 2,
                bytes: Some(plain_with_options_routed()),
            },
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "non-first outer fragment to the switch address is plain IPv4 (no route to it)",
            input: {
                let mut p = request(SWITCH, flags::NEW_FLOW, 0, &tcp);
                p[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
                let c = testing::ipv4_checksum(&p[14..34]);
                p[24..26].copy_from_slice(&c.to_be_bytes());
                p
            },
            verdict: Verdict::Drop(DropReason::NoRoute),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "no route",
            input: plain(Ipv4Addr::new(198, 51, 100, 1), 64),
            verdict: Verdict::Drop(DropReason::NoRoute),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "blackhole route (drop action) counts as no_route",
            input: plain(BLACKHOLE, 64),
            verdict: Verdict::Drop(DropReason::NoRoute),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "non-IPv4 (ARP) has no route",
            input: arp,
            verdict: Verdict::Drop(DropReason::NoRoute),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "bad outer IPv4 checksum is malformed",
            input: bad_csum,
            verdict: Verdict::Drop(DropReason::Malformed),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            // (A frame cut inside the IPv4 header cannot be test-run: the
            // kernel refuses it before the program runs.)
            name: "IPv4 header with ihl < 5 is malformed",
            input: {
                let mut p = plain(NODE_B, 64);
                p[14] = 0x44;
                p
            },
            verdict: Verdict::Drop(DropReason::Malformed),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "Geneve version 1",
            input: with(&|p| p[off::GENEVE] |= 0x40),
            verdict: Verdict::Drop(DropReason::GeneveVersion),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "Geneve protocol IPv6",
            input: with(&|p| p[off::GENEVE + 2..off::GENEVE + 4].copy_from_slice(&[0x86, 0xdd])),
            verdict: Verdict::Drop(DropReason::GeneveProtocol),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "Geneve without options",
            input: geneve_raw(&[0x00, 0x00, 0x08, 0x00, 0, 0, 0, 0]),
            verdict: Verdict::Drop(DropReason::MissingOption),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "unknown critical option first",
            input: geneve_raw(&[0x01, 0x40, 0x08, 0x00, 0, 0, 0, 0, 0x01, 0x02, 0x85, 0x00]),
            verdict: Verdict::Drop(DropReason::UnknownCriticalOption),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "unknown non-critical option first (P4 parses one option only)",
            input: geneve_raw(&{
                let mut g = vec![0x04, 0x40, 0x08, 0x00, 0, 0, 0, 0, 0x01, 0x02, 0x05, 0x00];
                g.extend_from_slice(&talaria(flags::NEW_FLOW, 0, 0)[8..]);
                g
            }),
            verdict: Verdict::Drop(DropReason::MissingOption),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "Talaria option length field 3 words",
            input: with(&|p| p[off::OPT + 3] = 3),
            verdict: Verdict::Drop(DropReason::OptionLength),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "Geneve option area longer than the Talaria option",
            input: geneve_raw(&{
                let mut g = talaria(flags::NEW_FLOW, 0, 0);
                g[0] = 4;
                g.extend_from_slice(&[0x01, 0x02, 0x05, 0x00]);
                g
            }),
            verdict: Verdict::Drop(DropReason::OptionLength),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "Talaria version 2",
            input: with(&|p| p[off::OPT + 4] = 2),
            verdict: Verdict::Drop(DropReason::TalariaVersion),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "truncated inside the Talaria option",
            input: request(SWITCH, flags::NEW_FLOW, 0, &tcp)[..off::OPT + 8].to_vec(),
            verdict: Verdict::Drop(DropReason::Malformed),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "truncated inner TCP header",
            input: request(SWITCH, flags::NEW_FLOW, 0, &tcp)[..off::INNER_L4 + 10].to_vec(),
            verdict: Verdict::Drop(DropReason::Malformed),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "malformed Geneve in transit is routed untouched but for TTL and MACs",
            input: tunnel_frame(
                NODE_A,
                NODE_B,
                64,
                &[0xc0, 0, 0, 0, 0, 0, 0, 0],
                &tcp.to_bytes(),
            ),
            verdict: Verdict::Forward {
                port: 2,
                bytes: None,
            },
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "inner IPv4 options on the load-balanced path",
            input: request(SWITCH, flags::NEW_FLOW, 0, &inner_opts),
            verdict: Verdict::Drop(DropReason::IpOptions),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "inner fragment (MF) on the load-balanced path",
            input: request(SWITCH, flags::NEW_FLOW, 0, &inner_frag),
            verdict: Verdict::Drop(DropReason::Fragment),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "inner ICMP on the load-balanced path",
            input: request(SWITCH, flags::NEW_FLOW, 0, &inner_icmp),
            verdict: Verdict::Drop(DropReason::UnsupportedProtocol),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "no service for (VIP, port, proto)",
            input: request(
                SWITCH,
                flags::NEW_FLOW,
                0,
                &Inner::tcp(CLIENT, 40000, VIP_TCP, 443),
            ),
            verdict: Verdict::Drop(DropReason::NoService),
            events: &[],
            service: None,
            backend: None,
        },
        Scenario {
            name: "empty bucket",
            input: request(
                SWITCH,
                flags::NEW_FLOW,
                0,
                &Inner::tcp(CLIENT, 40000, VIP_TCP, 81),
            ),
            verdict: Verdict::Drop(DropReason::NoBucket),
            events: &[LbEvent::NewFlow],
            service: Some(9),
            backend: None,
        },
        Scenario {
            name: "bucket names an unknown backend",
            input: request(
                SWITCH,
                flags::NEW_FLOW,
                0,
                &Inner::tcp(CLIENT, 40000, VIP_TCP, 82),
            ),
            verdict: Verdict::Drop(DropReason::NoBackend),
            events: &[LbEvent::NewFlow],
            service: Some(10),
            backend: None,
        },
    ]
}

#[test]
fn packet_scenarios() {
    require!(LOADS_BPF);
    let sw = TestSwitch::new("scen", 2);
    install(sw.dp());
    for s in scenarios() {
        run(sw.dp(), &s);
    }
}

#[test]
fn cookie_survives_pool_change() {
    require!(LOADS_BPF);
    let sw = TestSwitch::new("pool", 2);
    let dp = sw.dp();
    install(dp);
    let tcp = Inner::tcp(CLIENT, 40000, VIP_TCP, 80);
    let first = hashed_backend(CLIENT, 40000);
    // The pool changes: every bucket now names another backend; the old
    // one stays in cookie_check (quarantine).
    let other = [100, 101, 102].into_iter().find(|b| *b != first).unwrap();
    for b in 0..4u16 {
        dp.modify(&Entry::LbBucket {
            service_id: SVC_TCP,
            bucket: b,
            backend_id: other,
        })
        .unwrap();
    }
    run(
        dp,
        &Scenario {
            name: "cookied packet keeps its backend after the pool changed",
            input: request(SWITCH, flags::COOKIE_VALID, first, &tcp),
            verdict: Verdict::Forward {
                port: node_port(backend(first).2),
                bytes: Some(expected_lb(
                    SWITCH,
                    flags::COOKIE_VALID,
                    SVC_TCP,
                    first,
                    &tcp,
                )),
            },
            events: &[LbEvent::CookieHit],
            service: Some(SVC_TCP),
            backend: Some(first),
        },
    );
    run(
        dp,
        &Scenario {
            name: "a new flow with the same tuple takes the new pool",
            input: request(SWITCH, flags::NEW_FLOW, 0, &tcp),
            verdict: Verdict::Forward {
                port: node_port(backend(other).2),
                bytes: Some(expected_lb(SWITCH, flags::NEW_FLOW, SVC_TCP, other, &tcp)),
            },
            events: &[LbEvent::NewFlow],
            service: Some(SVC_TCP),
            backend: Some(other),
        },
    );
    // Quarantine over: the cookie is stale now and the flow is rehashed.
    dp.delete(&Entry::CookieCheck {
        service_id: SVC_TCP,
        backend_id: first,
    })
    .unwrap();
    run(
        dp,
        &Scenario {
            name: "after quarantine the cookie is stale",
            input: request(SWITCH, flags::COOKIE_VALID, first, &tcp),
            verdict: Verdict::Forward {
                port: node_port(backend(other).2),
                bytes: Some(expected_lb(
                    SWITCH,
                    flags::COOKIE_VALID,
                    SVC_TCP,
                    other,
                    &tcp,
                )),
            },
            events: &[LbEvent::CookieStale],
            service: Some(SVC_TCP),
            backend: Some(other),
        },
    );
}

#[test]
fn egress_port_without_interface_loses_the_packet_uncounted() {
    require!(LOADS_BPF);
    let sw = TestSwitch::new("lost", 2);
    let dp = sw.dp();
    install(dp);
    dp.insert(&Entry::Ipv4Route {
        dst: prefix(Ipv4Addr::new(198, 51, 100, 0), 24),
        action: RouteAction::Forward {
            port: 9,
            src_mac: mac(1),
            dst_mac: mac(2),
        },
    })
    .unwrap();
    run(
        dp,
        &Scenario {
            name: "route to port 9, which has no interface",
            input: plain(Ipv4Addr::new(198, 51, 100, 1), 64),
            verdict: Verdict::Lost,
            events: &[],
            service: None,
            backend: None,
        },
    );
}
