//! Packet scenarios for both node programs through `BPF_PROG_TEST_RUN`:
//! a table-like series of {input packet, verdict, output packet, map
//! state}. Root-only (loading programs needs CAP_BPF); skipped otherwise.
//!
//! `BPF_PROG_TEST_RUN` runs the program on a fake skb whose device is `lo`
//! (ifindex 1), so the test pods are registered on ifindex 1; redirects
//! are returned as `TC_ACT_REDIRECT` without being carried out.

use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;
use std::net::{Ipv4Addr, Ipv6Addr};
use talaria_preflight::{require, LOADS_BPF};

use aya::programs::{TestRun, TestRunOptions};
use talaria_common::{
    be::Be32,
    drop::DropReason,
    maps::{node_stat, ts_flags, CookieEntry, NodeConfig, PodEntry, ReverseEntry, HAIRPIN_SOURCE6},
    net::{tcp_flags, IPPROTO_TCP},
    ts_cookie::{self, cookie, CookieKey},
    wire::{flags, TalariaEncap, ENCAP_OVERHEAD, GENEVE_PROTO_IPV6, GENEVE_UDP_PORT},
};
use talaria_node::{
    config::ServiceConfig,
    node::{
        FlowTtl, Node, MAP_COOKIES, MAP_DROPS, MAP_PODS, MAP_PODS_V6, MAP_REVERSE, MAP_STATS,
        PROG_POD, PROG_UPLINK,
    },
    packet::{
        eth, eth6, ip_checksum_ok, ipv4, ipv4_tcp, ipv4_tcp_opts, ipv6, l4_checksum6_ok,
        l4_checksum_ok, talaria, Frame, Tuple, Tuple6,
    },
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 1);
const SWITCH_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const NODE_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const SWITCH_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
const REMOTE_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP_UDP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const POD_MAC: [u8; 6] = [2, 0, 0, 0, 2, 2];
const HOST_VETH_MAC: [u8; 6] = [2, 0, 0, 0, 3, 3];
const SVC_TCP: u16 = 7;
const SVC_UDP: u16 = 8;
/// Second Services (VIP2:8443) on the same backend as SVC_TCP and SVC_UDP.
const SVC2_TCP: u16 = 9;
const SVC2_UDP: u16 = 10;
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
/// A Service whose TCP 80 and UDP 53 have no usable endpoint.
const SVC_NO_ENDPOINTS: u16 = 11;
const VIP_NO_ENDPOINTS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 13);

fn node() -> Node {
    let mut n = Node::load(None, 4096).expect("load and verify the node programs");
    n.set_config(&NodeConfig {
        node_ip: Be32(NODE_IP.octets()),
        switch_ip: Be32(SWITCH_IP.octets()),
        uplink_ifindex: 1,
        node_mac: NODE_MAC,
        switch_mac: SWITCH_MAC,
        udp_idle_ns: 120_000_000_000,
        host_ifindex: 0,
        _pad: 0,
    })
    .unwrap();
    n.set_service_cidrs(&[(Ipv4Addr::new(10, 96, 0, 0).into(), 12)])
        .unwrap();
    let svc = |id, vip: Ipv4Addr, port, protocol: &str, reject| ServiceConfig {
        reject,
        ..ServiceConfig::new(id, vip, port, protocol)
    };
    n.set_services(&[
        svc(SVC_TCP, VIP, 80, "tcp", false),
        svc(SVC_UDP, VIP_UDP, 53, "udp", false),
        svc(SVC2_TCP, VIP2, 8443, "tcp", false),
        svc(SVC2_UDP, VIP2, 8443, "udp", false),
        svc(SVC_NO_ENDPOINTS, VIP_NO_ENDPOINTS, 80, "tcp", true),
        svc(SVC_NO_ENDPOINTS + 1, VIP_NO_ENDPOINTS, 53, "udp", true),
    ])
    .unwrap();
    let pod = PodEntry {
        ifindex: 1,
        mac: POD_MAC,
        host_mac: HOST_VETH_MAC,
    };
    n.set_pods(&[(CLIENT, pod), (BACKEND, pod)]).unwrap();
    n
}

/// Runs `prog` once on `pkt`: (verdict, output frame).
fn run(n: &Node, prog: &str, pkt: &[u8]) -> (u32, Vec<u8>) {
    test_run(n, prog, pkt, None)
}

/// Runs `prog` once on `pkt`, with a `__sk_buff` context in if given.
fn test_run(n: &Node, prog: &str, pkt: &[u8], ctx: Option<&[u8]>) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; pkt.len() + 256];
    let r = n
        .program(prog)
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            ctx_in: ctx,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

fn from_pod(t: Tuple, tcp: u8, payload: &[u8]) -> Vec<u8> {
    eth(HOST_VETH_MAC, POD_MAC, &ipv4(t, tcp, payload))
}

fn from_switch(outer_src: Ipv4Addr, enc: TalariaEncap, inner: &[u8]) -> Vec<u8> {
    talaria(NODE_MAC, SWITCH_MAC, outer_src, NODE_IP, enc, inner)
}

/// Checks the outer headers of an encapsulated frame and returns its
/// Talaria header and inner packet.
fn check_encap(out: &[u8], inner_len: usize) -> (TalariaEncap, Vec<u8>) {
    assert_eq!(
        out.len(),
        14 + inner_len + ENCAP_OVERHEAD,
        "grown by the encapsulation"
    );
    let f = Frame::parse(out);
    assert_eq!(
        (f.dst_mac, f.src_mac),
        (SWITCH_MAC, NODE_MAC),
        "MACs node → switch"
    );
    assert_eq!(
        (f.ip_src(), f.ip_dst()),
        (NODE_IP, SWITCH_IP),
        "outer node → switch"
    );
    assert!(ip_checksum_ok(&f.ip), "outer IPv4 checksum");
    assert_eq!(
        u16::from_be_bytes([f.ip[2], f.ip[3]]) as usize,
        f.ip.len(),
        "outer total length"
    );
    let t = f.tuple();
    assert_eq!(t.dport, GENEVE_UDP_PORT);
    assert!(t.sport >= 49152, "outer sport {} in 49152–65535", t.sport);
    assert_eq!(&f.ip[26..28], &[0, 0], "outer UDP checksum 0");
    assert_eq!(
        u16::from_be_bytes([f.ip[24], f.ip[25]]) as usize,
        f.ip.len() - 20,
        "outer UDP length"
    );
    let (enc, inner) = f.talaria().expect("a Talaria packet");
    enc.validate().expect("valid Talaria header");
    (enc, inner)
}

#[test]
fn encap_on_cache_miss_marks_new_flow() {
    require!(LOADS_BPF);
    let n = node();
    let t = Tuple::tcp(CLIENT, 40000, VIP, 80);
    let inner = ipv4(t, tcp_flags::SYN, b"");
    let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &inner));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (enc, got_inner) = check_encap(&out, inner.len());
    assert_eq!(enc.opt.flags, flags::NEW_FLOW);
    assert_eq!((enc.opt.service_id.get(), enc.opt.backend_id.get()), (0, 0));
    assert_eq!(got_inner, inner, "inner packet untouched");
    let s = n.stats().unwrap();
    assert_eq!(
        (
            s.event(node_stat::ENCAP),
            s.event(node_stat::CACHE_MISS),
            s.event(node_stat::CACHE_HIT)
        ),
        (1, 1, 0)
    );
}

#[test]
fn encap_on_cache_hit_carries_the_cookie() {
    require!(LOADS_BPF);
    let mut n = node();
    let t = Tuple::udp(CLIENT, 40001, VIP_UDP, 53);
    n.insert_cookie(
        &t.key(),
        &CookieEntry {
            service_id: SVC_UDP,
            backend_id: 42,
            ..Default::default()
        },
    )
    .unwrap();
    let inner = ipv4(t, 0, b"query");
    let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &inner));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (enc, got_inner) = check_encap(&out, inner.len());
    assert_eq!(enc.opt.flags, flags::COOKIE_VALID);
    assert_eq!(
        (enc.opt.service_id.get(), enc.opt.backend_id.get()),
        (SVC_UDP, 42)
    );
    assert_eq!(got_inner, inner);
    let s = n.stats().unwrap();
    assert_eq!(
        (
            s.event(node_stat::CACHE_HIT),
            s.event(node_stat::CACHE_MISS)
        ),
        (1, 0)
    );
    let cookies = n.cookies().unwrap();
    assert!(
        cookies[0].1.last_seen_ns > 0,
        "last use recorded for UDP idle expiry"
    );
}

#[test]
fn forged_encap_from_a_pod_is_dropped() {
    require!(LOADS_BPF);
    let n = node();
    let inner = ipv4(Tuple::tcp(CLIENT, 1, VIP, 80), tcp_flags::SYN, b"");
    let enc = TalariaEncap::new(flags::COOKIE_VALID | flags::REPLY, SVC_TCP, 1);
    // A pod hand-crafting Geneve/Talaria, to the switch and to anywhere.
    for dst in [SWITCH_IP, VIP, Ipv4Addr::new(10, 244, 2, 9)] {
        let forged = talaria(HOST_VETH_MAC, POD_MAC, CLIENT, dst, enc, &inner);
        let (verdict, _) = run(&n, PROG_POD, &forged);
        assert_eq!(verdict, TC_ACT_SHOT, "forged encapsulation to {dst}");
    }
    assert_eq!(n.stats().unwrap().dropped(DropReason::PodEncap), 3);
    assert_eq!(n.stats().unwrap().event(node_stat::ENCAP), 0);
}

#[test]
fn spoofed_source_is_dropped() {
    require!(LOADS_BPF);
    let n = node();
    for src in [Ipv4Addr::new(10, 244, 1, 99), REMOTE_CLIENT] {
        let (verdict, _) = run(
            &n,
            PROG_POD,
            &from_pod(Tuple::tcp(src, 40000, VIP, 80), tcp_flags::SYN, b""),
        );
        assert_eq!(verdict, TC_ACT_SHOT, "spoofed source {src}");
    }
    assert_eq!(n.stats().unwrap().dropped(DropReason::PodSpoof), 2);
    assert!(
        n.cookies().unwrap().is_empty(),
        "no state from spoofed packets"
    );
}

/// A pod's IPv6 passes untouched from the pod's own address (registered
/// on this veth, ifindex 1), `::` and link-local ones; from another veth's
/// pod or an unknown address it is `pod_spoof`.
#[test]
fn ipv6_sources_are_checked() {
    require!(LOADS_BPF);
    let mut n = node();
    let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
    let on = |ifindex| PodEntry {
        ifindex,
        mac: POD_MAC,
        host_mac: HOST_VETH_MAC,
    };
    n.set_pods_v6(&[(v6("fd00:244:1::2"), on(1)), (v6("fd00:244:1::3"), on(2))])
        .unwrap();
    // UDP with an empty payload to fd00:244:2::2.
    let frame = |src: Ipv6Addr| {
        let mut ip = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&v6("fd00:244:2::2").octets());
        ip.extend_from_slice(&[0x9c, 0x40, 0x14, 0xe9, 0, 8, 0, 0]);
        let mut f = eth(HOST_VETH_MAC, POD_MAC, &ip);
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        f
    };
    for src in ["fd00:244:1::2", "::", "fe80::1", "febf::1"] {
        let pkt = frame(v6(src));
        assert_eq!(run(&n, PROG_POD, &pkt), (TC_ACT_OK, pkt), "from {src}");
    }
    for src in ["fd00:244:1::3", "fd00:244:1::99", "fec0::1", "::1"] {
        assert_eq!(run(&n, PROG_POD, &frame(v6(src))).0, TC_ACT_SHOT, "{src}");
    }
    assert_eq!(n.stats().unwrap().dropped(DropReason::PodSpoof), 4);
    assert_eq!(total_drops(&n), 4, "nothing else dropped");
    // (A frame too short for the header, `malformed`, cannot be tested
    // here: BPF_PROG_TEST_RUN refuses such an IPv6 frame itself.)
}

#[test]
fn other_pod_traffic_passes_untouched() {
    require!(LOADS_BPF);
    let n = node();
    let pkt = from_pod(
        Tuple::tcp(CLIENT, 40000, REMOTE_CLIENT, 8080),
        tcp_flags::SYN,
        b"hi",
    );
    let (verdict, out) = run(&n, PROG_POD, &pkt);
    assert_eq!((verdict, out), (TC_ACT_OK, pkt));
    let arp = [
        vec![0xff; 6],
        POD_MAC.to_vec(),
        vec![0x08, 0x06],
        vec![0; 28],
    ]
    .concat();
    assert_eq!(run(&n, PROG_POD, &arp).0, TC_ACT_OK);
}

#[test]
fn decap_of_a_reply_learns_the_cookie() {
    require!(LOADS_BPF);
    let n = node();
    let client_flow = Tuple::tcp(CLIENT, 40000, VIP, 80);
    let reply = ipv4(client_flow.reversed(), tcp_flags::SYN | tcp_flags::ACK, b"");
    let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC_TCP, 42);
    let (verdict, out) = run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, enc, &reply));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let f = Frame::parse(&out);
    assert_eq!(f.ip, reply, "decapsulated to the inner packet");
    assert_eq!((f.dst_mac, f.src_mac), (POD_MAC, HOST_VETH_MAC));
    let cookies = n.cookies().unwrap();
    assert_eq!(cookies.len(), 1);
    assert_eq!(
        cookies[0].0,
        client_flow.key(),
        "keyed on the client's flow"
    );
    assert_eq!(
        (cookies[0].1.service_id, cookies[0].1.backend_id),
        (SVC_TCP, 42)
    );
    // The client's next packet carries the cookie.
    let (_, out) = run(
        &n,
        PROG_POD,
        &from_pod(client_flow, tcp_flags::ACK, b"GET /"),
    );
    let (enc, _) = check_encap(&out, ipv4(client_flow, tcp_flags::ACK, b"GET /").len());
    assert_eq!(
        (enc.opt.flags, enc.opt.backend_id.get()),
        (flags::COOKIE_VALID, 42)
    );
    let s = n.stats().unwrap();
    assert_eq!(
        (
            s.event(node_stat::DECAP),
            s.event(node_stat::COOKIE_LEARN),
            s.event(node_stat::CACHE_HIT)
        ),
        (1, 1, 1)
    );
}

#[test]
fn a_one_way_flows_notification_is_learned_and_not_delivered() {
    require!(LOADS_BPF);
    let n = node();
    let client_flow = Tuple::udp(CLIENT, 40000, VIP_UDP, 53);
    let notice = ipv4(client_flow.reversed(), 0, b"payload of the request");
    let enc = TalariaEncap::new(
        flags::REPLY | flags::COOKIE_VALID | flags::NOTIFY,
        SVC_UDP,
        42,
    );
    let (verdict, _) = run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, enc, &notice));
    assert_eq!(verdict, TC_ACT_SHOT, "the pod gets nothing");
    let cookies = n.cookies().unwrap();
    assert_eq!(cookies.len(), 1);
    assert_eq!(cookies[0].0, client_flow.key());
    assert_eq!(
        (cookies[0].1.service_id, cookies[0].1.backend_id),
        (SVC_UDP, 42)
    );
    let s = n.stats().unwrap();
    assert_eq!(
        (
            s.event(node_stat::NOTIFY_LEARNED),
            s.event(node_stat::DECAP)
        ),
        (1, 0)
    );
    assert!(
        s.drops.iter().all(|d| d.1 == 0),
        "not a drop: {:?}",
        s.drops
    );
    // The flow's next datagram carries the cookie.
    let (_, out) = run(&n, PROG_POD, &from_pod(client_flow, 0, b"more"));
    let (enc, _) = check_encap(&out, ipv4(client_flow, 0, b"more").len());
    assert_eq!(
        (enc.opt.flags, enc.opt.backend_id.get()),
        (flags::COOKIE_VALID, 42)
    );
}

#[test]
fn tunnel_from_anyone_but_the_switch_is_dropped() {
    require!(LOADS_BPF);
    let n = node();
    let inner = ipv4(Tuple::tcp(VIP, 80, CLIENT, 40000), tcp_flags::ACK, b"");
    let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC_TCP, 66);
    let (verdict, _) = run(
        &n,
        PROG_UPLINK,
        &from_switch(Ipv4Addr::new(10, 200, 2, 1), enc, &inner),
    );
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(n.stats().unwrap().dropped(DropReason::TunnelSource), 1);
    assert!(
        n.cookies().unwrap().is_empty(),
        "nothing learned from a forged tunnel"
    );
    // The switch's address from another MAC on the uplink's segment.
    let forged = talaria(
        NODE_MAC,
        [2, 0, 0, 0, 0, 0x66],
        SWITCH_IP,
        NODE_IP,
        enc,
        &inner,
    );
    assert_eq!(run(&n, PROG_UPLINK, &forged).0, TC_ACT_SHOT);
    assert_eq!(n.stats().unwrap().dropped(DropReason::TunnelSource), 2);
    assert!(n.cookies().unwrap().is_empty());
}

#[test]
fn malformed_or_misaddressed_tunnel_packets() {
    require!(LOADS_BPF);
    let n = node();
    let inner = ipv4(Tuple::tcp(VIP, 80, CLIENT, 40000), tcp_flags::ACK, b"");
    let mut bad = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC_TCP, 1);
    bad.geneve.ver_opt_len |= 0x40; // Geneve version 1
    assert_eq!(
        run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, bad, &inner)).0,
        TC_ACT_SHOT
    );
    assert_eq!(n.stats().unwrap().dropped(DropReason::GeneveVersion), 1);

    let to_nobody = ipv4(
        Tuple::tcp(VIP, 80, Ipv4Addr::new(10, 244, 1, 200), 40000),
        tcp_flags::ACK,
        b"",
    );
    let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC_TCP, 1);
    assert_eq!(
        run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, enc, &to_nobody)).0,
        TC_ACT_SHOT
    );
    assert_eq!(n.stats().unwrap().dropped(DropReason::UnknownPod), 1);

    // Plain UDP and tunnels addressed to someone else pass untouched.
    let plain = eth(
        NODE_MAC,
        SWITCH_MAC,
        &ipv4(Tuple::udp(SWITCH_IP, 5000, NODE_IP, 53), 0, b"x"),
    );
    assert_eq!(run(&n, PROG_UPLINK, &plain).0, TC_ACT_OK);
    let other = talaria(
        NODE_MAC,
        SWITCH_MAC,
        SWITCH_IP,
        Ipv4Addr::new(10, 200, 9, 9),
        enc,
        &inner,
    );
    assert_eq!(run(&n, PROG_UPLINK, &other).0, TC_ACT_OK);

    // A plain packet from a Service address never reaches a pod: a VIP's
    // replies come tunnelled.
    let from_vip = eth(
        NODE_MAC,
        SWITCH_MAC,
        &ipv4(Tuple::udp(VIP_UDP, 53, CLIENT, 40000), 0, b"forged"),
    );
    assert_eq!(run(&n, PROG_UPLINK, &from_vip).0, TC_ACT_SHOT);
    assert_eq!(n.stats().unwrap().dropped(DropReason::ServiceSource), 1);
}

