//! Per-packet pipeline cost of the switch data plane, measured with
//! BPF_PROG_TEST_RUN in a throwaway namespace. Root only.
//!
//! `cargo run --release -p talaria-switch-dataplane --bin switch-dataplane-bench [-- RUNS]`
//!
//! A test run with `repeat > 1` runs the program again on the *same* skb,
//! which the pipeline has rewritten (DNAT, outer destination, TTL), so the
//! later repetitions would measure another path. Each packet kind is
//! therefore run RUNS times with repeat = 1, and the table shows the mean
//! and median of the kernel-measured program time per run (`duration`),
//! and the mean wall time of the whole bpf(2) call. Plain routing, which
//! only decrements the TTL, is also measured with repeat = 250 on TTL 255
//! as a cross-check.
//!
//! Then the forwarding rate through real veths: an AF_PACKET sender blasts
//! one frame kind into switch port 1 for 2 s and the switch's port
//! counters tell how many it redirected. Sender, veth and switch share one
//! pinned core, so the rate is a lower bound for the switch alone. A
//! second table steers the switch to its own core with RPS and divides the
//! rate by that core's busy share: the rate of one fully busy switch core.

use std::{net::Ipv4Addr, time::Instant};
use talaria_tables::build;

use talaria_common::{hash::hash_mode, net::IPPROTO_TCP, wire::flags};
use talaria_switch_dataplane::{
    testing::{self, eth, ipv4, mac, talaria, tunnel_frame, udp, Inner, TestSwitch},
    Dataplane, Target,
};

const SWITCH: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);
const TC_ACT_REDIRECT: u32 = 7;

fn install(dp: &Dataplane) {
    let net = |third| build::prefix(Ipv4Addr::new(192, 168, third, 0), 24);
    let mut entries = vec![
        build::route(net(1), 1, mac(0x11), mac(0xa1)),
        build::route(net(2), 2, mac(0x12), mac(0xa2)),
        build::switch_addr(SWITCH),
        build::spoofed_source(SWITCH),
        // Every frame arrives on port 1, replies from node B too.
        build::tunnel_peer(1, NODE_A),
        build::tunnel_peer(1, NODE_B),
        build::pod_node(build::prefix(Ipv4Addr::new(10, 244, 1, 0), 24), NODE_A),
        build::service(VIP, 80, IPPROTO_TCP, 7, 255, hash_mode::FIVE_TUPLE),
    ];
    for b in 0..256u32 {
        entries.push(build::bucket(7, b as u16, 1000 + b % 16));
    }
    for id in 1000..1016u32 {
        entries.push(build::cookie(7, id));
        entries.push(build::backend(
            id,
            Ipv4Addr::new(10, 244, 2, id as u8),
            8080,
            NODE_B,
        ));
    }
    for e in &entries {
        dp.insert(e).expect("insert");
    }
}

struct Row {
    name: &'static str,
    mean_ns: f64,
    median_ns: u32,
    wall_ns: f64,
}

fn measure(dp: &Dataplane, name: &'static str, packet: &[u8], runs: u32) -> Row {
    let check = dp.test_run(packet, Some(1)).expect("test run");
    assert_eq!(
        check.retval, TC_ACT_REDIRECT,
        "{name}: the packet must be forwarded"
    );
    let mut durations = Vec::with_capacity(runs as usize);
    let start = Instant::now();
    for _ in 0..runs {
        durations.push(dp.test_run(packet, Some(1)).expect("test run").duration_ns);
    }
    let wall = start.elapsed();
    let mean_ns = durations.iter().map(|d| f64::from(*d)).sum::<f64>() / f64::from(runs);
    durations.sort_unstable();
    Row {
        name,
        mean_ns,
        median_ns: durations[durations.len() / 2],
        wall_ns: wall.as_nanos() as f64 / f64::from(runs),
    }
}

