//! Root-only end-to-end tests in network namespaces: the real switch data
//! plane (`talaria-switch-dataplane`, the eBPF pipeline of p4/talaria.p4)
//! on a switch namespace, two node namespaces running the node programs,
//! and pod namespaces behind veths. All traffic stays inside namespaces
//! these tests create (10.200.0.0/16 tunnel, 10.244.0.0/16 pods,
//! 10.96.0.0/12 services); every namespace and pin is removed on drop,
//! also when a test panics.
//!
//! Topology (per test, names made unique with the pid and a counter):
//!
//! ```text
//!  pod a 10.244.1.2 ─ vpa ┐                         ┌ vpb ─ pod b 10.244.2.2 (backend 101/201)
//!  pod c 10.244.1.3 ─ vpc ┤ node1 uplink 10.200.1.2 ─ sw1 ┤ switch 10.200.0.1
//!                                          node2 uplink 10.200.2.2 ─ sw2 ┤
//!                          outside 10.201.0.2 (no agent) ─ sw3 ┘
//! ```
//! Pod c is a second backend (102) on node1, used for pool changes. The
//! outside host is the endpoint of a Service whose endpoint runs no agent
//! (as the API server behind `default/kubernetes`).

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};
use talaria_preflight::{require, LOADS_BPF};
use talaria_tables::{build, value::Ipv6Prefix};

use talaria_common::{
    drop::DropReason,
    hash::hash_mode,
    maps::{node_stat, HAIRPIN_SOURCE, HAIRPIN_SOURCE6},
    net::{tcp_opt, IPPROTO_TCP, IPPROTO_UDP},
    ts_cookie::{self, CookieKey},
    wire::{flags, TalariaEncap, GENEVE_UDP_PORT},
};
use talaria_node::{
    agent,
    config::{Config, PodConfig, ServiceConfig},
    node::{self, Node, Stats},
    sys::{self, NetNs},
};
use talaria_switch_dataplane::{Dataplane, Target};

const SWITCH_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const NODE1_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 2);
const NODE2_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 2, 2);
const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const POD_C: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const SVC_TCP: u16 = 7;
const SVC_UDP: u16 = 8;
/// Second Services on VIP2 (TCP 8080, UDP 5300) with the same backends as
/// SVC_TCP and SVC_UDP (pod B's 8080 and 5353).
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
const SVC2_TCP: u16 = 9;
const SVC2_UDP: u16 = 10;
/// A Service port without endpoints: new flows are refused (REJECT).
const SVC_NO_ENDPOINTS: u16 = 11;
const NO_ENDPOINTS_PORT: u16 = 9;
const BACKEND_B_TCP: u32 = 101;
const BACKEND_C_TCP: u32 = 102;
const BACKEND_B_UDP: u32 = 201;
/// Pod c's UDP port: a second UDP backend, taking no flows until a test
/// moves the buckets to it.
const BACKEND_C_UDP: u32 = 202;
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
const BUCKETS: u16 = 4;
/// The outside host, and the switch's next hop as it sees it.
const EXT_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
const EXT_GW: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
/// A Service whose endpoints (TCP 443 → 8080, UDP 53 → 5353) are the
/// outside host's.
const VIP_EXT: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const SVC_EXT_TCP: u16 = 12;
const SVC_EXT_UDP: u16 = 13;
const BACKEND_EXT_TCP: u32 = 301;
const BACKEND_EXT_UDP: u32 = 302;
/// A LoadBalancer ingress IP (or externalIP): TCP 80 to pod b, UDP 53 to
/// pod c, for clients outside the cluster.
const LB_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const SVC_LB_TCP: u16 = 14;
/// The timestamp-cookie key of every node (and of the switch's
/// `ts_cookie` entries).
const TS_KEY_HEX: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn ts_key() -> CookieKey {
    CookieKey::from_hex(TS_KEY_HEX).unwrap()
}
const SVC_LB_UDP: u16 = 15;
/// A NodePort Service's keys at each node's address, as the controller
/// plans them, a service id per node: TCP to pod b (on node 2), UDP to pod
/// c (on node 1). Node 2's TCP key and node 1's UDP key are what
/// `externalTrafficPolicy: Local` gives those nodes (their own endpoint);
/// the other two only `Cluster` can give (an endpoint on the other node).
const NODE_PORT_TCP: u16 = 30080;
const NODE_PORT_UDP: u16 = 30053;
const SVC_NP_TCP: [u16; 2] = [16, 17];
const SVC_NP_UDP: [u16; 2] = [18, 19];
/// A nodePort with `externalTrafficPolicy: Local` and no endpoint on
/// either node: the controller writes no switch entry for it.
const NODE_PORT_NO_LOCAL: u16 = 30081;
/// IPv6, only where a test asks for it ([`Lab::enable_ipv6`]): the switch
/// routes it (`ipv6_route`) and balances none. Pods are in fd00:244::/32,
/// node k's in fd00:244:k::/64; its uplink is fd00:200:k::2/64, the switch
/// fd00:200:k::1. The agents know the pods' addresses from the start
/// (`PodConfig::ipv6`), for the IPv6 source check.
const POD_A_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 2);
const POD_C_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 3);
const POD_B_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 2, 0, 0, 0, 0, 2);
/// The IPv6 ClusterIP of the dual-stack Service whose IPv4 one is [`VIP`]:
/// TCP 80 and UDP 53 to pod b's IPv6 address, service and backend ids of
/// their own (one id space with IPv4's). Served once pods have IPv6.
const VIP_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0xa);
const SVC_V6_TCP: u16 = 20;
const SVC_V6_UDP: u16 = 21;
/// A TCP port of VIP_V6 without endpoints (NO_ENDPOINTS_PORT): refused.
const SVC_V6_NO_ENDPOINTS: u16 = 22;
const BACKEND_B_TCP_V6: u32 = 111;
const BACKEND_B_UDP_V6: u32 = 211;

/// Two nodes, a switch, three pods. Tears everything down on drop.
struct Lab {
    id: String,
    dp: Option<Dataplane>,
    /// In-process node agents (None while an agent process owns the node).
    nodes: [Option<Node>; 2],
    node_pins: [PathBuf; 2],
    sw_pin: PathBuf,
    sw_macs: [[u8; 6]; 2],
    up_macs: [[u8; 6]; 2],
    /// The nodes' `ts_cookie_key_file` ([`TS_KEY`]).
    ts_keys: PathBuf,
    // Namespaces last: deleted after the pins are gone.
    pods: Vec<NetNs>,
    outside: NetNs,
    n: [NetNs; 2],
    sw: NetNs,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.nodes = [None, None];
        for p in &self.node_pins {
            let _ = node::unpin_all(p);
        }
        if let Some(dp) = self.dp.take() {
            let _ = dp.detach();
        }
        let _ = std::fs::remove_dir_all(&self.sw_pin);
        let _ = std::fs::remove_file(&self.ts_keys);
    }
}

/// A pod namespace behind a veth pair: host side `veth` in `node` (with
/// the 169.254.1.1 gateway address), `eth0` in the pod with `ip`/32.
fn add_pod(node: &NetNs, veth: &str, ip: Ipv4Addr, name: &str) -> NetNs {
    let pod = NetNs::new(name).unwrap();
    node.ip(&[
        "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
    ])
    .unwrap();
    node.ip(&["addr", "add", "169.254.1.1/32", "dev", veth])
        .unwrap();
    node.ip(&["link", "set", veth, "up"]).unwrap();
    pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])
        .unwrap();
    // Pod MTU = uplink MTU (1500) − 48 bytes of encapsulation.
    pod.ip(&["link", "set", "eth0", "mtu", "1452", "up"])
        .unwrap();
    pod.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ])
    .unwrap();
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ])
    .unwrap();
    pod
}

fn unique_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Node `k`'s IPv6 pods: fd00:244:k::/64.
fn pod_cidr_v6(k: u16) -> Ipv6Prefix {
    Ipv6Prefix::new(Ipv6Addr::new(0xfd00, 0x244, k, 0, 0, 0, 0, 0), 64).unwrap()
}

