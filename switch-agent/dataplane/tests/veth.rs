//! Real packets through the switch over veths: namespace A (client node)
//! — switch namespace (ports 1 and 2, bpf_redirect between them) —
//! namespace B (backend node). Root only; every namespace is created here
//! and removed on drop, and traffic goes only to addresses inside them.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    time::Duration,
};
use talaria_preflight::{require, LOADS_BPF};
use talaria_tables::build;

use talaria_common::{
    be::{Be16, Be32},
    hash::hash_mode,
    net::IPPROTO_TCP,
    wire::{self, flags, TalariaEncap},
};
use talaria_switch_dataplane::{
    testing::{self, ip, mac, Inner, NetNs, TestSwitch},
    Target,
};

const SWITCH: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GW_A: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const GW_B: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 1);
const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const BACKEND_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 5);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs `f` with the calling thread inside `ns`, then returns it.
fn in_ns<T>(ns: &NetNs, f: impl FnOnce() -> T) -> T {
    let back = File::open("/proc/thread-self/ns/net").unwrap();
    ns.enter_again();
    let r = f();
    // SAFETY: setns on a valid namespace fd.
    unsafe { libc::setns(back.as_raw_fd(), libc::CLONE_NEWNET) };
    r
}

struct Lab {
    // Field order is drop order: the node namespaces go first, then the
    // switch (links detached, pins removed, namespace deleted).
    a: NetNs,
    b: NetNs,
    sw: TestSwitch,
}

fn lab() -> Lab {
    let sw = TestSwitch::new("e2e", 2);
    let a = NetNs::create("nodea");
    let b = NetNs::create("nodeb");
    let sw_mac = [mac(0x51), mac(0x52)];
    let node_mac = [mac(0xa1), mac(0xb2)];
    for (i, (ns, node, gw)) in [(&a, NODE_A, GW_A), (&b, NODE_B, GW_B)]
        .into_iter()
        .enumerate()
    {
        let (port, peer) = (format!("sw{}", i + 1), format!("peer{}", i + 1));
        ip(&["link", "set", &port, "address", &mac_str(sw_mac[i])]);
        ip(&["link", "set", &peer, "netns", &ns.name]);
        let n = ns.name.as_str();
        ip(&[
            "-n",
            n,
            "link",
            "set",
            &peer,
            "address",
            &mac_str(node_mac[i]),
        ]);
        ip(&["-n", n, "link", "set", &peer, "up"]);
        ip(&["-n", n, "addr", "add", &format!("{node}/24"), "dev", &peer]);
        ip(&[
            "-n",
            n,
            "neigh",
            "add",
            &gw.to_string(),
            "lladdr",
            &mac_str(sw_mac[i]),
            "dev",
            &peer,
        ]);
        ip(&[
            "-n",
            n,
            "route",
            "add",
            "default",
            "via",
            &gw.to_string(),
            "dev",
            &peer,
        ]);
    }
    let dp = sw.dp();
    for (i, net) in [Ipv4Addr::new(192, 168, 1, 0), Ipv4Addr::new(192, 168, 2, 0)]
        .into_iter()
        .enumerate()
    {
        dp.insert(&build::route(
            build::prefix(net, 24),
            i as u16 + 1,
            sw_mac[i],
            node_mac[i],
        ))
        .unwrap();
    }
    Lab { a, b, sw }
}