/// Backend side: a request records the reverse-flow entry; the backend's
/// reply is reverse-NATed to VIP:port with valid checksums and sent with
/// REPLY | COOKIE_VALID.
fn reverse_nat_roundtrip(proto_tcp: bool) {
    let n = node();
    let (vip, port, svc) = if proto_tcp {
        (VIP, 80, SVC_TCP)
    } else {
        (VIP_UDP, 53, SVC_UDP)
    };
    let mk = |src, sp, dst, dp| {
        if proto_tcp {
            Tuple::tcp(src, sp, dst, dp)
        } else {
            Tuple::udp(src, sp, dst, dp)
        }
    };
    // After the switch's DNAT: remote client → backend pod:8080.
    let request = mk(REMOTE_CLIENT, 40000, BACKEND, 8080);
    let req = ipv4(request, tcp_flags::SYN, b"ping");
    let enc = TalariaEncap::new(flags::COOKIE_VALID, svc, 42);
    let (verdict, out) = run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, enc, &req));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(Frame::parse(&out).ip, req);
    let rev = n.reverse_flows().unwrap();
    assert_eq!(rev.len(), 1);
    assert_eq!(
        rev[0].0,
        request.reversed().key(),
        "keyed on backend → client"
    );
    assert_eq!(
        (rev[0].1.vip.0, rev[0].1.vip_port.get()),
        (vip.octets(), port)
    );
    assert_eq!((rev[0].1.service_id, rev[0].1.backend_id), (svc, 42));

    let reply = ipv4(
        request.reversed(),
        tcp_flags::SYN | tcp_flags::ACK,
        b"pong!",
    );
    let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &reply));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (enc, inner) = check_encap(&out, reply.len());
    assert_eq!(enc.opt.flags, flags::REPLY | flags::COOKIE_VALID);
    assert_eq!(
        (enc.opt.service_id.get(), enc.opt.backend_id.get()),
        (svc, 42)
    );
    let f = Frame {
        dst_mac: [0; 6],
        src_mac: [0; 6],
        ip: inner,
    };
    assert_eq!(
        f.tuple(),
        mk(vip, port, REMOTE_CLIENT, 40000),
        "source restored to VIP:port"
    );
    assert!(
        ip_checksum_ok(&f.ip),
        "inner IPv4 checksum after reverse NAT"
    );
    assert!(l4_checksum_ok(&f.ip), "inner L4 checksum after reverse NAT");
    assert_eq!(n.stats().unwrap().event(node_stat::REVERSE_NAT), 1);
}

/// Two Services share one backend, and one client reaches both from the
/// same source port: at the backend both flows are the same 4-tuple. The
/// first keeps it; the second gets a substitute client port, so the
/// backend sees two flows, each reply leaves from its own VIP to the
/// client's own port, and an RST ends only its own flow.
fn shared_backend_same_client_port(proto_tcp: bool) {
    let n = node();
    type MakeTuple = fn(Ipv4Addr, u16, Ipv4Addr, u16) -> Tuple;
    let (mk, syn, svc2): (MakeTuple, u8, u16) = if proto_tcp {
        (Tuple::tcp, tcp_flags::SYN, SVC2_TCP)
    } else {
        (Tuple::udp, 0, SVC2_UDP)
    };
    let (vip2, port2) = (VIP2, 8443);
    let first_svc = if proto_tcp { SVC_TCP } else { SVC_UDP };
    let (vip1, port1) = if proto_tcp { (VIP, 80) } else { (VIP_UDP, 53) };
    // After the switch's DNAT both arrive as REMOTE_CLIENT:40000 → BACKEND:8080.
    let request = mk(REMOTE_CLIENT, 40000, BACKEND, 8080);
    let req = ipv4(request, syn, b"one");
    let first = TalariaEncap::new(flags::COOKIE_VALID, first_svc, 42);
    let (_, out) = run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, first, &req));
    assert_eq!(Frame::parse(&out).ip, req, "the first flow keeps its port");

    let second = TalariaEncap::new(flags::COOKIE_VALID, svc2, 42);
    let (verdict, out) = run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, second, &req));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let seen = Frame::parse(&out);
    let subst = seen.tuple().sport;
    assert_ne!(subst, 40000, "the second flow's client port is replaced");
    assert!(
        (1024..32768).contains(&subst) || subst >= 61000,
        "substitutes stay out of the ephemeral range and the privileged ports: {subst}"
    );
    assert_eq!(seen.tuple(), mk(REMOTE_CLIENT, subst, BACKEND, 8080));
    assert!(ip_checksum_ok(&seen.ip) && l4_checksum_ok(&seen.ip));
    assert_eq!(n.stats().unwrap().event(node_stat::PORT_SUBST), 1);
    // Its next packet takes the same substitute, without a new one.
    let (_, out) = run(
        &n,
        PROG_UPLINK,
        &from_switch(SWITCH_IP, second, &ipv4(request, 0, b"again")),
    );
    assert_eq!(Frame::parse(&out).tuple().sport, subst);
    assert_eq!(n.stats().unwrap().event(node_stat::PORT_SUBST), 1);
    assert_eq!(n.reverse_flows().unwrap().len(), 2);

    // Each reply from its own VIP, to the client's own port.
    for (from_port, vip, port, svc) in [(40000, vip1, port1, first_svc), (subst, vip2, port2, svc2)]
    {
        let reply = ipv4(mk(BACKEND, 8080, REMOTE_CLIENT, from_port), 0, b"reply");
        let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &reply));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let (enc, inner) = check_encap(&out, reply.len());
        assert_eq!(enc.opt.service_id.get(), svc);
        let f = Frame {
            dst_mac: [0; 6],
            src_mac: [0; 6],
            ip: inner,
        };
        assert_eq!(f.tuple(), mk(vip, port, REMOTE_CLIENT, 40000));
        assert!(ip_checksum_ok(&f.ip) && l4_checksum_ok(&f.ip));
    }
    if proto_tcp {
        // An RST of the second flow ends it and frees its substitute; the
        // first flow is untouched.
        run(
            &n,
            PROG_UPLINK,
            &from_switch(SWITCH_IP, second, &ipv4(request, tcp_flags::RST, b"")),
        );
        let rev = n.reverse_flows().unwrap();
        assert_eq!(rev.len(), 1);
        assert_eq!(rev[0].1.service_id, first_svc);
    }
}

#[test]
fn two_services_sharing_a_backend_from_one_tcp_client_port() {
    require!(LOADS_BPF);
    shared_backend_same_client_port(true);
}

#[test]
fn two_services_sharing_a_backend_from_one_udp_client_port() {
    require!(LOADS_BPF);
    shared_backend_same_client_port(false);
}

/// A UDP reply bigger than the backend pod's MTU leaves it in fragments:
/// the first is reverse-NATed as usual, the others (no ports) get the same
/// source and cookie from the first, and the client's node delivers them
/// all.
#[test]
fn fragmented_udp_reply_is_reverse_natted_whole() {
    require!(LOADS_BPF);
    let n = node();
    let request = Tuple::udp(REMOTE_CLIENT, 40020, BACKEND, 5353);
    let enc = TalariaEncap::new(flags::COOKIE_VALID, SVC_UDP, 42);
    run(
        &n,
        PROG_UPLINK,
        &from_switch(SWITCH_IP, enc, &ipv4(request, 0, b"q")),
    );
    let reply = ipv4(request.reversed(), 0, &[7u8; 3000]);
    let frags = talaria_node::packet::fragments(&reply, 0x1234, 1400);
    assert_eq!(frags.len(), 3);
    let mut got = Vec::new();
    for f in &frags {
        let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, f));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let (enc, inner) = check_encap(&out, f.len());
        assert_eq!(enc.opt.flags, flags::REPLY | flags::COOKIE_VALID);
        assert_eq!(
            (enc.opt.service_id.get(), enc.opt.backend_id.get()),
            (SVC_UDP, 42)
        );
        assert!(ip_checksum_ok(&inner));
        let g = Frame {
            dst_mac: [0; 6],
            src_mac: [0; 6],
            ip: inner.clone(),
        };
        assert_eq!(
            (g.ip_src(), g.ip_dst()),
            (VIP_UDP, REMOTE_CLIENT),
            "every fragment from the VIP"
        );
        got.push((out, inner));
    }
    // The first fragment carries the rewritten ports; all share one outer
    // source port (one ECMP path).
    assert_eq!(u16::from_be_bytes([got[0].1[20], got[0].1[21]]), 53);
    let outer_sport = |f: &[u8]| u16::from_be_bytes([f[34], f[35]]);
    assert!(got
        .iter()
        .all(|(o, _)| outer_sport(o) == outer_sport(&got[0].0)));
    assert_eq!(n.stats().unwrap().event(node_stat::FRAGMENT_NAT), 2);

    // Client side (CLIENT is local here): every fragment is delivered
    // whole, and the first one teaches the cookie.
    let to_client = ipv4(Tuple::udp(VIP_UDP, 53, CLIENT, 40022), 0, &[9u8; 3000]);
    let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC_UDP, 42);
    for f in talaria_node::packet::fragments(&to_client, 0x4321, 1400) {
        let (verdict, out) = run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, enc, &f));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(Frame::parse(&out).ip, f, "delivered as sent");
    }
    let cookies = n.cookies().unwrap();
    assert_eq!(cookies.len(), 1);
    assert_eq!(cookies[0].0, Tuple::udp(CLIENT, 40022, VIP_UDP, 53).key());
}

/// A UDP request bigger than the pod's MTU (issue: fragmented requests):
/// its first fragment goes as any packet of its flow; the later ones, which
/// have no ports, go with the same cookie, or without one with the ports
/// in the option (`FRAG_PORTS`), on the same outer source port. The
/// backend's node delivers them all.
#[test]
fn fragmented_udp_request_goes_whole_to_one_backend() {
    require!(LOADS_BPF);
    let n = node();
    let send = |t: Tuple, id: u16| {
        let big = ipv4(t, 0, &[1u8; 3000]);
        let frags = talaria_node::packet::fragments(&big, id, 1400);
        assert_eq!(frags.len(), 3);
        frags
            .iter()
            .map(|f| {
                let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, f));
                assert_eq!(verdict, TC_ACT_REDIRECT);
                let (enc, inner) = check_encap(&out, f.len());
                assert_eq!(&inner, f, "sent as the pod sent it");
                let o = &enc.opt;
                (
                    o.flags,
                    o.service_id.get(),
                    o.backend_id.get(),
                    out[34..36].to_vec(),
                )
            })
            .collect::<Vec<_>>()
    };
    // A new flow: the ports ride in the later fragments' option.
    let sent = send(Tuple::udp(CLIENT, 40021, VIP_UDP, 53), 7);
    assert_eq!(sent[0].0, flags::NEW_FLOW);
    for later in &sent[1..] {
        assert_eq!(later.0, flags::NEW_FLOW | flags::FRAG_PORTS);
        assert_eq!(later.2, 40021 << 16 | 53, "source and destination port");
        assert_eq!(later.3, sent[0].3, "one outer source port");
    }
    // A flow with a cookie: every fragment carries it.
    let reply = ipv4(Tuple::udp(VIP_UDP, 53, CLIENT, 40023), 0, b"r");
    let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC_UDP, 42);
    run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, enc, &reply));
    let sent = send(Tuple::udp(CLIENT, 40023, VIP_UDP, 53), 8);
    assert!(sent
        .iter()
        .all(|(f, sid, bid, _)| (*f, *sid, *bid) == (flags::COOKIE_VALID, SVC_UDP, 42)));
    assert_eq!(n.stats().unwrap().event(node_stat::REQUEST_FRAGMENT), 4);
    // A later fragment whose first was never seen is dropped.
    let big = ipv4(Tuple::udp(CLIENT, 40024, VIP_UDP, 53), 0, &[1u8; 3000]);
    let orphan = &talaria_node::packet::fragments(&big, 9, 1400)[1];
    let (verdict, _) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, orphan));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(n.stats().unwrap().dropped(DropReason::Fragment), 1);

    // Backend side: the switch's DNATed fragments are all delivered, the
    // first one learning the flow.
    let request = ipv4(
        Tuple::udp(REMOTE_CLIENT, 40025, BACKEND, 5353),
        0,
        &[2u8; 3000],
    );
    let enc = TalariaEncap::new(flags::COOKIE_VALID, SVC_UDP, 42);
    for f in talaria_node::packet::fragments(&request, 11, 1400) {
        let (verdict, out) = run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, enc, &f));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(Frame::parse(&out).ip, f, "delivered as it came");
    }
    assert!(n
        .reverse_flows()
        .unwrap()
        .iter()
        .any(|(k, _)| *k == Tuple::udp(BACKEND, 5353, REMOTE_CLIENT, 40025).key()));
}

#[test]
fn reverse_nat_on_tcp_reply() {
    require!(LOADS_BPF);
    reverse_nat_roundtrip(true);
}

#[test]
fn reverse_nat_on_udp_reply() {
    require!(LOADS_BPF);
    reverse_nat_roundtrip(false);
}

#[test]
fn rst_removes_flow_state_and_fin_is_recorded() {
    require!(LOADS_BPF);
    let mut n = node();
    let t = Tuple::tcp(CLIENT, 40002, VIP, 80);
    n.insert_cookie(
        &t.key(),
        &CookieEntry {
            service_id: SVC_TCP,
            backend_id: 5,
            ..Default::default()
        },
    )
    .unwrap();
    run(
        &n,
        PROG_POD,
        &from_pod(t, tcp_flags::FIN | tcp_flags::ACK, b""),
    );
    assert_eq!(
        n.cookies().unwrap()[0].1.fin_seen,
        talaria_common::maps::FIN_FROM_CLIENT
    );
    let (verdict, out) = run(&n, PROG_POD, &from_pod(t, tcp_flags::RST, b""));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (enc, _) = check_encap(&out, ipv4(t, tcp_flags::RST, b"").len());
    assert_eq!(
        enc.opt.backend_id.get(),
        5,
        "the RST itself still carries the cookie"
    );
    assert!(n.cookies().unwrap().is_empty(), "RST removed the cookie");

    // Backend side: an inbound RST removes the reverse-flow entry.
    let request = Tuple::tcp(REMOTE_CLIENT, 40003, BACKEND, 8080);
    let enc = TalariaEncap::new(flags::COOKIE_VALID, SVC_TCP, 42);
    run(
        &n,
        PROG_UPLINK,
        &from_switch(SWITCH_IP, enc, &ipv4(request, tcp_flags::SYN, b"")),
    );
    assert_eq!(n.reverse_flows().unwrap().len(), 1);
    run(
        &n,
        PROG_UPLINK,
        &from_switch(SWITCH_IP, enc, &ipv4(request, tcp_flags::RST, b"")),
    );
    assert!(n.reverse_flows().unwrap().is_empty());
    assert_eq!(n.stats().unwrap().event(node_stat::FLOW_RESET), 2);
}

/// A 4-tuple reused by a new connection: the client's SYN is balanced
/// afresh (the old cookie is not reused), and the backend side's entry
/// forgets the old connection's FINs, so the FIN-grace GC cannot end the
/// new connection.
#[test]
fn a_new_connection_on_a_reused_tuple_starts_clean() {
    require!(LOADS_BPF);
    let mut n = node();
    let t = Tuple::tcp(CLIENT, 40010, VIP, 80);
    n.insert_cookie(
        &t.key(),
        &CookieEntry {
            service_id: SVC_TCP,
            backend_id: 5,
            fin_seen: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let (_, out) = run(&n, PROG_POD, &from_pod(t, tcp_flags::SYN, b""));
    let (enc, _) = check_encap(&out, ipv4(t, tcp_flags::SYN, b"").len());
    assert_eq!(enc.opt.flags, flags::NEW_FLOW, "a SYN is a new flow");
    assert!(n.cookies().unwrap().is_empty(), "the old cookie is gone");

    let request = Tuple::tcp(REMOTE_CLIENT, 40011, BACKEND, 8080);
    let enc = TalariaEncap::new(flags::COOKIE_VALID, SVC_TCP, 42);
    let send = |fl: u8| {
        run(
            &n,
            PROG_UPLINK,
            &from_switch(SWITCH_IP, enc, &ipv4(request, fl, b"")),
        )
    };
    send(tcp_flags::SYN);
    send(tcp_flags::FIN | tcp_flags::ACK);
    // The backend's FIN acknowledges the client's (sequence number 1000).
    let reply = Tuple::tcp(BACKEND, 8080, REMOTE_CLIENT, 40011);
    let fin = ipv4_tcp(reply, tcp_flags::FIN | tcp_flags::ACK, (5000, 1001), b"");
    run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &fin));
    assert_eq!(n.reverse_flows().unwrap()[0].1.fin_seen, 3);
    send(tcp_flags::SYN);
    assert_eq!(
        n.reverse_flows().unwrap()[0].1.fin_seen,
        0,
        "the new connection's SYN cleared the old FINs"
    );
}

