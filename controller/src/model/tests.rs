//! Model tests, driven by real v1 Service and discovery.k8s.io/v1
//! EndpointSlice YAML.

use super::*;
use crate::{controller::Source, types::Proto};

/// Parses a multi-document YAML string into the three kinds.
pub(crate) fn objs(yaml: &str) -> (Vec<Service>, Vec<EndpointSlice>, Vec<Node>) {
    let mut s = Vec::new();
    let mut e = Vec::new();
    let mut n = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = serde_yaml::Value::deserialize(doc).unwrap();
        match v.get("kind").and_then(|k| k.as_str()) {
            Some("Service") => s.push(serde_yaml::from_value(v).unwrap()),
            Some("EndpointSlice") => e.push(serde_yaml::from_value(v).unwrap()),
            Some("Node") => n.push(serde_yaml::from_value(v).unwrap()),
            _ => {}
        }
    }
    (s, e, n)
}
use serde::Deserialize;

pub(crate) const NODES: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, "fd00::/64"]}
status: {addresses: [{type: Hostname, address: n1}, {type: InternalIP, address: 192.168.0.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.0.12}]}
"#;

pub(crate) fn run(yaml: &str) -> Model {
    let (s, e, n) = objs(&format!("{NODES}\n---\n{yaml}"));
    build(&s, &e, &n)
}

fn key(vip: &str, port: u16, proto: Proto) -> ServiceKey {
    ServiceKey {
        vip: vip.parse().unwrap(),
        port,
        proto,
    }
}

fn be(ip: &str, port: u16, node: &str) -> Backend {
    Backend {
        ip: ip.parse().unwrap(),
        port,
        node_ip: node.parse().unwrap(),
    }
}

#[test]
fn nodes_give_pod_routes() {
    let m = run("");
    assert_eq!(m.pod_nodes.len(), 2);
    assert_eq!(
        m.pod_nodes[&"10.244.1.0/24".parse().unwrap()],
        "192.168.0.11".parse::<Ipv4Addr>().unwrap()
    );
    assert!(m.skipped.is_empty(), "{:?}", m.skipped);
}

#[test]
fn multi_port_named_target_ports_and_conditions() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http-alt}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- {addresses: [10.244.1.5], conditions: {ready: true}, nodeName: n1}
- {addresses: [10.244.2.6], nodeName: n2}
- {addresses: [10.244.2.7], conditions: {ready: false, serving: true, terminating: true}, nodeName: n2}
- {addresses: [10.244.2.8], conditions: {ready: false, serving: false, terminating: true}, nodeName: n2}
- {addresses: [10.244.2.9], conditions: {ready: false}, nodeName: n2}
"#);
    assert!(m.skipped.is_empty(), "{:?}", m.skipped);
    assert_eq!(m.ports.len(), 2);
    let http = &m.ports[&key("10.96.0.10", 80, Proto::Tcp)];
    assert_eq!(
        http.active,
        [
            be("10.244.1.5", 8080, "192.168.0.11"),
            be("10.244.2.6", 8080, "192.168.0.12")
        ]
        .into()
    );
    // Serving-terminating and not-ready endpoints keep their established
    // flows (no new ones); an endpoint neither ready nor serving while
    // terminating is kept too, as kube-proxy keeps its conntrack entries.
    assert_eq!(
        http.draining,
        [
            be("10.244.2.7", 8080, "192.168.0.12"),
            be("10.244.2.8", 8080, "192.168.0.12"),
            be("10.244.2.9", 8080, "192.168.0.12")
        ]
        .into()
    );
    assert!(!http.terminating_fallback);
    assert_eq!(http.hash_mode, HashMode::FiveTuple);
    let dns = &m.ports[&key("10.96.0.10", 53, Proto::Udp)];
    assert_eq!(dns.active.len(), 2);
    assert!(dns.active.iter().all(|b| b.port == 5353));
    assert_eq!(m.services.len(), 1);
    assert!(m.services.values().next().unwrap().notes.is_empty());
}

#[test]
fn terminating_fallback_when_none_ready() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {clusterIP: 10.96.0.11, selector: {a: b}, ports: [{port: 80, targetPort: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.5], conditions: {ready: false, serving: true, terminating: true}, nodeName: n1}
- {addresses: [10.244.1.6], conditions: {ready: false, serving: false, terminating: true}, nodeName: n1}
"#);
    let p = &m.ports[&key("10.96.0.11", 80, Proto::Tcp)];
    assert_eq!(p.active, [be("10.244.1.5", 80, "192.168.0.11")].into());
    assert_eq!(p.draining, [be("10.244.1.6", 80, "192.168.0.11")].into());
    assert!(p.terminating_fallback);
}

#[test]
fn headless_externalname_selectorless_affinity() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: hl, namespace: ns}
spec: {clusterIP: None, selector: {a: b}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: ns}
spec: {type: ExternalName, externalName: example.com}
---
apiVersion: v1
kind: Service
metadata: {name: manual, namespace: ns}
spec: {clusterIP: 10.96.0.12, sessionAffinity: ClientIP, ports: [{port: 443, targetPort: 8443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: manual-1, namespace: ns, labels: {kubernetes.io/service-name: manual}}
addressType: IPv4
ports: [{port: 8443}]
endpoints:
- {addresses: [10.244.2.50]}
"#);
    assert_eq!(m.ports.len(), 1);
    let p = &m.ports[&key("10.96.0.12", 443, Proto::Tcp)];
    assert_eq!(p.hash_mode, HashMode::ClientIp);
    assert_eq!(p.affinity_timeout_secs, Some(10_800), "the API's default");
    // No nodeName: node found through the pod CIDR.
    assert_eq!(p.active, [be("10.244.2.50", 8443, "192.168.0.12")].into());
    let hl = &m.services[&ObjectRef {
        namespace: "ns".into(),
        name: "hl".into(),
    }];
    assert!(hl.headless && hl.keys.is_empty());
    assert!(
        m.services[&ObjectRef {
            namespace: "ns".into(),
            name: "manual".into()
        }]
            .selectorless
    );
    assert!(m.services.contains_key(&ObjectRef {
        namespace: "ns".into(),
        name: "ext".into()
    }));
}

/// externalIPs and LoadBalancer ingress IPs are switch keys of their own,
/// with the ClusterIP's endpoints; internalTrafficPolicy does not apply
/// to them (their clients have no node). What cannot be served is noted.
#[test]
fn external_addresses_are_served_like_cluster_ips() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: ns}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.13
  internalTrafficPolicy: Local
  externalIPs: [203.0.113.7, 203.0.113.7, 10.96.0.13, "2001:db8::7", not-an-ip]
  ports: [{port: 80, nodePort: 30080, targetPort: 8080}]
