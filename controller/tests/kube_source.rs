//! The Kubernetes source against the small local fake API server
//! (`talaria-fake-apiserver`: list and watch with resourceVersions,
//! bookmarks and a `410 Gone` that forces a relist); plus Lease leader
//! election against the same server.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use talaria_controller::{
    config::{Config, LeaderElectionConfig, SwitchConfig},
    controller::{self, Context, Source},
    p4rt::fake::{self, FakeSwitch},
    source::{
        fake_lease::FakeLeases,
        kube::{elect, lead, start, Elector},
        MemorySource, Objects,
    },
};
use talaria_fake_apiserver::{router, Resource, Shared};

/// Serves the fake: the collections in `api`, the Lease in `leases`.
async fn serve_with(api: Shared, leases: &FakeLeases) -> String {
    let addr = talaria_fake_apiserver::serve(router(api).merge(leases.routes())).await;
    format!("http://{addr}")
}

async fn serve(api: Shared) -> String {
    serve_with(api, &FakeLeases::default()).await
}

fn client(url: &str) -> kube::Client {
    let cfg = kube::Config::new(url.parse().unwrap());
    kube::Client::try_from(cfg).unwrap()
}

fn service(vip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "managedFields": [{"manager": "kubectl"}]},
        "spec": {"clusterIP": vip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}], "selector": {"app": "web"}}})
}

fn slice(ips: &[&str]) -> Value {
    let eps: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "nodeName": "n1"}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": eps})
}

fn node() -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.11"}]}})
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn backends(src: &dyn Source) -> usize {
    src.model().ports.values().map(|p| p.active.len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflectors_list_watch_bookmark_and_relist_on_410() {
    let api: Shared = Arc::default();
    {
        let mut a = api.lock().unwrap();
        a.put_silently(Resource::Services, service("10.96.0.10"));
        a.put_silently(Resource::Nodes, node());
        a.put_silently(Resource::EndpointSlices, slice(&["10.244.1.5"]));
    }
    let url = serve(api.clone()).await;
    let (src, run) = start(client(&url));
    let task = tokio::spawn(run);
    wait_for("initial list", || src.is_ready()).await;
    let m = src.model();
    assert_eq!(m.ports.len(), 1);
    assert_eq!(backends(src.as_ref()), 1);
    assert!(m.skipped.is_empty(), "{:?}", m.skipped);

    // Watch event: a second endpoint.
    wait_for("watchers connected", || {
        let a = api.lock().unwrap();
        [
            Resource::Services,
            Resource::EndpointSlices,
            Resource::Nodes,
        ]
        .into_iter()
        .all(|r| a.watchers(r) > 0)
    })
    .await;
    api.lock().unwrap().put(
        Resource::EndpointSlices,
        slice(&["10.244.1.5", "10.244.1.6"]),
    );
    wait_for("watch ADDED/MODIFIED applied", || {
        backends(src.as_ref()) == 2
    })
    .await;

    // A bookmark moves the resourceVersion on and changes nothing.
    api.lock().unwrap().bookmark(Resource::EndpointSlices);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(backends(src.as_ref()), 2);

    // A change the watch never reports, then 410 Gone: the reflector must
    // relist and pick the change up.
    let lists_before = api.lock().unwrap().lists[&Resource::Services];
    {
        let mut a = api.lock().unwrap();
        a.put_silently(Resource::Services, service("10.96.0.99"));
        a.send(
            Resource::Services,
            json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410, "message": "too old resource version"}}),
        );
    }
    wait_for("relist after 410", || {
        src.model()
            .ports
            .keys()
            .any(|k| k.vip == "10.96.0.99".parse::<std::net::IpAddr>().unwrap())
    })
    .await;
    assert!(api.lock().unwrap().lists[&Resource::Services] > lists_before);
    task.abort();
}

fn service_cidr(name: &str, cidrs: &[&str]) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": {"name": name}, "spec": {"cidrs": cidrs}})
}