/// When the backend closes first it holds the 4-tuple in TIME_WAIT, so the
/// flow's reverse entry stays that long: another Service's flow is not
/// given the 4-tuple meanwhile (it gets a substitute port). When the
/// client closed first, the entry goes with the FIN grace, and another
/// Service's flow may take the 4-tuple over at once.
#[test]
fn a_backend_that_closed_first_keeps_its_4_tuple_for_its_time_wait() {
    require!(LOADS_BPF);
    let mut n = node();
    let ttl = FlowTtl::from_secs(120, 10, 65);
    let send = |n: &Node, port: u16, svc: u16, fl: u8| {
        let enc = TalariaEncap::new(flags::COOKIE_VALID, svc, 42);
        let t = Tuple::tcp(REMOTE_CLIENT, port, BACKEND, 8080);
        run(
            n,
            PROG_UPLINK,
            &from_switch(SWITCH_IP, enc, &ipv4(t, fl, b"")),
        )
    };
    // The backend's FIN, acknowledging `ack` (the client's FIN, sequence
    // number 1000 and no payload, is covered by 1001).
    let backend_fin = |n: &Node, port: u16, ack: u32| {
        let reply = Tuple::tcp(BACKEND, 8080, REMOTE_CLIENT, port);
        let fin = ipv4_tcp(reply, tcp_flags::FIN | tcp_flags::ACK, (5000, ack), b"");
        run(n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &fin));
    };
    let subst = |n: &Node| n.stats().unwrap().event(node_stat::PORT_SUBST);
    // Backend first on port 40012, client first on 40013, both at once on
    // 40014 (the client's FIN goes by first, but the backend's does not
    // acknowledge it: it was sent before the backend took the client's in,
    // and the backend ends in TIME_WAIT as after an active close).
    send(&n, 40012, SVC_TCP, tcp_flags::SYN);
    backend_fin(&n, 40012, 1000);
    send(&n, 40012, SVC_TCP, tcp_flags::FIN | tcp_flags::ACK);
    send(&n, 40013, SVC_TCP, tcp_flags::SYN);
    send(&n, 40013, SVC_TCP, tcp_flags::FIN | tcp_flags::ACK);
    backend_fin(&n, 40013, 1001);
    send(&n, 40013, SVC_TCP, tcp_flags::ACK);
    send(&n, 40014, SVC_TCP, tcp_flags::SYN);
    send(&n, 40014, SVC_TCP, tcp_flags::FIN | tcp_flags::ACK);
    backend_fin(&n, 40014, 1000);
    send(&n, 40014, SVC_TCP, tcp_flags::ACK);
    // Client first on 40015 too, but its last ACK has not come by: the
    // backend is still in LAST_ACK.
    send(&n, 40015, SVC_TCP, tcp_flags::SYN);
    send(&n, 40015, SVC_TCP, tcp_flags::FIN | tcp_flags::ACK);
    backend_fin(&n, 40015, 1001);

    // Another Service's flows on the four 4-tuples: only the second may
    // take its 4-tuple over.
    let sport = |port| {
        let (verdict, out) = send(&n, port, SVC2_TCP, tcp_flags::SYN);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        Frame::parse(&out).tuple().sport
    };
    assert_ne!(sport(40012), 40012, "the backend's TIME_WAIT is kept clear");
    assert_eq!(subst(&n), 1);
    assert_eq!(sport(40013), 40013, "taken over");
    assert_eq!(subst(&n), 1);
    assert_ne!(sport(40014), 40014, "a simultaneous close");
    assert_ne!(sport(40015), 40015, "the backend's LAST_ACK");
    assert_eq!(subst(&n), 3);

    // The GC keeps the backend-first entry past the FIN grace.
    let t0 = talaria_node::node::monotonic_ns();
    n.gc(t0 + 30_000_000_000, &ttl).unwrap();
    let finished: std::collections::BTreeSet<u16> = n
        .reverse_flows()
        .unwrap()
        .iter()
        .filter(|(_, e)| talaria_common::maps::finished(e.fin_seen))
        .map(|(k, _)| k.dst_port.get())
        .collect();
    assert_eq!(
        finished,
        [40012, 40014].into(),
        "kept for the backend's TIME_WAIT"
    );
    n.gc(t0 + 70_000_000_000, &ttl).unwrap();
    assert!(n
        .reverse_flows()
        .unwrap()
        .iter()
        .all(|(_, e)| !talaria_common::maps::finished(e.fin_seen)));
}

/// A client port that was another client port's substitute (clients may
/// use any port): once that flow is over, a new flow from the port gets a
/// fresh entry. Reusing the old one kept its "substitute for" port, sent
/// the new flow's SYN-ACK to the old port, and the old flow's late RST
/// then removed the new flow's entry (the lab's short-connection test lost
/// about one connection in 50 runs this way).
#[test]
fn a_port_that_was_a_substitute_is_a_new_flows_own() {
    require!(LOADS_BPF);
    let n = node();
    let request = |port: u16, svc: u16, fl: u8, seq: u32| {
        let enc = TalariaEncap::new(flags::COOKIE_VALID, svc, 42);
        let t = Tuple::tcp(REMOTE_CLIENT, port, BACKEND, 8080);
        let p = ipv4_tcp(t, fl, (seq, 0), b"");
        let (verdict, out) = run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, enc, &p));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        Frame::parse(&out).tuple().sport
    };
    // The pod's segment to the client's port as it sees it: the client's
    // port it reaches after the reverse NAT.
    let from_backend = |seen: u16, fl: u8, ack: u32| {
        let t = Tuple::tcp(BACKEND, 8080, REMOTE_CLIENT, seen);
        let p = ipv4_tcp(t, fl, (5000, ack), b"");
        let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &p));
        assert_eq!(verdict, TC_ACT_REDIRECT, "reverse-NATed and tunnelled");
        let (_, inner) = Frame::parse(&out).talaria().unwrap();
        Frame::parse(&eth([0; 6], [0; 6], &inner)).tuple().dport
    };
    // Another Service's open flow holds 40020: this one gets a substitute.
    request(40020, SVC2_TCP, tcp_flags::SYN, 1);
    let subst = request(40020, SVC_TCP, tcp_flags::SYN, 1000);
    assert_ne!(subst, 40020);
    // It ends, the client first, and its last ACK goes by.
    request(40020, SVC_TCP, tcp_flags::FIN | tcp_flags::ACK, 1000);
    assert_eq!(
        from_backend(subst, tcp_flags::FIN | tcp_flags::ACK, 1001),
        40020
    );
    request(40020, SVC_TCP, tcp_flags::ACK, 1001);
    // A new flow from the client's port `subst` takes that 4-tuple: its
    // replies go back to `subst`, and stay so after a late RST of the old
    // flow.
    assert_eq!(request(subst, SVC_TCP, tcp_flags::SYN, 7000), subst);
    assert_eq!(
        from_backend(subst, tcp_flags::SYN | tcp_flags::ACK, 7001),
        subst
    );
    request(40020, SVC_TCP, tcp_flags::RST, 1001);
    assert_eq!(from_backend(subst, tcp_flags::ACK, 7001), subst);
}

/// One pod cannot take the flow tables from the others: beyond its share,
/// its new cookies are not cached (the flow goes on, balanced by hash) and
/// its new backend flows are refused; an RST or the end of a connection
/// gives a slot back, and the GC recount agrees with the programs' counts.
#[test]
fn each_pod_holds_at_most_its_share_of_the_flow_tables() {
    require!(LOADS_BPF);
    let mut n = node();
    n.set_pod_flow_limit(2).unwrap();
    let reply = |port: u16| {
        let t = Tuple::tcp(VIP, 80, CLIENT, port);
        let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC_TCP, 42);
        run(
            &n,
            PROG_UPLINK,
            &from_switch(
                SWITCH_IP,
                enc,
                &ipv4(t, tcp_flags::SYN | tcp_flags::ACK, b""),
            ),
        )
    };
    for port in [41000, 41001, 41002] {
        assert_eq!(
            reply(port).0,
            TC_ACT_REDIRECT,
            "replies are delivered regardless"
        );
    }
    assert_eq!(n.cookies().unwrap().len(), 2);
    assert_eq!(n.stats().unwrap().event(node_stat::COOKIE_REFUSED), 1);

    let request = |port: u16, fl: u8| {
        let t = Tuple::tcp(REMOTE_CLIENT, port, BACKEND, 8080);
        let enc = TalariaEncap::new(flags::COOKIE_VALID, SVC_TCP, 42);
        run(
            &n,
            PROG_UPLINK,
            &from_switch(SWITCH_IP, enc, &ipv4(t, fl, b"")),
        )
    };
    assert_eq!(request(42000, tcp_flags::SYN).0, TC_ACT_REDIRECT);
    assert_eq!(request(42001, tcp_flags::SYN).0, TC_ACT_REDIRECT);
    assert_eq!(
        request(42002, tcp_flags::SYN).0,
        TC_ACT_SHOT,
        "over its share"
    );
    assert_eq!(n.stats().unwrap().dropped(DropReason::FlowLimit), 1);
    assert_eq!(
        request(42000, 0).0,
        TC_ACT_REDIRECT,
        "established flows go on"
    );
    // An RST gives the slot back.
    request(42001, tcp_flags::RST);
    assert_eq!(request(42002, tcp_flags::SYN).0, TC_ACT_REDIRECT);
    // So does a finished connection, whose entry stays for the backend's
    // TIME_WAIT: the share counts open connections.
    request(42000, tcp_flags::FIN | tcp_flags::ACK);
    let backend_fin = Tuple::tcp(BACKEND, 8080, REMOTE_CLIENT, 42000);
    run(
        &n,
        PROG_POD,
        &from_pod(backend_fin, tcp_flags::FIN | tcp_flags::ACK, b""),
    );
    assert_eq!(request(42003, tcp_flags::SYN).0, TC_ACT_REDIRECT);
    assert_eq!(
        n.reverse_flows().unwrap().len(),
        3,
        "the finished entry stays"
    );
    // Reopening the finished 4-tuple is a new connection: over the share.
    assert_eq!(request(42000, tcp_flags::SYN).0, TC_ACT_SHOT);
    assert_eq!(n.stats().unwrap().dropped(DropReason::FlowLimit), 2);

    let counts = |n: &Node| {
        let mut v = n.pod_flows().unwrap();
        v.sort_by_key(|p| p.0);
        v.into_iter()
            .map(|(ip, c)| (ip, c.cookies, c.reverse))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&n), vec![(CLIENT, 2, 0), (BACKEND, 0, 2)]);
    n.gc(0, &FlowTtl::from_secs(u64::MAX, u64::MAX, u64::MAX))
        .unwrap();
    assert_eq!(
        counts(&n),
        vec![(CLIENT, 2, 0), (BACKEND, 0, 2)],
        "the GC recount agrees"
    );
}

#[test]
fn gc_removes_idle_udp_and_finished_tcp_flows() {
    require!(LOADS_BPF);
    let mut n = node();
    let udp = Tuple::udp(CLIENT, 40004, VIP_UDP, 53);
    let tcp_open = Tuple::tcp(CLIENT, 40005, VIP, 80);
    let tcp_done = Tuple::tcp(CLIENT, 40006, VIP, 80);
    let e = CookieEntry {
        service_id: 1,
        backend_id: 1,
        last_seen_ns: 1_000,
        ..Default::default()
    };
    n.insert_cookie(&udp.key(), &e).unwrap();
    n.insert_cookie(&tcp_open.key(), &e).unwrap();
    n.insert_cookie(&tcp_done.key(), &CookieEntry { fin_seen: 3, ..e })
        .unwrap();
    let ttl = FlowTtl {
        udp_idle_ns: 10_000,
        fin_grace_ns: 10_000,
        time_wait_ns: 10_000,
    };
    assert_eq!(n.gc(2_000, &ttl).unwrap(), (0, 0), "nothing idle yet");
    assert_eq!(n.gc(1_000_000, &ttl).unwrap(), (2, 0));
    let left: Vec<_> = n.cookies().unwrap().into_iter().map(|c| c.0).collect();
    assert_eq!(
        left,
        vec![tcp_open.key()],
        "an open TCP flow stays however idle"
    );
}

#[test]
fn icmp_error_from_a_backend_is_reverse_natted() {
    require!(LOADS_BPF);
    let n = node();
    let request = Tuple::tcp(REMOTE_CLIENT, 40000, BACKEND, 8080);
    let req = ipv4(request, tcp_flags::ACK, &[0u8; 1400]);
    let enc = TalariaEncap::new(flags::COOKIE_VALID, SVC_TCP, 42);
    assert_eq!(
        run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, enc, &req)).0,
        TC_ACT_REDIRECT
    );
    // The backend pod answers "fragmentation needed, MTU 1000" about it.
    let icmp = talaria_node::packet::icmp_error(BACKEND, REMOTE_CLIENT, 3, 4, 1000, &req);
    let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &icmp));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (enc, inner) = check_encap(&out, icmp.len());
    assert_eq!(enc.opt.flags, flags::REPLY | flags::COOKIE_VALID);
    assert_eq!(
        (enc.opt.service_id.get(), enc.opt.backend_id.get()),
        (SVC_TCP, 42)
    );
    let f = Frame {
        dst_mac: [0; 6],
        src_mac: [0; 6],
        ip: inner.clone(),
    };
    assert_eq!(
        (f.ip_src(), f.ip_dst()),
        (VIP, REMOTE_CLIENT),
        "error comes from the VIP"
    );
    assert!(ip_checksum_ok(&inner), "outer IPv4 checksum");
    assert!(
        talaria_node::packet::icmp_checksum_ok(&inner),
        "ICMP checksum"
    );
    let quoted = Frame {
        dst_mac: [0; 6],
        src_mac: [0; 6],
        ip: inner[28..].to_vec(),
    };
    assert_eq!(quoted.ip_dst(), VIP, "quoted destination is the VIP");
    assert_eq!(
        u16::from_be_bytes([quoted.ip[22], quoted.ip[23]]),
        80,
        "quoted port is the Service port"
    );
    assert!(ip_checksum_ok(&quoted.ip), "quoted IPv4 checksum");
    assert_eq!(u16::from_be_bytes([inner[26], inner[27]]), 1000, "MTU kept");

    // Another pod on the node may not speak for the flow.
    let other = talaria_node::packet::icmp_error(CLIENT, REMOTE_CLIENT, 3, 3, 0, &req);
    let (verdict, _) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &other));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(n.stats().unwrap().dropped(DropReason::IcmpSpoof), 1);

    // On the client's node the error is decapsulated and delivered.
    let client_side = talaria_node::packet::icmp_error(
        VIP,
        CLIENT,
        3,
        4,
        1000,
        &ipv4(Tuple::tcp(CLIENT, 40000, VIP, 80), 0, b""),
    );
    let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC_TCP, 42);
    let (verdict, out) = run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, enc, &client_side));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(Frame::parse(&out).ip, client_side);
    assert!(
        n.cookies().unwrap().is_empty(),
        "nothing learned from an ICMP error"
    );
}

/// `internalTrafficPolicy: Local` and topology hints: a new flow to a port
/// with preferred backends goes with one of them as its cookie, picked by
/// the flow's hash; a Local port with none here drops it.
#[test]
fn new_flows_go_to_the_preferred_backends_or_nowhere_when_local() {
    require!(LOADS_BPF);
    let mut n = node();
    let with = |id, vip, port, protocol: &str, preferred: Vec<u32>, local_only| ServiceConfig {
        preferred,
        local_only,
        ..ServiceConfig::new(id, vip, port, protocol)
    };
    n.set_services(&[
        with(SVC_TCP, VIP, 80, "tcp", vec![42, 43], true),
        with(SVC_UDP, VIP_UDP, 53, "udp", vec![], true),
    ])
    .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for sport in 40000..40032 {
        let syn = from_pod(Tuple::tcp(CLIENT, sport, VIP, 80), tcp_flags::SYN, b"");
        let (verdict, out) = run(&n, PROG_POD, &syn);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let (enc, _) = check_encap(&out, syn.len() - 14);
        assert_eq!(
            (enc.opt.flags, enc.opt.service_id.get()),
            (flags::COOKIE_VALID, SVC_TCP)
        );
        seen.insert(enc.opt.backend_id.get());
    }
    assert_eq!(
        seen,
        [42, 43].into(),
        "both preferred backends, nothing else"
    );
    assert_eq!(n.stats().unwrap().event(node_stat::PREFERRED), 32);
    let udp = from_pod(Tuple::udp(CLIENT, 5000, VIP_UDP, 53), 0, b"q");
    assert_eq!(run(&n, PROG_POD, &udp).0, TC_ACT_SHOT);
    assert_eq!(n.stats().unwrap().dropped(DropReason::NoLocalEndpoint), 1);
}

#[test]
fn icmp_error_from_a_client_about_a_reply_goes_to_its_backend() {
    require!(LOADS_BPF);
    use talaria_node::packet::{icmp_checksum_ok, icmp_error};
    let n = node();
    let dropped = |r| n.stats().unwrap().dropped(r);

    // Client side: a cached flow; its reply arrived after the socket closed.
    let client_flow = Tuple::tcp(CLIENT, 40000, VIP, 80);
    let reply = ipv4(client_flow.reversed(), tcp_flags::ACK, b"late");
    let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC_TCP, 42);
    run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, enc, &reply));
    let error = icmp_error(CLIENT, VIP, 3, 3, 0, &reply);
    let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &error));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (enc, inner) = check_encap(&out, error.len());
    assert_eq!(
        (
            enc.opt.flags,
            enc.opt.service_id.get(),
            enc.opt.backend_id.get()
        ),
        (flags::COOKIE_VALID, SVC_TCP, 42),
        "the flow's cookie takes it to the backend"
    );
    assert_eq!(inner, error, "the switch rewrites it, not the node");
    assert_eq!(n.stats().unwrap().event(node_stat::ICMP_RELAY), 1);

    // Errors about no flow of the pod, or about another pod's flow, are
    // spoofed; a ping to a VIP is not served.
    let no_flow = ipv4(Tuple::tcp(VIP, 80, CLIENT, 40001), tcp_flags::ACK, b"");
    let others = ipv4(Tuple::tcp(VIP, 80, BACKEND, 40000), tcp_flags::ACK, b"");
    for quoted in [&no_flow, &others] {
        let e = icmp_error(CLIENT, VIP, 3, 3, 0, quoted);
        assert_eq!(
            run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &e)).0,
            TC_ACT_SHOT
        );
    }
    assert_eq!(dropped(DropReason::IcmpSpoof), 2);
    let ping = icmp_error(CLIENT, VIP, 8, 0, 0, &reply);
    let (verdict, _) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &ping));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(dropped(DropReason::UnsupportedProtocol), 1);

    // Backend side: two Services' flows on one 4-tuple; the second has a
    // substitute client port.
    let request = Tuple::tcp(REMOTE_CLIENT, 40000, BACKEND, 8080);
    let req = ipv4(request, tcp_flags::SYN, b"");
    let first = TalariaEncap::new(flags::COOKIE_VALID, SVC_TCP, 42);
    let second = TalariaEncap::new(flags::COOKIE_VALID, SVC2_TCP, 42);
    run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, first, &req));
    let (_, out) = run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, second, &req));
    let subst = Frame::parse(&out).tuple().sport;
    assert_ne!(subst, 40000);
    // The switch relays the client's error with the quote as the backend
    // sent its reply, client port as the client knows it.
    let backend_reply = ipv4(request.reversed(), tcp_flags::ACK, b"");
    let relayed = icmp_error(REMOTE_CLIENT, BACKEND, 3, 3, 0, &backend_reply);
    let quoted_dport = |ip: &[u8]| u16::from_be_bytes([ip[50], ip[51]]);
    for (enc, port) in [(first, 40000), (second, subst)] {
        let (verdict, out) = run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, enc, &relayed));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let delivered = Frame::parse(&out).ip;
        assert_eq!(quoted_dport(&delivered), port, "the port the backend knows");
        assert!(icmp_checksum_ok(&delivered), "ICMP checksum");
        // All else as relayed (bytes 22..24: the ICMP checksum).
        assert_eq!(
            (&delivered[..22], &delivered[24..50]),
            (&relayed[..22], &relayed[24..50])
        );
    }
    // A cookie that names another backend, or a quote of another flow.
    let wrong_backend = TalariaEncap::new(flags::COOKIE_VALID, SVC_TCP, 43);
    let other_flow = icmp_error(
        REMOTE_CLIENT,
        BACKEND,
        3,
        3,
        0,
        &ipv4(Tuple::tcp(BACKEND, 8080, REMOTE_CLIENT, 40001), 0, b""),
    );
    for (enc, e) in [(wrong_backend, &relayed), (first, &other_flow)] {
        let (verdict, _) = run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, enc, e));
        assert_eq!(verdict, TC_ACT_SHOT);
    }
    assert_eq!(dropped(DropReason::IcmpSpoof), 4);
    assert_eq!(n.stats().unwrap().event(node_stat::ICMP_RELAY), 3);
}