status: {loadBalancer: {ingress: [{ip: 198.51.100.1}, {ip: 203.0.113.7}, {hostname: lb.example.com}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: lb-1, namespace: ns, labels: {kubernetes.io/service-name: lb}}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
- {addresses: [10.244.1.5], nodeName: n1}
"#);
    let r = ObjectRef {
        namespace: "ns".into(),
        name: "lb".into(),
    };
    let v = &m.services[&r];
    let external: Vec<Ipv4Addr> = vec![
        "203.0.113.7".parse().unwrap(),
        "198.51.100.1".parse().unwrap(),
    ];
    assert_eq!(v.external_ips, external);
    let cluster = &m.ports[&key("10.96.0.13", 80, Proto::Tcp)];
    assert!(cluster.frontend == Frontend::ClusterIp && cluster.local_only);
    for vip in &external {
        let p = &m.ports[&key(&vip.to_string(), 80, Proto::Tcp)];
        assert_eq!(p.frontend, Frontend::External, "{vip}");
        assert!(!p.local_only && p.preferred.is_empty(), "{vip}");
        assert_eq!(p.active, [be("10.244.1.5", 8080, "192.168.0.11")].into());
    }
    // The ClusterIP, two nodes' nodePort, two external addresses.
    assert_eq!(v.keys.len(), 5, "{:?}", v.keys);
    let notes = v.notes.join("\n");
    assert!(notes.contains("2001:db8::7: IPv6"), "{notes}");
    assert!(notes.contains("hostname lb.example.com"), "{notes}");
    assert!(
        m.skipped
            .iter()
            .any(|s| s.reason == "bad_external_ip" && s.detail.contains("not-an-ip")),
        "{:?}",
        m.skipped
    );
}

/// A nodePort is a switch key at every node's InternalIP (NodePort and
/// LoadBalancer Services, not a ClusterIP Service that names one). With
/// `externalTrafficPolicy: Cluster` each has every endpoint; with `Local`
/// each node's has that node's own (ready ones, else its
/// serving-terminating ones), and a node without one has none. Neither
/// policy is about a client's node: `internalTrafficPolicy` does not apply.
#[test]
fn node_ports_are_served_at_every_node_address() {
    let svc = |name: &str, ty: &str, policy: &str, port: u16| {
        format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: ns}}
spec:
  type: {ty}
  clusterIP: 10.96.0.{port}
  externalTrafficPolicy: {policy}
  internalTrafficPolicy: Local
  selector: {{app: x}}
  ports: [{{port: 80, nodePort: {np}, targetPort: 8080}}, {{name: dns, port: 53, protocol: UDP, nodePort: {np2}, targetPort: 8053}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: ns, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{port: 8080}}, {{name: dns, port: 8053, protocol: UDP}}]
endpoints:
- {{addresses: [10.244.1.5], nodeName: n1}}
- {{addresses: [10.244.1.6], nodeName: n1, conditions: {{ready: false, serving: true, terminating: true}}}}
- {{addresses: [10.244.2.5], nodeName: n2, conditions: {{ready: false, serving: true, terminating: true}}}}
- {{addresses: [10.244.2.6], nodeName: n2, conditions: {{ready: false, serving: false}}}}
"#,
            np = 30000 + port,
            np2 = 31000 + port,
        )
    };
    let m = run(&[
        svc("cluster", "NodePort", "Cluster", 1),
        svc("local", "LoadBalancer", "Local", 2),
        svc("plain", "ClusterIP", "Cluster", 3),
    ]
    .join("\n---\n"));
    let (n1, n2) = ("192.168.0.11", "192.168.0.12");
    let (b1, b1t) = (be("10.244.1.5", 8080, n1), be("10.244.1.6", 8080, n1));
    let (b2t, b2u) = (be("10.244.2.5", 8080, n2), be("10.244.2.6", 8080, n2));
    // Cluster: every node's key has every endpoint, as the ClusterIP.
    for node in [n1, n2] {
        let p = &m.ports[&key(node, 30001, Proto::Tcp)];
        assert_eq!(p.frontend, Frontend::NodePort);
        assert_eq!(p.active, [b1].into());
        assert_eq!(p.draining, [b1t, b2t, b2u].into());
        assert!(!p.local_only && p.preferred.is_empty(), "{p:?}");
        assert!(m.ports.contains_key(&key(node, 31001, Proto::Udp)));
    }
    // Local: n1's own ready endpoint; n2 has none ready, so its
    // serving-terminating one takes new flows there.
    let p1 = &m.ports[&key(n1, 30002, Proto::Tcp)];
    assert_eq!((&p1.active, &p1.draining), (&[b1].into(), &[b1t].into()));
    let p2 = &m.ports[&key(n2, 30002, Proto::Tcp)];
    assert_eq!((&p2.active, &p2.draining), (&[b2t].into(), &[b2u].into()));
    assert!(p2.terminating_fallback && !p1.terminating_fallback);
    // A UDP port's not-serving endpoint keeps nothing.
    let u2 = &m.ports[&key(n2, 31002, Proto::Udp)];
    assert_eq!(u2.draining, BTreeSet::new());
    // A ClusterIP Service's nodePort field is not served.
    assert!(!m.ports.contains_key(&key(n1, 30003, Proto::Tcp)));
    let keys = &m.services[&ObjectRef {
        namespace: "ns".into(),
        name: "plain".into(),
    }]
        .keys;
    assert_eq!(keys.len(), 2, "{keys:?}");
}

/// With `externalTrafficPolicy: Local`, a node without an endpoint of its
/// own has a key without any: the switch has nothing to balance there.
#[test]
fn a_local_node_port_without_local_endpoints_has_none() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns}
spec:
  type: NodePort
  clusterIP: 10.96.0.30
  externalTrafficPolicy: Local
  ports: [{port: 80, nodePort: 30080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: ns, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.5], nodeName: n1}
"#);
    let p = &m.ports[&key("192.168.0.12", 30080, Proto::Tcp)];
    assert!(p.active.is_empty() && p.draining.is_empty(), "{p:?}");
    assert_eq!(
        m.ports[&key("192.168.0.11", 30080, Proto::Tcp)].active,
        [be("10.244.1.5", 80, "192.168.0.11")].into()
    );
}

