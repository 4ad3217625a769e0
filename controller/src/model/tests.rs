//! Model tests, driven by real v1 Service and discovery.k8s.io/v1
//! EndpointSlice YAML.

use super::*;
use crate::types::Proto;

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

fn run(yaml: &str) -> Model {
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

#[test]
fn nodeport_lb_externalips_are_reported_not_dropped() {
    let m = run(r#"
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: ns}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.13
  externalIPs: [203.0.113.7]
  ports: [{port: 80, nodePort: 30080, targetPort: 80}]
status: {loadBalancer: {ingress: [{ip: 198.51.100.1}]}}
"#);
    let v = &m.services[&ObjectRef {
        namespace: "ns".into(),
        name: "lb".into(),
    }];
    let notes = v.notes.join("\n");
    assert!(notes.contains("nodePort 30080"), "{notes}");
    assert!(notes.contains("198.51.100.1"), "{notes}");
    assert!(notes.contains("externalIP 203.0.113.7"), "{notes}");
    // The ClusterIP part still works, with no endpoints.
    let p = &m.ports[&key("10.96.0.13", 80, Proto::Tcp)];
    assert!(p.active.is_empty());
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
metadata: {name: v6, namespace: ns, labels: {kubernetes.io/service-name: sctp}}
addressType: IPv6
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
        "unknown_node",
        "bad_address",
    ] {
        assert!(reasons.contains(r), "missing {r} in {reasons:?}");
    }
    assert_eq!(m.ports.len(), 1, "{:?}", m.ports.keys());
    assert!(m.ports[&key("10.96.0.14", 81, Proto::Tcp)]
        .active
        .is_empty());
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
                    prop_assert!(node_ips.contains(&b.node_ip), "{key}: {b} on an unknown node");
                }
                prop_assert!(port.active.is_disjoint(&port.draining));
            }
        }
    }
}