/// Services and EndpointSlices are watched with kube-proxy's label
/// selector; ServiceCIDRs are watched and reach the model, incrementally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_proxy_selector_and_service_cidrs() {
    let api: Shared = Arc::default();
    {
        let mut a = api.lock().unwrap();
        a.put_silently(Resource::Services, service("10.96.0.10"));
        a.put_silently(Resource::Nodes, node());
        a.put_silently(Resource::EndpointSlices, slice(&["10.244.1.5"]));
        a.put_silently(
            Resource::ServiceCidrs,
            service_cidr("kubernetes", &["10.96.0.0/12"]),
        );
    }
    let url = serve(api.clone()).await;
    let (src, run) = start(client(&url));
    let task = tokio::spawn(run);
    wait_for("initial list", || src.is_ready()).await;
    wait_for("ServiceCIDRs listed", || {
        !src.model().service_cidrs.is_empty()
    })
    .await;
    let mut m = src.model();
    let cidrs = |m: &talaria_controller::model::Model| -> Vec<String> {
        m.service_cidrs.iter().map(ToString::to_string).collect()
    };
    assert_eq!(cidrs(&m), ["10.96.0.0/12"]);
    {
        let a = api.lock().unwrap();
        for kind in [Resource::Services, Resource::EndpointSlices] {
            assert_eq!(
                a.label_selectors.get(&kind).map(String::as_str),
                Some(talaria_controller::model::KUBE_PROXY_LABEL_SELECTOR),
                "{kind:?}"
            );
        }
        assert!(!a.label_selectors.contains_key(&Resource::Nodes));
    }

    // A second ServiceCIDR arrives by watch: an incremental update takes it.
    let _ = src.update_model(&mut m, false);
    wait_for("ServiceCIDR watch connected", || {
        api.lock().unwrap().watchers(Resource::ServiceCidrs) > 0
    })
    .await;
    api.lock().unwrap().put(
        Resource::ServiceCidrs,
        service_cidr("extra", &["10.100.0.0/16", "fd00::/108"]),
    );
    wait_for("ServiceCIDR watch event applied", || {
        let _ = src.update_model(&mut m, false);
        m.service_cidrs.len() == 3
    })
    .await;
    assert_eq!(cidrs(&m), ["10.96.0.0/12", "10.100.0.0/16", "fd00::/108"]);
    task.abort();
}

type LeaseApi = kube::Api<k8s_openapi::api::coordination::v1::Lease>;

async fn lease_api(leases: &FakeLeases) -> LeaseApi {
    let url = serve_with(Arc::default(), leases).await;
    kube::Api::namespaced(client(&url), "talaria-system")
}

fn lease_cfg(lease: u32, renew: u32, retry: u32) -> LeaderElectionConfig {
    let mut c = LeaderElectionConfig::new("talaria-system", "talaria-controller");
    c.lease_seconds = lease;
    c.renew_deadline_seconds = renew;
    c.retry_period_seconds = retry;
    c.validate().unwrap();
    c
}

fn lease_held_by(holder: &str, renew_time: Value) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "talaria-controller", "namespace": "talaria-system"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
            "renewTime": renew_time, "acquireTime": renew_time, "leaseTransitions": 0},
    })
}

fn micro(t: k8s_openapi::jiff::Timestamp) -> Value {
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(t)).unwrap()
}

fn now_micro() -> Value {
    micro(k8s_openapi::jiff::Timestamp::now())
}

const S: Duration = Duration::from_secs(1);

