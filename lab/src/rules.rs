//! kube-proxy baselines: the rule structure kube-proxy programs on every
//! node, generated from a [`ServiceSet`].
//!
//! Like kube-proxy, which runs one proxier per address family, the
//! iptables and nftables rules are generated per family: `ip6tables` and
//! table `ip6 kube-proxy` carry the IPv6 ClusterIPs and endpoints. The
//! lab's LoadBalancer IPs and node addresses are IPv4, so only the IPv4
//! rules have external Services' rules.
//!
//! - [`iptables_restore`]: iptables mode (`KUBE-SERVICES` → `KUBE-SVC-*` with
//!   `-m statistic --mode random --probability` → `KUBE-SEP-*` DNAT, plus
//!   `KUBE-MARK-MASQ`/`KUBE-POSTROUTING` for hairpin and off-cluster sources),
//!   as `iptables-restore` input for the nat table.
//! - [`nft_script`]: nftables mode (table `ip kube-proxy`, a
//!   `service-ips` verdict map keyed on daddr . l4proto . dport, per-service
//!   chains choosing an endpoint with `numgen random mod N vmap`), as `nft -f`
//!   input that atomically replaces the table.
//!
//! - [`ipvs`]: IPVS mode (every ClusterIP bound to the dummy device
//!   `kube-ipvs0`, one virtual server per Service port with a real server
//!   per endpoint, round robin, NAT forwarding), as `ip -batch` and
//!   `ipvsadm-restore` input.
//!
//! Chain names use a short stable hash of the service port / endpoint, as
//! kube-proxy does (it uses base32(sha256); we use FNV-1a, the shape is what
//! matters). An external Service's LoadBalancer IP and nodePorts get
//! kube-proxy's `externalTrafficPolicy: Cluster` rules (a `KUBE-EXT-*` /
//! `external-*` chain that marks for masquerade and goes to the Service's
//! chain); IPVS mode leaves them out, and the filter-table chains are
//! omitted.

use crate::manifests::{ExternalSpec, ServiceSet, ServiceSpec};
use crate::topology::{IpFamily, Topology};
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

fn fnv64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// 16 base32 characters of a stable hash, like kube-proxy's chain suffixes.
pub fn chain_hash(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h = fnv64(s) as u128 | ((fnv64(&format!("{s}#")) as u128) << 64);
    (0..16)
        .map(|_| {
            let c = A[(h & 31) as usize] as char;
            h >>= 5;
            c
        })
        .collect()
}

struct Port {
    /// Its place in the Service's ports (and in
    /// [`crate::manifests::ExternalSpec::node_ports`]).
    index: usize,
    name: &'static str,
    proto: &'static str,
    port: u16,
    target: u16,
}

fn ports(t: &Topology) -> [Port; 2] {
    [
        Port {
            index: 0,
            name: "http",
            proto: "tcp",
            port: t.service_http_port,
            target: t.http_port,
        },
        Port {
            index: 1,
            name: "udp",
            proto: "udp",
            port: t.service_udp_port,
            target: t.udp_port,
        },
    ]
}

/// The Services of `set` that have a ClusterIP of `family`, with it, and
/// their external addresses where that family has them (IPv4 only).
fn services_of(
    set: &ServiceSet,
    family: IpFamily,
) -> impl Iterator<Item = (&ServiceSpec, IpAddr, Option<ExternalSpec>)> {
    set.services.iter().filter_map(move |s| {
        let vip = s.cluster_ip_of(family)?;
        Some((s, vip, s.external.filter(|_| family == IpFamily::IPv4)))
    })
}

