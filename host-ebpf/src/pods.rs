//! Which pods are local, behind which veth: planned from a netlink
//! [`Snapshot`] (pure, unit-tested) and applied to the node's maps and TCX
//! links by [`PodSync`], which remembers what it attached so each resync
//! only attaches new veths and detaches vanished ones.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use talaria_common::maps::PodEntry;
use tracing::{info, warn};

use crate::{
    agent::HOST_DEV,
    config::{parse_cidr4, parse_mac, Config, Mode},
    k8s::PodIps,
    netlink::Snapshot,
    node::{link_pin_name, Node, PROG_POD},
    Result,
};

/// A local pod resolved to its host-side veth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    /// Its IPv4 address: none for an IPv6-only pod (Kubernetes mode), whose
    /// IPv4 packets are then all spoofed (`pod_spoof`).
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 addresses (dual stack, or IPv6 only).
    pub ipv6: Vec<Ipv6Addr>,
    pub veth: String,
    pub entry: PodEntry,
}

/// The outcome of planning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pods whose veth exists, sorted by address (IPv6-only ones last).
    pub pods: Vec<LocalPod>,
    /// What could not be resolved yet: configured veths that do not exist
    /// (lab), or pod addresses without a `/32` route to a veth
    /// (Kubernetes: the CNI has not finished).
    pub missing: Vec<String>,
}

fn in_cidrs(ip: Ipv4Addr, cidrs: &[(Ipv4Addr, u8)]) -> bool {
    cidrs.is_empty()
        || cidrs.iter().any(|(net, len)| {
            let mask = if *len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(*len))
            };
            u32::from(ip) & mask == u32::from(*net) & mask
        })
}

/// Plans the local pods from a snapshot of links and routes.
///
/// - Lab mode: every configured pod whose veth exists; then, with
///   `learn_pods_from_routes`, every `/32` main-table route without a
///   gateway whose device is a veth (and whose address is in `pod_cidrs`,
///   if any), unless the address is configured already, and every such
///   `/128` over one of those pods' veths as that pod's IPv6 address (as
///   CNIs route dual-stack pods).
/// - Kubernetes mode: every IPv4 address of `api_pods` (in `pod_cidrs`, if
///   any) that has such a route; the route's device is the pod's veth,
///   also the one of the pod's IPv6 addresses. An IPv6-only pod is found
///   the same way by the `/128` of its first IPv6 address (`pod_cidrs`,
///   IPv4 prefixes, do not filter it).
pub fn plan(cfg: &Config, snap: &Snapshot, api_pods: Option<&PodIps>) -> Result<Plan> {
    let cidrs = cfg
        .pod_cidrs
        .iter()
        .map(|c| parse_cidr4(c))
        .collect::<Result<Vec<_>>>()?;
    // Keyed by the address the pod's veth was found by.
    let mut pods: BTreeMap<IpAddr, LocalPod> = BTreeMap::new();
    let mut missing = Vec::new();
    // Not the host clients' device: its /32s are external Service
    // addresses (`k8s::with_service_addrs`).
    let veth_route = |ip: IpAddr| {
        snap.host_route_dev(ip)
            .filter(|l| l.kind == "veth" && l.name != cfg.uplink && l.name != HOST_DEV)
    };
    match cfg.mode {
        Mode::Lab => {
            for p in &cfg.pods {
                let Some(link) = snap.link(&p.veth) else {
                    missing.push(p.veth.clone());
                    continue;
                };
                let mac = p
                    .mac
                    .as_deref()
                    .map(parse_mac)
                    .transpose()?
                    .unwrap_or_default();
                pods.insert(
                    p.ip.into(),
                    LocalPod {
                        ip: Some(p.ip),
                        ipv6: p.ipv6.clone(),
                        veth: p.veth.clone(),
                        entry: PodEntry {
                            ifindex: link.ifindex,
                            mac,
                            host_mac: link.mac,
                        },
                    },
                );
            }
            if cfg.learn_pods_from_routes {
                for r in &snap.routes {
                    let IpAddr::V4(dst) = r.dst else { continue };
                    if r.len != 32 || pods.contains_key(&r.dst) || !in_cidrs(dst, &cidrs) {
                        continue;
                    }
                    if let Some(link) = veth_route(r.dst) {
                        pods.insert(r.dst, learned(Some(dst), link));
                    }
                }
                let by_veth: BTreeMap<u32, IpAddr> =
                    pods.iter().map(|(k, p)| (p.entry.ifindex, *k)).collect();
                for r in &snap.routes {
                    let IpAddr::V6(dst) = r.dst else { continue };
                    if r.len != 128 || r.gateway.is_some() {
                        continue;
                    }
                    let pod = by_veth.get(&r.oif).and_then(|ip| pods.get_mut(ip));
                    if let Some(p) = pod.filter(|p| !p.ipv6.contains(&dst)) {
                        p.ipv6.push(dst);
                    }
                }
            }
        }
        Mode::Kubernetes => {
            for (addr, ipv6) in api_pods.into_iter().flatten() {
                let ip = match *addr {
                    IpAddr::V4(a) if !in_cidrs(a, &cidrs) => continue,
                    IpAddr::V4(a) => Some(a),
                    IpAddr::V6(_) => None,
                };
                match veth_route(*addr) {
                    Some(link) => {
                        let pod = LocalPod {
                            ipv6: ipv6.iter().copied().collect(),
                            ..learned(ip, link)
                        };
                        pods.insert(*addr, pod);
                    }
                    None => missing.push(addr.to_string()),
                }
            }
        }
    }
    Ok(Plan {
        pods: pods.into_values().collect(),
        missing,
    })
}