fn mac_in(ns: &str, ifname: &'static str) -> [u8; 6] {
    sys::in_netns(ns, move || sys::mac(ifname))
        .unwrap()
        .unwrap()
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Lab {
    fn new() -> Self {
        let id = unique_id();
        let sw = NetNs::new(&format!("tlr-sw-{id}")).unwrap();
        let n = [
            NetNs::new(&format!("tlr-n1-{id}")).unwrap(),
            NetNs::new(&format!("tlr-n2-{id}")).unwrap(),
        ];
        for (i, (node, ip)) in n.iter().zip([NODE1_IP, NODE2_IP]).enumerate() {
            let port = format!("sw{}", i + 1);
            sw.ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "uplink", "netns", &node.name,
            ])
            .unwrap();
            sw.ip(&["link", "set", &port, "up"]).unwrap();
            node.ip(&["addr", "add", &format!("{ip}/24"), "dev", "uplink"])
                .unwrap();
            node.ip(&["link", "set", "uplink", "up"]).unwrap();
        }
        let mut pods = Vec::new();
        for (node, veth, ip, tag) in [
            (&n[0], "vpa", POD_A, "pa"),
            (&n[1], "vpb", POD_B, "pb"),
            (&n[0], "vpc", POD_C, "pc"),
        ] {
            pods.push(add_pod(node, veth, ip, &format!("tlr-{tag}-{id}")));
        }
        let outside = NetNs::new(&format!("tlr-ex-{id}")).unwrap();
        sw.ip(&[
            "link",
            "add",
            "sw3",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &outside.name,
        ])
        .unwrap();
        sw.ip(&["link", "set", "sw3", "up"]).unwrap();
        outside
            .ip(&["addr", "add", &format!("{EXT_IP}/24"), "dev", "eth0"])
            .unwrap();
        outside.ip(&["link", "set", "eth0", "up"]).unwrap();
        let sw_macs = [mac_in(&sw.name, "sw1"), mac_in(&sw.name, "sw2")];
        // The switch answers no ARP: its address as a next hop is static.
        let sw3_mac = fmt_mac(mac_in(&sw.name, "sw3"));
        let gw = EXT_GW.to_string();
        let perm = ["nud", "permanent"];
        outside
            .ip(&[
                &["neigh", "add", &gw, "lladdr", &sw3_mac, "dev", "eth0"][..],
                &perm,
            ]
            .concat())
            .unwrap();
        for net in ["10.244.0.0/16", "10.200.0.0/16", "203.0.113.0/24"] {
            outside
                .ip(&["route", "add", net, "via", &gw, "dev", "eth0"])
                .unwrap();
        }
        // Node 1 routes plain traffic to the outside through the switch.
        let sw1_gw = "10.200.1.1";
        n[0].ip(&[
            &[
                "neigh",
                "add",
                sw1_gw,
                "lladdr",
                &fmt_mac(sw_macs[0]),
                "dev",
                "uplink",
            ][..],
            &perm,
        ]
        .concat())
            .unwrap();
        n[0].ip(&[
            "route",
            "add",
            "10.201.0.0/24",
            "via",
            sw1_gw,
            "dev",
            "uplink",
        ])
        .unwrap();
        sys::in_netns(&n[0].name, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        })
        .unwrap()
        .unwrap();
        let up_macs = [mac_in(&n[0].name, "uplink"), mac_in(&n[1].name, "uplink")];
        let sw_pin = PathBuf::from(format!("/sys/fs/bpf/talaria/switch/test-{id}"));
        let node_pins =
            [1, 2].map(|i| PathBuf::from(format!("/sys/fs/bpf/talaria/node-test-{id}-{i}")));
        // The timestamp-cookie key file every node stamps with, as the
        // controller would share it.
        let ts_keys = std::env::temp_dir().join(format!("talaria-ts-keys-{id}"));
        std::fs::write(
            &ts_keys,
            format!("# nodes stamp with the first\n{TS_KEY_HEX}\n"),
        )
        .unwrap();
        let mut lab = Self {
            id,
            dp: None,
            ts_keys,
            nodes: [None, None],
            node_pins,
            sw_pin,
            sw_macs,
            up_macs,
            pods,
            outside,
            n,
            sw,
        };
        lab.start_switch();
        lab.start_node(0);
        lab.start_node(1);
        lab
    }

    fn start_switch(&mut self) {
        let mut cfg = talaria_switch_dataplane::Config::for_instance(&format!("test-{}", self.id));
        cfg.pin_dir = self.sw_pin.clone();
        cfg.ports.insert(1, "sw1".into());
        cfg.ports.insert(2, "sw2".into());
        cfg.ports.insert(3, "sw3".into());
        let dp = sys::in_netns(&self.sw.name, move || Dataplane::open(cfg))
            .unwrap()
            .expect("switch data plane");
        let host = |addr| build::prefix(addr, 32);
        let pod_cidr = |third| build::prefix(Ipv4Addr::new(10, 244, third, 0), 24);
        let service = |vip, port, proto, id| {
            build::service(vip, port, proto, id, BUCKETS - 1, hash_mode::FIVE_TUPLE)
        };
        // (service, its backend).
        let pools = [
            (SVC_TCP, BACKEND_B_TCP),
            (SVC_UDP, BACKEND_B_UDP),
            (SVC2_TCP, BACKEND_B_TCP),
            (SVC2_UDP, BACKEND_B_UDP),
            (SVC_EXT_TCP, BACKEND_EXT_TCP),
            (SVC_EXT_UDP, BACKEND_EXT_UDP),
            (SVC_LB_TCP, BACKEND_B_TCP),
            (SVC_LB_UDP, BACKEND_C_UDP),
            (SVC_NP_TCP[0], BACKEND_B_TCP),
            (SVC_NP_TCP[1], BACKEND_B_TCP),
            (SVC_NP_UDP[0], BACKEND_C_UDP),
            (SVC_NP_UDP[1], BACKEND_C_UDP),
            (SVC_V6_TCP, BACKEND_B_TCP_V6),
            (SVC_V6_UDP, BACKEND_B_UDP_V6),
        ];
        let ext_mac = mac_in(&self.outside.name, "eth0");
        let sw3_mac = mac_in(&self.sw.name, "sw3");
        let mut entries = vec![
            build::switch_addr(SWITCH_IP),
            build::spoofed_source(SWITCH_IP),
            build::route(host(NODE1_IP), 1, self.sw_macs[0], self.up_macs[0]),
            build::route(host(NODE2_IP), 2, self.sw_macs[1], self.up_macs[1]),
            build::tunnel_peer(1, NODE1_IP),
            build::tunnel_peer(2, NODE2_IP),
            build::pod_node(pod_cidr(1), NODE1_IP),
            build::pod_node(pod_cidr(2), NODE2_IP),
            build::pod_node(host(NODE1_IP), NODE1_IP),
            build::pod_node(host(NODE2_IP), NODE2_IP),
            build::pod_node_v6(pod_cidr_v6(1), NODE1_IP),
            build::pod_node_v6(pod_cidr_v6(2), NODE2_IP),
            build::service_v6(
                VIP_V6,
                80,
                IPPROTO_TCP,
                SVC_V6_TCP,
                BUCKETS - 1,
                hash_mode::FIVE_TUPLE,
            ),
            build::service_v6(
                VIP_V6,
                53,
                IPPROTO_UDP,
                SVC_V6_UDP,
                BUCKETS - 1,
                hash_mode::FIVE_TUPLE,
            ),
            build::backend_v6(BACKEND_B_TCP_V6, POD_B_V6, TCP_PORT, NODE2_IP),
            build::backend_v6(BACKEND_B_UDP_V6, POD_B_V6, UDP_PORT, NODE2_IP),
            service(VIP, 80, IPPROTO_TCP, SVC_TCP),
            service(VIP, 53, IPPROTO_UDP, SVC_UDP),
            service(VIP2, 8080, IPPROTO_TCP, SVC2_TCP),
            service(VIP2, 5300, IPPROTO_UDP, SVC2_UDP),
            build::backend(BACKEND_B_TCP, POD_B, TCP_PORT, NODE2_IP),
            build::backend(BACKEND_C_TCP, POD_C, TCP_PORT, NODE1_IP),
            build::backend(BACKEND_B_UDP, POD_B, UDP_PORT, NODE2_IP),
            build::backend(BACKEND_C_UDP, POD_C, UDP_PORT, NODE1_IP),
            // What the switch tunnels plain packets to each node from
            // (external requests, replies of an agentless endpoint).
            build::tunnel_source(NODE1_IP, SWITCH_IP),
            build::tunnel_source(NODE2_IP, SWITCH_IP),
            service(LB_IP, 80, IPPROTO_TCP, SVC_LB_TCP),
            service(LB_IP, 53, IPPROTO_UDP, SVC_LB_UDP),
            service(NODE1_IP, NODE_PORT_TCP, IPPROTO_TCP, SVC_NP_TCP[0]),
            service(NODE2_IP, NODE_PORT_TCP, IPPROTO_TCP, SVC_NP_TCP[1]),
            service(NODE1_IP, NODE_PORT_UDP, IPPROTO_UDP, SVC_NP_UDP[0]),
            service(NODE2_IP, NODE_PORT_UDP, IPPROTO_UDP, SVC_NP_UDP[1]),
            build::route(host(EXT_IP), 3, sw3_mac, ext_mac),
            service(VIP_EXT, 443, IPPROTO_TCP, SVC_EXT_TCP),
            service(VIP_EXT, 53, IPPROTO_UDP, SVC_EXT_UDP),
            build::backend(BACKEND_EXT_TCP, EXT_IP, TCP_PORT, Ipv4Addr::UNSPECIFIED),
            build::backend(BACKEND_EXT_UDP, EXT_IP, UDP_PORT, Ipv4Addr::UNSPECIFIED),
            build::endpoint_reply(
                3,
                (EXT_IP, TCP_PORT),
                IPPROTO_TCP,
                (SVC_EXT_TCP, BACKEND_EXT_TCP),
            ),
            build::endpoint_reply(
                3,
                (EXT_IP, UDP_PORT),
                IPPROTO_UDP,
                (SVC_EXT_UDP, BACKEND_EXT_UDP),
            ),
        ];
        entries.extend(pools.map(|(svc, backend)| build::cookie(svc, backend)));
        // Outside clients' timestamp cookies, as the controller writes
        // them for every backend of an external address.
        for svc in [SVC_LB_TCP, SVC_NP_TCP[0], SVC_NP_TCP[1]] {
            for backend in [BACKEND_B_TCP, BACKEND_C_TCP] {
                let c = ts_cookie::cookie(&ts_key(), svc, backend);
                entries.push(build::ts_cookie(svc, c, backend));
            }
        }
        for b in 0..BUCKETS {
            entries.extend(pools.map(|(svc, backend)| build::bucket(svc, b, backend)));
        }
        for e in &entries {
            dp.insert(e)
                .unwrap_or_else(|err| panic!("switch insert {e:?}: {err}"));
        }
        self.dp = Some(dp);
    }

    fn node_config(&self, i: usize) -> Config {
        let pods = if i == 0 {
            vec![
                PodConfig {
                    ip: POD_A,
                    ipv6: vec![POD_A_V6],
                    veth: "vpa".into(),
                    mac: None,
                },
                PodConfig {
                    ip: POD_C,
                    ipv6: vec![POD_C_V6],
                    veth: "vpc".into(),
                    mac: None,
                },
            ]
        } else {
            vec![PodConfig {
                ip: POD_B,
                ipv6: vec![POD_B_V6],
                veth: "vpb".into(),
                mac: None,
            }]
        };
        Config {
            uplink: "uplink".into(),
            node_ip: [NODE1_IP, NODE2_IP][i],
            switch_ip: SWITCH_IP,
            switch_mac: fmt_mac(self.sw_macs[i]),
            service_cidrs: vec!["10.96.0.0/12".into(), "fd00:96::/108".into()],
            services: vec![
                ServiceConfig::new(SVC_TCP, VIP, 80, "tcp"),
                ServiceConfig::new(SVC_UDP, VIP, 53, "udp"),
                ServiceConfig::new(SVC2_TCP, VIP2, 8080, "tcp"),
                ServiceConfig::new(SVC2_UDP, VIP2, 5300, "udp"),
                ServiceConfig {
                    agentless: true,
                    ..ServiceConfig::new(SVC_EXT_TCP, VIP_EXT, 443, "tcp")
                },
                ServiceConfig {
                    agentless: true,
                    ..ServiceConfig::new(SVC_EXT_UDP, VIP_EXT, 53, "udp")
                },
                ServiceConfig {
                    reject: true,
                    ..ServiceConfig::new(SVC_NO_ENDPOINTS, VIP2, NO_ENDPOINTS_PORT, "tcp")
                },
                ServiceConfig::new(SVC_LB_TCP, LB_IP, 80, "tcp"),
                ServiceConfig::new(SVC_LB_UDP, LB_IP, 53, "udp"),
                node_port(SVC_NP_TCP[0], NODE1_IP, NODE_PORT_TCP, "tcp"),
                node_port(SVC_NP_TCP[1], NODE2_IP, NODE_PORT_TCP, "tcp"),
                node_port(SVC_NP_UDP[0], NODE1_IP, NODE_PORT_UDP, "udp"),
                node_port(SVC_NP_UDP[1], NODE2_IP, NODE_PORT_UDP, "udp"),
                ServiceConfig::new(SVC_V6_TCP, VIP_V6, 80, "tcp"),
                ServiceConfig::new(SVC_V6_UDP, VIP_V6, 53, "udp"),
                ServiceConfig {
                    reject: true,
                    ..ServiceConfig::new(SVC_V6_NO_ENDPOINTS, VIP_V6, NO_ENDPOINTS_PORT, "tcp")
                },
            ],
            pods,
            flow_table_size: 65536,
            pin_dir: self.node_pins[i].clone(),
            metrics_addr: "127.0.0.1:0".into(),
            ts_cookie_key_file: Some(self.ts_keys.clone()),
            ..Config::default()
        }
    }

    /// Loads and configures node `i` in-process (as the agent does).
    fn start_node(&mut self, i: usize) {
        let cfg = self.node_config(i);
        let node = sys::in_netns(&self.n[i].name, move || -> talaria_node::Result<Node> {
            let mut node = Node::load(Some(&cfg.pin_dir), cfg.flow_table_size)?;
            let missing = agent::apply(&mut node, &cfg)?;
            assert!(missing.is_empty(), "veths missing: {missing:?}");
            Ok(node)
        })
        .unwrap()
        .expect("node agent");
        self.nodes[i] = Some(node);
    }

    fn stats(&self, i: usize) -> Stats {
        Stats::read_pinned(&self.node_pins[i]).unwrap()
    }

    fn pod(&self, tag: &str) -> &str {
        let name = format!("tlr-{tag}-{}", self.id);
        &self.pods.iter().find(|p| p.name == name).expect("pod").name
    }

    /// Makes `backend_id` the only backend taking new flows of the
    /// service, with a valid cookie; the old backends' cookies stay valid
    /// (as the controller's quarantine keeps them).
    fn move_pool(&self, service_id: u16, backend_id: u32) {
        let dp = self.dp.as_ref().unwrap();
        dp.insert(&build::cookie(service_id, backend_id)).unwrap();
        for b in 0..BUCKETS {
            dp.modify(&build::bucket(service_id, b, backend_id))
                .unwrap();
        }
    }

    /// IPv6 for pods a, b and c, routed pod → node → switch → node → pod.
    /// Not in [`Lab::new`]: no other test needs it. As for IPv4, the
    /// switch answers no NDP, so each node's next hop on it is a permanent
    /// neighbour; a pod's gateway is fe80::1 on its host-side veth (as
    /// 169.254.1.1 is), resolved by NDP. Unlike IPv4 (which the node
    /// programs redirect to pods), the node routes to its pods itself: a
    /// /128 over the veth. No DAD: the addresses are usable at once.
    fn enable_ipv6(&self) {
        for (i, node) in self.n.iter().enumerate() {
            let k = i as u16 + 1;
            sys::in_netns(&node.name, || {
                std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
            })
            .unwrap()
            .unwrap();
            let uplink = format!("fd00:200:{k}::2/64");
            let gw = format!("fd00:200:{k}::1");
            node.ip(&["-6", "addr", "add", &uplink, "dev", "uplink", "nodad"])
                .unwrap();
            let sw_mac = fmt_mac(self.sw_macs[i]);
            node.ip(&[
                "-6",
                "neigh",
                "add",
                &gw,
                "lladdr",
                &sw_mac,
                "dev",
                "uplink",
                "nud",
                "permanent",
            ])
            .unwrap();
            // The pod network is behind the switch, but for the node's own
            // pods.
            node.ip(&["-6", "route", "add", "fd00:244::/32", "via", &gw])
                .unwrap();
        }
        for (i, veth, tag, ip) in [
            (0, "vpa", "pa", POD_A_V6),
            (1, "vpb", "pb", POD_B_V6),
            (0, "vpc", "pc", POD_C_V6),
        ] {
            let node = &self.n[i];
            node.ip(&["-6", "addr", "add", "fe80::1/64", "dev", veth, "nodad"])
                .unwrap();
            node.ip(&["-6", "route", "add", &format!("{ip}/128"), "dev", veth])
                .unwrap();
            let pod = |args: &[&str]| {
                sys::run("ip", &[&["-n", self.pod(tag), "-6"][..], args].concat()).unwrap()
            };
            pod(&["addr", "add", &format!("{ip}/128"), "dev", "eth0", "nodad"]);
            pod(&["route", "add", "default", "via", "fe80::1", "dev", "eth0"]);
        }
        let dp = self.dp.as_ref().unwrap();
        for i in 0..2 {
            let k = i as u16 + 1;
            let e = build::route_v6(pod_cidr_v6(k), k, self.sw_macs[i], self.up_macs[i]);
            dp.insert(&e)
                .unwrap_or_else(|err| panic!("switch insert {e:?}: {err}"));
        }
    }
}

