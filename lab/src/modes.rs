//! Service-load-balancing modes on one topology, and running load in pods.

use crate::manifests::{ServiceSet, ServiceSpec};
use crate::netns::{in_ns, Lab};
use crate::rules;
use crate::topology::{IpFamily, Names, Topology};
use crate::traffic::{LoadResult, Proto};
use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use talaria_preflight::{commands, which, Need};

/// How Service traffic is load-balanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Clients address backend pod IPs (the lower bound); no Service LB.
    Direct,
    /// kube-proxy iptables mode on every node.
    Iptables,
    /// kube-proxy nftables mode on every node.
    Nftables,
    /// kube-proxy IPVS mode (needs CONFIG_IP_VS).
    Ipvs,
    /// talaria: host eBPF + switch-agent LB + controller.
    Talaria,
}

impl Mode {
    /// What the machine must have for this mode beyond what every lab
    /// needs ([`crate::netns::LAB_NEEDS`]).
    pub fn needs(self) -> &'static [Need] {
        match self {
            Mode::Iptables => &[commands::IPTABLES],
            Mode::Nftables => &[commands::NFT],
            Mode::Ipvs => &[commands::IPVSADM],
            Mode::Direct | Mode::Talaria => &[],
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Iptables => "iptables",
            Mode::Nftables => "nftables",
            Mode::Ipvs => "ipvs",
            Mode::Talaria => "talaria",
        }
    }
}

/// Why IPVS mode cannot run here, if it cannot.
pub fn ipvs_unavailable() -> Option<String> {
    if !std::path::Path::new("/proc/net/ip_vs").exists() {
        return Some(
            "ipvs: skipped: this kernel has no IPVS (CONFIG_IP_VS is not set, /proc/net/ip_vs is absent) \
             and cannot load modules"
                .into(),
        );
    }
    ["ipvsadm", "ipvsadm-restore"]
        .iter()
        .find(|p| which(p).is_none())
        .map(|p| format!("ipvs: skipped: the kernel has IPVS but {p} is not installed (scripts/setup.sh installs it)"))
}

/// The iptables-restore (IPv4) or ip6tables-restore (IPv6) to use: legacy
/// (kube-proxy's classic backend) when installed, else the distribution
/// default.
pub fn iptables_restore_bin(family: IpFamily) -> &'static str {
    let (legacy, default) = match family {
        IpFamily::IPv4 => ("iptables-legacy-restore", "iptables-restore"),
        IpFamily::IPv6 => ("ip6tables-legacy-restore", "ip6tables-restore"),
    };
    if which(legacy).is_some() {
        legacy
    } else {
        default
    }
}