/// A pod found through its route: its own MAC is unknown (decapsulated
/// packets are delivered with `bpf_redirect_peer`, which marks them for
/// the host anyway).
fn learned(ip: Option<Ipv4Addr>, link: &crate::netlink::Link) -> LocalPod {
    LocalPod {
        ip,
        ipv6: Vec::new(),
        veth: link.name.clone(),
        entry: PodEntry {
            ifindex: link.ifindex,
            mac: [0; 6],
            host_mac: link.mac,
        },
    }
}

/// Applies plans to a [`Node`], remembering what it attached.
#[derive(Debug, Default)]
pub struct PodSync {
    /// veth name → ifindex it was attached at.
    attached: BTreeMap<String, u32>,
    /// Whether pins left by an earlier agent run have been checked.
    swept: bool,
    /// The uplink MTU last written.
    uplink_mtu: Option<u32>,
}

impl PodSync {
    /// Plans from `snap` and applies: `NODE_PODS` and `NODE_PODS_V6` are
    /// replaced (forgotten pods removed), new or re-created veths are
    /// attached, vanished ones detached (their pinned links removed; the
    /// kernel has already detached a deleted veth's program), and the
    /// uplink MTU is followed unless the config fixes it. A veth that fails
    /// to attach (it may vanish between the snapshot and the attach) is
    /// logged, left out of the attached set and retried next time.
    pub fn sync(
        &mut self,
        node: &mut Node,
        cfg: &Config,
        snap: &Snapshot,
        api_pods: Option<&PodIps>,
    ) -> Result<Plan> {
        let plan = plan(cfg, snap, api_pods)?;
        let entries: Vec<(Ipv4Addr, PodEntry)> = plan
            .pods
            .iter()
            .filter_map(|p| Some((p.ip?, p.entry)))
            .collect();
        node.set_pods(&entries)?;
        let v6: Vec<(Ipv6Addr, PodEntry)> = plan
            .pods
            .iter()
            .flat_map(|p| p.ipv6.iter().map(|a| (*a, p.entry)))
            .collect();
        node.set_pods_v6(&v6)?;
        let want: BTreeMap<&str, u32> = plan
            .pods
            .iter()
            .map(|p| (p.veth.as_str(), p.entry.ifindex))
            .collect();
        for (veth, ifindex) in &want {
            if self.attached.get(*veth) == Some(ifindex) {
                continue;
            }
            match node.attach(PROG_POD, veth) {
                Ok(()) => {
                    info!(%veth, ifindex, "pod veth attached");
                    self.attached.insert(veth.to_string(), *ifindex);
                }
                Err(e) => warn!(%veth, error = %e, "attaching pod veth"),
            }
        }
        let gone: Vec<String> = self
            .attached
            .keys()
            .filter(|v| !want.contains_key(v.as_str()))
            .cloned()
            .collect();
        for veth in gone {
            node.detach(PROG_POD, &veth)?;
            self.attached.remove(&veth);
            info!(%veth, "pod veth forgotten");
        }
        if !self.swept {
            // Pins of pod veths an earlier run attached that are no
            // longer pods.
            let keep: BTreeSet<String> = want.keys().map(|v| link_pin_name(PROG_POD, v)).collect();
            for name in node.pinned_links()? {
                if name.starts_with(&format!("{PROG_POD}@")) && !keep.contains(&name) {
                    node.remove_link_pin(&name)?;
                    info!(pin = %name, "stale pod link pin removed");
                }
            }
            self.swept = true;
        }
        let mtu = match cfg.uplink_mtu {
            Some(m) => Some(m),
            None => snap.link(&cfg.uplink).map(|l| l.mtu),
        };
        if let Some(m) = mtu {
            if self.uplink_mtu != Some(m) {
                node.set_uplink_mtu(m)?;
                info!(uplink = %cfg.uplink, mtu = m, "path MTU check: uplink MTU");
                self.uplink_mtu = Some(m);
            }
        }
        Ok(plan)
    }

