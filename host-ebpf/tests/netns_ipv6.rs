//! Root-only: the node programs' IPv6 Service path on real veths, in
//! network namespaces this test creates (removed on drop, also on panic).
//! The switch's IPv6 pipeline is another crate's; here the test plays the
//! switch on the far end of the node's uplink with a packet socket: it
//! reads what the node tunnels and sends tunnels as the switch would.
//!
//! ```text
//!  pod fd00:244:1::2 ─ vp ┤ node uplink 10.200.1.2 ─ sw1 ┤ "switch" 10.200.0.1 (this test)
//! ```
//!
//! What `BPF_PROG_TEST_RUN` cannot show: that a real skb of an IPv6 pod
//! packet leaves the uplink as IPv4 Geneve, and that a decapsulated IPv6
//! packet reaches the pod's socket (skb protocol, EtherType, MACs,
//! checksums with offload off).

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use talaria_common::{
    be::{Be16, Be32},
    maps::{NodeConfig, PodEntry},
    wire::{flags, TalariaEncap, GENEVE_PROTO_IPV6, GENEVE_UDP_PORT},
};
use talaria_node::{
    config::ServiceConfig,
    node::{Node, PROG_POD, PROG_UPLINK},
    packet::{ipv6, l4_checksum6_ok, talaria, Tuple6},
    sys::{self, NetNs},
};
use talaria_preflight::{require, LOADS_BPF};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 2);
const SWITCH_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const SVC6_UDP: u16 = 21;
const SVC6_TCP: u16 = 20;
/// A second UDP Service (fd00:96::c:53) on the same pod.
const SVC6_UDP2: u16 = 22;
const BACKEND: u32 = 42;

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn pod_ip() -> Ipv6Addr {
    v6("fd00:244:1::2")
}

fn vip6() -> Ipv6Addr {
    v6("fd00:96::b")
}

/// The namespaces and the node. Field order: the node (and its links)
/// goes before the namespaces.
struct Lab6 {
    node: Option<Node>,
    uplink_mac: [u8; 6],
    sw_mac: [u8; 6],
    pod: NetNs,
    _n: NetNs,
    sw: NetNs,
}

impl Drop for Lab6 {
    fn drop(&mut self) {
        // Unpinned: dropping the node detaches its programs.
        self.node = None;
    }
}

fn mac_in(ns: &str, ifname: &'static str) -> [u8; 6] {
    sys::in_netns(ns, move || sys::mac(ifname))
        .unwrap()
        .unwrap()
}