/// client-go's `tryAcquireOrRenew`: a standby takes the Lease only once
/// the record has not changed for the lease duration, on its own clock
/// (`now` is given, so no test sleeps); transitions count; the holder
/// renews; the old holder sees it lost.
#[tokio::test]
async fn lease_acquire_renew_and_expiry_by_our_clock() {
    let leases = FakeLeases::default();
    let api = lease_api(&leases).await;
    let cfg = lease_cfg(15, 10, 2);
    let mut a = Elector::new(api.clone(), cfg.clone(), "a");
    let mut b = Elector::new(api, cfg, "b");
    let t0 = tokio::time::Instant::now();
    assert!(a.try_acquire_or_renew(t0).await.unwrap(), "a creates it");
    assert!(!b.try_acquire_or_renew(t0).await.unwrap(), "b must wait");
    assert!(a.try_acquire_or_renew(t0 + S).await.unwrap(), "a renews");
    // b sees the renewal at t0 + 2 s: the lease runs from there.
    assert!(!b.try_acquire_or_renew(t0 + 2 * S).await.unwrap());
    assert!(!b.try_acquire_or_renew(t0 + 16 * S).await.unwrap());
    assert_eq!(leases.holder(), "a");
    assert!(a.is_leader());
    assert!(
        b.try_acquire_or_renew(t0 + 17 * S + S / 10).await.unwrap(),
        "15 s after b saw the last change, b takes it"
    );
    let l = leases.state().lease.clone().unwrap();
    assert_eq!(l["spec"]["holderIdentity"], "b");
    assert_eq!(l["spec"]["leaseTransitions"], 1);
    assert_eq!(l["spec"]["leaseDurationSeconds"], 15);
    // a's next attempt finds b's fresh record: a lost it.
    assert!(!a.try_acquire_or_renew(t0 + 18 * S).await.unwrap());
    assert!(!a.is_leader());
    assert_eq!(a.observed_holder(), "b");
    // b renews, keeping its acquire time and the transition count.
    let acquired = l["spec"]["acquireTime"].clone();
    assert!(b.try_acquire_or_renew(t0 + 19 * S).await.unwrap());
    let l = leases.state().lease.clone().unwrap();
    assert_eq!(l["spec"]["acquireTime"], acquired);
    assert_eq!(l["spec"]["leaseTransitions"], 1);
    // Released: the holder is cleared and a takes it at once.
    b.release().await.unwrap();
    assert_eq!(leases.holder(), "");
    assert!(a.try_acquire_or_renew(t0 + 20 * S).await.unwrap());
    assert_eq!(leases.holder(), "a");
}

/// The holder's renewTime is its own wall clock: never compared with ours.
/// A holder an hour ahead that stopped renewing loses the Lease a lease
/// duration after we last saw it change; a holder an hour behind that
/// keeps renewing keeps it.
#[tokio::test]
async fn a_holder_whose_clock_is_far_off_is_judged_by_our_clock() {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    let hour = SignedDuration::from_hours(1);
    let leases = FakeLeases::default();
    let api = lease_api(&leases).await;
    let mut me = Elector::new(api, lease_cfg(15, 10, 2), "me");
    let t0 = tokio::time::Instant::now();

    // Ahead by an hour, silent.
    leases.put(lease_held_by("ahead", micro(Timestamp::now() + hour)));
    assert!(!me.try_acquire_or_renew(t0).await.unwrap());
    assert!(!me.try_acquire_or_renew(t0 + 14 * S).await.unwrap());
    assert!(
        me.try_acquire_or_renew(t0 + 15 * S + S / 10).await.unwrap(),
        "a silent holder's Lease expires by our clock, whatever its renewTime"
    );

    // Behind by an hour, renewing every 2 s (each renewal a new record).
    let mut other = Elector::new(
        lease_api(&leases).await,
        lease_cfg(15, 10, 2),
        "other-observer",
    );
    let _ = other.try_acquire_or_renew(t0).await;
    leases.put(lease_held_by("behind", micro(Timestamp::now() - hour)));
    let t1 = t0 + 20 * S;
    for i in 0..20u32 {
        let mut l = leases.state().lease.clone().unwrap();
        l["spec"]["renewTime"] =
            micro(Timestamp::now() - hour + SignedDuration::from_secs(i.into()));
        leases.put(l);
        assert!(
            !me.try_acquire_or_renew(t1 + 2 * i * S).await.unwrap(),
            "a renewing holder keeps its Lease, whatever its renewTime ({i})"
        );
    }
    assert_eq!(leases.holder(), "behind");
}