/// An external address naming a node's address and a nodePort does not
/// take that nodePort from its Service, whichever sorts first.
#[test]
fn an_external_address_never_takes_a_node_port() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: z-owner, namespace: ns}
spec: {type: NodePort, clusterIP: 10.96.0.40, ports: [{port: 80, nodePort: 30080}]}
---
apiVersion: v1
kind: Service
metadata: {name: a-thief, namespace: ns}
spec: {clusterIP: 10.96.0.41, externalIPs: [192.168.0.11], ports: [{port: 30080}]}
"#);
    let p = &m.ports[&key("192.168.0.11", 30080, Proto::Tcp)];
    assert_eq!(
        (p.service.name.as_str(), p.frontend),
        ("z-owner", Frontend::NodePort)
    );
    assert!(m
        .skipped
        .iter()
        .any(|s| s.reason == "duplicate_key" && s.object.name == "a-thief"));
}

/// An ingress IP with `ipMode: Proxy` is the load balancer's to serve
/// (kube-proxy skips it too); one restricted by `loadBalancerSourceRanges`
/// is not served, since the switch cannot enforce the ranges yet. Neither
/// applies to externalIPs, and a ClusterIP-type Service's externalIPs are
/// served (as kube-proxy does), its ingress status ignored.
#[test]
fn proxied_and_restricted_ingress_ips_are_not_served() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: proxied, namespace: ns}
spec: {type: LoadBalancer, clusterIP: 10.96.0.14, ports: [{port: 80}]}
status: {loadBalancer: {ingress: [{ip: 198.51.100.2, ipMode: Proxy}, {ip: 198.51.100.3, ipMode: VIP}]}}
---
apiVersion: v1
kind: Service
metadata: {name: ranged, namespace: ns}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.15
  loadBalancerSourceRanges: [192.0.2.0/24]
  externalIPs: [203.0.113.8]
  ports: [{port: 80}]
status: {loadBalancer: {ingress: [{ip: 198.51.100.4}]}}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: ns}
spec: {clusterIP: 10.96.0.16, externalIPs: [203.0.113.9], ports: [{port: 80}]}
status: {loadBalancer: {ingress: [{ip: 198.51.100.5}]}}
"#);
    let served = |name: &str| {
        m.services[&ObjectRef {
            namespace: "ns".into(),
            name: name.into(),
        }]
            .external_ips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(served("proxied"), ["198.51.100.3"]);
    assert_eq!(served("ranged"), ["203.0.113.8"]);
    assert_eq!(served("plain"), ["203.0.113.9"]);
    assert!(!m.ports.contains_key(&key("198.51.100.2", 80, Proto::Tcp)));
    assert!(!m.ports.contains_key(&key("198.51.100.4", 80, Proto::Tcp)));
    assert!(!m.ports.contains_key(&key("198.51.100.5", 80, Proto::Tcp)));
}

/// A Service naming another's ClusterIP as its external address does not
/// take it, whichever sorts first and whichever comes first
/// (CVE-2020-8554, which kube-proxy leaves to admission control).
#[test]
fn an_external_address_never_takes_a_cluster_ip() {
    let victim = r#"
apiVersion: v1
kind: Service
metadata: {name: victim, namespace: ns}
spec: {clusterIP: 10.96.0.20, ports: [{port: 80}]}
"#;
    let thief = r#"
apiVersion: v1
kind: Service
metadata: {name: a-thief, namespace: ns}
spec: {clusterIP: 10.96.0.21, externalIPs: [10.96.0.20], ports: [{port: 80}]}
"#;
    let owner = |m: &Model| {
        m.ports[&key("10.96.0.20", 80, Proto::Tcp)]
            .service
            .name
            .clone()
    };
    let full = run(&format!("{victim}\n---\n{thief}"));
    assert_eq!(owner(&full), "victim");
    assert!(full
        .skipped
        .iter()
        .any(|s| s.reason == "duplicate_key" && s.object.name == "a-thief"));
    // Incrementally, thief after victim and victim after thief.
    use crate::source::{MemorySource, Objects};
    for (first, second) in [(victim, thief), (thief, victim)] {
        let (s1, _, _) = objs(first);
        let (s2, _, _) = objs(second);
        let src = MemorySource::new();
        let mut o = Objects::default();
        o.put_service(s1[0].clone());
        src.replace(o);
        let mut m = Model::default();
        let _ = src.update_model(&mut m, false);
        src.update(|o| o.put_service(s2[0].clone()));
        let _ = src.update_model(&mut m, false);
        assert_eq!(owner(&m), "victim");
        assert_eq!(m, src.model());
    }
}

#[test]
fn malformed_objects_are_skipped_with_reasons() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: bad, namespace: ns}
spec: {clusterIP: 10.96.0.300, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: sctp, namespace: ns}
spec: {clusterIP: 10.96.0.14, ports: [{port: 80, protocol: SCTP}, {name: b, port: 81}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: fqdn, namespace: ns, labels: {kubernetes.io/service-name: sctp}}
addressType: FQDN
endpoints: []
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: nolabel, namespace: ns}
addressType: IPv4
endpoints: []
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sctp-x, namespace: ns, labels: {kubernetes.io/service-name: sctp}}
addressType: IPv4
ports: [{name: b, port: 81}]
endpoints:
- {addresses: [172.16.0.1]}
- {addresses: [not-an-ip], nodeName: n1}
"#);
    let reasons: BTreeSet<&str> = m.skipped.iter().map(|s| s.reason).collect();
    for r in [
        "bad_cluster_ip",
        "unsupported_protocol",
        "unsupported_address_type",
        "no_service_label",
        "bad_address",
    ] {
        assert!(reasons.contains(r), "missing {r} in {reasons:?}");
    }
    assert_eq!(m.ports.len(), 1, "{:?}", m.ports.keys());
    // Outside every pod CIDR: served without an agent, not skipped.
    assert_eq!(
        m.ports[&key("10.96.0.14", 81, Proto::Tcp)].active,
        [be("172.16.0.1", 81, "0.0.0.0")].into()
    );
}