fn main() {
    if let Err(e) = talaria_preflight::ensure(&talaria_preflight::LOADS_BPF) {
        eprintln!("switch-dataplane-bench cannot run:\n{e}");
        std::process::exit(1);
    }
    let runs: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("RUNS must be a number"))
        .unwrap_or(1_000_000);
    let sw = TestSwitch::new("bench", 2);
    let dp = sw.dp();
    install(dp);

    let inner = Inner::tcp(CLIENT, 40000, VIP, 80);
    let new_flow = tunnel_frame(
        NODE_A,
        SWITCH,
        64,
        &talaria(flags::NEW_FLOW, 0, 0),
        &inner.to_bytes(),
    );
    let cookied = tunnel_frame(
        NODE_A,
        SWITCH,
        64,
        &talaria(flags::COOKIE_VALID, 7, 1003),
        &inner.to_bytes(),
    );
    let reply = tunnel_frame(
        NODE_B,
        SWITCH,
        64,
        &talaria(flags::REPLY | flags::COOKIE_VALID, 7, 1003),
        &Inner::tcp(VIP, 80, CLIENT, 40000).to_bytes(),
    );
    let routed = eth(
        mac(0xaa),
        mac(1),
        &ipv4(NODE_A, NODE_B, 64, 17, &udp(1234, 5678, &[0u8; 64])),
    );

    let rows = [
        measure(dp, "new flow (hash, DNAT, cookie)", &new_flow, runs),
        measure(dp, "cookied (cookie_check hit)", &cookied, runs),
        measure(dp, "reply (checked, pod_node)", &reply, runs),
        measure(dp, "plain routed IPv4", &routed, runs),
    ];

    let routed255 = eth(
        mac(0xaa),
        mac(1),
        &ipv4(NODE_A, NODE_B, 255, 17, &udp(1234, 5678, &[0u8; 64])),
    );
    let batches = (runs / 250).max(1);
    let mut repeat_sum = 0f64;
    for _ in 0..batches {
        repeat_sum += f64::from(
            dp.test_run_repeat(&routed255, Some(1), 250)
                .expect("test run")
                .duration_ns,
        );
    }

    println!(
        "switch data plane, BPF_PROG_TEST_RUN, {runs} runs per row (kernel {})",
        kernel()
    );
    println!(
        "{:<32} {:>12} {:>12} {:>14} {:>12}",
        "packet", "mean ns", "median ns", "syscall ns", "Mpps/core*"
    );
    for r in &rows {
        println!(
            "{:<32} {:>12.1} {:>12} {:>14.1} {:>12.2}",
            r.name,
            r.mean_ns,
            r.median_ns,
            r.wall_ns,
            1e3 / r.mean_ns
        );
    }
    println!(
        "{:<32} {:>12.1} {:>12} {:>14} {:>12.2}",
        "plain routed, repeat=250",
        repeat_sum / f64::from(batches),
        "-",
        "-",
        1e3 / (repeat_sum / f64::from(batches))
    );
    println!("* pipeline only: 1000 / mean ns, without driver, veth or stack costs");

    let secs = 2.0;
    println!();
    println!("veth forwarding: AF_PACKET sender (namespace A) -> veth -> switch port 1 (TCX ingress) -> bpf_redirect ->");
    println!("port 2 -> its peer, which discards the frames early (foreign MAC). The sender thread is pinned to CPU 0,");
    println!("where the veth receive path and the switch run too: one core does everything; {secs} s per row.");
    println!(
        "{:<32} {:>12} {:>14}",
        "packet", "sent Mpps", "switched Mpps"
    );
    let lab = VethLab::new();
    // Baseline: the same sender into a veth without the switch, whose peer
    // discards the frames the same way: the ceiling of this setup.
    let base = {
        let (ns, ifindex, frame) = (lab.a.name.clone(), lab.base_ifindex, routed.clone());
        // In its own thread: the sender enters namespace A for good.
        std::thread::spawn(move || sender(&ns, ifindex, &frame, secs))
            .join()
            .expect("sender")
    } as f64
        / secs;
    println!(
        "{:<32} {:>12.3} {:>14}",
        "baseline (no switch)",
        base / 1e6,
        "-"
    );
    let kinds = [
        ("new flow", &new_flow),
        ("cookied", &cookied),
        ("plain routed", &routed),
    ];
    for (name, frame) in kinds {
        let (sent, switched) = lab.blast(dp, frame, secs);
        println!(
            "{name:<32} {:>12.3} {:>14.3}",
            sent / secs / 1e6,
            switched / secs / 1e6
        );
    }

    // The same, with the switch on its own core: RPS steers port 1's
    // receive path (and so the switch program) to CPU 1 while the sender
    // stays on CPU 0. CPU 1's busy share then gives the rate one fully
    // busy core would switch.
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        println!();
        println!("two cores: sender on CPU 0, switch port 1's receive path (and the switch) steered by RPS to CPU 1");
        println!(
            "{:<32} {:>12} {:>14} {:>12} {:>16}",
            "packet", "sent Mpps", "switched Mpps", "CPU 1 busy", "Mpps/busy core"
        );
        set_rps(&sw.ns.name, "sw1", "2");
        for (name, frame) in kinds {
            let before = cpu_jiffies(1);
            let (sent, switched) = lab.blast(dp, frame, secs);
            let after = cpu_jiffies(1);
            let busy = (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64;
            println!(
                "{name:<32} {:>12.3} {:>14.3} {:>11.0}% {:>16.3}",
                sent / secs / 1e6,
                switched / secs / 1e6,
                busy * 100.0,
                switched / secs / 1e6 / busy.max(0.01)
            );
        }
        set_rps(&sw.ns.name, "sw1", "0");
    }

    let b = testing::NetNs::create("benchb");
    let (median, p99, n) = latency(&lab.a, &b, 20_000);
    println!();
    println!(
        "UDP round trip A -> switch -> B -> switch -> A over veths ({n} pings, one in flight):"
    );
    println!("median {median:.1} us, p99 {p99:.1} us (two switch passes and two socket hops per round trip)");
}

