//! Per-packet cost of the node programs, measured with BPF_PROG_TEST_RUN
//! (mean over many single runs, argument 1 = run count), next to the iptables (kube-proxy) path with 10 and
//! 10,000 KUBE-SVC-style services, in the same run. Prints a table.
//!
//! Root only. `cargo bench -p talaria-node --bench prog_cost [-- RUNS]`.
//!
//! The iptables figure: a UDP sender in a scratch network namespace sends
//! to the VIP matched by the *last* service rule, each packet to a new
//! destination port so that every packet is a new conntrack entry and
//! walks the nat chains (what a new connection costs under kube-proxy).
//! Packets go to a dummy interface, nothing leaves the namespace. The cost
//! is the sender's time per packet minus the same with no rules.

use std::{
    io::Write,
    net::{Ipv4Addr, UdpSocket},
    process::{Command, Stdio},
    time::Instant,
};

use aya::programs::{TestRun, TestRunOptions};
use talaria_common::{
    be::Be32,
    maps::{CookieEntry, NodeConfig, PodEntry},
    net::tcp_flags,
    wire::{flags, TalariaEncap},
};
use talaria_node::{
    config::ServiceConfig,
    node::{Node, PROG_POD, PROG_UPLINK},
    packet::{eth, ipv4, talaria, Tuple},
    sys::{self, NetNs},
};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 1);
const SWITCH_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 200, 1);
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn node() -> Node {
    let mut n = Node::load(None, 1 << 16).expect("load node programs (root?)");
    n.set_config(&NodeConfig {
        node_ip: Be32(NODE_IP.octets()),
        switch_ip: Be32(SWITCH_IP.octets()),
        uplink_ifindex: 1,
        node_mac: MAC,
        switch_mac: MAC,
        udp_idle_ns: 1 << 40,
        host_ifindex: 0,
        _pad: 0,
    })
    .unwrap();
    n.set_service_cidrs(&[(Ipv4Addr::new(10, 96, 0, 0).into(), 12)])
        .unwrap();
    n.set_services(&[ServiceConfig::new(7, VIP, 80, "tcp")])
        .unwrap();
    let pod = PodEntry {
        ifindex: 1,
        mac: MAC,
        host_mac: MAC,
    };
    n.set_pods(&[(CLIENT, pod)]).unwrap();
    n
}

/// Mean ns per run of `prog` on `pkt`, and its verdict. Each run is its
/// own BPF_PROG_TEST_RUN call with repeat 1: with a repeat count the kernel
/// reruns the program on the *same* skb, which the encap/decap programs
/// have already rewritten, so only the first repetition would measure the
/// intended path. The kernel's per-call duration includes a timer floor,
/// shown by the `floor` row (a non-IPv4 frame, returned at once).
fn cost(n: &Node, prog: &str, pkt: &[u8], runs: u32) -> (f64, u32) {
    let p = n.program(prog).unwrap();
    let mut out = vec![0u8; pkt.len() + 128];
    let mut total = 0u128;
    let mut verdict = 0;
    for _ in 0..runs {
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(pkt),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })
            .unwrap();
        total += r.duration.as_nanos();
        verdict = r.return_value;
    }
    (total as f64 / f64::from(runs), verdict)
}

/// ns per packet for the UDP send path with `rules` KUBE-SVC-style services.
fn iptables_cost(rules: usize, packets: u16) -> f64 {
    let ns = NetNs::new(&format!("tlr-bench-ipt-{}", std::process::id())).unwrap();
    // No dummy device on this kernel: a veth pair whose far end drops
    // everything (no addresses, no forwarding).
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])
        .unwrap();
    ns.ip(&["addr", "add", "10.250.0.1/24", "dev", "d0"])
        .unwrap();
    ns.ip(&["link", "set", "d0", "up"]).unwrap();
    ns.ip(&["link", "set", "d1", "up"]).unwrap();
    ns.ip(&["route", "add", "10.96.0.0/12", "dev", "d0"])
        .unwrap();
    ns.ip(&["route", "add", "10.244.0.0/16", "dev", "d0"])
        .unwrap();
    for dst in [VIP.to_string(), BACKEND.to_string()] {
        ns.ip(&[
            "neigh",
            "add",
            &dst,
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "d0",
            "nud",
            "permanent",
        ])
        .unwrap();
    }
    let mut rs = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n");
    for i in 0..rules {
        rs += &format!(":KUBE-SVC-{i} - [0:0]\n:KUBE-SEP-{i} - [0:0]\n");
    }
    rs += "-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j KUBE-SERVICES\n";
    for i in 0..rules {
        // Service i: 10.96.(i/250).(i%250+1); the measured VIP is the last.
        let vip = if i + 1 == rules {
            VIP
        } else {
            Ipv4Addr::new(10, 97, (i / 250) as u8, (i % 250 + 1) as u8)
        };
        rs += &format!("-A KUBE-SERVICES -d {vip}/32 -p udp -j KUBE-SVC-{i}\n");
        rs += &format!("-A KUBE-SVC-{i} -j KUBE-SEP-{i}\n");
        let to = if i + 1 == rules {
            BACKEND
        } else {
            Ipv4Addr::new(10, 244, (i / 250) as u8, (i % 250 + 1) as u8)
        };
        rs += &format!("-A KUBE-SEP-{i} -p udp -j DNAT --to-destination {to}\n");
    }
    rs += "COMMIT\n";
    if rules > 0 {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "iptables-restore"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rs.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "iptables-restore");
    }
    let name = ns.name.clone();
    let per_packet = sys::in_netns(&name, move || {
        let s = UdpSocket::bind("10.250.0.1:0").unwrap();
        let payload = [0u8; 64];
        // Warm up, then measure with a fresh destination port per packet.
        for p in 1..200 {
            let _ = s.send_to(&payload, (VIP, p));
        }
        let t = Instant::now();
        for p in 0..packets {
            let _ = s.send_to(&payload, (VIP, 1000 + p));
        }
        t.elapsed().as_nanos() as f64 / f64::from(packets)
    })
    .unwrap();
    drop(ns);
    per_packet
}