/// `struct __sk_buff` as `BPF_PROG_TEST_RUN` takes it in `ctx_in` (192
/// bytes in this kernel's UAPI), with only `gso_segs` (offset 164) and
/// `gso_size` (offset 176) set: the kernel copies both into the test skb,
/// which makes it a GSO packet.
fn gso_ctx(gso_size: u32, gso_segs: u32) -> [u8; 192] {
    let mut ctx = [0u8; 192];
    ctx[164..168].copy_from_slice(&gso_segs.to_ne_bytes());
    ctx[176..180].copy_from_slice(&gso_size.to_ne_bytes());
    ctx
}

/// The frame a too-big packet `orig` (an IPv4 packet from `pod_mac` to
/// `host_mac`) must become: ICMP 3/4 from `orig`'s destination to its
/// source, next-hop MTU `mtu`, quoting `orig`'s header and first 8 L4
/// bytes; MACs swapped. Written out field by field.
fn expected_frag_needed(orig: &[u8], pod_mac: [u8; 6], host_mac: [u8; 6], mtu: u16) -> Vec<u8> {
    expected_unreachable(orig, pod_mac, host_mac, 4, mtu)
}

/// The ICMP destination-unreachable frame (type 3, `code`, next-hop MTU
/// `mtu` or 0) that replaces `orig`, as [`expected_frag_needed`] says.
fn expected_unreachable(
    orig: &[u8],
    pod_mac: [u8; 6],
    host_mac: [u8; 6],
    code: u8,
    mtu: u16,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&pod_mac); // to the pod
    f.extend_from_slice(&host_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![
        0x45, 0xc0, 0, 56, // version/IHL, TOS internetwork control, total 56
        0, 0, 0, 0, // id 0, no flags
        64, 1, 0, 0, // TTL 64, ICMP, checksum below
    ];
    ip.extend_from_slice(&orig[16..20]); // from the peer the pod addressed
    ip.extend_from_slice(&orig[12..16]); // to the pod
    let c = talaria_node::packet::ip_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut icmp = vec![3, code, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&orig[..28]);
    let c = talaria_node::packet::ip_checksum(&icmp); // same one's complement sum
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

#[test]
fn too_big_with_df_is_answered_with_icmp_frag_needed() {
    require!(LOADS_BPF);
    use talaria_common::maps::mtu_stat;
    let mut n = node();
    n.set_uplink_mtu(1500).unwrap();
    assert_eq!(n.uplink_mtu().unwrap(), 1500);
    let t = Tuple::tcp(CLIENT, 40010, VIP, 80);

    // 1452 bytes of IPv4 + 48 = 1500: fits exactly, encapsulated.
    let fits = ipv4(t, tcp_flags::ACK, &[0xab; 1452 - 40]);
    let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &fits));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (_, inner) = check_encap(&out, fits.len());
    assert_eq!(inner, fits);
    assert_eq!(out.len() - 14, 1500, "a full uplink-MTU packet");

    // One byte more, DF set (as every Linux TCP segment): ICMP 3/4 back to
    // the pod, next-hop MTU 1500 − 48.
    let big = ipv4(t, tcp_flags::ACK, &[0xab; 1452 - 40 + 1]);
    assert_eq!(big[6] & 0x40, 0x40, "DF set");
    let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &big));
    assert_eq!(verdict, TC_ACT_REDIRECT, "redirected back to the pod");
    let want = expected_frag_needed(&big, POD_MAC, HOST_VETH_MAC, 1452);
    assert_eq!(out, want, "exact ICMP fragmentation-needed frame");
    let f = Frame::parse(&out);
    assert_eq!(out.len(), 70);
    assert_eq!(
        (f.ip_src(), f.ip_dst()),
        (VIP, CLIENT),
        "from the VIP to the pod"
    );
    assert_eq!((f.ip[20], f.ip[21]), (3, 4), "type 3 code 4");
    assert_eq!(
        u16::from_be_bytes([f.ip[26], f.ip[27]]),
        1452,
        "next-hop MTU"
    );
    assert!(ip_checksum_ok(&f.ip), "IPv4 checksum");
    assert!(
        talaria_node::packet::icmp_checksum_ok(&f.ip),
        "ICMP checksum"
    );
    assert_eq!(&f.ip[28..], &big[..28], "quotes the header and 8 bytes");
    let s = n.stats().unwrap();
    assert_eq!(s.mtu_event(mtu_stat::FRAG_NEEDED), 1);
    assert_eq!(s.event(node_stat::ENCAP), 1, "only the packet that fit");
    assert_eq!(
        s.event(node_stat::CACHE_MISS),
        1,
        "the too-big packet never reached the cookie cache"
    );

    // UDP with DF: the same, quoting the UDP header.
    let u = Tuple::udp(CLIENT, 40011, VIP_UDP, 53);
    let big_udp = ipv4(u, 0, &[7; 1500]);
    let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &big_udp));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        out,
        expected_frag_needed(&big_udp, POD_MAC, HOST_VETH_MAC, 1452)
    );

    // DF clear: nothing may fragment it (fragments are not load-balanced),
    // so it is dropped and counted.
    let mut no_df = big.clone();
    no_df[6] = 0;
    no_df[10..12].copy_from_slice(&[0, 0]);
    let c = talaria_node::packet::ip_checksum(&no_df[..20]);
    no_df[10..12].copy_from_slice(&c.to_be_bytes());
    let (verdict, _) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &no_df));
    assert_eq!(verdict, TC_ACT_SHOT);
    let s = n.stats().unwrap();
    assert_eq!(s.mtu_event(mtu_stat::FRAG_NEEDED), 2);
    assert_eq!(s.mtu_event(mtu_stat::TOO_BIG_NO_DF), 1);
}

#[test]
fn a_new_flow_to_a_port_without_endpoints_is_refused_at_once() {
    require!(LOADS_BPF);
    let n = node();
    for (t, tcp) in [
        (
            Tuple::tcp(CLIENT, 40020, VIP_NO_ENDPOINTS, 80),
            tcp_flags::SYN,
        ),
        (Tuple::udp(CLIENT, 40021, VIP_NO_ENDPOINTS, 53), 0),
    ] {
        // kube-proxy's REJECT: ICMP port unreachable from the VIP, back
        // into the pod, quoting what it sent.
        let pkt = ipv4(t, tcp, b"x");
        let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &pkt));
        assert_eq!(
            verdict, TC_ACT_REDIRECT,
            "{t:?}: redirected back to the pod"
        );
        assert_eq!(
            out,
            expected_unreachable(&pkt, POD_MAC, HOST_VETH_MAC, 3, 0)
        );
        let f = Frame::parse(&out);
        assert_eq!((f.ip_src(), f.ip_dst()), (VIP_NO_ENDPOINTS, CLIENT));
        assert!(talaria_node::packet::icmp_checksum_ok(&f.ip));
    }
    // Another port of the same VIP, and a Service with endpoints, are not
    // refused: only the ports the controller says have none.
    for t in [
        Tuple::tcp(CLIENT, 40022, VIP_NO_ENDPOINTS, 443),
        Tuple::tcp(CLIENT, 40023, VIP, 80),
    ] {
        let pkt = ipv4(t, tcp_flags::SYN, b"");
        let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &pkt));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        check_encap(&out, pkt.len());
    }
    let s = n.stats().unwrap();
    assert_eq!(s.event(node_stat::REJECTED), 2);
    assert_eq!(s.event(node_stat::ENCAP), 2);
    assert_eq!(total_drops(&n), 0, "a refusal is an answer, not a drop");
}

#[test]
fn gso_packet_whose_segments_do_not_fit_gets_frag_needed() {
    require!(LOADS_BPF);
    use talaria_common::maps::mtu_stat;
    let mut n = node();
    n.set_uplink_mtu(1500).unwrap();
    let t = Tuple::tcp(CLIENT, 40012, VIP, 80);
    // A GSO super-packet of 3000 bytes of payload whose segments carry
    // 1448 bytes (the MSS of a 1500-MTU pod with timestamps, here without
    // options: 20 + 20 + 1448 = 1488, + 48 > 1500).
    let gso = ipv4(t, tcp_flags::ACK, &[1; 3000]);
    let (verdict, out) = test_run(
        &n,
        PROG_POD,
        &eth(HOST_VETH_MAC, POD_MAC, &gso),
        Some(&gso_ctx(1448, 3)),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        out,
        expected_frag_needed(&gso, POD_MAC, HOST_VETH_MAC, 1452)
    );
    // (The fitting case of a GSO skb cannot be run here: a test skb has
    // no gso_type, and adjust_room refuses to encapsulate such a GSO skb;
    // the netns e2e tests cover real TSO packets.)
    assert_eq!(n.stats().unwrap().mtu_event(mtu_stat::FRAG_NEEDED), 1);
}

#[test]
fn too_big_backend_reply_gets_frag_needed_before_reverse_nat() {
    require!(LOADS_BPF);
    use talaria_common::maps::mtu_stat;
    let mut n = node();
    n.set_uplink_mtu(1500).unwrap();
    let request = Tuple::tcp(REMOTE_CLIENT, 40000, BACKEND, 8080);
    let enc = TalariaEncap::new(flags::COOKIE_VALID, SVC_TCP, 42);
    let req = ipv4(request, tcp_flags::SYN, b"");
    assert_eq!(
        run(&n, PROG_UPLINK, &from_switch(SWITCH_IP, enc, &req)).0,
        TC_ACT_REDIRECT
    );
    // The backend pod (MTU 1500) answers with a 1500-byte segment: the
    // error goes to the backend, "from" the client it was sending to, and
    // quotes the reply as the backend sent it (before reverse NAT).
    let reply = ipv4(request.reversed(), tcp_flags::ACK, &[9; 1460]);
    let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &reply));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        out,
        expected_frag_needed(&reply, POD_MAC, HOST_VETH_MAC, 1452)
    );
    let f = Frame::parse(&out);
    assert_eq!((f.ip_src(), f.ip_dst()), (REMOTE_CLIENT, BACKEND));
    let s = n.stats().unwrap();
    assert_eq!(s.mtu_event(mtu_stat::FRAG_NEEDED), 1);
    assert_eq!(s.event(node_stat::REVERSE_NAT), 0);
    assert_eq!(n.reverse_flows().unwrap().len(), 1, "flow state untouched");

    // An ICMP error about that flow that would not fit is dropped, never
    // answered: with an uplink MTU of 100, 56 + 48 bytes is too big.
    n.set_uplink_mtu(100).unwrap();
    let icmp = talaria_node::packet::icmp_error(BACKEND, REMOTE_CLIENT, 3, 3, 0, &req);
    let (verdict, _) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &icmp));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(n.stats().unwrap().mtu_event(mtu_stat::TOO_BIG_ICMP), 1);

    // MTU 0 turns the check off.
    n.set_uplink_mtu(0).unwrap();
    let (verdict, out) = run(&n, PROG_POD, &eth(HOST_VETH_MAC, POD_MAC, &reply));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_encap(&out, reply.len());
}

/// `seed` changed in one to four ways: bytes overwritten, an address or
/// port of interest written anywhere, cut short or lengthened.
fn mutate(rng: &mut XorShiftRng, seed: &[u8]) -> Vec<u8> {
    let mut p = seed.to_vec();
    let addrs = [
        VIP,
        VIP_UDP,
        SWITCH_IP,
        NODE_IP,
        CLIENT,
        BACKEND,
        REMOTE_CLIENT,
    ];
    for _ in 0..1 + rng.random_range(0..4) {
        match rng.random_range(0..6) {
            0 | 1 => {
                let at = rng.random_range(0..p.len());
                p[at] = rng.random::<u8>();
            }
            2 => {
                let a = addrs[rng.random_range(0..addrs.len())].octets();
                let at = rng.random_range(0..p.len().saturating_sub(4).max(1));
                let end = (at + 4).min(p.len());
                p[at..end].copy_from_slice(&a[..end - at]);
            }
            3 => {
                let port =
                    [GENEVE_UDP_PORT, 53, 80, 8080, 8443][rng.random_range(0..5)].to_be_bytes();
                let at = rng.random_range(0..p.len().saturating_sub(2).max(1));
                if at + 2 <= p.len() {
                    p[at..at + 2].copy_from_slice(&port);
                }
            }
            4 => p.truncate(14 + rng.random_range(0..p.len().saturating_sub(14).max(1))),
            _ => p.extend((0..rng.random_range(0..64)).map(|_| rng.random::<u8>())),
        }
    }
    p
}

fn total_drops(n: &Node) -> u64 {
    n.stats().unwrap().drops.iter().map(|(_, c)| c).sum()
}

fn in_service_cidr(a: Ipv4Addr) -> bool {
    u32::from(a) >> 20 == u32::from(Ipv4Addr::new(10, 96, 0, 0)) >> 20
}

/// The IPv4 source and protocol of an Ethernet frame, if it carries IPv4.
fn ipv4_src(frame: &[u8]) -> Option<Ipv4Addr> {
    (frame.len() >= 34 && frame[12..14] == [0x08, 0x00])
        .then(|| Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]))
}

/// Random and mutated packets into both node programs, checking what must
/// hold for every packet: the verdict is pass, drop or redirect; a drop is
/// counted under exactly one reason and nothing else is; a pod's packet
/// that passes is from a pod's own address and no tunnel; the uplink
/// hands a pod a packet from a VIP only out of a tunnel from the switch's
/// address and MAC, and passes none from a VIP outside one; whatever the
/// pod program redirects goes to the switch or back to the pod. The
/// programs' own safety (bounds, the verifier's model) holds by loading.
/// `TALARIA_FUZZ_ITERS` and `TALARIA_FUZZ_SEED` run it longer or
/// elsewhere; a failure prints the seed and packet to replay.
#[test]
fn fuzzed_packets_keep_the_node_invariants() {
    require!(LOADS_BPF);
    // Stamping on, so that mutated TCP options reach the option walk.
    let n = stamping_node();
    let iters: usize = std::env::var("TALARIA_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("TALARIA_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x7a1a_71a5);
    let mut rng = XorShiftRng::seed_from_u64(seed);
    let request = TalariaEncap::new(flags::COOKIE_VALID, SVC_TCP, 42);
    let reply = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC_TCP, 42);
    let pod_seeds = [
        from_pod(Tuple::tcp(CLIENT, 40000, VIP, 80), tcp_flags::SYN, b""),
        from_pod(Tuple::udp(CLIENT, 40001, VIP_UDP, 53), 0, b"query"),
        from_pod(
            Tuple::tcp(CLIENT, 40005, VIP_NO_ENDPOINTS, 80),
            tcp_flags::SYN,
            b"",
        ),
        from_pod(
            Tuple::tcp(BACKEND, 8080, REMOTE_CLIENT, 40002),
            tcp_flags::ACK,
            b"reply",
        ),
        from_pod(
            Tuple::tcp(CLIENT, 40003, BACKEND, 8080),
            tcp_flags::SYN,
            b"",
        ),
        backend_reply(
            40020,
            tcp_flags::SYN | tcp_flags::ACK,
            &linux_syn_opts(0x1234_5678, 1),
            b"",
        ),
        eth(
            HOST_VETH_MAC,
            POD_MAC,
            &talaria_node::packet::icmp_error(
                BACKEND,
                REMOTE_CLIENT,
                3,
                3,
                0,
                &ipv4(Tuple::udp(REMOTE_CLIENT, 40004, BACKEND, 5353), 0, b"q"),
            ),
        ),
    ];
    let uplink_seeds = [
        outside_request(40020, tcp_flags::SYN, (1000, 0), &linux_syn_opts(1, 0)),
        outside_request(
            40020,
            tcp_flags::ACK,
            (1001, 1),
            &nop_nop_ts(2, 0x1234_0000),
        ),
        from_switch(
            SWITCH_IP,
            request,
            &ipv4(
                Tuple::tcp(REMOTE_CLIENT, 40010, BACKEND, 8080),
                tcp_flags::SYN,
                b"",
            ),
        ),
        from_switch(
            SWITCH_IP,
            reply,
            &ipv4(
                Tuple::tcp(VIP, 80, CLIENT, 40011),
                tcp_flags::SYN | tcp_flags::ACK,
                b"",
            ),
        ),
        eth(
            NODE_MAC,
            SWITCH_MAC,
            &ipv4(
                Tuple::udp(Ipv4Addr::new(10, 244, 2, 9), 5000, CLIENT, 53),
                0,
                b"plain",
            ),
        ),
    ];
    // Some seeds first as they are, so the states they create are there.
    for p in pod_seeds.iter() {
        run(&n, PROG_POD, p);
    }
    for p in uplink_seeds.iter() {
        run(&n, PROG_UPLINK, p);
    }
    // Verdicts seen: pass, drop, redirect, refused by the kernel.
    let mut seen = [0usize; 4];
    for i in 0..iters {
        let on_pod = i % 2 == 0;
        let (prog, seeds): (&str, &[Vec<u8>]) = if on_pod {
            (PROG_POD, &pod_seeds)
        } else {
            (PROG_UPLINK, &uplink_seeds)
        };
        let pick = rng.random_range(0..seeds.len());
        let input = mutate(&mut rng, &seeds[pick]);
        let before = total_drops(&n);
        // The kernel refuses some frames before any program sees them
        // (shorter than an Ethernet header plus the headers it reads, for
        // one): a TC program never meets those either.
        let mut out = vec![0u8; input.len() + 256];
        let Ok(r) = n.program(prog).unwrap().test_run(TestRunOptions {
            data_in: Some(&input),
            data_out: Some(&mut out),
            ..Default::default()
        }) else {
            seen[3] += 1;
            continue;
        };
        out.truncate(r.data_size_out as usize);
        let verdict = r.return_value;
        seen[match verdict {
            TC_ACT_OK => 0,
            TC_ACT_SHOT => 1,
            _ => 2,
        }] += 1;
        let dropped = total_drops(&n) - before;
        let why = || {
            format!("seed {seed:#x}, iteration {i}, {prog}, verdict {verdict}, input {input:02x?}")
        };
        assert!(
            [TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT].contains(&verdict),
            "{}",
            why()
        );
        assert_eq!(
            dropped,
            u64::from(verdict == TC_ACT_SHOT),
            "drops counted: {}",
            why()
        );
        let src = ipv4_src(&input);
        let udp_to = |f: &[u8]| {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let frag = u16::from_be_bytes([f[20], f[21]]) & 0x1fff;
            (f[23] == 17 && frag == 0 && f.len() >= 14 + ihl + 4)
                .then(|| u16::from_be_bytes([f[14 + ihl + 2], f[14 + ihl + 3]]))
        };
        if on_pod {
            if verdict == TC_ACT_OK {
                if let Some(src) = src {
                    if input[14] >> 4 == 4 && input[14] & 0x0f >= 5 {
                        assert!(
                            src == CLIENT || src == BACKEND,
                            "a spoofed source passed: {}",
                            why()
                        );
                        assert_ne!(
                            udp_to(&input),
                            Some(GENEVE_UDP_PORT),
                            "a pod's tunnel passed: {}",
                            why()
                        );
                    }
                }
            }
            if verdict == TC_ACT_REDIRECT {
                let to_switch = out.len() >= 34
                    && out[0..6] == SWITCH_MAC
                    && out[30..34] == SWITCH_IP.octets()
                    && out[26..30] == NODE_IP.octets();
                // An ICMP error goes back into the pod that sent the packet
                // (redirected to this veth's peer), to the MAC it sent from.
                let back_to_pod = out.len() >= 34
                    && out[0..6] == input[6..12]
                    && out[6..12] == input[0..6]
                    && out[23] == 1;
                assert!(to_switch || back_to_pod, "redirected elsewhere: {}", why());
            }
        } else {
            if verdict == TC_ACT_REDIRECT && ipv4_src(&out).is_some_and(in_service_cidr) {
                assert!(
                    input[6..12] == SWITCH_MAC && src == Some(SWITCH_IP),
                    "a VIP-sourced packet reached a pod out of a tunnel not from the switch: {}",
                    why()
                );
            }
            if verdict == TC_ACT_OK {
                if let Some(src) = src {
                    if input[14] >> 4 == 4 {
                        assert!(
                            !in_service_cidr(src),
                            "a plain packet from a VIP passed: {}",
                            why()
                        );
                    }
                }
            }
        }
    }
    println!(
        "{iters} packets: {} passed, {} dropped, {} redirected, {} refused by the kernel",
        seen[0], seen[1], seen[2], seen[3]
    );
    // The mutations must reach every verdict, or the checks check nothing.
    assert!(seen[..3].iter().all(|c| *c >= iters / 20), "{seen:?}");
}

