//! The agent's run loop: load, configure, attach, then keep pods attached,
//! collect idle flows and serve metrics until SIGINT/SIGTERM. Exiting
//! leaves the pinned programs, links and maps in place.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
    time::Duration,
};

use talaria_common::{
    be::Be32,
    maps::{CookieEntry, NodeConfig, ReverseEntry},
    wire::ENCAP_OVERHEAD,
};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::{
    config::{parse_cidr, parse_mac, Config, Mode},
    k8s,
    metrics::{self, Gauges},
    netlink::{self, Snapshot},
    node::{self, FlowTtl, Node, PROG_HOST, PROG_UPLINK},
    pods::PodSync,
    sys, Error, Result,
};

/// The [`NodeConfig`] map value for `cfg`, resolving the uplink.
pub fn node_config(cfg: &Config) -> Result<NodeConfig> {
    Ok(NodeConfig {
        node_ip: Be32(cfg.node_ip.octets()),
        switch_ip: Be32(cfg.switch_ip.octets()),
        uplink_ifindex: sys::ifindex(&cfg.uplink)?,
        node_mac: sys::mac(&cfg.uplink)?,
        switch_mac: parse_mac(&cfg.switch_mac)?,
        udp_idle_ns: cfg.udp_idle_secs.saturating_mul(1_000_000_000),
        host_ifindex: if cfg.host_clients {
            sys::ifindex(HOST_DEV)?
        } else {
            0
        },
        _pad: 0,
    })
}

/// The MTU the path MTU check uses: `uplink_mtu` from the config, else the
/// uplink's own.
pub fn uplink_mtu(cfg: &Config) -> Result<u32> {
    match cfg.uplink_mtu {
        Some(m) => Ok(m),
        None => sys::mtu(&cfg.uplink),
    }
}

/// Writes the node-wide maps from `cfg` (settings, service CIDRs, static
/// Services, uplink MTU) and attaches the uplink.
pub fn apply_node(node: &mut Node, cfg: &Config) -> Result<()> {
    if cfg.host_clients {
        host_device(cfg)?;
    }
    node.set_config(&node_config(cfg)?)?;
    let cidrs = cfg
        .service_cidrs
        .iter()
        .map(|c| parse_cidr(c))
        .collect::<Result<Vec<_>>>()?;
    node.set_service_cidrs(&cidrs)?;
    // Kubernetes mode: the controller's services (merged over these) are
    // written by `k8s::refresh_services`; until it answers, a restarted
    // agent keeps the pinned ones.
    if cfg.mode == Mode::Lab {
        node.set_services(&cfg.services)?;
    }
    node.set_uplink_mtu(uplink_mtu(cfg)?)?;
    node.set_ignore_cookies(cfg.ignore_cookies)?;
    node.set_pod_flow_limit(cfg.pod_flow_limit)?;
    if cfg.uplink_udp_segmentation_off {
        disable_uplink_udp_gso(&cfg.uplink);
    }
    node.attach(PROG_UPLINK, &cfg.uplink)?;
    if cfg.host_clients {
        serve_host_clients(node, cfg, &cidrs)?;
    }
    Ok(())
}

/// The node's own device towards Services: a veth whose peer never
/// receives anything (its egress hook tunnels or drops every packet).
pub const HOST_DEV: &str = "tlr-host";
const HOST_DEV_PEER: &str = "tlr-host-peer";

/// Creates (or keeps) [`HOST_DEV`]: no ARP, so a route through it needs no
/// neighbour; an MTU 48 bytes below the uplink's, so a local socket's MSS
/// and the kernel's fragmentation leave room for the tunnel; the uplink's
/// MAC.
fn host_device(cfg: &Config) -> Result<()> {
    if sys::ifindex(HOST_DEV).is_err() {
        sys::run(
            "ip",
            &[
                "link",
                "add",
                HOST_DEV,
                "type",
                "veth",
                "peer",
                "name",
                HOST_DEV_PEER,
            ],
        )?;
    }
    let uplink = match uplink_mtu(cfg)? {
        0 => sys::mtu(&cfg.uplink)?,
        m => m,
    };
    let mtu = (uplink - ENCAP_OVERHEAD as u32).to_string();
    sys::run("ip", &["link", "set", HOST_DEV_PEER, "mtu", &mtu, "up"])?;
    // The uplink's MAC: replies decapsulated on the uplink, addressed to
    // it, enter the node through this device's ingress as its own.
    let [a, b, c, d, e, f] = sys::mac(&cfg.uplink)?;
    let mac = format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}");
    sys::run(
        "ip",
        &[
            "link", "set", HOST_DEV, "address", &mac, "mtu", &mtu, "arp", "off", "up",
        ],
    )?;
    Ok(())
}

