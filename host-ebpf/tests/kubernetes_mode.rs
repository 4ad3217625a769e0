//! Kubernetes mode against a small local fake API server and controller
//! (no root needed): the pod watch takes only this node's pods, skips
//! hostNetwork ones and follows adds and deletes; the services come from
//! the controller's `GET /v1/services`.

#[path = "common/fake_api.rs"]
mod fake_api;

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use fake_api::{pod, serve, services, Shared};
use talaria_node::{
    config::{KubernetesConfig, ServiceConfig},
    k8s,
};
use tokio::sync::Notify;

type Pods = Arc<Mutex<Option<BTreeSet<Ipv4Addr>>>>;

fn set(ips: &[&str]) -> Option<BTreeSet<Ipv4Addr>> {
    Some(ips.iter().map(|s| s.parse().unwrap()).collect())
}

/// Waits (at most 100 × 50 ms) until `pods` equals `want`; returns what it
/// last saw.
async fn wait_for(pods: &Pods, want: &Option<BTreeSet<Ipv4Addr>>) -> Option<BTreeSet<Ipv4Addr>> {
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
        let want = set(&["10.244.1.2"]);
        assert_eq!(
            wait_for(&pods, &want).await,
            want,
            "this node's pod, not the hostNetwork one, not n2's"
        );
        // A pod arrives on this node, another on n2; then a pod goes.
        api.lock()
            .unwrap()
            .put_pod(pod("b", "n1", "10.244.1.3", false));
        api.lock()
            .unwrap()
            .put_pod(pod("c", "n2", "10.244.2.3", false));
        let want = set(&["10.244.1.2", "10.244.1.3"]);
        assert_eq!(wait_for(&pods, &want).await, want);
        api.lock().unwrap().delete_pod("a");
        let want = set(&["10.244.1.3"]);
        assert_eq!(wait_for(&pods, &want).await, want);
        watch.abort();
        let selectors = api.lock().unwrap().field_selectors.clone();
        assert!(!selectors.is_empty());
        assert!(
            selectors.iter().all(|s| s == "spec.nodeName=n1"),
            "every list and watch asked for this node only: {selectors:?}"
        );

        let http = reqwest::Client::new();
        let (got, version) =
            k8s::fetch_services(&http, &format!("{url}/"), None, Ipv4Addr::LOCALHOST)
                .await
                .unwrap();
        assert_eq!(version, None, "this API names no plan version");
        let vip: Ipv4Addr = "10.96.0.10".parse().unwrap();
        assert_eq!(
            got,
            vec![
                ServiceConfig {
                    id: 7,
                    vip,
                    port: 80,
                    protocol: "tcp".into(),
                    reject: false,
                    preferred: Vec::new(),
                    local_only: false,
                    agentless: false,
                },
                ServiceConfig {
                    id: 8,
                    vip,
                    port: 53,
                    protocol: "udp".into(),
                    reject: false,
                    preferred: Vec::new(),
                    local_only: false,
                    agentless: false,
                }
            ]
        );
        assert!(
            k8s::fetch_services(&http, "http://127.0.0.1:9", None, Ipv4Addr::LOCALHOST)
                .await
                .is_err(),
            "an unreachable controller is an error, not an empty set"
        );
    });
}
