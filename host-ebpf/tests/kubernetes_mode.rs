//! Kubernetes mode against a small local fake API server and controller
//! (no root needed): the pod watch takes only this node's pods, skips
//! hostNetwork ones and follows adds and deletes; the services come from
//! the controller's `GET /v1/services`, the ServiceCIDRs from its `GET
//! /v1/service-cidrs`.

#[path = "common/fake_api.rs"]
mod fake_api;

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::Duration,
};

use fake_api::{pod, serve, services, Shared};
use talaria_node::{
    config::{KubernetesConfig, ServiceConfig},
    k8s,
};
use tokio::sync::Notify;

type Pods = Arc<Mutex<Option<k8s::PodIps>>>;

/// Single-stack pods with these addresses (an IPv6-only pod is found by
/// its own address).
fn set(ips: &[&str]) -> Option<k8s::PodIps> {
    Some(
        ips.iter()
            .map(|s| match s.parse().unwrap() {
                IpAddr::V4(a) => (IpAddr::V4(a), BTreeSet::new()),
                IpAddr::V6(a) => (IpAddr::V6(a), BTreeSet::from([a])),
            })
            .collect(),
    )
}

/// Waits (at most 100 × 50 ms) until `pods` equals `want`; returns what it
/// last saw.
async fn wait_for(pods: &Pods, want: &Option<k8s::PodIps>) -> Option<k8s::PodIps> {
    let mut seen = None;
    for _ in 0..100 {
        seen = pods.lock().unwrap().clone();
        if &seen == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

#[test]
fn pods_of_this_node_from_the_api_and_services_from_the_controller() {
    let api = Shared::default();
    {
        let mut a = api.lock().unwrap();
        a.put_pod(pod("a", "n1", "10.244.1.2", false));
        a.put_pod(pod("six", "n1", "fd00:244:1::7", false));
        a.put_pod(pod("host", "n1", "10.200.1.2", true));
        a.put_pod(pod("other", "n2", "10.244.2.2", false));
        a.services = services(&[(7, "10.96.0.10", 80, "TCP"), (8, "10.96.0.10", 53, "UDP")]);
    }
    let server = serve(api.clone());
    let url = server.url.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = k8s::client(&KubernetesConfig {
            api_server: url.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let pods: Pods = Arc::new(Mutex::new(None));
        let changed = Arc::new(Notify::new());
        let watch = tokio::spawn(k8s::watch_pods(
            client,
            "n1".into(),
            pods.clone(),
            changed.clone(),
        ));
        let want = set(&["10.244.1.2", "fd00:244:1::7"]);
        assert_eq!(
            wait_for(&pods, &want).await,
            want,
            "this node's pods (one IPv6 only), not the hostNetwork one, not n2's"
        );
        // A pod arrives on this node, another on n2; then a pod goes.
        api.lock()
            .unwrap()
            .put_pod(pod("b", "n1", "10.244.1.3", false));
        api.lock()
            .unwrap()
            .put_pod(pod("c", "n2", "10.244.2.3", false));
        let want = set(&["10.244.1.2", "10.244.1.3", "fd00:244:1::7"]);
        assert_eq!(wait_for(&pods, &want).await, want);
        api.lock().unwrap().delete_pod("a");
        let want = set(&["10.244.1.3", "fd00:244:1::7"]);
        assert_eq!(wait_for(&pods, &want).await, want);
        watch.abort();
        let selectors = api.lock().unwrap().field_selectors();
        assert!(!selectors.is_empty());
        assert!(
            selectors.iter().all(|s| s == "spec.nodeName=n1"),
            "every list and watch asked for this node only: {selectors:?}"
        );

        let http = reqwest::Client::new();
        let answer = k8s::fetch_answer(&http, &format!("{url}/"), None, Ipv4Addr::LOCALHOST)
            .await
            .unwrap();
        assert_eq!(answer.version, None, "this API names no plan version");
        assert_eq!(answer.removed, None, "a full answer");
        let mut plan = k8s::HeldPlan::default();
        plan.apply(answer);
        assert!(plan.health_checks().is_empty());
        let vip: Ipv4Addr = "10.96.0.10".parse().unwrap();
        assert_eq!(
            plan.services(),
            vec![
                ServiceConfig::new(7, vip, 80, "tcp"),
                ServiceConfig::new(8, vip, 53, "udp")
            ]
        );
        assert_eq!(
            k8s::fetch_service_cidrs(&http, &url).await.unwrap(),
            BTreeSet::new()
        );
        api.lock().unwrap().service_cidrs = serde_json::json!(["10.100.0.0/16"]);
        assert_eq!(
            k8s::fetch_service_cidrs(&http, &url).await.unwrap(),
            BTreeSet::from([("10.100.0.0".parse().unwrap(), 16)])
        );
        assert!(
            k8s::fetch_service_cidrs(&http, "http://127.0.0.1:9")
                .await
                .is_err(),
            "an unreachable controller is an error, not an empty set"
        );
        assert!(
            k8s::fetch_answer(&http, "http://127.0.0.1:9", None, Ipv4Addr::LOCALHOST)
                .await
                .is_err(),
            "an unreachable controller is an error, not an empty set"
        );
    });
}

/// The refresh loop against the fake controller, in a network namespace
/// of its own (root): a ServiceCIDR the controller adds reaches
/// `NODE_SVC_CIDRS` and gets a host-client route to `tlr-host`; one it
/// drops loses both; the configured prefix stays throughout; an
/// unreachable controller changes nothing.
#[test]
fn service_cidrs_from_the_controller_are_steered() {
    use talaria_node::{
        agent::HostRoutes,
        node::Node,
        sys::{self, NetNs},
    };
    talaria_preflight::require!(talaria_preflight::LOADS_BPF);
    let ns = NetNs::new(&format!("tlr-cidr-{}", std::process::id())).unwrap();
    // The host device as the agent makes it; its peer receives nothing.
    ns.ip(&[
        "link",
        "add",
        "tlr-host",
        "type",
        "veth",
        "peer",
        "name",
        "tlr-host-peer",
    ])
    .unwrap();
    ns.ip(&["link", "set", "tlr-host", "up"]).unwrap();
    // The node's address, the routes' source.
    ns.ip(&["addr", "add", "10.0.1.1/32", "dev", "lo"]).unwrap();
    ns.ip(&["link", "set", "tlr-host-peer", "up"]).unwrap();
    let routes = |c: &str| ns.ip(&["-4", "route", "show", c]).unwrap();
    ns.ip(&["route", "add", "10.96.0.0/12", "dev", "tlr-host"])
        .unwrap();
    let cidr = |s: &str| talaria_node::config::parse_cidr(s).unwrap();
    let configured = BTreeSet::from([cidr("10.96.0.0/12")]);
    let both = BTreeSet::from([cidr("10.96.0.0/12"), cidr("10.100.0.0/16")]);

    let api = Shared::default();
    api.lock().unwrap().services = services(&[(7, "10.96.0.10", 80, "TCP")]);
    // Everything inside the namespace: the fake controller, the agent's
    // HTTP client, its `ip route` commands.
    let (api_ns, configured_ns) = (api.clone(), configured.clone());
    let (node, stop, server) = sys::in_netns(&ns.name, move || {
        let server = serve(api_ns);
        let mut node = Node::load(None, 4096).expect("load the node programs");
        node.set_service_cidrs(&configured_ns.iter().copied().collect::<Vec<_>>())
            .unwrap();
        let node = Arc::new(Mutex::new(node));
        let host_routes = HostRoutes::here(Ipv4Addr::new(10, 0, 1, 1)).unwrap();
        let refresh = k8s::Refresh {
            cfg: KubernetesConfig {
                controller_url: server.url.clone(),
                services_refresh_secs: 1,
                ..Default::default()
            },
            node_ip: Ipv4Addr::new(10, 0, 1, 1),
            services: Vec::new(),
            service_cidrs: configured_ns,
            host_routes: Some(host_routes),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let n = node.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                tokio::select! {
                    _ = k8s::refresh_services(refresh, n) => {}
                    _ = stopped => {}
                }
            });
        });
        (node, stop, server)
    })
    .unwrap();
    let have = || node.lock().unwrap().service_cidrs().unwrap();
    let eventually = |what: &str, mut cond: Box<dyn FnMut() -> bool + '_>| {
        for _ in 0..100 {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{what}: NODE_SVC_CIDRS {:?}", have());
    };

    eventually(
        "services fetched",
        Box::new(|| api.lock().unwrap().service_fetches > 0),
    );
    assert_eq!(have(), configured, "the controller names none");
    api.lock().unwrap().service_cidrs = serde_json::json!(["10.100.0.0/16"]);
    eventually("added at the controller", Box::new(|| have() == both));
    eventually(
        "routed to tlr-host",
        Box::new(|| {
            let r = routes("10.100.0.0/16");
            r.contains("dev tlr-host") && r.contains("src 10.0.1.1")
        }),
    );

    // The controller drops it: gone from the map and the routes; the
    // configured prefix and its route stay.
    api.lock().unwrap().service_cidrs = serde_json::json!([]);
    eventually(
        "dropped at the controller",
        Box::new(|| have() == configured),
    );
    eventually(
        "route removed",
        Box::new(|| routes("10.100.0.0/16").is_empty()),
    );
    assert!(routes("10.96.0.0/12").contains("dev tlr-host"));

    // Added again, then the controller goes away: the last good set stays.
    api.lock().unwrap().service_cidrs = serde_json::json!(["10.100.0.0/16"]);
    eventually("added again", Box::new(|| have() == both));
    drop(server);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(have(), both, "kept while the controller is unreachable");
    assert!(routes("10.100.0.0/16").contains("dev tlr-host"));
    drop(stop);
}
