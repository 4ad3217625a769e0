//! The agent's run loop: load, configure, attach, then keep pods attached,
//! collect idle flows and serve metrics until SIGINT/SIGTERM. Exiting
//! leaves the pinned programs, links and maps in place.

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use talaria_common::{
    be::{Be16, Be32},
    maps::{CookieEntry, NodeConfig, PodEntry, ReverseEntry, ServiceAddr},
};
use tracing::{info, warn};

use crate::{
    config::{parse_cidr, parse_mac, Config},
    metrics::{self, Gauges},
    node::{self, Node, PROG_POD, PROG_UPLINK},
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
    })
}

/// Writes every map from `cfg` and attaches the uplink and the pod veths
/// that exist. Returns the pods whose veth is not there yet.
pub fn apply(node: &mut Node, cfg: &Config) -> Result<Vec<String>> {
    node.set_config(&node_config(cfg)?)?;
    let cidrs = cfg
        .service_cidrs
        .iter()
        .map(|c| parse_cidr(c))
        .collect::<Result<Vec<_>>>()?;
    node.set_service_cidrs(&cidrs)?;
    let services = cfg
        .services
        .iter()
        .map(|s| {
            Ok((
                s.id,
                ServiceAddr {
                    vip: Be32(s.vip.octets()),
                    port: Be16::new(s.port),
                    proto: s.proto()?,
                    _pad: 0,
                },
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    node.set_services(&services)?;
    if cfg.uplink_udp_segmentation_off {
        disable_uplink_udp_gso(&cfg.uplink);
    }
    node.attach(PROG_UPLINK, &cfg.uplink)?;
    let mut pods: Vec<(Ipv4Addr, PodEntry)> = Vec::new();
    let mut missing = Vec::new();
    for p in &cfg.pods {
        let (Ok(ifindex), Ok(host_mac)) = (sys::ifindex(&p.veth), sys::mac(&p.veth)) else {
            missing.push(p.veth.clone());
            continue;
        };
        let mac = p
            .mac
            .as_deref()
            .map(parse_mac)
            .transpose()?
            .unwrap_or_default();
        pods.push((
            p.ip,
            PodEntry {
                ifindex,
                mac,
                host_mac,
            },
        ));
    }
    node.set_pods(&pods)?;
    for p in &cfg.pods {
        if !missing.contains(&p.veth) {
            node.attach(PROG_POD, &p.veth)?;
        }
    }
    Ok(missing)
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

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> Result<()> {
    let mut node = Node::load(Some(&cfg.pin_dir), cfg.lru_size)?;
    let missing = apply(&mut node, &cfg)?;
    info!(uplink = %cfg.uplink, pods = cfg.pods.len(), ?missing, pin_dir = %cfg.pin_dir.display(), "talaria-node attached");
    let node = Arc::new(Mutex::new(node));
    let gauges = Arc::new(Mutex::new(Gauges {
        pods: cfg.pods.len(),
        ..Default::default()
    }));

    let listener = tokio::net::TcpListener::bind(&cfg.metrics_addr)
        .await
        .map_err(|e| Error::io(format!("bind {}", cfg.metrics_addr), e))?;
    {
        let node = node.clone();
        let gauges = gauges.clone();
        tokio::spawn(metrics::serve(listener, move || {
            let stats = node.lock().expect("node lock").stats().unwrap_or_default();
            metrics::render(&stats, &gauges.lock().expect("gauges lock"))
        }));
    }

    // GC of idle UDP and finished TCP flows; also samples the gauges.
    {
        let node = node.clone();
        let gauges = gauges.clone();
        let (udp, fin) = (
            cfg.udp_idle_secs * 1_000_000_000,
            cfg.fin_grace_secs * 1_000_000_000,
        );
        let pin_dir = cfg.pin_dir.clone();
        let every = Duration::from_secs(cfg.gc_interval_secs.max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let removed = node
                    .lock()
                    .expect("node lock")
                    .gc(node::monotonic_ns(), udp, fin);
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

    // Lab mode: attach to pod veths as they appear, on rtnetlink link
    // events (with a slow rescan as a safety net).
    {
        let node = node.clone();
        let cfg = cfg.clone();
        let mut missing = missing;
        let events = Arc::new(tokio::sync::Notify::new());
        let notify = events.clone();
        std::thread::spawn(move || {
            if let Err(e) = sys::watch_links(|| notify.notify_one()) {
                warn!(error = %e, "link events unavailable; rescanning every 10 s");
            }
        });
        tokio::spawn(async move {
            while !missing.is_empty() {
                tokio::select! {
                    _ = events.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
                if missing.iter().any(|v| sys::ifindex(v).is_ok()) {
                    // Give the new interface a moment to come up.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    match apply(&mut node.lock().expect("node lock"), &cfg) {
                        Ok(m) => {
                            info!(now_missing = ?m, "attached new pod veths");
                            missing = m;
                        }
                        Err(e) => warn!(error = %e, "attaching pod veths"),
                    }
                }
            }
        });
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