/// A dual-stack Service: one port per (ClusterIP, port, protocol), each
/// with the endpoints of its family's slices only, as kube-proxy's two
/// proxiers see them. IPv6 pods are found through the Nodes' IPv6 pod
/// CIDRs; nodePorts stay IPv4.
#[test]
fn dual_stack_services_serve_each_cluster_ip_from_its_family() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv6, IPv4]
  clusterIP: "fd00:96::a"
  clusterIPs: ["fd00:96::a", 10.96.0.10]
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v4, namespace: ns, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.244.1.5], nodeName: n1}
- {addresses: [10.244.1.6], nodeName: n1, conditions: {ready: false}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v6, namespace: ns, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: ["fd00::5"], nodeName: n1}
- {addresses: ["fd00::6"], nodeName: n1, conditions: {ready: false, serving: true, terminating: true}}
- {addresses: ["fd00:0::5"], nodeName: n1}
- {addresses: [10.244.1.7], nodeName: n1}
- {addresses: ["fd99::7"], nodeName: n2}
"#);
    assert_eq!(m.pod_nodes_v6.len(), 1);
    assert_eq!(
        m.pod_nodes_v6[&"fd00::/64".parse().unwrap()],
        "192.168.0.11".parse::<Ipv4Addr>().unwrap()
    );
    let v6 = &m.ports[&key("fd00:96::a", 80, Proto::Tcp)];
    assert_eq!(v6.frontend, Frontend::ClusterIp);
    // fd00:0::5 is fd00::5 again: one backend per address.
    assert_eq!(v6.active, [be("fd00::5", 8080, "192.168.0.11")].into());
    assert_eq!(v6.draining, [be("fd00::6", 8080, "192.168.0.11")].into());
    let v4 = &m.ports[&key("10.96.0.10", 80, Proto::Tcp)];
    assert_eq!(v4.active, [be("10.244.1.5", 8080, "192.168.0.11")].into());
    assert_eq!(v4.draining, [be("10.244.1.6", 8080, "192.168.0.11")].into());
    // nodePorts at the nodes' IPv4 addresses, with the IPv4 endpoints.
    for n in ["192.168.0.11", "192.168.0.12"] {
        let p = &m.ports[&key(n, 30080, Proto::Tcp)];
        assert_eq!((p.frontend, &p.active), (Frontend::NodePort, &v4.active));
    }
    assert_eq!(m.ports.len(), 4, "{:?}", m.ports.keys());
    let view = &m.services[&ObjectRef {
        namespace: "ns".into(),
        name: "web".into(),
    }];
    let ips: Vec<String> = view.cluster_ips.iter().map(ToString::to_string).collect();
    assert_eq!(ips, ["fd00:96::a", "10.96.0.10"]);
    assert!(
        view.notes
            .iter()
            .any(|n| n.contains("IPv4 InternalIPs only")),
        "{:?}",
        view.notes
    );
    // An IPv4 address in an IPv6 slice, and an IPv6 address in no
    // node's IPv6 pod CIDR (no agent: not served), are skipped; nothing
    // else is lost.
    let skipped: Vec<(&str, &str)> = m
        .skipped
        .iter()
        .map(|s| (s.reason, s.detail.as_str()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .any(|(r, d)| *r == "bad_address" && d.contains("10.244.1.7") && d.contains("IPv6")),
        "{skipped:?}"
    );
    assert!(
        skipped
            .iter()
            .any(|(r, d)| *r == "ipv6_without_agent" && d.contains("fd99::7")),
        "{skipped:?}"
    );
}

/// A ClusterIP with EndpointSlices of the other family only gets no
/// endpoints and a warning; an IPv6-only Service's nodePorts and external
/// addresses are not served (kube-proxy's IPv4 proxier ignores it).
#[test]
fn a_cluster_ip_without_slices_of_its_family_is_reported() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: v6only, namespace: ns}
spec:
  type: NodePort
  clusterIPs: ["fd00:96::b"]
  externalIPs: [203.0.113.9]
  ports: [{port: 80, nodePort: 30081}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: v6only-1, namespace: ns, labels: {kubernetes.io/service-name: v6only}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.5], nodeName: n1}
---
apiVersion: v1
kind: Service
metadata: {name: ok, namespace: ns}
spec: {clusterIP: 10.96.0.20, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ok-1, namespace: ns, labels: {kubernetes.io/service-name: ok}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.5], nodeName: n1}
"#);
    let keys: Vec<String> = m.ports.keys().map(ToString::to_string).collect();
    assert_eq!(keys, ["10.96.0.20:80/TCP", "[fd00:96::b]:80/TCP"]);
    let p = &m.ports[&key("fd00:96::b", 80, Proto::Tcp)];
    assert!(p.active.is_empty() && p.draining.is_empty());
    assert_eq!(
        m.ports[&key("10.96.0.20", 80, Proto::Tcp)].active,
        [be("10.244.1.5", 80, "192.168.0.11")].into()
    );
    let s: Vec<_> = m.skipped.iter().map(|s| (s.reason, &s.detail)).collect();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].0, "endpoint_family_mismatch");
    assert!(
        s[0].1.contains("IPv6 ClusterIP fd00:96::b has only IPv4"),
        "{s:?}"
    );
    let view = &m.services[&ObjectRef {
        namespace: "ns".into(),
        name: "v6only".into(),
    }];
    assert!(view.external_ips.is_empty());
    assert!(
        view.notes.iter().any(|n| n.contains("IPv6-only Service")),
        "{:?}",
        view.notes
    );
}

#[test]
fn duplicate_endpoint_across_slices_ready_wins() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {clusterIP: 10.96.0.15, selector: {a: b}, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.5], conditions: {ready: false, serving: true, terminating: true}, nodeName: n1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-2, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.5], nodeName: n1}
- {addresses: [10.244.1.6], nodeName: n1}
"#);
    let p = &m.ports[&key("10.96.0.15", 80, Proto::Tcp)];
    assert_eq!(p.active.len(), 2);
    assert!(p.draining.is_empty());
}

/// The backend a port uses for `ip`, if any, and whether it is active.
fn backend_of<'a>(p: &'a ServicePort, ip: &str) -> Option<(&'a Backend, bool)> {
    let ip: Ipv4Addr = ip.parse().unwrap();
    p.active
        .iter()
        .map(|b| (b, true))
        .chain(p.draining.iter().map(|b| (b, false)))
        .find(|(b, _)| b.ip == ip)
}

#[test]
fn one_backend_per_ip_port_across_slices_and_nodes() {
    // The same pod listed in two slices (as while the EndpointSlice
    // controller moves it) under two different nodeNames, and twice in one
    // slice: one backend, from the first copy met (slices by name).
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {clusterIP: 10.96.0.20, selector: {a: b}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-a, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.5], conditions: {ready: true}, nodeName: n1}
- {addresses: [10.244.1.9], conditions: {ready: true}, nodeName: n1}
- {addresses: [10.244.1.9], conditions: {ready: true}, nodeName: n2}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-b, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.5], conditions: {ready: true}, nodeName: n2}
"#);
    assert!(m.skipped.is_empty(), "{:?}", m.skipped);
    let p = &m.ports[&key("10.96.0.20", 80, Proto::Tcp)];
    assert_eq!(
        p.active,
        [
            be("10.244.1.5", 8080, "192.168.0.11"),
            be("10.244.1.9", 8080, "192.168.0.11")
        ]
        .into()
    );
    assert!(p.draining.is_empty());
}