impl Lab6 {
    /// `full_checksums`: the pod computes its checksums (tx offload off,
    /// which turns TSO off too); else veth offloads, TSO included.
    fn new(full_checksums: bool) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let sw = NetNs::new(&format!("tlr6-sw-{id}")).unwrap();
        let n = NetNs::new(&format!("tlr6-n-{id}")).unwrap();
        let pod = NetNs::new(&format!("tlr6-p-{id}")).unwrap();
        sw.ip(&[
            "link", "add", "sw1", "type", "veth", "peer", "name", "uplink", "netns", &n.name,
        ])
        .unwrap();
        sw.ip(&["link", "set", "sw1", "up"]).unwrap();
        n.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "uplink"])
            .unwrap();
        n.ip(&["link", "set", "uplink", "up"]).unwrap();
        n.ip(&[
            "link", "add", "vp", "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
        ])
        .unwrap();
        n.ip(&["-6", "addr", "add", "fe80::1/64", "dev", "vp", "nodad"])
            .unwrap();
        n.ip(&["link", "set", "vp", "up"]).unwrap();
        pod.ip(&["link", "set", "eth0", "mtu", "1452", "up"])
            .unwrap();
        let ip = format!("{}/128", pod_ip());
        pod.ip(&["-6", "addr", "add", &ip, "dev", "eth0", "nodad"])
            .unwrap();
        pod.ip(&[
            "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
        ])
        .unwrap();
        // Real checksums on what the pod sends, so that the reverse NAT's
        // is checked (veth offload would leave it partial).
        if full_checksums {
            pod.exec("ethtool", &["-K", "eth0", "tx", "off"]).unwrap();
        }
        let (uplink_mac, sw_mac) = (mac_in(&n.name, "uplink"), mac_in(&sw.name, "sw1"));
        let pod_entry = PodEntry {
            ifindex: 0,
            mac: mac_in(&pod.name, "eth0"),
            host_mac: mac_in(&n.name, "vp"),
        };
        let node = sys::in_netns(&n.name, move || -> talaria_node::Result<Node> {
            let mut node = Node::load(None, 4096)?;
            node.set_config(&NodeConfig {
                node_ip: Be32(NODE_IP.octets()),
                switch_ip: Be32(SWITCH_IP.octets()),
                uplink_ifindex: sys::ifindex("uplink")?,
                node_mac: uplink_mac,
                switch_mac: sw_mac,
                udp_idle_ns: 120_000_000_000,
                host_ifindex: 0,
                _pad: 0,
            })?;
            node.set_service_cidrs(&[(v6("fd00:96::").into(), 108)])?;
            node.set_services(&[
                ServiceConfig::new(SVC6_UDP, vip6(), 53, "udp"),
                ServiceConfig::new(SVC6_TCP, vip6(), 80, "tcp"),
                ServiceConfig::new(SVC6_UDP2, v6("fd00:96::c"), 53, "udp"),
            ])?;
            let entry = PodEntry {
                ifindex: sys::ifindex("vp")?,
                ..pod_entry
            };
            node.set_pods_v6(&[(pod_ip(), entry)])?;
            node.attach(PROG_UPLINK, "uplink")?;
            node.attach(PROG_POD, "vp")?;
            Ok(node)
        })
        .unwrap()
        .expect("the node programs");
        Self {
            node: Some(node),
            uplink_mac,
            sw_mac,
            pod,
            _n: n,
            sw,
        }
    }

    fn node(&self) -> &Node {
        self.node.as_ref().unwrap()
    }
}

/// A packet socket on `sw1` in the switch namespace, reading every frame.
fn switch_socket(sw: &str) -> OwnedFd {
    sys::in_netns(sw, || {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket call; the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh fd of ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zeroed sockaddr_ll, filled below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = sys::ifindex("sw1").unwrap() as i32;
        // SAFETY: a valid sockaddr_ll of the right size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: a timeval option of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        fd
    })
    .unwrap()
}

/// The next Geneve frame the node sends (bounded: 5 s, 1000 frames).
fn next_tunnel(fd: &OwnedFd) -> Vec<u8> {
    try_next_tunnel(fd).expect("a tunnel packet from the node")
}

/// [`next_tunnel`], or `None` after 5 s or 1000 other frames.
fn try_next_tunnel(fd: &OwnedFd) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    for _ in 0..1000 {
        if Instant::now() >= deadline {
            return None;
        }
        // Big enough for a whole GSO frame.
        let mut buf = vec![0u8; 1 << 16];
        // SAFETY: a buffer of its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        buf.truncate(n as usize);
        let geneve = buf.len() > 62
            && buf[12..14] == [0x08, 0x00]
            && buf[23] == 17
            && u16::from_be_bytes([buf[36], buf[37]]) == GENEVE_UDP_PORT;
        if geneve {
            return Some(buf);
        }
    }
    None
}

