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
    maps::{CookieEntry, NodeConfig, ReverseEntry, ReverseEntry6},
    wire::ENCAP_OVERHEAD,
};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::{
    config::{parse_cidr, parse_mac, Config, Mode},
    k8s::{self, Cidr, CidrChanges},
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
    let mut cidrs = k8s::with_service_addrs(configured_cidrs(cfg)?, &cfg.services);
    if cfg.mode == Mode::Kubernetes {
        // The controller's ServiceCIDRs a restarted agent pinned stay
        // steered until the controller answers again
        // (`k8s::refresh_services` then removes those it no longer names).
        cidrs.extend(node.service_cidrs()?);
    }
    let cidrs: Vec<_> = cidrs.into_iter().collect();
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
    // Rewritten on every start (the pinned map keeps the last value until
    // then): the file's first key, or no stamping.
    node.set_ts_cookie(cfg.ts_cookie_key()?)?;
    if cfg.uplink_udp_segmentation_off {
        disable_uplink_udp_gso(&cfg.uplink);
    }
    node.attach(PROG_UPLINK, &cfg.uplink)?;
    if cfg.host_clients {
        serve_host_clients(node, cfg, &cidrs)?;
    }
    Ok(())
}

/// The configured `service_cidrs`, host bits clear.
pub fn configured_cidrs(cfg: &Config) -> Result<BTreeSet<Cidr>> {
    cfg.service_cidrs
        .iter()
        .map(|c| parse_cidr(c).map(k8s::network))
        .collect()
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
/// needs no route (its DNAT happens before routing). IPv4 only: the hook
/// serves no IPv6 Service, so IPv6 prefixes are not routed.
pub fn serve_host_clients(node: &mut Node, cfg: &Config, cidrs: &[Cidr]) -> Result<()> {
    let src = cfg.node_ip.to_string();
    for (addr, len) in cidrs.iter().filter(|c| c.0.is_ipv4()) {
        let cidr = format!("{addr}/{len}");
        sys::run(
            "ip",
            &["route", "replace", &cidr, "dev", HOST_DEV, "src", &src],
        )?;
    }
    node.attach(PROG_HOST, HOST_DEV)
}

/// The routes of Service CIDRs to [`HOST_DEV`], changed from any thread:
/// `ip` runs on a thread that joins the node's namespace, which a runtime
/// thread need not be in (`--netns` moves the main thread only).
#[derive(Clone)]
pub struct HostRoutes {
    netns: Arc<std::fs::File>,
    src: Ipv4Addr,
}

impl HostRoutes {
    /// Routes in the calling thread's namespace, from the node's address
    /// `src`.
    pub fn here(src: Ipv4Addr) -> Result<Self> {
        let netns = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| Error::io("open own network namespace", e))?;
        Ok(Self {
            netns: Arc::new(netns),
            src,
        })
    }

    /// The prefixes routed to [`HOST_DEV`] (main table).
    pub fn routed(&self) -> Result<BTreeSet<Cidr>> {
        let out = sys::in_netns_file(self.netns.clone(), || {
            sys::run("ip", &["-4", "-o", "route", "show", "dev", HOST_DEV])
        })??;
        Ok(parse_routes(&out))
    }

    /// Adds and removes routes to [`HOST_DEV`].
    pub fn apply(&self, changes: &CidrChanges) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let src = self.src.to_string();
        // IPv4 only: `node_host_egress` serves no IPv6 Service.
        let add: Vec<String> = changes
            .add
            .iter()
            .filter(|c| c.0.is_ipv4())
            .map(|(a, l)| format!("{a}/{l}"))
            .collect();
        let remove: Vec<String> = changes
            .remove
            .iter()
            .filter(|c| c.0.is_ipv4())
            .map(|(a, l)| format!("{a}/{l}"))
            .collect();
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        sys::in_netns_file(self.netns.clone(), move || -> Result<()> {
            for c in &add {
                sys::run("ip", &["route", "replace", c, "dev", HOST_DEV, "src", &src])?;
            }
            for c in &remove {
                sys::run("ip", &["route", "del", c, "dev", HOST_DEV])?;
            }
            Ok(())
        })?
    }
}

/// The destinations of `ip -o route show` lines (a bare address is a
/// /32); lines whose first word is not one are skipped.
fn parse_routes(out: &str) -> BTreeSet<Cidr> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|d| match d.contains('/') {
            true => parse_cidr(d).ok(),
            false => d.parse::<Ipv4Addr>().ok().map(|a| (a.into(), 32)),
        })
        .collect()
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
    // Before anything else: a SIGTERM during start-up (a DaemonSet rolled
    // over at once) waits for it, and the agent exits cleanly after.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("signal handler", e))?;
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
                // Both families' entries.
                g.cookies = node::count_pinned::<CookieEntry>(&pin_dir, node::MAP_COOKIES)
                    .unwrap_or(0)
                    + node::count_pinned6::<CookieEntry>(&pin_dir, node::MAP_COOKIES_V6)
                        .unwrap_or(0);
                g.reverse_flows = node::count_pinned::<ReverseEntry>(&pin_dir, node::MAP_REVERSE)
                    .unwrap_or(0)
                    + node::count_pinned6::<ReverseEntry6>(&pin_dir, node::MAP_REVERSE_V6)
                        .unwrap_or(0);
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
    let api_pods: Option<Arc<Mutex<Option<k8s::PodIps>>>> = match cfg.mode {
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
            let host_routes = match cfg.host_clients {
                true => Some(HostRoutes::here(cfg.node_ip)?),
                false => None,
            };
            tokio::spawn(k8s::refresh_services(
                k8s::Refresh {
                    cfg: cfg.kubernetes.clone(),
                    node_ip: cfg.node_ip,
                    services: cfg.services.clone(),
                    service_cidrs: configured_cidrs(&cfg)?,
                    host_routes,
                },
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

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("exiting; programs, links and maps stay pinned");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_to_the_host_device() {
        let out = "10.96.0.0/12 scope link src 10.0.1.1 \n10.100.0.7 scope link src 10.0.1.1 \nunreachable 10.1.0.0/16 \n";
        let got: Vec<Cidr> = parse_routes(out).into_iter().collect();
        assert_eq!(
            got,
            vec![
                ("10.96.0.0".parse().unwrap(), 12),
                ("10.100.0.7".parse().unwrap(), 32)
            ]
        );
    }
}