#[test]
fn a_running_pod_wins_its_ip_over_a_terminating_one() {
    // The pod network reused a terminating pod's IP for a new pod that is
    // not ready yet: kube-proxy keeps the running pod's copy, so the IP
    // takes no new flows (not the terminating pod's fallback); as any
    // not-ready TCP endpoint it only drains.
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {clusterIP: 10.96.0.21, selector: {a: b}, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{name: "", port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.5], conditions: {ready: false, serving: true, terminating: true}, nodeName: n1}
- {addresses: [10.244.1.6], conditions: {ready: false, serving: true, terminating: true}, nodeName: n1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-2, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{name: "", port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.5], conditions: {ready: false, serving: false, terminating: false}, nodeName: n2}
"#);
    let p = &m.ports[&key("10.96.0.21", 80, Proto::Tcp)];
    assert_eq!(
        backend_of(p, "10.244.1.5"),
        // The address is in n1's pod CIDR: n1's agent delivers it,
        // whatever nodeName says.
        Some((&be("10.244.1.5", 80, "192.168.0.11"), false))
    );
    assert_eq!(p.active, [be("10.244.1.6", 80, "192.168.0.11")].into());
    assert!(p.terminating_fallback);
}

#[test]
fn conditions_as_kube_proxy_reads_them() {
    // ready nil = true, serving nil = true (not ready's value: kube-proxy
    // reads it so), terminating nil = false; ready wins over terminating.
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {clusterIP: 10.96.0.22, selector: {a: b}, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.1], nodeName: n1}
- {addresses: [10.244.1.2], conditions: {ready: true, terminating: true}, nodeName: n1}
- {addresses: [10.244.1.3], conditions: {ready: false, terminating: true}, nodeName: n1}
- {addresses: [10.244.1.4], conditions: {ready: false, serving: true}, nodeName: n1}
- {addresses: [10.244.1.5], conditions: {ready: false, serving: false, terminating: true}, nodeName: n1}
"#);
    let p = &m.ports[&key("10.96.0.22", 80, Proto::Tcp)];
    assert_eq!(backend_of(p, "10.244.1.1").map(|b| b.1), Some(true));
    assert_eq!(backend_of(p, "10.244.1.2").map(|b| b.1), Some(true));
    // Serving (nil) and terminating: keeps its flows while others are ready.
    assert_eq!(backend_of(p, "10.244.1.3").map(|b| b.1), Some(false));
    // Neither ready nor serving-terminating: no new flows, as in
    // kube-proxy; established TCP flows go on (draining).
    assert_eq!(backend_of(p, "10.244.1.4").map(|b| b.1), Some(false));
    assert_eq!(backend_of(p, "10.244.1.5").map(|b| b.1), Some(false));
}

#[test]
fn only_the_first_address_is_used() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {clusterIP: 10.96.0.23, selector: {a: b}, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.5, 10.244.1.6], nodeName: n1}
- {addresses: [010.244.002.007], nodeName: n2}
- {addresses: [], nodeName: n1}
"#);
    let p = &m.ports[&key("10.96.0.23", 80, Proto::Tcp)];
    assert_eq!(
        p.active,
        [
            be("10.244.1.5", 80, "192.168.0.11"),
            // Leading zeros read as decimal, as kube-proxy's ParseIPSloppy.
            be("10.244.2.7", 80, "192.168.0.12")
        ]
        .into()
    );
    let reasons: Vec<&str> = m.skipped.iter().map(|s| s.reason).collect();
    assert_eq!(reasons, ["no_address"]);
}

#[test]
fn other_proxies_and_headless_slices_are_not_ours() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: other, namespace: ns, labels: {service.kubernetes.io/service-proxy-name: mesh}}
spec: {clusterIP: 10.96.0.24, selector: {a: b}, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: other-1
  namespace: ns
  labels: {kubernetes.io/service-name: other, service.kubernetes.io/service-proxy-name: mesh}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.5], nodeName: n1}
---
apiVersion: v1
kind: Service
metadata: {name: mine, namespace: ns}
spec: {clusterIP: 10.96.0.25, selector: {a: b}, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: mine-1
  namespace: ns
  labels: {kubernetes.io/service-name: mine, service.kubernetes.io/headless: ""}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.6], nodeName: n1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: mine-2, namespace: ns, labels: {kubernetes.io/service-name: mine}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.7], nodeName: n1}
"#);
    assert!(m.skipped.is_empty(), "{:?}", m.skipped);
    assert_eq!(
        m.services
            .keys()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["mine"]
    );
    assert_eq!(m.ports.len(), 1);
    assert_eq!(
        m.ports[&key("10.96.0.25", 80, Proto::Tcp)].active,
        [be("10.244.1.7", 80, "192.168.0.11")].into()
    );
    assert_eq!(
        KUBE_PROXY_LABEL_SELECTOR,
        format!("!{SERVICE_PROXY_NAME_LABEL},!{HEADLESS_LABEL}")
    );
}

#[test]
fn sctp_ports_are_refused_and_counted() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: sig, namespace: telco}
spec:
  clusterIP: 10.96.0.26
  selector: {app: sig}
  ports:
  - {name: m3ua, port: 2905, protocol: SCTP}
  - {name: http, port: 80, protocol: TCP, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sig-1, namespace: telco, labels: {kubernetes.io/service-name: sig}}
addressType: IPv4
ports: [{name: m3ua, port: 2905, protocol: SCTP}, {name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.5], nodeName: n1}
"#);
    // The TCP port is served; the SCTP one is refused, once, with a reason.
    assert_eq!(
        m.ports.keys().copied().collect::<Vec<_>>(),
        [key("10.96.0.26", 80, Proto::Tcp)]
    );
    assert_eq!(m.skipped.len(), 1, "{:?}", m.skipped);
    let s = &m.skipped[0];
    assert_eq!((s.kind, s.reason), ("Service", "unsupported_protocol"));
    assert_eq!(s.object.to_string(), "telco/sig");
    assert!(s.detail.contains("2905/SCTP"), "{}", s.detail);
    assert!(s.detail.contains("SCTP has no data path"), "{}", s.detail);
    let v = m.services.values().next().unwrap();
    assert_eq!(v.notes.len(), 1, "{:?}", v.notes);
    assert!(
        v.notes[0].starts_with("port 2905/SCTP refused"),
        "{:?}",
        v.notes
    );
    assert_eq!(m.unsupported_ports, [("SCTP".to_string(), 1)].into());
}