fn main() {
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("prog_cost: needs root (BPF_PROG_TEST_RUN, network namespaces); skipped");
        return;
    }
    let runs: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let mut n = node();

    let miss = eth(
        MAC,
        MAC,
        &ipv4(
            Tuple::tcp(CLIENT, 40000, VIP, 80),
            tcp_flags::ACK,
            &[0u8; 64],
        ),
    );
    let hit_flow = Tuple::tcp(CLIENT, 40001, VIP, 80);
    n.insert_cookie(
        &hit_flow.key(),
        &CookieEntry {
            service_id: 7,
            backend_id: 42,
            ..Default::default()
        },
    )
    .unwrap();
    let hit = eth(MAC, MAC, &ipv4(hit_flow, tcp_flags::ACK, &[0u8; 64]));
    let other = eth(
        MAC,
        MAC,
        &ipv4(
            Tuple::tcp(CLIENT, 40002, REMOTE, 8080),
            tcp_flags::ACK,
            &[0u8; 64],
        ),
    );
    let reply_inner = ipv4(hit_flow.reversed(), tcp_flags::ACK, &[0u8; 64]);
    let decap_client = talaria(
        MAC,
        MAC,
        SWITCH_IP,
        NODE_IP,
        TalariaEncap::new(flags::REPLY | flags::COOKIE_VALID, 7, 42),
        &reply_inner,
    );

    let request = Tuple::tcp(REMOTE, 40003, CLIENT, 8080);
    let decap_backend = talaria(
        MAC,
        MAC,
        SWITCH_IP,
        NODE_IP,
        TalariaEncap::new(flags::COOKIE_VALID, 7, 42),
        &ipv4(request, tcp_flags::ACK, &[0u8; 64]),
    );
    cost(&n, PROG_UPLINK, &decap_backend, 1); // records the reverse-flow entry
    let backend_reply = eth(
        MAC,
        MAC,
        &ipv4(request.reversed(), tcp_flags::ACK, &[0u8; 64]),
    );
    let arp = [vec![0xff; 6], MAC.to_vec(), vec![0x08, 0x06], vec![0; 28]].concat();
    let rows = [
        ("floor: non-IPv4 frame, returned at once", PROG_POD, &arp),
        ("pod egress: encap, cache miss (new flow)", PROG_POD, &miss),
        ("pod egress: encap, cache hit (cookie)", PROG_POD, &hit),
        ("pod egress: non-service, pass", PROG_POD, &other),
        (
            "pod egress: reverse NAT + encap (reply)",
            PROG_POD,
            &backend_reply,
        ),
        (
            "uplink: decap + cookie refresh (reply)",
            PROG_UPLINK,
            &decap_client,
        ),
        (
            "uplink: decap + reverse-flow refresh",
            PROG_UPLINK,
            &decap_backend,
        ),
    ];
    println!(
        "BPF_PROG_TEST_RUN, mean of {runs} single runs, 118-byte inner TCP packet (64 B payload)"
    );
    println!(
        "{:<44} {:>10} {:>8}",
        "program / case", "ns/packet", "verdict"
    );
    for (name, prog, pkt) in rows {
        let (ns, verdict) = cost(&n, prog, pkt, runs);
        println!("{name:<44} {ns:>10.1} {verdict:>8}");
    }

    let packets = 20_000;
    println!();
    println!("iptables nat path (new conntrack entry per packet; UDP send in a netns), {packets} packets");
    println!(
        "{:<44} {:>10} {:>14}",
        "rules", "ns/packet", "minus 0 rules"
    );
    let base = iptables_cost(0, packets);
    println!("{:<44} {base:>10.0} {:>14}", "0 (no kube-proxy rules)", "-");
    for rules in [10, 10_000] {
        let t = iptables_cost(rules, packets);
        println!(
            "{:<44} {t:>10.0} {:>14.0}",
            format!("{rules} KUBE-SVC services (match on last)"),
            t - base
        );
    }
}