/// Sends a frame out of `sw1` (towards the node).
fn send_frame(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: a buffer of its length, on a bound packet socket.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    assert_eq!(
        n,
        frame.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
}

/// A tunnel frame from the switch carrying the IPv6 packet `inner`.
fn tunnel(lab: &Lab6, fl: u8, inner: &[u8]) -> Vec<u8> {
    tunnel_of(lab, SVC6_UDP, fl, inner)
}

/// [`tunnel`] with the cookie of Service `service_id`.
fn tunnel_of(lab: &Lab6, service_id: u16, fl: u8, inner: &[u8]) -> Vec<u8> {
    let mut enc = TalariaEncap::new(fl, service_id, BACKEND);
    enc.geneve.protocol = Be16::new(GENEVE_PROTO_IPV6);
    talaria(lab.uplink_mac, lab.sw_mac, SWITCH_IP, NODE_IP, enc, inner)
}

/// Waits (bounded) until a UDP socket of the pod listens on `port`.
fn wait_udp_listening(lab: &Lab6, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let filter = format!("sport = :{port}");
    while !lab
        .pod
        .exec("ss", &["-Hlun", &filter])
        .is_ok_and(|o| !o.trim().is_empty())
    {
        assert!(Instant::now() < deadline, "no UDP socket on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pod's UDP echo server on port 5353, bound before this returns:
/// it answers `count` datagrams and returns their sources.
fn udp_echo(lab: &Lab6, count: usize) -> std::thread::JoinHandle<Vec<SocketAddr>> {
    let echo = sys::spawn_in_netns(&lab.pod.name, move || {
        let s = UdpSocket::bind((pod_ip(), 5353)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        (0..count)
            .map(|_| {
                let (n, from) = s.recv_from(&mut buf).expect("the request reaches the pod");
                s.send_to(&buf[..n], from).unwrap();
                from
            })
            .collect()
    })
    .unwrap();
    wait_udp_listening(lab, 5353);
    echo
}

/// (option flags, service id, backend id, inner packet) of a tunnel frame
/// the node sent, after checking its outer headers.
fn parse_tunnel(lab: &Lab6, f: &[u8]) -> (u8, u16, u32, Vec<u8>) {
    assert_eq!(
        (&f[0..6], &f[6..12]),
        (&lab.sw_mac[..], &lab.uplink_mac[..])
    );
    assert_eq!(&f[26..30], &NODE_IP.octets(), "outer source");
    assert_eq!(&f[30..34], &SWITCH_IP.octets(), "outer destination");
    let g = &f[42..62];
    assert_eq!(u16::from_be_bytes([g[2], g[3]]), GENEVE_PROTO_IPV6);
    (
        g[13],
        u16::from_be_bytes([g[14], g[15]]),
        u32::from_be_bytes([g[16], g[17], g[18], g[19]]),
        f[62..].to_vec(),
    )
}

#[test]
fn an_ipv6_pod_reaches_a_service_and_serves_one_through_the_tunnel() {
    require!(LOADS_BPF);
    let lab = Lab6::new(true);
    let sock = switch_socket(&lab.sw.name);

    // Client side: the pod asks the VIP; the node tunnels it as new.
    let client = sys::in_netns(&lab.pod.name, || {
        let s = UdpSocket::bind((pod_ip(), 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.connect((vip6(), 53)).unwrap();
        s.send(b"query").unwrap();
        s
    })
    .unwrap();
    let port = client.local_addr().unwrap().port();
    let (fl, _, _, inner) = parse_tunnel(&lab, &next_tunnel(&sock));
    assert_eq!(fl, flags::NEW_FLOW);
    let flow = Tuple6::udp(pod_ip(), port, vip6(), 53);
    assert_eq!(Tuple6::of(&inner), flow);
    assert_eq!(&inner[48..], b"query");
    assert!(l4_checksum6_ok(&inner), "the pod's own checksum");

    // The switch's answer, from the VIP: decapsulated to the pod's socket.
    let answer = ipv6(flow.reversed(), 0, b"answer");
    send_frame(
        &sock,
        &tunnel(&lab, flags::REPLY | flags::COOKIE_VALID, &answer),
    );
    let mut buf = [0u8; 64];
    let (n, from) = client
        .recv_from(&mut buf)
        .expect("the answer reaches the pod");
    assert_eq!(&buf[..n], b"answer");
    assert_eq!(from, SocketAddr::from((vip6(), 53)));
    let cookies = lab.node().cookies6().unwrap();
    assert_eq!(cookies.len(), 1);
    assert_eq!(
        (cookies[0].0, cookies[0].1.backend_id),
        (flow.key(), BACKEND)
    );
    // The next datagram carries the cookie.
    client.send(b"again").unwrap();
    let (fl, svc, backend, _) = parse_tunnel(&lab, &next_tunnel(&sock));
    assert_eq!((fl, svc, backend), (flags::COOKIE_VALID, SVC6_UDP, BACKEND));

    // Backend side: a request the switch DNATed to the pod's port 5353;
    // the pod echoes it, and the reply leaves from VIP6:53.
    let echo = udp_echo(&lab, 1);
    let remote = v6("fd00:244:2::2");
    let request = ipv6(Tuple6::udp(remote, 40000, pod_ip(), 5353), 0, b"ping");
    send_frame(
        &sock,
        &tunnel(&lab, flags::COOKIE_VALID | flags::NEW_FLOW, &request),
    );
    assert_eq!(echo.join().unwrap(), [SocketAddr::from((remote, 40000))]);
    let (fl, svc, backend, inner) = parse_tunnel(&lab, &next_tunnel(&sock));
    assert_eq!(
        (fl, svc, backend),
        (flags::REPLY | flags::COOKIE_VALID, SVC6_UDP, BACKEND)
    );
    assert_eq!(Tuple6::of(&inner), Tuple6::udp(vip6(), 53, remote, 40000));
    assert_eq!(&inner[48..], b"ping");
    assert!(l4_checksum6_ok(&inner), "checksum after the reverse NAT");
    let rev = lab.node().reverse_flows6().unwrap();
    assert_eq!(rev.len(), 1);
    assert_eq!(rev[0].1.vip, vip6().octets());
    let s = lab.node().stats().unwrap();
    let drops: u64 = s.drops.iter().map(|d| d.1).sum();
    assert_eq!(
        drops,
        0,
        "{:?}",
        s.drops.iter().filter(|d| d.1 > 0).collect::<Vec<_>>()
    );
}

/// Two IPv6 Services share the pod as their backend (port 5353), and one
/// client reaches both from one source port (a UDP socket that sends to
/// one VIP6, then the other; the lab's load generator rotating VIP6s lost
/// most answers to `port_exhausted` before IPv6 had substitute ports).
/// The second flow reaches the pod's socket from a substitute port (the
/// pod's kernel checks the rewritten checksum), and each echo leaves from
/// its own VIP6 to the client's own port.
#[test]
fn two_ipv6_services_sharing_a_backend_from_one_client_port_both_work() {
    require!(LOADS_BPF);
    let lab = Lab6::new(true);
    let sock = switch_socket(&lab.sw.name);
    let echo = udp_echo(&lab, 2);
    let remote = v6("fd00:244:2::2");
    let request = ipv6(Tuple6::udp(remote, 40000, pod_ip(), 5353), 0, b"ping");
    let services = [(SVC6_UDP, vip6()), (SVC6_UDP2, v6("fd00:96::c"))];
    let mut echoes = Vec::new();
    for (svc, _) in services {
        send_frame(
            &sock,
            &tunnel_of(&lab, svc, flags::COOKIE_VALID | flags::NEW_FLOW, &request),
        );
        echoes.push(parse_tunnel(&lab, &next_tunnel(&sock)));
    }
    let sources = echo.join().unwrap();
    assert_eq!(sources[0], SocketAddr::from((remote, 40000)));
    let subst = sources[1].port();
    assert_eq!(sources[1], SocketAddr::from((remote, subst)));
    assert_ne!(subst, 40000, "the second flow's client port is replaced");
    for ((svc, vip), (fl, s, backend, inner)) in services.into_iter().zip(echoes) {
        assert_eq!(
            (fl, s, backend),
            (flags::REPLY | flags::COOKIE_VALID, svc, BACKEND)
        );
        assert_eq!(Tuple6::of(&inner), Tuple6::udp(vip, 53, remote, 40000));
        assert_eq!(&inner[48..], b"ping");
        assert!(l4_checksum6_ok(&inner), "checksum after the reverse NAT");
    }
    let s = lab.node().stats().unwrap();
    assert_eq!(s.event(talaria_common::maps::node_stat::PORT_SUBST), 1);
    let drops: u64 = s.drops.iter().map(|d| d.1).sum();
    assert_eq!(drops, 0, "{:?}", s.drops);
}

/// Rewrites the acknowledgment number of an IPv6 TCP packet (no
/// extension headers) and recomputes its checksum.
fn set_ack(ip: &mut [u8], ack: u32) {
    use talaria_common::net::{fold, sum16};
    ip[48..52].copy_from_slice(&ack.to_be_bytes());
    ip[56..58].copy_from_slice(&[0, 0]);
    let len = ip.len() - 40;
    let pseudo = sum16(&ip[8..40]) + 6 + len as u32;
    let c = !fold(pseudo + sum16(&ip[40..]));
    ip[56..58].copy_from_slice(&c.to_be_bytes());
}

/// A pod's TCP burst to a VIP6 with veth offloads on (TSO): the data
/// leaves the uplink tunnelled (IPv6 inner, IPv4 outer), none of it lost
/// to the kernel's checks of the encapsulated GSO skb. The test answers
/// the SYN as the switch would bring the backend's SYN-ACK, and never
/// acknowledges data, so the pod sends its first window only.
#[test]
fn an_ipv6_tcp_burst_with_tso_leaves_the_uplink_tunnelled() {
    require!(LOADS_BPF);
    let lab = Lab6::new(false);
    let sock = switch_socket(&lab.sw.name);
    let client = sys::spawn_in_netns(&lab.pod.name, || {
        let to = SocketAddr::from((vip6(), 80));
        let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .expect("connected through the tunnel");
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = std::io::Write::write_all(&mut s, &[0x5a; 1 << 16]);
        // Held open until the test has seen the burst.
        std::thread::sleep(Duration::from_secs(2));
    })
    .unwrap();
    let (fl, _, _, syn) = parse_tunnel(&lab, &next_tunnel(&sock));
    assert_eq!(fl, flags::NEW_FLOW);
    let flow = Tuple6::of(&syn);
    assert_eq!(syn[53] & 0x12, 0x02, "a SYN");
    let seq = u32::from_be_bytes([syn[44], syn[45], syn[46], syn[47]]);
    let mut synack = ipv6(flow.reversed(), 0x12, b"");
    set_ack(&mut synack, seq.wrapping_add(1));
    let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC6_TCP, BACKEND);
    let mut enc = enc;
    enc.geneve.protocol = Be16::new(GENEVE_PROTO_IPV6);
    let frame = talaria(lab.uplink_mac, lab.sw_mac, SWITCH_IP, NODE_IP, enc, &synack);
    send_frame(&sock, &frame);
    // The ACK and the data, with the cookie; bounded by bytes, frames, time.
    let (mut payload, mut biggest, mut frames) = (0usize, 0usize, 0);
    while payload < 8000 && frames < 200 {
        let Some(f) = try_next_tunnel(&sock) else {
            break;
        };
        frames += 1;
        let (fl, svc, backend, inner) = parse_tunnel(&lab, &f);
        assert_eq!((fl, svc, backend), (flags::COOKIE_VALID, SVC6_TCP, BACKEND));
        assert_eq!(Tuple6::of(&inner), flow);
        let data_off = 40 + usize::from(inner[52] >> 4) * 4;
        payload += inner.len() - data_off;
        biggest = biggest.max(f.len());
    }
    eprintln!("{frames} tunnel frames, {payload} payload bytes, biggest frame {biggest}");
    assert!(
        payload >= 8000,
        "{payload} bytes tunnelled in {frames} frames"
    );
    client.join().unwrap();
    let s = lab.node().stats().unwrap();
    let drops: u64 = s.drops.iter().map(|d| d.1).sum();
    assert_eq!(drops, 0);
}

/// A SYN-ACK of `flow` (from the VIP6 to the pod) acknowledging `ack`,
/// with an MSS option of `mss`: without one, Linux's IPv6 TCP would keep
/// its segments at 1220 bytes and never send a too-big one.
fn synack_with_mss(flow: Tuple6, ack: u32, mss: u16) -> Vec<u8> {
    use talaria_common::net::{fold, sum16};
    let mut p = ipv6(flow, 0x12, &[2, 4, (mss >> 8) as u8, mss as u8]);
    // The 4 bytes of "payload" become an option: data offset 6 words.
    p[52] = 6 << 4;
    p[48..52].copy_from_slice(&ack.to_be_bytes());
    p[56..58].copy_from_slice(&[0, 0]);
    let pseudo = sum16(&p[8..40]) + 6 + (p.len() - 40) as u32;
    let c = !fold(pseudo + sum16(&p[40..]));
    p[56..58].copy_from_slice(&c.to_be_bytes());
    p
}

/// Path MTU discovery for IPv6 through the tunnel: a pod whose MTU (1500)
/// is larger than the path's (uplink 1328, so 1280 inside the tunnel)
/// sends a TCP stream to a VIP6. Its too-big segments never reach the
/// uplink: the node answers each with an ICMPv6 Packet Too Big (MTU
/// 1280), the pod's kernel takes it (a route exception with mtu 1280 for
/// the VIP6; the socket's pmtu 1280 and MSS 1220) and resends the data in
/// segments that fit.
///
/// `full_checksums`: offloads off, so the pod sends one packet per skb and
/// its kernel verifies the Packet Too Big's checksum (no CHECKSUM_PARTIAL
/// mark left on it), and every tunnel frame can be measured; else TSO
/// on, so the node answers GSO packets (their frames are not measured:
/// the packet socket sees them before segmentation).
fn ipv6_pmtu_discovery(full_checksums: bool) {
    use talaria_common::maps::mtu_stat;
    let mut lab = Lab6::new(full_checksums);
    lab.pod.ip(&["link", "set", "eth0", "mtu", "1500"]).unwrap();
    lab._n
        .ip(&["link", "set", "uplink", "mtu", "1328"])
        .unwrap();
    lab.sw.ip(&["link", "set", "sw1", "mtu", "1328"]).unwrap();
    lab.node.as_mut().unwrap().set_uplink_mtu(1328).unwrap();
    let sock = switch_socket(&lab.sw.name);
    let client = sys::spawn_in_netns(&lab.pod.name, || {
        let to = SocketAddr::from((vip6(), 80));
        let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .expect("connected through the tunnel");
        s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = std::io::Write::write_all(&mut s, &[0x5a; 1 << 16]);
        // Held open until the test has seen the stream.
        std::thread::sleep(Duration::from_secs(1));
    })
    .unwrap();
    let (fl, _, _, syn) = parse_tunnel(&lab, &next_tunnel(&sock));
    assert_eq!(fl, flags::NEW_FLOW);
    assert_eq!(syn[53] & 0x12, 0x02, "a SYN");
    assert_eq!(
        &syn[60..64],
        &[2, 4, 0x05, 0xa0],
        "MSS 1440: a 1500-MTU pod"
    );
    let flow = Tuple6::of(&syn);
    let seq = u32::from_be_bytes([syn[44], syn[45], syn[46], syn[47]]);
    let synack = synack_with_mss(flow.reversed(), seq.wrapping_add(1), 1440);
    let mut enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC6_TCP, BACKEND);
    enc.geneve.protocol = Be16::new(GENEVE_PROTO_IPV6);
    send_frame(
        &sock,
        &talaria(lab.uplink_mac, lab.sw_mac, SWITCH_IP, NODE_IP, enc, &synack),
    );
    // The data; bounded by bytes, frames, time (try_next_tunnel: 5 s).
    let (mut payload, mut biggest_inner, mut biggest_frame, mut frames) = (0, 0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while payload < 8000 && frames < 300 && Instant::now() < deadline {
        let Some(f) = try_next_tunnel(&sock) else {
            break;
        };
        frames += 1;
        let (fl, svc, backend, inner) = parse_tunnel(&lab, &f);
        assert_eq!((fl, svc, backend), (flags::COOKIE_VALID, SVC6_TCP, BACKEND));
        assert_eq!(Tuple6::of(&inner), flow);
        let data_off = 40 + usize::from(inner[52] >> 4) * 4;
        payload += inner.len() - data_off;
        biggest_inner = biggest_inner.max(inner.len());
        biggest_frame = biggest_frame.max(f.len() - 14);
        if full_checksums {
            assert!(
                f.len() - 14 <= 1328,
                "a tunnel packet of {} bytes on a 1328-byte uplink",
                f.len() - 14
            );
        }
    }
    eprintln!(
        "{frames} tunnel frames, {payload} payload bytes, biggest inner {biggest_inner}, \
         biggest frame {biggest_frame}"
    );
    let ptbs = lab.node().stats().unwrap().mtu_event(mtu_stat::FRAG_NEEDED);
    assert!(ptbs >= 1, "no Packet Too Big sent");
    assert!(
        payload >= 8000,
        "{payload} bytes tunnelled in {frames} frames after {ptbs} Packet Too Big"
    );
    if full_checksums {
        assert_eq!(biggest_inner, 1280, "segments as big as the path allows");
    }
    // The pod's kernel took the Packet Too Big: its route to the VIP6
    // now has a 1280-byte MTU (bounded wait).
    let vip = vip6().to_string();
    let deadline = Instant::now() + Duration::from_secs(2);
    let route = loop {
        let r = lab.pod.ip(&["-6", "route", "get", &vip]).unwrap();
        if r.contains("mtu 1280") || Instant::now() >= deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(route.contains("mtu 1280"), "pod route: {route}");
    // And the connection's own view (the client is still writing).
    let ss = lab
        .pod
        .exec("ss", &["-Htin", "dst", &format!("[{vip}]")])
        .unwrap();
    assert!(
        ss.contains("pmtu:1280") && ss.contains("mss:1220"),
        "pod socket: {ss}"
    );
    // The pod's ICMPv6 counters: Packet Too Big taken in, none refused
    // for its checksum.
    let snmp6 = lab.pod.exec("cat", &["/proc/net/snmp6"]).unwrap();
    let counter = |name: &str| -> u64 {
        snmp6
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {snmp6}"))
    };
    assert!(counter("Icmp6InPktTooBigs") >= 1, "{snmp6}");
    assert_eq!(counter("Icmp6InCsumErrors"), 0);
    assert_eq!(counter("Icmp6InErrors"), 0);
    client.join().unwrap();
    let s = lab.node().stats().unwrap();
    assert_eq!(s.mtu_event(mtu_stat::TOO_BIG_NO_DF), 0);
    let drops: u64 = s.drops.iter().map(|d| d.1).sum();
    assert_eq!(drops, 0);
}

#[test]
fn ipv6_pmtu_discovery_through_the_tunnel_without_offloads() {
    require!(LOADS_BPF);
    ipv6_pmtu_discovery(true);
}

#[test]
fn ipv6_pmtu_discovery_through_the_tunnel_with_tso() {
    require!(LOADS_BPF);
    ipv6_pmtu_discovery(false);
}