/// `iptables-restore` (IPv4) or `ip6tables-restore` (IPv6) input for the
/// nat table of one node (every node gets the same rules, as with
/// kube-proxy).
pub fn iptables_restore(t: &Topology, set: &ServiceSet, family: IpFamily) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    let cluster = t.cluster_cidr(family);
    let host = family.host_len();
    let ns = &t.namespace;
    for c in [
        "KUBE-SERVICES",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
        "KUBE-NODEPORTS",
    ] {
        writeln!(chains, ":{c} - [0:0]").unwrap();
    }
    rules.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
    );
    let mut svc_rules = String::new();
    for (s, vip, external) in services_of(set, family) {
        for p in ports(t) {
            let spn = format!("{ns}/{}:{}", s.name, p.name);
            let svc_chain = format!("KUBE-SVC-{}", chain_hash(&format!("{spn}:{}", p.proto)));
            if s.endpoints.is_empty() {
                // kube-proxy rejects in the filter table; the nat table has no rule.
                continue;
            }
            writeln!(chains, ":{svc_chain} - [0:0]").unwrap();
            writeln!(
                svc_rules,
                "-A KUBE-SERVICES -d {vip}/{host} -p {pr} -m comment --comment \"{spn} cluster IP\" -m {pr} --dport {port} -j {svc_chain}",
                pr = p.proto,
                port = p.port
            )
            .unwrap();
            if let Some(e) = external {
                let ext_chain = svc_chain.replacen("KUBE-SVC-", "KUBE-EXT-", 1);
                writeln!(chains, ":{ext_chain} - [0:0]").unwrap();
                writeln!(
                    svc_rules,
                    "-A KUBE-SERVICES -d {lb}/32 -p {pr} -m comment --comment \"{spn} loadbalancer IP\" -m {pr} --dport {port} -j {ext_chain}",
                    lb = e.lb_ip,
                    pr = p.proto,
                    port = p.port
                )
                .unwrap();
                writeln!(
                    rules,
                    "-A KUBE-NODEPORTS -p {pr} -m comment --comment \"{spn}\" -m {pr} --dport {np} -j {ext_chain}\n\
                     -A {ext_chain} -m comment --comment \"masquerade traffic for {spn} external destinations\" -j KUBE-MARK-MASQ\n\
                     -A {ext_chain} -j {svc_chain}",
                    pr = p.proto,
                    np = e.node_ports[p.index],
                )
                .unwrap();
            }
            writeln!(
                rules,
                "-A {svc_chain} ! -s {cluster} -d {vip}/{host} -p {pr} -m comment --comment \"{spn} cluster IP\" -m {pr} --dport {port} -j KUBE-MARK-MASQ",
                pr = p.proto,
                port = p.port
            )
            .unwrap();
            let n = s.endpoints.len();
            for (i, &(node, pod)) in s.endpoints.iter().enumerate() {
                let ip = t.pod_ip_of(family, node, pod);
                let ep = SocketAddr::from((ip, p.target));
                let sep_chain = format!(
                    "KUBE-SEP-{}",
                    chain_hash(&format!("{spn}:{}:{ep}", p.proto))
                );
                writeln!(chains, ":{sep_chain} - [0:0]").unwrap();
                if i + 1 < n {
                    writeln!(
                        rules,
                        "-A {svc_chain} -m comment --comment \"{spn} -> {ep}\" -m statistic --mode random --probability {:.11} -j {sep_chain}",
                        1.0 / (n - i) as f64
                    )
                    .unwrap();
                } else {
                    writeln!(
                        rules,
                        "-A {svc_chain} -m comment --comment \"{spn} -> {ep}\" -j {sep_chain}"
                    )
                    .unwrap();
                }
                writeln!(
                    rules,
                    "-A {sep_chain} -s {ip}/{host} -m comment --comment \"{spn}\" -j KUBE-MARK-MASQ"
                )
                .unwrap();
                writeln!(
                    rules,
                    "-A {sep_chain} -p {pr} -m comment --comment \"{spn}\" -m {pr} -j DNAT --to-destination {ep}",
                    pr = p.proto
                )
                .unwrap();
            }
        }
    }
    svc_rules.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
    format!("*nat\n{chains}{rules}{svc_rules}COMMIT\n")
}

fn nft_service_chain(t: &Topology, s: &ServiceSpec, proto: &str, pname: &str) -> String {
    let spn = format!("{}/{}/{proto}/{pname}", t.namespace, s.name);
    format!("service-{}-{spn}", &chain_hash(&spn)[..8])
}

/// `endpoint-<hash>-<ns>/<svc>/<proto>/<port>__<ip>/<port>`: nft chain
/// names take no `:` or brackets, so an IPv6 address is written with dots.
fn nft_endpoint_chain(
    t: &Topology,
    s: &ServiceSpec,
    proto: &str,
    pname: &str,
    ep: SocketAddr,
) -> String {
    let spn = format!("{}/{}/{proto}/{pname}", t.namespace, s.name);
    let key = format!(
        "{spn}__{}/{}",
        ep.ip().to_string().replace(':', "."),
        ep.port()
    );
    format!("endpoint-{}-{key}", &chain_hash(&key)[..8])
}