// ------------------------------------------- outside clients' TCP timestamps --

/// A client outside the cluster (no agent), reaching the Service through
/// the switch (`flags::EXTERNAL`).
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const TS_KEY: CookieKey = CookieKey {
    k0: 0x0011_2233_4455_6677,
    k1: 0x8899_aabb_ccdd_eeff,
};
/// The Timestamps option (kind 8, length 10).
fn ts_opt(tsval: u32, tsecr: u32) -> [u8; 10] {
    let (v, e) = (tsval.to_be_bytes(), tsecr.to_be_bytes());
    [8, 10, v[0], v[1], v[2], v[3], e[0], e[1], e[2], e[3]]
}
/// `NOP, NOP, TS`: every segment after the handshake.
fn nop_nop_ts(tsval: u32, tsecr: u32) -> Vec<u8> {
    [&[1, 1][..], &ts_opt(tsval, tsecr)].concat()
}
/// A Linux SYN or SYN-ACK: MSS 1460, SACK permitted, TS, NOP, window
/// scale 7.
fn linux_syn_opts(tsval: u32, tsecr: u32) -> Vec<u8> {
    [
        &[2, 4, 5, 0xb4, 4, 2][..],
        &ts_opt(tsval, tsecr),
        &[1, 3, 3, 7],
    ]
    .concat()
}

/// The TCP options of an IPv4 packet (no Ethernet, no IP options).
fn tcp_options(ip: &[u8]) -> &[u8] {
    let doff = usize::from(ip[20 + 12] >> 4) * 4;
    &ip[40..20 + doff]
}

/// TSval and TSecr of the Timestamps option at `at` in `ip`'s options.
fn ts_values(ip: &[u8], at: usize) -> (u32, u32) {
    let o = &tcp_options(ip)[at..];
    (
        u32::from_be_bytes(o[2..6].try_into().unwrap()),
        u32::from_be_bytes(o[6..10].try_into().unwrap()),
    )
}

/// An outside client's request as the switch tunnels it: DNATed to the
/// backend, flagged `COOKIE_VALID | EXTERNAL` (and `NEW_FLOW`).
fn outside_request(sport: u16, tcp: u8, seq_ack: (u32, u32), opts: &[u8]) -> Vec<u8> {
    let t = Tuple::tcp(OUTSIDE, sport, BACKEND, 8080);
    let enc = TalariaEncap::new(
        flags::COOKIE_VALID | flags::EXTERNAL | flags::NEW_FLOW,
        SVC_TCP,
        42,
    );
    from_switch(SWITCH_IP, enc, &ipv4_tcp_opts(t, tcp, seq_ack, opts, b""))
}

/// The backend's segment to the outside client, as it leaves the pod.
fn backend_reply(dport: u16, tcp: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    let t = Tuple::tcp(BACKEND, 8080, OUTSIDE, dport);
    from_pod_ip(&ipv4_tcp_opts(t, tcp, (5000, 1001), opts, payload))
}

fn from_pod_ip(ip: &[u8]) -> Vec<u8> {
    eth(HOST_VETH_MAC, POD_MAC, ip)
}

/// Runs a request through the uplink: the inner packet delivered.
fn deliver(n: &Node, frame: &[u8]) -> Vec<u8> {
    let (verdict, out) = run(n, PROG_UPLINK, frame);
    assert_eq!(verdict, TC_ACT_REDIRECT, "delivered to the backend");
    let ip = Frame::parse(&out).ip;
    assert!(ip_checksum_ok(&ip) && l4_checksum_ok(&ip), "checksums");
    ip
}

/// Runs a backend's segment through its veth: the inner packet tunnelled.
fn tunnel(n: &Node, frame: &[u8]) -> Vec<u8> {
    let (verdict, out) = run(n, PROG_POD, frame);
    assert_eq!(verdict, TC_ACT_REDIRECT, "tunnelled to the switch");
    let (enc, inner) = check_encap(&out, frame.len() - 14);
    assert_eq!(enc.opt.flags, flags::REPLY | flags::COOKIE_VALID);
    assert!(
        ip_checksum_ok(&inner) && l4_checksum_ok(&inner),
        "inner checksums (the whole TCP checksum recomputed)"
    );
    inner
}

fn reverse_entry(n: &Node, sport: u16) -> ReverseEntry {
    let key = Tuple::tcp(BACKEND, 8080, OUTSIDE, sport).key();
    n.reverse_flows()
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == key)
        .expect("a reverse-flow entry")
        .1
}

fn stamping_node() -> Node {
    let mut n = node();
    n.set_ts_cookie(Some(TS_KEY)).unwrap();
    n
}

#[test]
fn an_outside_clients_timestamps_carry_the_cookie_and_its_echoes_are_restored() {
    require!(LOADS_BPF);
    let mut n = stamping_node();
    let c = cookie(&TS_KEY, SVC_TCP, 42);
    let sport = 41000;

    // The SYN: the flow stamps with the cookie of (service, backend); the
    // SYN's TSecr (0) is left alone.
    let syn = outside_request(
        sport,
        tcp_flags::SYN,
        (1000, 0),
        &linux_syn_opts(0x0a0b_0c0d, 0),
    );
    let ip = deliver(&n, &syn);
    assert_eq!(
        ip,
        Frame::parse(&syn).talaria().unwrap().1,
        "the SYN as it came"
    );
    let e = reverse_entry(&n, sport);
    assert_eq!((e.ts_cookie, e.ts_flags), (c, ts_flags::STAMP));

    // A new key applies to new flows only: this one keeps its cookie.
    n.set_ts_cookie(Some(CookieKey { k0: 1, k1: 2 })).unwrap();

    // The SYN-ACK (MSS, SACK_PERM, TS, NOP, WS): TSval stamped, the high
    // half kept, everything else as reverse NAT makes it.
    let real = 0x1234_5678;
    let synack_opts = linux_syn_opts(real, 0x0a0b_0c0d);
    let out = tunnel(
        &n,
        &backend_reply(sport, tcp_flags::SYN | tcp_flags::ACK, &synack_opts, b""),
    );
    let (tsval, tsecr) = ts_values(&out, 6);
    assert_eq!(tsval, 0x1234_0000 | u32::from(c), "TSval low half = cookie");
    assert_eq!(tsval, ts_cookie::stamp(real, c));
    assert_eq!(tsecr, 0x0a0b_0c0d, "the client's own TSval echoed as it is");
    assert_eq!(&tcp_options(&out)[..6], &synack_opts[..6]);
    assert_eq!(&tcp_options(&out)[16..], &synack_opts[16..]);
    let e = reverse_entry(&n, sport);
    assert_eq!(e.ts_last_real, real);
    assert_eq!(e.ts_flags, ts_flags::STAMP | ts_flags::SENT);
    assert_eq!(n.stats().unwrap().event(node_stat::TS_STAMPED), 1);

    // The client's ACK echoes the stamped value: the backend sees its own.
    let ack = outside_request(
        sport,
        tcp_flags::ACK,
        (1001, 5001),
        &nop_nop_ts(0x0a0b_0c0e, tsval),
    );
    let ip = deliver(&n, &ack);
    assert_eq!(ts_values(&ip, 2), (0x0a0b_0c0e, real));
    assert_eq!(n.stats().unwrap().event(node_stat::TS_RESTORED), 1);

    // Data a while later (the clock's high half moved on), with NOP NOP TS.
    let later = 0x1235_0001;
    let out = tunnel(
        &n,
        &backend_reply(
            sport,
            tcp_flags::ACK,
            &nop_nop_ts(later, 0x0a0b_0c0e),
            b"data",
        ),
    );
    let (tsval2, _) = ts_values(&out, 2);
    assert_eq!(tsval2, 0x1235_0000 | u32::from(c));
    assert_eq!(reverse_entry(&n, sport).ts_last_real, later);
    // A late echo of the older value: the last value its high half had.
    let ip = deliver(
        &n,
        &outside_request(
            sport,
            tcp_flags::ACK,
            (1001, 5005),
            &nop_nop_ts(0x0a0b_0c0f, tsval),
        ),
    );
    assert_eq!(ts_values(&ip, 2).1, 0x1234_ffff);
    // The current one: the last real value.
    let ip = deliver(
        &n,
        &outside_request(
            sport,
            tcp_flags::ACK,
            (1001, 5009),
            &nop_nop_ts(0x0a0b_0c10, tsval2),
        ),
    );
    assert_eq!(ts_values(&ip, 2).1, later);
    let s = n.stats().unwrap();
    assert_eq!(
        (
            s.event(node_stat::TS_STAMPED),
            s.event(node_stat::TS_RESTORED)
        ),
        (2, 3)
    );
}

#[test]
fn stamping_walks_every_option_layout_and_leaves_malformed_ones_alone() {
    require!(LOADS_BPF);
    let n = stamping_node();
    let c = cookie(&TS_KEY, SVC_TCP, 42);
    let real = 0x7777_8888;
    let ts = ts_opt(real, 0x0102_0304);
    let pad = |o: Vec<u8>| {
        let mut o = o;
        while !o.len().is_multiple_of(4) {
            o.push(1);
        }
        o
    };
    // {description, options, where TS is (None: no valid one)}.
    let cases: Vec<(&str, Vec<u8>, Option<usize>)> = vec![
        ("NOP NOP TS", nop_nop_ts(real, 0x0102_0304), Some(2)),
        (
            "Linux SYN-ACK: MSS SACK_PERM TS NOP WS",
            linux_syn_opts(real, 0x0102_0304),
            Some(6),
        ),
        (
            "MSS NOP NOP TS NOP WS (SACK off)",
            [&[2, 4, 5, 0xb4, 1, 1][..], &ts, &[1, 3, 3, 7]].concat(),
            Some(6),
        ),
        (
            "NOP NOP TS NOP NOP SACK",
            [
                &nop_nop_ts(real, 0x0102_0304)[..],
                &[1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            ]
            .concat(),
            Some(2),
        ),
        (
            "SACK blocks, then TS at the end of 40 bytes",
            [&[1, 1, 5, 26][..], &[9; 24], &[1, 1], &ts].concat(),
            Some(30),
        ),
        ("no options at all", vec![], None),
        ("MSS only", vec![2, 4, 5, 0xb4], None),
        ("EOL before TS", pad([&[0, 0][..], &ts].concat()), None),
        ("length 0 before TS", [&[2, 0][..], &ts].concat(), None),
        ("length 1 before TS", [&[2, 1][..], &ts].concat(), None),
        (
            "an option running past the header",
            pad([&[1, 1, 5, 36][..], &ts].concat()),
            None,
        ),
        ("TS of length 6", pad(vec![1, 1, 8, 6, 0, 0, 0, 1]), None),
        (
            "TS cut off by the header's end",
            vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 8, 10],
            None,
        ),
        ("only NOPs (40)", vec![1; 40], None),
    ];
    for (i, (what, opts, at)) in cases.into_iter().enumerate() {
        let sport = 42000 + i as u16;
        deliver(
            &n,
            &outside_request(sport, tcp_flags::SYN, (1000, 0), &nop_nop_ts(1, 0)),
        );
        let before = n.stats().unwrap().event(node_stat::TS_STAMPED);
        // The payload looks like a TS option: only the header's count.
        let frame = backend_reply(sport, tcp_flags::ACK, &opts, &ts_opt(0x5555_5555, 0));
        let out = tunnel(&n, &frame);
        let stamped = n.stats().unwrap().event(node_stat::TS_STAMPED) - before;
        let sent = reverse_entry(&n, sport).ts_flags & ts_flags::SENT != 0;
        match at {
            Some(at) => {
                let mut want = opts.clone();
                want[at + 2..at + 6].copy_from_slice(&ts_cookie::stamp(real, c).to_be_bytes());
                assert_eq!(tcp_options(&out), &want[..], "{what}");
                assert_eq!((stamped, sent), (1, true), "{what}");
            }
            None => {
                assert_eq!(tcp_options(&out), &opts[..], "{what}: options untouched");
                assert_eq!((stamped, sent), (0, false), "{what}");
            }
        }
        assert_eq!(
            &out[out.len() - 10..],
            &ts_opt(0x5555_5555, 0),
            "{what}: payload untouched"
        );
    }

    // A header claiming more than the packet holds: nothing read past it,
    // nothing stamped.
    let sport = 42100;
    deliver(
        &n,
        &outside_request(sport, tcp_flags::SYN, (1000, 0), &nop_nop_ts(1, 0)),
    );
    let mut ip = ipv4_tcp_opts(
        Tuple::tcp(BACKEND, 8080, OUTSIDE, sport),
        tcp_flags::ACK,
        (1, 1),
        &[1, 1, 1, 1],
        b"",
    );
    ip[32] = 0xf0;
    let before = n.stats().unwrap().event(node_stat::TS_STAMPED);
    let (verdict, _) = run(&n, PROG_POD, &from_pod_ip(&ip));
    assert!(verdict == TC_ACT_REDIRECT || verdict == TC_ACT_SHOT);
    assert_eq!(n.stats().unwrap().event(node_stat::TS_STAMPED), before);
}

#[test]
fn echoes_are_restored_only_on_acks_of_flows_that_sent_a_stamp() {
    require!(LOADS_BPF);
    let n = stamping_node();
    let sport = 43000;
    deliver(
        &n,
        &outside_request(sport, tcp_flags::SYN, (1000, 0), &linux_syn_opts(7, 0)),
    );
    // Nothing stamped sent yet: an ACK's echo goes as it is.
    let ack = outside_request(
        sport,
        tcp_flags::ACK,
        (1001, 1),
        &nop_nop_ts(8, 0x4242_4242),
    );
    assert_eq!(ts_values(&deliver(&n, &ack), 2), (8, 0x4242_4242));
    tunnel(
        &n,
        &backend_reply(
            sport,
            tcp_flags::SYN | tcp_flags::ACK,
            &linux_syn_opts(0x0005_0000, 7),
            b"",
        ),
    );
    // A repeated SYN (no ACK) keeps its TSecr, and the flow its cookie.
    let syn = outside_request(
        sport,
        tcp_flags::SYN,
        (1000, 0),
        &linux_syn_opts(9, 0x0005_1234),
    );
    assert_eq!(ts_values(&deliver(&n, &syn), 6), (9, 0x0005_1234));
    assert_eq!(
        reverse_entry(&n, sport).ts_flags,
        ts_flags::STAMP | ts_flags::SENT
    );
    // Malformed options on the client's side: left alone.
    let bad = outside_request(
        sport,
        tcp_flags::ACK,
        (1001, 1),
        &[2, 0, 1, 1, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
    );
    assert_eq!(
        tcp_options(&deliver(&n, &bad)),
        &[2, 0, 1, 1, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]
    );
    assert_eq!(n.stats().unwrap().event(node_stat::TS_RESTORED), 0);
}

#[test]
fn flows_of_clients_inside_or_without_a_key_are_never_stamped() {
    require!(LOADS_BPF);
    let mut n = stamping_node();
    // Compare the options only: reverse NAT rewrites ports and checksum.
    let check = |n: &Node, sport: u16, enc: TalariaEncap| {
        let req = ipv4_tcp_opts(
            Tuple::tcp(OUTSIDE, sport, BACKEND, 8080),
            tcp_flags::SYN,
            (1, 0),
            &linux_syn_opts(3, 0),
            b"",
        );
        assert_eq!(deliver(n, &from_switch(SWITCH_IP, enc, &req)), req);
        let e = reverse_entry(n, sport);
        assert_eq!((e.ts_flags, e.ts_cookie), (0, 0), "not stamping");
        let opts = linux_syn_opts(0x0009_0009, 3);
        let out = tunnel(
            n,
            &backend_reply(sport, tcp_flags::SYN | tcp_flags::ACK, &opts, b""),
        );
        assert_eq!(tcp_options(&out), &opts[..], "TSval as the backend sent it");
        let ack = outside_request(
            sport,
            tcp_flags::ACK,
            (2, 1),
            &nop_nop_ts(4, 0x0009_0000 | 0x5a5a),
        );
        assert_eq!(
            ts_values(&deliver(n, &ack), 2),
            (4, 0x0009_5a5a),
            "TSecr as the client sent it"
        );
    };
    // A client inside the cluster (its node's tunnel: no EXTERNAL).
    check(
        &n,
        44000,
        TalariaEncap::new(flags::COOKIE_VALID, SVC_TCP, 42),
    );
    check(
        &n,
        44001,
        TalariaEncap::new(flags::COOKIE_VALID | flags::NEW_FLOW, SVC_TCP, 42),
    );
    // EXTERNAL without a cookie is not a request the node serves.
    let req = ipv4_tcp_opts(
        Tuple::tcp(OUTSIDE, 44002, BACKEND, 8080),
        tcp_flags::SYN,
        (1, 0),
        &linux_syn_opts(3, 0),
        b"",
    );
    let (verdict, _) = run(
        &n,
        PROG_UPLINK,
        &from_switch(
            SWITCH_IP,
            TalariaEncap::new(flags::EXTERNAL | flags::NEW_FLOW, SVC_TCP, 42),
            &req,
        ),
    );
    assert_eq!(verdict, TC_ACT_SHOT);
    // UDP from outside: no timestamps to stamp.
    let udp = ipv4(Tuple::udp(OUTSIDE, 44003, BACKEND, 5353), 0, b"q");
    let enc = TalariaEncap::new(
        flags::COOKIE_VALID | flags::EXTERNAL | flags::NEW_FLOW,
        SVC_UDP,
        43,
    );
    deliver(&n, &from_switch(SWITCH_IP, enc, &udp));
    let key = Tuple::udp(BACKEND, 5353, OUTSIDE, 44003).key();
    let (_, e) = n
        .reverse_flows()
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == key)
        .unwrap();
    assert_eq!(e.ts_flags, 0);
    // No key: an outside client's flow is not stamped either.
    n.set_ts_cookie(None).unwrap();
    check(
        &n,
        44004,
        TalariaEncap::new(
            flags::COOKIE_VALID | flags::EXTERNAL | flags::NEW_FLOW,
            SVC_TCP,
            42,
        ),
    );
    let s = n.stats().unwrap();
    assert_eq!(
        (
            s.event(node_stat::TS_STAMPED),
            s.event(node_stat::TS_RESTORED)
        ),
        (0, 0)
    );
}