#[test]
fn service_cidrs_are_the_union_of_servicecidr_objects() {
    use crate::source::{MemorySource, Objects};
    use k8s_openapi::api::networking::v1::ServiceCIDR;

    let cidr = |yaml: &str| -> ServiceCIDR { serde_yaml::from_str(yaml).unwrap() };
    let kubernetes = cidr(
        r#"
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: kubernetes}
spec: {cidrs: [10.96.0.0/16, "fd00:10:96::/112"]}
"#,
    );
    let extra = cidr(
        r#"
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: extra}
spec: {cidrs: [10.100.0.0/16, 10.96.0.0/16, 10.300.0.0/16]}
"#,
    );
    let mut o = Objects::default();
    o.put_service_cidr(kubernetes);
    o.put_service_cidr(extra);
    let m = o.model();
    let got: Vec<String> = m.service_cidrs.iter().map(ToString::to_string).collect();
    assert_eq!(got, ["10.96.0.0/16", "10.100.0.0/16", "fd00:10:96::/112"]);
    assert_eq!(m.skipped.len(), 1, "{:?}", m.skipped);
    assert_eq!(
        (m.skipped[0].kind, m.skipped[0].reason),
        ("ServiceCIDR", "bad_cidr")
    );

    // Incrementally: the extra one goes, then a rebuild keeps the rest.
    let src = MemorySource::new();
    src.replace(o.clone());
    let mut m = Model::default();
    let _ = src.update_model(&mut m, false);
    assert_eq!(m.service_cidrs.len(), 3);
    src.update(|o| {
        o.remove_service_cidr(&ObjectRef {
            namespace: String::new(),
            name: "extra".into(),
        })
    });
    assert_eq!(
        src.update_model(&mut m, false),
        Delta::Ports(BTreeSet::new())
    );
    assert_eq!(m.service_cidrs.len(), 2);
    assert!(m.skipped.is_empty(), "{:?}", m.skipped);
    let _ = src.update_model(&mut m, true);
    assert_eq!(m.service_cidrs.len(), 2);
    assert_eq!(m, src.model());
}

mod fuzz {
    //! Whatever the API server holds, the model is built: arbitrary mixes
    //! of valid and invalid Services, EndpointSlices and Nodes never make it
    //! panic, and what reaches the data path is well formed.

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn pick<T: Clone + std::fmt::Debug + 'static>(v: Vec<T>) -> impl Strategy<Value = T> {
        (0..v.len()).prop_map(move |i| v[i].clone())
    }

    fn service() -> impl Strategy<Value = serde_json::Value> {
        let port = (
            pick(vec![json!("TCP"), json!("UDP"), json!("SCTP"), json!("tcp"), json!(null)]),
            pick(vec![json!(80), json!(0), json!(65535), json!(70000), json!(-1)]),
            pick(vec![json!(8080), json!("http"), json!(null), json!(0)]),
            pick(vec![json!("http"), json!(null), json!("")]),
        )
            .prop_map(|(protocol, port, target, name)| {
                json!({"protocol": protocol, "port": port, "targetPort": target, "name": name})
            });
        (
            pick(vec!["a", "b", "c"]),
            pick(vec![
                json!("10.96.0.10"),
                json!("10.96.0.11"),
                json!("None"),
                json!(""),
                json!("fd00::10"),
                json!("not-an-ip"),
                json!(null),
            ]),
            proptest::collection::vec(port, 0..3),
            pick(vec![json!("ClientIP"), json!("None"), json!(null), json!("bogus")]),
            pick(vec![json!("ClusterIP"), json!("NodePort"), json!("ExternalName"), json!(null)]),
        )
            .prop_map(|(name, ip, ports, affinity, type_)| {
                json!({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": name, "namespace": "ns"},
                       "spec": {"clusterIP": ip, "ports": ports, "sessionAffinity": affinity, "type": type_}})
            })
    }

    fn slice() -> impl Strategy<Value = serde_json::Value> {
        let endpoint = (
            pick(vec![
                json!(["10.244.1.5"]),
                json!(["10.244.2.6", "10.244.2.7"]),
                json!(["not-an-ip"]),
                json!(["fd00::5"]),
                json!([]),
            ]),
            pick(vec![json!(true), json!(false), json!(null)]),
            pick(vec![json!(true), json!(false), json!(null)]),
            pick(vec![json!(true), json!(false), json!(null)]),
            pick(vec![json!("n1"), json!("n2"), json!("gone"), json!(null)]),
        )
            .prop_map(|(addresses, ready, serving, terminating, node)| {
                json!({"addresses": addresses, "nodeName": node,
                       "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
            });
        (
            pick(vec!["a", "b", "c", "d"]),
            0u8..4,
            pick(vec![json!("IPv4"), json!("IPv6"), json!("FQDN")]),
            proptest::collection::vec(endpoint, 0..4),
            pick(vec![json!(8080), json!(0), json!(null)]),
            pick(vec![json!("http"), json!(null), json!("")]),
        )
            .prop_map(|(service, n, family, endpoints, port, name)| {
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"name": format!("{service}-{n}"), "namespace": "ns",
                                    "labels": {"kubernetes.io/service-name": service}},
                       "addressType": family,
                       "ports": [{"port": port, "name": name, "protocol": "TCP"}],
                       "endpoints": endpoints})
            })
    }

    /// Deserialises what a real API server could hand out; drops what
    /// k8s-openapi itself refuses.
    fn objects<T: serde::de::DeserializeOwned>(values: &[serde_json::Value]) -> Vec<T> {
        values
            .iter()
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn any_objects_build_a_well_formed_model(
            services in proptest::collection::vec(service(), 0..5),
            slices in proptest::collection::vec(slice(), 0..6),
            nodes_ok in any::<bool>(),
        ) {
            let (_, _, mut nodes) = objs(NODES);
            if !nodes_ok {
                nodes.truncate(1);
            }
            let services: Vec<Service> = objects(&services);
            let slices: Vec<EndpointSlice> = objects(&slices);
            let m = build(&services, &slices, &nodes);
            let node_ips: BTreeSet<Ipv4Addr> = m.node_ips.values().copied().collect();
            for (key, port) in &m.ports {
                prop_assert!(key.port != 0, "{key}");
                for b in port.active.iter().chain(&port.draining) {
                    prop_assert!(b.port != 0, "{key}: {b}");
                    // Delivered by the agent of the node whose pod CIDR
                    // holds it, or by the switch when none does.
                    let cidr_node = match b.ip {
                        std::net::IpAddr::V4(ip) => m
                            .pod_nodes
                            .iter()
                            .filter(|(p, _)| p.contains(ip))
                            .max_by_key(|(p, _)| p.len)
                            .map(|(_, n)| n),
                        std::net::IpAddr::V6(ip) => m
                            .pod_nodes_v6
                            .iter()
                            .filter(|(p, _)| p.contains(ip))
                            .max_by_key(|(p, _)| p.len)
                            .map(|(_, n)| n),
                    };
                    // Of the family of its port's VIP.
                    prop_assert_eq!(b.ip.is_ipv4(), key.vip.is_ipv4(), "{}: {}", key, b);
                    match cidr_node {
                        Some(n) => prop_assert!(b.node_ip == *n && node_ips.contains(n), "{key}: {b}"),
                        None => prop_assert!(!b.has_agent(), "{key}: {b} outside every pod CIDR"),
                    }
                }
                prop_assert!(port.active.is_disjoint(&port.draining));
            }
        }
    }
}