/// `nft -f` input for the node at `node_ip`: replaces table `ip
/// kube-proxy` (IPv4) or `ip6 kube-proxy` (IPv6) atomically. Its nodePorts
/// are served at `node_ip` only (kube-proxy's `--nodeport-addresses
/// primary`), so the IPv6 table has none.
pub fn nft_script(t: &Topology, set: &ServiceSet, family: IpFamily, node_ip: Ipv4Addr) -> String {
    let cluster = t.cluster_cidr(family);
    let (table, addr_type, ip) = match family {
        IpFamily::IPv4 => ("ip kube-proxy", "ipv4_addr", "ip"),
        IpFamily::IPv6 => ("ip6 kube-proxy", "ipv6_addr", "ip6"),
    };
    let mut o = String::new();
    writeln!(o, "add table {table}\ndelete table {table}").unwrap();
    writeln!(o, "table {table} {{\n\tcomment \"rules for kube-proxy\"").unwrap();
    o.push_str("\tchain mark-for-masquerade {\n\t\tmeta mark set meta mark or 0x4000\n\t}\n");
    o.push_str(
        "\tchain masquerading {\n\t\tmeta mark & 0x4000 == 0 return\n\t\tmeta mark set meta mark ^ 0x4000\n\t\tmasquerade fully-random\n\t}\n",
    );
    o.push_str("\tchain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services\n\t}\n");
    o.push_str("\tchain nat-output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}\n");
    o.push_str("\tchain nat-postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tjump masquerading\n\t}\n");
    let mut elements = Vec::new();
    let mut node_ports = Vec::new();
    let mut cluster_ips = Vec::new();
    for (s, vip, external) in services_of(set, family) {
        cluster_ips.push(vip.to_string());
        for p in ports(t) {
            if s.endpoints.is_empty() {
                continue;
            }
            let chain = nft_service_chain(t, s, p.proto, p.name);
            elements.push(format!("{vip} . {} . {} : goto {chain}", p.proto, p.port));
            if let Some(e) = external {
                let ext_chain = chain.replacen("service-", "external-", 1);
                writeln!(
                    o,
                    "\tchain {ext_chain} {{\n\t\tjump mark-for-masquerade\n\t\tgoto {chain}\n\t}}"
                )
                .unwrap();
                elements.push(format!(
                    "{} . {} . {} : goto {ext_chain}",
                    e.lb_ip, p.proto, p.port
                ));
                node_ports.push(format!(
                    "{} . {} : goto {ext_chain}",
                    p.proto, e.node_ports[p.index]
                ));
            }
            let mut vmap = Vec::new();
            for (i, &(node, pod)) in s.endpoints.iter().enumerate() {
                let addr = t.pod_ip_of(family, node, pod);
                let ep = SocketAddr::from((addr, p.target));
                let echain = nft_endpoint_chain(t, s, p.proto, p.name, ep);
                writeln!(
                    o,
                    "\tchain {echain} {{\n\t\t{ip} saddr {addr} jump mark-for-masquerade\n\t\tmeta l4proto {} dnat to {ep}\n\t}}",
                    p.proto
                )
                .unwrap();
                vmap.push(format!("{i} : goto {echain}"));
            }
            writeln!(
                o,
                "\tchain {chain} {{\n\t\t{ip} daddr {vip} {} dport {} {ip} saddr != {cluster} jump mark-for-masquerade\n\t\tnumgen random mod {} vmap {{ {} }}\n\t}}",
                p.proto,
                p.port,
                s.endpoints.len(),
                vmap.join(", ")
            )
            .unwrap();
        }
    }
    writeln!(
        o,
        "\tset cluster-ips {{\n\t\ttype {addr_type}\n\t\tcomment \"Active ClusterIPs\""
    )
    .unwrap();
    if !cluster_ips.is_empty() {
        writeln!(o, "\t\telements = {{ {} }}", cluster_ips.join(", ")).unwrap();
    }
    o.push_str("\t}\n");
    writeln!(o, "\tmap service-ips {{\n\t\ttype {addr_type} . inet_proto . inet_service : verdict\n\t\tcomment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\"").unwrap();
    if !elements.is_empty() {
        writeln!(o, "\t\telements = {{ {} }}", elements.join(",\n\t\t\t")).unwrap();
    }
    o.push_str("\t}\n");
    o.push_str("\tmap service-nodeports {\n\t\ttype inet_proto . inet_service : verdict\n\t\tcomment \"NodePort traffic\"\n");
    if !node_ports.is_empty() {
        writeln!(o, "\t\telements = {{ {} }}", node_ports.join(",\n\t\t\t")).unwrap();
    }
    o.push_str("\t}\n");
    writeln!(
        o,
        "\tset nodeport-ips {{\n\t\ttype {addr_type}\n\t\tcomment \"IPs that accept NodePort traffic\""
    )
    .unwrap();
    if family == IpFamily::IPv4 {
        writeln!(o, "\t\telements = {{ {node_ip} }}").unwrap();
    }
    o.push_str("\t}\n");
    writeln!(
        o,
        "\tchain services {{\n\t\t{ip} daddr . meta l4proto . th dport vmap @service-ips\n\t\t{ip} daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports\n\t}}"
    )
    .unwrap();
    o.push_str("}\n");
    o
}