/// A TCP server in a pod: for each connection, answers a first line with
/// "<server addr> saw <peer addr>", then sinks bytes and reports
/// "<count> <fnv hash>" when the client half-closes.
fn tcp_server(pod: &str, ip: impl Into<IpAddr>, conns: usize) -> std::thread::JoinHandle<()> {
    let ip = ip.into();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = sys::spawn_in_netns(pod, move || {
        let l = TcpListener::bind((ip, TCP_PORT)).unwrap();
        tx.send(()).unwrap();
        let mut handles = Vec::new();
        for _ in 0..conns {
            let (mut s, peer) = l.accept().unwrap();
            handles.push(std::thread::spawn(move || {
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
                    line.push(b[0]);
                }
                writeln!(s, "{ip} saw {peer}").unwrap();
                // `get N`: N pseudo-random bytes back, then close (the
                // server's bulk direction).
                if let Some(n) = std::str::from_utf8(&line)
                    .ok()
                    .and_then(|l| l.strip_prefix("get "))
                {
                    let mut left: usize = n.parse().unwrap();
                    let (mut buf, mut x) = (vec![0u8; 1 << 16], PSEUDO_RANDOM_SEED);
                    while left > 0 {
                        let k = buf.len().min(left);
                        pseudo_random(&mut buf[..k], &mut x);
                        s.write_all(&buf[..k]).unwrap();
                        left -= k;
                    }
                    return;
                }
                let (mut n, mut h) = (0u64, Fnv::default());
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let k = s.read(&mut buf).unwrap();
                    if k == 0 {
                        break;
                    }
                    n += k as u64;
                    h.update(&buf[..k]);
                }
                writeln!(s, "{n} {}", h.0).unwrap();
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
    })
    .unwrap();
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    h
}

/// A UDP server in a pod: `serve` runs on a socket bound to
/// `ip`:UDP_PORT with read timeout `timeout`. Returns once it is bound.
fn udp_server<T: Send + 'static>(
    pod: &str,
    ip: impl Into<IpAddr>,
    timeout: Duration,
    serve: impl FnOnce(UdpSocket) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ip = ip.into();
    let (ready, bound) = std::sync::mpsc::channel();
    let h = sys::spawn_in_netns(pod, move || {
        let s = UdpSocket::bind((ip, UDP_PORT)).unwrap();
        ready.send(()).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        serve(s)
    })
    .unwrap();
    bound.recv_timeout(Duration::from_secs(5)).unwrap();
    h
}

/// A UDP server in pod b that answers each of `n` datagrams with
/// "<datagram> from <peer addr>".
fn udp_echo(lab: &Lab, n: usize) -> std::thread::JoinHandle<()> {
    udp_echo_in(lab.pod("pb"), POD_B, n)
}

/// [`udp_echo`] in any netns, on `ip`:UDP_PORT.
fn udp_echo_in(ns: &str, ip: Ipv4Addr, n: usize) -> std::thread::JoinHandle<()> {
    udp_server(ns, ip, Duration::from_secs(10), move |s| {
        for _ in 0..n {
            let mut buf = [0u8; 1500];
            let (k, peer) = s.recv_from(&mut buf).unwrap();
            let text = format!("{} from {peer}", String::from_utf8_lossy(&buf[..k]));
            s.send_to(text.as_bytes(), peer).unwrap();
        }
    })
}

/// From pod a's UDP port `port`, sends "q<i>" to the `i`th of `to` and
/// waits for each reply: (reply text, its source).
fn udp_ask(lab: &Lab, port: u16, to: &[(Ipv4Addr, u16)]) -> Vec<(String, SocketAddr)> {
    let to = to.to_vec();
    sys::in_netns(lab.pod("pa"), move || {
        let s = UdpSocket::bind((POD_A, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        to.into_iter()
            .enumerate()
            .map(|(i, to)| {
                s.send_to(format!("q{i}").as_bytes(), to).unwrap();
                let mut buf = [0u8; 1500];
                let (k, from) = s.recv_from(&mut buf).expect("UDP reply");
                (String::from_utf8_lossy(&buf[..k]).into_owned(), from)
            })
            .collect()
    })
    .unwrap()
}

/// From `local` in netns `ns`, sends `text` to VIP:53 and waits for one
/// reply: (its text, its source).
fn udp_ask_from(ns: &str, local: (Ipv4Addr, u16), text: &'static str) -> (String, SocketAddr) {
    udp_ask_from_to(ns, local, (VIP, 53), text)
}

/// [`udp_ask_from`] to any address.
fn udp_ask_from_to(
    ns: &str,
    local: impl Into<SocketAddr>,
    to: impl Into<SocketAddr>,
    text: &'static str,
) -> (String, SocketAddr) {
    let (local, to) = (local.into(), to.into());
    sys::in_netns(ns, move || {
        let s = UdpSocket::bind(local).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(text.as_bytes(), to).unwrap();
        let mut buf = [0u8; 100];
        let (k, from) = s.recv_from(&mut buf).expect("the reply");
        (String::from_utf8_lossy(&buf[..k]).into_owned(), from)
    })
    .unwrap()
}

#[derive(Clone, Copy)]
struct Fnv(u64);
impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}
impl Fnv {
    fn update(&mut self, b: &[u8]) {
        for x in b {
            self.0 = (self.0 ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Connects from `pod` to VIP:80 and sends the greeting; returns the
/// stream and the server's first line.
fn connect_vip(pod: &str) -> (TcpStream, String) {
    connect_to(pod, (VIP, 80))
}

/// [`connect_vip`] to any address.
fn connect_to(ns: &str, to: impl Into<SocketAddr>) -> (TcpStream, String) {
    connect_saying(ns, to, "hello")
}

/// [`connect_to`], opening with `first` (a [`tcp_server`] command).
fn connect_saying(ns: &str, to: impl Into<SocketAddr>, first: &str) -> (TcpStream, String) {
    let to = to.into();
    let first = format!("{first}\n");
    sys::in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {to}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(s.peer_addr().unwrap(), to);
        s.write_all(first.as_bytes()).unwrap();
        let line = read_line(&mut s);
        (s, line)
    })
    .unwrap()
}

/// Where [`pseudo_random`] starts.
const PSEUDO_RANDOM_SEED: u32 = 0x1234_5678;

/// Fills `buf` from the xorshift32 state `x`.
fn pseudo_random(buf: &mut [u8], x: &mut u32) {
    for b in buf {
        *x ^= *x << 13;
        *x ^= *x >> 17;
        *x ^= *x << 5;
        *b = *x as u8;
    }
}

/// Reads `s` to its end (after a `get N`): (bytes read, whether they are
/// the N bytes [`tcp_server`] sends).
fn download(mut s: TcpStream, n: usize) -> (usize, bool) {
    let mut got = Vec::with_capacity(n);
    s.read_to_end(&mut got).unwrap();
    let mut want = vec![0u8; n];
    pseudo_random(&mut want, &mut PSEUDO_RANDOM_SEED.clone());
    (got.len(), got == want)
}

/// Sends `total` pseudo-random bytes over `s` in `chunk`s, pausing `pause`
/// between chunks, half-closes, and returns (server's count, hash) and the
/// local hash.
fn transfer(mut s: TcpStream, total: usize, chunk: usize, pause: Duration) -> ((u64, u64), u64) {
    let mut h = Fnv::default();
    let mut buf = vec![0u8; chunk];
    let mut x = PSEUDO_RANDOM_SEED;
    let mut sent = 0;
    while sent < total {
        let k = chunk.min(total - sent);
        pseudo_random(&mut buf[..k], &mut x);
        s.write_all(&buf[..k]).unwrap();
        h.update(&buf[..k]);
        sent += k;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let line = read_line(&mut s);
    let mut it = line.split(' ').map(|v| v.parse::<u64>().unwrap());
    ((it.next().unwrap(), it.next().unwrap()), h.0)
}

fn in_csum_errors(pod: &str) -> u64 {
    sys::in_netns(pod, || {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
        let lines: Vec<&str> = snmp.lines().collect();
        let mut total = 0;
        for pair in lines.chunks(2) {
            let (h, v) = (
                pair[0].split_whitespace().collect::<Vec<_>>(),
                pair[1].split_whitespace().collect::<Vec<_>>(),
            );
            if let Some(i) = h.iter().position(|f| *f == "InCsumErrors") {
                total += v[i].parse::<u64>().unwrap();
            }
        }
        total
    })
    .unwrap()
}

/// Checksum errors counted in `pod`'s IPv6 stack: [`in_csum_errors`]
/// (whose `Tcp:` line counts TCP over both families) and UDP over IPv6
/// (`/proc/net/snmp6`).
fn csum_errors6(pod: &str) -> u64 {
    let udp6 = sys::in_netns(pod, || {
        let snmp6 = std::fs::read_to_string("/proc/thread-self/net/snmp6").unwrap();
        snmp6
            .lines()
            .find_map(|l| l.strip_prefix("Udp6InCsumErrors"))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .expect("Udp6InCsumErrors in snmp6")
    })
    .unwrap();
    in_csum_errors(pod) + udp6
}

#[test]
fn tcp_and_udp_reach_a_backend_replies_come_from_the_vip_and_cookies_are_learned() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    // Real checksums: no tx checksum offload on either pod, so the
    // receiver verifies every L4 checksum in software.
    for tag in ["pa", "pb"] {
        full_checksums(lab.pod(tag));
    }
    let server = tcp_server(lab.pod("pb"), POD_B, 1);
    let (s, line) = connect_vip(lab.pod("pa"));
    // The backend saw the client's own address (no SNAT); the client's
    // socket is connected to VIP:80, so the reply came from the VIP.
    assert!(line.starts_with(&format!("{POD_B} saw {POD_A}:")), "{line}");
    let ((n, hash), local) = transfer(s, 200_000, 10_000, Duration::ZERO);
    assert_eq!((n, hash), (200_000, local));
    server.join().unwrap();

    // UDP: the reply's source is VIP:53.
    let udp = udp_echo(&lab, 3);
    let replies = udp_ask(&lab, 40053, &[(VIP, 53); 3]);
    udp.join().unwrap();
    for (i, (text, from)) in replies.iter().enumerate() {
        assert_eq!(*from, SocketAddr::from((VIP, 53)), "UDP reply source");
        assert_eq!(text, &format!("q{i} from {POD_A}:40053"));
    }

    // Cookies: learned from the first reply, carried afterwards.
    let cookies = lab.nodes[0].as_ref().unwrap().cookies().unwrap();
    let udp_cookie = cookies
        .iter()
        .find(|c| c.0.proto == IPPROTO_UDP)
        .expect("UDP cookie");
    assert_eq!(
        (udp_cookie.1.service_id, udp_cookie.1.backend_id),
        (SVC_UDP, BACKEND_B_UDP)
    );
    let s1 = lab.stats(0);
    let s2 = lab.stats(1);
    eprintln!("node1 {:?}\nnode2 {:?}", s1.events, s2.events);
    assert!(
        s1.event(node_stat::COOKIE_LEARN) >= 2,
        "one cookie per flow"
    );
    assert_eq!(
        s1.event(node_stat::CACHE_MISS),
        2,
        "only the first packet of each flow lacks a cookie"
    );
    assert!(
        s1.event(node_stat::CACHE_HIT) > 10,
        "later packets carry the cookie"
    );
    assert!(s2.event(node_stat::REVERSE_NAT) > 3 && s2.event(node_stat::REVERSE_LEARN) >= 2);
    assert_eq!(
        s2.event(node_stat::NOTIFY_SENT),
        0,
        "a UDP flow with replies needs no notification"
    );
    assert_eq!(
        in_csum_errors(lab.pod("pa")) + in_csum_errors(lab.pod("pb")),
        0,
        "InCsumErrors"
    );
    for s in [&s1, &s2] {
        assert!(s.drops.iter().all(|d| d.1 == 0), "no drops: {:?}", s.drops);
    }
}

/// Turns `pod`'s tx checksum offload off: its packets leave with full L4
/// checksums, which a receiver verifies in software.
fn full_checksums(pod: &str) {
    let args = ["netns", "exec", pod, "ethtool", "-K", "eth0", "tx", "off"];
    sys::run("ip", &args).unwrap();
}

fn ethtool_on(pod: &str, feature: &str) -> bool {
    let out = sys::run("ip", &["netns", "exec", pod, "ethtool", "-k", "eth0"]).unwrap();
    out.lines()
        .any(|l| l.trim_start().starts_with(&format!("{feature}: on")))
}

#[test]
fn tcp_100mb_transfer_with_gso_on() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    assert!(
        ethtool_on(lab.pod("pa"), "tcp-segmentation-offload"),
        "TSO on in the client pod"
    );
    assert!(
        ethtool_on(lab.pod("pa"), "generic-segmentation-offload"),
        "GSO on in the client pod"
    );
    let server = tcp_server(lab.pod("pb"), POD_B, 1);
    let (s, line) = connect_vip(lab.pod("pa"));
    assert!(line.starts_with(&format!("{POD_B} saw {POD_A}:")), "{line}");
    const TOTAL: usize = 100 * 1024 * 1024;
    let t = Instant::now();
    let ((n, hash), local) = transfer(s, TOTAL, 1 << 16, Duration::ZERO);
    let secs = t.elapsed().as_secs_f64();
    server.join().unwrap();
    assert_eq!(n, TOTAL as u64, "every byte arrived");
    assert_eq!(hash, local, "payload hash matches (data intact end to end)");
    assert_eq!(
        in_csum_errors(lab.pod("pa")) + in_csum_errors(lab.pod("pb")),
        0,
        "InCsumErrors"
    );
    let s1 = lab.stats(0);
    let encaps = s1.event(node_stat::ENCAP);
    eprintln!(
        "100 MiB in {secs:.2} s = {:.2} Gbit/s; node1 encapsulated {encaps} skbs",
        TOTAL as f64 * 8.0 / secs / 1e9
    );
    // Far fewer encapsulations than 1452-byte packets: GSO super-packets
    // were encapsulated whole and segmented after the encapsulation.
    assert!(
        encaps < (TOTAL / 1400 / 2) as u64,
        "GSO packets encapsulated ({encaps} encaps)"
    );
    for i in 0..2 {
        assert!(
            lab.stats(i).drops.iter().all(|d| d.1 == 0),
            "no drops: {:?}",
            lab.stats(i).drops
        );
    }
}

#[test]
fn established_connection_survives_a_pool_change() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    let server_b = tcp_server(lab.pod("pb"), POD_B, 1);
    let server_c = tcp_server(lab.pod("pc"), POD_C, 1);
    let (s, line) = connect_vip(lab.pod("pa"));
    assert!(
        line.starts_with(&format!("{POD_B} saw")),
        "first connection on backend b: {line}"
    );
    // ~4 MB over ~1.5 s; the pool changes in the middle.
    let sender =
        std::thread::spawn(move || transfer(s, 4 << 20, 16 << 10, Duration::from_millis(6)));
    std::thread::sleep(Duration::from_millis(500));
    // Backend c added, backend b removed from every bucket (its cookie
    // stays valid while it drains, as the controller's quarantine keeps it).
    lab.move_pool(SVC_TCP, BACKEND_C_TCP);
    let (s2, line2) = connect_vip(lab.pod("pa"));
    assert!(
        line2.starts_with(&format!("{POD_C} saw {POD_A}:")),
        "a new connection goes to backend c: {line2}"
    );
    let ((n, hash), local) = sender.join().unwrap();
    assert_eq!(
        (n, hash),
        (4 << 20, local),
        "the old connection finished on backend b, intact"
    );
    let ((n2, hash2), local2) = transfer(s2, 1 << 20, 64 << 10, Duration::ZERO);
    assert_eq!((n2, hash2), (1 << 20, local2));
    server_b.join().unwrap();
    server_c.join().unwrap();
    let cookies = lab.nodes[0].as_ref().unwrap().cookies().unwrap();
    eprintln!("node1 cookies: {cookies:?}");
}

#[test]
fn forged_encapsulation_from_a_pod_is_dropped() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    // Pod a forges a reply "from the switch" for a flow of its own choosing
    // and sends it to the switch and to node 2.
    let inner = talaria_node::packet::ipv4(
        talaria_node::packet::Tuple::tcp(VIP, 80, POD_A, 45000),
        talaria_common::net::tcp_flags::ACK,
        b"",
    );
    let mut payload = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC_TCP, 999)
        .to_bytes()
        .to_vec();
    payload.extend_from_slice(&inner);
    sys::in_netns(lab.pod("pa"), move || {
        let s = UdpSocket::bind((POD_A, 0)).unwrap();
        for dst in [SWITCH_IP, NODE2_IP, NODE1_IP] {
            s.send_to(&payload, (dst, GENEVE_UDP_PORT)).unwrap();
        }
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let s1 = lab.stats(0);
    assert_eq!(
        s1.dropped(DropReason::PodEncap),
        3,
        "dropped at the pod's veth"
    );
    assert_eq!(s1.event(node_stat::ENCAP), 0);
    assert_eq!(
        lab.stats(1).event(node_stat::DECAP),
        0,
        "nothing reached node 2"
    );
    assert!(
        lab.nodes[0].as_ref().unwrap().cookies().unwrap().is_empty(),
        "no cookie poisoned"
    );
}

#[test]
fn kube_proxy_dnat_rule_is_present_but_bypassed() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    let n1 = &lab.n[0].name;
    // A KUBE-SERVICES-style chain that would DNAT the VIP to pod c, and a
    // node route that would make that work.
    let ipt = |args: &[&str]| {
        let mut v = vec!["netns", "exec", n1.as_str(), "iptables", "-t", "nat"];
        v.extend_from_slice(args);
        sys::run("ip", &v).unwrap()
    };
    ipt(&["-N", "KUBE-SERVICES"]);
    ipt(&["-N", "KUBE-SVC-TALARIA"]);
    ipt(&["-N", "KUBE-SEP-TALARIA"]);
    ipt(&["-A", "PREROUTING", "-j", "KUBE-SERVICES"]);
    ipt(&["-A", "OUTPUT", "-j", "KUBE-SERVICES"]);
    ipt(&[
        "-A",
        "KUBE-SERVICES",
        "-d",
        "10.96.0.10/32",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-j",
        "KUBE-SVC-TALARIA",
    ]);
    ipt(&["-A", "KUBE-SVC-TALARIA", "-j", "KUBE-SEP-TALARIA"]);
    ipt(&[
        "-A",
        "KUBE-SEP-TALARIA",
        "-p",
        "tcp",
        "-j",
        "DNAT",
        "--to-destination",
        "10.244.1.3:8080",
    ]);
    lab.n[0]
        .ip(&["route", "add", "10.244.1.3/32", "dev", "vpc"])
        .unwrap();
    let server_b = tcp_server(lab.pod("pb"), POD_B, 1);
    let (s, line) = connect_vip(lab.pod("pa"));
    assert!(
        line.starts_with(&format!("{POD_B} saw {POD_A}:")),
        "the switch's choice, not iptables': {line}"
    );
    let ((n, hash), local) = transfer(s, 1 << 20, 64 << 10, Duration::ZERO);
    assert_eq!((n, hash), (1 << 20, local));
    server_b.join().unwrap();
    let counters = ipt(&["-L", "KUBE-SEP-TALARIA", "-v", "-n", "-x"]);
    let dnat = counters
        .lines()
        .find(|l| l.contains("DNAT"))
        .expect("the DNAT rule is present");
    assert_eq!(
        dnat.split_whitespace().next(),
        Some("0"),
        "the DNAT rule saw no packet: {dnat}"
    );
}

/// A `talaria-node run` process, killed on drop.
struct Agent(std::process::Child);

impl Agent {
    fn start(netns: &str, config: &std::path::Path) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_talaria-node"))
            .args(["--netns", netns, "run", "--config"])
            .arg(config)
            .spawn()
            .expect("spawn talaria-node");
        Self(child)
    }

    /// SIGTERM and wait: the agent exits, leaving everything pinned.
    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let status = self.0.wait().unwrap();
        assert!(status.success(), "agent exit: {status}");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn agent_restart_mid_transfer_breaks_no_connection() {
    require!(LOADS_BPF);
    let mut lab = Lab::new();
    // Hand node 1 to the agent binary; the in-process loader goes away,
    // its pinned maps and links stay.
    lab.nodes[0] = None;
    let cfg_path = std::env::temp_dir().join(format!("talaria-node-e2e-{}.yaml", lab.id));
    let mut cfg = lab.node_config(0);
    // The node namespace has its own loopback: a fixed port cannot clash.
    cfg.metrics_addr = "127.0.0.1:9465".into();
    std::fs::write(&cfg_path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    let agent = Agent::start(&lab.n[0].name, &cfg_path);
    std::thread::sleep(Duration::from_millis(800));

    let server = tcp_server(lab.pod("pb"), POD_B, 1);
    let (s, line) = connect_vip(lab.pod("pa"));
    assert!(line.starts_with(&format!("{POD_B} saw {POD_A}:")), "{line}");
    // ~8 MB over ~2 s; the agent stops, stays away, and comes back
    // (reloading and atomically replacing both programs) in the middle.
    let sender =
        std::thread::spawn(move || transfer(s, 8 << 20, 16 << 10, Duration::from_millis(4)));
    std::thread::sleep(Duration::from_millis(400));
    let before = lab.stats(0).event(node_stat::ENCAP);
    agent.stop();
    std::thread::sleep(Duration::from_millis(300));
    let agent = Agent::start(&lab.n[0].name, &cfg_path);
    let ((n, hash), local) = sender.join().unwrap();
    server.join().unwrap();
    assert_eq!(
        (n, hash),
        (8 << 20, local),
        "transfer intact across the restart"
    );
    let after = lab.stats(0).event(node_stat::ENCAP);
    assert!(
        after > before && before > 0,
        "counters kept across the restart ({before} → {after})"
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_talaria-node"))
        .args(["status", "--pin-dir"])
        .arg(&lab.node_pins[0])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    eprintln!("{text}");
    assert!(
        status.status.success() && text.contains("node_uplink_ingress@uplink"),
        "status lists the links"
    );
    std::thread::sleep(Duration::from_millis(500));
    let metrics = sys::in_netns(&lab.n[0].name, || {
        let mut s = TcpStream::connect("127.0.0.1:9465").expect("metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    })
    .unwrap();
    assert!(metrics.contains(&format!(
        "talaria_node_events_total{{event=\"encap\"}} {}",
        lab.stats(0).event(node_stat::ENCAP)
    )));
    assert!(
        metrics.contains("talaria_node_drops_total{reason=\"pod_spoof\"} 0"),
        "{metrics}"
    );
    agent.stop();
    let _ = std::fs::remove_file(&cfg_path);
}

const UDP_SEGMENT: libc::c_int = 103;

#[test]
fn udp_gso_datagrams_reach_the_backend() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    // The agent turned UDP segmentation off on the uplinks (the fix for the
    // UDP-GSO-after-decap quirk); with it on, this test loses all 40.
    let features = sys::run(
        "ip",
        &["netns", "exec", &lab.n[0].name, "ethtool", "-k", "uplink"],
    )
    .unwrap();
    assert!(
        features.contains("tx-udp-segmentation: off"),
        "agent set tx-udp-segmentation off"
    );
    let server = udp_server(lab.pod("pb"), POD_B, Duration::from_secs(2), |s| {
        let mut got = Vec::new();
        let mut buf = [0u8; 2000];
        while let Ok((k, _)) = s.recv_from(&mut buf) {
            got.push(buf[..k].to_vec());
        }
        got
    });
    sys::in_netns(lab.pod("pa"), || {
        use std::os::fd::AsRawFd;
        let s = UdpSocket::bind((POD_A, 0)).unwrap();
        let seg: libc::c_int = 1000;
        // SAFETY: setsockopt with a valid int option.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_UDP,
                UDP_SEGMENT,
                &seg as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        assert_eq!(rc, 0, "UDP_SEGMENT");
        for i in 0..5u8 {
            // One send, eight 1000-byte datagrams (a UDP GSO skb).
            s.send_to(&[i; 8000], (VIP, 53)).unwrap();
        }
    })
    .unwrap();
    let got = server.join().unwrap();
    let s1 = lab.stats(0);
    let s2 = lab.stats(1);
    eprintln!(
        "received {} datagrams; node1 {:?}; node2 {:?} drops {:?}",
        got.len(),
        s1.events,
        s2.events,
        s2.drops
    );
    assert_eq!(got.len(), 40, "every segment of every UDP GSO send arrived");
    assert!(got.iter().all(|d| d.len() == 1000));
}

#[test]
fn icmp_port_unreachable_from_a_backend_reaches_the_client() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    port_unreachable_from_a_backend(&lab, POD_A.into(), VIP.into());
}

/// A pod's connection to an IPv6 port without endpoints is refused at
/// once by its node (kube-proxy's REJECT: ICMPv6 port unreachable from
/// the VIP6), not left to time out.
#[test]
fn a_connection_to_an_ipv6_port_without_endpoints_is_refused() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    lab.enable_ipv6();
    let refused = sys::in_netns(lab.pod("pa"), || {
        TcpStream::connect_timeout(
            &SocketAddr::from((VIP_V6, NO_ENDPOINTS_PORT)),
            Duration::from_secs(5),
        )
        .unwrap_err()
    })
    .unwrap();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    // At least the SYN; a refusal that arrives while connect() still holds
    // the socket is only noted, and the retransmitted SYN's ends it.
    assert!(lab.stats(0).event(node_stat::REJECTED) >= 1);
}

/// [`icmp_port_unreachable_from_a_backend_reaches_the_client`] over IPv6:
/// the backend's ICMPv6 error goes through the switch as a reply.
#[test]
fn icmpv6_port_unreachable_from_a_backend_reaches_the_client() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    lab.enable_ipv6();
    port_unreachable_from_a_backend(&lab, POD_A_V6.into(), VIP_V6.into());
}

/// Nothing listens on backend b's UDP port: its kernel answers with port
/// unreachable, which must reach the client as coming from the VIP about
/// VIP:53 (a connected UDP socket then reports ECONNREFUSED; its kernel
/// checked the checksum and matched the quote to the socket).
fn port_unreachable_from_a_backend(lab: &Lab, client: IpAddr, vip: IpAddr) {
    let err = sys::in_netns(lab.pod("pa"), move || {
        let s = UdpSocket::bind((client, 0)).unwrap();
        s.connect((vip, 53)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send(b"anyone?").unwrap();
        let mut buf = [0u8; 100];
        s.recv(&mut buf).unwrap_err()
    })
    .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(lab.stats(1).event(node_stat::REVERSE_NAT) >= 1);
    for node in [0, 1] {
        let drops = lab.stats(node).drops;
        assert!(drops.iter().all(|d| d.1 == 0), "no drops: {drops:?}");
    }
}

/// A client's ICMP error about a reply reaches the backend that sent it,
/// as conntrack relays RELATED errors (issue: ICMP errors).
#[test]
fn a_clients_port_unreachable_about_a_reply_reaches_the_backend() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    clients_port_unreachable_about_a_reply(&lab, POD_A.into(), POD_B.into(), VIP.into());
}

/// [`a_clients_port_unreachable_about_a_reply_reaches_the_backend`] over
/// IPv6: the switch rewrites the client's ICMPv6 error as the backend
/// must see it (destination, quoted source address and port, ICMPv6
/// checksum).
#[test]
fn a_clients_icmpv6_port_unreachable_about_a_reply_reaches_the_backend() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    lab.enable_ipv6();
    clients_port_unreachable_about_a_reply(&lab, POD_A_V6.into(), POD_B_V6.into(), VIP_V6.into());
}

/// Pod a (`client`) asks backend b (`backend`) through `vip`:53; its
/// socket is gone when b's second datagram arrives, so its kernel answers
/// that with port unreachable, which must reach b's connected socket as
/// ECONNREFUSED. The kernel rate-limits ICMP errors host-wide
/// (`icmp_msgs_per_sec`, shared with every test running beside this one),
/// so b sends again, at most 10 times 300 ms apart, until the error comes.
fn clients_port_unreachable_about_a_reply(lab: &Lab, client: IpAddr, backend: IpAddr, vip: IpAddr) {
    let (closed, client_gone) = std::sync::mpsc::channel::<()>();
    let server = udp_server(lab.pod("pb"), backend, Duration::from_secs(5), move |s| {
        let mut buf = [0u8; 100];
        let (_, peer) = s.recv_from(&mut buf).unwrap();
        s.connect(peer).unwrap();
        s.send(b"one").unwrap();
        client_gone.recv_timeout(Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut last = Ok(());
        for _ in 0..10 {
            s.send(b"two").unwrap();
            last = s.recv(&mut buf).map(|_| ());
            if last
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
            {
                break;
            }
        }
        (peer, last)
    });
    sys::in_netns(lab.pod("pa"), move || {
        let s = UdpSocket::bind((client, 40120)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(b"hello", (vip, 53)).unwrap();
        let mut buf = [0u8; 100];
        s.recv_from(&mut buf).expect("the first reply");
        drop(s);
        closed.send(()).unwrap();
    })
    .unwrap();
    let (peer, second) = server.join().unwrap();
    assert_eq!(peer, SocketAddr::from((client, 40120)));
    let err = second.expect_err("the client's port unreachable reached the backend");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let sent = lab.stats(0).event(node_stat::ICMP_RELAY);
    assert!(sent >= 1, "sent");
    assert_eq!(
        lab.stats(1).event(node_stat::ICMP_RELAY),
        sent,
        "every one delivered"
    );
}

/// A pod that reaches its own Service and is chosen as its backend is
/// answered (issue: drop-in, hairpin): as the server it sees the
/// connection come from HAIRPIN_SOURCE, as the client it talks to the VIP.
/// Without the rewrite its kernel drops the packets (its own address as
/// the source) and the connect times out.
#[test]
fn a_pod_reaches_itself_through_its_service() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    let hairpin = Ipv4Addr::from(HAIRPIN_SOURCE.0);
    let server = tcp_server(lab.pod("pb"), POD_B, 1);
    let (s, line) = connect_vip(lab.pod("pb"));
    let port = s.local_addr().unwrap().port();
    assert_eq!(line, format!("{POD_B} saw {hairpin}:{port}"));
    let (theirs, mine) = transfer(s, 1 << 20, 1 << 14, Duration::ZERO);
    assert_eq!(theirs, (1 << 20, mine), "1 MiB there and its hash back");
    server.join().unwrap();

    let echo = udp_echo(&lab, 1);
    let (text, from) = udp_ask_from(lab.pod("pb"), (POD_B, 40130), "me");
    echo.join().unwrap();
    assert_eq!(
        (text, from),
        (
            format!("me from {hairpin}:40130"),
            SocketAddr::from((VIP, 53))
        )
    );
}

/// The node's own processes (and so hostNetwork pods) reach ClusterIPs,
/// TCP and UDP, with replies from the VIP (issue: drop-in, host-network
/// clients): from node 1 (backend on the other node) and node 2 (backend
/// on this node); a port without endpoints refuses them at once.
#[test]
fn host_network_clients_reach_services() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    for (node, node_ip) in [(0, NODE1_IP), (1, NODE2_IP)] {
        let server = tcp_server(lab.pod("pb"), POD_B, 1);
        let (s, line) = connect_vip(&lab.n[node].name);
        let port = s.local_addr().unwrap().port();
        assert_eq!(line, format!("{POD_B} saw {node_ip}:{port}"));
        let (theirs, mine) = transfer(s, 1 << 20, 1 << 14, Duration::ZERO);
        assert_eq!(theirs, (1 << 20, mine), "1 MiB there and its hash back");
        server.join().unwrap();

        let echo = udp_echo(&lab, 1);
        let (text, from) = udp_ask_from(&lab.n[node].name, (node_ip, 40140), "host");
        echo.join().unwrap();
        assert_eq!(
            (text, from),
            (
                format!("host from {node_ip}:40140"),
                SocketAddr::from((VIP, 53))
            )
        );
    }
    let refused = sys::in_netns(&lab.n[0].name, || {
        TcpStream::connect_timeout(
            &SocketAddr::from((VIP2, NO_ENDPOINTS_PORT)),
            Duration::from_secs(5),
        )
        .unwrap_err()
    })
    .unwrap();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(lab.stats(0).event(node_stat::REJECTED), 1);
}

/// A Service whose endpoint runs no agent (issue: drop-in, item 2: the
/// API server behind `default/kubernetes`, node and off-cluster
/// addresses): the switch delivers requests plain to the outside host and
/// tunnels its replies back to the client's node, which restores the VIP
/// for flows it sent to the VIP, and leaves them alone for clients that
/// talk to the endpoint directly. Pod and host-network clients, TCP and
/// UDP.
#[test]
fn a_service_whose_endpoint_runs_no_agent_answers_from_its_vip() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    let server = tcp_server(&lab.outside.name, EXT_IP, 3);
    let clients = [(lab.pod("pa"), POD_A), (lab.n[0].name.as_str(), NODE1_IP)];
    for (ns, client) in clients {
        let (s, line) = connect_to(ns, (VIP_EXT, 443));
        let port = s.local_addr().unwrap().port();
        assert_eq!(line, format!("{EXT_IP} saw {client}:{port}"));
        let (theirs, mine) = transfer(s, 1 << 20, 1 << 14, Duration::ZERO);
        assert_eq!(theirs, (1 << 20, mine), "1 MiB there and its hash back");
    }
    // Straight to the endpoint: its replies keep its address.
    let (s, line) = connect_to(lab.pod("pa"), (EXT_IP, TCP_PORT));
    let port = s.local_addr().unwrap().port();
    assert_eq!(line, format!("{EXT_IP} saw {POD_A}:{port}"));
    assert_eq!(transfer(s, 1000, 1000, Duration::ZERO).0 .0, 1000);
    server.join().unwrap();

    let echo = udp_echo_in(&lab.outside.name, EXT_IP, 2);
    for (ns, client, port) in [
        (lab.pod("pa"), POD_A, 40160),
        (lab.n[0].name.as_str(), NODE1_IP, 40161),
    ] {
        let (text, from) = udp_ask_from_to(ns, (client, port), (VIP_EXT, 53), "api?");
        assert_eq!(
            (text, from),
            (
                format!("api? from {client}:{port}"),
                SocketAddr::from((VIP_EXT, 53))
            )
        );
    }
    echo.join().unwrap();
    let st = lab.stats(0);
    assert!(st.event(node_stat::ENDPOINT_REPLY) > 0);
    assert!(st.event(node_stat::ENDPOINT_DIRECT) > 0);
}

