//! Bringing a lab's components up and talking to them: the switch
//! (switch-agent or bmv2), the controller and the node agents, their
//! configs, and `talariactl` in the switch netns.

use crate::components::{fabric_missing, talaria_missing, Component};
use crate::manifests::ServiceSet;
use crate::modes::{apply_rules, ipvs_unavailable, Mode};
use crate::netns::in_ns;
use crate::netns::Lab;
use crate::switch::{repo_file, Bmv2, SwitchKind, DEVICE_ID};
use crate::topology::Topology;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// P4 port of switch port `p<n>` (port 0 is avoided: bmv2 and many targets
/// reserve it).
pub fn p4_port(node: u32) -> u16 {
    node as u16 + 1
}

/// Controller REST address inside the switch netns.
pub const CONTROLLER_REST: &str = "127.0.0.1:9080";
/// The second controller's REST address, in an HA lab ([`Lab::ha`]).
pub const STANDBY_REST: &str = "127.0.0.1:9081";
/// The fake Lease API server of an HA lab, in the switch netns.
pub const LEASE_SERVER: &str = "127.0.0.1:9443";
/// An HA lab's Lease timings (seconds): duration, renew deadline, retry
/// period (client-go's rules at a fifth of its defaults, rounded).
pub const HA_LEASE: (u32, u32, u32) = (3, 2, 1);
/// A Service below every lab VIP, planned by an HA lab's first controller
/// and then deleted (see [`start_switch`]).
const HA_DEPARTED: &str = "apiVersion: v1
kind: Service
metadata: {name: ha-departed, namespace: default}
spec:
  clusterIP: 10.96.0.2
  clusterIPs: [10.96.0.2]
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
";
/// The process label of an HA lab's second controller.
pub const STANDBY: &str = "talaria-controller-b";
/// P4Runtime address inside the switch netns.
pub const P4RT_ADDR: &str = "127.0.0.1:9559";
/// The switch's id in the controller's config, REST API and talariactl.
pub const SWITCH_ID: &str = "sw";
/// switch-agent's Prometheus endpoint, in the switch netns.
pub const SWITCH_METRICS: &str = "127.0.0.1:9560";

fn find_p4info() -> Result<PathBuf> {
    match std::env::var_os("TALARIA_P4INFO") {
        Some(p) => Ok(PathBuf::from(p)),
        None => repo_file("p4/talaria.p4info.txtpb").context("set TALARIA_P4INFO"),
    }
}

/// Whether `pid`'s network namespace has a TCP listener on `port`.
fn listening(pid: u32, port: u16) -> bool {
    let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")) else {
        return false;
    };
    let want = format!(":{port:04X}");
    t.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
    })
}