    /// Veths currently attached.
    pub fn attached(&self) -> impl Iterator<Item = &str> {
        self.attached.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::PodConfig,
        netlink::{Link, Route},
    };

    fn snap() -> Snapshot {
        let mut links = BTreeMap::new();
        for (i, name, kind) in [
            (1, "lo", ""),
            (2, "uplink", "veth"),
            (3, "vpa", "veth"),
            (4, "vpb", "veth"),
            (5, "br0", "bridge"),
            (6, HOST_DEV, "veth"),
        ] {
            links.insert(
                i,
                Link {
                    ifindex: i,
                    name: name.into(),
                    kind: kind.into(),
                    mac: [2, 0, 0, 0, 0, i as u8],
                    mtu: 1500,
                },
            );
        }
        let route = |dst: [u8; 4], len, oif, gw: Option<[u8; 4]>| Route {
            dst: dst.into(),
            len,
            oif,
            gateway: gw.map(Into::into),
        };
        let route_v6 = |dst: &str, oif, gw: Option<&str>| Route {
            dst: dst.parse().unwrap(),
            len: 128,
            oif,
            gateway: gw.map(|g| g.parse().unwrap()),
        };
        Snapshot {
            links,
            routes: vec![
                route([0, 0, 0, 0], 0, 2, Some([10, 200, 1, 1])),
                route([10, 200, 1, 0], 24, 2, None),
                route([10, 244, 1, 2], 32, 3, None),
                route([10, 244, 1, 3], 32, 4, None),
                route([10, 244, 1, 9], 32, 5, None), // a bridge: not a pod
                route([10, 244, 1, 10], 32, 2, None), // the uplink: not a pod
                route([203, 0, 113, 7], 32, 6, None), // an external Service address
                route([10, 99, 0, 1], 32, 4, None),  // outside pod_cidrs
                route([10, 244, 1, 11], 32, 3, Some([10, 244, 1, 2])), // via a gateway
                route_v6("fd00:244:1::2", 3, None),
                route_v6("fd00:244:1::3", 4, None),
                route_v6("fd00:244:1::9", 5, None), // a bridge: no pod's
                route_v6("fd00:244:1::11", 3, Some("fe80::2")), // via a gateway
            ],
        }
    }