/// A client outside the cluster (no agent) reaches a LoadBalancer ingress
/// IP through the switch (issue: north-south, item 4): TCP to pod b on
/// node 2, UDP to pod c on node 1. The backend sees the client's own
/// address (no SNAT, whatever the externalTrafficPolicy), and the client
/// gets its replies from the address it used. A one-way UDP flow's
/// notification, meant for a client's node, never reaches it.
#[test]
fn an_external_client_reaches_a_load_balancer_ip() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    let server = tcp_server(lab.pod("pb"), POD_B, 2);
    let (s, line) = connect_to(&lab.outside.name, (LB_IP, 80));
    let port = s.local_addr().unwrap().port();
    assert_eq!(line, format!("{POD_B} saw {EXT_IP}:{port}"));
    let (theirs, mine) = transfer(s, 4 << 20, 1 << 16, Duration::ZERO);
    assert_eq!(theirs, (4 << 20, mine), "4 MiB there and its hash back");
    // A pod's node steers it to the switch as a ClusterIP flow, with a
    // cookie (kube-proxy short-circuits it to the Service too).
    let learned = lab.stats(0).event(node_stat::COOKIE_LEARN);
    let (s, line) = connect_to(lab.pod("pa"), (LB_IP, 80));
    let port = s.local_addr().unwrap().port();
    assert_eq!(line, format!("{POD_B} saw {POD_A}:{port}"));
    assert_eq!(transfer(s, 1000, 1000, Duration::ZERO).0 .0, 1000);
    assert!(lab.stats(0).event(node_stat::COOKIE_LEARN) > learned);
    server.join().unwrap();

    let echo = udp_echo_in(lab.pod("pc"), POD_C, 1);
    let (text, from) = udp_ask_from_to(&lab.outside.name, (EXT_IP, 40170), (LB_IP, 53), "lb?");
    echo.join().unwrap();
    assert_eq!(text, format!("lb? from {EXT_IP}:40170"));
    assert_eq!(from, SocketAddr::from((LB_IP, 53)));

    // Unanswered datagrams of one flow: pod c's node notifies on the
    // third, and the switch drops the notification (no client node).
    let sink = udp_sink(lab.pod("pc"), POD_C);
    udp_send_from(
        &lab.outside.name,
        (EXT_IP, 40171),
        (LB_IP, 53),
        "oneway",
        0..4,
    );
    assert_eq!(sink.join().unwrap().len(), 4);
    assert_eq!(lab.stats(0).event(node_stat::NOTIFY_SENT), 1);
}

/// Captures, in namespace `ns`, the TCP segments from `from` (address,
/// port) that carry timestamps: (destination port, TSval) of each, until
/// the flag is set. Returns once the packet socket is open.
fn capture_tsvals(
    ns: &str,
    from: (Ipv4Addr, u16),
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<Vec<(u16, u32)>>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let stopped = stop.clone();
    let h = sys::spawn_in_netns(ns, move || {
        // SAFETY: a packet socket owned by this thread, closed at its end;
        // the buffers outlive the calls.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM,
                i32::from((libc::ETH_P_IP as u16).to_be()),
            )
        };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: as above.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        tx.send(()).unwrap();
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while !stopped.load(Ordering::Relaxed) {
            // SAFETY: as above.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else {
                continue;
            };
            let ip = &buf[..n];
            if n < 40 || ip[9] != IPPROTO_TCP || ip[12..16] != from.0.octets() {
                continue;
            }
            let tcp = &ip[usize::from(ip[0] & 0xf) * 4..];
            if tcp.len() < 20 || u16::from_be_bytes([tcp[0], tcp[1]]) != from.1 {
                continue;
            }
            let opts = &tcp[20..(usize::from(tcp[12] >> 4) * 4).clamp(20, tcp.len())];
            if let Some(at) = tcp_opt::timestamps_at(opts.len(), |i| opts.get(i).copied()) {
                let tsval = u32::from_be_bytes(opts[at + 2..at + 6].try_into().unwrap());
                seen.push((u16::from_be_bytes([tcp[2], tcp[3]]), tsval));
            }
        }
        // SAFETY: as above.
        unsafe { libc::close(fd) };
        seen
    })
    .unwrap();
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    (stop, h)
}

