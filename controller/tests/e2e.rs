//! End-to-end over real sockets: the controller (in-process) against the
//! in-memory P4Runtime server (`p4rt::fake`) over gRPC, the REST API over
//! HTTP, and the `talariactl` binary.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use talaria_controller::{
    config::{Config, SwitchConfig},
    controller::{self, Context},
    diff::{Batch, Op},
    p4rt::{
        client::ConnectParams,
        fake::{self, FakeSwitch},
        SwitchConn,
    },
    plan::FabricConfig,
    source::{MemorySource, Objects},
};
use talaria_tables::{Entry, Table};

mod openapi;

fn p4info_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../p4/talaria.p4info.txtpb")
}

fn objects(endpoints: &[&str]) -> Objects {
    let mut y = String::from(
        r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.0.11}]}
---
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: kubernetes}
spec: {cidrs: [10.96.0.0/12, "fd00:10:96::/108"]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  externalIPs: [203.0.113.7, "2001:db8::7"]
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
"#,
    );
    for e in endpoints {
        y.push_str(&format!("- {{addresses: [{e}], nodeName: n1}}\n"));
    }
    if endpoints.is_empty() {
        y.push_str("  []\n");
    }
    let mut o = Objects::default();
    for doc in serde_yaml::Deserializer::from_str(&y) {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
        match v["kind"].as_str().unwrap() {
            "Node" => o.put_node(serde_yaml::from_value::<Node>(v).unwrap()),
            "Service" => o.put_service(serde_yaml::from_value::<Service>(v).unwrap()),
            "ServiceCIDR" => o.put_service_cidr(serde_yaml::from_value(v).unwrap()),
            _ => o.put_slice(serde_yaml::from_value::<EndpointSlice>(v).unwrap()),
        }
    }
    o
}

/// The timestamp-cookie key file every test controller reads, written once.
fn ts_cookie_key_file() -> std::path::PathBuf {
    static FILE: std::sync::OnceLock<tempfile::NamedTempFile> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, b"# current\n5f0c9e2ab1d34e7788aa01c2d3e4f506\n")
            .unwrap();
        f
    })
    .path()
    .to_path_buf()
}

fn config(addr: SocketAddr) -> Config {
    Config {
        ts_cookie_key_file: Some(ts_cookie_key_file()),
        switches: vec![SwitchConfig {
            id: "s1".into(),
            address: format!("http://{addr}"),
            device_id: 1,
        }],
        p4info: p4info_path(),
        fabric: FabricConfig {
            switch_addrs: vec!["192.168.0.1".parse().unwrap()],
            ..FabricConfig::default()
        },
        backoff_min_ms: Duration::from_millis(50),
        backoff_max_ms: Duration::from_millis(200),
        ..Config::default()
    }
}

fn start(cfg: Config, src: Arc<MemorySource>) -> (Arc<Context>, tokio::task::JoinSet<()>) {
    let info = talaria_p4rt::p4info::load(&cfg.p4info).unwrap();
    let ctx = Context::new(cfg, src.clone(), src.changed.clone(), info, Vec::new()).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    controller::spawn(&ctx, &mut tasks);
    (ctx, tasks)
}

fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn fake_count(f: &FakeSwitch) -> usize {
    f.state
        .lock()
        .unwrap()
        .tables
        .values()
        .map(|t| t.len())
        .sum()
}

fn fake_applied(f: &FakeSwitch) -> u64 {
    f.state.lock().unwrap().applied
}

/// A dual-stack Service with one IPv4 and two IPv6 endpoints, on a Node
/// with an IPv6 pod CIDR.
fn dual_stack_objects() -> Objects {
    let mut o = Objects::default();
    let y = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, "fd00:10:244:1::/64"]}