/// A node's pins left by a build whose map layouts differ (a flow entry
/// that grew a field) are refused at load, saying what to do, rather than
/// reused: aya reuses a map pinned under the name without looking at it,
/// and the verifier or userspace would trip on it later. Its own pins, as
/// an agent restart finds them, are reused.
#[test]
fn pins_of_another_layout_are_refused() {
    require!(LOADS_BPF);
    struct Pins(std::path::PathBuf);
    impl Drop for Pins {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let pins = Pins(format!("/sys/fs/bpf/talaria-test-layout-{}", std::process::id()).into());
    let load = || Node::load(Some(&pins.0), 4096);
    drop(load().expect("a first load pins its maps"));
    drop(load().expect("a restart reuses its own pins"));
    // An older NODE_REVERSE: the cookie map (16-byte values, not 32)
    // under its name.
    std::fs::remove_file(pins.0.join(MAP_REVERSE)).unwrap();
    std::fs::rename(pins.0.join(MAP_COOKIES), pins.0.join(MAP_REVERSE)).unwrap();
    let refused = |what: &str| {
        let err = load()
            .err()
            .expect("pins of another layout are refused")
            .to_string();
        assert!(
            err.contains(what) && err.contains("talaria-node unpin"),
            "{err}"
        );
    };
    refused("NODE_REVERSE has 16-byte keys, 16-byte values");
    std::fs::remove_file(pins.0.join(MAP_REVERSE)).unwrap();
    drop(load().expect("a missing pin is made afresh"));
    // An older NODE_STATS, with fewer counters: here the drop counters.
    std::fs::remove_file(pins.0.join(MAP_STATS)).unwrap();
    std::fs::rename(pins.0.join(MAP_DROPS), pins.0.join(MAP_STATS)).unwrap();
    refused(&format!(
        "{} entries",
        talaria_common::drop::DROP_REASON_COUNT
    ));
    std::fs::remove_file(pins.0.join(MAP_STATS)).unwrap();
    // NODE_PODS_V6 of another layout (before IPv6 Services its values
    // were an ifindex; here NODE_PODS' shape) is made afresh, not
    // refused: the pod sync writes it whole at start.
    std::fs::remove_file(pins.0.join(MAP_PODS_V6)).unwrap();
    std::fs::rename(pins.0.join(MAP_PODS), pins.0.join(MAP_PODS_V6)).unwrap();
    drop(load().expect("NODE_PODS_V6 of another layout is replaced"));
    let info = aya::maps::MapData::from_pin(pins.0.join(MAP_PODS_V6))
        .unwrap()
        .info()
        .unwrap();
    assert_eq!((info.key_size(), info.value_size()), (16, 16));
}

// ------------------------------------------------------------ IPv6 --

const SVC6_TCP: u16 = 20;
const SVC6_UDP: u16 = 21;
/// Second IPv6 Services (fd00:96::c:8443), on the same backends.
const SVC6_2_TCP: u16 = 22;
const SVC6_2_UDP: u16 = 23;

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// [`node`] with IPv6 Services (fd00:96::a TCP 80, fd00:96::b UDP 53,
/// fd00:96::c TCP and UDP 8443, in fd00:96::/108) and two local
/// dual-stack pods.
fn node6() -> Node {
    let mut n = node();
    n.set_service_cidrs(&[
        (Ipv4Addr::new(10, 96, 0, 0).into(), 12),
        (v6("fd00:96::").into(), 108),
    ])
    .unwrap();
    n.set_services(&[
        ServiceConfig::new(SVC_TCP, VIP, 80, "tcp"),
        ServiceConfig::new(SVC6_TCP, v6("fd00:96::a"), 80, "tcp"),
        ServiceConfig::new(SVC6_UDP, v6("fd00:96::b"), 53, "udp"),
        ServiceConfig::new(SVC6_2_TCP, v6("fd00:96::c"), 8443, "tcp"),
        ServiceConfig::new(SVC6_2_UDP, v6("fd00:96::c"), 8443, "udp"),
    ])
    .unwrap();
    let pod = PodEntry {
        ifindex: 1,
        mac: POD_MAC,
        host_mac: HOST_VETH_MAC,
    };
    n.set_pods_v6(&[(v6("fd00:244:1::2"), pod), (v6("fd00:244:1::3"), pod)])
        .unwrap();
    n
}

/// An IPv6 packet in a Talaria tunnel from the switch (Geneve protocol
/// 0x86DD).
fn from_switch6(enc: TalariaEncap, inner: &[u8]) -> Vec<u8> {
    let mut enc = enc;
    enc.geneve.protocol = talaria_common::be::Be16::new(GENEVE_PROTO_IPV6);
    from_switch(SWITCH_IP, enc, inner)
}

/// Checks an encapsulated IPv6 packet's outer headers (as
/// [`check_encap`] does for IPv4, plus the EtherType and the Geneve
/// protocol) and returns (option flags, service id, backend id, outer
/// source port, inner packet).
fn check_encap6(out: &[u8], inner_len: usize) -> (u8, u16, u32, u16, Vec<u8>) {
    assert_eq!(out.len(), 14 + inner_len + ENCAP_OVERHEAD, "grown by 48");
    assert_eq!(&out[12..14], &[0x08, 0x00], "outer EtherType IPv4");
    let f = Frame::parse(out);
    assert_eq!((f.dst_mac, f.src_mac), (SWITCH_MAC, NODE_MAC));
    assert_eq!((f.ip_src(), f.ip_dst()), (NODE_IP, SWITCH_IP));
    assert!(ip_checksum_ok(&f.ip), "outer IPv4 checksum");
    assert_eq!(
        usize::from(u16::from_be_bytes([f.ip[2], f.ip[3]])),
        f.ip.len()
    );
    let t = f.tuple();
    assert_eq!(t.dport, GENEVE_UDP_PORT);
    assert!(t.sport >= 49152, "outer sport {}", t.sport);
    assert_eq!(&f.ip[26..28], &[0, 0], "outer UDP checksum 0");
    let g = &f.ip[28..48];
    assert_eq!(u16::from_be_bytes([g[2], g[3]]), GENEVE_PROTO_IPV6);
    let mut enc = TalariaEncap::default();
    enc.geneve.ver_opt_len = g[0];
    enc.geneve.flags = g[1];
    enc.geneve.protocol = talaria_common::be::Be16::new(0x0800);
    enc.opt.class = talaria_common::be::Be16([g[8], g[9]]);
    (enc.opt.opt_type, enc.opt.len, enc.opt.version) = (g[10], g[11], g[12]);
    enc.validate().expect("the rest of the header as IPv4's");
    let service_id = u16::from_be_bytes([g[14], g[15]]);
    let backend_id = u32::from_be_bytes([g[16], g[17], g[18], g[19]]);
    (g[13], service_id, backend_id, t.sport, f.ip[48..].to_vec())
}

#[test]
fn ipv6_client_flow_is_tunnelled_and_learns_its_cookie() {
    require!(LOADS_BPF);
    let n = node6();
    let flow = Tuple6::tcp(v6("fd00:244:1::2"), 40000, v6("fd00:96::a"), 80);
    let syn = ipv6(flow, tcp_flags::SYN, b"");
    let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &syn));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (fl, _, _, sport, inner) = check_encap6(&out, syn.len());
    assert_eq!(fl, flags::NEW_FLOW);
    assert_eq!(inner, syn, "the inner packet unchanged");
    assert_eq!(sport, flow.key().outer_sport());

    // The switch's reply: learned, decapsulated, delivered to the pod.
    let synack = ipv6(flow.reversed(), tcp_flags::SYN | tcp_flags::ACK, b"");
    let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC6_TCP, 42);
    let (verdict, out) = run(&n, PROG_UPLINK, &from_switch6(enc, &synack));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, eth6(POD_MAC, HOST_VETH_MAC, &synack), "decapsulated");
    let cookies = n.cookies6().unwrap();
    assert_eq!(cookies.len(), 1);
    assert_eq!(cookies[0].0, flow.key(), "keyed on the client's flow");
    assert_eq!(
        (cookies[0].1.service_id, cookies[0].1.backend_id),
        (SVC6_TCP, 42)
    );
    assert!(n.cookies().unwrap().is_empty(), "nothing in the IPv4 cache");

    // The next packet carries the cookie; a FIN is recorded, an RST ends it.
    let ack = ipv6(flow, tcp_flags::ACK | tcp_flags::FIN, b"GET /");
    let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &ack));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (fl, svc, backend, _, inner) = check_encap6(&out, ack.len());
    assert_eq!((fl, svc, backend), (flags::COOKIE_VALID, SVC6_TCP, 42));
    assert_eq!(inner, ack);
    assert_eq!(n.cookies6().unwrap()[0].1.fin_seen, 1, "the client's FIN");
    let rst = ipv6(flow, tcp_flags::RST, b"");
    assert_eq!(
        run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &rst)).0,
        TC_ACT_REDIRECT
    );
    assert!(
        n.cookies6().unwrap().is_empty(),
        "an RST forgets the cookie"
    );
    let s = n.stats().unwrap();
    assert_eq!(
        (
            s.event(node_stat::CACHE_MISS),
            s.event(node_stat::CACHE_HIT),
            s.event(node_stat::COOKIE_LEARN),
            s.event(node_stat::DECAP),
            s.event(node_stat::ENCAP),
            s.event(node_stat::FLOW_RESET),
        ),
        (1, 2, 1, 1, 3, 1)
    );
    assert_eq!(total_drops(&n), 0);
}

fn reverse_nat6_roundtrip(tcp: bool) {
    let n = node6();
    let (vip, port, svc) = if tcp {
        (v6("fd00:96::a"), 80, SVC6_TCP)
    } else {
        (v6("fd00:96::b"), 53, SVC6_UDP)
    };
    let mk = if tcp { Tuple6::tcp } else { Tuple6::udp };
    let client = v6("fd00:244:2::2");
    // After the switch's DNAT: a client on another node → backend:8080.
    let request = mk(client, 40000, v6("fd00:244:1::3"), 8080);
    let req = ipv6(request, tcp_flags::SYN, b"ping");
    let enc = TalariaEncap::new(flags::COOKIE_VALID | flags::NEW_FLOW, svc, 42);
    let (verdict, out) = run(&n, PROG_UPLINK, &from_switch6(enc, &req));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        out,
        eth6(POD_MAC, HOST_VETH_MAC, &req),
        "delivered as it came"
    );
    let rev = n.reverse_flows6().unwrap();
    assert_eq!(rev.len(), 1);
    assert_eq!(rev[0].0, request.reversed().key(), "backend → client");
    assert_eq!(
        (rev[0].1.vip, rev[0].1.vip_port.get()),
        (vip.octets(), port)
    );
    assert_eq!((rev[0].1.service_id, rev[0].1.backend_id), (svc, 42));

    let reply = ipv6(
        request.reversed(),
        tcp_flags::SYN | tcp_flags::ACK,
        b"pong!",
    );
    let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &reply));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (fl, s, b, sport, inner) = check_encap6(&out, reply.len());
    assert_eq!((fl, s, b), (flags::REPLY | flags::COOKIE_VALID, svc, 42));
    assert_eq!(
        Tuple6::of(&inner),
        mk(vip, port, client, 40000),
        "from VIP6:port"
    );
    assert!(l4_checksum6_ok(&inner), "L4 checksum after the reverse NAT");
    assert_eq!(&inner[40 + if tcp { 20 } else { 8 }..], b"pong!");
    assert_eq!(sport, mk(vip, port, client, 40000).key().outer_sport());
    let s = n.stats().unwrap();
    assert_eq!(
        (
            s.event(node_stat::REVERSE_LEARN),
            s.event(node_stat::REVERSE_NAT)
        ),
        (1, 1)
    );
    if tcp {
        // The backend resets: the entry goes, the RST still reaches the client.
        let rst = ipv6(request.reversed(), tcp_flags::RST, b"");
        let (verdict, _) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &rst));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert!(n.reverse_flows6().unwrap().is_empty());
    }
    assert_eq!(total_drops(&n), 0);
}

/// A pod reaching its own IPv6 Service, chosen as its own backend: the
/// request comes back from the switch with the pod's address as source
/// and destination. It is delivered from `HAIRPIN_SOURCE6` (L4 checksum
/// fixed), the reverse entry is keyed on that, and the pod's answer to it
/// leaves from VIP6:port back to the pod itself, as IPv4's hairpin does.
#[test]
fn ipv6_hairpin_comes_from_the_hairpin_source_and_its_reply_returns_to_the_pod() {
    require!(LOADS_BPF);
    let n = node6();
    let (pod, vip) = (v6("fd00:244:1::3"), v6("fd00:96::a"));
    let hairpin = Ipv6Addr::from(HAIRPIN_SOURCE6);
    // After the switch's DNAT: the pod → itself, port 8080.
    let req = ipv6(Tuple6::tcp(pod, 40000, pod, 8080), tcp_flags::SYN, b"ping");
    let enc = TalariaEncap::new(flags::COOKIE_VALID | flags::NEW_FLOW, SVC6_TCP, 42);
    let (verdict, out) = run(&n, PROG_UPLINK, &from_switch6(enc, &req));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let delivered = &out[14..];
    assert_eq!(
        Tuple6::of(delivered),
        Tuple6::tcp(hairpin, 40000, pod, 8080),
        "from the hairpin source"
    );
    assert!(l4_checksum6_ok(delivered), "L4 checksum after the rewrite");
    assert_eq!(&delivered[60..], b"ping");
    let rev = n.reverse_flows6().unwrap();
    assert_eq!(rev.len(), 1);
    assert_eq!(rev[0].0, Tuple6::tcp(pod, 8080, hairpin, 40000).key());

    // The pod answers the hairpin source by its default route.
    let answer = Tuple6::tcp(pod, 8080, hairpin, 40000);
    let reply = ipv6(answer, tcp_flags::SYN | tcp_flags::ACK, b"pong!");
    let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &reply));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (fl, s, b, sport, inner) = check_encap6(&out, reply.len());
    assert_eq!(
        (fl, s, b),
        (flags::REPLY | flags::COOKIE_VALID, SVC6_TCP, 42)
    );
    let seen = Tuple6::tcp(vip, 80, pod, 40000);
    assert_eq!(Tuple6::of(&inner), seen, "from VIP6:port to the pod itself");
    assert!(l4_checksum6_ok(&inner), "L4 checksum after the reverse NAT");
    assert_eq!(&inner[60..], b"pong!");
    assert_eq!(
        sport,
        seen.key().outer_sport(),
        "hashed as the client sees it"
    );
    assert_eq!(total_drops(&n), 0);
}

#[test]
fn ipv6_reverse_nat_on_tcp_reply() {
    require!(LOADS_BPF);
    reverse_nat6_roundtrip(true);
}

#[test]
fn ipv6_reverse_nat_on_udp_reply() {
    require!(LOADS_BPF);
    reverse_nat6_roundtrip(false);
}