/// A client outside the cluster talks TCP with timestamps on (Linux's
/// default) to a LoadBalancer IP (issue 12, item 5): every TSval it sees
/// carries, in its low half, the cookie of its backend (stamped by the
/// backend's node), and the backend sees its own values echoed (restored
/// by the same node; Linux drops an ACK that echoes a TSval from the
/// future). When the pool moves to another backend mid-transfer, the
/// switch keeps the connection on its backend by the cookie the client
/// echoes (`ts_cookie`), and the transfer ends intact; a new connection
/// goes to the new backend, with that backend's cookie.
#[test]
fn an_outside_clients_timestamps_keep_it_on_its_backend() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    let cookie_b = ts_cookie::cookie(&ts_key(), SVC_LB_TCP, BACKEND_B_TCP);
    let cookie_c = ts_cookie::cookie(&ts_key(), SVC_LB_TCP, BACKEND_C_TCP);
    assert_ne!(cookie_b, cookie_c);
    let (stop, capture) = capture_tsvals(&lab.outside.name, (LB_IP, 80));
    let server_b = tcp_server(lab.pod("pb"), POD_B, 1);
    let server_c = tcp_server(lab.pod("pc"), POD_C, 2);
    let (s, line) = connect_to(&lab.outside.name, (LB_IP, 80));
    let port_b = s.local_addr().unwrap().port();
    assert_eq!(line, format!("{POD_B} saw {EXT_IP}:{port_b}"));
    // ~4 MB over ~1.5 s; the pool changes in the middle.
    let sender =
        std::thread::spawn(move || transfer(s, 4 << 20, 16 << 10, Duration::from_millis(6)));
    std::thread::sleep(Duration::from_millis(500));
    lab.move_pool(SVC_LB_TCP, BACKEND_C_TCP);
    let (s2, line2) = connect_to(&lab.outside.name, (LB_IP, 80));
    let port_c = s2.local_addr().unwrap().port();
    assert_eq!(
        line2,
        format!("{POD_C} saw {EXT_IP}:{port_c}"),
        "a new connection goes to c"
    );
    let ((n, hash), local) = sender.join().unwrap();
    assert_eq!(
        (n, hash),
        (4 << 20, local),
        "the first connection ended on b, intact"
    );
    let ((n2, hash2), local2) = transfer(s2, 1 << 20, 64 << 10, Duration::ZERO);
    assert_eq!((n2, hash2), (1 << 20, local2));
    // The backend's bulk direction, every segment stamped and its checksum
    // updated. Pod c computes full checksums (no tx checksum offload), so
    // the outside host verifies each in software: a wrong one would be
    // dropped again and again and stall the download into its timeout.
    full_checksums(lab.pod("pc"));
    let (s3, line3) = connect_saying(&lab.outside.name, (LB_IP, 80), "get 8388608");
    let port_d = s3.local_addr().unwrap().port();
    assert_eq!(line3, format!("{POD_C} saw {EXT_IP}:{port_d}"));
    assert_eq!(
        download(s3, 8 << 20),
        (8 << 20, true),
        "8 MiB from c, intact"
    );
    server_b.join().unwrap();
    server_c.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let seen = capture.join().unwrap();
    for (port, cookie, node) in [
        (port_b, cookie_b, 1),
        (port_c, cookie_c, 0),
        (port_d, cookie_c, 0),
    ] {
        let tsvals: Vec<u32> = seen.iter().filter(|s| s.0 == port).map(|s| s.1).collect();
        assert!(
            tsvals.len() >= 3,
            "segments with timestamps to port {port}: {seen:?}"
        );
        assert!(
            tsvals.iter().all(|v| v & 0xffff == u32::from(cookie)),
            "every TSval to {port} carries cookie {cookie:#06x}: {tsvals:x?}"
        );
        let s = lab.stats(node);
        assert!(
            s.event(node_stat::TS_STAMPED) >= tsvals.len() as u64 / 2
                && s.event(node_stat::TS_RESTORED) > 0,
            "node {}: {:?}",
            node + 1,
            s.events
        );
    }
}

/// A nodePort key as a node agent gets it from the controller.
fn node_port(id: u16, node_ip: Ipv4Addr, port: u16, proto: &str) -> ServiceConfig {
    ServiceConfig {
        node_port: true,
        ..ServiceConfig::new(id, node_ip, port, proto)
    }
}

/// A client outside the cluster reaches a NodePort Service at either
/// node's address (issue: north-south, item 2): the switch balances the
/// node's key itself, so TCP to pod b and UDP to pod c work whichever node
/// is asked, and the backend sees the client's own address (no SNAT), both
/// where the key is `Local`'s and where it is `Cluster`'s. A pod reaches
/// another node's nodePort plain, through the switch, as an outside client
/// does; its node learns no cookie for that flow. Its own node's nodePort
/// its node steers, as a ClusterIP (the node's stack would take it
/// otherwise). A nodePort without a switch entry (Local, no endpoint on
/// the node) is refused by the node itself.
#[test]
fn an_external_client_reaches_a_node_port_on_each_node() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    let server = tcp_server(lab.pod("pb"), POD_B, 4);
    for node_ip in [NODE1_IP, NODE2_IP] {
        let (s, line) = connect_to(&lab.outside.name, (node_ip, NODE_PORT_TCP));
        let port = s.local_addr().unwrap().port();
        assert_eq!(
            line,
            format!("{POD_B} saw {EXT_IP}:{port}"),
            "via {node_ip}"
        );
        let (theirs, mine) = transfer(s, 1 << 20, 1 << 16, Duration::ZERO);
        assert_eq!(theirs, (1 << 20, mine), "1 MiB via {node_ip}");
    }
    // Pod a, on node 1, to node 2's nodePort: node 1 routes node 2's
    // address through the switch, as a fabric would.
    lab.n[0]
        .ip(&[
            "route",
            "add",
            "10.200.2.0/24",
            "via",
            "10.200.1.1",
            "dev",
            "uplink",
        ])
        .unwrap();
    let learned = lab.stats(0).event(node_stat::COOKIE_LEARN);
    let (s, line) = connect_to(lab.pod("pa"), (NODE2_IP, NODE_PORT_TCP));
    let port = s.local_addr().unwrap().port();
    assert_eq!(line, format!("{POD_B} saw {POD_A}:{port}"));
    assert_eq!(transfer(s, 1000, 1000, Duration::ZERO).0 .0, 1000);
    assert_eq!(lab.stats(0).event(node_stat::COOKIE_LEARN), learned);
    let (s, line) = connect_to(lab.pod("pa"), (NODE1_IP, NODE_PORT_TCP));
    let port = s.local_addr().unwrap().port();
    assert_eq!(line, format!("{POD_B} saw {POD_A}:{port}"));
    assert_eq!(transfer(s, 1000, 1000, Duration::ZERO).0 .0, 1000);
    assert!(lab.stats(0).event(node_stat::COOKIE_LEARN) > learned);
    server.join().unwrap();

    let echo = udp_echo_in(lab.pod("pc"), POD_C, 3);
    for (ns, client, node_ip) in [
        (lab.outside.name.as_str(), (EXT_IP, 40180), NODE1_IP),
        (&lab.outside.name, (EXT_IP, 40181), NODE2_IP),
        (lab.pod("pa"), (POD_A, 40182), NODE1_IP),
    ] {
        let to = (node_ip, NODE_PORT_UDP);
        let (text, from) = udp_ask_from_to(ns, client, to, "np?");
        assert_eq!(text, format!("np? from {}", SocketAddr::from(client)));
        assert_eq!(from, SocketAddr::from(to));
    }
    echo.join().unwrap();

    let refused = sys::in_netns(&lab.outside.name, || {
        let to = SocketAddr::from((NODE1_IP, NODE_PORT_NO_LOCAL));
        TcpStream::connect_timeout(&to, Duration::from_secs(5)).map(|_| ())
    })
    .unwrap();
    assert_eq!(
        refused.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
}