/// client-go's renew loop: a leader whose Lease requests hang (bounded by
/// the retry period each) stops leading within the renew deadline of its
/// last renewal, before a standby could take over (a lease duration after
/// that renewal at the earliest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_stops_within_the_renew_deadline() {
    let leases = FakeLeases::default();
    let api = lease_api(&leases).await;
    let cfg = lease_cfg(3, 2, 1);
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(lead(Elector::new(api, cfg.clone(), "a"), move |held| {
        tx.send_replace(held);
    }));
    tokio::time::timeout(10 * S, rx.wait_for(|l| *l))
        .await
        .expect("leads")
        .unwrap();
    // Renewals go on every retry period.
    let writes = leases.state().writes;
    tokio::time::sleep(cfg.retry_period() * 3).await;
    assert!(leases.state().writes >= writes + 2, "renewing");
    // The API server hangs from now on.
    let hung = Instant::now();
    let last_write = {
        let mut st = leases.state();
        st.hang = true;
        st.last_write.expect("written")
    };
    tokio::time::timeout(10 * S, rx.wait_for(|l| !*l))
        .await
        .expect("stepped down")
        .unwrap();
    let stopped = Instant::now();
    assert!(
        stopped - last_write < cfg.lease_duration(),
        "stopped {:?} after its last renewal: a standby could have taken over",
        stopped - last_write
    );
    assert!(
        stopped - hung >= cfg.renew_deadline() - cfg.retry_period() - S / 2,
        "stepped down early: {:?}",
        stopped - hung
    );
    task.abort();
}

/// The binary's wiring (`elect`): a replica that does not hold the Lease
/// plans, is ready (leadership is not readiness), reads the switch but never
/// writes to it; once the holder stops renewing it takes over and syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes() {
    let leases = FakeLeases::default();
    let mut l = lease_held_by("other", now_micro());
    l["spec"]["leaseDurationSeconds"] = json!(3);
    leases.put(l);
    let url = serve_with(Arc::default(), &leases).await;

    let switch = FakeSwitch::default();
    let server = fake::spawn(switch.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let src = MemorySource::new();
    let mut objects = Objects::default();
    objects.put_node(serde_json::from_value(node()).unwrap());
    objects.put_service(serde_json::from_value(service("10.96.0.10")).unwrap());
    objects.put_slice(serde_json::from_value(slice(&["10.244.1.5"])).unwrap());
    src.replace(objects);
    let ctx = context(&server, &src, Duration::from_millis(100));
    let mut cfg = lease_cfg(3, 2, 1);
    cfg.identity = Some("me".into());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(elect(&ctx, client(&url), cfg));
    controller::spawn(&ctx, &mut tasks);

    // "other" keeps renewing: we try (and fail) to take the Lease a few
    // times, plan meanwhile, and never touch the switch.
    let gets = leases.state().gets;
    wait_for("three lease attempts and a plan", || {
        let mut l = leases.state().lease.clone().unwrap();
        l["spec"]["renewTime"] = now_micro();
        leases.put(l);
        leases.state().gets >= gets + 3 && ctx.version() > 0
    })
    .await;
    assert!(!ctx.is_leader());
    assert_eq!(ctx.ready(), Ok(()), "a standby with a plan is ready");
    assert_eq!(
        switch.state.lock().unwrap().write_rpcs,
        0,
        "a follower wrote"
    );
    assert!(switch.state.lock().unwrap().pipeline.is_none());
    assert_eq!(ctx.switches[0].status.read().unwrap().sessions, 0);
    assert_eq!(leases.holder(), "other");

    // "other" stops renewing; its Lease expires and we take over.
    wait_for("leadership and a synced switch", || {
        ctx.is_leader() && ctx.ready().is_ok()
    })
    .await;
    assert_eq!(leases.holder(), "me");
    assert_eq!(ctx.takeovers(), 1);
    let entries: usize = switch
        .state
        .lock()
        .unwrap()
        .tables
        .values()
        .map(|t| t.len())
        .sum();
    assert_eq!(entries, ctx.desired_len());
    tasks.abort_all();
}

fn context(server: &fake::FakeServer, src: &Arc<MemorySource>, follow: Duration) -> Arc<Context> {
    let p4info =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../p4/talaria.p4info.txtpb");
    let config = Config {
        switches: vec![SwitchConfig {
            id: "s1".into(),
            address: format!("http://{}", server.addr),
            device_id: 1,
        }],
        p4info: p4info.clone(),
        backoff_min_ms: Duration::from_millis(50),
        backoff_max_ms: Duration::from_millis(200),
        follow_ms: follow,
        ..Config::default()
    };
    let info = talaria_p4rt::p4info::load(&p4info).unwrap();
    Context::new(config, src.clone(), src.changed.clone(), info, Vec::new()).unwrap()
}