/// [`shared_backend_same_client_port`] for IPv6: two IPv6 Services share
/// a backend, one client reaches both from one source port. The first
/// flow keeps the 4-tuple; the second is delivered from a substitute
/// client port (`NODE_PORT_SUBST_V6`), each reply leaves from its own
/// VIP6 to the client's own port, and an RST (either side's) or the GC
/// ends a flow and its substitute, never the other flow.
fn shared_backend_same_client_port6(tcp: bool) {
    let mut n = node6();
    let mk = if tcp { Tuple6::tcp } else { Tuple6::udp };
    let (syn, ack) = if tcp {
        (tcp_flags::SYN, tcp_flags::ACK)
    } else {
        (0, 0)
    };
    let (svc1, vip1, port1) = if tcp {
        (SVC6_TCP, v6("fd00:96::a"), 80)
    } else {
        (SVC6_UDP, v6("fd00:96::b"), 53)
    };
    let (svc2, vip2, port2) = if tcp {
        (SVC6_2_TCP, v6("fd00:96::c"), 8443)
    } else {
        (SVC6_2_UDP, v6("fd00:96::c"), 8443)
    };
    let (client, backend) = (v6("fd00:244:2::2"), v6("fd00:244:1::3"));
    // After the switch's DNAT both arrive as client:40000 → backend:8080.
    let request = mk(client, 40000, backend, 8080);
    let req = ipv6(request, syn, b"one");
    let first = TalariaEncap::new(flags::COOKIE_VALID, svc1, 42);
    let (verdict, out) = run(&n, PROG_UPLINK, &from_switch6(first, &req));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        out,
        eth6(POD_MAC, HOST_VETH_MAC, &req),
        "the first flow keeps its port"
    );
    let port_subst = |n: &Node| n.stats().unwrap().event(node_stat::PORT_SUBST);
    // The second Service's request: the client port the backend sees.
    let second = TalariaEncap::new(flags::COOKIE_VALID, svc2, 42);
    let deliver2 = |n: &Node, fl: u8, payload: &[u8]| {
        let (verdict, out) = run(
            n,
            PROG_UPLINK,
            &from_switch6(second, &ipv6(request, fl, payload)),
        );
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let seen = &out[14..];
        assert!(l4_checksum6_ok(seen), "L4 checksum after the port rewrite");
        assert_eq!(&seen[40 + if tcp { 20 } else { 8 }..], payload);
        Tuple6::of(seen)
    };
    let seen = deliver2(&n, syn, b"two");
    let subst = seen.sport;
    assert_ne!(subst, 40000, "the second flow's client port is replaced");
    assert!(
        (1024..32768).contains(&subst) || subst >= 61000,
        "substitutes stay out of the ephemeral range and the privileged ports: {subst}"
    );
    assert_eq!(seen, mk(client, subst, backend, 8080));
    assert_eq!(port_subst(&n), 1);
    // Its next packet takes the same substitute, without a new one.
    assert_eq!(deliver2(&n, ack, b"again").sport, subst);
    assert_eq!(port_subst(&n), 1);
    let mut rev = n.reverse_flows6().unwrap();
    rev.sort_by_key(|(k, _)| k.dst_port.get() != 40000);
    let held: Vec<_> = rev
        .iter()
        .map(|(k, e)| (k.dst_port.get(), e.service_id, e.client_port.get()))
        .collect();
    assert_eq!(
        held,
        [(40000, svc1, 0), (subst, svc2, 40000)],
        "each entry records whose port its key holds"
    );
    let substitutes = n.port_substitutes6().unwrap();
    assert_eq!(substitutes.len(), 1);
    let (k, p) = substitutes[0];
    assert_eq!(
        (k.flow, k.service_id, p.get()),
        (request.reversed().key(), svc2, subst)
    );

    // Each reply from its own VIP6, to the client's own port, hashed as
    // the client's flow for the outer source port.
    let reply = |n: &Node, from_port: u16, fl: u8| {
        let r = ipv6(mk(backend, 8080, client, from_port), fl, b"reply");
        let (verdict, out) = run(n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &r));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let (fl, svc, b, sport, inner) = check_encap6(&out, r.len());
        assert_eq!((fl, b), (flags::REPLY | flags::COOKIE_VALID, 42));
        assert!(l4_checksum6_ok(&inner), "L4 checksum after the reverse NAT");
        assert_eq!(sport, Tuple6::of(&inner).key().outer_sport());
        (svc, Tuple6::of(&inner))
    };
    for (from_port, vip, port, svc) in [(40000, vip1, port1, svc1), (subst, vip2, port2, svc2)] {
        assert_eq!(
            reply(&n, from_port, ack),
            (svc, mk(vip, port, client, 40000))
        );
    }
    assert_eq!(total_drops(&n), 0);

    if tcp {
        // The backend resets the second flow: its entry and substitute
        // go, the RST reaches the client from VIP6 2 to its own port.
        assert_eq!(
            reply(&n, subst, tcp_flags::RST),
            (svc2, mk(vip2, port2, client, 40000))
        );
        let rev = n.reverse_flows6().unwrap();
        assert_eq!((rev.len(), rev[0].1.service_id), (1, svc1));
        assert!(n.port_substitutes6().unwrap().is_empty());
        // A new connection of the second Service gets a substitute
        // afresh; the client's RST ends it and its substitute, and leaves
        // the first flow alone.
        let again = deliver2(&n, tcp_flags::SYN, b"");
        assert_ne!(again.sport, 40000);
        assert_eq!(port_subst(&n), 2);
        deliver2(&n, tcp_flags::RST, b"");
        let rev = n.reverse_flows6().unwrap();
        assert_eq!((rev.len(), rev[0].1.service_id), (1, svc1));
        assert!(n.port_substitutes6().unwrap().is_empty());
        assert_eq!(n.stats().unwrap().event(node_stat::FLOW_RESET), 2);
        assert_eq!(
            reply(&n, 40000, ack),
            (svc1, mk(vip1, port1, client, 40000))
        );
    } else {
        // The GC: both flows idle out, and the substitute goes with its
        // flow's entry.
        let ttl = FlowTtl::from_secs(120, 10, 65);
        let t0 = talaria_node::node::monotonic_ns();
        assert_eq!(n.gc(t0 + 60_000_000_000, &ttl).unwrap(), (0, 0));
        assert_eq!(n.port_substitutes6().unwrap().len(), 1, "still in use");
        assert_eq!(n.gc(t0 + 200_000_000_000, &ttl).unwrap(), (0, 2));
        assert!(n.port_substitutes6().unwrap().is_empty());
    }
}

#[test]
fn ipv6_two_services_sharing_a_backend_from_one_tcp_client_port() {
    require!(LOADS_BPF);
    shared_backend_same_client_port6(true);
}

#[test]
fn ipv6_two_services_sharing_a_backend_from_one_udp_client_port() {
    require!(LOADS_BPF);
    shared_backend_same_client_port6(false);
}

/// As [`a_backend_that_closed_first_keeps_its_4_tuple_for_its_time_wait`],
/// for IPv6 (which does not tell a simultaneous close from the client's):
/// a finished flow's 4-tuple goes to another Service's new flow only once
/// the backend holds nothing, the client having closed first and
/// acknowledged the backend's FIN; until then that flow gets a substitute.
#[test]
fn ipv6_a_finished_flows_4_tuple_is_taken_over_only_once_the_backend_holds_nothing() {
    require!(LOADS_BPF);
    let n = node6();
    let (client, backend) = (v6("fd00:244:2::2"), v6("fd00:244:1::3"));
    let send = |port: u16, svc: u16, fl: u8| {
        let t = Tuple6::tcp(client, port, backend, 8080);
        let enc = TalariaEncap::new(flags::COOKIE_VALID, svc, 42);
        let (verdict, out) = run(&n, PROG_UPLINK, &from_switch6(enc, &ipv6(t, fl, b"")));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        Tuple6::of(&out[14..]).sport
    };
    let backend_fin = |port: u16| {
        let t = Tuple6::tcp(backend, 8080, client, port);
        let fin = ipv6(t, tcp_flags::FIN | tcp_flags::ACK, b"");
        let (verdict, _) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &fin));
        assert_eq!(verdict, TC_ACT_REDIRECT);
    };
    let fin_ack = tcp_flags::FIN | tcp_flags::ACK;
    // Backend first on 40012; client first on 40013, its last ACK gone
    // by; client first on 40015, the backend still in LAST_ACK.
    send(40012, SVC6_TCP, tcp_flags::SYN);
    backend_fin(40012);
    send(40012, SVC6_TCP, fin_ack);
    send(40013, SVC6_TCP, tcp_flags::SYN);
    send(40013, SVC6_TCP, fin_ack);
    backend_fin(40013);
    send(40013, SVC6_TCP, tcp_flags::ACK);
    send(40015, SVC6_TCP, tcp_flags::SYN);
    send(40015, SVC6_TCP, fin_ack);
    backend_fin(40015);

    assert_ne!(
        send(40012, SVC6_2_TCP, tcp_flags::SYN),
        40012,
        "the backend's TIME_WAIT is kept clear"
    );
    assert_eq!(send(40013, SVC6_2_TCP, tcp_flags::SYN), 40013, "taken over");
    assert_ne!(
        send(40015, SVC6_2_TCP, tcp_flags::SYN),
        40015,
        "the backend's LAST_ACK"
    );
    assert_eq!(n.stats().unwrap().event(node_stat::PORT_SUBST), 2);
    assert_eq!(n.port_substitutes6().unwrap().len(), 2);
    assert_eq!(total_drops(&n), 0);
}

#[test]
fn ipv6_what_is_not_served_is_dropped_or_passes() {
    require!(LOADS_BPF);
    let n = node6();
    let pod = v6("fd00:244:1::2");
    let to_vip = ipv6(Tuple6::udp(pod, 40000, v6("fd00:96::b"), 53), 0, b"q");
    // A fragment header or a hop-by-hop header before the UDP one, and
    // ICMPv6 (an echo request): dropped, each with its reason.
    for (next, reason) in [
        (44u8, DropReason::Fragment),
        (0, DropReason::IpOptions),
        (58, DropReason::UnsupportedProtocol),
    ] {
        let mut p = to_vip.clone();
        p[6] = next;
        let (verdict, _) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &p));
        assert_eq!(verdict, TC_ACT_SHOT, "next header {next}");
        assert_eq!(n.stats().unwrap().dropped(reason), 1, "{reason:?}");
    }
    // Pod to pod, and neighbour discovery: untouched.
    let other = ipv6(
        Tuple6::tcp(pod, 40000, v6("fd00:244:2::2"), 80),
        tcp_flags::SYN,
        b"",
    );
    let f = eth6(HOST_VETH_MAC, POD_MAC, &other);
    assert_eq!(run(&n, PROG_POD, &f), (TC_ACT_OK, f.clone()));
    let mut ns = ipv6(
        Tuple6::udp(v6("fe80::1"), 0, v6("ff02::1:ff00:1"), 0),
        0,
        &[0; 16],
    );
    ns[6] = 58;
    let f = eth6(HOST_VETH_MAC, POD_MAC, &ns);
    assert_eq!(run(&n, PROG_POD, &f), (TC_ACT_OK, f.clone()));
    // From the switch: to no local pod, of no known Service.
    let req = ipv6(
        Tuple6::tcp(v6("fd00:244:2::2"), 40000, v6("fd00:244:1::99"), 8080),
        tcp_flags::SYN,
        b"",
    );
    let enc = TalariaEncap::new(flags::COOKIE_VALID, SVC6_TCP, 42);
    assert_eq!(
        run(&n, PROG_UPLINK, &from_switch6(enc, &req)).0,
        TC_ACT_SHOT
    );
    assert_eq!(n.stats().unwrap().dropped(DropReason::UnknownPod), 1);
    let req = ipv6(
        Tuple6::tcp(v6("fd00:244:2::2"), 40000, v6("fd00:244:1::3"), 8080),
        tcp_flags::SYN,
        b"",
    );
    let enc = TalariaEncap::new(flags::COOKIE_VALID, 99, 42);
    assert_eq!(
        run(&n, PROG_UPLINK, &from_switch6(enc, &req)).0,
        TC_ACT_SHOT
    );
    assert_eq!(n.stats().unwrap().dropped(DropReason::NoService), 1);
    // A plain IPv6 packet from a VIP6 on the uplink.
    let plain = eth6(
        NODE_MAC,
        SWITCH_MAC,
        &ipv6(
            Tuple6::tcp(v6("fd00:96::a"), 80, v6("fd00:244:1::2"), 40000),
            tcp_flags::ACK,
            b"",
        ),
    );
    assert_eq!(run(&n, PROG_UPLINK, &plain).0, TC_ACT_SHOT);
    assert_eq!(n.stats().unwrap().dropped(DropReason::ServiceSource), 1);
    assert_eq!(total_drops(&n), 6, "nothing else dropped");
}

/// `sessionAffinity: ClientIP` on an IPv6 port, kept on the client's node
/// as IPv4's (`NODE_AFFINITY_V6`): once a client's flow learned its
/// backend, the client's new flows go with that backend as their cookie,
/// until it takes no new flows.
#[test]
fn ipv6_session_affinity_keeps_a_client_on_its_backend() {
    require!(LOADS_BPF);
    let mut n = node6();
    let affinity = |active: Vec<u32>| ServiceConfig {
        affinity_timeout_secs: 60,
        active,
        ..ServiceConfig::new(SVC6_TCP, v6("fd00:96::a"), 80, "tcp")
    };
    n.set_services(&[affinity(vec![42, 43])]).unwrap();
    let (pod, vip) = (v6("fd00:244:1::2"), v6("fd00:96::a"));
    let syn_from = |n: &Node, sport| {
        let syn = ipv6(Tuple6::tcp(pod, sport, vip, 80), tcp_flags::SYN, b"");
        let (verdict, out) = run(n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &syn));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let (fl, svc, backend, _, _) = check_encap6(&out, syn.len());
        (fl, svc, backend)
    };
    assert_eq!(syn_from(&n, 40000), (flags::NEW_FLOW, 0, 0), "nothing yet");
    // The switch chose 43 for it: the client's backend from now on.
    let synack = ipv6(
        Tuple6::tcp(vip, 80, pod, 40000),
        tcp_flags::SYN | tcp_flags::ACK,
        b"",
    );
    let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC6_TCP, 43);
    assert_eq!(
        run(&n, PROG_UPLINK, &from_switch6(enc, &synack)).0,
        TC_ACT_REDIRECT
    );
    for sport in 40001..40009 {
        assert_eq!(
            syn_from(&n, sport),
            (flags::COOKIE_VALID, SVC6_TCP, 43),
            "a new connection from port {sport}"
        );
    }
    assert_eq!(n.stats().unwrap().event(node_stat::AFFINITY), 8);
    // 43 takes no new flows: the switch's hash again.
    n.set_services(&[affinity(vec![42])]).unwrap();
    assert_eq!(syn_from(&n, 40010), (flags::NEW_FLOW, 0, 0));
    assert_eq!(n.stats().unwrap().event(node_stat::AFFINITY), 8);
}

/// Two UDP Services (`SVC6_UDP`, `SVC6_2_UDP`) share backend
/// fd00:244:1::3, and one client reaches both from one port: returns the
/// requests' tuple after the switch's DNAT, and the substitute client port
/// from which the second flow reaches the backend.
fn two_udp_flows_sharing_a_backend6(n: &Node) -> (Tuple6, u16) {
    let request = Tuple6::udp(v6("fd00:244:2::2"), 40000, v6("fd00:244:1::3"), 8080);
    for svc in [SVC6_UDP, SVC6_2_UDP] {
        let enc = TalariaEncap::new(flags::COOKIE_VALID, svc, 42);
        let req = from_switch6(enc, &ipv6(request, 0, b"query"));
        assert_eq!(run(n, PROG_UPLINK, &req).0, TC_ACT_REDIRECT);
    }
    let subst = n
        .reverse_flows6()
        .unwrap()
        .iter()
        .find(|(_, e)| e.client_port.get() == 40000)
        .map(|(k, _)| k.dst_port.get())
        .expect("the second flow has a substitute");
    (request, subst)
}

/// A backend pod's ICMPv6 error about a Service flow (here port
/// unreachable, as its kernel sends when no socket listens) goes back to
/// the client as IPv4's does: from VIP6, quoting the client's own packet
/// to VIP6:port (its own port too, where the flow has a substitute), with
/// the ICMPv6 checksum fixed, tunnelled as a reply with the flow's cookie;
/// on the client's node it is delivered as it is. Only the backend may
/// send it; messages that are not errors about a Service flow pass.
#[test]
fn ipv6_icmp_error_from_a_backend_is_reverse_natted() {
    require!(LOADS_BPF);
    use talaria_common::maps::mtu_stat;
    use talaria_node::packet::{icmp6_checksum_ok, icmp6_error};
    let mut n = node6();
    let (request, subst) = two_udp_flows_sharing_a_backend6(&n);
    let (client, backend) = (request.src, request.dst);

    let services = [
        (40000, v6("fd00:96::b"), 53, SVC6_UDP),
        (subst, v6("fd00:96::c"), 8443, SVC6_2_UDP),
    ];
    for (port, vip, vip_port, svc) in services {
        let delivered = ipv6(Tuple6::udp(client, port, backend, 8080), 0, b"query");
        let error = icmp6_error(backend, client, 1, 4, 0, &delivered);
        let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &error));
        assert_eq!(verdict, TC_ACT_REDIRECT, "service {svc}");
        let (fl, s, b, sport, inner) = check_encap6(&out, error.len());
        assert_eq!((fl, s, b), (flags::REPLY | flags::COOKIE_VALID, svc, 42));
        assert!(
            icmp6_checksum_ok(&inner),
            "ICMPv6 checksum after the rewrite"
        );
        let client_view = Tuple6::udp(client, 40000, vip, vip_port);
        let expected = icmp6_error(vip, client, 1, 4, 0, &ipv6(client_view, 0, b"query"));
        // All as the client sent it to VIP6, but the checksums: the
        // ICMPv6 one (checked above) and the quoted UDP one, left alone.
        let (icmp_check, quoted_check) = (42..44, 94..96);
        let strip = |p: &[u8]| {
            let mut p = p.to_vec();
            p[icmp_check.clone()].fill(0);
            p[quoted_check.clone()].fill(0);
            p
        };
        assert_eq!(strip(&inner), strip(&expected), "service {svc}");
        assert_eq!(&inner[quoted_check.clone()], &delivered[46..48]);
        assert_eq!(
            sport,
            client_view.reversed().key().outer_sport(),
            "hashed as the client's flow"
        );
    }
    assert_eq!(total_drops(&n), 0);

    // Another pod on the node may not speak for the flow.
    let req = ipv6(request, 0, b"query");
    let spoofed = icmp6_error(v6("fd00:244:1::2"), client, 1, 4, 0, &req);
    let (verdict, _) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &spoofed));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(n.stats().unwrap().dropped(DropReason::IcmpSpoof), 1);
    // An echo request, and an error about no Service flow: untouched.
    let ping = icmp6_error(backend, client, 128, 0, 0x0001_0001, b"");
    let unknown = icmp6_error(
        backend,
        client,
        1,
        4,
        0,
        &ipv6(Tuple6::udp(client, 40001, backend, 8080), 0, b""),
    );
    for p in [ping, unknown] {
        let f = eth6(HOST_VETH_MAC, POD_MAC, &p);
        assert_eq!(run(&n, PROG_POD, &f), (TC_ACT_OK, f.clone()));
    }
    // An error too big for the tunnel is dropped, not answered.
    n.set_uplink_mtu(1300).unwrap();
    let long = icmp6_error(backend, client, 1, 4, 0, &ipv6(request, 0, &[0; 1300]));
    let (verdict, _) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &long));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(
        n.stats().unwrap().mtu_event(mtu_stat::TOO_BIG_ICMP),
        1,
        "no error about an error"
    );

    // The client's node delivers the relayed error as it is, learning
    // nothing.
    let pod = v6("fd00:244:1::2");
    let relayed = icmp6_error(
        v6("fd00:96::b"),
        pod,
        1,
        4,
        0,
        &ipv6(Tuple6::udp(pod, 40000, v6("fd00:96::b"), 53), 0, b"query"),
    );
    let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC6_UDP, 42);
    let (verdict, out) = run(&n, PROG_UPLINK, &from_switch6(enc, &relayed));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, eth6(POD_MAC, HOST_VETH_MAC, &relayed));
    assert!(n.cookies6().unwrap().is_empty(), "nothing learned");
}