fn recv_socket(ns: &NetNs, addr: Ipv4Addr, port: u16) -> UdpSocket {
    in_ns(ns, || {
        let s = UdpSocket::bind(SocketAddrV4::new(addr, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    })
}

#[test]
fn plain_udp_crosses_the_switch() {
    require!(LOADS_BPF);
    let lab = lab();
    let rx = recv_socket(&lab.b, NODE_B, 9000);
    let tx = in_ns(&lab.a, || {
        UdpSocket::bind(SocketAddrV4::new(NODE_A, 0)).unwrap()
    });
    tx.send_to(b"across", SocketAddrV4::new(NODE_B, 9000))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = rx
        .recv_from(&mut buf)
        .expect("packet routed through the switch");
    assert_eq!(&buf[..n], b"across");
    assert_eq!(from.ip(), std::net::IpAddr::V4(NODE_A));
    let stats = lab.sw.dp().port_stats().unwrap();
    assert!(
        stats[0].rx.packets >= 1 && stats[1].tx.packets >= 1,
        "{stats:?}"
    );
}

#[test]
fn tunnel_is_load_balanced_across_the_switch() {
    require!(LOADS_BPF);
    let lab = lab();
    let dp = lab.sw.dp();
    for e in [
        build::switch_addr(SWITCH),
        // Node A is attached to port 1.
        build::tunnel_peer(1, NODE_A),
        build::service(VIP, 80, IPPROTO_TCP, 7, 0, hash_mode::FIVE_TUPLE),
        build::bucket(7, 0, 100),
        build::cookie(7, 100),
        build::backend(100, BACKEND_IP, 8080, NODE_B),
    ] {
        dp.insert(&e).unwrap();
    }
    let rx = recv_socket(&lab.b, NODE_B, wire::GENEVE_UDP_PORT);
    let tx = in_ns(&lab.a, || {
        let s = UdpSocket::bind(SocketAddrV4::new(NODE_A, 0)).unwrap();
        // Outer UDP checksum 0, as talaria nodes send it.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a valid int option.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&one as *const libc::c_int).cast(),
                4,
            )
        };
        assert_eq!(r, 0);
        s
    });
    let inner = Inner::tcp(CLIENT, 40000, VIP, 80);
    let mut payload = TalariaEncap::new(flags::NEW_FLOW, 0, 0).to_bytes().to_vec();
    payload.extend_from_slice(&inner.to_bytes());
    tx.send_to(&payload, SocketAddrV4::new(SWITCH, wire::GENEVE_UDP_PORT))
        .unwrap();

    let mut buf = [0u8; 2048];
    let (n, from) = rx
        .recv_from(&mut buf)
        .expect("tunnel re-originated to the backend's node");
    assert_eq!(
        from.ip(),
        std::net::IpAddr::V4(SWITCH),
        "outer source is the switch address"
    );
    let got = &buf[..n];
    let parsed = wire::parse(got).expect("valid Geneve");
    assert_eq!(parsed.opt.flags, flags::NEW_FLOW | flags::COOKIE_VALID);
    assert_eq!(parsed.opt.service_id, Be16::new(7));
    assert_eq!(parsed.opt.backend_id, Be32::new(100));
    let ip_pkt = &got[parsed.inner_offset..];
    assert!(
        testing::ipv4_header_ok(&ip_pkt[..20]),
        "inner IPv4 checksum"
    );
    assert_eq!(&ip_pkt[16..20], &BACKEND_IP.octets(), "DNAT address");
    let seg = &ip_pkt[20..];
    assert_eq!(u16::from_be_bytes([seg[2], seg[3]]), 8080, "DNAT port");
    let stored = u16::from_be_bytes([seg[16], seg[17]]);
    assert_eq!(
        stored,
        testing::l4_checksum(CLIENT, BACKEND_IP, IPPROTO_TCP, seg),
        "inner TCP checksum"
    );
    assert_eq!(dp.backend_counter(100).unwrap().packets, 1);
}

#[test]
fn forwarding_survives_close_and_reopen() {
    require!(LOADS_BPF);
    let mut lab = lab();
    let rx = recv_socket(&lab.b, NODE_B, 9001);
    let tx = in_ns(&lab.a, || {
        UdpSocket::bind(SocketAddrV4::new(NODE_A, 0)).unwrap()
    });
    let mut buf = [0u8; 64];

    // The process goes away: maps and links stay pinned.
    let dp = lab.sw.dp.take().unwrap();
    let config = talaria_switch_dataplane::Config {
        pin_dir: dp.pin_dir().to_path_buf(),
        ports: dp
            .ports()
            .iter()
            .map(|(p, (n, _))| (*p, n.clone()))
            .collect(),
    };
    dp.close();
    tx.send_to(b"while closed", SocketAddrV4::new(NODE_B, 9001))
        .unwrap();
    let (n, _) = rx
        .recv_from(&mut buf)
        .expect("still forwarding with no process");
    assert_eq!(&buf[..n], b"while closed");

    // A new process takes over the same maps and links.
    let dp = talaria_switch_dataplane::Dataplane::open(config).unwrap();
    assert_eq!(
        dp.entries(talaria_switch_dataplane::Table::Ipv4Route)
            .unwrap()
            .len(),
        2
    );
    tx.send_to(b"after reopen", SocketAddrV4::new(NODE_B, 9001))
        .unwrap();
    let (n, _) = rx.recv_from(&mut buf).expect("forwarding after reopen");
    assert_eq!(&buf[..n], b"after reopen");
    lab.sw.dp = Some(dp);
}