/// Node InternalIP → its one endpoint (port 80), as `preferred` holds it.
fn one_per_node(pairs: &[(&str, &str)]) -> BTreeMap<Ipv4Addr, BTreeSet<Backend>> {
    pairs
        .iter()
        .map(|(node, ep)| (node.parse().unwrap(), [be(ep, 80, node)].into()))
        .collect()
}

/// `internalTrafficPolicy: Local`: each node keeps its own ready endpoints,
/// else its serving-terminating ones; a node with neither is absent (its
/// clients' new flows are dropped). kube-proxy's `CategorizeEndpoints`.
#[test]
fn internal_traffic_policy_local_lists_each_nodes_own_endpoints() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {clusterIP: 10.96.0.12, selector: {a: b}, internalTrafficPolicy: Local, ports: [{port: 80}]}
---
apiVersion: v1
kind: Node
metadata: {name: n3}
spec: {podCIDR: 10.244.3.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.0.13}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: ns, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- {addresses: [10.244.1.5], nodeName: n1}
- {addresses: [10.244.1.6], conditions: {ready: false, serving: true, terminating: true}, nodeName: n1}
- {addresses: [10.244.2.5], conditions: {ready: false, serving: true, terminating: true}, nodeName: n2}
- {addresses: [10.244.3.5], conditions: {ready: false, serving: false, terminating: false}, nodeName: n3}
"#);
    let p = &m.ports[&key("10.96.0.12", 80, Proto::Tcp)];
    assert!(p.local_only);
    let want = one_per_node(&[
        ("192.168.0.11", "10.244.1.5"),
        ("192.168.0.12", "10.244.2.5"),
    ]);
    assert_eq!(p.preferred, want);
    // Cluster-wide the port is as before: the switch still needs every
    // endpoint's cookie.
    assert_eq!(p.active, [be("10.244.1.5", 80, "192.168.0.11")].into());
    let view = &m.services[&ObjectRef {
        namespace: "ns".into(),
        name: "s".into(),
    }];
    assert!(
        !view
            .notes
            .iter()
            .any(|n| n.contains("internalTrafficPolicy")),
        "{:?}",
        view.notes
    );
}

/// Topology: with `trafficDistribution: PreferClose` (or the topology-mode
/// annotation Auto) and hints on every ready endpoint, a node in a zone
/// uses the endpoints hinted for its zone; with one endpoint unhinted, or
/// without the Service asking, nobody does (kube-proxy's `canUseTopology`).
#[test]
fn topology_hints_pick_each_zones_endpoints() {
    let zoned_nodes = r#"
apiVersion: v1
kind: Node
metadata: {name: z1, labels: {topology.kubernetes.io/zone: a}}
spec: {podCIDR: 10.244.5.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.0.15}]}
---
apiVersion: v1
kind: Node
metadata: {name: z2, labels: {topology.kubernetes.io/zone: b}}
spec: {podCIDR: 10.244.6.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.0.16}]}
"#;
    let service = |how: &str, second_hint: &str| {
        format!(
            r#"{zoned_nodes}
---
apiVersion: v1
kind: Service
metadata: {{name: s, namespace: ns{how}}}
spec: {{clusterIP: 10.96.0.13, selector: {{a: b}}, ports: [{{port: 80}}]{dist}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: s-1, namespace: ns, labels: {{kubernetes.io/service-name: s}}}}
addressType: IPv4
ports: [{{port: 80}}]
endpoints:
- {{addresses: [10.244.5.5], nodeName: z1, zone: a, hints: {{forZones: [{{name: a}}]}}}}
- {{addresses: [10.244.6.5], nodeName: z2, zone: b{second_hint}}}
"#,
            how = if how == "annotation" {
                ", annotations: {service.kubernetes.io/topology-mode: Auto}"
            } else {
                ""
            },
            dist = if how == "PreferClose" {
                ", trafficDistribution: PreferClose"
            } else {
                ""
            },
        )
    };
    let hinted = ", hints: {forZones: [{name: b}]}";
    let preferred = |yaml: &str| {
        let m = run(yaml);
        let p = &m.ports[&key("10.96.0.13", 80, Proto::Tcp)];
        assert!(!p.local_only);
        p.preferred.clone()
    };
    let want = one_per_node(&[
        ("192.168.0.15", "10.244.5.5"),
        ("192.168.0.16", "10.244.6.5"),
    ]);
    assert_eq!(preferred(&service("PreferClose", hinted)), want);
    assert_eq!(preferred(&service("annotation", hinted)), want);
    assert!(preferred(&service("", hinted)).is_empty(), "not asked for");
    assert!(
        preferred(&service("PreferClose", "")).is_empty(),
        "an unhinted ready endpoint turns topology off"
    );
}