/// The `service_v4` and `backend` entries in `switch`, as written (ids
/// included).
fn id_tables(switch: &FakeSwitch) -> Vec<BTreeMap<Vec<u8>, String>> {
    let st = switch.state.lock().unwrap();
    [
        talaria_tables::Table::ServiceV4,
        talaria_tables::Table::Backend,
    ]
    .iter()
    .map(|t| {
        st.tables
            .get(&t.id())
            .into_iter()
            .flatten()
            .map(|(k, e)| (k.clone(), format!("{e:?}")))
            .collect()
    })
    .collect()
}

/// The service id a context planned for `vip`.
fn planned_sid(ctx: &Context, vip: &str) -> Option<u16> {
    ctx.planned_ports()
        .iter()
        .find(|p| p.key.vip.to_string() == vip)
        .map(|p| p.service_id)
}

/// Issue 11 item 8: a standby whose own plan gave the Service other ids
/// takes over without changing the ids the old leader wrote: it adopts
/// them before writing, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_adopts_the_ids_in_the_switch() {
    let switch = FakeSwitch::default();
    let server = fake::spawn(switch.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let web = |src: &MemorySource, extra: bool| {
        let mut o = Objects::default();
        o.put_node(serde_json::from_value(node()).unwrap());
        if extra {
            // Planned first (a lower VIP): it takes service id 1.
            let mut s = service("10.96.0.5");
            s["metadata"]["name"] = json!("first");
            o.put_service(serde_json::from_value(s).unwrap());
        }
        o.put_service(serde_json::from_value(service("10.96.0.10")).unwrap());
        o.put_slice(serde_json::from_value(slice(&["10.244.1.5", "10.244.1.6"])).unwrap());
        src.replace(o);
    };

    // The standby starts first, on an empty switch, and plans its own ids;
    // it reads the switch only once (a follow period of an hour).
    let leases = FakeLeases::default();
    let mut l = lease_held_by("old", now_micro());
    l["spec"]["leaseDurationSeconds"] = json!(3);
    leases.put(l);
    let url = serve_with(Arc::default(), &leases).await;
    let src_b = MemorySource::new();
    web(&src_b, true);
    let b = context(&server, &src_b, Duration::from_secs(3600));
    let mut cfg = lease_cfg(3, 2, 1);
    cfg.identity = Some("b".into());
    let mut tasks_b = tokio::task::JoinSet::new();
    tasks_b.spawn(elect(&b, client(&url), cfg));
    controller::spawn(&b, &mut tasks_b);
    wait_for("the standby's plan", || {
        b.version() > 0 && b.switches[0].status.read().unwrap().follower_reads > 0
    })
    .await;
    web(&src_b, false);

    // The old leader (no election: always leads) writes its own ids.
    let src_a = MemorySource::new();
    web(&src_a, false);
    let a = context(&server, &src_a, Duration::from_secs(3600));
    let mut tasks_a = tokio::task::JoinSet::new();
    controller::spawn(&a, &mut tasks_a);
    wait_for("the old leader in sync", || a.ready().is_ok()).await;
    let before = id_tables(&switch);
    assert_eq!(before[0].len(), 1, "one service_v4 entry");
    assert_eq!(before[1].len(), 2, "two backend entries");
    assert_eq!(planned_sid(&a, "10.96.0.10"), Some(1));
    assert_eq!(
        planned_sid(&b, "10.96.0.10"),
        Some(2),
        "the standby's own id differs"
    );

    // The old leader dies; its Lease expires; the standby takes over.
    tasks_a.abort_all();
    while tasks_a.join_next().await.is_some() {}
    let writes = switch.state.lock().unwrap().write_rpcs;
    wait_for("the standby leading and in sync", || {
        b.is_leader() && b.ready().is_ok()
    })
    .await;
    assert_eq!(b.takeovers(), 1);
    assert_eq!(planned_sid(&b, "10.96.0.10"), Some(1), "adopted");
    assert_eq!(id_tables(&switch), before, "ids changed");
    let st = b.switches[0].status.read().unwrap().clone();
    assert_eq!(st.updates_written, 0, "the takeover wrote: {st:?}");
    assert_eq!(switch.state.lock().unwrap().write_rpcs, writes);
    tasks_b.abort_all();
}
