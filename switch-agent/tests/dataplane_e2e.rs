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
    configured, read_entities, table_entries, table_filter, update, write_request, Builder,
};
use talaria_p4rt::p4::v1::{p4_runtime_client::P4RuntimeClient, update::Type};
use talaria_switch::{
    entry::{Entry, TableKind, Target},
    layout::Layout,
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

async fn start(
    layout: Arc<Layout>,
    target: Arc<dyn Target>,
    state_dir: &std::path::Path,
) -> (Arc<Switch>, Running) {
    let (stop, rx) = watch::channel(false);
    let switch =
        Arc::new(Switch::new(1, layout, target, Some(state_dir.into()), rx.clone()).unwrap());
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
    if !testing::is_root() {
        eprintln!("skipped: needs root (loads BPF, creates a netns)");
        return;
    }
    let mut sw = TestSwitch::new("p4rt-e2e", 2);
    let state = tempfile::tempdir().unwrap();
    let layout = Arc::new(Layout::talaria().unwrap());
    let b = Builder {
        layout: layout.clone(),
    };
    let dp = Arc::new(sw.dp.take().unwrap());

    let (switch, mut run) = start(layout.clone(), dp.clone(), state.path()).await;
    let stream = configured(&mut run.client, 1).await;
    let route = b.entry(
        "ipv4_route",
        &[("dst_addr", &[10, 2, 0, 0], 16)],
        "forward",
        &[
            ("port", &[2]),
            ("src_mac", &[2, 0, 0, 0, 0, 1]),
            ("dst_mac", &[2, 0, 0, 0, 0, 2]),
        ],
    );
    run.client
        .write(write_request(
            1,
            vec![
                update(Type::Insert, b.backend(5)),
                update(Type::Insert, route),
            ],
        ))
        .await
        .unwrap();
    // In the BPF maps.
    assert_eq!(
        dp.entries(TableKind::Backend).unwrap(),
        vec![Entry::Backend {
            backend_id: 5,
            ip: Ipv4Addr::new(10, 1, 0, 5),
            port: 8080,
            node_ip: Ipv4Addr::new(192, 168, 0, 1)
        }]
    );
    assert_eq!(dp.entries(TableKind::Ipv4Route).unwrap().len(), 1);
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
    let (switch, mut run) = start(layout.clone(), dp.clone(), state.path()).await;
    assert!(switch.configured(), "the persisted pipeline counts as set");
    let got = table_entries(
        read_entities(&mut run.client, vec![table_filter(0)])
            .await
            .unwrap(),
    );
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().any(|t| t.table_id == b.table_id("backend")));
    run.stop().await;
    drop(switch);
    sw.dp = Some(sole(dp).await);
}