/// `internalTrafficPolicy: Local` (issue: drop-in, endpoint semantics):
/// node 1's clients reach only node 1's endpoint of the Service (pod c),
/// though the switch's buckets hold only pod b; a Local port without an
/// endpoint on node 1 drops their new flows, as kube-proxy does.
#[test]
fn internal_traffic_policy_local_keeps_clients_on_their_node() {
    require!(LOADS_BPF);
    let mut lab = Lab::new();
    // Pod c is an endpoint of SVC_TCP too (its cookie is valid); the
    // controller would list it as node 1's local endpoint.
    lab.dp
        .as_ref()
        .unwrap()
        .insert(&build::cookie(SVC_TCP, BACKEND_C_TCP))
        .unwrap();
    let hairpin = Ipv4Addr::from(HAIRPIN_SOURCE.0);
    let mut services = lab.node_config(0).services;
    for s in &mut services {
        s.local_only = true;
        if s.id == SVC_TCP {
            s.preferred = vec![BACKEND_C_TCP];
        }
    }
    lab.nodes[0]
        .as_mut()
        .unwrap()
        .set_services(&services)
        .unwrap();

    let servers = [
        tcp_server(lab.pod("pc"), POD_C, 2),
        tcp_server(lab.pod("pb"), POD_B, 1),
    ];
    let talk = |pod: &str| {
        let (s, line) = connect_vip(pod);
        let port = s.local_addr().unwrap().port();
        let (theirs, mine) = transfer(s, 1000, 1000, Duration::ZERO);
        assert_eq!(theirs, (1000, mine));
        (line, port)
    };
    for _ in 0..2 {
        let (line, port) = talk(lab.pod("pa"));
        assert_eq!(line, format!("{POD_C} saw {POD_A}:{port}"));
    }
    // Node 2 is not Local here: its client goes by the switch's buckets.
    let (line, port) = talk(lab.pod("pb"));
    assert_eq!(line, format!("{POD_B} saw {hairpin}:{port}"));
    for s in servers {
        s.join().unwrap();
    }

    let lost = sys::in_netns(lab.pod("pa"), || {
        let s = UdpSocket::bind((POD_A, 40150)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.send_to(b"anyone local?", (VIP, 53)).unwrap();
        let mut buf = [0u8; 100];
        s.recv_from(&mut buf).unwrap_err().kind()
    })
    .unwrap();
    assert!(
        matches!(
            lost,
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{lost:?}"
    );
    assert_eq!(lab.stats(0).dropped(DropReason::NoLocalEndpoint), 1);
}

/// `sessionAffinity: ClientIP` with `timeoutSeconds`, kept on the client's
/// node: a client's new connections stay on the backend of its last one
/// while the switch's buckets move elsewhere, leave it once it takes no
/// new flows, and follow the buckets again after the timeout.
#[test]
fn session_affinity_keeps_a_client_on_its_backend_until_the_timeout() {
    require!(LOADS_BPF);
    const TIMEOUT_SECS: u32 = 2;
    let mut lab = Lab::new();
    let set_active = |lab: &mut Lab, active: &[u32]| {
        let mut services = lab.node_config(0).services;
        for s in services.iter_mut().filter(|s| s.id == SVC_TCP) {
            s.affinity_timeout_secs = TIMEOUT_SECS;
            s.active = active.to_vec();
        }
        lab.nodes[0]
            .as_mut()
            .unwrap()
            .set_services(&services)
            .unwrap();
    };
    let buckets_to = |lab: &Lab, backend_id| {
        let dp = lab.dp.as_ref().unwrap();
        for b in 0..BUCKETS {
            dp.modify(&build::bucket(SVC_TCP, b, backend_id)).unwrap();
        }
    };
    let servers = [
        tcp_server(lab.pod("pb"), POD_B, 3),
        tcp_server(lab.pod("pc"), POD_C, 2),
    ];
    let served_by = |lab: &Lab| {
        let (s, line) = connect_vip(lab.pod("pa"));
        let (theirs, mine) = transfer(s, 1000, 1000, Duration::ZERO);
        assert_eq!(theirs, (1000, mine));
        line.split(' ').next().unwrap().parse::<Ipv4Addr>().unwrap()
    };
    let affinity_hits = |lab: &Lab| lab.stats(0).event(node_stat::AFFINITY);

    set_active(&mut lab, &[BACKEND_B_TCP, BACKEND_C_TCP]);
    assert_eq!(served_by(&lab), POD_B, "the buckets' backend");
    lab.dp
        .as_ref()
        .unwrap()
        .insert(&build::cookie(SVC_TCP, BACKEND_C_TCP))
        .unwrap();
    buckets_to(&lab, BACKEND_C_TCP);
    assert_eq!(served_by(&lab), POD_B, "affinity outlives the bucket move");
    assert_eq!(affinity_hits(&lab), 1);

    set_active(&mut lab, &[BACKEND_C_TCP]);
    assert_eq!(served_by(&lab), POD_C, "b takes no new flows: the buckets");
    set_active(&mut lab, &[BACKEND_B_TCP, BACKEND_C_TCP]);
    buckets_to(&lab, BACKEND_B_TCP);
    assert_eq!(served_by(&lab), POD_C, "affinity now names c");
    assert_eq!(affinity_hits(&lab), 2);

    std::thread::sleep(Duration::from_millis(u64::from(TIMEOUT_SECS) * 1000 + 500));
    assert_eq!(served_by(&lab), POD_B, "after the timeout: the buckets");
    assert_eq!(affinity_hits(&lab), 2);
    for s in servers {
        s.join().unwrap();
    }
}

/// A UDP sink in `pod`: the datagrams it got, until none came for 1.5 s
/// (at most 64).
fn udp_sink(pod: &str, ip: impl Into<IpAddr>) -> std::thread::JoinHandle<Vec<String>> {
    udp_server(pod, ip, Duration::from_millis(1500), |s| {
        let mut got = Vec::new();
        let mut buf = [0u8; 100];
        while got.len() < 64 {
            match s.recv_from(&mut buf) {
                Ok((k, _)) => got.push(String::from_utf8_lossy(&buf[..k]).into_owned()),
                Err(_) => break,
            }
        }
        got
    })
}

/// From pod a's UDP `port`, sends "<tag>-<i>" for each `i` to VIP:53, 10
/// ms apart, and checks that nothing comes back (the notification is the
/// node's, not the pod's).
fn udp_send(lab: &Lab, port: u16, tag: &'static str, i: std::ops::Range<u32>) {
    udp_send_from(lab.pod("pa"), (POD_A, port), (VIP, 53), tag, i);
}

/// [`udp_send`] from `local` in netns `ns` to `to`.
fn udp_send_from(
    ns: &str,
    local: (Ipv4Addr, u16),
    to: (Ipv4Addr, u16),
    tag: &'static str,
    i: std::ops::Range<u32>,
) {
    sys::in_netns(ns, move || {
        let s = UdpSocket::bind(local).unwrap();
        for i in i {
            s.send_to(format!("{tag}-{i}").as_bytes(), to).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 100];
        assert!(s.recv_from(&mut buf).is_err(), "{local:?} got a datagram");
    })
    .unwrap();
}

#[test]
fn a_one_way_udp_flow_keeps_its_backend_when_the_buckets_move() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    let sinks = [
        udp_sink(lab.pod("pb"), POD_B),
        udp_sink(lab.pod("pc"), POD_C),
    ];
    let event = |node, e| lab.stats(node).event(e);
    // Two requests without a reply: the flow may still be a DNS client's
    // A and AAAA queries. The third tells node 1 the cookie.
    udp_send(&lab, 40001, "one", 0..2);
    assert_eq!(event(1, node_stat::NOTIFY_SENT), 0);
    udp_send(&lab, 40001, "one", 2..3);
    assert!(eventually(|| event(0, node_stat::NOTIFY_LEARNED) == 1));
    assert_eq!(event(1, node_stat::NOTIFY_SENT), 1);
    // Every bucket moves to c: the flow stays on b, a new one goes to c
    // (and is pinned there the same way, by c's node, which is node 1).
    lab.move_pool(SVC_UDP, BACKEND_C_UDP);
    udp_send(&lab, 40001, "one", 3..8);
    udp_send(&lab, 40002, "two", 0..4);
    assert!(eventually(|| event(0, node_stat::NOTIFY_LEARNED) == 2));
    assert_eq!(event(0, node_stat::NOTIFY_SENT), 1);
    assert_eq!(event(1, node_stat::NOTIFY_SENT), 1, "sent once per flow");
    // b leaves the UDP port: its cookie goes at once (conntrack cleanup),
    // the switch hashes the flow to c and flags it new, and c's node pins
    // it there; b coming back with every bucket does not move it.
    let dp = lab.dp.as_ref().unwrap();
    dp.delete(&build::cookie(SVC_UDP, BACKEND_B_UDP).key())
        .unwrap();
    udp_send(&lab, 40001, "one", 8..11);
    assert!(eventually(|| event(0, node_stat::NOTIFY_LEARNED) == 3));
    lab.move_pool(SVC_UDP, BACKEND_B_UDP);
    udp_send(&lab, 40001, "one", 11..14);
    let [b, c] = sinks.map(|s| s.join().unwrap());
    let names =
        |tag: &str, i: std::ops::Range<u32>| i.map(|i| format!("{tag}-{i}")).collect::<Vec<_>>();
    assert_eq!(b, names("one", 0..8));
    assert_eq!(c, [names("two", 0..4), names("one", 8..14)].concat());
    for node in [0, 1] {
        let drops = lab.stats(node).drops;
        assert!(drops.iter().all(|d| d.1 == 0), "no drops: {drops:?}");
    }
}

#[test]
fn agent_attaches_a_pod_veth_that_appears_later() {
    require!(LOADS_BPF);
    let mut lab = Lab::new();
    lab.nodes[0] = None;
    const POD_D: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 4);
    let mut cfg = lab.node_config(0);
    cfg.pods.push(PodConfig {
        ip: POD_D,
        ipv6: vec![],
        veth: "vpd".into(),
        mac: None,
    });
    let cfg_path = std::env::temp_dir().join(format!("talaria-node-e2e-{}.yaml", lab.id));
    std::fs::write(&cfg_path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    let agent = Agent::start(&lab.n[0].name, &cfg_path);
    std::thread::sleep(Duration::from_millis(800));
    // The pod (and its veth) is created after the agent started.
    let name = format!("tlr-pd-{}", lab.id);
    let pod = add_pod(&lab.n[0], "vpd", POD_D, &name);
    lab.pods.push(pod);
    let link = lab.node_pins[0]
        .join("links")
        .join(node::link_pin_name(node::PROG_POD, "vpd"));
    let t = Instant::now();
    while !link.exists() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(link.exists(), "agent attached to the new veth within 5 s");
    eprintln!("attached {:?} after the veth appeared", t.elapsed());
    let server = tcp_server(lab.pod("pb"), POD_B, 1);
    let (s, line) = connect_vip(&name);
    assert!(line.starts_with(&format!("{POD_B} saw {POD_D}:")), "{line}");
    let ((n, hash), local) = transfer(s, 1 << 20, 64 << 10, Duration::ZERO);
    assert_eq!((n, hash), (1 << 20, local));
    server.join().unwrap();
    agent.stop();
    let _ = std::fs::remove_file(&cfg_path);
}

/// Sets the MTU of a pod's `eth0` and of its host-side `veth` on `node`.
fn set_pod_mtu(lab: &Lab, node: usize, veth: &str, tag: &str, mtu: u32) {
    let m = mtu.to_string();
    lab.n[node].ip(&["link", "set", veth, "mtu", &m]).unwrap();
    sys::run(
        "ip",
        &["-n", lab.pod(tag), "link", "set", "eth0", "mtu", &m],
    )
    .unwrap();
}

/// `ip route get dst` inside `netns` (shows a learned PMTU as `mtu N`).
fn route_get(netns: &str, dst: Ipv4Addr) -> String {
    sys::run("ip", &["-n", netns, "route", "get", &dst.to_string()]).unwrap()
}

fn setsockopt_int(fd: i32, level: libc::c_int, name: libc::c_int, v: libc::c_int) {
    // SAFETY: an int option from an int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

fn getsockopt_int(fd: i32, level: libc::c_int, name: libc::c_int) -> libc::c_int {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: an int option into an int.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
    v
}

#[test]
fn pmtu_discovery_clamps_pods_with_a_too_large_mtu() {
    require!(LOADS_BPF);
    use std::os::fd::AsRawFd;
    use talaria_common::maps::mtu_stat;
    let lab = Lab::new();
    // Client a and backend b get MTU 1500 on a 1500 uplink: their
    // full-size packets cannot be encapsulated (1548 bytes).
    set_pod_mtu(&lab, 0, "vpa", "pa", 1500);
    set_pod_mtu(&lab, 1, "vpb", "pb", 1500);

    // UDP with DF (IP_PMTUDISC_DO, what `ping -M do` sets): a 1500-byte
    // datagram to the VIP comes back as ICMP fragmentation-needed with MTU
    // 1452, the socket learns it, and a datagram that fits goes through.
    let sizes_server = udp_server(lab.pod("pb"), POD_B, Duration::from_secs(3), |s| {
        let mut sizes = Vec::new();
        let mut buf = [0u8; 2000];
        while let Ok((k, _)) = s.recv_from(&mut buf) {
            sizes.push(k);
        }
        sizes
    });
    let (learned, too_big, fits) = sys::in_netns(lab.pod("pa"), || {
        let s = UdpSocket::bind((POD_A, 0)).unwrap();
        let fd = s.as_raw_fd();
        let v: libc::c_int = libc::IP_PMTUDISC_DO;
        // SAFETY: an int option.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        assert_eq!(rc, 0);
        s.connect((VIP, 53)).unwrap();
        assert_eq!(getsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU), 1500);
        s.send(&[1u8; 1472])
            .expect("1500 bytes fit the pod's own MTU");
        // The error arrives asynchronously as the socket's pending error
        // (EMSGSIZE, set after the PMTU update): poll (at most 50 × 100 ms).
        let mut pending = None;
        for _ in 0..50 {
            pending = s.take_error().unwrap();
            if pending.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mtu = getsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU);
        let too_big = s.send(&[2u8; 1472]).map_err(|e| e.raw_os_error());
        let fits = s.send(&[3u8; 1452 - 28]).map_err(|e| e.raw_os_error());
        ((pending.and_then(|e| e.raw_os_error()), mtu), too_big, fits)
    })
    .unwrap();
    assert_eq!(
        learned,
        (Some(libc::EMSGSIZE), 1452),
        "the socket got EMSGSIZE and learned PMTU = uplink − 48"
    );
    assert_eq!(too_big, Err(Some(libc::EMSGSIZE)), "1500 bytes now refused");
    assert_eq!(fits, Ok(1424));
    assert_eq!(
        sizes_server.join().unwrap(),
        vec![1424],
        "only the datagram that fits reached the backend"
    );
    assert!(route_get(lab.pod("pa"), VIP).contains("mtu 1452"));
    let s1 = lab.stats(0);
    assert_eq!(s1.mtu_event(mtu_stat::FRAG_NEEDED), 1);

    // TCP both ways (the backend's MTU is 1500 too, so MSS negotiation
    // clamps nothing: 1460 each way). Forget the learned PMTU first.
    sys::run("ip", &["-n", lab.pod("pa"), "route", "flush", "cache"]).unwrap();
    assert!(!route_get(lab.pod("pa"), VIP).contains("mtu 1452"));
    let server = tcp_server(lab.pod("pb"), POD_B, 1);
    let (s, line) = connect_vip(lab.pod("pa"));
    assert!(line.starts_with(&format!("{POD_B} saw {POD_A}:")), "{line}");
    let ((n, hash), local) = transfer(s, 4 << 20, 64 << 10, Duration::ZERO);
    server.join().unwrap();
    assert_eq!((n, hash), (4 << 20, local), "upload intact");
    assert!(
        lab.stats(0).mtu_event(mtu_stat::FRAG_NEEDED) > 1,
        "the client's big segments were answered with frag-needed"
    );
    assert!(route_get(lab.pod("pa"), VIP).contains("mtu 1452"));

    // Download: the backend's big segments are answered on node 2, "from"
    // the client, before reverse NAT. The client forgets its PMTU first,
    // or it would advertise MSS 1412 and the backend would never send a
    // segment too big.
    sys::run("ip", &["-n", lab.pod("pa"), "route", "flush", "cache"]).unwrap();
    const DOWN: usize = 2 << 20;
    let (ready, listening) = std::sync::mpsc::channel();
    let sender = sys::spawn_in_netns(lab.pod("pb"), move || {
        let l = TcpListener::bind((POD_B, TCP_PORT)).unwrap();
        ready.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut h = Fnv::default();
        let chunk: Vec<u8> = (0..65536u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut sent = 0;
        while sent < DOWN {
            let k = chunk.len().min(DOWN - sent);
            s.write_all(&chunk[..k]).unwrap();
            h.update(&chunk[..k]);
            sent += k;
        }
        h.0
    })
    .unwrap();
    listening.recv_timeout(Duration::from_secs(5)).unwrap();
    let (got, got_hash) = sys::in_netns(lab.pod("pa"), || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((VIP, 80)), Duration::from_secs(5))
                .expect("connect VIP:80");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (mut n, mut h) = (0usize, Fnv::default());
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let k = s.read(&mut buf).expect("download");
            if k == 0 {
                break;
            }
            n += k;
            h.update(&buf[..k]);
        }
        (n, h.0)
    })
    .unwrap();
    assert_eq!(
        (got, got_hash),
        (DOWN, sender.join().unwrap()),
        "download intact"
    );
    let s2 = lab.stats(1);
    assert!(s2.mtu_event(mtu_stat::FRAG_NEEDED) >= 1, "{:?}", s2.mtu);
    assert!(route_get(lab.pod("pb"), POD_A).contains("mtu 1452"));
    eprintln!(
        "frag-needed sent: node1 {}, node2 {}",
        lab.stats(0).mtu_event(mtu_stat::FRAG_NEEDED),
        s2.mtu_event(mtu_stat::FRAG_NEEDED)
    );
    for i in 0..2 {
        let s = lab.stats(i);
        assert!(s.drops.iter().all(|d| d.1 == 0), "no drops: {:?}", s.drops);
        assert_eq!(s.mtu_event(mtu_stat::TOO_BIG_NO_DF), 0);
    }
}

/// Polls `cond` (at most 100 × 50 ms); returns whether it came true.
/// Polls `cond` for up to 10 s (the agent resyncs on events, but a loaded
/// CI machine can take seconds to deliver one).
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

fn pod_link_pin(lab: &Lab, node: usize, veth: &str) -> PathBuf {
    lab.node_pins[node]
        .join("links")
        .join(node::link_pin_name(node::PROG_POD, veth))
}

fn node_pods(lab: &Lab, node: usize) -> Vec<Ipv4Addr> {
    node::pinned_pods(&lab.node_pins[node])
        .unwrap()
        .into_iter()
        .map(|p| p.0)
        .collect()
}

#[test]
fn agent_follows_pod_routes_and_forgets_removed_ones() {
    require!(LOADS_BPF);
    let mut lab = Lab::new();
    lab.nodes[0] = None;
    const POD_D: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 4);
    let mut cfg = lab.node_config(0);
    // Pod d is not configured: only its route tells the agent about it.
    cfg.pod_cidrs = vec!["10.244.0.0/16".into()];
    let cfg_path = std::env::temp_dir().join(format!("talaria-node-e2e-{}.yaml", lab.id));
    std::fs::write(&cfg_path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    let agent = Agent::start(&lab.n[0].name, &cfg_path);
    assert!(
        eventually(|| pod_link_pin(&lab, 0, "vpa").exists()),
        "agent attached the configured pods"
    );
    let name = format!("tlr-pd-{}", lab.id);
    lab.pods.push(add_pod(&lab.n[0], "vpd", POD_D, &name));

    // The CNI's route for the pod appears: learned and attached.
    lab.n[0]
        .ip(&["route", "add", "10.244.1.4/32", "dev", "vpd"])
        .unwrap();
    assert!(
        eventually(|| pod_link_pin(&lab, 0, "vpd").exists()),
        "route event → pod veth attached"
    );
    assert!(node_pods(&lab, 0).contains(&POD_D));
    let server = tcp_server(lab.pod("pb"), POD_B, 2);
    let (s, line) = connect_vip(&name);
    assert!(line.starts_with(&format!("{POD_B} saw {POD_D}:")), "{line}");
    let ((n, hash), local) = transfer(s, 1 << 20, 64 << 10, Duration::ZERO);
    assert_eq!((n, hash), (1 << 20, local));

    // The route goes: the pod is forgotten and its veth detached.
    lab.n[0]
        .ip(&["route", "del", "10.244.1.4/32", "dev", "vpd"])
        .unwrap();
    assert!(
        eventually(
            || !pod_link_pin(&lab, 0, "vpd").exists() && !node_pods(&lab, 0).contains(&POD_D)
        ),
        "route removed → pod forgotten"
    );
    // Back again, then the veth itself is deleted (taking the route).
    lab.n[0]
        .ip(&["route", "add", "10.244.1.4/32", "dev", "vpd"])
        .unwrap();
    assert!(eventually(|| pod_link_pin(&lab, 0, "vpd").exists()));
    let (s, line) = connect_vip(&name);
    assert!(line.starts_with(&format!("{POD_B} saw {POD_D}:")), "{line}");
    let ((n, _), _) = transfer(s, 1 << 16, 1 << 16, Duration::ZERO);
    assert_eq!(n, 1 << 16);
    server.join().unwrap();
    lab.n[0].ip(&["link", "del", "vpd"]).unwrap();
    assert!(
        eventually(
            || !pod_link_pin(&lab, 0, "vpd").exists() && !node_pods(&lab, 0).contains(&POD_D)
        ),
        "veth removed → state cleaned"
    );
    assert!(
        node_pods(&lab, 0).contains(&POD_A) && pod_link_pin(&lab, 0, "vpa").exists(),
        "the other pods are untouched"
    );
    agent.stop();
    let _ = std::fs::remove_file(&cfg_path);
}

/// Two Services share backend pod B, and pod A reaches both from one
/// source port: UDP from one socket, and TCP from two sockets bound to the
/// same port. At node 2 both flows are the same 4-tuple; the second gets a
/// substitute client port, and every reply comes from its own VIP to the
/// client's own port (issue: reverse-NAT key collisions).
#[test]
fn two_services_sharing_a_backend_from_one_client_port_both_work() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    // UDP: pod B echoes with the peer it saw.
    let udp = udp_echo(&lab, 4);
    let replies = udp_ask(
        &lab,
        40100,
        &[(VIP, 53), (VIP2, 5300), (VIP, 53), (VIP2, 5300)],
    );
    udp.join().unwrap();
    let mut peers = std::collections::BTreeSet::new();
    for (i, (text, from)) in replies.iter().enumerate() {
        let want = [(VIP, 53), (VIP2, 5300)][i % 2];
        assert_eq!(*from, SocketAddr::from(want), "reply {i} from its own VIP");
        let (q, peer) = text.split_once(" from ").unwrap();
        assert_eq!(q, format!("q{i}"));
        peers.insert(peer.to_string());
    }
    assert_eq!(peers.len(), 2, "the backend saw two flows: {peers:?}");

    // TCP: two connections from one bound port, one to each VIP.
    let server = tcp_server(lab.pod("pb"), POD_B, 2);
    let lines = sys::in_netns(lab.pod("pa"), || {
        [(VIP, 80), (VIP2, 8080)]
            .iter()
            .map(|to| {
                let s = bound_tcp_stream(POD_A, 40101, SocketAddr::from(*to));
                let mut s = s;
                s.write_all(b"hello\n").unwrap();
                let line = read_line(&mut s);
                (s, line)
            })
            .collect::<Vec<_>>()
    })
    .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for (s, line) in lines {
        assert!(line.starts_with(&format!("{POD_B} saw {POD_A}:")), "{line}");
        seen.insert(line);
        let ((n, hash), local) = transfer(s, 50_000, 5_000, Duration::ZERO);
        assert_eq!((n, hash), (50_000, local), "each connection intact");
    }
    assert_eq!(seen.len(), 2, "the backend saw two connections");
    server.join().unwrap();
    assert!(lab.stats(1).event(node_stat::PORT_SUBST) >= 2);
}