/// Programs a kube-proxy baseline's rules for `set` on the client nodes;
/// returns the seconds it took.
///
/// kube-proxy programs every node; the lab programs only the client nodes,
/// the only ones whose rules are on the path of the measured traffic (DNAT
/// and its reverse happen on the client's node, and on node 0 for external
/// clients, where the fabric sends LoadBalancer IPs). This keeps set-up time in
/// check: loading the nftables ruleset for 10k Services takes minutes per
/// node on this kernel (one anonymous verdict map per Service port, and the
/// kernel's set-name allocation is linear in the number of sets).
pub fn apply_rules(lab: &Lab, mode: Mode, set: &ServiceSet) -> Result<f64> {
    let t0 = Instant::now();
    match mode {
        Mode::Direct | Mode::Talaria => {}
        Mode::Iptables => {
            for &family in &lab.topo.service_families {
                let text = rules::iptables_restore(&lab.topo, set, family);
                for n in 0..lab.topo.client_nodes {
                    in_ns(
                        &lab.names.node(n),
                        &[iptables_restore_bin(family), "-w"],
                        Some(&text),
                    )
                    .with_context(|| format!("{} rules on node {n}", family.name()))?;
                }
            }
        }
        Mode::Nftables => {
            for n in 0..lab.topo.client_nodes {
                // Both families' tables in one transaction.
                let text: String = lab
                    .topo
                    .service_families
                    .iter()
                    .map(|&f| rules::nft_script(&lab.topo, set, f, lab.topo.node_ip(n)))
                    .collect();
                in_ns(&lab.names.node(n), &["nft", "-f", "-"], Some(&text))
                    .with_context(|| format!("nftables rules on node {n}"))?;
            }
        }
        Mode::Ipvs => {
            if let Some(why) = ipvs_unavailable() {
                bail!("{why}");
            }
            let r = rules::ipvs(&lab.topo, set);
            for n in 0..lab.topo.client_nodes {
                let node = lab.names.node(n);
                // Replace, not merge: a re-run starts from no VIPs and no servers.
                let _ = in_ns(&node, &["ip", "link", "del", rules::IPVS_DEVICE], None);
                in_ns(&node, &["ipvsadm", "-C"], None)
                    .and_then(|_| in_ns(&node, &["ip", "-batch", "-"], Some(&r.addresses)))
                    .and_then(|_| in_ns(&node, &["ipvsadm-restore"], Some(&r.servers)))
                    .with_context(|| format!("ipvs rules on node {n}"))?;
            }
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Load targets for a mode: ClusterIP:port of the Services' primary
/// family, or in `direct` mode every endpoint pod IP:targetPort of the
/// chosen Services.
pub fn targets(
    t: &Topology,
    set: &ServiceSet,
    mode: Mode,
    proto: Proto,
    services: &[u32],
) -> Vec<SocketAddr> {
    targets_of(t, set, mode, proto, services, t.service_families[0])
}

/// [`targets`] over `family`: the Services' ClusterIPs of that family (a
/// Service without one is left out), or their endpoints' addresses of it.
pub fn targets_of(
    t: &Topology,
    set: &ServiceSet,
    mode: Mode,
    proto: Proto,
    services: &[u32],
    family: IpFamily,
) -> Vec<SocketAddr> {
    services
        .iter()
        .map(|&k| &set.services[k as usize])
        .filter_map(|s| Some((s, s.cluster_ip_of(family)?)))
        .flat_map(|(s, ip)| service_targets(t, s, ip, mode, proto))
        .collect()
}

/// Load targets for clients outside the cluster: every external Service's
/// LoadBalancer IP and port, or in `direct` mode its endpoints.
pub fn external_targets(
    t: &Topology,
    set: &ServiceSet,
    mode: Mode,
    proto: Proto,
) -> Vec<SocketAddr> {
    set.external()
        .flat_map(|(s, e)| service_targets(t, s, e.lb_ip.into(), mode, proto))
        .collect()
}

/// Service `s` at `address`, or in `direct` mode its endpoints' addresses
/// of the same family.
fn service_targets(
    t: &Topology,
    s: &ServiceSpec,
    address: IpAddr,
    mode: Mode,
    proto: Proto,
) -> Vec<SocketAddr> {
    let udp = proto == Proto::Udp;
    if mode == Mode::Direct {
        let port = if udp { t.udp_port } else { t.http_port };
        let family = IpFamily::of(address);
        s.endpoints
            .iter()
            .map(|&(n, p)| SocketAddr::from((t.pod_ip_of(family, n, p), port)))
            .collect()
    } else {
        let port = if udp {
            t.service_udp_port
        } else {
            t.service_http_port
        };
        vec![SocketAddr::from((address, port))]
    }
}

/// Where a load generator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Pod (node, pod), of a client node.
    Pod(u32, u32),
    /// External host `h`: outside the cluster, no agent.
    External(u32),
}

impl From<(u32, u32)> for Client {
    fn from((node, pod): (u32, u32)) -> Self {
        Client::Pod(node, pod)
    }
}

impl Client {
    /// Its network namespace.
    pub fn netns(self, names: &Names) -> String {
        match self {
            Client::Pod(node, pod) => names.pod(node, pod),
            Client::External(h) => names.external(h),
        }
    }
}

/// One load run from a client pod or an external host.
#[derive(Debug, Clone)]
pub struct LoadRun {
    /// Where it runs.
    pub client: Client,
    /// Kind of load.
    pub proto: Proto,
    /// Targets.
    pub targets: Vec<SocketAddr>,
    /// Workers / connections.
    pub concurrency: u32,
    /// Duration.
    pub duration: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// `hold` request interval.
    pub interval: Duration,
    /// Stop early once this file exists.
    pub stop_file: Option<std::path::PathBuf>,
}

/// A load generator started in a pod or an external host.
pub struct StartedLoad {
    pid: u32,
    /// Its name in the lab (`load-<n>`): its log is `logs/<what>.log`.
    what: String,
    out: std::path::PathBuf,
    limit: Duration,
    started: Instant,
}

/// Numbers the load generators of this process, so that several can run
/// at once (a long and a short load) with logs and results of their own.
static LOADS: AtomicU32 = AtomicU32::new(0);

/// Starts `talaria-lab load` in the client's netns (recorded in the lab state
/// while it runs, as `load-<n>`).
pub fn start_load(lab: &mut Lab, r: &LoadRun) -> Result<StartedLoad> {
    let exe = crate::netns::lab_exe()?;
    let ns = r.client.netns(&lab.names);
    let targets: Vec<String> = r.targets.iter().map(|a| a.to_string()).collect();
    let what = format!("load-{}", LOADS.fetch_add(1, Ordering::Relaxed));
    let out = lab.run_dir.join("logs").join(format!("{what}.json"));
    let argv: Vec<String> = vec![
        exe,
        "load".into(),
        "--proto".into(),
        r.proto
            .to_possible_value()
            .expect("no skipped variants")
            .get_name()
            .to_string(),
        "--target".into(),
        targets.join(","),
        "--concurrency".into(),
        r.concurrency.to_string(),
        "--duration-ms".into(),
        r.duration.as_millis().to_string(),
        "--timeout-ms".into(),
        r.timeout.as_millis().to_string(),
        "--interval-ms".into(),
        r.interval.as_millis().to_string(),
        "--out".into(),
        out.to_string_lossy().into_owned(),
    ];
    let mut argv = argv;
    if let Some(f) = &r.stop_file {
        argv.push("--stop-file".into());
        argv.push(f.to_string_lossy().into_owned());
    }
    let _ = std::fs::remove_file(&out);
    let pid = lab.spawn(&ns, &what, &argv)?;
    Ok(StartedLoad {
        pid,
        what,
        out,
        limit: r.duration + r.timeout * 2 + Duration::from_secs(20),
        started: Instant::now(),
    })
}

/// Waits for a started load generator (bounded) and parses its result.
pub async fn wait_load(lab: &mut Lab, s: StartedLoad) -> Result<LoadResult> {
    let status = loop {
        if let Some(st) = lab.exited(s.pid) {
            break st;
        }
        if s.started.elapsed() > s.limit {
            lab.stop(s.pid);
            bail!("load generator did not finish within {:?}", s.limit);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    lab.stop(s.pid);
    if !status.success() {
        let log = std::fs::read_to_string(lab.run_dir.join("logs").join(format!("{}.log", s.what)))
            .unwrap_or_default();
        bail!("load generator failed ({status}): {}", log.trim());
    }
    let text = std::fs::read_to_string(&s.out).context("load result")?;
    Ok(serde_json::from_str(&text)?)
}

/// Runs `talaria-lab load` where `r.client` says and parses its JSON result.
pub async fn run_load(lab: &mut Lab, r: &LoadRun) -> Result<LoadResult> {
    let s = start_load(lab, r)?;
    wait_load(lab, s).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_per_mode() {
        let t = Topology::default();
        let set = ServiceSet::from_topology(&t);
        let v = targets(&t, &set, Mode::Iptables, Proto::HttpShort, &[0, 1]);
        assert_eq!(
            v,
            vec![
                "10.96.0.10:80".parse().unwrap(),
                "10.96.0.11:80".parse().unwrap()
            ]
        );
        let v = targets(&t, &set, Mode::Talaria, Proto::Udp, &[0]);
        assert_eq!(v, vec!["10.96.0.10:53".parse().unwrap()]);
        let v = targets(&t, &set, Mode::Direct, Proto::HttpLong, &[0]);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], "10.244.1.10:8080".parse().unwrap());
        // From outside: the LoadBalancer IPs of the 4 external Services,
        // or their endpoints.
        let v = external_targets(&t, &set, Mode::Iptables, Proto::HttpShort);
        assert_eq!(v.len(), 4);
        assert_eq!(v[1], "172.29.0.17:80".parse().unwrap());
        let v = external_targets(&t, &set, Mode::Direct, Proto::Udp);
        assert_eq!(v.len(), 12);
        assert!(v.iter().all(|a| a.port() == 5353));
    }

    #[test]
    fn ipvs_explains_itself() {
        if !std::path::Path::new("/proc/net/ip_vs").exists() {
            assert!(ipvs_unavailable().unwrap().contains("CONFIG_IP_VS"));
        }
    }
}