async fn wait_listening(
    lab: &mut Lab,
    pid: u32,
    port: u16,
    what: &str,
    limit: Duration,
) -> Result<()> {
    let t0 = Instant::now();
    while !listening(pid, port) {
        if let Some(st) = lab.exited(pid) {
            bail!("{what} exited ({st}); log: {}", tail_log(lab, what));
        }
        if t0.elapsed() > limit {
            bail!(
                "{what} not listening on port {port} after {limit:?}; log: {}",
                tail_log(lab, what)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn tail_log(lab: &Lab, what: &str) -> String {
    let t = std::fs::read_to_string(lab.run_dir.join("logs").join(format!("{what}.log")))
        .unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(6)..].join(" | ")
}

/// The controller's configuration for a lab: fabric routes and the switch
/// tunnel address (everything not from Kubernetes objects), and for bmv2
/// the JSON it pushes as the device config. When the switch `balances`
/// Services (talaria mode), the LoadBalancer CIDR is a blackhole, as the
/// design asks of an operator (a packet to an ingress IP on a port no
/// Service serves goes nowhere); else it goes to node 0, whose
/// kube-proxy rules catch it.
pub fn controller_config(
    t: &Topology,
    names: &crate::topology::Names,
    manifests: &Path,
    device_config: Option<&Path>,
    balances: bool,
) -> String {
    let sc = crate::manifests::switch_config(t, names);
    let (lb_net, lb_len) = t.lb_net();
    let lb_prefix = format!("{lb_net}/{lb_len}");
    let routes: Vec<serde_json::Value> = sc
        .routes
        .iter()
        .map(|r| {
            if balances && r.prefix == lb_prefix {
                serde_json::json!({"prefix": r.prefix})
            } else {
                serde_json::json!({"prefix": r.prefix, "port": p4_port(r.port), "src_mac": r.src_mac, "dst_mac": r.dst_mac})
            }
        })
        .collect();
    let mut v = serde_json::json!({
        "source": {"kind": "files", "dir": manifests, "poll_ms": 200},
        "switches": [{"id": SWITCH_ID, "address": format!("http://{P4RT_ADDR}"), "device_id": DEVICE_ID}],
        "fabric": {"switch_addrs": [t.switch_addr.to_string()], "routes": routes},
        "listen": CONTROLLER_REST,
    });
    if let Some(json) = device_config {
        v["device_config"] = serde_json::json!(json);
    }
    serde_yaml::to_string(&v).expect("JSON values serialize as YAML")
}

/// `base` (a [`controller_config`]) with `source` instead of the manifests
/// directory: a Kubernetes API ([`Lab::controller_source`]).
pub fn controller_config_source(base: &str, source: &serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_yaml::from_str(base).expect("our own YAML");
    v["source"] = source.clone();
    serde_yaml::to_string(&v).expect("JSON values serialize as YAML")
}

/// [`controller_config`] for an HA lab: the Lease on the lab's fake API
/// server ([`LEASE_SERVER`], used for the Lease only), and standbys that
/// read the switch every 500 ms.
pub fn controller_config_ha(base: &str) -> String {
    let mut v: serde_json::Value = serde_yaml::from_str(base).expect("our own YAML");
    let (lease, renew, retry) = HA_LEASE;
    v["source"]["api_server"] = serde_json::json!(format!("http://{LEASE_SERVER}"));
    v["source"]["leader_election"] = serde_json::json!({
        "namespace": "talaria-lab", "name": "talaria-controller",
        "lease_seconds": lease, "renew_deadline_seconds": renew, "retry_period_seconds": retry,
    });
    v["follow_ms"] = serde_json::json!(500);
    serde_yaml::to_string(&v).expect("JSON values serialize as YAML")
}

/// Runs talariactl in the switch netns.
pub fn talariactl(lab: &Lab, args: &[&str]) -> Result<String> {
    talariactl_in(&lab.names.switch(), args)
}

/// Runs talariactl in `switch_ns` (the switch netns of a lab), for a
/// thread that polls without holding the [`Lab`]: against the controller,
/// or in an HA lab whichever of the two answers first (both serve the same
/// switch's tables and ids; a standby reads them from the switch).
pub fn talariactl_in(switch_ns: &str, args: &[&str]) -> Result<String> {
    talariactl_at(switch_ns, CONTROLLER_REST, args)
        .or_else(|e| talariactl_at(switch_ns, STANDBY_REST, args).map_err(|_| e))
}

/// Runs talariactl in `switch_ns` against the controller at `rest`.
pub fn talariactl_at(switch_ns: &str, rest: &str, args: &[&str]) -> Result<String> {
    // `find`, not `usable`: this runs on every poll, and the lab checked
    // every component once at start.
    let bin = Component::Talariactl.find().ok_or_else(|| {
        anyhow::anyhow!("talariactl not built (cargo build -p talaria-controller)")
    })?;
    let server = format!("http://{rest}");
    let mut cmd: Vec<&str> = vec![bin.to_str().unwrap_or("talariactl"), "--server", &server];
    cmd.extend_from_slice(args);
    in_ns(switch_ns, &cmd, None)
}

/// Entries in all the switch's tables, read live through the controller.
pub fn switch_entries(lab: &Lab) -> Result<u64> {
    let text = talariactl(
        lab,
        &["tables", "dump", "--switch", SWITCH_ID, "-o", "json"],
    )?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let tables = v[SWITCH_ID]
        .as_array()
        .context("no table dump of the switch")?;
    Ok(tables
        .iter()
        .map(|t| t["entries"].as_array().map_or(0, |e| e.len() as u64))
        .sum())
}

/// Packets of the switch's load-balancer event `name` (`lb_event_counter`;
/// the switch leaves out the cells that counted nothing).
pub fn lb_event(lab: &Lab, name: &str) -> Result<u64> {
    let text = talariactl(lab, &["counters", "--switch", SWITCH_ID, "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let cells = v[SWITCH_ID]
        .as_object()
        .into_iter()
        .flatten()
        .find(|(counter, _)| counter.ends_with("lb_event_counter"))
        .and_then(|(_, cells)| cells.as_array())
        .context("the switch reported no lb_event_counter")?;
    Ok(cells
        .iter()
        .find(|c| c["event"] == name)
        .and_then(|c| c["packets"].as_u64())
        .unwrap_or(0))
}

/// One controller's `/v1/status`.
pub fn status_at(switch_ns: &str, rest: &str) -> Result<serde_json::Value> {
    let text = talariactl_at(switch_ns, rest, &["status", "-o", "json"])?;
    Ok(serde_json::from_str(&text)?)
}

/// The controller's `/v1/status` (plan version, each switch's session,
/// sync and write counts); in an HA lab, the leader's.
pub fn controller_status(lab: &Lab) -> Result<serde_json::Value> {
    if !lab.ha {
        return status_at(&lab.names.switch(), CONTROLLER_REST);
    }
    Ok(leader(lab)?.1)
}

/// An HA lab's leading controller: its process label and status.
pub fn leader(lab: &Lab) -> Result<(&'static str, serde_json::Value)> {
    let sw = lab.names.switch();
    let mut seen = Vec::new();
    for (what, rest) in [
        ("talaria-controller", CONTROLLER_REST),
        (STANDBY, STANDBY_REST),
    ] {
        match status_at(&sw, rest) {
            Ok(v) if v["leader"] == true => return Ok((what, v)),
            Ok(_) => seen.push(format!("{what}: standby")),
            Err(e) => seen.push(format!("{what}: {e:#}")),
        }
    }
    bail!("no controller leads: {}", seen.join("; "))
}

/// (service id, vip, port, protocol, reject) of every programmed Service
/// port, from the controller's REST API: what the node agents map.
pub fn service_ids(lab: &Lab) -> Result<Vec<serde_json::Value>> {
    let text = talariactl(lab, &["services", "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let mut out = Vec::new();
    for s in v.as_array().into_iter().flatten() {
        for p in s["data_path"].as_array().into_iter().flatten() {
            let proto = p["key"]["proto"]
                .as_str()
                .unwrap_or("")
                .to_ascii_lowercase();
            // No buckets: no usable endpoint, new flows are refused.
            let reject = p["buckets"].as_u64() == Some(0);
            let mut s = serde_json::json!({
                "id": p["service_id"],
                "vip": p["key"]["vip"],
                "port": p["key"]["port"],
                "protocol": proto,
                "reject": reject,
            });
            // A node's address: known to the agents, never steered.
            if p["frontend"] == "node_port" {
                s["node_port"] = true.into();
            }
            out.push(s);
        }
    }
    Ok(out)
}

pub(crate) fn node_agent_config(
    lab: &Lab,
    n: u32,
    services: &[serde_json::Value],
    ignore_cookies: bool,
) -> String {
    let t = &lab.topo;
    let nc = crate::manifests::node_config(t, &lab.names, n);
    let pods: Vec<serde_json::Value> = nc
        .pods
        .iter()
        .map(|p| {
            let mut v = serde_json::json!({"ip": p.ip, "veth": p.dev, "mac": p.mac});
            if let Some(ip) = p.ipv6 {
                v["ipv6"] = serde_json::json!([ip]);
            }
            v
        })
        .collect();
    let mut v = serde_json::json!({
        "uplink": nc.uplink,
        "node_ip": nc.node_ip,
        "switch_ip": nc.switch_addr,
        "switch_mac": nc.gateway_mac,
        "service_cidrs": nc.service_cidrs,
        "services": services,
        "pods": pods,
        "pin_dir": node_pin_dir(lab, n),
        "metrics_addr": "127.0.0.1:9465",
    });
    if ignore_cookies {
        v["ignore_cookies"] = true.into();
    }
    if let Some(keys) = ts_cookie_key_file(lab) {
        v["ts_cookie_key_file"] = serde_json::json!(keys);
    }
    serde_yaml::to_string(&v).expect("JSON values serialize as YAML")
}

/// The lab's timestamp-cookie key file, when it runs with the cookies
/// ([`Lab::ts_cookies`]): what a Secret mounted into the controller and
/// every node agent would hold. [`write_ts_cookie_key`] writes it.
pub fn ts_cookie_key_file(lab: &Lab) -> Option<PathBuf> {
    lab.ts_cookies.then(|| lab.run_dir.join("ts-cookie.keys"))
}

/// Writes a fresh random key into the lab's key file (readable by root
/// only), unless it has one.
fn write_ts_cookie_key(lab: &Lab) -> Result<()> {
    use std::{io::Read, io::Write, os::unix::fs::OpenOptionsExt};
    let Some(path) = ts_cookie_key_file(lab) else {
        return Ok(());
    };
    if path.exists() {
        return Ok(());
    }
    let mut key = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{hex}\n").as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

fn pin_root(lab: &Lab) -> PathBuf {
    PathBuf::from("/sys/fs/bpf/talaria-lab").join(lab.prefix())
}

/// The bpffs directory of node `n`'s agent (its maps and links).
pub fn node_pin_dir(lab: &Lab, n: u32) -> PathBuf {
    pin_root(lab).join(format!("n{n}"))
}

/// Where the lab keeps the service ids the node agents were started with.
const AGENT_SERVICES: &str = "agent-services.json";

/// The service ids the running node agents map (empty before the first start).
pub fn agent_services(lab: &Lab) -> Vec<serde_json::Value> {
    std::fs::read(lab.run_dir.join(AGENT_SERVICES))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Starts (or restarts) the node agents with the controller's service ids.
async fn start_node_agents(lab: &mut Lab) -> Result<()> {
    Component::NodeAgent
        .usable()
        .map_err(|e| anyhow::anyhow!(e))?;
    let services = service_ids(lab)?;
    write_ts_cookie_key(lab)?;
    std::fs::write(
        lab.run_dir.join(AGENT_SERVICES),
        serde_json::to_vec(&services)?,
    )?;
    for n in 0..lab.topo.nodes {
        let what = format!("talaria-node-{n}");
        for pid in lab.pids(&what) {
            lab.stop(pid);
        }
        // Cookies are learnt on the client side only.
        let ignore_cookies = lab.run_dir.join(HASH_ONLY).exists() && n < lab.topo.client_nodes;
        let cfg = lab.run_dir.join(format!("talaria-node-{n}.yaml"));
        std::fs::write(&cfg, node_agent_config(lab, n, &services, ignore_cookies))?;
        spawn_node_agent(lab, n, &cfg).await?;
    }
    Ok(())
}

/// Starts node `n`'s agent (`talaria-node-<n>`) in its netns with the
/// config at `cfg`, and waits until it serves metrics (after its first pod
/// sync).
pub(crate) async fn spawn_node_agent(lab: &mut Lab, n: u32, cfg: &Path) -> Result<u32> {
    let bin = Component::NodeAgent
        .usable()
        .map_err(|e| anyhow::anyhow!(e))?;
    let what = format!("talaria-node-{n}");
    let argv: Vec<String> = vec![
        bin.to_string_lossy().into_owned(),
        "--netns".into(),
        lab.names.node(n),
        "run".into(),
        "--config".into(),
        cfg.to_string_lossy().into_owned(),
    ];
    let pid = lab.spawn_host(&what, &argv)?;
    wait_listening(lab, pid, 9465, &what, Duration::from_secs(20)).await?;
    Ok(pid)
}

/// Starts the lab's switch ([`Lab::switch`]: switch-agent or bmv2) and the
/// controller, and waits until the fabric routes are in the switch. Every
/// mode forwards through that switch, so modes differ only in where
/// Services are load-balanced; `services` false points the controller at
/// an empty manifests directory (routes only, for the kube-proxy baselines
/// and `direct`).
pub async fn start_switch(lab: &mut Lab, services: bool) -> Result<()> {
    let missing = fabric_missing(&lab.switch);
    if !missing.is_empty() {
        bail!("the lab switch cannot start: {}", missing.join("; "));
    }
    let ctl_bin = Component::Controller
        .usable()
        .map_err(|e| anyhow::anyhow!(e))?;
    let t = lab.topo.clone();
    let sw = lab.names.switch();
    let ports: Vec<(u16, String)> = (0..t.nodes + t.external_hosts)
        .map(|n| (p4_port(n), crate::topology::switch_port_dev(n)))
        .collect();
    // switch-agent's pins and, in talaria mode, the node agents'.
    let pins = pin_root(lab);
    lab.record_pin(pins.clone())?;
    std::fs::create_dir_all(&pins)?;
    let (p4info, device_config, pid) = match lab.switch.clone() {
        SwitchKind::SwitchAgent => {
            let bin = Component::SwitchAgent
                .usable()
                .map_err(|e| anyhow::anyhow!(e))?;
            let mut argv: Vec<String> = vec![
                bin.to_string_lossy().into_owned(),
                "--grpc-addr".into(),
                P4RT_ADDR.into(),
                "--pin-dir".into(),
                pins.join("sw").to_string_lossy().into_owned(),
                "--state-dir".into(),
                lab.run_dir
                    .join("switch-state")
                    .to_string_lossy()
                    .into_owned(),
                // switch-agent's own /metrics (table occupancy), reachable
                // from the switch netns only.
                "--metrics-addr".into(),
                SWITCH_METRICS.into(),
            ];
            for (port, dev) in &ports {
                argv.push("-i".into());
                argv.push(format!("{port}@{dev}"));
            }
            // In the switch netns only: its maps and links are pinned in
            // the host's bpffs, so they outlive it (forwarding goes on
            // while it is down, and a restart takes them over).
            let pid = lab.spawn_net(&sw, "switch-agent", &argv)?;
            (find_p4info()?, None, pid)
        }
        SwitchKind::Bmv2 { build_dir } => {
            let dir = lab.run_dir.join("bmv2");
            let b = Bmv2::prepare(build_dir.as_deref(), &dir)?;
            lab.disable_offloads()?;
            let argv = b.argv(&ports, P4RT_ADDR, &dir.join("notifications.ipc"));
            let pid = lab.spawn_with_env(&sw, "bmv2", &argv, &b.env)?;
            lab.silence_switch_stack()?;
            (b.build.p4info, Some(b.build.json), pid)
        }
    };
    let what = lab.switch.name();
    wait_listening(lab, pid, 9559, what, Duration::from_secs(20)).await?;
    let manifests = if services {
        lab.run_dir.join("manifests")
    } else {
        let empty = lab.run_dir.join("manifests-none");
        std::fs::create_dir_all(&empty)?;
        empty
    };
    let cfg = lab.run_dir.join("controller.yaml");
    std::fs::write(
        &cfg,
        controller_config(
            &t,
            &lab.names,
            &manifests,
            device_config.as_deref(),
            services,
        ),
    )?;
    let mut argv: Vec<String> = vec![
        ctl_bin.to_string_lossy().into_owned(),
        "--config".into(),
        cfg.to_string_lossy().into_owned(),
        "--p4info".into(),
        p4info.to_string_lossy().into_owned(),
    ];
    write_ts_cookie_key(lab)?;
    if let Some(keys) = ts_cookie_key_file(lab) {
        argv.extend([
            "--ts-cookie-key-file".into(),
            keys.to_string_lossy().into_owned(),
        ]);
    }
    // An HA lab gives the leader an id history a fresh plan cannot
    // reproduce: a Service planned first (the lowest VIP), then deleted,
    // keeps its service id in quarantine, so every other Service's id is
    // one more than a standby planning from scratch would give it. A
    // standby that did not adopt the switch's ids would rewrite them all.
    if let Some(source) = &lab.controller_source {
        let base = std::fs::read_to_string(&cfg)?;
        std::fs::write(&cfg, controller_config_source(&base, source))?;
    }
    let departed = manifests.join("ha-departed.yaml");
    if lab.ha {
        std::fs::write(&departed, HA_DEPARTED)?;
        let exe = crate::netns::lab_exe()?;
        let argv = [
            exe,
            "lease-server".into(),
            "--listen".into(),
            LEASE_SERVER.into(),
        ];
        let pid = lab.spawn(&sw, "lease-server", &argv)?;
        wait_listening(lab, pid, 9443, "lease-server", Duration::from_secs(20)).await?;
        let base = std::fs::read_to_string(&cfg)?;
        std::fs::write(&cfg, controller_config_ha(&base))?;
    }
    let ha_argv = |identity: &str| -> Vec<String> {
        let mut v = argv.clone();
        v.extend(["--leader-elect", "--lease-identity", identity].map(String::from));
        v
    };
    let first = if lab.ha {
        ha_argv("ctl-a")
    } else {
        argv.clone()
    };
    let pid = lab.spawn(&sw, "talaria-controller", &first)?;
    wait_listening(
        lab,
        pid,
        9080,
        "talaria-controller",
        Duration::from_secs(20),
    )
    .await?;
    wait_synced(lab, Duration::from_secs(30)).await?;
    if lab.ha {
        std::fs::remove_file(&departed)?;
        let t0 = Instant::now();
        while talariactl(lab, &["services", "-o", "json"])?.contains("ha-departed") {
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("the controller still plans ha-departed after 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_synced(lab, Duration::from_secs(30)).await?;
        // The standby starts once the first one leads.
        let mut second = ha_argv("ctl-b");
        second.extend(["--listen".to_string(), STANDBY_REST.to_string()]);
        let pid = lab.spawn(&sw, STANDBY, &second)?;
        wait_listening(lab, pid, 9081, STANDBY, Duration::from_secs(20)).await?;
        wait_ready(lab, STANDBY_REST, Duration::from_secs(20)).await?;
    }
    // From here on only the switch forwards: a packet its pipeline does not
    // handle must be lost, not quietly routed by Linux.
    in_ns(&sw, &["sysctl", "-qw", "net.ipv4.ip_forward=0"], None)?;
    Ok(())
}

/// Starts the switch, the controller and the node agents on a lab.
pub async fn start_talaria(lab: &mut Lab) -> Result<()> {
    let missing = talaria_missing(&lab.switch);
    if !missing.is_empty() {
        bail!("talaria mode cannot start: {}", missing.join("; "));
    }
    start_switch(lab, true).await?;
    let keys = ServiceSet::from_topology(&lab.topo).switch_keys(&lab.topo);
    wait_programmed(lab, keys, Duration::from_secs(60)).await?;
    start_node_agents(lab).await?;
    Ok(())
}

/// Brings a lab up in a mode on a switch (servers started, rules and
/// components applied).
pub async fn lab_for(t: Topology, mode: Mode, switch: &SwitchKind) -> Result<(Lab, ServiceSet)> {
    lab_for_ha(t, mode, switch, false).await
}

/// [`lab_for`], with two controllers and leader election when `ha`.
pub async fn lab_for_ha(
    t: Topology,
    mode: Mode,
    switch: &SwitchKind,
    ha: bool,
) -> Result<(Lab, ServiceSet)> {
    lab_for_with(t, mode, switch, |lab| lab.ha = ha).await
}

/// [`lab_for`], with `setup` applied to the lab before anything starts.
pub async fn lab_for_with(
    t: Topology,
    mode: Mode,
    switch: &SwitchKind,
    setup: impl FnOnce(&mut Lab),
) -> Result<(Lab, ServiceSet)> {
    talaria_preflight::ensure(mode.needs())
        .with_context(|| format!("{} mode cannot run", mode.name()))?;
    if let Some(why) = ipvs_unavailable().filter(|_| mode == Mode::Ipvs) {
        bail!("{why}");
    }
    if mode == Mode::Talaria {
        let missing = talaria_missing(switch);
        if !missing.is_empty() {
            bail!("talaria mode needs: {}", missing.join("; "));
        }
    }
    let mut lab = Lab::create(t, mode.name(), switch.clone())?;
    setup(&mut lab);
    lab.start_servers()?;
    let set = ServiceSet::from_topology(&lab.topo);
    // On an error the lab's Drop tears it down.
    if mode == Mode::Talaria {
        start_talaria(&mut lab).await?;
    } else {
        start_switch(&mut lab, false).await?;
        apply_rules(&lab, mode, &set)?;
    }
    Ok((lab, set))
}

/// Waits until the controller at `rest` says it is ready (`/v1/status`,
/// as `/readyz`): a standby with a plan is.
async fn wait_ready(lab: &mut Lab, rest: &str, limit: Duration) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let st = status_at(&lab.names.switch(), rest);
        if st.as_ref().is_ok_and(|v| v["ready"] == "ready") {
            return Ok(());
        }
        if t0.elapsed() > limit {
            bail!("the controller at {rest} not ready after {limit:?}: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a [`fail_over`] took, each from the kill.
#[derive(Debug, Clone)]
pub struct FailOver {
    /// The process label of the leader killed.
    pub killed: &'static str,
    /// PID of the killed leader.
    pub old_pid: u32,
    /// PID it was started again with (as a standby).
    pub new_pid: u32,
    /// Until the other controller led.
    pub takeover: Duration,
    /// Until the switch held its plan (connected, synced).
    pub in_sync: Duration,
    /// Until the killed one, started again, was ready (as a standby).
    pub standby_ready: Duration,
}

/// In an HA lab: kills the leading controller with SIGKILL, waits until
/// the other one leads and the switch holds its plan, then starts the
/// killed one again and waits until it is a ready standby. Not started
/// again before the takeover: with the same identity it would renew its
/// own Lease at once.
pub async fn fail_over(lab: &mut Lab) -> Result<FailOver> {
    anyhow::ensure!(lab.ha, "fail-over needs an HA lab");
    let (killed, _) = leader(lab)?;
    let (other, other_rest, rest) = if killed == STANDBY {
        ("talaria-controller", CONTROLLER_REST, STANDBY_REST)
    } else {
        (STANDBY, STANDBY_REST, CONTROLLER_REST)
    };
    let t0 = Instant::now();
    let old_pid = lab.kill9(killed)?;
    let (lease, _, retry) = HA_LEASE;
    // A lease duration after the standby last saw a renewal, which it
    // looks for every retry period (jittered up to 2.2 × of it), and sync.
    let limit = Duration::from_secs(u64::from(lease + 5 * retry + 10));
    let sw = lab.names.switch();
    let mut takeover = None;
    let in_sync = loop {
        if let Ok(v) = status_at(&sw, other_rest) {
            if v["leader"] == true {
                takeover.get_or_insert(t0.elapsed());
                let plan = v["plan_version"].as_u64().unwrap_or(0);
                let switches = v["switches"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                let synced = |s: &serde_json::Value| {
                    s["status"]["connected"] == true
                        && s["status"]["synced_version"].as_u64().unwrap_or(0) >= plan
                };
                if plan > 0 && !switches.is_empty() && switches.iter().all(synced) {
                    break t0.elapsed();
                }
            }
        }
        if t0.elapsed() > limit {
            bail!(
                "{other} did not take over within {limit:?}; log: {}",
                tail_log(lab, other)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let new_pid = lab.respawn(killed)?;
    let port = if killed == STANDBY { 9081 } else { 9080 };
    wait_listening(lab, new_pid, port, killed, Duration::from_secs(20)).await?;
    wait_ready(lab, rest, Duration::from_secs(20)).await?;
    Ok(FailOver {
        killed,
        old_pid,
        new_pid,
        takeover: takeover.unwrap_or(in_sync),
        in_sync,
        standby_ready: t0.elapsed(),
    })
}

/// Waits until every switch holds the controller's latest plan (its
/// `synced_version` has caught up with `plan_version`): planned is not yet
/// forwarding.
async fn wait_synced(lab: &mut Lab, limit: Duration) -> Result<()> {
    wait_synced_after(lab, 0, limit).await
}

/// The controller's sessions with its (first) switch so far.
fn switch_sessions(status: &serde_json::Value) -> u64 {
    status["switches"][0]["status"]["sessions"]
        .as_u64()
        .unwrap_or(0)
}

/// [`wait_synced`] in a session later than the first `sessions` (0: any):
/// after a switch restart, the controller's status says "connected, in
/// sync" for the old session until it notices the loss.
async fn wait_synced_after(lab: &mut Lab, sessions: u64, limit: Duration) -> Result<()> {
    let t0 = Instant::now();
    loop {
        if let Ok(v) = &controller_status(lab) {
            let plan = v["plan_version"].as_u64().unwrap_or(0);
            let switches = v["switches"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let synced = |sw: &serde_json::Value| {
                sw["status"]["connected"] == true
                    && sw["status"]["synced_version"].as_u64().unwrap_or(0) >= plan
            };
            if plan > 0
                && !switches.is_empty()
                && switches.iter().all(synced)
                && switch_sessions(v) > sessions
            {
                return Ok(());
            }
        }
        if t0.elapsed() > limit {
            bail!(
                "switch not synced with the controller's plan after {limit:?}; log: {}",
                tail_log(lab, "talaria-controller")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the controller has planned `ports` Service ports and the
/// switch holds that plan.
async fn wait_programmed(lab: &mut Lab, ports: usize, limit: Duration) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let got = service_ids(lab).map(|v| v.len()).unwrap_or(0);
        if got == ports {
            let left = limit.saturating_sub(t0.elapsed());
            return wait_synced(lab, left.max(Duration::from_secs(1))).await;
        }
        if t0.elapsed() > limit {
            bail!(
                "controller programmed {got} of {ports} Service ports after {limit:?}; log: {}",
                tail_log(lab, "talaria-controller")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Pushes a new Service set to the controller of a talaria-mode lab (it
/// polls the manifests directory), waits until the switch holds it, and
/// restarts the node agents only if the service ids they map changed.
pub async fn talaria_apply_services(lab: &mut Lab, set: &ServiceSet) -> Result<()> {
    // write_configs has already rewritten the Services' manifest files.
    // Every Service port is planned, with endpoints or without.
    let want = set.switch_keys(&lab.topo);
    // Give the controller a poll and its debounce to notice the new file,
    // else an endpoint-only change would find the old plan "in sync".
    tokio::time::sleep(Duration::from_millis(400)).await;
    wait_programmed(lab, want, Duration::from_secs(120)).await?;
    if service_ids(lab)? != agent_services(lab) {
        start_node_agents(lab).await?;
    }
    Ok(())
}

/// A long-running talaria process of a talaria-mode lab on switch-agent,
/// one that [`restart`] can kill and start again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// switch-agent (P4Runtime server and eBPF data plane).
    SwitchAgent,
    /// talaria-controller.
    Controller,
    /// The node agent of node `n`.
    NodeAgent(u32),
    /// In an HA lab, whichever controller leads ([`fail_over`]).
    Leader,
}

impl Daemon {
    /// What the lab records the process as (its log is `logs/<label>.log`).
    pub fn label(self) -> String {
        match self {
            Self::SwitchAgent => "switch-agent".into(),
            Self::Controller => "talaria-controller".into(),
            Self::NodeAgent(n) => format!("talaria-node-{n}"),
            Self::Leader => "talaria-controller (leader)".into(),
        }
    }
}

impl std::fmt::Display for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SwitchAgent => f.write_str("switch-agent"),
            Self::Controller => f.write_str("controller"),
            Self::NodeAgent(n) => write!(f, "node-{n}"),
            Self::Leader => f.write_str("leader"),
        }
    }
}

impl std::str::FromStr for Daemon {
    type Err = String;

    /// `switch-agent`, `controller`, `leader` or `node-<n>` (as
    /// displayed).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "switch-agent" => Ok(Self::SwitchAgent),
            "controller" => Ok(Self::Controller),
            "leader" => Ok(Self::Leader),
            _ => s
                .strip_prefix("node-")
                .and_then(|n| n.parse().ok())
                .map(Self::NodeAgent)
                .ok_or_else(|| {
                    format!("{s:?}: expected switch-agent, controller, leader or node-<n>")
                }),
        }
    }
}

/// What a [`restart`] took, each from the kill.
#[derive(Debug, Clone, Copy)]
pub struct Restarted {
    /// PID of the killed process.
    pub old_pid: u32,
    /// PID of the new one.
    pub new_pid: u32,
    /// Until it was started again.
    pub down: Duration,
    /// Until it served again: P4Runtime (switch-agent), REST (controller),
    /// metrics (a node agent, which opens them after its first pod sync).
    pub serving: Duration,
    /// Until it was back in sync: the controller connected and the switch
    /// holding its plan (switch-agent, controller); serving (a node agent).
    pub in_sync: Duration,
}

/// Kills `d` with SIGKILL, leaves it down for `down`, starts it again with
/// the same command line, and waits until it is back: serving, and for
/// switch-agent and the controller until the controller holds a session
/// with the switch again (a new one, after a switch restart) and the switch
/// holds the controller's plan. The pins make a restarted switch-agent or
/// node agent take over the running data plane; a restarted controller
/// reads the switch's tables back and adopts them.
pub async fn restart(lab: &mut Lab, d: Daemon, down: Duration) -> Result<Restarted> {
    if d == Daemon::Leader {
        bail!("the leader is failed over (fail_over), not restarted");
    }
    if lab.switch != SwitchKind::SwitchAgent {
        bail!(
            "restarting {d} needs switch-agent ({} keeps no state across a restart)",
            lab.switch.name()
        );
    }
    let sessions = match d {
        Daemon::SwitchAgent => switch_sessions(&controller_status(lab)?),
        _ => 0,
    };
    let what = d.label();
    let killed = Instant::now();
    let old_pid = lab.kill9(&what)?;
    tokio::time::sleep(down).await;
    let new_pid = lab.respawn(&what)?;
    let down = killed.elapsed();
    let limit = Duration::from_secs(60);
    let port = match d {
        Daemon::SwitchAgent => 9559,
        Daemon::Controller | Daemon::Leader => 9080,
        Daemon::NodeAgent(_) => 9465,
    };
    wait_listening(lab, new_pid, port, &what, limit).await?;
    let serving = killed.elapsed();
    if !matches!(d, Daemon::NodeAgent(_)) {
        wait_synced_after(lab, sessions, limit).await?;
    }
    Ok(Restarted {
        old_pid,
        new_pid,
        down,
        serving,
        in_sync: killed.elapsed(),
    })
}

/// Marker file: the lab's client node agents learn no cookies.
const HASH_ONLY: &str = "hash-only";

/// Switches the hash-only variant on or off: the client nodes' agents run
/// with `ignore_cookies`, so every packet leaves as a new flow and the
/// switch balances it by hash alone (restarts the node agents).
pub async fn set_hash_only(lab: &mut Lab, on: bool) -> Result<()> {
    let marker = lab.run_dir.join(HASH_ONLY);
    if on {
        std::fs::write(&marker, b"")?;
    } else if marker.exists() {
        std::fs::remove_file(&marker)?;
    }
    start_node_agents(lab).await
}