/// A TCP connection from `local` (bound with SO_REUSEADDR, so a second
/// connection may share the port towards another destination) to `to`.
fn bound_tcp_stream(ip: Ipv4Addr, port: u16, to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a new fd, which the TcpStream owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        );
        let sin = |a: Ipv4Addr, p: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: p.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.octets()),
            },
            sin_zero: [0; 8],
        };
        let local = sin(ip, port);
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(
            libc::bind(fd, &local as *const _ as *const libc::sockaddr, len),
            0,
            "bind"
        );
        let SocketAddr::V4(to) = to else {
            unreachable!()
        };
        let remote = sin(*to.ip(), to.port());
        let s = TcpStream::from_raw_fd(fd);
        assert_eq!(
            libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len),
            0,
            "connect {to}: {}",
            std::io::Error::last_os_error()
        );
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }
}

/// A UDP reply bigger than the backend pod's MTU (1452) leaves it in
/// fragments: the client gets the whole datagram, from the VIP (issue:
/// fragmented replies).
#[test]
fn a_fragmented_udp_reply_arrives_whole_from_the_vip() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    let udp = udp_server(lab.pod("pb"), POD_B, Duration::from_secs(10), |s| {
        let mut buf = [0u8; 1500];
        let (_, peer) = s.recv_from(&mut buf).unwrap();
        // 4000 bytes: three fragments at a 1452-byte MTU.
        let big: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
        s.send_to(&big, peer).unwrap();
    });
    let (len, from, ok) = sys::in_netns(lab.pod("pa"), || {
        let s = UdpSocket::bind((POD_A, 40110)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(b"big please", (VIP, 53)).unwrap();
        let mut buf = vec![0u8; 8000];
        let (k, from) = s.recv_from(&mut buf).expect("the whole reply");
        let ok = buf[..k]
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8);
        (k, from, ok)
    })
    .unwrap();
    udp.join().unwrap();
    assert_eq!((len, from, ok), (4000, SocketAddr::from((VIP, 53)), true));
    assert_eq!(
        lab.stats(1).event(node_stat::FRAGMENT_NAT),
        2,
        "two later fragments"
    );
}

/// A UDP request bigger than the client pod's MTU leaves it in fragments:
/// the backend gets the whole datagram and its echo comes back whole from
/// the VIP (issue: fragmented requests), once as a new flow and once with
/// the cookie the first echo taught.
#[test]
fn a_fragmented_udp_request_arrives_whole_at_the_backend() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    let echo = udp_server(lab.pod("pb"), POD_B, Duration::from_secs(10), |s| {
        let mut buf = vec![0u8; 8000];
        (0..2)
            .map(|_| {
                let (k, peer) = s.recv_from(&mut buf).unwrap();
                s.send_to(&buf[..k], peer).unwrap();
                k
            })
            .collect::<Vec<_>>()
    });
    let big: Vec<u8> = (0..4000u32).map(|i| (i % 253) as u8).collect();
    let back = sys::in_netns(lab.pod("pa"), move || {
        let s = UdpSocket::bind((POD_A, 40160)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (0..2)
            .map(|_| {
                s.send_to(&big, (VIP, 53)).unwrap();
                let mut buf = vec![0u8; 8000];
                let (k, from) = s.recv_from(&mut buf).expect("the whole echo");
                (buf[..k] == big[..], from)
            })
            .collect::<Vec<_>>()
    })
    .unwrap();
    assert_eq!(
        echo.join().unwrap(),
        vec![4000, 4000],
        "whole at the backend"
    );
    let vip = SocketAddr::from((VIP, 53));
    assert_eq!(back, vec![(true, vip), (true, vip)]);
    let s = lab.stats(0);
    assert_eq!(
        s.event(node_stat::REQUEST_FRAGMENT),
        4,
        "2 later fragments × 2"
    );
    assert_eq!(
        s.event(node_stat::CACHE_HIT),
        1,
        "the second went with the cookie"
    );
}

/// A pod may not forge ICMP errors about another pod's flow: pod a
/// quotes the flow b → VIP:53 (served by backend c on its node) in a port
/// unreachable, and the client's socket never sees it; the backend's
/// real answer still arrives (issue: ICMP errors only from the flow's
/// backend).
#[test]
fn a_pod_cannot_inject_icmp_errors_into_another_pods_flow() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    lab.move_pool(SVC_UDP, BACKEND_C_UDP);

    // Backend c reports the peer it saw, then answers once told to.
    let (peer_tx, peer_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let server = udp_server(lab.pod("pc"), POD_C, Duration::from_secs(10), move |s| {
        let mut buf = [0u8; 1500];
        let (_, peer) = s.recv_from(&mut buf).unwrap();
        peer_tx.send(peer).unwrap();
        go_rx.recv_timeout(Duration::from_secs(15)).unwrap();
        s.send_to(b"real answer", peer).unwrap();
    });
    let client = sys::spawn_in_netns(lab.pod("pb"), || {
        let s = UdpSocket::bind((POD_B, 0)).unwrap();
        s.connect((VIP, 53)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.send(b"question").unwrap();
        let mut buf = [0u8; 100];
        s.recv(&mut buf).map(|k| buf[..k].to_vec())
    })
    .unwrap();
    let SocketAddr::V4(peer) = peer_rx.recv_timeout(Duration::from_secs(10)).unwrap() else {
        unreachable!("IPv4 lab")
    };

    // Pod a sends a port unreachable quoting b → c, as c's kernel would.
    let quoted = talaria_node::packet::ipv4(
        talaria_node::packet::Tuple::udp(*peer.ip(), peer.port(), POD_C, UDP_PORT),
        0,
        b"question",
    );
    let forged = talaria_node::packet::icmp_error(POD_A, *peer.ip(), 3, 3, 0, &quoted);
    sys::in_netns(lab.pod("pa"), move || send_raw_ipv4(&forged, *peer.ip())).unwrap();
    assert!(
        eventually(|| lab.stats(0).dropped(DropReason::IcmpSpoof) == 1),
        "node 1 dropped the forged error"
    );
    go_tx.send(()).unwrap();
    server.join().unwrap();
    let answer = client.join().unwrap();
    assert_eq!(
        answer.as_deref().map_err(|e| e.kind()),
        Ok(&b"real answer"[..]),
        "the client saw the backend's answer, not the forged error"
    );
}

/// Nobody but a backend's node may send a reply, and nobody may send as
/// the switch. Three forgeries try to put a datagram "from VIP:53" into
/// pod a's socket: a host on node 2's link with an address of its own,
/// node 2 claiming a backend that lives on node 1, and a packet with the
/// switch's address as its source, routed through the switch to node 1.
/// None arrives, each is counted at the switch. Then node 2 claims its own
/// backend of the Service, which the switch cannot tell from a real reply:
/// that one arrives, so the forgeries took a path that works (issue: the
/// switch terminates tunnels from any sender).
#[test]
fn only_a_backends_node_may_send_replies_and_none_as_the_switch() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    let dp = lab.dp.as_ref().unwrap();
    dp.insert(&build::cookie(SVC_UDP, BACKEND_C_UDP)).unwrap();
    let client = sys::in_netns(lab.pod("pa"), || {
        let s = UdpSocket::bind((POD_A, 40120)).unwrap();
        s.connect((VIP, 53)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    })
    .unwrap();
    let outsider = Ipv4Addr::new(10, 200, 2, 99);
    // From node 2's uplink to the switch (or through it, to node 1).
    let frame = |src: Ipv4Addr, dst: Ipv4Addr, backend_id: u32, text: &[u8]| {
        let inner = talaria_node::packet::ipv4(
            talaria_node::packet::Tuple::udp(VIP, 53, POD_A, 40120),
            0,
            text,
        );
        let enc = TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, SVC_UDP, backend_id);
        talaria_node::packet::talaria(lab.sw_macs[1], lab.up_macs[1], src, dst, enc, &inner)
    };
    let dropped = |r: DropReason| {
        dp.counter(
            talaria_switch_dataplane::CounterId::Drop,
            u32::from(r.code()),
        )
        .unwrap()
        .packets
    };
    let forgeries = [
        (outsider, SWITCH_IP, BACKEND_B_UDP, DropReason::TunnelPeer),
        (NODE2_IP, SWITCH_IP, BACKEND_C_UDP, DropReason::ForgedReply),
        (
            SWITCH_IP,
            NODE1_IP,
            BACKEND_B_UDP,
            DropReason::SpoofedSource,
        ),
    ];
    for (src, dst, backend_id, reason) in forgeries {
        let before = dropped(reason);
        let f = frame(src, dst, backend_id, b"forged");
        sys::in_netns(&lab.n[1].name, move || send_frame("uplink", &f)).unwrap();
        assert!(
            eventually(|| dropped(reason) == before + 1),
            "{src} → {dst} claiming backend {backend_id}: not dropped as {}",
            reason.name()
        );
    }
    let f = frame(NODE2_IP, SWITCH_IP, BACKEND_B_UDP, b"claimed");
    sys::in_netns(&lab.n[1].name, move || send_frame("uplink", &f)).unwrap();
    let mut buf = [0u8; 100];
    let k = client.recv(&mut buf).expect("the claimed reply");
    assert_eq!(&buf[..k], b"claimed", "the first datagram to arrive");
}

/// Sends an Ethernet frame out of `ifname` as it is (`AF_PACKET`).
fn send_frame(ifname: &str, frame: &[u8]) {
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: a packet socket owned by this function, closed before
    // return; the buffers outlive the calls.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        assert!(ifindex != 0, "no interface {ifname}");
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        let sent = libc::sendto(
            fd,
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            0,
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(sent, frame.len() as isize, "frame send: {err}");
    }
}

/// Sends a whole IPv4 packet (header included) from a raw socket.
fn send_raw_ipv4(packet: &[u8], to: Ipv4Addr) {
    // SAFETY: a raw socket owned by this function, closed before return;
    // the buffers outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(to.octets()),
            },
            sin_zero: [0; 8],
        };
        let sent = libc::sendto(
            fd,
            packet.as_ptr() as *const libc::c_void,
            packet.len(),
            0,
            &sin as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(sent, packet.len() as isize, "raw send: {err}");
    }
}

#[path = "common/fake_api.rs"]
mod fake_api;

#[test]
fn kubernetes_mode_takes_pods_from_the_api_and_services_from_the_controller() {
    require!(LOADS_BPF);
    let mut lab = Lab::new();
    lab.nodes[0] = None;
    // Node 1's pods are known only to the API; their veths only through
    // the routes the CNI would add.
    for (ip, veth) in [("10.244.1.2/32", "vpa"), ("10.244.1.3/32", "vpc")] {
        lab.n[0].ip(&["route", "add", ip, "dev", veth]).unwrap();
    }
    let api = fake_api::Shared::default();
    {
        let mut a = api.lock().unwrap();
        a.put_pod(fake_api::pod("a", "n1", "10.244.1.2", false));
        a.put_pod(fake_api::pod("c", "n1", "10.244.1.3", false));
        a.put_pod(fake_api::pod("agent", "n1", "10.200.1.2", true));
        a.put_pod(fake_api::pod("b", "n2", "10.244.2.2", false));
        a.services = fake_api::services(&[
            (SVC_TCP, "10.96.0.10", 80, "TCP"),
            (SVC_UDP, "10.96.0.10", 53, "UDP"),
            (SVC_LB_TCP, "203.0.113.10", 80, "TCP"),
            (SVC_NP_TCP[1], "10.200.2.2", NODE_PORT_TCP, "TCP"),
        ]);
        // The last is node 2's nodePort.
        let np = a.services.as_array_mut().unwrap().last_mut().unwrap();
        np["data_path"][0]["frontend"] = "node_port".into();
    }
    // Served inside node 1's namespace, where the agent runs.
    let api_for_ns = api.clone();
    let fake = sys::in_netns(&lab.n[0].name, move || fake_api::serve(api_for_ns)).unwrap();
    let url = fake.url.clone();
    let mut cfg = lab.node_config(0);
    cfg.mode = talaria_node::config::Mode::Kubernetes;
    cfg.pods = vec![];
    cfg.services = vec![];
    cfg.kubernetes = talaria_node::config::KubernetesConfig {
        node_name: "n1".into(),
        api_server: url.clone(),
        controller_url: url,
        services_refresh_secs: 1,
    };
    let cfg_path = std::env::temp_dir().join(format!("talaria-node-e2e-{}.yaml", lab.id));
    std::fs::write(&cfg_path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    let agent = Agent::start(&lab.n[0].name, &cfg_path);
    assert!(
        eventually(
            || pod_link_pin(&lab, 0, "vpa").exists() && pod_link_pin(&lab, 0, "vpc").exists()
        ),
        "API pods attached through their routes"
    );
    assert_eq!(
        node_pods(&lab, 0),
        vec![POD_A, POD_C],
        "no hostNetwork pod, no other node's"
    );
    assert!(
        eventually(|| node::pinned_services(&lab.node_pins[0])
            .map(|s| s.len())
            .unwrap_or(0)
            == 4),
        "services from the controller"
    );

    // Client side: pod a → VIP → backend b on node 2.
    let server = tcp_server(lab.pod("pb"), POD_B, 2);
    let (s, line) = connect_vip(lab.pod("pa"));
    assert!(line.starts_with(&format!("{POD_B} saw {POD_A}:")), "{line}");
    let ((n, _), _) = transfer(s, 1 << 20, 64 << 10, Duration::ZERO);
    assert_eq!(n, 1 << 20);
    // An external address the controller plans is steered as a /32.
    assert!(
        eventually(|| node::pinned_service_cidrs(&lab.node_pins[0])
            .is_ok_and(|c| c.contains(&(LB_IP.into(), 32)))),
        "the external address steered"
    );
    let steered = node::pinned_service_cidrs(&lab.node_pins[0]).unwrap();
    assert!(
        !steered.contains(&(NODE2_IP.into(), 32)),
        "a nodePort's node address is never steered: {steered:?}"
    );
    let (s, line) = connect_to(lab.pod("pa"), (LB_IP, 80));
    assert!(line.starts_with(&format!("{POD_B} saw {POD_A}:")), "{line}");
    assert_eq!(transfer(s, 1000, 1000, Duration::ZERO).0 .0, 1000);
    server.join().unwrap();

    // Backend side: the pool moves to pod c on node 1, whose agent must
    // map the service id from the controller back to VIP:80.
    lab.move_pool(SVC_TCP, BACKEND_C_TCP);
    let server = tcp_server(lab.pod("pc"), POD_C, 1);
    let (s, line) = connect_vip(lab.pod("pb"));
    assert!(line.starts_with(&format!("{POD_C} saw {POD_B}:")), "{line}");
    let ((n, _), _) = transfer(s, 1 << 20, 64 << 10, Duration::ZERO);
    assert_eq!(n, 1 << 20);
    server.join().unwrap();

    // Pod c is deleted in the API: forgotten though its route remains.
    api.lock().unwrap().delete_pod("c");
    assert!(
        eventually(|| !pod_link_pin(&lab, 0, "vpc").exists() && node_pods(&lab, 0) == vec![POD_A]),
        "deleted pod forgotten"
    );
    let selectors = api.lock().unwrap().field_selectors();
    assert!(
        selectors.iter().all(|s| s == "spec.nodeName=n1"),
        "{selectors:?}"
    );
    agent.stop();
    drop(fake);
    let _ = std::fs::remove_file(&cfg_path);
}

/// Receives one datagram on `s` (with `IPV6_RECVHOPLIMIT` set): its bytes
/// and the hop limit it arrived with.
fn recv_with_hop_limit(s: &UdpSocket) -> (Vec<u8>, i32) {
    let mut buf = [0u8; 1500];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64s: cmsg headers must be aligned.
    let mut control = [0u64; 16];
    // SAFETY: a zeroed msghdr is valid; it points at the buffers above,
    // which outlive the call, and the cmsg walk stays within `control` as
    // the kernel filled it.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let k = libc::recvmsg(s.as_raw_fd(), &mut msg, 0);
        assert!(k >= 0, "recvmsg: {}", std::io::Error::last_os_error());
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6 && (*c).cmsg_type == libc::IPV6_HOPLIMIT {
                let hops = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>());
                return (buf[..k as usize].to_vec(), hops);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    panic!("no IPV6_HOPLIMIT with the datagram")
}

/// IPv6 pod → pod across the switch (issue 14): the node programs pass
/// IPv6 untouched, the switch routes it by `ipv6_route` with the hop limit
/// less one, and drops what no entry routes as `no_route`.
#[test]
fn ipv6_pod_to_pod_crosses_the_switch() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    lab.enable_ipv6();
    let dp = lab.dp.as_ref().unwrap();
    let port = |p: u16| {
        dp.port_stats()
            .unwrap()
            .into_iter()
            .find(|s| s.port == p)
            .unwrap()
    };
    let before = [port(1), port(2)];

    // TCP both ways, addresses as they are: nothing NATs IPv6.
    let server = tcp_server(lab.pod("pb"), POD_B_V6, 1);
    let (s, line) = connect_to(lab.pod("pa"), (POD_B_V6, TCP_PORT));
    let local = s.local_addr().unwrap();
    assert_eq!(local.ip(), IpAddr::V6(POD_A_V6));
    assert_eq!(line, format!("{POD_B_V6} saw {local}"));
    let (theirs, mine) = transfer(s, 1 << 20, 1 << 14, Duration::ZERO);
    assert_eq!(theirs, (1 << 20, mine), "1 MiB there and its hash back");
    server.join().unwrap();
    // Through the switch: the MiB left by node 2's port, the answers by
    // node 1's.
    let after = [port(1), port(2)];
    eprintln!(
        "switch tx: port 1 {:?} → {:?}, port 2 {:?} → {:?}",
        before[0].tx, after[0].tx, before[1].tx, after[1].tx
    );
    assert!(
        after[1].tx.bytes - before[1].tx.bytes >= 1 << 20,
        "port 2 tx {:?} → {:?}",
        before[1].tx,
        after[1].tx
    );
    assert!(
        after[0].tx.packets > before[0].tx.packets,
        "port 1 tx {:?} → {:?}",
        before[0].tx,
        after[0].tx
    );

    // A hop limit of 64 arrives as 61: node 1, the switch and node 2 took
    // one each (the nodes alone would leave 62).
    let hops = udp_server(lab.pod("pb"), POD_B_V6, Duration::from_secs(5), |s| {
        setsockopt_int(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVHOPLIMIT,
            1,
        );
        recv_with_hop_limit(&s)
    });
    sys::in_netns(lab.pod("pa"), || {
        let s = UdpSocket::bind((POD_A_V6, 0)).unwrap();
        setsockopt_int(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_UNICAST_HOPS,
            64,
        );
        s.send_to(b"hops", (POD_B_V6, UDP_PORT)).unwrap();
    })
    .unwrap();
    assert_eq!(hops.join().unwrap(), (b"hops".to_vec(), 61));

    // fd00:244:3::/64 is in the pod network the nodes send to the switch,
    // but no node holds it and the switch has no route. Other IPv6 (the
    // lab's links' router solicitations) may be dropped as no_route
    // meanwhile: the probes are counted by their size too.
    const PROBES: u64 = 3;
    const PAYLOAD: usize = 1000;
    const FRAME: u64 = 14 + 40 + 8 + PAYLOAD as u64;
    let unrouted = Ipv6Addr::new(0xfd00, 0x244, 3, 0, 0, 0, 0, 2);
    let no_route = || {
        dp.counter(
            talaria_switch_dataplane::CounterId::Drop,
            u32::from(DropReason::NoRoute.code()),
        )
        .unwrap()
    };
    let before = no_route();
    sys::in_netns(lab.pod("pa"), move || {
        let s = UdpSocket::bind((POD_A_V6, 0)).unwrap();
        for _ in 0..PROBES {
            s.send_to(&[0u8; PAYLOAD], (unrouted, UDP_PORT)).unwrap();
        }
    })
    .unwrap();
    assert!(
        eventually(|| {
            let now = no_route();
            now.packets >= before.packets + PROBES && now.bytes >= before.bytes + PROBES * FRAME
        }),
        "no_route {before:?} → {:?}",
        no_route()
    );
    eprintln!("switch no_route drops: {before:?} → {:?}", no_route());
    for i in 0..2 {
        let s = lab.stats(i);
        assert!(s.drops.iter().all(|d| d.1 == 0), "no drops: {:?}", s.drops);
    }
}

