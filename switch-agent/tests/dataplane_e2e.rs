//! End to end with the real eBPF data plane (root only; skipped otherwise):
//! entries written over P4Runtime land in the pinned BPF maps, and a
//! restarted agent (new server, data plane reopened from its pins, same
//! state directory) is still configured and Reads the entries back.
//!
//! Each test runs in its own network namespace with veth ports
//! (`TestSwitch`), cleaned up on drop, panics included. Everything runs on
//! the test thread (current-thread runtime), which is the one inside the
//! namespace.

mod common;

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use common::{
    backend, backend_entry, configured, read_entities, route, table_entries, table_filter, update,
    write_request,
};
use talaria_p4rt::p4::v1::{p4_runtime_client::P4RuntimeClient, update::Type};
use talaria_preflight::{require, LOADS_BPF};
use talaria_switch::{
    entry::{Table, Target},
    metrics::{self, Metrics},
    server::{self, Switch},
};
use talaria_switch_dataplane::{
    testing::{self, TestSwitch},
    Dataplane,
};
use tokio::sync::watch;
use tonic::transport::Channel;

struct Running {
    client: P4RuntimeClient<Channel>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(target: Arc<dyn Target>, state_dir: &std::path::Path) -> (Arc<Switch>, Running) {
    let (stop, rx) = watch::channel(false);
    let switch = Arc::new(Switch::new(1, target, Some(state_dir.into()), rx.clone()).unwrap());
    let (listener, addr) = server::bind(([127, 0, 0, 1], 0).into()).await.unwrap();
    let s = switch.clone();
    let task = tokio::spawn(async move { server::serve(s, listener, rx).await.unwrap() });
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (
        switch,
        Running {
            client: P4RuntimeClient::new(ch),
            stop,
            task,
        },
    )
}

impl Running {
    async fn stop(self) {
        drop(self.client);
        self.stop.send(true).unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// The data plane once every server task has let go of it.
async fn sole(mut dp: Arc<Dataplane>) -> Dataplane {
    for _ in 0..250 {
        match Arc::try_unwrap(dp) {
            Ok(d) => return d,
            Err(d) => dp = d,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the data plane is still shared after 5 s");
}

#[tokio::test(flavor = "current_thread")]
async fn writes_reach_the_maps_and_survive_an_agent_restart() {
    require!(LOADS_BPF);
    let mut sw = TestSwitch::new("p4rt-e2e", 2);
    let state = tempfile::tempdir().unwrap();
    let dp = Arc::new(sw.dp.take().unwrap());
    // Out of `sw` the data plane is not detached on a panic; this removes
    // its pins (maps and links) then, and `sw` deletes the namespace.
    let _pins = RemovePinsOnPanic(dp.pin_dir().to_path_buf());

    let (switch, mut run) = start(dp.clone(), state.path()).await;
    let stream = configured(&mut run.client, 1).await;
    run.client
        .write(write_request(
            1,
            vec![
                update(Type::Insert, backend(5)),
                update(Type::Insert, route("10.2.0.0/16", 2)),
            ],
        ))
        .await
        .unwrap();
    // In the BPF maps.
    assert_eq!(dp.entries(Table::Backend).unwrap(), vec![backend_entry(5)]);
    assert_eq!(dp.entries(Table::Ipv4Route).unwrap().len(), 1);
    // Kill the agent: server gone, data plane closed (maps stay pinned).
    drop(stream);
    run.stop().await;
    drop(switch);
    let config = talaria_switch_dataplane::Config {
        pin_dir: dp.pin_dir().to_path_buf(),
        ports: dp
            .ports()
            .iter()
            .map(|(p, (n, _))| (*p, n.clone()))
            .collect(),
    };
    sole(dp).await.close();

    // Start again.
    let dp = Arc::new(Dataplane::open(config).unwrap());
    let (switch, mut run) = start(dp.clone(), state.path()).await;
    assert!(switch.configured(), "the persisted pipeline counts as set");
    let got = table_entries(
        read_entities(&mut run.client, vec![table_filter(0)])
            .await
            .unwrap(),
    );
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().any(|t| t.table_id == Table::Backend.id()));
    run.stop().await;
    drop(switch);
    sw.dp = Some(sole(dp).await);
}

/// `/metrics` reports pipeline drops per ingress port and reason, read from
/// the data plane's per-CPU counters.
#[test]
fn metrics_count_drops_per_port_and_reason() {
    require!(LOADS_BPF);
    let mut sw = TestSwitch::new("p4rt-drops", 2);
    // Dropped after the switch and metrics below, panics included: then it
    // is the last owner and detaches the data plane.
    let guard = Detach(Some(Arc::new(sw.dp.take().unwrap())));
    let dp = guard.0.clone().unwrap();
    let (_stop, rx) = watch::channel(false);
    let switch = Arc::new(Switch::new(1, dp.clone(), None, rx).unwrap());
    let registry = metrics::registry(Metrics {
        switch: switch.clone(),
        ports: dp
            .ports()
            .iter()
            .map(|(p, (n, _))| format!("{p}@{n}").parse().unwrap())
            .collect(),
        sysfs_net: "/sys/class/net".into(),
        dataplane: Some(dp.clone()),
    });

    // TTL 1 is ttl_expired; a wrong IPv4 header checksum is malformed.
    // Neither can come from the stray IPv6 or ARP packets the kernel may
    // send over the veths meanwhile (those are no_route), so the counts
    // are exact. Two of the first on port 1, one of each on port 2.
    let frame = |ttl| {
        testing::eth(
            testing::mac(1),
            testing::mac(2),
            &testing::ipv4(
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2),
                ttl,
                17,
                &testing::udp(1, 2, b"x"),
            ),
        )
    };
    let expiring = frame(1);
    let mut bad = frame(64);
    bad[14 + 10] ^= 0xff;
    for (frame, port) in [(&expiring, 1), (&expiring, 1), (&expiring, 2), (&bad, 2)] {
        assert_eq!(
            dp.test_run(frame, Some(port)).unwrap().retval,
            2,
            "TC_ACT_SHOT"
        );
    }

    let text = metrics::render(&registry);
    for line in [
        "talaria_switch_port_drops_total{port=\"1\",interface=\"sw1\",reason=\"ttl_expired\"} 2",
        "talaria_switch_port_drops_total{port=\"1\",interface=\"sw1\",reason=\"malformed\"} 0",
        "talaria_switch_port_drops_total{port=\"2\",interface=\"sw2\",reason=\"ttl_expired\"} 1",
        "talaria_switch_port_drops_total{port=\"2\",interface=\"sw2\",reason=\"malformed\"} 1",
        "talaria_switch_drops_total{reason=\"ttl_expired\"} 3",
        "talaria_switch_drops_total{reason=\"malformed\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    drop((registry, switch, dp));
    drop(guard);
}

/// Removes a pin directory when dropped during a panic.
struct RemovePinsOnPanic(std::path::PathBuf);

impl Drop for RemovePinsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Detaches a shared data plane when dropped, once it is the last owner.
struct Detach(Option<Arc<Dataplane>>);

impl Drop for Detach {
    fn drop(&mut self) {
        if let Some(Ok(dp)) = self.0.take().map(Arc::try_unwrap) {
            let _ = dp.detach();
        }
    }
}