/// Namespace A with the peer of switch port 1. Port 2's peer stays in the
/// switch namespace: the switch redirects to it and the frames, addressed
/// to a foreign MAC, die early in its receive path.
struct VethLab {
    a: testing::NetNs,
    ifindex: u32,
    /// A veth in A whose peer has no program.
    base_ifindex: u32,
}

impl VethLab {
    fn new() -> Self {
        let a = testing::NetNs::create("bencha");
        testing::ip(&["link", "set", "peer1", "netns", &a.name]);
        testing::ip(&["-n", &a.name, "link", "set", "peer1", "up"]);
        testing::ip(&[
            "link", "add", "base", "type", "veth", "peer", "name", "basepeer",
        ]);
        testing::ip(&["link", "set", "base", "up"]);
        testing::ip(&["link", "set", "basepeer", "netns", &a.name]);
        testing::ip(&["-n", &a.name, "link", "set", "basepeer", "up"]);
        let back = std::fs::File::open("/proc/thread-self/ns/net").expect("netns");
        a.enter_again();
        let ifindex = talaria_switch_dataplane::ifindex_of("peer1").expect("peer1");
        let base_ifindex = talaria_switch_dataplane::ifindex_of("basepeer").expect("basepeer");
        // SAFETY: setns on a valid namespace fd.
        unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&back), libc::CLONE_NEWNET) };
        Self {
            a,
            ifindex,
            base_ifindex,
        }
    }

    /// Sends `frame` for `secs` seconds from namespace A; returns (frames
    /// sent, frames the switch redirected).
    fn blast(&self, dp: &Dataplane, frame: &[u8], secs: f64) -> (f64, f64) {
        let tx_before: u64 = dp
            .port_stats()
            .expect("stats")
            .iter()
            .map(|p| p.tx.packets)
            .sum();
        let ns = self.a.name.clone();
        let ifindex = self.ifindex;
        let frame = frame.to_vec();
        let sent = std::thread::spawn(move || sender(&ns, ifindex, &frame, secs))
            .join()
            .expect("sender");
        let tx_after: u64 = dp
            .port_stats()
            .expect("stats")
            .iter()
            .map(|p| p.tx.packets)
            .sum();
        (sent as f64, (tx_after - tx_before) as f64)
    }
}