/// A pod's IPv6 source is checked as its IPv4 one is (issue 14): from its
/// own address a datagram crosses to pod b; from pod c's (behind another
/// veth of the same node) or an unassigned address of its node's /64 it
/// is dropped at pod a's veth as `pod_spoof` and never arrives. Pod a's
/// kernel sends from an address only if it has it: the forged ones are
/// added to its interface (without DAD) for the test.
#[test]
fn ipv6_spoofing_from_a_pod_is_dropped() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    lab.enable_ipv6();
    let unassigned = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 0x99);
    let send = |srcs: Vec<Ipv6Addr>, n: usize| {
        sys::in_netns(lab.pod("pa"), move || {
            for src in srcs {
                let s = UdpSocket::bind((src, 0)).unwrap();
                for i in 0..n {
                    let text = format!("{src} {i}");
                    s.send_to(text.as_bytes(), (POD_B_V6, UDP_PORT)).unwrap();
                }
            }
        })
        .unwrap()
    };

    // From its own address first: this also resolves its gateway, whose
    // neighbour solicitation would otherwise go out from a forged source.
    let got = udp_server(lab.pod("pb"), POD_B_V6, Duration::from_secs(5), |s| {
        let mut buf = [0u8; 100];
        let (k, from) = s.recv_from(&mut buf).expect("pod a's datagram");
        (String::from_utf8_lossy(&buf[..k]).into_owned(), from.ip())
    });
    send(vec![POD_A_V6], 1);
    assert_eq!(
        got.join().unwrap(),
        (format!("{POD_A_V6} 0"), IpAddr::V6(POD_A_V6))
    );

    for ip in [POD_C_V6, unassigned] {
        let addr = format!("{ip}/128");
        sys::run(
            "ip",
            &[
                "-n",
                lab.pod("pa"),
                "-6",
                "addr",
                "add",
                &addr,
                "dev",
                "eth0",
                "nodad",
            ],
        )
        .unwrap();
    }
    const N: usize = 3;
    let sink = udp_sink(lab.pod("pb"), POD_B_V6);
    send(vec![POD_C_V6, unassigned, POD_A_V6], N);
    let want: Vec<String> = (0..N).map(|i| format!("{POD_A_V6} {i}")).collect();
    assert_eq!(
        sink.join().unwrap(),
        want,
        "only pod a's own address arrives"
    );
    let s1 = lab.stats(0);
    assert_eq!(
        s1.dropped(DropReason::PodSpoof),
        2 * N as u64,
        "{:?}",
        s1.drops
    );
    assert_eq!(
        s1.drops.iter().map(|d| d.1).sum::<u64>(),
        2 * N as u64,
        "nothing else dropped: {:?}",
        s1.drops
    );
}

/// A pod that reaches its own IPv6 Service and is chosen as its backend
/// is answered, as over IPv4 (`a_pod_reaches_itself_through_its_service`):
/// as the server it sees the connection come from `HAIRPIN_SOURCE6`, as
/// the client it talks to VIP6. Without the rewrite the pod's kernel
/// would answer its own SYN from itself to itself, locally, and the
/// connection would be reset.
#[test]
fn a_pod_reaches_itself_through_its_ipv6_service() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    lab.enable_ipv6();
    let hairpin = Ipv6Addr::from(HAIRPIN_SOURCE6);
    let server = tcp_server(lab.pod("pb"), POD_B_V6, 1);
    let (s, line) = connect_to(lab.pod("pb"), (VIP_V6, 80));
    let port = s.local_addr().unwrap().port();
    let seen = SocketAddr::from((hairpin, port));
    assert_eq!(line, format!("{POD_B_V6} saw {seen}"));
    let (theirs, mine) = transfer(s, 1 << 20, 1 << 14, Duration::ZERO);
    assert_eq!(theirs, (1 << 20, mine), "1 MiB there and its hash back");
    server.join().unwrap();

    let udp = udp_server(lab.pod("pb"), POD_B_V6, Duration::from_secs(10), |s| {
        let mut buf = [0u8; 1500];
        let (k, peer) = s.recv_from(&mut buf).unwrap();
        let text = format!("{} from {peer}", String::from_utf8_lossy(&buf[..k]));
        s.send_to(text.as_bytes(), peer).unwrap();
    });
    let client = SocketAddr::from((POD_B_V6, 40130));
    let (text, from) = udp_ask_from_to(lab.pod("pb"), client, (VIP_V6, 53), "me");
    udp.join().unwrap();
    let seen = SocketAddr::from((hairpin, 40130));
    assert_eq!(
        (text, from),
        (format!("me from {seen}"), SocketAddr::from((VIP_V6, 53)))
    );
    for node in [0, 1] {
        let drops = lab.stats(node).drops;
        assert!(drops.iter().all(|d| d.1 == 0), "no drops: {drops:?}");
    }
}

/// IPv6 ClusterIP Services (issue 14): TCP and UDP to VIP6:port reach pod
/// b's IPv6 address through the switch (`service_v6`, `backend_v6`,
/// IPv6 inside the IPv4 tunnel), the replies come from the VIP (pod a's
/// sockets are connected to it), the client's node learns one cookie per
/// flow and later packets carry it. Pods a and b send full checksums, so
/// the receivers verify every rewritten one.
#[test]
fn ipv6_clusterip_tcp_and_udp_reach_a_backend_and_replies_come_from_the_vip() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    lab.enable_ipv6();
    for tag in ["pa", "pb"] {
        full_checksums(lab.pod(tag));
    }
    let server = tcp_server(lab.pod("pb"), POD_B_V6, 1);
    let (s, line) = connect_to(lab.pod("pa"), (VIP_V6, 80));
    let local = s.local_addr().unwrap();
    assert_eq!(local.ip(), IpAddr::V6(POD_A_V6));
    // The backend saw the client's own address: no SNAT.
    assert_eq!(line, format!("{POD_B_V6} saw {local}"));
    let ((n, hash), mine) = transfer(s, 200_000, 10_000, Duration::ZERO);
    assert_eq!((n, hash), (200_000, mine));
    server.join().unwrap();

    let udp = udp_server(lab.pod("pb"), POD_B_V6, Duration::from_secs(10), |s| {
        for _ in 0..3 {
            let mut buf = [0u8; 1500];
            let (k, peer) = s.recv_from(&mut buf).unwrap();
            let text = format!("{} from {peer}", String::from_utf8_lossy(&buf[..k]));
            s.send_to(text.as_bytes(), peer).unwrap();
        }
    });
    let client = SocketAddr::from((POD_A_V6, 40053));
    for q in ["q0", "q1", "q2"] {
        let (text, from) = udp_ask_from_to(lab.pod("pa"), client, (VIP_V6, 53), q);
        assert_eq!(from, SocketAddr::from((VIP_V6, 53)), "UDP reply source");
        assert_eq!(text, format!("{q} from {client}"));
    }
    udp.join().unwrap();

    let cookies = lab.nodes[0].as_ref().unwrap().cookies6().unwrap();
    let mut learned: Vec<(u16, u32)> = cookies
        .iter()
        .map(|(_, c)| (c.service_id, c.backend_id))
        .collect();
    learned.sort();
    learned.dedup();
    assert!(
        learned.contains(&(SVC_V6_UDP, BACKEND_B_UDP_V6)),
        "UDP cookie: {learned:?}"
    );
    let s1 = lab.stats(0);
    let s2 = lab.stats(1);
    eprintln!("node1 {:?}\nnode2 {:?}", s1.events, s2.events);
    assert_eq!(
        s1.event(node_stat::CACHE_MISS),
        2,
        "only the first packet of each flow lacks a cookie"
    );
    assert!(
        s1.event(node_stat::COOKIE_LEARN) >= 2,
        "one cookie per flow"
    );
    assert!(
        s1.event(node_stat::CACHE_HIT) > 10,
        "later packets carry it"
    );
    assert!(s2.event(node_stat::REVERSE_NAT) > 3 && s2.event(node_stat::REVERSE_LEARN) >= 2);
    assert_eq!(
        csum_errors6(lab.pod("pa")) + csum_errors6(lab.pod("pb")),
        0,
        "checksum errors"
    );
    for s in [&s1, &s2] {
        assert!(s.drops.iter().all(|d| d.1 == 0), "no drops: {:?}", s.drops);
    }
}

/// A dual-stack Service (issue 14): its IPv4 and IPv6 ClusterIPs are two
/// service ids, each with buckets of its own filled from its family's
/// endpoints. Pod a reaches pod b through both at once, and each flow's
/// cookie names its own family's service and backend. Then the IPv6
/// buckets move to a backend that does not exist: a new IPv6 flow fails
/// (`no_backend`), the IPv4 side and the open IPv6 connection (its cookie
/// still valid) are untouched.
#[test]
fn a_dual_stack_service_is_reached_on_both_families_with_buckets_of_its_own() {
    require!(LOADS_BPF);
    let lab = Lab::new();
    lab.enable_ipv6();
    let v4 = tcp_server(lab.pod("pb"), POD_B, 2);
    let v6 = tcp_server(lab.pod("pb"), POD_B_V6, 2);
    let (s4, line4) = connect_vip(lab.pod("pa"));
    let (s6, line6) = connect_to(lab.pod("pa"), (VIP_V6, 80));
    assert!(
        line4.starts_with(&format!("{POD_B} saw {POD_A}:")),
        "{line4}"
    );
    assert!(
        line6.starts_with(&format!("{POD_B_V6} saw [{POD_A_V6}]:")),
        "{line6}"
    );
    let node = lab.nodes[0].as_ref().unwrap();
    let v4_cookie = |port: u16| {
        node.cookies()
            .unwrap()
            .into_iter()
            .find(|(k, _)| k.src_port.get() == port && k.proto == IPPROTO_TCP)
            .map(|(_, c)| (c.service_id, c.backend_id))
    };
    let v6_cookie = |port: u16| {
        node.cookies6()
            .unwrap()
            .into_iter()
            .find(|(k, _)| k.src_port.get() == port && k.proto == IPPROTO_TCP)
            .map(|(_, c)| (c.service_id, c.backend_id))
    };
    let p4 = s4.local_addr().unwrap().port();
    let p6 = s6.local_addr().unwrap().port();
    assert_eq!(v4_cookie(p4), Some((SVC_TCP, BACKEND_B_TCP)));
    assert_eq!(v6_cookie(p6), Some((SVC_V6_TCP, BACKEND_B_TCP_V6)));

    // The IPv6 port's buckets go to a backend id no table knows.
    let no_backend = || {
        lab.dp
            .as_ref()
            .unwrap()
            .counter(
                talaria_switch_dataplane::CounterId::Drop,
                u32::from(DropReason::NoBackend.code()),
            )
            .unwrap()
            .packets
    };
    let before = no_backend();
    lab.move_pool(SVC_V6_TCP, 999);
    let refused = sys::in_netns(lab.pod("pa"), || {
        TcpStream::connect_timeout(&SocketAddr::from((VIP_V6, 80)), Duration::from_secs(2))
    })
    .unwrap();
    assert!(refused.is_err(), "a new IPv6 flow has no backend");
    assert!(no_backend() > before, "counted as no_backend");
    // IPv4 is another service id: untouched.
    let (s4b, line4b) = connect_vip(lab.pod("pa"));
    assert!(line4b.starts_with(&format!("{POD_B} saw")), "{line4b}");
    // Open connections of both families still carry their cookies.
    for s in [s4, s6, s4b] {
        let ((n, hash), mine) = transfer(s, 100_000, 10_000, Duration::ZERO);
        assert_eq!((n, hash), (100_000, mine));
    }
    v4.join().unwrap();
    // The IPv6 server still waits for its second connection: give it one
    // by its own address, not the Service.
    let (s, _) = connect_to(lab.pod("pa"), (POD_B_V6, TCP_PORT));
    let ((n, _), _) = transfer(s, 10, 10, Duration::ZERO);
    assert_eq!(n, 10);
    v6.join().unwrap();
}