/// The node's own clients (its processes, hostNetwork pods) reach
/// Services through [`HOST_DEV`]: every Service CIDR is routed to it, from
/// the node's address, and its egress hook tunnels them like a pod's
/// packets straight out of the uplink. A device of its own keeps that
/// hook off the uplink, which every pod's tunnel leaves by. kube-proxy
/// needs no route (its DNAT happens before routing).
pub fn serve_host_clients(node: &mut Node, cfg: &Config, cidrs: &[(Ipv4Addr, u8)]) -> Result<()> {
    let src = cfg.node_ip.to_string();
    for (addr, len) in cidrs {
        let cidr = format!("{addr}/{len}");
        sys::run(
            "ip",
            &["route", "replace", &cidr, "dev", HOST_DEV, "src", &src],
        )?;
    }
    node.attach(PROG_HOST, HOST_DEV)
}

/// Writes every map from `cfg` and attaches the uplink and the pod veths
/// that exist (lab mode: configured pods, and pods learned from routes).
/// Returns the configured veths that are not there yet.
pub fn apply(node: &mut Node, cfg: &Config) -> Result<Vec<String>> {
    apply_node(node, cfg)?;
    let snap = Snapshot::read()?;
    Ok(PodSync::default().sync(node, cfg, &snap, None)?.missing)
}

/// Turns off `tx-udp-segmentation` on the uplink (with `ethtool`, which
/// must be installed). Why: a UDP GSO skb (UDP_SEGMENT senders, QUIC)
/// encapsulated by `bpf_skb_adjust_room` and decapsulated the same way on
/// the far node keeps `skb->encapsulation` and the UDP_TUNNEL gso type, and
/// every datagram of it is then lost in the backend pod (shared
/// KERNEL-NOTES; reproduced by the e2e test `udp_gso_datagrams_reach_the_backend`).
/// Without the feature on the uplink the kernel segments the encapsulated
/// UDP GSO skb on the way out, while its inner headers are still right, so
/// only ordinary Geneve packets cross the wire. TCP TSO is untouched.
pub fn disable_uplink_udp_gso(uplink: &str) {
    match sys::run("ethtool", &["-K", uplink, "tx-udp-segmentation", "off"]) {
        Ok(_) => info!(%uplink, "tx-udp-segmentation off (UDP GSO is segmented before the wire)"),
        Err(e) => {
            warn!(%uplink, error = %e, "could not turn off tx-udp-segmentation: UDP GSO senders will lose datagrams")
        }
    }
}