fn sender(ns: &str, ifindex: u32, frame: &[u8], secs: f64) -> u64 {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns");
    // SAFETY: plain syscalls on valid arguments; the buffers outlive them.
    unsafe {
        assert_eq!(libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET), 0);
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "AF_PACKET socket");
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            4,
        );
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        const BATCH: usize = 64;
        let mut iov = libc::iovec {
            iov_base: frame.as_ptr() as *mut _,
            iov_len: frame.len(),
        };
        let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|_| {
                let mut m: libc::mmsghdr = std::mem::zeroed();
                m.msg_hdr.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            let n = libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0);
            if n > 0 {
                sent += n as u64;
            }
        }
        libc::close(fd);
        sent
    }
}

/// Writes `dev`'s receive-queue RPS mask in namespace `ns` (sysfs shows a
/// namespace's devices only to a mount made inside it, hence `ip netns exec`).
fn set_rps(ns: &str, dev: &str, mask: &str) {
    let path = format!("/sys/class/net/{dev}/queues/rx-0/rps_cpus");
    let ok = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            &format!("echo {mask} > {path}"),
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot set {path} to {mask} in {ns}");
}

/// (busy, total) jiffies of CPU `n` from /proc/stat.
fn cpu_jiffies(n: usize) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&format!("cpu{n}")))
        .expect("cpu line");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Round trips of a 32-byte UDP ping from A to an echo socket in B through
/// the switch. Gives A and B addresses, neighbours and default routes, and
/// the peers the MACs the routes of [`install`] send to.
fn latency(a: &testing::NetNs, b: &testing::NetNs, count: usize) -> (f64, f64, usize) {
    use std::net::{SocketAddrV4, UdpSocket};
    testing::ip(&["link", "set", "peer2", "netns", &b.name]);
    for (ns, dev, mac_byte, node, gw, gw_mac) in [
        (a, "peer1", 0xa1u8, NODE_A, "192.168.1.1", 0x11u8),
        (b, "peer2", 0xa2, NODE_B, "192.168.2.1", 0x12),
    ] {
        let n = ns.name.as_str();
        let m = |x: u8| format!("02:00:00:00:00:{x:02x}");
        testing::ip(&["-n", n, "link", "set", dev, "address", &m(mac_byte)]);
        testing::ip(&["-n", n, "link", "set", dev, "up"]);
        testing::ip(&["-n", n, "addr", "add", &format!("{node}/24"), "dev", dev]);
        testing::ip(&[
            "-n",
            n,
            "neigh",
            "add",
            gw,
            "lladdr",
            &m(gw_mac),
            "dev",
            dev,
        ]);
        testing::ip(&["-n", n, "route", "add", "default", "via", gw, "dev", dev]);
    }
    let in_ns = |ns: &testing::NetNs, addr: Ipv4Addr| {
        let back = std::fs::File::open("/proc/thread-self/ns/net").expect("netns");
        ns.enter_again();
        let s = UdpSocket::bind(SocketAddrV4::new(addr, 0)).expect("bind");
        // SAFETY: setns on a valid namespace fd.
        unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&back), libc::CLONE_NEWNET) };
        s
    };
    let echo = in_ns(b, NODE_B);
    let echo_addr = echo.local_addr().expect("addr");
    echo.set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .expect("timeout");
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let client = in_ns(a, NODE_A);
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .expect("timeout");
    let mut rtts = Vec::with_capacity(count);
    let mut buf = [0u8; 64];
    for i in 0..count {
        let start = Instant::now();
        client
            .send_to(&(i as u64).to_be_bytes().repeat(4), echo_addr)
            .expect("send");
        if client.recv_from(&mut buf).is_ok() {
            rtts.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(client);
    server.join().expect("echo");
    rtts.sort_by(|x, y| x.total_cmp(y));
    let n = rtts.len();
    assert!(n > 0, "no ping came back through the switch");
    (rtts[n / 2], rtts[n * 99 / 100], n)
}