/// The dummy device kube-proxy's IPVS mode binds every ClusterIP to: Service
/// traffic is then local and meets IPVS at LOCAL_IN.
pub const IPVS_DEVICE: &str = "kube-ipvs0";

/// IPVS mode for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsRules {
    /// `ip -batch` input creating [`IPVS_DEVICE`] with the ClusterIPs.
    pub addresses: String,
    /// `ipvsadm-restore` input: the virtual and real servers.
    pub servers: String,
}

/// IPVS mode's state for `set`, with kube-proxy's defaults (scheduler `rr`,
/// masquerading forwarding, weight 1).
pub fn ipvs(t: &Topology, set: &ServiceSet) -> IpvsRules {
    let mut addresses = format!("link add {IPVS_DEVICE} type dummy\nlink set {IPVS_DEVICE} up\n");
    let mut servers = String::new();
    for s in &set.services {
        for &vip in &s.cluster_ips {
            let family = IpFamily::of(vip);
            writeln!(
                addresses,
                "addr add {vip}/{} dev {IPVS_DEVICE}",
                family.host_len()
            )
            .unwrap();
            if s.endpoints.is_empty() {
                continue;
            }
            for p in ports(t) {
                let kind = if p.proto == "udp" { "-u" } else { "-t" };
                let vs = SocketAddr::from((vip, p.port));
                writeln!(servers, "-A {kind} {vs} -s rr").unwrap();
                for &(node, pod) in &s.endpoints {
                    let rs = SocketAddr::from((t.pod_ip_of(family, node, pod), p.target));
                    writeln!(servers, "-a {kind} {vs} -r {rs} -m -w 1").unwrap();
                }
            }
        }
    }
    IpvsRules { addresses, servers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::ExternalSpec;

    fn small() -> (Topology, ServiceSet) {
        let t = Topology::from_yaml(
            "nodes: 2\npods_per_node: 3\nservices: 2\nendpoints_per_service: 3",
        )
        .unwrap();
        let s = ServiceSet::from_topology(&t);
        (t, s)
    }

    #[test]
    fn chain_hash_is_stable_and_kube_proxy_shaped() {
        let h = chain_hash("default/svc-00000:http:tcp");
        assert_eq!(h.len(), 16);
        assert!(h
            .chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
        assert_eq!(h, chain_hash("default/svc-00000:http:tcp"));
        assert_ne!(h, chain_hash("default/svc-00001:http:tcp"));
    }

    #[test]
    fn iptables_structure() {
        let (t, set) = small();
        let r = iptables_restore(&t, &set, IpFamily::IPv4);
        assert!(r.starts_with("*nat\n") && r.ends_with("COMMIT\n"));
        // 2 services x 2 ports: 4 KUBE-SVC chains, 12 KUBE-SEP chains.
        assert_eq!(r.lines().filter(|l| l.starts_with(":KUBE-SVC-")).count(), 4);
        assert_eq!(
            r.lines().filter(|l| l.starts_with(":KUBE-SEP-")).count(),
            12
        );
        assert!(r.contains("-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"default/svc-00000:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-"));
        assert!(r.contains("-A KUBE-SERVICES -d 10.96.0.11/32 -p udp"));
        // Probabilities 1/3, 1/2, then the unconditional last endpoint.
        assert_eq!(r.matches("--probability 0.33333333333").count(), 4);
        assert_eq!(r.matches("--probability 0.50000000000").count(), 4);
        assert!(r.contains("-j DNAT --to-destination 10.244.1.10:8080"));
        assert!(r.contains("-j DNAT --to-destination 10.244.1.10:5353"));
        // The nodeports rule is the last rule of KUBE-SERVICES.
        let last = r
            .lines()
            .rfind(|l| l.starts_with("-A KUBE-SERVICES"))
            .unwrap();
        assert!(last.contains("KUBE-NODEPORTS"));
        // Every jump target is declared.
        for l in r.lines().filter(|l| l.starts_with("-A ")) {
            let target = l.rsplit("-j ").next().unwrap().split(' ').next().unwrap();
            if target.starts_with("KUBE-") {
                assert!(
                    r.contains(&format!(":{target} - [0:0]")),
                    "undeclared {target}"
                );
            }
        }
    }

    #[test]
    fn iptables_single_endpoint_has_no_statistic() {
        let t = Topology::from_yaml(
            "nodes: 2\npods_per_node: 1\nservices: 1\nendpoints_per_service: 1",
        )
        .unwrap();
        let r = iptables_restore(&t, &ServiceSet::from_topology(&t), IpFamily::IPv4);
        assert!(!r.contains("statistic"));
    }

    #[test]
    fn nft_structure() {
        let (t, set) = small();
        let s = nft_script(&t, &set, IpFamily::IPv4, t.node_ip(0));
        assert!(s.starts_with("add table ip kube-proxy\ndelete table ip kube-proxy\n"));
        assert!(s.contains("type ipv4_addr . inet_proto . inet_service : verdict"));
        assert!(s.contains("ip daddr . meta l4proto . th dport vmap @service-ips"));
        assert!(s.contains("10.96.0.10 . tcp . 80 : goto service-"));
        assert!(s.contains("10.96.0.11 . udp . 53 : goto service-"));
        assert_eq!(s.matches("numgen random mod 3 vmap").count(), 4);
        assert!(s.contains("meta l4proto tcp dnat to 10.244.1.10:8080"));
        assert!(s.contains("type nat hook prerouting priority dstnat"));
        // Balanced braces.
        assert_eq!(s.matches('{').count(), s.matches('}').count());
    }

    /// An external Service's LoadBalancer IP and nodePorts lead, through
    /// kube-proxy's external chain (masquerade, `externalTrafficPolicy:
    /// Cluster`), to its Service chain.
    #[test]
    fn external_services_have_load_balancer_and_node_port_rules() {
        let (t, mut set) = small();
        let e = ExternalSpec {
            lb_ip: t.lb_ip(1),
            node_ports: [30000, 30001],
        };
        set.services[0].external = None;
        set.services[1].external = Some(e);
        let r = iptables_restore(&t, &set, IpFamily::IPv4);
        let lb = r
            .lines()
            .find(|l| l.contains("-d 172.29.0.11/32 -p tcp"))
            .expect("the LoadBalancer IP rule");
        let ext = lb.rsplit("-j ").next().unwrap();
        assert!(ext.starts_with("KUBE-EXT-"), "{lb}");
        let svc = ext.replacen("KUBE-EXT-", "KUBE-SVC-", 1);
        assert!(r.contains(&format!(":{ext} - [0:0]")));
        assert!(r.contains(&format!("-A KUBE-NODEPORTS -p tcp -m comment --comment \"default/svc-00001:http\" -m tcp --dport 30000 -j {ext}")));
        assert!(r.contains(&format!("-A {ext} -m comment --comment \"masquerade traffic for default/svc-00001:http external destinations\" -j KUBE-MARK-MASQ\n-A {ext} -j {svc}\n")));
        assert!(r.contains("--dport 30001 -j KUBE-EXT-"));
        // Service 0 is no LoadBalancer.
        assert_eq!(r.matches("loadbalancer IP").count(), 2);

        let s = nft_script(&t, &set, IpFamily::IPv4, t.node_ip(0));
        assert!(s.contains("172.29.0.11 . tcp . 80 : goto external-"));
        assert!(s.contains("tcp . 30000 : goto external-"));
        assert!(s.contains("udp . 30001 : goto external-"));
        assert!(s.contains("\t\telements = { 172.30.0.2 }"));
        assert!(
            s.contains("ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports")
        );
        assert_eq!(
            s.matches("jump mark-for-masquerade\n\t\tgoto service-")
                .count(),
            2
        );
        assert_eq!(s.matches('{').count(), s.matches('}').count());
    }

    #[test]
    fn empty_service_has_no_rules() {
        let (t, mut set) = small();
        set.services[1].endpoints.clear();
        let r = iptables_restore(&t, &set, IpFamily::IPv4);
        assert!(!r.contains("10.96.0.11"));
        let s = nft_script(&t, &set, IpFamily::IPv4, t.node_ip(0));
        assert!(!s.contains("10.96.0.11 . tcp"));
    }

    #[test]
    fn ipvs_structure() {
        let (t, mut set) = small();
        set.services[1].endpoints.clear();
        let r = ipvs(&t, &set);
        // Every ClusterIP is bound, with or without endpoints (kube-proxy
        // binds them all), but only Services with endpoints get servers.
        assert!(r.addresses.starts_with("link add kube-ipvs0 type dummy\n"));
        for s in &set.services {
            assert!(r.addresses.contains(&format!(
                "addr add {}/32 dev kube-ipvs0\n",
                s.cluster_ips[0]
            )));
        }
        let s0 = &set.services[0];
        let vs = format!("{}:{}", s0.cluster_ips[0], t.service_http_port);
        assert!(r.servers.contains(&format!("-A -t {vs} -s rr\n")));
        let reals: Vec<&str> = r
            .servers
            .lines()
            .filter(|l| l.starts_with(&format!("-a -t {vs} ")))
            .collect();
        assert_eq!(reals.len(), s0.endpoints.len());
        let (n, p) = s0.endpoints[0];
        assert!(reals.contains(
            &format!("-a -t {vs} -r {}:{} -m -w 1", t.pod_ip(n, p), t.http_port).as_str()
        ));
        let udp_vs = format!("-A -u {}:{} -s rr", s0.cluster_ips[0], t.service_udp_port);
        assert!(r.servers.contains(&udp_vs));
        assert!(!r
            .servers
            .contains(&set.services[1].cluster_ips[0].to_string()));
    }

    /// A dual-stack Service set gets kube-proxy's second proxier: the same
    /// rule structure over the IPv6 ClusterIPs and endpoints, with no
    /// external rules (the lab's LoadBalancer IPs are IPv4).
    #[test]
    fn ipv6_rules_mirror_ipv4() {
        let t = Topology::from_yaml(
            "nodes: 2\npods_per_node: 3\nservices: 2\nendpoints_per_service: 3\nexternal_services: 1\nservice_families: [IPv4, IPv6]",
        )
        .unwrap();
        let set = ServiceSet::from_topology(&t);
        let v4 = iptables_restore(&t, &set, IpFamily::IPv4);
        let v6 = iptables_restore(&t, &set, IpFamily::IPv6);
        assert!(v4.contains("loadbalancer IP") && !v6.contains("loadbalancer IP"));
        assert!(!v4.contains("fd00:"));
        assert!(v6.contains("-A KUBE-SERVICES -d fd00:10:96::a/128 -p tcp"));
        assert!(v6.contains("! -s fd00:10:244::/56 -d fd00:10:96::b/128 -p udp"));
        assert!(v6.contains("-A KUBE-SEP-"));
        assert!(v6.contains("-s fd00:10:244:1::a/128 -m comment"));
        assert!(v6.contains("-j DNAT --to-destination [fd00:10:244:1::a]:8080"));
        assert_eq!(
            v6.lines().filter(|l| l.starts_with(":KUBE-SEP-")).count(),
            12
        );

        let n6 = nft_script(&t, &set, IpFamily::IPv6, t.node_ip(0));
        assert!(n6.starts_with("add table ip6 kube-proxy\ndelete table ip6 kube-proxy\n"));
        assert!(n6.contains("type ipv6_addr . inet_proto . inet_service : verdict"));
        assert!(n6.contains("fd00:10:96::a . tcp . 80 : goto service-"));
        assert!(n6.contains("ip6 saddr fd00:10:244:1::a jump mark-for-masquerade"));
        assert!(n6.contains("-default/svc-00000/tcp/http__fd00.10.244.1..a/8080 {"));
        assert!(n6.contains("meta l4proto udp dnat to [fd00:10:244:1::a]:5353"));
        assert!(n6.contains("ip6 daddr fd00:10:96::a tcp dport 80 ip6 saddr != fd00:10:244::/56"));
        assert!(!n6.contains("172.") && !n6.contains("external-"));
        assert_eq!(n6.matches('{').count(), n6.matches('}').count());
        let n4 = nft_script(&t, &set, IpFamily::IPv4, t.node_ip(0));
        assert!(!n4.contains("fd00:") && n4.contains("external-"));

        let r = ipvs(&t, &set);
        assert!(r
            .addresses
            .contains("addr add fd00:10:96::a/128 dev kube-ipvs0\n"));
        assert!(r.servers.contains("-A -t [fd00:10:96::a]:80 -s rr\n"));
        assert!(r
            .servers
            .contains("-a -u [fd00:10:96::a]:53 -r [fd00:10:244:1::a]:5353 -m -w 1\n"));
    }
}