/// How long the agent waits for its first pod sync before serving metrics.
const FIRST_SYNC_WAIT: Duration = Duration::from_secs(10);

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> Result<()> {
    let mut node = Node::load(Some(&cfg.pin_dir), cfg.flow_table_size)?;
    apply_node(&mut node, &cfg)?;
    info!(uplink = %cfg.uplink, mode = ?cfg.mode, pin_dir = %cfg.pin_dir.display(), "talaria-node attached to the uplink");
    let node = Arc::new(Mutex::new(node));
    let gauges = Arc::new(Mutex::new(Gauges::default()));

    // GC of idle UDP and finished TCP flows; also samples the gauges.
    {
        let node = node.clone();
        let gauges = gauges.clone();
        let ttl = FlowTtl::from_secs(cfg.udp_idle_secs, cfg.fin_grace_secs, cfg.time_wait_secs);
        let pin_dir = cfg.pin_dir.clone();
        let every = Duration::from_secs(cfg.gc_interval_secs.max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let removed = node
                    .lock()
                    .expect("node lock")
                    .gc(node::monotonic_ns(), &ttl);
                let mut g = gauges.lock().expect("gauges lock");
                match removed {
                    Ok((c, r)) => g.gc_removed_total += (c + r) as u64,
                    Err(e) => warn!(error = %e, "gc"),
                }
                g.cookies =
                    node::count_pinned::<CookieEntry>(&pin_dir, node::MAP_COOKIES).unwrap_or(0);
                g.reverse_flows =
                    node::count_pinned::<ReverseEntry>(&pin_dir, node::MAP_REVERSE).unwrap_or(0);
            }
        });
    }

    // Resyncs are driven by rtnetlink link and route events, by pod events
    // from the API (Kubernetes mode), and by a slow rescan.
    let changed = Arc::new(Notify::new());
    {
        let notify = changed.clone();
        let netns = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| Error::io("open own network namespace", e))?;
        std::thread::spawn(move || {
            // Tokio threads may not share the caller's namespace (`--netns`
            // set it on the main thread only): join it explicitly.
            // SAFETY: setns on this thread with a valid netns fd.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                warn!(error = %std::io::Error::last_os_error(), "setns for the netlink watcher");
                return;
            }
            if let Err(e) = netlink::watch(|| notify.notify_one()) {
                warn!(error = %e, "netlink events unavailable; rescanning only");
            }
        });
    }
    let api_pods: Option<Arc<Mutex<Option<BTreeSet<Ipv4Addr>>>>> = match cfg.mode {
        Mode::Lab => None,
        Mode::Kubernetes => {
            let pods = Arc::new(Mutex::new(None));
            let client = k8s::client(&cfg.kubernetes).await?;
            let node_name = k8s::node_name(&cfg.kubernetes)?;
            info!(node = %node_name, "watching this node's Pods");
            tokio::spawn(k8s::watch_pods(
                client,
                node_name,
                pods.clone(),
                changed.clone(),
            ));
            tokio::spawn(k8s::refresh_services(
                cfg.kubernetes.clone(),
                cfg.node_ip,
                cfg.services.clone(),
                node.clone(),
            ));
            Some(pods)
        }
    };
    let (first_sync_tx, mut first_sync) = tokio::sync::watch::channel(false);
    {
        let node = node.clone();
        let cfg = cfg.clone();
        let gauges = gauges.clone();
        let rescan = Duration::from_secs(cfg.rescan_secs.max(1));
        let netns = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| Error::io("open own network namespace", e))?;
        // Netlink dumps and attaches must run in the node's namespace: a
        // dedicated thread joins it and resyncs on every trigger. A
        // trigger that finds one pending is dropped: the pending resync
        // reads the newest state anyway.
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let first_synced = first_sync_tx;
        let sync_pods = api_pods.clone();
        std::thread::spawn(move || {
            // SAFETY: setns on this thread with a valid netns fd.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                warn!(error = %std::io::Error::last_os_error(), "setns for the pod sync");
                return;
            }
            let mut sync = PodSync::default();
            let mut last_missing = None;
            while rx.recv().is_ok() {
                let api = match &sync_pods {
                    None => None,
                    // Until the first list is complete nothing is known:
                    // syncing would forget every pod.
                    Some(p) => match p.lock().expect("pods lock").clone() {
                        Some(set) => Some(set),
                        None => continue,
                    },
                };
                let snap = match Snapshot::read() {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "netlink dump");
                        continue;
                    }
                };
                let res = sync.sync(
                    &mut node.lock().expect("node lock"),
                    &cfg,
                    &snap,
                    api.as_ref(),
                );
                match res {
                    Ok(plan) => {
                        gauges.lock().expect("gauges lock").pods = plan.pods.len();
                        if last_missing.as_ref() != Some(&plan.missing) {
                            info!(pods = plan.pods.len(), missing = ?plan.missing, "pods synced");
                            last_missing = Some(plan.missing);
                        }
                    }
                    Err(e) => warn!(error = %e, "pod sync"),
                }
                first_synced.send_replace(true);
            }
        });
        tokio::spawn(async move {
            loop {
                match tx.try_send(()) {
                    Ok(()) | Err(std::sync::mpsc::TrySendError::Full(())) => {}
                    Err(std::sync::mpsc::TrySendError::Disconnected(())) => return,
                }
                tokio::select! {
                    _ = changed.notified() => {
                        // Let a burst of events settle (a new pod brings a
                        // link, an address and a route).
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    _ = tokio::time::sleep(rescan) => {}
                }
            }
        });
    }

    // The metrics port opens once the first pod sync has run, so "the
    // agent listens" means "its pods are attached" (the lab and a
    // readiness probe wait for it). Kubernetes mode may wait on the API.
    let first = FIRST_SYNC_WAIT;
    if tokio::time::timeout(first, first_sync.wait_for(|done| *done))
        .await
        .is_err()
    {
        warn!(?first, "no pod sync yet; serving metrics anyway");
    }
    let listener = tokio::net::TcpListener::bind(&cfg.metrics_addr)
        .await
        .map_err(|e| Error::io(format!("bind {}", cfg.metrics_addr), e))?;
    {
        let (node, gauges) = (node.clone(), gauges.clone());
        let registry = metrics::registry(metrics::NodeCollector::new(move || {
            let stats = node.lock().expect("node lock").stats().unwrap_or_default();
            (stats, *gauges.lock().expect("gauges lock"))
        }));
        tokio::spawn(metrics::serve(listener, move || metrics::render(&registry)));
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("signal handler", e))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("exiting; programs, links and maps stay pinned");
    Ok(())
}
