//! Random and mutated frames into the switch pipeline (BPF_PROG_TEST_RUN),
//! checking what must hold for every frame, whatever it is. The corpus is
//! the parity scenarios' inputs (`testing::scenarios`), on their tables.
//! Root only; `TALARIA_FUZZ_ITERS` and `TALARIA_FUZZ_SEED` run it longer
//! or elsewhere, and a failure prints the seed and frame to replay.

use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use talaria_common::{
    drop::{DropReason, DROP_REASON_COUNT},
    wire::{flags, GENEVE_UDP_PORT},
};
use talaria_preflight::{require, LOADS_BPF};
use talaria_switch_dataplane::{
    testing::{
        off,
        scenarios::{self, checksums, INGRESS_PORT},
        TestSwitch,
    },
    CounterId, Dataplane, Entry, Target,
};
use talaria_tables::{backend, backend_v6, endpoint_reply, tunnel_peer};

const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// What the tables say that the checks need.
struct Tables {
    switch_addrs: Vec<Ipv4Addr>,
    /// Nodes that may tunnel in on the ingress port.
    peers: Vec<Ipv4Addr>,
    /// Backend id → its node.
    backend_node: BTreeMap<u32, Ipv4Addr>,
    /// (address, port, protocol) of an endpoint without an agent on the
    /// ingress port → the backend its replies are tunnelled as.
    endpoint_replies: BTreeMap<(Ipv4Addr, u16, u8), u32>,
    /// `cookie_check`: the (service, backend) pairs a cookie may name.
    cookies: BTreeSet<(u16, u32)>,
}

impl Tables {
    fn of(entries: &[Entry]) -> Self {
        let mut t = Tables {
            switch_addrs: Vec::new(),
            peers: Vec::new(),
            backend_node: BTreeMap::new(),
            endpoint_replies: BTreeMap::new(),
            cookies: BTreeSet::new(),
        };
        for e in entries {
            match e {
                Entry::SwitchAddr(e) => t.switch_addrs.push(e.key.dst_addr),
                Entry::TunnelPeer(tunnel_peer::Entry { key, .. }) if key.port == INGRESS_PORT => {
                    t.peers.push(key.node_ip)
                }
                Entry::Backend(e) => {
                    let backend::Action::SetBackend { node_ip, .. } = e.action;
                    t.backend_node.insert(e.key.backend_id, node_ip);
                }
                // One backend id space over both tables: an IPv6 reply's
                // cookie names a `backend_v6` entry.
                Entry::BackendV6(e) => {
                    let backend_v6::Action::SetBackendV6 { node_ip, .. } = e.action;
                    t.backend_node.insert(e.key.backend_id, node_ip);
                }
                Entry::CookieCheck(e) => {
                    t.cookies.insert((e.key.service_id, e.key.backend_id));
                }
                Entry::EndpointReply(e) if e.key.port == INGRESS_PORT => {
                    let endpoint_reply::Action::SetEndpointReply { backend_id, .. } = e.action;
                    let k = &e.key;
                    t.endpoint_replies
                        .insert((k.endpoint_addr, k.endpoint_port, k.proto), backend_id);
                }
                _ => {}
            }
        }
        t
    }
}

fn addr(f: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3])
}

/// `drop_counter`, by reason code.
fn drops(dp: &Dataplane) -> Vec<u64> {
    (0..DROP_REASON_COUNT)
        .map(|i| dp.counter(CounterId::Drop, i).unwrap().packets)
        .collect()
}

/// (source address, source port, protocol) of a plain TCP or UDP frame.
fn endpoint_of(f: &[u8]) -> Option<(Ipv4Addr, u16, u8)> {
    let ip = off::OUTER_IP;
    let l4 = ip + usize::from(*f.get(ip)? & 0x0f) * 4;
    let proto = *f.get(ip + 9)?;
    let port = f.get(l4..l4 + 2)?;
    (matches!(proto, 6 | 17) && f.len() >= ip + 20).then(|| {
        (
            addr(f, ip + 12),
            u16::from_be_bytes([port[0], port[1]]),
            proto,
        )
    })
}

/// The reasons whose counts moved from `before` to `after`, with how much.
fn moved(before: &[u64], after: &[u64]) -> Vec<(String, u64)> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (b, a))| a != b)
        .map(|(i, (b, a))| {
            let name = DropReason::from_code(i as u8).map_or(format!("#{i}"), |r| r.name().into());
            (name, a - b)
        })
        .collect()
}

/// `seed` changed in one to four ways: bytes overwritten, an address of
/// the tables written anywhere, cut short or lengthened.
fn mutate(rng: &mut XorShiftRng, seed: &[u8], addrs: &[Ipv4Addr]) -> Vec<u8> {
    let mut p = seed.to_vec();
    for _ in 0..1 + rng.random_range(0..4) {
        match rng.random_range(0..5) {
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
            3 => p.truncate(14 + rng.random_range(0..p.len().saturating_sub(14).max(1))),
            _ => p.extend((0..rng.random_range(0..64)).map(|_| rng.random::<u8>())),
        }
    }
    p
}