/// `sessionAffinityConfig.clientIP.timeoutSeconds` reaches the port as
/// given; out of the API's range (1..=86400) it is the default, with a
/// note; without ClientIP affinity there is none.
#[test]
fn session_affinity_timeout_is_taken_from_the_service() {
    let timeout = |affinity: &str| {
        let m = run(&format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: s, namespace: ns}}
spec: {{clusterIP: 10.96.0.15, ports: [{{port: 80}}]{affinity}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: s-1, namespace: ns, labels: {{kubernetes.io/service-name: s}}}}
addressType: IPv4
ports: [{{port: 80}}]
endpoints:
- {{addresses: [10.244.1.5]}}
"#
        ));
        let notes = m.services.values().next().unwrap().notes.clone();
        (
            m.ports[&key("10.96.0.15", 80, Proto::Tcp)].affinity_timeout_secs,
            notes,
        )
    };
    let config = |t: i64| {
        format!(
            ", sessionAffinity: ClientIP, \
             sessionAffinityConfig: {{clientIP: {{timeoutSeconds: {t}}}}}"
        )
    };
    assert_eq!(timeout(&config(30)), (Some(30), vec![]));
    assert_eq!(timeout(&config(86_400)), (Some(86_400), vec![]));
    let (t, notes) = timeout(&config(0));
    assert_eq!(t, Some(10_800));
    assert!(
        notes[0].contains("timeoutSeconds 0 out of range"),
        "{notes:?}"
    );
    assert_eq!(timeout(""), (None, vec![]));
    assert_eq!(
        timeout(", sessionAffinity: None, sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}"),
        (None, vec![])
    );
}

/// kube-proxy's health check for `externalTrafficPolicy: Local`
/// LoadBalancers: each node's ready endpoints by address (one listed for
/// two ports counts once; terminating and not-ready ones do not count);
/// no check for `Cluster` or for a Service that is not a LoadBalancer.
#[test]
fn health_checks_count_each_nodes_ready_endpoints() {
    let service = |name: &str, ty: &str, policy: &str| {
        format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: ns}}
spec:
  type: {ty}
  clusterIP: 10.96.1.{last}
  externalTrafficPolicy: {policy}
  healthCheckNodePort: 32000
  ports: [{{name: a, port: 80, nodePort: 30080}}, {{name: b, port: 81, nodePort: 30081}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: ns, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: a, port: 80}}, {{name: b, port: 81}}]
endpoints:
- {{addresses: [10.244.1.5], nodeName: n1}}
- {{addresses: [10.244.1.6], nodeName: n1}}
- {{addresses: [10.244.2.5], nodeName: n2}}
- {{addresses: [10.244.2.6], nodeName: n2, conditions: {{ready: false, serving: true, terminating: true}}}}
- {{addresses: [10.244.2.7], nodeName: n2, conditions: {{ready: false}}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-2, namespace: ns, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: b, port: 81}}]
endpoints:
- {{addresses: [10.244.1.5], nodeName: n1}}
"#,
            last = name.len()
        )
    };
    let m = run(&[
        service("local", "LoadBalancer", "Local"),
        service("clstr", "LoadBalancer", "Cluster"),
        service("nodeport", "NodePort", "Local"),
    ]
    .join("---\n"));
    let hc = |name: &str| {
        m.services[&ObjectRef {
            namespace: "ns".into(),
            name: name.into(),
        }]
            .health_check
            .clone()
    };
    let want = HealthCheckView {
        node_port: 32000,
        local_endpoints: [
            ("192.168.0.11".parse().unwrap(), 2),
            ("192.168.0.12".parse().unwrap(), 1),
        ]
        .into(),
    };
    assert_eq!(hc("local"), Some(want.clone()));
    assert_eq!(hc("clstr"), None);
    assert_eq!(hc("nodeport"), None);
    assert_eq!(m.health_checks.len(), 1);
    assert_eq!(m.health_checks.values().next(), Some(&want));
}

/// `trafficDistribution: PreferSameNode`: when every ready endpoint
/// carries `forNodes` hints, a node named by one uses the endpoints hinted
/// for it; a node named by none falls back to its zone's; with one
/// endpoint without `forNodes`, every node uses zone hints (KEP-3015,
/// kube-proxy's `topologyModeFromHints`).
#[test]
fn prefer_same_node_uses_each_nodes_own_endpoints_then_its_zones() {
    let nodes: String = [
        ("z1", "a", 5),
        ("z2", "b", 6),
        ("z3", "a", 7),
        ("z4", "a", 8),
    ]
    .iter()
    .map(|(name, zone, i)| {
        format!(
            "apiVersion: v1\nkind: Node\n\
                 metadata: {{name: {name}, labels: {{topology.kubernetes.io/zone: {zone}}}}}\n\
                 spec: {{podCIDR: 10.244.{i}.0/24}}\n\
                 status: {{addresses: [{{type: InternalIP, address: 192.168.0.1{i}}}]}}\n---\n"
        )
    })
    .collect();
    let endpoint = |i: u8, node: &str, zone: &str, node_hint: bool| {
        let for_nodes = if node_hint {
            format!(", forNodes: [{{name: {node}}}]")
        } else {
            String::new()
        };
        format!(
            "- {{addresses: [10.244.{i}.5], nodeName: {node}, zone: {zone}, \
             hints: {{forZones: [{{name: {zone}}}]{for_nodes}}}}}\n"
        )
    };
    let preferred = |z2_node_hint: bool| {
        let m = run(&format!(
            r#"{nodes}apiVersion: v1
kind: Service
metadata: {{name: s, namespace: ns}}
spec: {{clusterIP: 10.96.0.14, selector: {{a: b}}, ports: [{{port: 80}}], trafficDistribution: PreferSameNode}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: s-1, namespace: ns, labels: {{kubernetes.io/service-name: s}}}}
addressType: IPv4
ports: [{{port: 80}}]
endpoints:
{}{}{}"#,
            endpoint(5, "z1", "a", true),
            endpoint(6, "z2", "b", z2_node_hint),
            endpoint(7, "z3", "a", true),
        ));
        m.ports[&key("10.96.0.14", 80, Proto::Tcp)]
            .preferred
            .clone()
    };
    let ep = |i: u8| be(&format!("10.244.{i}.5"), 80, &format!("192.168.0.1{i}"));
    let node = |i: u8| -> Ipv4Addr { format!("192.168.0.1{i}").parse().unwrap() };
    let zone_a: BTreeSet<Backend> = [ep(5), ep(7)].into();
    assert_eq!(
        preferred(true),
        BTreeMap::from([
            (node(5), [ep(5)].into()),
            (node(6), [ep(6)].into()),
            (node(7), [ep(7)].into()),
            (node(8), zone_a.clone()),
        ]),
        "own endpoints first; a node with none named uses its zone's"
    );
    assert_eq!(
        preferred(false),
        BTreeMap::from([
            (node(5), zone_a.clone()),
            (node(6), [ep(6)].into()),
            (node(7), zone_a.clone()),
            (node(8), zone_a),
        ]),
        "one endpoint without forNodes: zones for everyone"
    );
}