    #[test]
    fn lab_mode_takes_configured_pods_and_learns_veth_routes() {
        let cfg = Config {
            uplink: "uplink".into(),
            pods: vec![
                PodConfig {
                    ip: "10.244.1.2".parse().unwrap(),
                    ipv6: vec![v6("fd00:244:1::2"), v6("fd00:244:1::a")],
                    veth: "vpa".into(),
                    mac: Some("02:00:00:00:aa:01".into()),
                },
                PodConfig {
                    ip: "10.244.1.4".parse().unwrap(),
                    ipv6: vec![],
                    veth: "vpd".into(),
                    mac: None,
                },
            ],
            pod_cidrs: vec!["10.244.0.0/16".into()],
            ..Config::default()
        };
        let p = plan(&cfg, &snap(), None).unwrap();
        let got: Vec<(String, &str, u32)> = p
            .pods
            .iter()
            .map(|p| (p.ip.unwrap().to_string(), p.veth.as_str(), p.entry.ifindex))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.244.1.2".into(), "vpa", 3),
                ("10.244.1.3".into(), "vpb", 4)
            ]
        );
        assert_eq!(
            p.pods[0].entry.mac,
            [2, 0, 0, 0, 0xaa, 1],
            "configured MAC kept"
        );
        assert_eq!(p.pods[0].entry.host_mac, [2, 0, 0, 0, 0, 3]);
        assert_eq!(p.missing, vec!["vpd".to_string()]);
        // IPv6: configured, then the /128s over each pod's veth, once.
        assert_eq!(
            p.pods[0].ipv6,
            [v6("fd00:244:1::2"), v6("fd00:244:1::a")],
            "configured, the route's address not repeated"
        );
        assert_eq!(p.pods[1].ipv6, [v6("fd00:244:1::3")], "learned");

        // Without route learning only the configured pods count; without
        // pod_cidrs any veth route does.
        let off = Config {
            learn_pods_from_routes: false,
            ..cfg.clone()
        };
        let p = plan(&off, &snap(), None).unwrap();
        assert_eq!(p.pods.len(), 1);
        assert_eq!(p.pods[0].ipv6.len(), 2, "only the configured IPv6");
        let any = Config {
            pod_cidrs: vec![],
            ..cfg
        };
        assert_eq!(plan(&any, &snap(), None).unwrap().pods.len(), 3);
    }

    #[test]
    fn kubernetes_mode_resolves_api_pods_through_their_routes() {
        let cfg = Config {
            mode: Mode::Kubernetes,
            uplink: "uplink".into(),
            // Ignored in Kubernetes mode.
            pods: vec![PodConfig {
                ip: "10.244.1.50".parse().unwrap(),
                ipv6: vec![],
                veth: "vpa".into(),
                mac: None,
            }],
            ..Config::default()
        };
        let mut api: PodIps = ["10.244.1.3", "10.244.1.7", "10.244.1.9"]
            .iter()
            .map(|s| (s.parse().unwrap(), BTreeSet::new()))
            .collect();
        let pod_v6 = BTreeSet::from([v6("fd00:244:1::33")]);
        api.insert("10.244.1.3".parse().unwrap(), pod_v6);
        // IPv6-only pods, found by the /128 of their first address (one
        // over a veth, one over a bridge, one without a route yet).
        for a in ["fd00:244:1::2", "fd00:244:1::9", "fd00:244:1::77"] {
            api.insert(
                a.parse().unwrap(),
                BTreeSet::from([v6(a), v6("fd00:244:1::f")]),
            );
        }
        let p = plan(&cfg, &snap(), Some(&api)).unwrap();
        assert_eq!(p.pods.len(), 2);
        assert_eq!(
            (
                p.pods[0].ip,
                p.pods[0].veth.as_str(),
                p.pods[0].entry.ifindex
            ),
            (Some("10.244.1.3".parse().unwrap()), "vpb", 4)
        );
        assert_eq!(
            p.pods[0].ipv6,
            [v6("fd00:244:1::33")],
            "the pod's IPv6 from the API, not from routes"
        );
        assert_eq!(
            (
                p.pods[1].ip,
                p.pods[1].veth.as_str(),
                p.pods[1].entry.ifindex
            ),
            (None, "vpa", 3),
            "IPv6 only: no IPv4 address, its veth by its /128"
        );
        assert_eq!(p.pods[1].ipv6, [v6("fd00:244:1::2"), v6("fd00:244:1::f")]);
        assert_eq!(
            p.missing,
            [
                "10.244.1.7",
                "10.244.1.9",
                "fd00:244:1::9",
                "fd00:244:1::77"
            ],
            "no route yet, or a route to something that is not a veth"
        );
        assert!(plan(&cfg, &snap(), None).unwrap().pods.is_empty());
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_filter() {
        let c = [(Ipv4Addr::new(10, 244, 0, 0), 16)];
        assert!(in_cidrs(Ipv4Addr::new(10, 244, 7, 1), &c));
        assert!(!in_cidrs(Ipv4Addr::new(10, 245, 0, 1), &c));
        assert!(in_cidrs(Ipv4Addr::new(1, 2, 3, 4), &[]));
        assert!(in_cidrs(
            Ipv4Addr::new(1, 2, 3, 4),
            &[(Ipv4Addr::UNSPECIFIED, 0)]
        ));
    }
}