/// For every frame: the verdict is forward or drop (a switch passes
/// nothing to a stack); a drop is counted under exactly one reason and a
/// forward under none; a forwarded frame's checksums are right when the
/// input's were; a frame leaving with a switch address as outer source
/// is a tunnel re-originated from one a node sent in on its port, the
/// reply of an endpoint without an agent, tunnelled as that endpoint's
/// backend, or an external client's request, tunnelled to its backend's
/// node; and a forwarded reply came from the node of the backend its
/// cookie names.
#[test]
fn fuzzed_frames_keep_the_switch_invariants() {
    require!(LOADS_BPF);
    let iters: usize = std::env::var("TALARIA_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("TALARIA_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5717_c4ed);
    let suite = scenarios::suites().remove(0);
    let sw = TestSwitch::new("fuzz", suite.ports);
    let dp = sw.dp();
    for e in &suite.setup {
        dp.insert(e).unwrap();
    }
    let t = Tables::of(&suite.setup);
    let corpus: Vec<Vec<u8>> = suite.scenarios().map(|s| s.input.clone()).collect();
    let mut addrs = t.switch_addrs.clone();
    addrs.extend(&t.peers);
    addrs.extend(t.backend_node.values());
    let mut rng = XorShiftRng::seed_from_u64(seed);
    // Verdicts seen: forward, drop, refused by the kernel.
    let mut seen = [0usize; 3];
    for i in 0..iters {
        let pick = rng.random_range(0..corpus.len());
        let input = mutate(&mut rng, &corpus[pick], &addrs);
        let before = drops(dp);
        // The kernel refuses some frames before any program sees them.
        let Ok(out) = dp.test_run(&input, Some(INGRESS_PORT)) else {
            seen[2] += 1;
            continue;
        };
        let moved = moved(&before, &drops(dp));
        let dropped: u64 = moved.iter().map(|m| m.1).sum();
        let why = || {
            format!(
                "seed {seed:#x}, iteration {i}, verdict {}, drops {moved:?}, input {input:02x?}, output {:02x?}",
                out.retval, out.data
            )
        };
        match out.retval {
            TC_ACT_SHOT => {
                seen[1] += 1;
                assert_eq!(dropped, 1, "a drop counted once: {}", why());
            }
            TC_ACT_REDIRECT => {
                seen[0] += 1;
                assert_eq!(dropped, 0, "a forward counted as a drop: {}", why());
            }
            _ => panic!("neither forward nor drop: {}", why()),
        }
        if out.retval != TC_ACT_REDIRECT {
            continue;
        }
        let f = &out.data;
        if checksums(&input).is_empty() {
            assert_eq!(checksums(f), Vec::<String>::new(), "{}", why());
        }
        // Offsets past outer IPv4 options, which a tunnel may carry.
        let udp = off::OUTER_IP + usize::from(f[off::OUTER_IP] & 0x0f) * 4;
        let opt = udp + (off::OPT - off::OUTER_UDP);
        let tunnel = f.len() >= opt + 12
            && f[off::OUTER_IP + 9] == 17
            && u16::from_be_bytes([f[udp + 2], f[udp + 3]]) == GENEVE_UDP_PORT;
        let outer_src = addr(f, off::OUTER_IP + 12);
        if t.switch_addrs.contains(&outer_src) {
            assert!(tunnel, "a non-tunnel left from a switch address: {}", why());
            let backend_id = u32::from_be_bytes(f[opt + 8..opt + 12].try_into().unwrap());
            let service_id = u16::from_be_bytes([f[opt + 6], f[opt + 7]]);
            let sender = addr(&input, off::OUTER_IP + 12);
            if t.peers.contains(&sender) {
                // Only the switch says a request is an outside client's:
                // one a node tunnelled to it leaves without EXTERNAL.
                let tunnelled_in = t.switch_addrs.contains(&addr(&input, off::OUTER_IP + 16));
                assert!(
                    !tunnelled_in
                        || f[opt + 5] & (flags::REPLY | flags::EXTERNAL) != flags::EXTERNAL,
                    "a node's request left flagged EXTERNAL: {}",
                    why()
                );
                if f[opt + 5] & flags::REPLY != 0 {
                    assert_eq!(
                        t.backend_node.get(&backend_id),
                        Some(&sender),
                        "a reply forwarded from a node that does not host its backend: {}",
                        why()
                    );
                }
            } else if f[opt + 5] & flags::REPLY != 0 {
                // Only a plain reply of an endpoint without an agent is
                // tunnelled from a sender that is no node, as that endpoint.
                let from = endpoint_of(&input);
                assert!(
                    f[opt + 5] & flags::ENDPOINT != 0
                        && from.and_then(|e| t.endpoint_replies.get(&e)) == Some(&backend_id)
                        && t.backend_node.get(&backend_id) == Some(&Ipv4Addr::UNSPECIFIED),
                    "re-originated a tunnel from {sender}, which is neither a peer nor an \
                     endpoint without an agent ({from:?}): {}",
                    why()
                );
            } else {
                // An external client's request, tunnelled to the node of
                // the backend its cookie names, flagged EXTERNAL; a backend
                // its timestamp cookie chose (no NEW_FLOW) is one
                // cookie_check vouches for.
                assert!(
                    f[opt + 5] & flags::EXTERNAL != 0,
                    "an external request's tunnel without EXTERNAL: {}",
                    why()
                );
                assert!(
                    f[opt + 5] & flags::NEW_FLOW != 0
                        || t.cookies.contains(&(service_id, backend_id)),
                    "a timestamp cookie chose backend {backend_id}, which cookie_check does not \
                     hold for service {service_id}: {}",
                    why()
                );
                assert_eq!(
                    t.backend_node.get(&backend_id),
                    Some(&addr(f, off::OUTER_IP + 16)),
                    "a tunnel built for {sender}'s request goes to a node that does not host \
                     its backend: {}",
                    why()
                );
            }
        }
    }
    println!(
        "{iters} frames: {} forwarded, {} dropped, {} refused by the kernel",
        seen[0], seen[1], seen[2]
    );
    // The mutations must reach both verdicts, or the checks check nothing.
    assert!(seen[..2].iter().all(|c| *c >= iters / 20), "{seen:?}");
}