status: {addresses: [{type: InternalIP, address: 192.168.0.11}]}
---
apiVersion: v1
kind: Service
metadata: {name: dual, namespace: default}
spec:
  clusterIPs: [10.96.0.20, "fd00:96::a"]
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: RequireDualStack
  selector: {app: dual}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dual-4, namespace: default, labels: {kubernetes.io/service-name: dual}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.1.5], nodeName: n1}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dual-6, namespace: default, labels: {kubernetes.io/service-name: dual}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: ["fd00:10:244:1::5"], nodeName: n1}
- {addresses: ["fd00:10:244:1::6"], nodeName: n1}
"#;
    for doc in serde_yaml::Deserializer::from_str(y) {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
        match v["kind"].as_str().unwrap() {
            "Node" => o.put_node(serde_yaml::from_value::<Node>(v).unwrap()),
            "Service" => o.put_service(serde_yaml::from_value::<Service>(v).unwrap()),
            _ => o.put_slice(serde_yaml::from_value::<EndpointSlice>(v).unwrap()),
        }
    }
    o
}

/// A dual-stack Service end to end: the IPv6 tables written to a switch
/// (and not again by a restarted controller), dumped by REST and
/// `talariactl` with IPv6 addresses, and the IPv6 VIP in `/v1/services`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_service_tables_rest_and_cli() {
    init_log();
    let fake = FakeSwitch::default();
    let server = fake::spawn(fake.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let src = MemorySource::new();
    src.replace(dual_stack_objects());
    let (ctx, mut tasks) = start(config(server.addr), src.clone());
    wait_for("first sync", || ctx.ready().is_ok()).await;
    assert_eq!(fake_count(&fake), ctx.desired_len());
    let len = |t: Table| {
        fake.state
            .lock()
            .unwrap()
            .tables
            .get(&t.id())
            .map_or(0, |t| t.len())
    };
    assert_eq!(len(Table::ServiceV6), 1);
    assert_eq!(len(Table::BackendV6), 2);
    assert_eq!(len(Table::PodNodeV6), 1);
    assert_eq!((len(Table::ServiceV4), len(Table::Backend)), (1, 1));
    assert_eq!(len(Table::LbBucket), 32, "16 buckets per family");

    // A restarted controller adopts the IPv6 ids too and writes nothing.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let rpcs = fake.state.lock().unwrap().write_rpcs;
    let (ctx, mut tasks) = start(config(server.addr), src.clone());
    wait_for("sync after controller restart", || ctx.ready().is_ok()).await;
    assert_eq!(fake.state.lock().unwrap().write_rpcs, rpcs, "restart wrote");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    tasks.spawn({
        let ctx = ctx.clone();
        async move {
            let _ = talaria_controller::api::serve(ctx, listener).await;
        }
    });
    let base = format!("http://{api}");
    let spec = Arc::new(openapi::Spec::load());
    let get = |p: &str| {
        let url = format!("{base}{p}");
        let (spec, template) = (spec.clone(), spec.template(p));
        async move {
            let r = reqwest::get(&url).await.unwrap();
            let (code, body) = (r.status().as_u16(), r.text().await.unwrap());
            spec.check(&template, code, &body);
            (code, body)
        }
    };
    let (code, body) = get("/v1/services").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v[0]["cluster_ips"],
        serde_json::json!(["10.96.0.20", "fd00:96::a"])
    );
    let vips: Vec<&str> = v[0]["data_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"]["vip"].as_str().unwrap())
        .collect();
    assert_eq!(vips, ["10.96.0.20", "fd00:96::a"], "{body}");
    let v6 = &v[0]["data_path"][1];
    let ips: BTreeSet<&str> = v6["active"]
        .as_object()
        .unwrap()
        .values()
        .map(|b| b["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["fd00:10:244:1::5", "fd00:10:244:1::6"].into());
    let (code, body) = get("/v1/switches/s1/tables/service_v6").await;
    assert_eq!(code, 200, "{body}");
    let t: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(t["entries"][0]["match"]["vip"], "fd00:96::a", "{body}");
    assert_eq!(t["entries"][0]["action"], "set_service", "{body}");
    let (_, body) = get("/v1/switches/s1/tables/backend_v6").await;
    let t: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        t["entries"][0]["params"]["backend_ip"], "fd00:10:244:1::5",
        "{body}"
    );
    assert_eq!(
        t["entries"][0]["params"]["node_ip"], "192.168.0.11",
        "{body}"
    );
    let (_, body) = get("/v1/switches/s1/tables/pod_node_v6").await;
    assert!(body.contains("fd00:10:244:1::/64"), "{body}");
    let (_, body) = get("/v1/status").await;
    assert!(!body.contains("not in data path"), "{body}");

    let cli = env!("CARGO_BIN_EXE_talariactl");
    let base2 = base.clone();
    let out = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let out = std::process::Command::new(cli)
                .arg("--server")
                .arg(&base2)
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        (
            run(&["tables", "dump", "--table", "service_v6"]),
            run(&["services"]),
        )
    })
    .await
    .unwrap();
    assert!(out.0.contains("fd00:96::a"), "{}", out.0);
    assert!(out.1.contains("[fd00:96::a]:80/TCP"), "{}", out.1);
    tasks.abort_all();
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_restart_resync_rest_and_cli() {
    init_log();
    let fake = FakeSwitch::default();
    let server = fake::spawn(fake.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.addr;
    let src = MemorySource::new();
    src.replace(objects(&["10.244.1.5", "10.244.1.6", "10.244.1.7"]));
    let (ctx, mut tasks) = start(config(addr), src.clone());
    wait_for("first sync", || ctx.ready().is_ok()).await;
    let want = ctx.desired_len();
    // 1 switch_addr + 1 spoofed_source (the switch address) + 2 pod_node
    // (the pod CIDR, the node's /32) + 1 tunnel_source (the node) + 3
    // backend + three times (the ClusterIP, the node's nodePort, the
    // externalIP) 3 cookie + 16 buckets + 1 service (no routes, so no
    // tunnel_peer) + twice (the nodePort, the externalIP: TCP ports outside
    // clients reach) 3 ts_cookie.
    assert_eq!(want, 74);
    let ts_cookies = ctx.planned.read().unwrap().planner.desired().counts()[&Table::TsCookie];
    assert_eq!(ts_cookies, 6);
    assert_eq!(fake_count(&fake), want);
    assert!(
        fake.state.lock().unwrap().pipeline.is_some(),
        "pipeline pushed"
    );
    assert!(ctx.switches[0].status.read().unwrap().pushed_pipeline);

    // Controller restart: a new controller adopts the ids and writes nothing.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let applied = fake_applied(&fake);
    let rpcs = fake.state.lock().unwrap().write_rpcs;
    let (ctx, mut tasks) = start(config(addr), src.clone());
    wait_for("sync after controller restart", || ctx.ready().is_ok()).await;
    assert_eq!(fake_applied(&fake), applied, "restart rewrote entries");
    assert_eq!(
        fake.state.lock().unwrap().write_rpcs,
        rpcs,
        "restart issued writes"
    );
    assert!(!ctx.switches[0].status.read().unwrap().pushed_pipeline);

    // Incremental: one endpoint goes away.
    src.replace(objects(&["10.244.1.5", "10.244.1.6"]));
    let backend_id = Table::Backend.id();
    wait_for("endpoint out of the plan", || {
        let ports = ctx.planned_ports();
        !ports.is_empty() && ports.iter().all(|p| p.active.len() == 2)
    })
    .await;
    wait_for("synced", || ctx.ready().is_ok()).await;
    assert_eq!(fake_count(&fake), ctx.desired_len());
    // It takes no new flows, but its cookies stay valid through the quarantine.
    let backends = fake.state.lock().unwrap().tables[&backend_id].len();
    assert_eq!(backends, 3, "three backends");

    // Switch restart: empty tables, no pipeline; the controller reconnects,
    // pushes the pipeline and rewrites everything.
    server.stop();
    let fake2 = FakeSwitch::default();
    // The old server's socket closes in the background: retry the bind.
    let t0 = Instant::now();
    let server2 = loop {
        match fake::spawn(fake2.clone(), addr) {
            Ok(s) => break s,
            Err(e) if t0.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("rebinding {addr}: {e}"),
        }
    };
    let want = ctx.desired_len();
    wait_for("resync after switch restart", || fake_count(&fake2) == want).await;
    assert!(fake2.state.lock().unwrap().pipeline.is_some());
    wait_for("reconnect counted", || {
        ctx.metrics
            .render()
            .contains("talaria_reconnects_total{switch=\"s1\"} 1")
    })
    .await;

    // REST over real HTTP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    tasks.spawn({
        let ctx = ctx.clone();
        async move {
            let _ = talaria_controller::api::serve(ctx, listener).await;
        }
    });
    let base = format!("http://{api}");
    // Every response is checked against controller/openapi.yaml.
    let spec = Arc::new(openapi::Spec::load());
    let get = |p: &str| {
        let url = format!("{base}{p}");
        let (spec, template) = (spec.clone(), spec.template(p));
        async move {
            let r = reqwest::get(&url).await.unwrap();
            let (code, body) = (r.status().as_u16(), r.text().await.unwrap());
            spec.check(&template, code, &body);
            (code, body)
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok".into()));
    wait_for("ready", || ctx.ready().is_ok()).await;
    assert_eq!(get("/readyz").await.0, 200);
    let (code, body) = get("/v1/services").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["service"]["name"], "web");
    // What the node agent's Kubernetes mode reads (host-ebpf k8s.rs).
    let port = &v[0]["data_path"][0];
    assert_eq!(port["key"]["vip"], "10.96.0.10");
    assert_eq!(port["key"]["port"], 80);
    assert_eq!(port["key"]["proto"], "TCP");
    assert!(
        port["service_id"].as_u64().is_some_and(|id| id > 0),
        "{body}"
    );
    assert_eq!(port["frontend"], "cluster_ip", "{body}");
    // The node's nodePort and the externalIP: keys of their own, each with
    // its own service id.
    let node_port = &v[0]["data_path"][1];
    assert_eq!(node_port["key"]["vip"], "192.168.0.11", "{body}");
    assert_eq!(node_port["key"]["port"], 30080, "{body}");
    assert_eq!(node_port["frontend"], "node_port", "{body}");
    assert_eq!(v[0]["external_ips"], serde_json::json!(["203.0.113.7"]));
    let ext = &v[0]["data_path"][2];
    assert_eq!(ext["key"]["vip"], "203.0.113.7", "{body}");
    assert_eq!(ext["frontend"], "external", "{body}");
    let ids: BTreeSet<_> = [port, node_port, ext]
        .map(|p| p["service_id"].as_u64())
        .into();
    assert_eq!(ids.len(), 3, "{body}");
    // Long poll (node agents): an answer for the plan version the caller
    // holds waits until the plan changes, then shows the new one.
    let version = |r: &reqwest::Response| -> u64 {
        r.headers()[talaria_controller::api::PLAN_VERSION_HEADER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let held = version(&reqwest::get(format!("{base}/v1/services")).await.unwrap());
    let url = format!("{base}/v1/services?after={held}&wait_ms=60000");
    let poll = tokio::spawn(async move {
        let r = reqwest::get(&url).await.unwrap();
        let answered = Instant::now();
        (
            answered,
            version(&r),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the poll waits while nothing changes");
    let changed = Instant::now();
    src.replace(objects(&["10.244.1.5"]));
    let (answered, now, v) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the change wakes the poll")
        .unwrap();
    assert!(now > held, "{now} after {held}");
    let active = v[0]["data_path"][0]["active"].as_object().unwrap().len();
    assert_eq!(active, 1, "the answer shows the new plan");
    eprintln!(
        "long poll answered {:.1} ms after the change",
        (answered - changed).as_secs_f64() * 1e3
    );
    // A version the controller does not hold (a restarted controller's
    // node agent) is answered at once.
    let stale = tokio::time::timeout(
        Duration::from_secs(10),
        reqwest::get(format!(
            "{base}/v1/services?after={}&wait_ms=60000",
            now + 1000
        )),
    )
    .await
    .expect("answered at once")
    .unwrap();
    assert_eq!(version(&stale), now);
    // With the epoch of the version held, the answer is a delta: the
    // Services changed after it. Another epoch's version gets everything.
    let epoch: u64 = stale.headers()[talaria_controller::api::PLAN_EPOCH_HEADER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let poll_answer = |query: String| {
        let (url, spec) = (format!("{base}/v1/services?{query}"), spec.clone());
        async move {
            let r = reqwest::get(&url).await.unwrap();
            let kind = r.headers()[talaria_controller::api::ANSWER_HEADER]
                .to_str()
                .unwrap()
                .to_string();
            let (v, body) = (version(&r), r.text().await.unwrap());
            spec.check("/v1/services", 200, &body);
            (
                kind,
                v,
                serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            )
        }
    };
    let (kind, v, delta) = poll_answer(format!("after={held}&epoch={epoch}")).await;
    assert_eq!((kind.as_str(), v), ("delta", now));
    assert_eq!(delta["services"][0]["service"]["name"], "web", "{delta}");
    assert_eq!(delta["services"].as_array().unwrap().len(), 1, "{delta}");
    assert_eq!(delta["removed"], serde_json::json!([]));
    let (kind, _, delta) = poll_answer(format!("after={now}&epoch={epoch}&wait_ms=100")).await;
    assert_eq!(kind, "delta");
    assert_eq!(
        delta,
        serde_json::json!({"services": [], "removed": []}),
        "nothing new"
    );
    let (kind, _, full) = poll_answer(format!("after={held}&epoch={}", epoch ^ 1)).await;
    assert_eq!(kind, "full", "another controller's version");
    assert_eq!(full[0]["service"]["name"], "web");
    let (code, body) = get("/v1/services/default/web").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(get("/v1/services/default/nope").await.0, 404);
    let (_, body) = get("/v1/switches").await;
    assert!(body.contains("\"connected\":true"), "{body}");
    let (code, body) = get("/v1/switches/s1/tables/service_v4").await;
    assert_eq!(code, 200);
    let t: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(t["key"], serde_json::json!(["vip", "port", "proto"]));
    let entries: BTreeSet<String> = t["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(
                (&e["match"]["proto"], &e["action"]),
                (&6.into(), &"set_service".into())
            );
            format!(
                "{}:{}",
                e["match"]["vip"].as_str().unwrap(),
                e["match"]["port"]
            )
        })
        .collect();
    let want = ["10.96.0.10:80", "192.168.0.11:30080", "203.0.113.7:80"];
    assert_eq!(entries, want.map(String::from).into(), "{body}");
    let (_, body) = get("/v1/switches/s1/tables").await;
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        all.as_array().unwrap().len(),
        talaria_tables::Table::ALL.len(),
        "every table of the P4Info"
    );
    assert_eq!(get("/v1/switches/s1/tables/nope").await.0, 404);
    assert_eq!(get("/v1/switches/nope/tables").await.0, 404);
    assert_eq!(get("/v1/status").await.0, 200);
    assert_eq!(
        get("/v1/service-cidrs").await,
        (200, r#"["10.96.0.0/12","fd00:10:96::/108"]"#.into())
    );
    // A new ServiceCIDR alone changes no switch entry, yet it wakes the
    // node agents' long poll: they steer the CIDRs (host-ebpf k8s.rs).
    let r = reqwest::get(format!("{base}/v1/services")).await.unwrap();
    let held = version(&r);
    let url = format!("{base}/v1/services?after={held}&wait_ms=60000");
    let poll = tokio::spawn(async move { version(&reqwest::get(&url).await.unwrap()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the poll waits while nothing changes");
    let mut o = objects(&["10.244.1.5"]);
    o.put_service_cidr(
        serde_yaml::from_str(
            "{apiVersion: networking.k8s.io/v1, kind: ServiceCIDR, metadata: {name: extra}, spec: {cidrs: [10.100.0.0/16]}}",
        )
        .unwrap(),
    );
    src.replace(o);
    let now = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("a ServiceCIDR change wakes the poll")
        .unwrap();
    assert!(now > held, "{now} after {held}");
    let r = reqwest::get(format!("{base}/v1/service-cidrs"))
        .await
        .unwrap();
    assert_eq!(version(&r), now, "the CIDRs name their plan version");
    assert_eq!(
        r.text().await.unwrap(),
        r#"["10.96.0.0/12","10.100.0.0/16","fd00:10:96::/108"]"#
    );
    let (code, body) = get("/v1/switches/s1/counters").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("drop_counter"), "{body}");
    // The fake switch counts one packet at index 1 of every counter.
    assert!(body.contains(r#""event":"cookie_hit""#), "{body}");
    let (_, metrics) = get("/metrics").await;
    for m in [
        "talaria_sync_latency_seconds_bucket",
        "talaria_table_entries{",
        "talaria_write_errors_total",
        "talaria_reconnects_total",
    ] {
        assert!(metrics.contains(m), "missing {m}");
    }

    // CLI over real HTTP.
    let cli = env!("CARGO_BIN_EXE_talariactl");
    let base2 = base.clone();
    let run = move |args: &[&str]| {
        let out = std::process::Command::new(cli)
            .arg("--server")
            .arg(&base2)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = tokio::task::spawn_blocking(move || {
        (
            run(&["tables", "dump", "--table", "service_v4"]),
            run(&["tables", "dump", "--switch", "s1", "-o", "json"]),
            run(&["services"]),
            run(&["status"]),
            run(&["counters", "-o", "json"]),
        )
    })
    .await
    .unwrap();
    assert!(
        out.0.contains("vip           port   proto  action"),
        "{}",
        out.0
    );
    assert!(
        out.0.contains("10.96.0.10    80     6      set_service("),
        "{}",
        out.0
    );
    let j: serde_json::Value = serde_json::from_str(&out.1).unwrap();
    assert_eq!(
        j["s1"].as_array().unwrap().len(),
        talaria_tables::Table::ALL.len()
    );
    assert!(out.2.contains("default/web"), "{}", out.2);
    assert!(
        out.2.contains("192.168.0.11:30080/TCP (nodePort)"),
        "{}",
        out.2
    );
    assert!(out.2.contains("203.0.113.7:80/TCP (external)"), "{}", out.2);
    assert!(
        out.3.contains("s1") && out.3.contains("not in data path"),
        "{}",
        out.3
    );
    let counters: serde_json::Value = serde_json::from_str(&out.4).unwrap();
    let events: Vec<&str> = counters["s1"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(name, _)| name.ends_with("lb_event_counter"))
        .unwrap()
        .1
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["event"].as_str())
        .collect();
    assert_eq!(events, ["cookie_hit"]);

    tasks.abort_all();
    drop(server2);
}

#[tokio::test]
async fn per_update_errors_are_decoded_and_handled() {
    let fake = FakeSwitch::default();
    let server = fake::spawn(fake.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.addr;
    let info = Arc::new(talaria_p4rt::p4info::load(p4info_path()).unwrap());
    let params = ConnectParams {
        address: format!("http://{addr}"),
        device_id: 1,
        election_id: 1,
        p4info: info,
        device_config: Arc::new(Vec::new()),
        timeout: Duration::from_secs(2),
    };
    let mut conn = SwitchConn::connect(&params).await.unwrap();
    assert!(conn.pushed_pipeline);
    let entries: Vec<Entry> = (1..=10)
        .map(|i| talaria_controller::entries::cookie_entry(1, i))
        .collect();
    let batch = |op, entries: &[Entry]| {
        vec![Batch {
            op,
            table: Table::CookieCheck,
            entries: entries.to_vec(),
        }]
    };
    let r = conn
        .write(&batch(Op::Insert, &entries[..5]), 3)
        .await
        .unwrap();
    assert_eq!((r.applied, r.retried, r.failed.len()), (5, 0, 0));
    // Inserting all 10: 5 hit ALREADY_EXISTS and go in as MODIFY.
    let r = conn.write(&batch(Op::Insert, &entries), 100).await.unwrap();
    assert_eq!((r.applied, r.retried, r.failed.len()), (10, 5, 0));
    // Deleting missing entries: NOT_FOUND counts as done.
    let r = conn.write(&batch(Op::Delete, &entries), 100).await.unwrap();
    let r2 = conn.write(&batch(Op::Delete, &entries), 100).await.unwrap();
    assert_eq!((r.applied, r2.applied, r2.failed.len()), (10, 10, 0));
    let (st, bad) = conn.read_state().await.unwrap();
    assert!(st.is_empty() && bad.is_empty());
    drop(server);
}

/// The same against the real switch-agent binary (memory data plane), when
/// `TALARIA_SWITCH_AGENT` names it (scripts/test.sh sets it); skipped with
/// a message otherwise, and failed under `CI=true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_switch_agent_binary() {
    let Ok(bin) = std::env::var("TALARIA_SWITCH_AGENT") else {
        talaria_preflight::skip("set TALARIA_SWITCH_AGENT=path/to/switch-agent to run");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let state = tempfile::tempdir().unwrap();
    let spawn_agent = || {
        std::process::Command::new(&bin)
            .args(["--dataplane", "memory", "--no-metrics", "--grpc-addr"])
            .arg(addr.to_string())
            .arg("--state-dir")
            .arg(state.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut agent = spawn_agent();
    let src = MemorySource::new();
    src.replace(objects(&["10.244.1.5", "10.244.1.6", "10.244.1.7"]));
    let (ctx, mut tasks) = start(config(addr), src.clone());
    wait_for("first sync", || ctx.ready().is_ok()).await;
    assert_eq!(
        ctx.switches[0].status.read().unwrap().updates_written,
        ctx.desired_len() as u64
    );

    // Controller restart: nothing rewritten.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let (ctx, mut tasks) = start(config(addr), src.clone());
    wait_for("sync after controller restart", || ctx.ready().is_ok()).await;
    assert_eq!(ctx.switches[0].status.read().unwrap().updates_written, 0);

    // switch-agent restart (memory tables lost, pipeline kept): full resync.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let mut agent = spawn_agent();
    let want = ctx.desired_len() as u64;
    wait_for("resync after switch-agent restart", || {
        let st = ctx.switches[0].status.read().unwrap();
        st.sessions >= 2 && st.updates_written == want && st.connected
    })
    .await;

    // A dual-stack Service: the IPv6 tables are taken by switch-agent, and
    // read back by a restarted controller that then writes nothing.
    src.replace(dual_stack_objects());
    wait_for("dual-stack planned", || {
        let ports = ctx.planned_ports();
        ports.len() == 2 && ports.iter().any(|p| p.key.vip.is_ipv6())
    })
    .await;
    wait_for("dual-stack synced", || ctx.ready().is_ok()).await;
    assert_eq!(ctx.switches[0].status.read().unwrap().write_errors, 0);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let (ctx, mut tasks) = start(config(addr), src.clone());
    wait_for("sync after controller restart", || ctx.ready().is_ok()).await;
    let st = ctx.switches[0].status.read().unwrap().clone();
    assert_eq!((st.updates_written, st.write_errors), (0, 0));
    tasks.abort_all();
    agent.kill().unwrap();
    let _ = agent.wait();
}