/// A client pod's ICMPv6 error about a reply it got (port unreachable
/// when its socket is gone) goes to the backend that sent the reply, as
/// IPv4's does: tunnelled with the flow's cookie, unchanged (the switch
/// rewrites it as the backend sent the reply); on the backend's node, the
/// relayed error is delivered if it is about the backend's flow that the
/// cookie names, quoting the client port the backend knows (its
/// substitute, if the flow has one).
#[test]
fn ipv6_icmp_error_from_a_client_about_a_reply_goes_to_its_backend() {
    require!(LOADS_BPF);
    use talaria_node::packet::{icmp6_checksum_ok, icmp6_error};
    let n = node6();
    let (pod, vip) = (v6("fd00:244:1::2"), v6("fd00:96::b"));
    let flow = Tuple6::udp(pod, 40000, vip, 53);
    let reply = ipv6(flow.reversed(), 0, b"answer");
    let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC6_UDP, 42);
    assert_eq!(
        run(&n, PROG_UPLINK, &from_switch6(enc, &reply)).0,
        TC_ACT_REDIRECT
    );
    let icmp_relay = |n: &Node| n.stats().unwrap().event(node_stat::ICMP_RELAY);

    // Client side: the pod's socket is gone when the next reply comes.
    let error = icmp6_error(pod, vip, 1, 4, 0, &reply);
    let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &error));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (fl, svc, backend, sport, inner) = check_encap6(&out, error.len());
    assert_eq!((fl, svc, backend), (flags::COOKIE_VALID, SVC6_UDP, 42));
    assert_eq!(inner, error, "unchanged: the switch rewrites it");
    assert_eq!(sport, flow.key().outer_sport(), "the flow's outer port");
    assert_eq!(icmp_relay(&n), 1);
    // About a reply to another pod, or about no flow of this one, or no
    // error at all (an echo request): not relayed.
    let dropped = |n: &Node, r| n.stats().unwrap().dropped(r);
    let other_pod = ipv6(Tuple6::udp(vip, 53, v6("fd00:244:1::3"), 40000), 0, b"");
    let no_flow = ipv6(Tuple6::udp(vip, 53, pod, 40001), 0, b"");
    for quoted in [other_pod, no_flow] {
        let e = icmp6_error(pod, vip, 1, 4, 0, &quoted);
        let (verdict, _) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &e));
        assert_eq!(verdict, TC_ACT_SHOT);
    }
    assert_eq!(dropped(&n, DropReason::IcmpSpoof), 2);
    let ping = icmp6_error(pod, vip, 128, 0, 0x0001_0001, b"");
    let (verdict, _) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &ping));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(dropped(&n, DropReason::UnsupportedProtocol), 1);

    // Backend side.
    let (request, subst) = two_udp_flows_sharing_a_backend6(&n);
    let (client, backend) = (request.src, request.dst);
    // The client's error as the switch relays it: to the backend, quoting
    // the reply as the backend sent it, to the client's own port.
    let backend_reply = ipv6(request.reversed(), 0, b"answer");
    let relayed = icmp6_error(client, backend, 1, 4, 0, &backend_reply);
    for (svc, port) in [(SVC6_UDP, 40000), (SVC6_2_UDP, subst)] {
        let enc = TalariaEncap::new(flags::COOKIE_VALID, svc, 42);
        let (verdict, out) = run(&n, PROG_UPLINK, &from_switch6(enc, &relayed));
        assert_eq!(verdict, TC_ACT_REDIRECT, "service {svc}");
        let delivered = &out[14..];
        assert!(icmp6_checksum_ok(delivered), "ICMPv6 checksum");
        let quoted = Tuple6::of(&delivered[48..]);
        assert_eq!(quoted, Tuple6::udp(backend, 8080, client, port));
        // All else as relayed (bytes 42..44: the ICMPv6 checksum).
        let mut expected = relayed.clone();
        expected[90..92].copy_from_slice(&port.to_be_bytes());
        expected[42..44].copy_from_slice(&delivered[42..44]);
        assert_eq!(delivered, &expected[..]);
    }
    assert_eq!(icmp_relay(&n), 3);
    // Another backend's cookie, or a flow of no Service it names: dropped.
    for (svc, backend_id) in [(SVC6_UDP, 43), (SVC6_TCP, 42)] {
        let enc = TalariaEncap::new(flags::COOKIE_VALID, svc, backend_id);
        let (verdict, _) = run(&n, PROG_UPLINK, &from_switch6(enc, &relayed));
        assert_eq!(verdict, TC_ACT_SHOT);
    }
    assert_eq!(dropped(&n, DropReason::IcmpSpoof), 4);
    assert_eq!(icmp_relay(&n), 3);
}

/// IPv6 ports follow their policy as IPv4's do: a port without a usable
/// endpoint is refused with an ICMPv6 port unreachable from the VIP6 back
/// into the pod (kube-proxy's REJECT; for TCP too), a port with preferred
/// backends sends its new flows with one of them as the cookie, and a
/// Local port with none here drops them. Established flows (a cached
/// cookie) are not asked again.
#[test]
fn ipv6_new_flows_follow_their_ports_policy() {
    require!(LOADS_BPF);
    use talaria_node::packet::icmp6_error;
    let mut n = node6();
    let with = |id, vip: &str, port, protocol: &str, reject, preferred: Vec<u32>, local_only| {
        ServiceConfig {
            reject,
            preferred,
            local_only,
            // An IPv4-only policy, which an IPv6 port ignores.
            agentless: true,
            ..ServiceConfig::new(id, v6(vip), port, protocol)
        }
    };
    n.set_services(&[
        with(SVC6_TCP, "fd00:96::a", 80, "tcp", true, vec![], false),
        with(SVC6_UDP, "fd00:96::b", 53, "udp", true, vec![], false),
        with(
            SVC6_2_TCP,
            "fd00:96::c",
            8443,
            "tcp",
            false,
            vec![42, 43],
            true,
        ),
        with(SVC6_2_UDP, "fd00:96::c", 8443, "udp", false, vec![], true),
    ])
    .unwrap();
    let pod = v6("fd00:244:1::2");
    for (t, fl) in [
        (
            Tuple6::tcp(pod, 40000, v6("fd00:96::a"), 80),
            tcp_flags::SYN,
        ),
        (Tuple6::udp(pod, 40001, v6("fd00:96::b"), 53), 0),
    ] {
        let pkt = ipv6(t, fl, b"x");
        let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &pkt));
        assert_eq!(verdict, TC_ACT_REDIRECT, "{t:?}: back to the pod");
        let quoted = if t.proto == IPPROTO_TCP { 60 } else { 48 };
        let refusal = icmp6_error(t.dst, t.src, 1, 4, 0, &pkt[..quoted]);
        assert_eq!(
            out,
            eth6(POD_MAC, HOST_VETH_MAC, &refusal),
            "{t:?}: port unreachable from the VIP6, quoting the IPv6 and L4 headers"
        );
    }
    assert_eq!(n.stats().unwrap().event(node_stat::REJECTED), 2);

    let mut seen = std::collections::BTreeSet::new();
    for sport in 40000..40032 {
        let t = Tuple6::tcp(pod, sport, v6("fd00:96::c"), 8443);
        let syn = ipv6(t, tcp_flags::SYN, b"");
        let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &syn));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let (fl, svc, backend, _, inner) = check_encap6(&out, syn.len());
        assert_eq!((fl, svc, inner), (flags::COOKIE_VALID, SVC6_2_TCP, syn));
        seen.insert(backend);
    }
    assert_eq!(
        seen,
        [42, 43].into(),
        "both preferred backends, nothing else"
    );
    assert_eq!(n.stats().unwrap().event(node_stat::PREFERRED), 32);
    let udp = ipv6(Tuple6::udp(pod, 5000, v6("fd00:96::c"), 8443), 0, b"q");
    let (verdict, _) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &udp));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(n.stats().unwrap().dropped(DropReason::NoLocalEndpoint), 1);

    // A flow whose cookie the node learned before the port lost its
    // endpoints goes on with it, as conntrack keeps an established flow.
    let flow = Tuple6::tcp(pod, 41000, v6("fd00:96::a"), 80);
    let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC6_TCP, 42);
    let synack = ipv6(flow.reversed(), tcp_flags::SYN | tcp_flags::ACK, b"");
    assert_eq!(
        run(&n, PROG_UPLINK, &from_switch6(enc, &synack)).0,
        TC_ACT_REDIRECT
    );
    let ack = ipv6(flow, tcp_flags::ACK, b"GET /");
    let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &ack));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (fl, svc, backend, _, _) = check_encap6(&out, ack.len());
    assert_eq!((fl, svc, backend), (flags::COOKIE_VALID, SVC6_TCP, 42));
    assert_eq!(n.stats().unwrap().event(node_stat::REJECTED), 2);
}

#[test]
fn ipv6_services_and_cidrs_go_to_their_maps_and_the_gc_covers_ipv6_flows() {
    require!(LOADS_BPF);
    let mut n = node6();
    let cidrs = n.service_cidrs().unwrap();
    assert!(cidrs.contains(&(v6("fd00:96::").into(), 108)), "{cidrs:?}");
    assert!(cidrs.contains(&(Ipv4Addr::new(10, 96, 0, 0).into(), 12)));
    n.set_service_cidrs(&[(Ipv4Addr::new(10, 96, 0, 0).into(), 12)])
        .unwrap();
    assert_eq!(n.service_cidrs().unwrap().len(), 1, "the IPv6 one removed");
    n.add_service_cidrs(&[(v6("fd00:96::1").into(), 108)])
        .unwrap();
    assert!(
        n.service_cidrs()
            .unwrap()
            .contains(&(v6("fd00:96::").into(), 108)),
        "host bits cleared"
    );

    let udp = Tuple6::udp(v6("fd00:244:1::2"), 40004, v6("fd00:96::b"), 53);
    let tcp_open = Tuple6::tcp(v6("fd00:244:1::2"), 40005, v6("fd00:96::a"), 80);
    let tcp_done = Tuple6::tcp(v6("fd00:244:1::2"), 40006, v6("fd00:96::a"), 80);
    let e = CookieEntry {
        service_id: SVC6_TCP,
        backend_id: 1,
        last_seen_ns: 1_000,
        ..Default::default()
    };
    n.insert_cookie6(&udp.key(), &e).unwrap();
    n.insert_cookie6(&tcp_open.key(), &e).unwrap();
    n.insert_cookie6(&tcp_done.key(), &CookieEntry { fin_seen: 3, ..e })
        .unwrap();
    let ttl = FlowTtl {
        udp_idle_ns: 10_000,
        fin_grace_ns: 10_000,
        time_wait_ns: 10_000,
    };
    assert_eq!(n.gc(2_000, &ttl).unwrap(), (0, 0), "nothing idle yet");
    assert_eq!(n.gc(1_000_000, &ttl).unwrap(), (2, 0));
    let left: Vec<_> = n.cookies6().unwrap().into_iter().map(|c| c.0).collect();
    assert_eq!(left, vec![tcp_open.key()], "an open TCP flow stays");
}

/// Checks that `out` is the ICMPv6 Packet Too Big that replaces `orig` (an
/// IPv6 packet from `POD_MAC` to `HOST_VETH_MAC`): MACs swapped, from
/// `orig`'s destination to its source, hop limit 64, type 2 code 0, MTU
/// `mtu`, 1280 bytes of IPv6 quoting the first 1232 bytes of `orig`, and
/// a checksum that verifies over the pseudo-header.
fn check_packet_too_big(out: &[u8], orig: &[u8], mtu: u32) {
    use talaria_common::net::{fold, sum16};
    assert_eq!(
        (&out[0..6], &out[6..12], &out[12..14]),
        (&POD_MAC[..], &HOST_VETH_MAC[..], &[0x86, 0xdd][..]),
        "to the pod, EtherType IPv6"
    );
    let ip = &out[14..];
    assert_eq!(ip.len(), 1280, "as long as RFC 4443 allows, no longer");
    assert_eq!(
        &ip[0..4],
        &[0x60, 0, 0, 0],
        "version 6, class 0, no flow label"
    );
    assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 1240, "payload length");
    assert_eq!((ip[6], ip[7]), (58, 64), "ICMPv6, hop limit 64");
    assert_eq!(
        &ip[8..24],
        &orig[24..40],
        "from the address the pod sent to"
    );
    assert_eq!(&ip[24..40], &orig[8..24], "to the pod");
    assert_eq!((ip[40], ip[41]), (2, 0), "Packet Too Big, code 0");
    assert_eq!(
        u32::from_be_bytes([ip[44], ip[45], ip[46], ip[47]]),
        mtu,
        "the MTU"
    );
    assert_eq!(&ip[48..], &orig[..1232], "quotes the start of the packet");
    let pseudo = sum16(&ip[8..40]) + 58 + 1240;
    assert_eq!(fold(pseudo + sum16(&ip[40..])), 0xffff, "ICMPv6 checksum");
    assert_ne!(&ip[42..44], &[0, 0], "a checksum was written");
}

#[test]
fn ipv6_too_big_for_the_uplink_is_answered_with_packet_too_big() {
    require!(LOADS_BPF);
    use talaria_common::maps::mtu_stat;
    let mut n = node6();
    n.set_uplink_mtu(1500).unwrap();
    let pod = v6("fd00:244:1::2");
    let vip_tcp = v6("fd00:96::a");
    let flow = Tuple6::tcp(pod, 40000, vip_tcp, 80);
    let tcp = |len: usize| ipv6(flow, tcp_flags::ACK, &vec![0x5a; len]);
    let frag_needed = |n: &Node| n.stats().unwrap().mtu_event(mtu_stat::FRAG_NEEDED);

    // 40 + 20 + 1392 + 48 = 1500 fits: tunnelled as before.
    let fits = tcp(1392);
    let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &fits));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (_, _, _, _, inner) = check_encap6(&out, fits.len());
    assert_eq!(inner, fits);
    assert_eq!(out.len() - 14, 1500, "a full uplink-MTU packet");

    // One byte more: Packet Too Big back to the pod, MTU 1500 − 48.
    let big = tcp(1393);
    let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &big));
    assert_eq!(verdict, TC_ACT_REDIRECT, "redirected back to the pod");
    check_packet_too_big(&out, &big, 1452);
    assert_eq!(frag_needed(&n), 1);
    let s = n.stats().unwrap();
    assert_eq!(s.event(node_stat::ENCAP), 1, "only the packet that fit");
    assert_eq!(s.mtu_event(mtu_stat::TOO_BIG_NO_DF), 0);

    // UDP: the same (every IPv6 packet is as if DF were set).
    let udp = ipv6(Tuple6::udp(pod, 40001, v6("fd00:96::b"), 53), 0, &[7; 1405]);
    let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &udp));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_packet_too_big(&out, &udp, 1452);

    // A GSO packet is checked by its segments (40 + 20 + 1393 + 48 >
    // 1500), as IPv4's; the quote is the start of the super-packet.
    let gso = tcp(3000);
    let (verdict, out) = test_run(
        &n,
        PROG_POD,
        &eth6(HOST_VETH_MAC, POD_MAC, &gso),
        Some(&gso_ctx(1393, 3)),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_packet_too_big(&out, &gso, 1452);
    assert_eq!(frag_needed(&n), 3);
    // (The fitting case of a GSO skb cannot be run here, see
    // `gso_packet_whose_segments_do_not_fit_gets_frag_needed`.)

    // Inner MTU exactly the IPv6 minimum: 1280 fits, 1281 gets MTU 1280.
    n.set_uplink_mtu(1328).unwrap();
    let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &tcp(1220)));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_encap6(&out, 1280);
    let big = tcp(1221);
    let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &big));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_packet_too_big(&out, &big, 1280);

    // An uplink too small for IPv6 (1300 − 48 < 1280): the MTU reported
    // is never below 1280, and a packet of 1280 bytes or less, which a
    // Packet Too Big could not shrink, is dropped and counted.
    n.set_uplink_mtu(1300).unwrap();
    let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &big));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_packet_too_big(&out, &big, 1280);
    let (verdict, _) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &tcp(1220)));
    assert_eq!(verdict, TC_ACT_SHOT);
    let s = n.stats().unwrap();
    assert_eq!(s.mtu_event(mtu_stat::FRAG_NEEDED), 5);
    assert_eq!(s.mtu_event(mtu_stat::TOO_BIG_NO_DF), 1);
    assert_eq!(total_drops(&n), 0, "a Packet Too Big is an answer");
    assert_eq!(
        (s.event(node_stat::CACHE_MISS), s.event(node_stat::ENCAP)),
        (2, 2),
        "only the two packets that fit reached the cookie cache"
    );
}

#[test]
fn ipv6_too_big_backend_reply_gets_packet_too_big_before_reverse_nat() {
    require!(LOADS_BPF);
    use talaria_common::maps::mtu_stat;
    let mut n = node6();
    n.set_uplink_mtu(1500).unwrap();
    let client = v6("fd00:244:2::2");
    let request = Tuple6::tcp(client, 40000, v6("fd00:244:1::3"), 8080);
    let req = ipv6(request, tcp_flags::SYN, b"");
    let enc = TalariaEncap::new(flags::COOKIE_VALID | flags::NEW_FLOW, SVC6_TCP, 42);
    assert_eq!(
        run(&n, PROG_UPLINK, &from_switch6(enc, &req)).0,
        TC_ACT_REDIRECT
    );
    // The backend pod (MTU 1500) answers with a 1500-byte segment: the
    // error goes to the backend, "from" the client it was sending to, and
    // quotes the reply as the backend sent it (before reverse NAT).
    let reply = ipv6(request.reversed(), tcp_flags::ACK, &[9; 1440]);
    let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &reply));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_packet_too_big(&out, &reply, 1452);
    assert_eq!(&out[14 + 8..14 + 24], &client.octets());
    let s = n.stats().unwrap();
    assert_eq!(s.mtu_event(mtu_stat::FRAG_NEEDED), 1);
    assert_eq!(s.event(node_stat::REVERSE_NAT), 0);
    assert_eq!(n.reverse_flows6().unwrap().len(), 1, "flow state untouched");
    // A reply that fits is reverse-NATed and tunnelled as before.
    let small = ipv6(request.reversed(), tcp_flags::ACK, &[9; 100]);
    let (verdict, out) = run(&n, PROG_POD, &eth6(HOST_VETH_MAC, POD_MAC, &small));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (_, _, _, _, inner) = check_encap6(&out, small.len());
    assert!(l4_checksum6_ok(&inner));
}
